//! `cpu` and `memory`.

use std::fs::File;
use std::io::{BufRead, BufReader};

use serde_json::{json, Map, Value};

/// The `cpu` object: how many are online, and their model where the kernel says.
pub(super) fn cpu_facts() -> Value {
    let mut cpu = Map::new();
    cpu.insert("count".into(), json!(online_cpu_count()));
    if let Some(model) = cpu_model(&first_cpuinfo_block()) {
        cpu.insert("model".into(), json!(model));
    }
    Value::Object(cpu)
}

fn online_cpu_count() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)
        .ok()
        .flatten()
        .and_then(|online| u64::try_from(online).ok())
        .filter(|&count| count > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, |count| count.get() as u64)
        })
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
pub(super) fn memory_facts(meminfo: &str) -> Value {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn cpu_model_is_parsed() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\n\
                       model name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\nflags\t\t: fpu\n";
        assert_eq!(
            cpu_model(cpuinfo).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        assert_eq!(cpu_model("processor\t: 0\nBogoMIPS\t: 50.00\n"), None);
    }
}
