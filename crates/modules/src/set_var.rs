//! `set_var`: sets variables for the rest of the run on this node (Ansible's set_fact),
//! at the precedence of registered results.

use weft_taskbook::Vars;

use crate::module::{Module, ModuleContext, ModuleError, Outcome};

pub struct SetVar;

impl Module for SetVar {
    const NAME: &'static str = "set_var";
    type Args = Vars;

    fn validate(
        args: &weft_taskbook::yaml::Node,
        _base_dir: &std::path::Path,
    ) -> Result<(), weft_taskbook::Error> {
        if let weft_taskbook::yaml::NodeValue::Mapping(entries) = &args.value {
            for (key, _) in entries {
                let name = key.scalar().unwrap_or_default();
                if !weft_taskbook::taskbook::is_identifier(name) {
                    return Err(weft_taskbook::Error::new(format!(
                        "`{name}` cannot be a variable name: use letters, digits and `_`"
                    ))
                    .at(key.span));
                }
            }
        }
        Ok(())
    }

    fn check_apply(
        &self,
        vars: Vars,
        _context: &mut ModuleContext,
        _apply: bool,
    ) -> Result<Outcome, ModuleError> {
        let mut outcome = Outcome::unchanged();
        outcome.output = vars.clone();
        outcome.set_vars = vars;
        Ok(outcome)
    }
}
