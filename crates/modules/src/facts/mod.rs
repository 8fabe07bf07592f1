//! This host's facts, exposed to TaskBooks as `facts.*`.
//!
//! Built-in facts are read straight from /proc, /sys and libc, never from helper
//! processes: facts are gathered on every run, which must stay within milliseconds.
//! Only the admin's own executables in the custom facts directory are spawned, and the
//! system bus is asked, briefly, about PackageKit and systemd.

mod custom;
mod hardware;
mod host;
mod mounts;
mod network;
mod os;
mod system_bus;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

pub use custom::{custom_facts_dir, CUSTOM_FACTS_DIR};
pub use host::host_name;
pub use system_bus::add_installed_package_count;
pub(crate) use system_bus::forget_installed_count;

use mounts::PendingMounts;

/// How long to wait for calls that can block on the network (the DNS lookup behind
/// `fqdn`, statvfs on a hung NFS mount) before reporting without their answer.
const BLOCKING_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Why facts could not be gathered at all; a host lacking a fact is not one of them.
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    /// The directory exists but cannot be listed: carrying on would silently drop the
    /// admin's facts, and tasks would take the wrong branch on them.
    #[error("cannot read the custom facts directory {}: {source}", path.display())]
    CustomFactsDir { path: PathBuf, source: io::Error },
}

/// Gathers this host's facts as a JSON object.
pub fn gather_facts() -> Result<Value, FactsError> {
    gather_facts_from(&custom_facts_dir())
}

/// Same, with an explicit custom facts directory (testable).
pub fn gather_facts_from(custom_dir: &Path) -> Result<Value, FactsError> {
    let deadline = Instant::now() + BLOCKING_CALL_TIMEOUT;
    let system = host::uname();
    // The calls that may block run in the background while everything else is read.
    let fqdn_answer = in_background({
        let node_name = system.node_name.clone();
        move |sender| {
            let _ = sender.send(host::canonical_name(&node_name));
        }
    });
    let mounts = PendingMounts::start();
    let interfaces = network::interfaces();
    let default_ipv4 = network::default_ipv4(&interfaces);
    let bus_answer = in_background(|sender| {
        let _ = sender.send(system_bus::bus_facts());
    });
    let custom = custom::gather_custom_facts(custom_dir)?;

    let mut facts = Map::new();
    facts.insert(
        "hostname".into(),
        json!(host::short_host_name(&system.node_name)),
    );
    let fqdn = fqdn_answer
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .ok()
        .flatten()
        .unwrap_or_else(|| system.node_name.clone());
    facts.insert("fqdn".into(), json!(fqdn));
    facts.insert("os".into(), os::os_facts_of_this_host());
    facts.insert(
        "kernel".into(),
        json!({
            "name": system.kernel_name,
            "release": system.kernel_release,
            "version": system.kernel_version,
        }),
    );
    facts.insert("arch".into(), json!(system.machine));
    facts.insert("cpu".into(), hardware::cpu_facts());
    facts.insert(
        "memory".into(),
        hardware::memory_facts(&read_text("/proc/meminfo")),
    );
    facts.insert("mounts".into(), mounts.facts(deadline));
    facts.insert(
        "interfaces".into(),
        Value::Array(interfaces.iter().map(network::interface_facts).collect()),
    );
    if let Some(address) = default_ipv4 {
        facts.insert("default_ipv4".into(), json!(address.to_string()));
    }
    if let Some(uptime) = host::uptime_seconds(&read_text("/proc/uptime")) {
        facts.insert("uptime_seconds".into(), json!(uptime));
    }
    let bus = bus_answer
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .unwrap_or_default();
    facts.insert("packages".into(), json!({"manager": bus.package_manager}));
    facts.insert("systemd".into(), json!({"running": bus.systemd_running}));
    facts.insert("custom".into(), Value::Object(custom));
    Ok(Value::Object(facts))
}

/// Whether two gatherings describe the same machine, ignoring the gauges that move by
/// themselves (uptime, available memory and disk), so a node sends its facts again
/// when something about it changed, not every time it looks.
pub fn same_facts(a: &Value, b: &Value) -> bool {
    fn without_gauges(facts: &Value) -> Value {
        let mut facts = facts.clone();
        if let Some(map) = facts.as_object_mut() {
            map.remove("uptime_seconds");
        }
        if let Some(memory) = facts.get_mut("memory").and_then(Value::as_object_mut) {
            memory.remove("available_mb");
        }
        if let Some(mounts) = facts.get_mut("mounts").and_then(Value::as_array_mut) {
            for mount in mounts.iter_mut().filter_map(Value::as_object_mut) {
                mount.remove("available_mb");
            }
        }
        facts
    }
    without_gauges(a) == without_gauges(b)
}

/// A /proc or /sys file as text; a file the host lacks (containers) reads as empty.
fn read_text(path: impl AsRef<Path>) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// Runs `work` on its own thread and returns where its answers arrive. A thread that
/// cannot start drops the sender, which the receiver sees as "no answer".
fn in_background<T: Send + 'static>(work: impl FnOnce(Sender<T>) + Send + 'static) -> Receiver<T> {
    let (sender, receiver) = mpsc::channel();
    let _ = thread::Builder::new().spawn(move || work(sender));
    receiver
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_host_has_the_basic_facts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("site.json"), r#"{"dc": "fra1"}"#).unwrap();
        let facts = gather_facts_from(dir.path()).unwrap();

        assert!(!facts["hostname"].as_str().unwrap().is_empty());
        assert!(!facts["hostname"].as_str().unwrap().contains('.'));
        assert!(!facts["fqdn"].as_str().unwrap().is_empty());
        assert!(!facts["os"]["id"].as_str().unwrap().is_empty());
        assert!(!facts["os"]["family"].as_str().unwrap().is_empty());
        assert!(!facts["kernel"]["release"].as_str().unwrap().is_empty());
        assert!(!facts["arch"].as_str().unwrap().is_empty());
        assert!(facts["cpu"]["count"].as_u64().unwrap() >= 1);
        assert!(facts["mounts"].as_array().unwrap().iter().all(|mount| {
            mount["mount_point"].as_str().is_some() && mount["options"].is_array()
        }));
        assert_eq!(facts["custom"], json!({"site": {"dc": "fra1"}}));

        let interfaces = facts["interfaces"].as_array().unwrap();
        let loopback = interfaces
            .iter()
            .find(|interface| interface["name"] == "lo")
            .expect("a loopback interface");
        assert!(loopback["addresses"]
            .as_array()
            .unwrap()
            .contains(&json!({"address": "127.0.0.1", "prefix": 8, "family": "ipv4"})));
        let names: Vec<&str> = interfaces
            .iter()
            .filter_map(|interface| interface["name"].as_str())
            .collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
    }

    #[test]
    fn gauges_moving_is_not_a_change_of_facts() {
        let before = json!({"hostname": "a", "uptime_seconds": 5, "memory": {"total_mb": 8, "available_mb": 3},
            "mounts": [{"mount_point": "/", "size_mb": 10, "available_mb": 4}]});
        let later = json!({"hostname": "a", "uptime_seconds": 65, "memory": {"total_mb": 8, "available_mb": 2},
            "mounts": [{"mount_point": "/", "size_mb": 10, "available_mb": 1}]});
        assert!(same_facts(&before, &later));
        let renamed = json!({"hostname": "b", "uptime_seconds": 65, "memory": {"total_mb": 8, "available_mb": 2},
            "mounts": [{"mount_point": "/", "size_mb": 10, "available_mb": 1}]});
        assert!(!same_facts(&before, &renamed));
    }
}
