//! What runs on a node: weft's modules behind one trait (`module.rs`), one file per
//! module, and facts gathering.

mod module;

pub mod facts;
pub mod process;

mod assert;
mod authorized_key;
mod backrefs;
mod blockinfile;
mod command;
mod copy;
mod cron;
mod custom;
mod dbus;
mod debug;
mod fail;
mod file;
mod files;
mod find;
mod git;
mod group;
mod known_hosts;
mod lineinfile;
mod package;
mod packagekit;
mod ping;
mod replace;
mod service;
mod set_var;
mod shell;
pub mod slurp;
mod stat;
pub mod sync;
mod sysctl;
mod system_tool;
mod systemd;
mod template;
mod text_file;
mod user;
mod wait_for;

pub use custom::{CustomModule, ModuleDirs, MODULE_PATH_ENV};
pub use git::{check_tree_entry_name, git_error_message};
pub use module::{DynModule, MasterNeeds, Module, ModuleContext, ModuleError, Outcome};

use std::path::{Path, PathBuf};

use weft_taskbook::bundle;
use weft_taskbook::error::{closest_match, PathSegment};
use weft_taskbook::references::TemplateReferences;
use weft_taskbook::regular_file::read_regular_file;
use weft_taskbook::task::TASK_KEYWORDS;
use weft_taskbook::yaml::Node;
use weft_taskbook::{Error, Task, TaskBook};

static MODULES: &[&dyn DynModule] = &[
    &assert::Assert,
    &authorized_key::AuthorizedKey,
    &blockinfile::BlockInFile,
    &command::Command,
    &copy::Copy,
    &cron::Cron,
    &debug::Debug,
    &fail::Fail,
    &file::File,
    &find::Find,
    &git::Git,
    &group::Group,
    &known_hosts::KnownHosts,
    &lineinfile::LineInFile,
    &package::Package,
    &service::Service,
    &ping::Ping,
    &replace::Replace,
    &set_var::SetVar,
    &shell::Shell,
    &slurp::Slurp,
    &stat::Stat,
    &sync::Sync,
    &sysctl::Sysctl,
    &template::Template,
    &user::User,
    &wait_for::WaitFor,
];

/// A module a task names: built in, or an executable in a module directory.
pub enum FoundModule {
    Builtin(&'static dyn DynModule),
    Custom(CustomModule),
}

impl std::ops::Deref for FoundModule {
    type Target = dyn DynModule;

    fn deref(&self) -> &Self::Target {
        match self {
            FoundModule::Builtin(module) => *module,
            FoundModule::Custom(module) => module,
        }
    }
}

pub fn builtin_module(name: &str) -> Option<&'static dyn DynModule> {
    MODULES.iter().copied().find(|m| m.name() == name)
}

/// Builtins come first and cannot be shadowed: a TaskBook checked against `copy`'s
/// arguments on the master must run that `copy` on every node, and a file dropped in a
/// module directory must not quietly change what every `file` task does.
pub fn find_module(name: &str, dirs: &ModuleDirs) -> Option<FoundModule> {
    builtin_module(name)
        .map(FoundModule::Builtin)
        .or_else(|| dirs.find(name).map(FoundModule::Custom))
}

/// What `task` needs from the master. A module the master does not know is a custom
/// one found on the nodes, which reads its `src` from the TaskBook's folder like `copy`.
pub fn master_needs_of(task: &Task) -> MasterNeeds<'_> {
    match builtin_module(&task.module.value) {
        Some(module) => module.master_needs(&task.args),
        None => MasterNeeds {
            files: files::fixed_relative_src(&task.args),
            ..MasterNeeds::default()
        },
    }
}

/// Whether what a task writes comes from a Secret: its arguments read `secrets`, or a
/// file it names by a fixed `src` does (a template). Its diff then shows no lines.
pub fn content_reads_secrets(module: &dyn DynModule, args: &Node, base_dir: &Path) -> bool {
    let reads = |references: TemplateReferences| !references.secrets.is_empty();
    reads(TemplateReferences::of_node(args))
        || module.master_needs(args).files.into_iter().any(|src| {
            files::resolve_src(src, base_dir, "")
                .ok()
                .and_then(|path| read_regular_file(&path, true, &files::FILE_LIMIT).ok())
                .is_some_and(|content| {
                    reads(TemplateReferences::of_text(&String::from_utf8_lossy(
                        &content,
                    )))
                })
        })
}

pub fn module_names() -> Vec<&'static str> {
    MODULES.iter().copied().map(|m| m.name()).collect()
}

/// Where the custom modules a TaskBook may use live, as seen by who validates it.
#[derive(Debug, Clone, Copy)]
pub enum CustomModules<'a> {
    /// On this machine, which runs the TaskBook (`--local`): a name that is neither
    /// built in nor found here is an error before anything runs.
    Here(&'a ModuleDirs),
    /// On the nodes it ships to (the admin's CLI, the master, a node unpacking a
    /// bundle): a name that is not a likely typo of a builtin module or task keyword is
    /// taken for a custom module; a node lacking it fails that task.
    OnNodes,
}

/// What a bundle asks of the modules: which files a task reads from the TaskBook's
/// machine, and the module checks of a TaskBook unpacked from a bundle.
impl bundle::Modules for CustomModules<'_> {
    fn files_read<'t>(
        &self,
        task: &'t Task,
        base_dir: &Path,
    ) -> Vec<(&'t str, Result<PathBuf, String>)> {
        master_needs_of(task)
            .files
            .into_iter()
            .map(|src| (src, files::resolve_src(src, base_dir, "a run ships files")))
            .collect()
    }

    fn validate(&self, taskbook: &TaskBook) -> Result<(), Error> {
        validate_taskbook(taskbook, *self)
    }
}

