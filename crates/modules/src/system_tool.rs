//! The system's own administration tools (`useradd`, `groupmod`...) as modules drive
//! them: through the one process runner, bounded by the task's deadline, a failure
//! reported with what the tool said.

use std::process::Command as Process;
use std::time::Instant;

use crate::module::ModuleError;
use crate::process::{first_lines, run_captured, RunFailure};

/// The tools that manage users and groups, and where they come from.
pub(crate) const SHADOW_TOOLS: &str = "passwd on Debian, shadow-utils on Fedora";

/// Runs `program args...` with `stdin`; its stdout when it exits 0. Anything secret
/// goes through `stdin`: arguments are visible to every user of the node in `ps`, and
/// would be in the error message.
pub(crate) fn run_tool(
    program: &str,
    args: &[String],
    stdin: Option<String>,
    package: &str,
    deadline: Option<Instant>,
) -> Result<String, ModuleError> {
    let mut process = Process::new(program);
    process.args(args).env("LC_ALL", "C");
    let command_line = format!("{program} {}", args.join(" "));
    let captured = run_captured(process, stdin, deadline).map_err(|failure| match failure {
        RunFailure::Spawn(error) if error.kind() == std::io::ErrorKind::NotFound => {
            ModuleError::Failed(format!(
                "`{program}` is not installed on this node (it comes with {package})"
            ))
        }
        other => other.into_module_error(&format!("`{program}`")),
    })?;
    if captured.rc != 0 {
        return Err(ModuleError::Failed(format!(
            "`{command_line}` exited with {}{}",
            captured.rc,
            first_lines(&captured.stderr)
        )));
    }
    Ok(captured.stdout)
}
