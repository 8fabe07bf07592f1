//! The one trait every module implements, kept as small as mgmt's resource interface:
//! arguments are validated before anything runs, and `check_apply(apply)` both checks
//! (apply = false: report what would change) and converges (apply = true).

use std::path::Path;
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use weft_taskbook::de::{check_node, from_node};
use weft_taskbook::render::Renderer;
use weft_taskbook::yaml::Node;
use weft_taskbook::{Error, Vars};

use crate::sync::SyncSource;

/// What a task needs from the master before its step starts, found from its arguments
/// as written, before any template is rendered (the master cannot render them: they
/// render on each node). The master asks this and never matches a module's name, so a
/// new module gets what it declares. What any task's templates read (Secrets, other
/// nodes) the master finds itself by walking them; a module declares only what its
/// arguments do not show.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MasterNeeds<'a> {
    /// Files beside the TaskBook it reads by a fixed relative path (a `src`): they travel
    /// with the run. A templated path finds its file only in the `templates/` and
    /// `files/` folders, which travel whole.
    pub files: Vec<&'a str>,
    /// It renders files of the run's bundle as templates on the node, so the Secrets
    /// and nodes those files read are its own.
    pub renders_bundle_files: bool,
    /// Content the master carries to it from another node, read before the step starts.
    pub synced: Option<SyncSource>,
}

/// `#[serde(default = "crate::module::yes")]`: an argument that is on unless turned off.
pub(crate) fn yes() -> bool {
    true
}

/// What a module gets besides its arguments.
pub struct ModuleContext<'a> {
    /// The folder relative `src` paths resolve against (the TaskBook file's).
    pub base_dir: &'a Path,
    /// Every variable, fact and registered result, for templates and assertions.
    pub vars: &'a tera::Context,
    pub renderer: &'a mut Renderer,
    /// When a task's `timeout` runs out; long-running modules stop by then.
    pub deadline: Option<Instant>,
    /// Compute diffs of file content (for `--diff` and check mode).
    pub want_diff: bool,
}

/// The result of one module call.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    pub changed: bool,
    pub failed: bool,
    pub msg: Option<String>,
    /// A unified diff of file content, or short `before -> after` lines for attributes.
    pub diff: Option<String>,
    /// Module-specific results, stored by `register` (`stdout`, `rc`, `path`, ...).
    pub output: Map<String, Value>,
    /// Variables the task sets for later tasks (`set_var`).
    pub set_vars: Vars,
}

impl Outcome {
    pub fn unchanged() -> Self {
        Outcome::default()
    }

    pub fn changed(changed: bool) -> Self {
        Outcome {
            changed,
            ..Outcome::default()
        }
    }

    pub fn with_msg(mut self, msg: impl Into<String>) -> Self {
        self.msg = Some(msg.into());
        self
    }

    pub fn with_diff(mut self, diff: Option<String>) -> Self {
        self.diff = diff;
        self
    }

    pub fn with_output(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.output.insert(key.to_string(), value.into());
        self
    }
}

/// A module failed to do its work (the task is then `failed`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModuleError {
    /// Arguments that were wrong once their templates were rendered; has a position.
    #[error("{0}")]
    Arguments(Error),
    #[error("{0}")]
    Failed(String),
}

impl ModuleError {
    pub fn io(path: &Path, action: &str, error: std::io::Error) -> Self {
        ModuleError::Failed(format!("cannot {action} {}: {error}", path.display()))
    }
}

pub trait Module: Send + Sync + 'static {
    const NAME: &'static str;
    /// Typed arguments; `#[serde(deny_unknown_fields)]` so typos are caught before a run.
    type Args: DeserializeOwned;
    /// `command` and `shell` may change anything, so check mode skips them.
    const SKIPPED_IN_CHECK_MODE: bool = false;

    /// Checks beyond the argument types that need no rendering (a `src` file exists).
    fn validate(_args: &Node, _base_dir: &Path) -> Result<(), Error> {
        Ok(())
    }

    /// What a task of this module needs from the master, from its arguments as written.
    fn master_needs(_args: &Node) -> MasterNeeds<'_> {
        MasterNeeds::default()
    }

    fn check_apply(
        &self,
        args: Self::Args,
        context: &mut ModuleContext,
        apply: bool,
    ) -> Result<Outcome, ModuleError>;
}

/// A module behind a pointer, as the registry hands it out.
pub trait DynModule: Send + Sync {
    fn name(&self) -> &str;
    fn skipped_in_check_mode(&self) -> bool;
    /// Before a run: argument types (templates stand in for any scalar) and static checks.
    fn validate(&self, args: &Node, base_dir: &Path) -> Result<(), Error>;
    /// See [`Module::master_needs`].
    fn master_needs<'a>(&self, args: &'a Node) -> MasterNeeds<'a>;
    /// At run time, with templates rendered into `args`.
    fn run(
        &self,
        args: &Node,
        context: &mut ModuleContext,
        apply: bool,
    ) -> Result<Outcome, ModuleError>;
}

impl<M: Module> DynModule for M {
    fn name(&self) -> &str {
        M::NAME
    }

    fn skipped_in_check_mode(&self) -> bool {
        M::SKIPPED_IN_CHECK_MODE
    }

    fn validate(&self, args: &Node, base_dir: &Path) -> Result<(), Error> {
        check_node::<M::Args>(args)?;
        M::validate(args, base_dir)
    }

    fn master_needs<'a>(&self, args: &'a Node) -> MasterNeeds<'a> {
        M::master_needs(args)
    }

    fn run(
        &self,
        args: &Node,
        context: &mut ModuleContext,
        apply: bool,
    ) -> Result<Outcome, ModuleError> {
        let typed = from_node::<M::Args>(args).map_err(ModuleError::Arguments)?;
        self.check_apply(typed, context, apply)
    }
}
