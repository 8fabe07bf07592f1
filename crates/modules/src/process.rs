//! Running a process for `command`, `shell` and custom modules, custom facts
//! executables and beacons' `command` checks: output captured, bounded in size, killed
//! with everything it started when its time runs out.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
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

/// What a process that ran to its end left behind, as text.
pub struct Captured {
    /// The exit code, or 128 + the signal that killed it (as shells report it).
    pub rc: i32,
    pub stdout: String,
    pub stderr: String,
    pub duration: Duration,
}

/// Runs `process` with `stdin` fed to it and both outputs captured as text (see [`run`]).
pub fn run_captured(
    process: Process,
    stdin: Option<String>,
    deadline: Option<Instant>,
) -> Result<Captured, RunFailure> {
    let finished = run(process, stdin, Capture::Output, deadline)?;
    let rc = finished.status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        128 + finished.status.signal().unwrap_or(0)
    });
    Ok(Captured {
        rc,
        stdout: finished.stdout.into_text(),
        stderr: finished.stderr.into_text(),
        duration: finished.duration,
    })
}

/// Whether a process's stdout and stderr are kept or thrown away.
#[derive(Clone, Copy)]
pub enum Capture {
    Output,
    /// Nothing to read, so nothing to wait for either: a background process the command
    /// started cannot keep its run going by holding a pipe.
    Nothing,
}

/// What a process wrote on one stream, up to [`MAX_OUTPUT_BYTES`].
#[derive(Default)]
pub struct Output {
    pub bytes: Vec<u8>,
    /// It wrote more than was kept.
    pub truncated: bool,
}

impl Output {
    /// The text for people: invalid UTF-8 replaced, a cut marked.
    pub fn into_text(self) -> String {
        let mut text = String::from_utf8_lossy(&self.bytes).into_owned();
        if self.truncated {
            text.push_str("\n[output truncated at 1 MiB]");
        }
        text
    }
}

/// A process that ran to its end.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Output,
    pub stderr: Output,
    pub duration: Duration,
}

/// Why a process gave no [`Finished`].
pub enum RunFailure {
    Spawn(std::io::Error),
    /// Waiting for it failed, so it was killed, with what it had written to stderr.
    Wait {
        error: std::io::Error,
        stderr: Output,
    },
    /// Killed at the deadline, with what it had written to stderr by then.
    TimedOut {
        stderr: Output,
    },
    /// It exited, but a process it started still held its stdout open at the deadline:
    /// what was read may not be all of it.
    OutputStayedOpen,
}

impl RunFailure {
    /// The message for a process the user knows as `what`; spawn errors usually
    /// deserve a message of the caller's own.
    pub fn into_module_error(self, what: &str) -> ModuleError {
        ModuleError::Failed(match self {
            RunFailure::Spawn(e) => format!("cannot run {what}: {e}"),
            RunFailure::Wait { error, .. } => format!("waiting for {what}: {error}"),
            RunFailure::TimedOut { stderr } => format!(
                "{what} did not finish within the task's timeout and was killed{}",
                first_lines(&stderr.into_text())
            ),
            RunFailure::OutputStayedOpen => format!(
                "{what} exited, but its output stayed open past the task's timeout \
                 (a background process it started still holds it)"
            ),
        })
    }
}

/// A child process that leads a process group of its own, so that giving up on it
/// ends everything it started too: a script's background children would otherwise
/// live on after a timeout, holding its pipes open.
struct ProcessGroup {
    leader: Child,
}

impl ProcessGroup {
    fn spawn(mut process: Process) -> std::io::Result<ProcessGroup> {
        let leader = process.process_group(0).spawn()?;
        Ok(ProcessGroup { leader })
    }

