//! The TaskBooks in taskbooks/ run for real with --local, then a second run changes nothing.
//! Each is pointed at a scratch root through its path variables.

mod common;

use std::path::Path;

use common::{recap, repo_path, run_local_json, snapshot, statuses};

/// Check mode, then a real run, then the idempotence run, asserting along the way.
fn converge(book: &str, root: &Path, args: &[&str]) -> serde_json::Value {
    let file = repo_path(&format!("taskbooks/{book}"));

    let before = snapshot(root);
    let (check, output) = run_local_json(&file, &[&["--check"], args].concat());
    assert_eq!(output.status.code(), Some(0), "{book} --check: {check:#}");
    assert_eq!(snapshot(root), before, "{book} --check changed the disk");

    let (first, output) = run_local_json(&file, args);
    assert_eq!(output.status.code(), Some(0), "{book}: {first:#}");
    assert!(
        recap(&first, "changed") > 0,
        "{book} changed nothing on a fresh root"
    );

    let (second, output) = run_local_json(&file, args);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{book} (second run): {second:#}"
    );
    assert_eq!(
        recap(&second, "changed"),
        0,
        "{book} is not idempotent: {:?}",
        statuses(&second)
    );
    first
}

#[test]
fn motd_from_facts() {
    let root = tempfile::tempdir().unwrap();
    let root_arg = format!("root={}", root.path().display());
    converge("motd.yml", root.path(), &["-e", &root_arg]);
    let motd = std::fs::read_to_string(root.path().join("etc/motd")).unwrap();
    assert!(motd.contains("CPUs"), "{motd}");
    assert!(motd.contains("ask the platform team"), "{motd}");
}

#[test]
fn etc_hosts_entries() {
    let root = tempfile::tempdir().unwrap();
    let hosts = root.path().join("hosts");
    std::fs::write(
        &hosts,
        "127.0.0.1\tlocalhost\n10.77.0.1\tstale-name\n10.77.0.99\told\n",
    )
    .unwrap();
    converge(
        "etc-hosts.yml",
        root.path(),
        &["-e", &format!("hosts_file={}", hosts.display())],
    );
    assert_eq!(
        std::fs::read_to_string(&hosts).unwrap(),
        "127.0.0.1\tlocalhost\n10.77.0.1\tweft-master master.weft.internal\n10.77.0.53\tdns.weft.internal\n"
    );
}

#[test]
fn sshd_hardening() {
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("sshd_config");
    std::fs::write(
        &config,
        "Include /etc/ssh/sshd_config.d/*.conf\n#PermitRootLogin prohibit-password\nPasswordAuthentication yes\nX11Forwarding yes\nUsePAM yes\n",
    )
    .unwrap();
    let marker = root.path().join("reloaded");
    let config_arg = format!("sshd_config={}", config.display());
    let reload_arg = format!("sshd_reload_command=touch {}", marker.display());
    let report = converge(
        "sshd-hardening.yml",
        root.path(),
        &[
            "-e",
            &config_arg,
            "-e",
            "sshd_validate_command=true",
            "-e",
            &reload_arg,
        ],
    );
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("\nPermitRootLogin no\n"), "{text}");
    assert!(text.contains("\nPasswordAuthentication no\n"), "{text}");
    assert!(!text.contains("PasswordAuthentication yes"), "{text}");
    assert!(text.contains("MaxAuthTries 3\n"), "{text}");
    assert!(text.contains("UsePAM yes\n"), "{text}");
    // The handler ran once, in the first run, because the settings changed.
    assert!(marker.exists());
    let handlers: Vec<_> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["handler"] == true)
        .collect();
    assert_eq!(handlers.len(), 1);
}

#[test]
fn service_user() {
    if !common::is_root() {
        eprintln!("SKIPPED service_user: creating a system user needs root");
        return;
    }
    if !Path::new("/usr/sbin/useradd").exists() {
        eprintln!("SKIPPED service_user: useradd is not installed (Debian package passwd)");
        return;
    }
    let service = "weft-test-svc";
    let root = tempfile::tempdir().unwrap();
    let root_arg = format!("root={}", root.path().display());
    converge(
        "service-user.yml",
        root.path(),
        &["-e", &root_arg, "-e", &format!("service={service}")],
    );
    let config =
        std::fs::read_to_string(root.path().join(format!("etc/{service}/{service}.toml"))).unwrap();
    assert!(
        config.contains(&format!("user = \"{service}\"")),
        "{config}"
    );
    let env = std::fs::read_to_string(root.path().join(format!("etc/{service}/env"))).unwrap();
    assert_eq!(env, "RUST_LOG=info\nLISTEN=0.0.0.0:8080\n");
    let _ = std::process::Command::new("userdel").arg(service).status();
}
