//! This host's facts, exposed to TaskBooks as `facts.*`.
//!
//! Built-in facts are read straight from /proc, /sys and libc, never from helper
//! processes: facts are gathered on every run, which must stay within milliseconds.
//! Only the admin's own executables in the custom facts directory are spawned, and the
//! system bus is asked, briefly, about PackageKit and systemd.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::ptr;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::dbus::{name_has_owner, system_bus};
use crate::packagekit::PackageKit;
use crate::process::{self, Capture, Output, RunFailure};

/// Where custom facts live; `WEFT_FACTS_DIR` overrides it (tests, non-root users).
pub const CUSTOM_FACTS_DIR: &str = "/etc/weft/facts.d";

/// How long a custom facts executable may run before it is killed.
const CUSTOM_FACT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest custom facts file read (executables' output is cut at the same size): facts
/// end up in every template context, so one runaway file must not exhaust the node's memory.
const MAX_CUSTOM_FACT_BYTES: usize = 1024 * 1024;

/// How long to wait for calls that can block on the network (the DNS lookup behind
/// `fqdn`, statvfs on a hung NFS mount) before reporting without their answer.
const BLOCKING_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// How long facts wait for PackageKit's backend name and systemd's presence: a cold start
/// of packagekitd answers in about 50 ms, and a host without them answers at once.
const DBUS_FACT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long counting the installed packages may take: PackageKit's apt backend loads its
/// whole cache for it (1.7 s measured for 735 packages).
const INSTALLED_COUNT_TIMEOUT: Duration = Duration::from_secs(10);

const MIB: u64 = 1024 * 1024;

/// Why facts could not be gathered at all; a host lacking a fact is not one of them.
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    /// The directory exists but cannot be listed: carrying on would silently drop the
    /// admin's facts, and tasks would take the wrong branch on them.
    #[error("cannot read the custom facts directory {}: {source}", path.display())]
    CustomFactsDir { path: PathBuf, source: io::Error },
}

/// `WEFT_FACTS_DIR` when set and not empty, else [`CUSTOM_FACTS_DIR`].
pub fn custom_facts_dir() -> PathBuf {
    match std::env::var_os("WEFT_FACTS_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(CUSTOM_FACTS_DIR),
    }
}

/// Gathers this host's facts as a JSON object.
pub fn gather_facts() -> Result<Value, FactsError> {
    gather_facts_from(&custom_facts_dir())
}

