//! `command`: runs a program directly, without a shell (no pipes, no globbing), so
//! arguments are never reinterpreted. Skipped in check mode unless `check_mode: false`.

use serde::Deserialize;

use crate::module::{Module, ModuleContext, ModuleError, Outcome};
use crate::process::{deserialize_free_form, run_process, skip_reason, ProcessArgs};

pub struct Command;

#[derive(Debug)]
pub struct CommandArgs(ProcessArgs);

impl<'de> Deserialize<'de> for CommandArgs {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_free_form(deserializer).map(CommandArgs)
    }
}

impl Module for Command {
    const NAME: &'static str = "command";
    type Args = CommandArgs;
    const SKIPPED_IN_CHECK_MODE: bool = true;

    fn check_apply(
        &self,
        CommandArgs(args): CommandArgs,
        context: &mut ModuleContext,
        apply: bool,
    ) -> Result<Outcome, ModuleError> {
        if args.executable.is_some() {
            return Err(ModuleError::Failed(
                "`command` runs no shell, so `executable` does not apply; use the `shell` module"
                    .into(),
            ));
        }
        if let Some(reason) = skip_reason(&args) {
            return Ok(Outcome::unchanged().with_msg(reason));
        }
        let argv = shell_words::split(&args.cmd).map_err(|e| {
            ModuleError::Failed(format!("cannot split `{}` into arguments: {e}", args.cmd))
        })?;
        if !apply {
            return Ok(Outcome::changed(true).with_msg(format!("would run `{}`", args.cmd)));
        }
        run_process(&argv, &args, context.deadline)
    }
}
