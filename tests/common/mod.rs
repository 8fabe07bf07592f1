//! Shared by the end-to-end tests: run the real `weft` binary and inspect what it did.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

pub mod cluster;
pub mod etcd;
pub mod git;
pub mod mesh;

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("bound")
        .port()
}

pub fn weft() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weft"));
    command.env("NO_COLOR", "1");
    command
}

/// `weft run taskbook FILE --local ARGS...`, for a caller to add to (an environment).
pub fn local_command(file: &Path, args: &[&str]) -> Command {
    let mut command = weft();
    command
        .args(["run", "taskbook"])
        .arg(file)
        .arg("--local")
        .args(args);
    command
}

/// Runs `weft run taskbook FILE --local ARGS...`.
pub fn run_local(file: &Path, args: &[&str]) -> Output {
    local_command(file, args).output().expect("weft runs")
}

/// Runs with `-o json` and returns the report; panics with stderr if it is not JSON.
pub fn run_local_json(file: &Path, args: &[&str]) -> (serde_json::Value, Output) {
    let mut all = vec!["-o", "json"];
    all.extend_from_slice(args);
    json_report(run_local(file, &all))
}

/// The report of a run with `-o json`; panics with stderr if it is not JSON.
pub fn json_report(output: Output) -> (serde_json::Value, Output) {
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); exit {:?}\nstdout:\n{}\nstderr:\n{}",
            output.status.code(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (report, output)
}

/// The recap's counter for the only node of a local run.
pub fn recap(report: &serde_json::Value, counter: &str) -> u64 {
    report["recap"][0][counter].as_u64().expect("recap counter")
}

/// (task, status) for every result, in order.
pub fn statuses(report: &serde_json::Value) -> Vec<(String, String)> {
    report["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                r["task"].as_str().unwrap_or_default().to_string(),
                r["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Every path below `root` with its type, mode and content hash: equal snapshots mean
/// nothing was created, removed or changed.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    use std::os::unix::fs::MetadataExt;
    let mut entries = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable dir") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            let description = if meta.file_type().is_symlink() {
                format!("link {:?}", std::fs::read_link(&path).ok())
            } else if meta.is_dir() {
                pending.push(path.clone());
                format!("dir {:o} {}:{}", meta.mode(), meta.uid(), meta.gid())
            } else {
                let hash = Sha256::digest(std::fs::read(&path).expect("readable file"));
                format!(
                    "file {:o} {}:{} {:x}",
                    meta.mode(),
                    meta.uid(),
                    meta.gid(),
                    hash
                )
            };
            entries.insert(path, description);
        }
    }
    entries
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The repository's own folder (the bundled TaskBooks live there).
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the effective user of the process reading it.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