/// Same, with an explicit custom facts directory (testable).
pub fn gather_facts_from(custom_dir: &Path) -> Result<Value, FactsError> {
    let deadline = Instant::now() + BLOCKING_CALL_TIMEOUT;
    let system = uname();
    // The calls that may block run in the background while everything else is read.
    let fqdn_answer = in_background({
        let node_name = system.node_name.clone();
        move |sender| {
            let _ = sender.send(canonical_name(&node_name));
        }
    });
    let mount_table = parse_mounts(&read_text("/proc/mounts"));
    let capacity_answers = probe_capacities(
        mount_table
            .iter()
            .map(|mount| mount.mount_point.clone())
            .collect(),
    );

    let os_release = fs::read_to_string("/etc/os-release")
        .or_else(|_| fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    let interfaces = network_interfaces();
    let default_ipv4 = default_route_interface(&read_text("/proc/net/route"))
        .and_then(|name| first_ipv4(&interfaces, &name));
    let bus_answer = in_background(|sender| {
        let _ = sender.send(bus_facts());
    });
    let custom = gather_custom_facts(custom_dir)?;

    let mut facts = Map::new();
    facts.insert("hostname".into(), json!(short_host_name(&system.node_name)));
    let fqdn = fqdn_answer
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .ok()
        .flatten()
        .unwrap_or_else(|| system.node_name.clone());
    facts.insert("fqdn".into(), json!(fqdn));
    facts.insert("os".into(), os_facts(&parse_os_release(&os_release)));
    facts.insert(
        "kernel".into(),
        json!({
            "name": system.kernel_name,
            "release": system.kernel_release,
            "version": system.kernel_version,
        }),
    );
    facts.insert("arch".into(), json!(system.machine));
    let mut cpu = Map::new();
    cpu.insert("count".into(), json!(online_cpu_count()));
    if let Some(model) = cpu_model(&first_cpuinfo_block()) {
        cpu.insert("model".into(), json!(model));
    }
    facts.insert("cpu".into(), Value::Object(cpu));
    facts.insert("memory".into(), memory_facts(&read_text("/proc/meminfo")));
    let capacities = collect_capacities(capacity_answers, mount_table.len(), deadline);
    facts.insert("mounts".into(), mount_facts(mount_table, capacities));
    facts.insert(
        "interfaces".into(),
        Value::Array(interfaces.iter().map(interface_facts).collect()),
    );
    if let Some(address) = default_ipv4 {
        facts.insert("default_ipv4".into(), json!(address.to_string()));
    }
    if let Some(uptime) = uptime_seconds(&read_text("/proc/uptime")) {
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

// ---- the system bus ------------------------------------------------------------------

/// What facts learn over D-Bus; the defaults stand for a host without an answer.
#[derive(Default)]
struct BusFacts {
    /// PackageKit's backend (`apt`, `dnf`), `None` without PackageKit.
    package_manager: Option<String>,
    systemd_running: bool,
}

/// Asks PackageKit and systemd over one connection; never fails, never outlasts
/// [`DBUS_FACT_TIMEOUT`].
fn bus_facts() -> BusFacts {
    let deadline = Instant::now() + DBUS_FACT_TIMEOUT;
    let asked = crate::dbus::block_on(async {
        let connecting = tokio::time::timeout_at(deadline.into(), system_bus(DBUS_FACT_TIMEOUT));
        let Ok(Ok(connection)) = connecting.await else {
            return BusFacts::default();
        };
        // Where systemd is not the init system its bus name is still activatable, and
        // asking would only start a helper that fails.
        let systemd_running = crate::systemd::unsupported_reason().is_none()
            && tokio::time::timeout_at(
                deadline.into(),
                name_has_owner(&connection, "org.freedesktop.systemd1"),
            )
            .await
            .unwrap_or(false);
        let package_manager = match PackageKit::on(connection, deadline).await {
            Ok(packagekit) => packagekit.backend_name().await.ok(),
            Err(_) => None,
        };
        BusFacts {
            package_manager,
            systemd_running,
        }
    });
    asked.unwrap_or_default()
}

/// The installed-package count, kept for the life of the process once counted: it costs a
/// PackageKit transaction of over a second, and facts are gathered on every run.
static INSTALLED_COUNT: Mutex<Option<usize>> = Mutex::new(None);

/// Adds `packages.installed_count` (null when PackageKit cannot tell). Only the minion and
/// `weft facts --local` call this: a local run would pay a second for a count it rarely uses.
pub fn add_installed_package_count(facts: &mut Value) {
    let count = installed_package_count();
    if let Some(packages) = facts.get_mut("packages").and_then(Value::as_object_mut) {
        packages.insert("installed_count".into(), json!(count));
    }
}

fn installed_package_count() -> Option<usize> {
    let mut cached = INSTALLED_COUNT
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if cached.is_none() {
        // On a thread of its own: the caller may be inside an async runtime.
        *cached = in_background(|sender| {
            let deadline = Instant::now() + INSTALLED_COUNT_TIMEOUT;
            let counted = crate::dbus::block_on(async {
                let packagekit = PackageKit::connect(deadline).await.ok()?;
                packagekit.installed_count().await.ok()
            });
            let _ = sender.send(counted.ok().flatten());
        })
        .recv_timeout(INSTALLED_COUNT_TIMEOUT)
        .ok()
        .flatten();
    }
    *cached
}

/// After the package module changed something, the next count is taken afresh.
pub(crate) fn forget_installed_count() {
    *INSTALLED_COUNT
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = None;
}

/// A /proc or /sys file as text; a file the host lacks (containers) reads as empty.
fn read_text(path: impl AsRef<Path>) -> String {
    fs::read(path)
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

// ---- os-release ----------------------------------------------------------------------

/// `KEY=value` pairs of an os-release(5) file, values unquoted as a shell would.
fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (key, raw_value) = line.trim().split_once('=')?;
            let is_variable_name =
                key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !key.is_empty();
            is_variable_name.then(|| (key.to_string(), unquote_shell_value(raw_value)))
        })
        .collect()
}

/// Undoes the shell quoting os-release(5) allows: '…' is literal, "…" honours `\$`, `\"`,
/// `` \` `` and `\\`, a bare backslash escapes the next character, and adjacent pieces
/// join. An unquoted blank ends the value: what follows could only be a comment.
fn unquote_shell_value(raw: &str) -> String {
    let mut value = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => value.extend(chars.by_ref().take_while(|&c| c != '\'')),
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some(escaped @ ('$' | '"' | '\\' | '`')) => value.push(escaped),
                            Some(other) => {
                                value.push('\\');
                                value.push(other);
                            }
                            None => value.push('\\'),
                        },
                        other => value.push(other),
                    }
                }
            }
            '\\' => value.extend(chars.next()),
            blank if blank.is_whitespace() => break,
            other => value.push(other),
        }
    }
    value
}

/// The `os` object; `id` and `family` are always there so `when:` conditions on them
/// work on any host, the rest only when the release file says.
fn os_facts(release: &BTreeMap<String, String>) -> Value {
    let field = |key: &str| {
        release
            .get(key)
            .map(|value| value.trim())
            .filter(|value| !value.is_empty())
    };
    let id = field("ID").unwrap_or("unknown").to_ascii_lowercase();
    let id_like = field("ID_LIKE").unwrap_or_default().to_ascii_lowercase();
    let family = os_family(&id, &id_like);
    let mut os = Map::new();
    os.insert("id".into(), json!(id));
    os.insert("family".into(), json!(family));
    let optional = [
        ("version", field("VERSION_ID")),
        ("name", field("PRETTY_NAME").or_else(|| field("NAME"))),
        ("codename", field("VERSION_CODENAME")),
    ];
    for (fact, value) in optional {
        if let Some(value) = value {
            os.insert(fact.into(), json!(value));
        }
    }
    Value::Object(os)
}

