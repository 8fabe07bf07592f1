//! `assert`: fails unless every expression in `that` is true.

use serde::Deserialize;
use weft_taskbook::render::TemplateOrigin;
use weft_taskbook::task::Conditions;

use crate::module::{Module, ModuleContext, ModuleError, Outcome};

pub struct Assert;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertArgs {
    that: Conditions,
    fail_msg: Option<String>,
    success_msg: Option<String>,
}

impl Module for Assert {
    const NAME: &'static str = "assert";
    type Args = AssertArgs;

    fn check_apply(
        &self,
        args: AssertArgs,
        context: &mut ModuleContext,
        _apply: bool,
    ) -> Result<Outcome, ModuleError> {
        for condition in &args.that.0 {
            let origin = TemplateOrigin {
                span: condition.span(),
                offset: 0,
            };
            let holds = context
                .renderer
                .condition(&condition.value, context.vars, origin)
                .map_err(ModuleError::Arguments)?;
            if !holds {
                let msg = args
                    .fail_msg
                    .clone()
                    .unwrap_or_else(|| format!("assertion failed: {}", condition.value));
                let mut outcome = Outcome::unchanged()
                    .with_msg(msg)
                    .with_output("assertion", condition.value.clone());
                outcome.failed = true;
                return Ok(outcome);
            }
        }
        let msg = args
            .success_msg
            .unwrap_or_else(|| "all assertions passed".into());
        Ok(Outcome::unchanged().with_msg(msg))
    }
}
