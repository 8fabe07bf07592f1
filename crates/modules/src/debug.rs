//! `debug`: prints a message or a variable's value; never changes anything.

use serde::Deserialize;
use weft_taskbook::render::TemplateOrigin;

use crate::module::{Module, ModuleContext, ModuleError, Outcome};

pub struct Debug;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebugArgs {
    msg: Option<serde_json::Value>,
    /// A variable name or expression to show (`var: result.stdout`).
    var: Option<String>,
}

impl Module for Debug {
    const NAME: &'static str = "debug";
    type Args = DebugArgs;

    fn check_apply(
        &self,
        args: DebugArgs,
        context: &mut ModuleContext,
        _apply: bool,
    ) -> Result<Outcome, ModuleError> {
        let (text, value) = match (args.msg, args.var) {
            (Some(msg), None) => (display(&msg), msg),
            (None, Some(var)) => {
                let value = context
                    .renderer
                    .evaluate(&var, context.vars, TemplateOrigin::file())
                    .map_err(|e| ModuleError::Failed(format!("`var: {var}`: {}", e.message)))?;
                (format!("{var} = {}", display(&value)), value)
            }
            _ => {
                return Err(ModuleError::Failed(
                    "debug takes exactly one of `msg` and `var`".into(),
                ))
            }
        };
        Ok(Outcome::unchanged()
            .with_msg(text)
            .with_output("msg", value))
    }
}

fn display(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    }
}
