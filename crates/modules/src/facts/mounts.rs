//! `mounts`: the mount table with each filesystem's size.

use std::sync::mpsc::Receiver;
use std::time::Instant;

use serde_json::{json, Map, Value};

use super::{in_background, read_text};

const MIB: u64 = 1024 * 1024;

/// The mount table, read at once, with its filesystems' sizes asked for in the background.
pub(super) struct PendingMounts {
    table: Vec<MountEntry>,
    capacities: Receiver<(usize, Capacity)>,
}

impl PendingMounts {
    pub(super) fn start() -> PendingMounts {
        let table = parse_mounts(&read_text("/proc/mounts"));
        let mount_points = table
            .iter()
            .map(|mount| mount.mount_point.clone())
            .collect();
        PendingMounts {
            capacities: probe_capacities(mount_points),
            table,
        }
    }

    /// The `mounts` array, with the sizes that came by `deadline`.
    pub(super) fn facts(self, deadline: Instant) -> Value {
        let capacities = collect_capacities(self.capacities, self.table.len(), deadline);
        mount_facts(self.table, capacities)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
