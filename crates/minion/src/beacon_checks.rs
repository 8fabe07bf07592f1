//! The checks a Beacon runs on a node. A check *fires* when what it watches is wrong
//! (the disk is over its threshold, the service is not running, the endpoint fails)
//! and says what it saw; the beacon reports only when that changes.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use serde_json::{json, Map, Value};
use weft_modules::process::{self, Capture, RunFailure};
use weft_taskbook::objects::BeaconCheck;

/// What one run of a check saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub fired: bool,
    pub data: Map<String, Value>,
}

impl Observation {
    fn new(fired: bool, data: Value) -> Self {
        let data = match data {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        Observation { fired, data }
    }

    /// A check that cannot tell whether all is well has fired: an operator wants to
    /// hear of a disk that cannot be read or a command that cannot start.
    fn failed(error: String) -> Self {
        Observation::new(true, json!({ "error": error }))
    }
}

/// A check with what it keeps between runs (the inotify watch of `file_changed`).
pub struct Probe {
    check: BeaconCheck,
    watch: Option<Inotify>,
    /// Commands and HTTP requests give up after this.
    timeout: Duration,
}

impl Probe {
    pub fn new(check: BeaconCheck, timeout: Duration) -> Self {
        let watch = match &check {
            BeaconCheck::FileChanged { path } => watch_file(Path::new(path)),
            _ => None,
        };
        Probe {
            check,
            watch,
            timeout,
        }
    }

    /// Blocks for at most the timeout.
    pub fn observe(&mut self) -> Observation {
        match &self.check {
            BeaconCheck::DiskUsage {
                path,
                above_percent,
            } => disk_usage(path, *above_percent),
            BeaconCheck::Load { above } => load(*above),
            BeaconCheck::FileChanged { path } => {
                let path = path.clone();
                self.file_changed(&path)
            }
            BeaconCheck::Service { name } => service(name, self.timeout),
            BeaconCheck::Process { name } => process(name),
            BeaconCheck::Http { url, expect_status } => http(url, *expect_status, self.timeout),
            BeaconCheck::Command { cmd } => command(cmd, self.timeout),
        }
    }

