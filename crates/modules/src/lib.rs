//! What runs on a node: weft's modules behind one trait (`module.rs`), one file per
//! module, and facts gathering.

mod module;

pub mod bundle;
pub mod facts;
pub mod state_file;

mod assert;
mod command;
mod copy;
mod dbus;
mod debug;
mod fail;
mod file;
mod files;
mod lineinfile;
mod package;
mod packagekit;
mod ping;
mod process;
mod service;
mod set_var;
mod shell;
mod systemd;
mod template;

pub use module::{DynModule, Module, ModuleContext, ModuleError, Outcome};

use weft_taskbook::error::{unknown_name_hint, PathSegment};
use weft_taskbook::task::TASK_KEYWORDS;
use weft_taskbook::taskbook::task_field_path;
use weft_taskbook::{Error, TaskBook};

static MODULES: &[&dyn DynModule] = &[
    &assert::Assert,
    &command::Command,
    &copy::Copy,
    &debug::Debug,
    &fail::Fail,
    &file::File,
    &lineinfile::LineInFile,
    &package::Package,
    &service::Service,
    &ping::Ping,
    &set_var::SetVar,
    &shell::Shell,
    &template::Template,
];

pub fn find_module(name: &str) -> Option<&'static dyn DynModule> {
    MODULES.iter().copied().find(|m| m.name() == name)
}

pub fn module_names() -> Vec<&'static str> {
    MODULES.iter().map(|m| m.name()).collect()
}

/// Checks every task's module and arguments before anything runs.
pub fn validate_taskbook(taskbook: &TaskBook) -> Result<(), Error> {
    for (step_index, step) in taskbook.steps.iter().enumerate() {
        for (list, tasks) in [("tasks", &step.tasks), ("handlers", &step.handlers)] {
            for (index, task) in tasks.iter().enumerate() {
                let module_name = &task.module.value;
                let result = match find_module(module_name) {
                    Some(module) => module
                        .validate(&task.args, step.base_dir())
                        .map_err(|e| e.under(PathSegment::Key(module_name.clone()))),
                    None => {
                        let mut candidates = module_names();
                        candidates.extend_from_slice(TASK_KEYWORDS);
                        Err(Error::new(format!("unknown module `{module_name}`"))
                            .at(task.module.span())
                            .with_hint(unknown_name_hint(module_name, &candidates)))
                    }
                };
                result.map_err(|e| {
                    e.under_path(&task_field_path(step_index, list, index))
                        .in_file(&step.file)
                })?;
            }
        }
    }
    Ok(())
}