/// The distribution family TaskBooks branch on: the first of ID, then ID_LIKE's entries
/// (most specific first), that belongs to a known family; else the ID itself.
fn os_family(id: &str, id_like: &str) -> String {
    std::iter::once(id)
        .chain(id_like.split_whitespace())
        .find_map(known_family)
        .unwrap_or(id)
        .to_string()
}

fn known_family(id: &str) -> Option<&'static str> {
    Some(match id {
        "debian" | "ubuntu" | "raspbian" | "linuxmint" | "pop" | "kali" | "devuan"
        | "elementary" => "debian",
        "rhel" | "centos" | "fedora" | "rocky" | "almalinux" | "ol" | "amzn" | "scientific" => {
            "redhat"
        }
        "arch" | "archarm" | "manjaro" | "endeavouros" => "arch",
        "suse" | "sles" | "sled" => "suse",
        opensuse if opensuse.starts_with("opensuse") => "suse",
        "alpine" => "alpine",
        _ => return None,
    })
}

// ---- kernel, CPU, memory, uptime -------------------------------------------------------

/// uname(2)'s answer; a field it could not give is "unknown" ("localhost" for the node).
struct SystemNames {
    node_name: String,
    kernel_name: String,
    kernel_release: String,
    kernel_version: String,
    machine: String,
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

/// This machine's host name without its domain: the default name of a node.
pub fn host_name() -> String {
    short_host_name(&uname().node_name).to_string()
}

fn short_host_name(node_name: &str) -> &str {
    node_name.split('.').next().unwrap_or_default()
}

fn uname() -> SystemNames {
    let names = nix::sys::utsname::uname().ok();
    let text = |field: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        names
            .as_ref()
            .map(|n| field(n).to_string_lossy().into_owned())
            .filter(|text| !text.is_empty())
    };
    let or_unknown = |field| text(field).unwrap_or_else(|| "unknown".to_string());
    SystemNames {
        // What the kernel calls a node without a name.
        node_name: text(|n| n.nodename()).unwrap_or_else(|| "localhost".to_string()),
        kernel_name: or_unknown(|n| n.sysname()),
        kernel_release: or_unknown(|n| n.release()),
        kernel_version: or_unknown(|n| n.version()),
        machine: or_unknown(|n| n.machine()),
    }
}

/// The host's canonical name as the resolver (/etc/hosts, DNS) knows it.
fn canonical_name(node_name: &str) -> Option<String> {
    let node = CString::new(node_name).ok()?;
    let hints = libc::addrinfo {
        ai_flags: libc::AI_CANONNAME,
        ai_family: libc::AF_UNSPEC,
        ai_socktype: libc::SOCK_STREAM,
        ai_protocol: 0,
        ai_addrlen: 0,
        ai_addr: ptr::null_mut(),
        ai_canonname: ptr::null_mut(),
        ai_next: ptr::null_mut(),
    };
    let mut found: *mut libc::addrinfo = ptr::null_mut();
    // SAFETY: the node name is NUL-terminated, the service may be null, and getaddrinfo
    // only writes the result list head through `found`.
    let status = unsafe { libc::getaddrinfo(node.as_ptr(), ptr::null(), &hints, &mut found) };
    if status != 0 || found.is_null() {
        return None;
    }
    // SAFETY: `found` is the list getaddrinfo returned, alive until freeaddrinfo below;
    // with AI_CANONNAME its first entry's ai_canonname is null or a NUL-terminated string.
    let name = unsafe {
        let canonical = (*found).ai_canonname;
        (!canonical.is_null()).then(|| CStr::from_ptr(canonical).to_string_lossy().into_owned())
    };
    // SAFETY: `found` came from getaddrinfo and nothing borrowed from it outlives this point.
    unsafe { libc::freeaddrinfo(found) };
    // Hosts files that list the node name after `localhost` on one line make that the
    // canonical name, which would tell every node apart as "localhost".
    name.filter(|name| !name.is_empty() && name != "localhost" && !name.starts_with("localhost."))
}

fn online_cpu_count() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)
        .ok()
        .flatten()
        .and_then(|online| u64::try_from(online).ok())
        .filter(|&count| count > 0)
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, |count| count.get() as u64))
}

/// The first processor's block of /proc/cpuinfo: every CPU repeats the model, and on big
/// hosts the whole file is hundreds of KiB the kernel formats on each read.
fn first_cpuinfo_block() -> String {
    let Ok(file) = File::open("/proc/cpuinfo") else {
        return String::new();
    };
    let mut block = String::new();
    for line in BufReader::new(file).lines().map_while(Result::ok) {
        if line.trim().is_empty() && !block.is_empty() {
            break;
        }
        block.push_str(&line);
        block.push('\n');
    }
    block
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_string())
    })
}

