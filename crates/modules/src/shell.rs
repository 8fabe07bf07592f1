//! `shell`: runs a command line through `/bin/sh -c` (pipes, redirects, variables).

use serde::Deserialize;

use crate::module::{Module, ModuleContext, ModuleError, Outcome};
use crate::process::{deserialize_free_form, run_process, skip_reason, ProcessArgs};

pub struct Shell;

#[derive(Debug)]
pub struct ShellArgs(ProcessArgs);

impl<'de> Deserialize<'de> for ShellArgs {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_free_form(deserializer).map(ShellArgs)
    }
}

impl Module for Shell {
    const NAME: &'static str = "shell";
    type Args = ShellArgs;
    const SKIPPED_IN_CHECK_MODE: bool = true;

    fn check_apply(
        &self,
        ShellArgs(args): ShellArgs,
        context: &mut ModuleContext,
        apply: bool,
    ) -> Result<Outcome, ModuleError> {
        if let Some(reason) = skip_reason(&args) {
            return Ok(Outcome::unchanged().with_msg(reason));
        }
        if !apply {
            return Ok(Outcome::changed(true).with_msg(format!("would run `{}`", args.cmd)));
        }
        let shell = args.executable.clone().unwrap_or_else(|| "/bin/sh".into());
        let argv = vec![shell, "-c".to_string(), args.cmd.clone()];
        let mut outcome = run_process(&argv, &args, context.deadline)?;
        // Report the command line as written, not the `sh -c` wrapper.
        outcome.output.insert("cmd".into(), args.cmd.clone().into());
        if let Some(msg) = &mut outcome.msg {
            *msg = msg.replacen(&argv.join(" "), &args.cmd, 1);
        }
        Ok(outcome)
    }
}