    /// Fires for one interval after the file was written, moved or deleted.
    fn file_changed(&mut self, path: &str) -> Observation {
        if self.watch.is_none() {
            // The file may have appeared since.
            self.watch = watch_file(Path::new(path));
            if self.watch.is_none() {
                return Observation::failed(format!("cannot watch {path}: it does not exist"));
            }
        }
        let inotify = self.watch.as_ref().expect("set above");
        let mut changes = Vec::new();
        while let Ok(events) = inotify.read_events() {
            if events.is_empty() {
                break;
            }
            changes.extend(events.into_iter().map(|event| event.mask));
        }
        let gone = changes.iter().any(|mask| {
            mask.intersects(
                AddWatchFlags::IN_DELETE_SELF
                    | AddWatchFlags::IN_MOVE_SELF
                    | AddWatchFlags::IN_IGNORED,
            )
        });
        if gone {
            // Editors replace files: watch whatever is at the path now.
            self.watch = watch_file(Path::new(path));
        }
        Observation::new(
            !changes.is_empty(),
            json!({"path": path, "changes": changes.len()}),
        )
    }
}

fn watch_file(path: &Path) -> Option<Inotify> {
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
    let flags = AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_DELETE_SELF;
    inotify.add_watch(path, flags).ok()?;
    Some(inotify)
}

fn disk_usage(path: &str, above_percent: f64) -> Observation {
    match nix::sys::statvfs::statvfs(path) {
        Ok(stats) => {
            let fragment = stats.fragment_size() as f64;
            let total = stats.blocks() as f64 * fragment;
            let available = stats.blocks_available() as f64 * fragment;
            let free = stats.blocks_free() as f64 * fragment;
            // As `df` counts it: what root keeps in reserve is neither used nor free.
            let used = total - free;
            let usable = used + available;
            let used_percent = if usable > 0.0 {
                (used / usable * 1000.0).round() / 10.0
            } else {
                0.0
            };
            Observation::new(
                used_percent > above_percent,
                json!({"path": path, "used_percent": used_percent, "above_percent": above_percent}),
            )
        }
        Err(error) => Observation::failed(format!("cannot read the usage of {path}: {error}")),
    }
}

fn load(above: f64) -> Observation {
    let text = match std::fs::read_to_string("/proc/loadavg") {
        Ok(text) => text,
        Err(error) => return Observation::failed(format!("cannot read /proc/loadavg: {error}")),
    };
    let load1: f64 = text
        .split_whitespace()
        .next()
        .and_then(|field| field.parse().ok())
        .unwrap_or(0.0);
    Observation::new(load1 > above, json!({"load1": load1, "above": above}))
}

fn service(name: &str, timeout: Duration) -> Observation {
    if !Path::new("/run/systemd/system").exists() {
        return Observation::failed(format!(
            "cannot check service {name}: systemd is not running on this host"
        ));
    }
    let mut observation = command(&format!("systemctl is-active --quiet {name}"), timeout);
    observation.data = Map::from_iter([
        ("service".to_string(), json!(name)),
        ("running".to_string(), json!(!observation.fired)),
    ]);
    observation
}

fn process(name: &str) -> Observation {
    let running = std::fs::read_dir("/proc")
        .map(|entries| {
            entries.flatten().any(|entry| {
                std::fs::read_to_string(entry.path().join("comm"))
                    .is_ok_and(|comm| comm.trim_end() == name)
            })
        })
        .unwrap_or(false);
    Observation::new(!running, json!({"process": name, "running": running}))
}

fn command(cmd: &str, timeout: Duration) -> Observation {
    let mut shell = Command::new("/bin/sh");
    shell.arg("-c").arg(cmd);
    let deadline = Instant::now() + timeout;
    match process::run(shell, None, Capture::Nothing, Some(deadline)) {
        Ok(finished) => {
            let rc = finished.status.code().unwrap_or(-1);
            Observation::new(rc != 0, json!({"rc": rc}))
        }
        Err(RunFailure::Spawn(error)) => {
            Observation::failed(format!("cannot start `{cmd}`: {error}"))
        }
        Err(RunFailure::TimedOut { .. } | RunFailure::OutputStayedOpen) => {
            Observation::failed(format!("`{cmd}` ran past {}s", timeout.as_secs()))
        }
        Err(RunFailure::Wait { error, .. }) => Observation::failed(format!("`{cmd}`: {error}")),
    }
}

/// Most of a response's head that is read: the status line is all the check needs.
const MAX_RESPONSE_HEAD_BYTES: usize = 4096;

/// A plain `http://` GET; the status line decides.
fn http(url: &str, expect_status: u16, timeout: Duration) -> Observation {
    let failed = |error: String| {
        let mut observation = Observation::failed(error);
        observation.data.insert("url".into(), json!(url));
        observation
    };
    let Some(rest) = url.strip_prefix("http://") else {
        return failed("only http:// URLs are checked".into());
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let address = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let socket = match address.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(socket)) => socket,
        Ok(None) | Err(_) => return failed(format!("cannot resolve {authority}")),
    };
    let exchange = || -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&socket, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: weft-beacon\r\nConnection: close\r\n\r\n"
        )?;
        // The status line may come in pieces; it is all the check needs.
        let mut head = Vec::new();
        let mut chunk = [0; 512];
        while !head.contains(&b'\n') && head.len() < MAX_RESPONSE_HEAD_BYTES {
            match stream.read(&mut chunk)? {
                0 => break,
                read => head.extend_from_slice(&chunk[..read]),
            }
        }
        Ok(String::from_utf8_lossy(&head).into_owned())
    };
    match exchange() {
        Ok(head) => {
            let status: Option<u16> = head
                .lines()
                .next()
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|code| code.parse().ok());
            match status {
                Some(status) => Observation::new(
                    status != expect_status,
                    json!({"url": url, "status": status, "expect_status": expect_status}),
                ),
                None => failed("the answer is not HTTP".into()),
            }
        }
        Err(error) => failed(format!("{url}: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn disk_usage_fires_over_its_threshold() {
        assert!(
            Probe::new(
                BeaconCheck::DiskUsage {
                    path: "/".into(),
                    above_percent: -1.0
                },
                SECOND
            )
            .observe()
            .fired
        );
        let quiet = Probe::new(
            BeaconCheck::DiskUsage {
                path: "/".into(),
                above_percent: 100.0,
            },
            SECOND,
        )
        .observe();
        assert!(!quiet.fired, "{quiet:?}");
        assert!(quiet.data["used_percent"].as_f64().is_some());
        let missing = Probe::new(
            BeaconCheck::DiskUsage {
                path: "/no/such/dir".into(),
                above_percent: 50.0,
            },
            SECOND,
        )
        .observe();
        assert!(missing.fired && missing.data["error"].is_string());
    }

    #[test]
    fn command_and_process_checks_follow_what_runs() {
        let ok = Probe::new(BeaconCheck::Command { cmd: "true".into() }, SECOND).observe();
        let failing = Probe::new(
            BeaconCheck::Command {
                cmd: "exit 3".into(),
            },
            SECOND,
        )
        .observe();
        assert!(!ok.fired);
        assert!(failing.fired && failing.data["rc"] == 3);
        let slow = Probe::new(
            BeaconCheck::Command {
                cmd: "sleep 5".into(),
            },
            Duration::from_millis(100),
        )
        .observe();
        assert!(slow.fired && slow.data["error"].as_str().unwrap().contains("ran past"));
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        let me = Probe::new(
            BeaconCheck::Process {
                name: comm.trim().into(),
            },
            SECOND,
        )
        .observe();
        assert!(!me.fired, "{me:?}");
        let nobody = Probe::new(
            BeaconCheck::Process {
                name: "no-such-process-x".into(),
            },
            SECOND,
        )
        .observe();
        assert!(nobody.fired);
    }

    /// Processes whose command line holds `marker`.
    fn processes_with(marker: &str) -> Vec<String> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            // A process may end between the listing and the read.
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(marker) {
                found.push(format!(
                    "{}: {cmdline}",
                    entry.file_name().to_string_lossy()
                ));
            }
        }
        found
    }

    #[test]
    fn a_command_past_its_timeout_is_killed_with_its_children() {
        // A fraction no other process sleeps for marks the children in /proc.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let marker = format!("sleep 999.{}{nanos}", std::process::id());
        let cmd = format!("{marker} & {marker} & {marker}; true");
        let timed_out =
            Probe::new(BeaconCheck::Command { cmd }, Duration::from_millis(300)).observe();
        assert!(timed_out.fired, "{timed_out:?}");
        // SIGKILL is delivered at once, but a process takes a moment to leave.
        let deadline = Instant::now() + SECOND;
        while !processes_with(&marker).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(processes_with(&marker), Vec::<String>::new());
    }

    #[test]
    fn file_changed_fires_once_per_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("watched.conf");
        std::fs::write(&path, "a").unwrap();
        let mut probe = Probe::new(
            BeaconCheck::FileChanged {
                path: path.display().to_string(),
            },
            SECOND,
        );
        assert!(!probe.observe().fired);
        std::fs::write(&path, "b").unwrap();
        assert!(probe.observe().fired);
        assert!(!probe.observe().fired);
    }

    #[test]
    fn http_fires_on_an_unexpected_status_or_no_answer() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut stream, _) = listener.accept().unwrap();
                // The whole request: closing with some of it unread would reset the
                // connection under the answer.
                let mut request = Vec::new();
                let mut chunk = [0; 1024];
                while !request.ends_with(b"\r\n\r\n") {
                    let read = stream.read(&mut chunk).unwrap();
                    if read == 0 {
                        break;
                    }
                    request.extend_from_slice(&chunk[..read]);
                }
                write!(stream, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").unwrap();
            }
        });
        let check = BeaconCheck::Http {
            url: format!("http://127.0.0.1:{port}/health"),
            expect_status: 200,
        };
        // Generous: the machine may be busy, and a slow answer is a failing one.
        let mut probe = Probe::new(check, Duration::from_secs(10));
        let available = probe.observe();
        assert!(!available.fired, "{available:?}");
        let unavailable = probe.observe();
        assert_eq!(
            unavailable.data.get("status"),
            Some(&serde_json::json!(503)),
            "{unavailable:?}"
        );
        assert!(unavailable.fired);
        server.join().unwrap();
        let refused = probe.observe();
        assert!(refused.fired && refused.data["error"].is_string());
    }
}
