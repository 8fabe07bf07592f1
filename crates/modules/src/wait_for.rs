//! `wait_for`: waits until a TCP port answers (or stops answering), or a file appears
//! (or goes), optionally until it holds a regular expression (Ansible's `wait_for`).
//! It only watches, so it runs in check mode too and never reports a change; it gives
//! up at its `timeout` or the task's, whichever comes first, saying what it waited for.

use std::io::Read;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use regex::Regex;
use serde::Deserialize;

use crate::module::{Module, ModuleContext, ModuleError, Outcome};
use crate::stat::open_regular;

pub struct WaitFor;

/// What `search_regex` reads of a file or a connection at most.
const MAX_SEARCHED_BYTES: u64 = 1 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitForArgs {
    #[serde(default = "localhost")]
    host: String,
    port: Option<u16>,
    path: Option<PathBuf>,
    #[serde(default)]
    state: WaitState,
    /// A regular expression the file or what the port sends must hold.
    search_regex: Option<String>,
    /// Seconds before giving up.
    #[serde(default = "default_timeout")]
    timeout: u64,
    /// Seconds before the first look.
    #[serde(default)]
    delay: u64,
    /// Seconds between looks.
    #[serde(default = "one")]
    sleep: u64,
    /// Seconds a connection attempt may take.
    #[serde(default = "default_connect_timeout")]
    connect_timeout: u64,
    /// The failure message instead of weft's.
    msg: Option<String>,
}

fn localhost() -> String {
    "127.0.0.1".to_string()
}
fn default_timeout() -> u64 {
    300
}
fn one() -> u64 {
    1
}
fn default_connect_timeout() -> u64 {
    5
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum WaitState {
    #[default]
    Started,
    Stopped,
    Present,
    Absent,
}

impl WaitState {
    fn word(self) -> &'static str {
        match self {
            WaitState::Started => "started",
            WaitState::Stopped => "stopped",
            WaitState::Present => "present",
            WaitState::Absent => "absent",
        }
    }
}

/// What is watched.
enum Watched {
    Port { host: String, port: u16 },
    Path(PathBuf),
}

impl Watched {
    fn describe(&self) -> String {
        match self {
            Watched::Port { host, port } => format!("{host}:{port}"),
            Watched::Path(path) => path.display().to_string(),
        }
    }
}

/// Whether what is watched is in the wanted state now.
fn satisfied(
    watched: &Watched,
    state: WaitState,
    search: Option<&Regex>,
    connect_timeout: Duration,
) -> bool {
    let present = match watched {
        Watched::Port { host, port } => {
            let Ok(addresses) = (host.as_str(), *port).to_socket_addrs() else {
                return false;
            };
            let connected = addresses
                .into_iter()
                .find_map(|address| TcpStream::connect_timeout(&address, connect_timeout).ok());
            match (connected, search) {
                (Some(stream), Some(search)) => {
                    let _ = stream.set_read_timeout(Some(connect_timeout));
                    holds(stream, search)
                }
                (connected, _) => connected.is_some(),
            }
        }
        Watched::Path(path) => match search {
            Some(search) => open_regular(path).is_ok_and(|file| holds(file, search)),
            None => path.exists(),
        },
    };
    match state {
        WaitState::Started | WaitState::Present => present,
        WaitState::Stopped | WaitState::Absent => !present,
    }
}

fn holds(source: impl Read, search: &Regex) -> bool {
    let mut bytes = Vec::new();
    let _ = source.take(MAX_SEARCHED_BYTES).read_to_end(&mut bytes);
    search.is_match(&String::from_utf8_lossy(&bytes))
}

impl Module for WaitFor {
    const NAME: &'static str = "wait_for";
    type Args = WaitForArgs;

