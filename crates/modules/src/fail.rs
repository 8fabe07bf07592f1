//! `fail`: stops the node with a message (usually under a `when`).

use serde::Deserialize;

use crate::module::{Module, ModuleContext, ModuleError, Outcome};

pub struct Fail;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailArgs {
    #[serde(default = "default_msg")]
    msg: String,
}

fn default_msg() -> String {
    "failed as requested by the TaskBook".to_string()
}

impl Module for Fail {
    const NAME: &'static str = "fail";
    type Args = FailArgs;

    fn check_apply(
        &self,
        args: FailArgs,
        _context: &mut ModuleContext,
        _apply: bool,
    ) -> Result<Outcome, ModuleError> {
        let mut outcome = Outcome::unchanged().with_msg(args.msg);
        outcome.failed = true;
        Ok(outcome)
    }
}
