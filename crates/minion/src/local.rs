//! Local mode: run a TaskBook on this machine with no master (`weft run taskbook --local`),
//! like `ansible-playbook -c local`. Every step runs here, whatever nodes it selects.

use std::path::PathBuf;

use serde_json::json;
use weft_modules::facts::gather_facts;
use weft_modules::{validate_taskbook, CustomModules, ModuleDirs};
use weft_taskbook::report::{RunObserver, RunReport};
use weft_taskbook::{Error, TaskBook, Vars};

use crate::executor::{NodeExecutor, RunOptions};

pub struct LocalRun {
    pub file: PathBuf,
    pub options: RunOptions,
    /// `-e` arguments, already parsed, in the order given (later wins).
    pub extra_vars: Vec<Vars>,
}

/// Loads, validates and runs the TaskBook. `Err` is an input error (exit status 1):
/// nothing has run. Task failures are in the report (exit status 2).
pub fn run_local(run: &LocalRun, observer: &mut dyn RunObserver) -> Result<RunReport, Error> {
    let taskbook = TaskBook::load(&run.file)?;
    let module_dirs = ModuleDirs::from_env();
    validate_taskbook(&taskbook, CustomModules::Here(&module_dirs))?;
    let facts = gather_facts().map_err(|e| Error::new(format!("gathering facts: {e}")))?;
    let node_name = facts["hostname"]
        .as_str()
        .unwrap_or("localhost")
        .to_string();

    let mut report = RunReport::new(
        &taskbook.metadata.name,
        &run.file.display().to_string(),
        run.options.check_mode,
    );
    report.add_node(&node_name);

    let mut base = tera::Context::new();
    base.insert("facts", &facts);
    base.insert(
        "node",
        &json!({"name": node_name, "labels": {}, "vpn_ip": null}),
    );
    base.insert("nodes", &json!({ &node_name: {"facts": facts} }));
    let mut executor = NodeExecutor::new(node_name.clone(), base, module_dirs);

    let total = taskbook.steps.len();
    for (index, step) in taskbook.steps.iter().enumerate() {
        if executor.failed {
            break;
        }
        observer.step_started(
            index,
            total,
            &step.display_name(index),
            std::slice::from_ref(&node_name),
        );
        executor.run_taskbook_step(
            &taskbook,
            index,
            &Vars::new(),
            &run.extra_vars,
            &run.options,
            &mut |result| {
                observer.task_finished(&result);
                report.record(result);
            },
        )?;
    }
    report.finish();
    Ok(report)
}