    fn check_apply(
        &self,
        args: WaitForArgs,
        context: &mut ModuleContext,
        _apply: bool,
    ) -> Result<Outcome, ModuleError> {
        let watched = match (args.port, &args.path) {
            (Some(port), None) => Watched::Port {
                host: args.host.clone(),
                port,
            },
            (None, Some(path)) => Watched::Path(path.clone()),
            _ => {
                return Err(ModuleError::Failed(
                    "give `port` (with `host`) or `path`, one of them".into(),
                ))
            }
        };
        let search = args
            .search_regex
            .as_deref()
            .map(Regex::new)
            .transpose()
            .map_err(|e| {
                ModuleError::Failed(format!(
                    "`search_regex` is not a valid regular expression: {e}"
                ))
            })?;
        let started = Instant::now();
        let own_deadline = started + Duration::from_secs(args.delay + args.timeout);
        let deadline = context
            .deadline
            .map_or(own_deadline, |task| task.min(own_deadline));
        std::thread::sleep(
            Duration::from_secs(args.delay).min(deadline.saturating_duration_since(Instant::now())),
        );
        let connect_timeout = Duration::from_secs(args.connect_timeout.max(1));
        loop {
            if satisfied(&watched, args.state, search.as_ref(), connect_timeout) {
                let elapsed = started.elapsed().as_secs_f64();
                return Ok(Outcome::unchanged()
                    .with_msg(
                        format!(
                            "{} is {:?} after {elapsed:.1}s",
                            watched.describe(),
                            args.state
                        )
                        .to_lowercase(),
                    )
                    .with_output("elapsed", elapsed));
            }
            let now = Instant::now();
            if now >= deadline {
                let wanted = match (&search, args.state) {
                    (Some(search), WaitState::Started | WaitState::Present) => {
                        format!("to hold /{search}/")
                    }
                    (Some(search), _) => format!("to stop holding /{search}/"),
                    (None, state) => format!("to be {}", state.word()),
                };
                return Err(ModuleError::Failed(args.msg.clone().unwrap_or_else(|| {
                    format!(
                        "timeout: waited {:.1}s for {} {wanted}",
                        started.elapsed().as_secs_f64(),
                        watched.describe()
                    )
                })));
            }
            std::thread::sleep(Duration::from_secs(args.sleep.max(1)).min(deadline - now));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;
    use crate::files::test_support::run;

    fn wait(rest: &str) -> Result<Outcome, ModuleError> {
        run(&WaitFor, rest, std::path::Path::new("."), true)
    }

    #[test]
    fn a_listening_port_is_started_and_a_closed_one_stopped() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let outcome = wait(&format!("port: {port}\ntimeout: 5")).unwrap();
        assert!(!outcome.changed);
        drop(listener);
        wait(&format!("port: {port}\nstate: stopped\ntimeout: 5")).unwrap();
        let err = wait(&format!("port: {port}\ntimeout: 1")).unwrap_err();
        assert!(
            err.to_string().starts_with("timeout: waited")
                && err
                    .to_string()
                    .ends_with(&format!("127.0.0.1:{port} to be started")),
            "{err}"
        );
    }

    #[test]
    fn a_file_that_appears_later_and_holds_the_text_ends_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ready");
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                std::fs::write(&path, "starting\n").unwrap();
                std::thread::sleep(Duration::from_millis(300));
                std::fs::write(&path, "starting\nlistening on 8080\n").unwrap();
            })
        };
        let outcome = wait(&format!(
            "path: {}\nsearch_regex: 'listening on \\d+'\ntimeout: 10",
            path.display()
        ))
        .unwrap();
        writer.join().unwrap();
        assert!(outcome.output["elapsed"].as_f64().unwrap() >= 0.5);
        std::fs::remove_file(&path).unwrap();
        wait(&format!(
            "path: {}\nstate: absent\ntimeout: 5",
            path.display()
        ))
        .unwrap();
    }

    #[test]
    fn mistakes_and_custom_messages() {
        let err = wait("timeout: 1").unwrap_err();
        assert!(
            err.to_string()
                .contains("give `port` (with `host`) or `path`"),
            "{err}"
        );
        let err =
            wait("path: /nonexistent/x\ntimeout: 1\nmsg: the app never wrote its pid").unwrap_err();
        assert_eq!(err.to_string(), "the app never wrote its pid");
    }
}