/// The `memory` object from /proc/meminfo (values in kB); a line the kernel lacks
/// leaves its fact out.
fn memory_facts(meminfo: &str) -> Value {
    let kib = |wanted: &str| {
        meminfo.lines().find_map(|line| {
            let (key, rest) = line.split_once(':')?;
            if key.trim() != wanted {
                return None;
            }
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    let mut memory = Map::new();
    for (fact, key) in [
        ("total_mb", "MemTotal"),
        ("available_mb", "MemAvailable"),
        ("swap_total_mb", "SwapTotal"),
    ] {
        if let Some(kib) = kib(key) {
            memory.insert(fact.into(), json!(kib / 1024));
        }
    }
    Value::Object(memory)
}

/// Whole seconds since boot, from /proc/uptime's first field.
fn uptime_seconds(uptime: &str) -> Option<u64> {
    let seconds = uptime.split_whitespace().next()?;
    seconds.split('.').next()?.parse().ok()
}

// ---- mounts ------------------------------------------------------------------------------

#[cfg_attr(test, derive(Debug, PartialEq))]
struct MountEntry {
    device: String,
    mount_point: String,
    fs_type: String,
    options: Vec<String>,
}

/// The entries of /proc/mounts, escapes undone.
fn parse_mounts(table: &str) -> Vec<MountEntry> {
    table
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let device = fields.next()?;
            let mount_point = fields.next()?;
            let fs_type = fields.next()?;
            let options = fields.next()?;
            Some(MountEntry {
                device: unescape_octal(device),
                mount_point: unescape_octal(mount_point),
                fs_type: unescape_octal(fs_type),
                // The kernel escapes commas inside option values, so splitting first is safe.
                options: options.split(',').map(unescape_octal).collect(),
            })
        })
        .collect()
}

/// /proc/mounts writes blanks and backslashes in its fields, and commas in option values,
/// as `\ooo` octal escapes: blanks and commas separate what it lists.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut unescaped = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some((&first, tail)) = rest.split_first() {
        let escaped = match tail {
            [a, b, c, ..] if first == b'\\' => octal_byte([*a, *b, *c]),
            _ => None,
        };
        match escaped {
            Some(byte) => {
                unescaped.push(byte);
                rest = &tail[3..];
            }
            None => {
                unescaped.push(first);
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&unescaped).into_owned()
}

fn octal_byte(digits: [u8; 3]) -> Option<u8> {
    digits.iter().try_fold(0u8, |value, &digit| {
        let digit = digit.checked_sub(b'0').filter(|&d| d < 8)?;
        value.checked_mul(8)?.checked_add(digit)
    })
}

#[derive(Clone, Copy)]
enum Capacity {
    Known {
        size_mb: u64,
        available_mb: u64,
    },
    /// No blocks at all: a pseudo filesystem (proc, sysfs, cgroup), left out of the facts.
    Pseudo,
    /// statvfs failed or did not answer in time: a real mount, reported without sizes.
    Unknown,
}

/// statvfs on every mount point, on a thread of its own: a hung network filesystem
/// blocks statvfs indefinitely and must not hang the run.
fn probe_capacities(mount_points: Vec<String>) -> Receiver<(usize, Capacity)> {
    in_background(move |sender| {
        for (index, mount_point) in mount_points.iter().enumerate() {
            let capacity = match nix::sys::statvfs::statvfs(mount_point.as_str()) {
                Ok(stats) if stats.blocks() == 0 => Capacity::Pseudo,
                Ok(stats) => {
                    let bytes = |count| widen(count).saturating_mul(widen(stats.fragment_size()));
                    Capacity::Known {
                        size_mb: bytes(stats.blocks()) / MIB,
                        available_mb: bytes(stats.blocks_available()) / MIB,
                    }
                }
                Err(_) => Capacity::Unknown,
            };
            if sender.send((index, capacity)).is_err() {
                return;
            }
        }
    })
}

/// statvfs counts are 32 or 64 bits wide depending on the target; u64 holds either.
fn widen(count: impl Into<u64>) -> u64 {
    count.into()
}

fn collect_capacities(
    answers: Receiver<(usize, Capacity)>,
    mount_count: usize,
    deadline: Instant,
) -> Vec<Capacity> {
    let mut capacities = vec![Capacity::Unknown; mount_count];
    while let Ok((index, capacity)) =
        answers.recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        if let Some(slot) = capacities.get_mut(index) {
            *slot = capacity;
        }
    }
    capacities
}

fn mount_facts(mounts: Vec<MountEntry>, capacities: Vec<Capacity>) -> Value {
    let facts = mounts
        .into_iter()
        .zip(capacities)
        .filter_map(|(mount, capacity)| {
            let mut fact = Map::new();
            fact.insert("device".into(), json!(mount.device));
            fact.insert("mount_point".into(), json!(mount.mount_point));
            fact.insert("fs_type".into(), json!(mount.fs_type));
            fact.insert("options".into(), json!(mount.options));
            match capacity {
                Capacity::Pseudo => return None,
                Capacity::Known {
                    size_mb,
                    available_mb,
                } => {
                    fact.insert("size_mb".into(), json!(size_mb));
                    fact.insert("available_mb".into(), json!(available_mb));
                }
                Capacity::Unknown => {}
            }
            Some(Value::Object(fact))
        })
        .collect();
    Value::Array(facts)
}