/// Checks every task's module and arguments before anything runs.
pub fn validate_taskbook(taskbook: &TaskBook, custom: CustomModules) -> Result<(), Error> {
    for placed in taskbook.placed_tasks() {
        let task = placed.task;
        let module_name = &task.module.value;
        // Err: not a module; Ok(None): a custom module, checked on its node.
        let found = match custom {
            CustomModules::Here(dirs) => find_module(module_name, dirs)
                .map(Some)
                .ok_or_else(|| dirs.not_found(module_name)),
            CustomModules::OnNodes => match builtin_module(module_name) {
                Some(module) => Ok(Some(FoundModule::Builtin(module))),
                None if likely_typo(module_name).is_some() => {
                    Err(format!("unknown module `{module_name}`"))
                }
                None => Ok(None),
            },
        };
        let result = match found {
            Ok(Some(module)) => module
                .validate(&task.args, placed.step.base_dir())
                .map_err(|e| e.under(PathSegment::Key(module_name.clone()))),
            Ok(None) => Ok(()),
            Err(message) => Err(Error::new(message)
                .at(task.module.span())
                .with_hint(unknown_module_hint(module_name))),
        };
        result.map_err(|e| placed.place(e))?;
    }
    Ok(())
}

/// A builtin module or task keyword `name` is close enough to be a misspelling of.
fn likely_typo(name: &str) -> Option<&'static str> {
    closest_match(
        name,
        module_names()
            .into_iter()
            .chain(TASK_KEYWORDS.iter().copied()),
    )
}

fn unknown_module_hint(name: &str) -> String {
    match likely_typo(name) {
        Some(candidate) => format!("did you mean `{candidate}`?"),
        None => format!(
            "a custom module is an executable file named `{name}` in a module directory (${MODULE_PATH_ENV} sets them)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module nobody can find in the docs is a module nobody uses.
    #[test]
    fn every_builtin_module_has_a_row_in_the_modules_page() {
        let page = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/modules.md");
        let page = std::fs::read_to_string(&page).unwrap();
        for name in module_names() {
            assert!(
                page.contains(&format!("| `{name}` |")),
                "docs/modules.md has no row for `{name}`"
            );
        }
    }

    fn book(task: &str) -> TaskBook {
        TaskBook::from_source(
            &format!("apiVersion: weft/v1\nkind: TaskBook\nmetadata: {{name: t}}\nspec:\n  steps:\n    - tasks:\n        - {task}\n"),
            std::path::Path::new("book.yml"),
        )
        .unwrap()
    }

    #[test]
    fn for_the_nodes_unknown_names_pass_unless_they_look_like_typos() {
        assert_eq!(
            validate_taskbook(&book("frobnicate: {level: 3}"), CustomModules::OnNodes),
            Ok(())
        );
        for (task, near) in [("tempalte: {}", "template"), ("registr: x", "register")] {
            let error = validate_taskbook(&book(task), CustomModules::OnNodes).unwrap_err();
            assert!(error.message.starts_with("unknown module"), "{error}");
            assert_eq!(error.hint, Some(format!("did you mean `{near}`?")));
        }
        let error =
            validate_taskbook(&book("copy: {dset: /x}"), CustomModules::OnNodes).unwrap_err();
        assert!(error.to_string().contains("unknown key `dset`"), "{error}");
    }

    #[test]
    fn a_bundle_carries_the_fixed_relative_src_of_copy_template_and_custom_modules() {
        use bundle::Modules;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("templates")).unwrap();
        std::fs::write(dir.path().join("motd.txt"), "hi").unwrap();
        std::fs::write(dir.path().join("templates/web.tera"), "web").unwrap();
        std::fs::write(dir.path().join("data.json"), "{}").unwrap();
        for (task, expected) in [
            ("copy: {src: motd.txt, dest: /tmp/m}", Some("motd.txt")),
            (
                "template: {src: web.tera, dest: /tmp/w}",
                Some("templates/web.tera"),
            ),
            ("frobnicate: {src: data.json}", Some("data.json")),
            ("copy: {src: /etc/hostname, dest: /tmp/h}", None),
            ("template: {src: \"{{ name }}.tera\", dest: /tmp/x}", None),
        ] {
            let taskbook = book(task);
            let task = taskbook.placed_tasks().next().unwrap().task;
            let files: Vec<PathBuf> = CustomModules::OnNodes
                .files_read(task, dir.path())
                .into_iter()
                .map(|(_, found)| found.unwrap())
                .collect();
            assert_eq!(
                files,
                expected
                    .map(|path| dir.path().join(path))
                    .into_iter()
                    .collect::<Vec<_>>(),
                "{task:?}"
            );
        }
        let taskbook = book("copy: {src: missing.txt, dest: /tmp/m}");
        let task = taskbook.placed_tasks().next().unwrap().task;
        let read = CustomModules::OnNodes.files_read(task, dir.path());
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].0, "missing.txt");
        assert!(read[0].1.as_ref().unwrap_err().contains("not found"));
    }

    #[test]
    fn here_a_name_must_be_built_in_or_found() {
        let dirs = tempfile::tempdir().unwrap();
        let dirs = ModuleDirs::new([dirs.path().to_path_buf()]);
        let error =
            validate_taskbook(&book("frobnicate: {}"), CustomModules::Here(&dirs)).unwrap_err();
        assert_eq!(error.message, dirs.not_found("frobnicate"));
        assert_eq!(
            validate_taskbook(&book("ping:"), CustomModules::Here(&dirs)),
            Ok(())
        );
    }
}
