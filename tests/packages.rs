//! The `package` module against the real PackageKit on the real system bus (D-Bus
//! activated packagekitd, Debian's `hello` from the mirrors), and `service` where systemd
//! is not the init system, all through the real binary.

mod common;

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{is_root, run_local_json, weft};
use serde_json::Value;

const SYSTEM_BUS_SOCKET: &str = "/run/dbus/system_bus_socket";
const PACKAGEKITD: &str = "/usr/libexec/packagekitd";

/// Makes sure a system bus answers (starting `dbus-daemon --system` if none does) and
/// PackageKit can be activated on it; `Err` is why the test cannot run here.
fn packagekit_ready() -> Result<(), String> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    READY.get_or_init(start_system_bus).clone()
}

fn start_system_bus() -> Result<(), String> {
    if !is_root() {
        return Err("installing packages needs root".into());
    }
    if !Path::new(PACKAGEKITD).exists() {
        return Err(format!(
            "{PACKAGEKITD} is missing (Debian package packagekit)"
        ));
    }
    if UnixStream::connect(SYSTEM_BUS_SOCKET).is_err() {
        std::fs::create_dir_all("/run/dbus").map_err(|e| format!("mkdir /run/dbus: {e}"))?;
        // dbus-daemon refuses to start while the pid file of a dead one is left.
        let _ = std::fs::remove_file("/run/dbus/pid");
        let started = Command::new("dbus-daemon")
            .args(["--system", "--fork"])
            .status()
            .map_err(|e| {
                format!("dbus-daemon cannot run ({e}): install the Debian package dbus")
            })?;
        if !started.success() {
            return Err(format!("dbus-daemon --system --fork exited with {started}"));
        }
        UnixStream::connect(SYSTEM_BUS_SOCKET).map_err(|e| {
            format!("the system bus started but {SYSTEM_BUS_SOCKET} does not answer: {e}")
        })?;
    }
    Ok(())
}

fn skip(test: &str, reason: &str) {
    eprintln!("SKIPPED {test}: {reason}");
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
}

/// A TaskBook with one `package` task.
fn package_book(dir: &Path, args: &str) -> PathBuf {
    let file = dir.join("packages.yml");
    let source = format!(
        "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {{name: packages}}\nspec:\n  steps:\n    - name: s\n      tasks:\n        - name: pkg\n          package: {args}\n"
    );
    std::fs::write(&file, source).unwrap();
    file
}

/// The one result of a one-task run.
fn only_result(report: &Value) -> &Value {
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), 1, "{report:#}");
    &results[0]
}

fn run_package(dir: &Path, args: &str, flags: &[&str]) -> Value {
    let (report, _) = run_local_json(&package_book(dir, args), flags);
    only_result(&report).clone()
}

fn msg(result: &Value) -> &str {
    result["msg"].as_str().unwrap_or_default()
}