// ---- network -----------------------------------------------------------------------------

/// One network interface with its IP addresses (address, prefix length), in the order
/// the kernel lists them: the primary IPv4 address comes first.
struct Interface {
    name: String,
    up: bool,
    addresses: Vec<(IpAddr, u32)>,
}

/// One getifaddrs entry: each interface appears once per address, plus once for its link.
struct InterfaceEntry {
    name: String,
    up: bool,
    address: Option<(IpAddr, u32)>,
}

/// This host's interfaces, sorted by name.
fn network_interfaces() -> Vec<Interface> {
    let mut by_name: BTreeMap<String, Interface> = BTreeMap::new();
    for entry in interface_entries() {
        // Labelled IPv4 addresses come as `eth0:1`; a device name cannot contain `:`.
        let name = entry
            .name
            .split_once(':')
            .map_or(entry.name.as_str(), |(device, _)| device);
        let interface = by_name
            .entry(name.to_string())
            .or_insert_with(|| Interface {
                name: name.to_string(),
                up: false,
                addresses: Vec::new(),
            });
        interface.up |= entry.up;
        interface.addresses.extend(entry.address);
    }
    by_name.into_values().collect()
}

fn interface_entries() -> Vec<InterfaceEntry> {
    let Ok(addresses) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addresses
        .map(|entry| {
            let address = entry.address.as_ref().and_then(ip_address);
            let netmask = entry.netmask.as_ref().and_then(ip_address);
            InterfaceEntry {
                up: entry.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP),
                address: address.map(|address| (address, prefix_length(address, netmask))),
                name: entry.interface_name,
            }
        })
        .collect()
}

/// The IPv4 or IPv6 address in a socket address; other families (the link layer) have none.
fn ip_address(address: &nix::sys::socket::SockaddrStorage) -> Option<IpAddr> {
    if let Some(ipv4) = address.as_sockaddr_in() {
        return Some(IpAddr::V4(ipv4.ip()));
    }
    address.as_sockaddr_in6().map(|ipv6| IpAddr::V6(ipv6.ip()))
}

/// The number of netmask bits; no netmask (a point-to-point peer) means a host address.
fn prefix_length(address: IpAddr, netmask: Option<IpAddr>) -> u32 {
    match (address, netmask) {
        (IpAddr::V4(_), Some(IpAddr::V4(mask))) => mask.to_bits().count_ones(),
        (IpAddr::V6(_), Some(IpAddr::V6(mask))) => mask.to_bits().count_ones(),
        (IpAddr::V4(_), _) => 32,
        (IpAddr::V6(_), _) => 128,
    }
}

fn interface_facts(interface: &Interface) -> Value {
    let sys_dir = Path::new("/sys/class/net").join(&interface.name);
    let mut fact = Map::new();
    fact.insert("name".into(), json!(interface.name));
    // Loopback and tunnels report an all-zero or empty address: they have no MAC.
    let mac = read_text(sys_dir.join("address")).trim().to_string();
    if mac.chars().any(|c| c.is_ascii_hexdigit() && c != '0') {
        fact.insert("mac".into(), json!(mac));
    }
    if let Ok(mtu) = read_text(sys_dir.join("mtu")).trim().parse::<u32>() {
        fact.insert("mtu".into(), json!(mtu));
    }
    fact.insert("up".into(), json!(interface.up));
    let addresses: Vec<Value> = interface
        .addresses
        .iter()
        .map(|(address, prefix)| {
            json!({
                "address": address.to_string(),
                "prefix": prefix,
                "family": if address.is_ipv4() { "ipv4" } else { "ipv6" },
            })
        })
        .collect();
    fact.insert("addresses".into(), Value::Array(addresses));
    Value::Object(fact)
}

/// The interface of the IPv4 default route with the lowest metric, from /proc/net/route
/// (hex destination, flags and mask; decimal metric).
fn default_route_interface(route_table: &str) -> Option<String> {
    route_table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [interface, destination, _gateway, flags, _refcnt, _use, metric, mask, ..] =
                fields[..]
            else {
                return None;
            };
            let flags = u16::from_str_radix(flags, 16).ok()?;
            let is_default = destination == "00000000" && mask == "00000000";
            (is_default && flags & libc::RTF_UP != 0)
                .then(|| Some((metric.parse::<u32>().ok()?, interface)))
                .flatten()
        })
        .min_by_key(|&(metric, _)| metric)
        .map(|(_, interface)| interface.to_string())
}

fn first_ipv4(interfaces: &[Interface], name: &str) -> Option<Ipv4Addr> {
    let interface = interfaces.iter().find(|interface| interface.name == name)?;
    interface
        .addresses
        .iter()
        .find_map(|(address, _)| match address {
            IpAddr::V4(ipv4) => Some(*ipv4),
            IpAddr::V6(_) => None,
        })
}

// ---- custom facts ------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum SourceKind {
    Json,
    Executable,
}

impl SourceKind {
    fn evaluate(self, path: &Path) -> Value {
        match self {
            SourceKind::Json => read_json_fact(path),
            SourceKind::Executable => run_fact_executable(path),
        }
    }
}