    /// The leader's exit status, or `None` when `deadline` passed first. Past the
    /// deadline, or when waiting fails, the whole group is killed and the leader reaped.
    fn wait_until(&mut self, deadline: Option<Instant>) -> std::io::Result<Option<ExitStatus>> {
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

/// Runs `process` in a process group of its own with `stdin` fed to it, killing it and
/// everything it started once `deadline` passes. Its stdout is waited for until the
/// deadline too; stderr, only a moment past the end, since it is a note beside the answer.
pub fn run(
    mut process: Process,
    stdin: Option<String>,
    capture: Capture,
    deadline: Option<Instant>,
) -> Result<Finished, RunFailure> {
    let output_pipe = || match capture {
        Capture::Output => Stdio::piped(),
        Capture::Nothing => Stdio::null(),
    };
    process
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(output_pipe())
        .stderr(output_pipe());
    let started = Instant::now();
    let mut group = ProcessGroup::spawn(process).map_err(RunFailure::Spawn)?;

    // Feed stdin and drain both pipes on threads: a child blocked on a full pipe never
    // exits. The feeder is not waited for: a child that never reads stdin leaves it blocked
    // until the pipe's last reader is gone.
    let child = &mut group.leader;
    if let Some((mut pipe, text)) = child.stdin.take().zip(stdin) {
        let _ = std::thread::Builder::new().spawn(move || {
            let _ = pipe.write_all(text.as_bytes());
        });
    }
    let stdout = child.stdout.take().map(PipeReader::start);
    let stderr = child.stderr.take().map(PipeReader::start);
    let stderr_by_now = |stderr: Option<PipeReader>| {
        stderr.map_or_else(Output::default, |reader| {
            reader.read_until(Some(Instant::now() + OUTPUT_GRACE))
        })
    };

    let status = match group.wait_until(deadline) {
        Ok(Some(status)) => status,
        Ok(None) => {
            return Err(RunFailure::TimedOut {
                stderr: stderr_by_now(stderr),
            })
        }
        Err(error) => {
            return Err(RunFailure::Wait {
                error,
                stderr: stderr_by_now(stderr),
            })
        }
    };
    let stdout = match stdout {
        Some(reader) if !reader.closed_by(deadline) => return Err(RunFailure::OutputStayedOpen),
        Some(reader) => reader.read_until(None),
        None => Output::default(),
    };
    Ok(Finished {
        status,
        stdout,
        stderr: stderr_by_now(stderr),
        duration: started.elapsed(),
    })
}

/// How long stderr is waited for past a process's end: a process it started, and that
/// left its group or outlived it, may hold the pipe open, and a note is not worth hanging for.
const OUTPUT_GRACE: Duration = Duration::from_millis(500);

/// A pipe read on a thread of its own until it closes, keeping the first
/// [`MAX_OUTPUT_BYTES`] and draining the rest, so what it kept can be taken at any time.
struct PipeReader {
    kept: Arc<Mutex<Output>>,
    /// Disconnects when the reading ends.
    closed: Receiver<()>,
}

impl PipeReader {
    fn start(mut pipe: impl Read + Send + 'static) -> PipeReader {
        let kept = Arc::new(Mutex::new(Output::default()));
        let (reading, closed) = std::sync::mpsc::channel::<()>();
        let filling = Arc::clone(&kept);
        // A thread that cannot start drops the pipe: the child then fails writing to it
        // rather than blocking.
        let _ = std::thread::Builder::new().spawn(move || {
            let _reading = reading;
            let mut chunk = [0; 8192];
            loop {
                let read = match pipe.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(read) => read,
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                let mut output = filling.lock().unwrap_or_else(PoisonError::into_inner);
                let room = MAX_OUTPUT_BYTES - output.bytes.len();
                output.bytes.extend_from_slice(&chunk[..read.min(room)]);
                output.truncated |= read > room;
            }
        });
        PipeReader { kept, closed }
    }

    /// Whether the pipe closed before `deadline` (`None`: however long that takes).
    fn closed_by(&self, deadline: Option<Instant>) -> bool {
        match deadline {
            None => self.closed.recv().is_err(),
            Some(deadline) => matches!(
                self.closed
                    .recv_timeout(deadline.saturating_duration_since(Instant::now())),
                Err(RecvTimeoutError::Disconnected)
            ),
        }
    }

    /// What was read by the time the pipe closed, or by `deadline` if it is still open.
    fn read_until(self, deadline: Option<Instant>) -> Output {
        self.closed_by(deadline);
        std::mem::take(&mut *self.kept.lock().unwrap_or_else(PoisonError::into_inner))
    }
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

    fn shell(script: &str) -> Process {
        let mut process = Process::new("/bin/sh");
        process.arg("-c").arg(script);
        process
    }

    #[test]
    fn output_past_the_limit_is_cut_and_flagged() {
        let script = format!("head -c {} /dev/zero; echo oops >&2", MAX_OUTPUT_BYTES + 10);
        let Ok(finished) = run(shell(&script), None, Capture::Output, None) else {
            panic!("the flood did not finish");
        };
        assert_eq!(finished.stdout.bytes.len(), MAX_OUTPUT_BYTES);
        assert!(finished.stdout.truncated);
        assert!(finished
            .stdout
            .into_text()
            .ends_with("\n[output truncated at 1 MiB]"));
        assert_eq!(finished.stderr.into_text(), "oops\n");
    }

    #[test]
    fn stdout_held_open_past_the_deadline_is_not_waited_for() {
        let deadline = Instant::now() + Duration::from_millis(300);
        let started = Instant::now();
        let run = run(
            shell("sleep 5 & echo partial"),
            None,
            Capture::Output,
            Some(deadline),
        );
        assert!(matches!(run, Err(RunFailure::OutputStayedOpen)));
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn stderr_held_open_is_taken_as_written_so_far() {
        let started = Instant::now();
        let Ok(captured) = run_captured(
            shell("echo done; echo note >&2; sleep 5 >/dev/null &"),
            None,
            None,
        ) else {
            panic!("the command did not finish");
        };
        assert_eq!(
            (captured.stdout.as_str(), captured.stderr.as_str()),
            ("done\n", "note\n")
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn discarded_output_leaves_nothing_to_wait_for() {
        let started = Instant::now();
        let Ok(finished) = run(shell("sleep 5 & exit 3"), None, Capture::Nothing, None) else {
            panic!("the command did not finish");
        };
        assert_eq!(finished.status.code(), Some(3));
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn stdin_is_fed_to_the_process() {
        let Ok(captured) = run_captured(shell("cat"), Some("fed".into()), None) else {
            panic!("cat did not finish");
        };
        assert_eq!(captured.stdout, "fed");
    }
}