#[test]
fn hello_is_installed_kept_and_removed_through_packagekit() {
    if let Err(reason) = packagekit_ready() {
        return skip(
            "hello_is_installed_kept_and_removed_through_packagekit",
            &reason,
        );
    }
    let hello = Path::new("/usr/bin/hello");
    if is_installed("hello") {
        let removed = Command::new("apt-get")
            .args(["remove", "-y", "-qq", "hello"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .expect("apt-get runs");
        assert!(removed.success(), "apt-get remove hello: {removed}");
    }
    let dir = tempfile::tempdir().unwrap();

    let installed = run_package(dir.path(), "{name: hello}", &[]);
    assert_eq!(installed["status"], "changed", "{installed:#}");
    assert!(
        hello.exists(),
        "/usr/bin/hello after installing: {installed:#}"
    );
    let packages = &installed["output"]["installed"];
    assert!(
        packages
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "hello" && !p["version"].as_str().unwrap().is_empty()),
        "{installed:#}"
    );
    assert!(
        msg(&installed).starts_with("installed hello "),
        "{installed:#}"
    );

    let again = run_package(dir.path(), "{name: [hello], state: present}", &[]);
    assert_eq!(again["status"], "ok", "{again:#}");
    assert!(
        msg(&again).starts_with("already installed: hello "),
        "{again:#}"
    );

    let would_remove = run_package(
        dir.path(),
        "{name: hello, state: absent}",
        &["--check", "--diff"],
    );
    assert_eq!(would_remove["status"], "changed", "{would_remove:#}");
    assert!(
        msg(&would_remove).starts_with("would remove hello "),
        "{would_remove:#}"
    );
    assert!(
        would_remove["diff"]
            .as_str()
            .unwrap_or_default()
            .contains("-> absent"),
        "{would_remove:#}"
    );
    assert!(
        hello.exists() && is_installed("hello"),
        "check mode removed hello"
    );

    let removed = run_package(dir.path(), "{name: hello, state: absent}", &[]);
    assert_eq!(removed["status"], "changed", "{removed:#}");
    assert_eq!(
        removed["output"]["removed"][0]["name"], "hello",
        "{removed:#}"
    );
    assert!(
        !hello.exists() && !is_installed("hello"),
        "hello is still there"
    );

    let would_install = run_package(dir.path(), "{name: hello}", &["--check"]);
    assert_eq!(would_install["status"], "changed", "{would_install:#}");
    assert!(
        msg(&would_install).starts_with("would install hello "),
        "{would_install:#}"
    );
    assert!(!hello.exists(), "check mode installed hello");
}

#[test]
fn removal_that_would_take_dependents_is_refused_with_their_names() {
    if let Err(reason) = packagekit_ready() {
        return skip(
            "removal_that_would_take_dependents_is_refused_with_their_names",
            &reason,
        );
    }
    // PackageKit's own library: wherever this test runs, packagekit depends on it.
    let depends = Command::new("dpkg-query")
        .args(["-W", "-f=${Depends}", "packagekit"])
        .output()
        .expect("dpkg-query runs");
    let depends = String::from_utf8_lossy(&depends.stdout);
    let library = depends
        .split([',', ' '])
        .find(|name| name.starts_with("libpackagekit-glib2-"))
        .unwrap_or_else(|| panic!("packagekit depends on no libpackagekit-glib2: {depends}"))
        .to_string();
    let dir = tempfile::tempdir().unwrap();

    let refused = run_package(
        dir.path(),
        &format!("{{name: {library}, state: absent}}"),
        &["--check"],
    );
    assert_eq!(refused["status"], "failed", "{refused:#}");
    let message = msg(&refused);
    assert!(
        message.starts_with(&format!("removing {library} would also remove ")),
        "{message}"
    );
    assert!(
        message.contains("packagekit "),
        "the dependents are named: {message}"
    );
    assert!(is_installed(&library) && is_installed("packagekit"));
}

#[test]
fn an_unknown_package_fails_naming_it() {
    if let Err(reason) = packagekit_ready() {
        return skip("an_unknown_package_fails_naming_it", &reason);
    }
    let dir = tempfile::tempdir().unwrap();
    let result = run_package(
        dir.path(),
        "{name: [hello, no-such-package-weft]}",
        &["--check"],
    );
    assert_eq!(result["status"], "failed", "{result:#}");
    assert!(
        msg(&result).starts_with("no package named `no-such-package-weft` in the package lists"),
        "{result:#}"
    );
}

#[test]
fn without_packagekit_on_the_bus_the_failure_says_what_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let output = weft()
        .args(["run", "taskbook"])
        .arg(package_book(dir.path(), "{name: hello}"))
        .args(["--local", "-o", "json"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent")
        .output()
        .expect("weft runs");
    assert_eq!(output.status.code(), Some(2), "a failed task");
    let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    let result = only_result(&report);
    assert_eq!(result["status"], "failed");
    let message = msg(result);
    assert!(
        message.starts_with("PackageKit is not available on the system bus (cannot connect to unix:path=/nonexistent"),
        "{message}"
    );
    assert!(
        message.contains("install the `packagekit` package"),
        "{message}"
    );
}

#[test]
fn service_is_unsupported_where_systemd_is_not_the_init_system() {
    if Path::new("/run/systemd/system").exists() {
        return skip(
            "service_is_unsupported_where_systemd_is_not_the_init_system",
            "systemd runs here",
        );
    }
    let init = std::fs::read_to_string("/proc/1/comm").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("service.yml");
    std::fs::write(
        &file,
        "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: services}\nspec:\n  steps:\n    - name: s\n      tasks:\n        - name: cron\n          service: {name: cron, state: started, enabled: true}\n",
    )
    .unwrap();
    for flags in [&[][..], &["--check"][..]] {
        let (report, _) = run_local_json(&file, flags);
        let result = only_result(&report);
        assert_eq!(result["status"], "failed", "{result:#}");
        assert!(
            msg(result).starts_with(&format!(
                "service: unsupported on this host: systemd is not running (PID 1 is `{}`)",
                init.trim()
            )),
            "{result:#}"
        );
    }
}