/// The `custom` object: one entry per fact source, keyed by file stem and sorted. A
/// source that fails becomes `{"error": ...}` rather than failing the run.
fn gather_custom_facts(dir: &Path) -> Result<Map<String, Value>, FactsError> {
    let unreadable = |source| FactsError::CustomFactsDir {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match fs::read_dir(dir) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Map::new()),
        listing => listing.map_err(unreadable)?,
    };
    let mut sources = Vec::new();
    for entry in entries {
        let path = entry.map_err(unreadable)?.path();
        if let Some(kind) = fact_source_kind(&path) {
            let name = path
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_default();
            sources.push((name, path, kind));
        }
    }
    sources.sort_by(|(name_a, path_a, _), (name_b, path_b, _)| {
        (name_a, path_a).cmp(&(name_b, path_b))
    });

    // All sources at once: slow executables then cost the slowest one's time, not the sum.
    let mut answers: Vec<(String, PathBuf, SourceKind, Receiver<Value>)> = Vec::new();
    for (name, path, kind) in sources {
        let answer = match answers.last() {
            // Sorted by stem, so a clash is with the previous source; it is not run at all.
            Some((previous_name, previous_path, ..)) if *previous_name == name => {
                let (sender, answer) = mpsc::channel();
                let _ = sender.send(fact_error(format!(
                    "{} and {} both provide custom fact `{name}`; rename one",
                    previous_path.display(),
                    path.display()
                )));
                answer
            }
            _ => in_background({
                let path = path.clone();
                move |sender| {
                    let _ = sender.send(kind.evaluate(&path));
                }
            }),
        };
        answers.push((name, path, kind, answer));
    }
    let mut facts = Map::new();
    for (name, path, kind, answer) in answers {
        // A source whose thread could not start is evaluated here instead.
        let value = answer.recv().unwrap_or_else(|_| kind.evaluate(&path));
        facts.insert(name, value);
    }
    Ok(facts)
}

