//! Running a process for `command`, `shell` and custom modules: output captured,
//! bounded in size, killed with everything it started when the task's timeout runs
//! out. Beacons' `command` checks end their processes the same way.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde::Deserialize;
use wait_timeout::ChildExt;

use crate::module::{ModuleError, Outcome};

/// Output kept per stream; the rest is dropped with a note (a runaway command must not
/// exhaust the node's memory or the master's store).
const MAX_OUTPUT_BYTES: usize = 1024 * 1024;

/// Arguments shared by `command` and `shell`; both also take a bare string.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessArgs {
    pub cmd: String,
    pub chdir: Option<PathBuf>,
    /// Skip when this path exists (the command made it already).
    pub creates: Option<PathBuf>,
    /// Skip unless this path exists.
    pub removes: Option<PathBuf>,
    pub stdin: Option<String>,
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// The shell for `shell` (default /bin/sh); `command` runs no shell and refuses it.
    pub executable: Option<String>,
}

/// `command: echo hi` as well as `command: {cmd: echo hi, chdir: /tmp}`.
pub fn deserialize_free_form<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<ProcessArgs, D::Error> {
    struct FreeForm;
    impl<'de> serde::de::Visitor<'de> for FreeForm {
        type Value = ProcessArgs;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a command line, or a mapping with `cmd`")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ProcessArgs, E> {
            Ok(ProcessArgs {
                cmd: v.to_string(),
                chdir: None,
                creates: None,
                removes: None,
                stdin: None,
                env: Default::default(),
                executable: None,
            })
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<ProcessArgs, A::Error> {
            ProcessArgs::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    deserializer.deserialize_any(FreeForm)
}

/// Why a command would not run, per `creates` / `removes`; `None` when it should.
pub fn skip_reason(args: &ProcessArgs) -> Option<String> {
    if let Some(creates) = &args.creates {
        if creates.exists() {
            return Some(format!("skipped: {} exists", creates.display()));
        }
    }
    if let Some(removes) = &args.removes {
        if !removes.exists() {
            return Some(format!("skipped: {} does not exist", removes.display()));
        }
    }
    None
}

/// Runs `program argv...` and reports `rc`, `stdout`, `stderr`; a non-zero exit fails.
pub fn run_process(
    argv: &[String],
    args: &ProcessArgs,
    deadline: Option<Instant>,
) -> Result<Outcome, ModuleError> {
    let (program, rest) = argv
        .split_first()
        .ok_or_else(|| ModuleError::Failed("the command is empty".into()))?;
    let mut process = Process::new(program);
    process.args(rest).envs(&args.env);
    if let Some(dir) = &args.chdir {
        process.current_dir(dir);
    }
    let command_line = argv.join(" ");
    let captured = run_captured(process, args.stdin.clone(), deadline).map_err(|e| match e {
        RunFailure::Spawn(e) => spawn_error(program, args.chdir.as_deref(), e),
        other => other.into_module_error(&format!("`{command_line}`")),
    })?;
    let Captured {
        rc,
        stdout,
        stderr,
        duration,
    } = captured;
    let mut outcome = Outcome::changed(true)
        .with_output("cmd", command_line.clone())
        .with_output("rc", rc)
        .with_output("stdout", stdout.trim_end_matches('\n'))
        .with_output("stderr", stderr.trim_end_matches('\n'))
        .with_output("duration_ms", duration.as_secs_f64() * 1000.0);
    if rc != 0 {
        outcome.failed = true;
        let detail = first_lines(if stderr.trim().is_empty() {
            &stdout
        } else {
            &stderr
        });
        outcome.msg = Some(format!("`{command_line}` exited with {rc}{detail}"));
    }
    Ok(outcome)
}

/// What a process that ran to its end left behind.
pub struct Captured {
    /// The exit code, or 128 + the signal that killed it (as shells report it).
    pub rc: i32,
    pub stdout: String,
    pub stderr: String,
    pub duration: Duration,
}

/// Why a process gave no [`Captured`].
pub enum RunFailure {
    Spawn(std::io::Error),
    Wait(std::io::Error),
    /// Killed at the task's deadline, with what it had written to stderr by then.
    TimedOut {
        stderr: String,
    },
}

impl RunFailure {
    /// The message for a process the user knows as `what`; spawn errors usually
    /// deserve a message of the caller's own.
    pub fn into_module_error(self, what: &str) -> ModuleError {
        ModuleError::Failed(match self {
            RunFailure::Spawn(e) => format!("cannot run {what}: {e}"),
            RunFailure::Wait(e) => format!("waiting for {what}: {e}"),
            RunFailure::TimedOut { stderr } => format!(
                "{what} did not finish within the task's timeout and was killed{}",
                first_lines(&stderr)
            ),
        })
    }
}

/// A child process that leads a process group of its own, so that giving up on it
/// ends everything it started too: a script's background children would otherwise
/// live on after a timeout, holding its pipes open.
pub struct ProcessGroup {
    leader: Child,
}

impl ProcessGroup {
    pub fn spawn(mut process: Process) -> std::io::Result<ProcessGroup> {
        let leader = process.process_group(0).spawn()?;
        Ok(ProcessGroup { leader })
    }

    /// The leader, for its pipes.
    pub fn leader(&mut self) -> &mut Child {
        &mut self.leader
    }

    /// The leader's exit status, or `None` when `deadline` passed first. Past the
    /// deadline, or when waiting fails, the whole group is killed and the leader reaped.
    pub fn wait_until(&mut self, deadline: Option<Instant>) -> std::io::Result<Option<ExitStatus>> {
        let Some(deadline) = deadline else {
            return self.leader.wait().map(Some);
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let waited = self.leader.wait_timeout(remaining);
        if let Ok(Some(status)) = waited {
            return Ok(Some(status));
        }
        // The group's id is the leader's pid, which stays reserved until it is reaped below.
        let group = nix::unistd::Pid::from_raw(self.leader.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::SIGKILL);
        let _ = self.leader.kill();
        let reaped = self.leader.wait();
        waited?;
        reaped?;
        Ok(None)
    }
}

/// Runs `process` with `stdin` fed to it and both outputs captured (bounded), killing
/// it and everything it started once `deadline` passes.
pub fn run_captured(
    mut process: Process,
    stdin: Option<String>,
    deadline: Option<Instant>,
) -> Result<Captured, RunFailure> {
    process
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut group = ProcessGroup::spawn(process).map_err(RunFailure::Spawn)?;

    // Feed stdin and drain both pipes on threads: a child blocked on a full pipe never exits.
    let child = group.leader();
    let stdin_feeder = child.stdin.take().zip(stdin).map(|(mut pipe, text)| {
        std::thread::spawn(move || {
            let _ = pipe.write_all(text.as_bytes());
        })
    });
    let stdout_reader = child.stdout.take().map(read_on_thread);
    let stderr_reader = child.stderr.take().map(read_on_thread);

    let Some(status) = group.wait_until(deadline).map_err(RunFailure::Wait)? else {
        // A child that left the group may still hold stderr open: wait a moment for
        // what was written, never for the child.
        let stderr = stderr_reader
            .and_then(|r| r.recv_timeout(KILLED_OUTPUT_GRACE).ok())
            .unwrap_or_default();
        return Err(RunFailure::TimedOut { stderr });
    };
    if let Some(feeder) = stdin_feeder {
        let _ = feeder.join();
    }
    let collect =
        |reader: Option<Receiver<String>>| reader.and_then(|r| r.recv().ok()).unwrap_or_default();
    let stdout = collect(stdout_reader);
    let stderr = collect(stderr_reader);
    let rc = status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        128 + status.signal().unwrap_or(0)
    });
    Ok(Captured {
        rc,
        stdout,
        stderr,
        duration: started.elapsed(),
    })
}

/// How long a killed process's stderr is waited for.
const KILLED_OUTPUT_GRACE: Duration = Duration::from_secs(1);

fn read_on_thread(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(read_bounded(pipe));
    });
    receiver
}

