//! `ping`: proves the node runs tasks; answers `pong`.

use serde::Deserialize;

use crate::module::{Module, ModuleContext, ModuleError, Outcome};

pub struct Ping;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PingArgs {
    #[serde(default)]
    data: Option<String>,
}

impl Module for Ping {
    const NAME: &'static str = "ping";
    type Args = Option<PingArgs>;

    fn check_apply(
        &self,
        args: Option<PingArgs>,
        _context: &mut ModuleContext,
        _apply: bool,
    ) -> Result<Outcome, ModuleError> {
        let data = args.and_then(|a| a.data).unwrap_or_else(|| "pong".into());
        Ok(Outcome::unchanged().with_output("ping", data))
    }
}