/// `.json` files are data even when executable (copied from a filesystem without
/// modes); other files count only when executable. Dotfiles are left alone: editors'
/// swap and lock files live there.
fn fact_source_kind(path: &Path) -> Option<SourceKind> {
    if path.file_name()?.to_string_lossy().starts_with('.') {
        return None;
    }
    if path
        .extension()
        .is_some_and(|extension| extension == "json")
    {
        return Some(SourceKind::Json);
    }
    let metadata = fs::metadata(path).ok()?;
    (metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
        .then_some(SourceKind::Executable)
}

fn fact_error(message: String) -> Value {
    json!({ "error": message })
}

/// Reads one byte past the size limit, so that a file that does not fit can be told apart.
fn read_up_to_limit(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?
        .take(MAX_CUSTOM_FACT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn read_json_fact(path: &Path) -> Value {
    let bytes = match read_up_to_limit(path) {
        Ok(bytes) => bytes,
        Err(error) => {
            return fact_error(format!(
                "cannot read custom facts file {}: {error}",
                path.display()
            ))
        }
    };
    if bytes.len() > MAX_CUSTOM_FACT_BYTES {
        return fact_error(format!(
            "custom facts file {} is larger than 1 MiB; skipped",
            path.display()
        ));
    }
    serde_json::from_slice(&bytes).unwrap_or_else(|error| {
        fact_error(format!(
            "custom facts file {} is not valid JSON: {error}",
            path.display()
        ))
    })
}

fn run_fact_executable(path: &Path) -> Value {
    let described = format!("custom facts executable {}", path.display());
    let deadline = Instant::now() + CUSTOM_FACT_TIMEOUT;
    let finished = match process::run(Command::new(path), None, Capture::Output, Some(deadline)) {
        Ok(finished) => finished,
        Err(RunFailure::Spawn(error)) => {
            return fact_error(format!("cannot run {described}: {error}"))
        }
        Err(RunFailure::Wait { error, stderr }) => {
            return fact_error(format!(
                "{described} could not be waited for ({error}) and was killed{}",
                stderr_note(&stderr)
            ))
        }
        Err(RunFailure::TimedOut { stderr }) => {
            return fact_error(format!(
                "{described} did not finish within {CUSTOM_FACT_TIMEOUT:?} and was killed{}",
                stderr_note(&stderr)
            ))
        }
        Err(RunFailure::OutputStayedOpen) => {
            return fact_error(format!(
                "{described} exited, but its output stayed open past {CUSTOM_FACT_TIMEOUT:?} \
                 (a background process it started still holds it)"
            ))
        }
    };
    let note = stderr_note(&finished.stderr);
    if !finished.status.success() {
        return fact_error(format!("{described} failed ({}){note}", finished.status));
    }
    if finished.stdout.truncated {
        return fact_error(format!("{described} printed more than 1 MiB; skipped"));
    }
    let output = &finished.stdout.bytes;
    serde_json::from_slice(output).unwrap_or_else(|error| {
        fact_error(format!(
            "{described} printed invalid JSON ({error}); its output began: {:?}{note}",
            excerpt(output)
        ))
    })
}

/// `; stderr: ...` with the start of what the executable wrote there, or nothing.
fn stderr_note(stderr: &Output) -> String {
    if stderr.bytes.trim_ascii().is_empty() {
        return String::new();
    }
    format!("; stderr: {}", excerpt(&stderr.bytes))
}

/// The start of a process's output: enough to recognise the problem in one message.
fn excerpt(bytes: &[u8]) -> String {
    const MAX_CHARS: usize = 300;
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    match text.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(text: &str) -> Value {
        os_facts(&parse_os_release(text))
    }

    #[test]
    fn os_release_values_are_unquoted_like_a_shell_would() {
        let release = parse_os_release(
            "# a comment\n\
             PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n\
             ID=debian\n\
             VERSION_ID='12'\n\
             QUOTED=\"a \\\"b\\\" \\$HOME \\\\ \\n\"\n\
             JOINED=one\"two\"'three'\n\
             ESCAPED=with\\ space\n\
             TRAILING=value # comment\n\
             not a variable line\n",
        );
        assert_eq!(release["PRETTY_NAME"], "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(release["ID"], "debian");
        assert_eq!(release["VERSION_ID"], "12");
        assert_eq!(release["QUOTED"], "a \"b\" $HOME \\ \\n");
        assert_eq!(release["JOINED"], "onetwothree");
        assert_eq!(release["ESCAPED"], "with space");
        assert_eq!(release["TRAILING"], "value");
        assert_eq!(release.len(), 7);
    }

    #[test]
    fn os_facts_map_distributions_to_families() {
        let debian = os(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_ID=\"12\"\n\
                         VERSION_CODENAME=bookworm\nID=debian\n",
        );
        assert_eq!(
            debian,
            json!({
                "id": "debian",
                "family": "debian",
                "version": "12",
                "name": "Debian GNU/Linux 12 (bookworm)",
                "codename": "bookworm",
            })
        );
        let family = |text: &str| os(text)["family"].as_str().map(str::to_string);
        assert_eq!(
            family("ID=ubuntu\nID_LIKE=debian").as_deref(),
            Some("debian")
        );
        assert_eq!(
            family("ID=linuxmint\nID_LIKE=\"ubuntu debian\"").as_deref(),
            Some("debian")
        );
        assert_eq!(family("ID=raspbian\n").as_deref(), Some("debian"));
        assert_eq!(
            family("ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"").as_deref(),
            Some("redhat")
        );
        assert_eq!(
            family("ID=\"almalinux\"\nID_LIKE=\"rhel centos fedora\"").as_deref(),
            Some("redhat")
        );
        assert_eq!(family("ID=fedora\n").as_deref(), Some("redhat"));
        assert_eq!(
            family("ID=\"opensuse-leap\"\nID_LIKE=\"suse opensuse\"").as_deref(),
            Some("suse")
        );
        assert_eq!(family("ID=\"sles\"\n").as_deref(), Some("suse"));
        assert_eq!(
            family("ID=manjaro\nID_LIKE=arch\n").as_deref(),
            Some("arch")
        );
        assert_eq!(
            family("ID=alpine\nVERSION_ID=3.19.1\n").as_deref(),
            Some("alpine")
        );
        assert_eq!(family("ID=gentoo\n").as_deref(), Some("gentoo"));
        assert_eq!(family("ID=NixOS\n").as_deref(), Some("nixos"));
    }

    #[test]
    fn a_missing_os_release_gives_unknown_id_and_family_only() {
        assert_eq!(os(""), json!({"id": "unknown", "family": "unknown"}));
        assert_eq!(os("NAME=Linux\n")["name"], "Linux");
    }

    #[test]
    fn meminfo_is_reported_in_mib() {
        let meminfo = "MemTotal:       24684092 kB\n\
                       MemFree:        23012360 kB\n\
                       MemAvailable:   24232884 kB\n\
                       SwapCached:            0 kB\n\
                       SwapTotal:       2097148 kB\n";
        assert_eq!(
            memory_facts(meminfo),
            json!({"total_mb": 24105, "available_mb": 23664, "swap_total_mb": 2047})
        );
        assert_eq!(
            memory_facts("MemTotal: 1048576 kB\n"),
            json!({"total_mb": 1024})
        );
        assert_eq!(memory_facts(""), json!({}));
    }

    #[test]
    fn cpu_model_and_uptime_are_parsed() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\n\
                       model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\nflags\t\t: fpu\n";
        assert_eq!(
            cpu_model(cpuinfo).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        assert_eq!(cpu_model("processor\t: 0\nBogoMIPS\t: 50.00\n"), None);
        assert_eq!(uptime_seconds("12345.67 54321.00\n"), Some(12345));
        assert_eq!(uptime_seconds(""), None);
    }

    #[test]
    fn mount_fields_are_unescaped() {
        assert_eq!(unescape_octal(r"/mnt/my\040disk"), "/mnt/my disk");
        assert_eq!(unescape_octal(r"a\011b\012c\134d"), "a\tb\nc\\d");
        // Not an escape: left as written.
        assert_eq!(unescape_octal(r"back\slash\09"), r"back\slash\09");
        assert_eq!(unescape_octal(r"end\"), r"end\");
        assert_eq!(unescape_octal(r"\777"), r"\777");

        let mounts = parse_mounts(
            "/dev/sda1 / ext4 rw,relatime,errors=remount-ro 0 0\n\
             //nas/share\\040one /mnt/nas\\040share cifs rw,user=a\\054b 0 0\n\
             truncated line\n",
        );
        assert_eq!(
            mounts,
            vec![
                MountEntry {
                    device: "/dev/sda1".into(),
                    mount_point: "/".into(),
                    fs_type: "ext4".into(),
                    options: vec!["rw".into(), "relatime".into(), "errors=remount-ro".into()],
                },
                MountEntry {
                    device: "//nas/share one".into(),
                    mount_point: "/mnt/nas share".into(),
                    fs_type: "cifs".into(),
                    options: vec!["rw".into(), "user=a,b".into()],
                },
            ]
        );
    }

    #[test]
    fn the_default_route_with_the_lowest_metric_wins() {
        let routes =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                      wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
                      eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                      eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                      down0\t00000000\t01010101\t0002\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(default_route_interface(routes).as_deref(), Some("eth0"));
        assert_eq!(default_route_interface(""), None);
    }

    fn write_executable(dir: &Path, name: &str, script: &str) {
        let path = dir.join(name);
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn custom_facts_come_from_json_files_and_executables() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("packages.json"), r#"{"nginx": "1.24"}"#).unwrap();
        fs::write(dir.path().join("README"), "not a fact source").unwrap();
        fs::write(dir.path().join(".hidden.json"), "not json").unwrap();
        write_executable(
            dir.path(),
            "role.sh",
            "#!/bin/sh\necho '{\"tier\": \"web\"}'\n",
        );
        write_executable(
            dir.path(),
            "garbage",
            "#!/bin/sh\necho 'this is not json'\necho 'something broke' >&2\n",
        );
        write_executable(
            dir.path(),
            "failing",
            "#!/bin/sh\necho 'no database' >&2\nexit 3\n",
        );

        let custom = gather_custom_facts(dir.path()).unwrap();
        let names: Vec<&str> = custom.keys().map(String::as_str).collect();
        assert_eq!(names, ["failing", "garbage", "packages", "role"]);
        assert_eq!(custom["packages"], json!({"nginx": "1.24"}));
        assert_eq!(custom["role"], json!({"tier": "web"}));

        let garbage = custom["garbage"]["error"].as_str().unwrap();
        let garbage_path = dir.path().join("garbage");
        assert!(
            garbage.contains(&*garbage_path.to_string_lossy()),
            "{garbage}"
        );
        assert!(garbage.contains("invalid JSON"), "{garbage}");
        assert!(garbage.contains("this is not json"), "{garbage}");
        assert!(garbage.contains("something broke"), "{garbage}");

        let failing = custom["failing"]["error"].as_str().unwrap();
        assert!(failing.contains("exit status: 3"), "{failing}");
        assert!(failing.contains("no database"), "{failing}");
    }

    #[test]
    fn broken_custom_fact_files_become_error_entries() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("bad.json"), "{ not json").unwrap();
        fs::write(
            dir.path().join("huge.json"),
            vec![b' '; MAX_CUSTOM_FACT_BYTES + 1],
        )
        .unwrap();
        fs::write(dir.path().join("twice.json"), "1").unwrap();
        write_executable(dir.path(), "twice.sh", "#!/bin/sh\necho 2\n");

        let custom = gather_custom_facts(dir.path()).unwrap();
        let error = |name: &str| custom[name]["error"].as_str().unwrap().to_string();
        assert!(
            error("bad").contains("bad.json is not valid JSON"),
            "{}",
            error("bad")
        );
        assert!(
            error("huge").contains("larger than 1 MiB"),
            "{}",
            error("huge")
        );
        assert!(
            error("twice").contains("both provide custom fact `twice`"),
            "{}",
            error("twice")
        );
    }

    #[test]
    fn an_executable_printing_more_than_1_mib_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let flood = format!("#!/bin/sh\nhead -c {} /dev/zero\n", MIB + 1);
        write_executable(dir.path(), "flood", &flood);
        let custom = gather_custom_facts(dir.path()).unwrap();
        let error = custom["flood"]["error"].as_str().unwrap();
        assert!(
            error.ends_with("printed more than 1 MiB; skipped"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_custom_facts_dir_gives_no_custom_facts() {
        let dir = tempfile::tempdir().unwrap();
        let custom = gather_custom_facts(&dir.path().join("absent")).unwrap();
        assert!(custom.is_empty());
    }

    #[test]
    fn a_custom_facts_path_that_is_not_a_dir_is_fatal() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let error = gather_custom_facts(file.path()).unwrap_err();
        assert!(
            error.to_string().contains("custom facts directory"),
            "{error}"
        );
    }

    #[test]
    fn this_host_has_the_basic_facts() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("site.json"), r#"{"dc": "fra1"}"#).unwrap();
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