fn spawn_error(program: &str, chdir: Option<&Path>, error: std::io::Error) -> ModuleError {
    match (error.kind(), chdir) {
        (std::io::ErrorKind::NotFound, Some(dir)) if !dir.is_dir() => {
            ModuleError::Failed(format!("`chdir` {} is not a directory", dir.display()))
        }
        (std::io::ErrorKind::NotFound, _) => ModuleError::Failed(format!(
            "`{program}` was not found on PATH; for pipes, redirects or shell built-ins use the `shell` module"
        )),
        _ => ModuleError::Failed(format!("cannot run `{program}`: {error}")),
    }
}

fn read_bounded(pipe: impl Read) -> String {
    let mut buffer = Vec::new();
    let mut limited = pipe.take(MAX_OUTPUT_BYTES as u64 + 1);
    let _ = limited.read_to_end(&mut buffer);
    // Drain the rest so the child is not blocked writing into a pipe nobody reads.
    let _ = std::io::copy(&mut limited.into_inner(), &mut std::io::sink());
    let truncated = buffer.len() > MAX_OUTPUT_BYTES;
    buffer.truncate(MAX_OUTPUT_BYTES);
    let mut text = String::from_utf8_lossy(&buffer).into_owned();
    if truncated {
        text.push_str("\n[output truncated at 1 MiB]");
    }
    text
}

/// The start of a process's output for a message: a few lines, never a flood.
pub fn first_lines(text: &str) -> String {
    const MAX_CHARS: usize = 2000;
    let lines: Vec<&str> = text.trim().lines().take(5).collect();
    if lines.is_empty() {
        return String::new();
    }
    let joined = lines.join("\n");
    match joined.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!(":\n{} [...]", &joined[..cut]),
        None => format!(":\n{joined}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The leak a timeout must not leave: a grandchild in the background outliving
    /// the shell that was killed.
    #[test]
    fn a_timed_out_command_leaves_no_grandchild_behind() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("grandchild.pid");
        let mut process = Process::new("/bin/sh");
        process.arg("-c").arg(format!(
            "sleep 30 & echo $! > {}; sleep 30",
            pid_file.display()
        ));
        let deadline = Instant::now() + Duration::from_millis(500);
        assert!(matches!(
            run_captured(process, None, Some(deadline)),
            Err(RunFailure::TimedOut { .. })
        ));
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild is not ours to reap (init adopts it): give it a moment to go.
        let gone = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_or(true, |stat| stat.contains(") Z "))
        };
        let until = Instant::now() + Duration::from_secs(5);
        while !gone() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(gone(), "grandchild {pid} outlived the timeout");
    }
}
