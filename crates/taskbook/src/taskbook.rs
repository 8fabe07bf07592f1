//! The TaskBook: steps of tasks, each step a barrier across its nodes, rolled out in batches.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::de::Spanned;
use crate::duration::Duration;
use crate::error::{unknown_name_hint, Error, PathSegment, Result};
use crate::objects::{parse_objects, AnyObject, Metadata};
use crate::render::{Renderer, TemplateOrigin};
use crate::selector::NodeSelector;
use crate::task::Task;
use crate::vars::Vars;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskBookSpec {
    #[serde(default)]
    pub vars: Vars,
    /// Other TaskBooks whose steps run before this one's.
    #[serde(default)]
    pub include: Vec<Spanned<Include>>,
    #[serde(default)]
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Include {
    /// A GitRepository object's name; without it, `path` is a file beside this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    pub path: String,
}

/// A TaskBook named in another object: by name, or by a path in a GitRepository.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskBookRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub nodes: NodeSelector,
    #[serde(default)]
    pub rollout: Option<Rollout>,
    #[serde(default)]
    pub vars: Vars,
    #[serde(default)]
    pub tasks: Vec<Task>,
    #[serde(default)]
    pub handlers: Vec<Task>,
    /// The file this step was read from: errors name it, relative `src` resolve beside it.
    #[serde(skip)]
    pub file: PathBuf,
}

impl Step {
    pub fn display_name(&self, index: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("step {}", index + 1))
    }

    /// The folder relative `src` paths resolve against.
    pub fn base_dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new("."))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// A number, a percentage or a ramp `[1, 5, "25%"]` (the last size repeats).
    #[serde(default)]
    pub batch: Batch,
    #[serde(default)]
    pub mode: RolloutMode,
    /// Stop the rollout when more than this share of the step's nodes failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fail_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<Duration>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutMode {
    /// A batch finishes before the next starts (Ansible `serial`).
    #[default]
    Barrier,
    /// A new node starts as soon as one finishes (Salt `-b`).
    Window,
}

/// Batch sizes in order; empty means "all nodes at once".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch(pub Vec<BatchSize>);

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BatchSize {
    Count(usize),
    Percent(f64),
}

impl BatchSize {
    fn parse(text: &str) -> std::result::Result<BatchSize, String> {
        let text = text.trim();
        if let Some(percent) = text.strip_suffix('%') {
            return match percent.trim().parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 100.0 => Ok(BatchSize::Percent(p)),
                _ => Err(format!("`{text}` is not a percentage between 0% and 100%")),
            };
        }
        match text.parse::<usize>() {
            Ok(0) | Err(_) => Err(format!(
                "`{text}` is not a batch size: use a positive number or a percentage like \"25%\""
            )),
            Ok(n) => Ok(BatchSize::Count(n)),
        }
    }

    /// How many of `total` nodes this size means (never zero while nodes remain).
    pub fn of(self, total: usize) -> usize {
        match self {
            BatchSize::Count(n) => n,
            BatchSize::Percent(p) => ((total as f64 * p / 100.0).ceil() as usize).max(1),
        }
    }
}

impl fmt::Display for BatchSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchSize::Count(n) => write!(f, "{n}"),
            BatchSize::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for Batch {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(ToString::to_string))
    }
}

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct BatchVisitor;
        impl<'de> Visitor<'de> for BatchVisitor {
            type Value = Batch;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a batch size (2, \"25%\") or a ramp ([1, 5, \"25%\"])")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Batch, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Batch, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Batch, E> {
                BatchSize::parse(v)
                    .map(|size| Batch(vec![size]))
                    .map_err(E::custom)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Batch, A::Error> {
                let mut sizes = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    sizes.push(BatchSize::parse(&item).map_err(de::Error::custom)?);
                }
                if sizes.is_empty() {
                    return Err(de::Error::custom("a ramp needs at least one batch size"));
                }
                Ok(Batch(sizes))
            }
        }
        deserializer.deserialize_any(BatchVisitor)
    }
}

/// A TaskBook read from a file, with its includes expanded and everything validated.
#[derive(Debug, Clone)]
pub struct TaskBook {
    pub metadata: Metadata,
    pub file: PathBuf,
    /// Every file this TaskBook was read from: its own first, then its includes.
    pub sources: Vec<PathBuf>,
    pub vars: Vars,
    pub steps: Vec<Step>,
}

/// Includes nest at most this deep (a cycle is reported before that).
const MAX_INCLUDE_DEPTH: usize = 16;

/// Where `include: {repo: R, path: P}` finds the files of the GitRepository `R`: a
/// folder that `P` is relative to. Only a master fetches repositories, so what this is
/// depends on where the TaskBook is read.
pub trait RepoFiles {
    /// The folder holding `repo`'s files; `None` leaves repository includes to the
    /// master, which reads them when the run starts. The error says why there is no
    /// folder (it is reported at the include).
    fn repo_dir(&mut self, repo: &str) -> Result<Option<PathBuf>>;
}

/// Reading a TaskBook with no master: repository includes are refused.
pub struct NoRepos;

impl RepoFiles for NoRepos {
    fn repo_dir(&mut self, repo: &str) -> Result<Option<PathBuf>> {
        Err(Error::new(format!(
            "this include reads from the GitRepository `{repo}`, which only a master can fetch"
        ))
        .with_hint("run it through the master, or include a file: `{path: other.yml}`"))
    }
}

/// Checking a TaskBook before it is sent to a master: repository includes are
/// skipped here, and the master checks them.
pub struct MasterReadsRepos;

impl RepoFiles for MasterReadsRepos {
    fn repo_dir(&mut self, _repo: &str) -> Result<Option<PathBuf>> {
        Ok(None)
    }
}

/// What a load carries down its includes.
struct Loading<'a> {
    chain: Vec<PathBuf>,
    repos: &'a mut dyn RepoFiles,
}

impl TaskBook {
    /// Reads the one TaskBook in `file`, expanding file includes.
    pub fn load(file: &Path) -> Result<TaskBook> {
        Self::load_with_repos(file, &mut NoRepos)
    }

    /// Reads the one TaskBook in `file`, expanding file includes and repository
    /// includes from `repos`.
    pub fn load_with_repos(file: &Path, repos: &mut dyn RepoFiles) -> Result<TaskBook> {
        Self::load_nested(
            file,
            &mut Loading {
                chain: Vec::new(),
                repos,
            },
        )
    }

    /// Reads a TaskBook from source text (the file name is used for errors and paths).
    pub fn from_source(source: &str, file: &Path) -> Result<TaskBook> {
        Self::from_source_nested(
            source,
            file,
            &mut Loading {
                chain: vec![file.to_path_buf()],
                repos: &mut NoRepos,
            },
        )
    }

    fn load_nested(file: &Path, loading: &mut Loading) -> Result<TaskBook> {
        let source = read_source(file)?;
        let canonical = file.canonicalize().unwrap_or_else(|_| file.to_path_buf());
        let chain = &mut loading.chain;
        if chain.contains(&canonical) {
            return Err(Error::new(format!(
                "include cycle: {}",
                chain
                    .iter()
                    .chain([&canonical])
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" -> ")
            ))
            .in_file(file));
        }
        if chain.len() >= MAX_INCLUDE_DEPTH {
            return Err(Error::new(format!(
                "includes nest more than {MAX_INCLUDE_DEPTH} levels deep"
            ))
            .in_file(file));
        }
        chain.push(canonical);
        let taskbook = Self::from_source_nested(&source, file, loading);
        loading.chain.pop();
        taskbook
    }

    fn from_source_nested(source: &str, file: &Path, loading: &mut Loading) -> Result<TaskBook> {
        let mut taskbooks = Vec::new();
        for sourced in parse_objects(source, file)? {
            match sourced.object {
                AnyObject::TaskBook(object) => taskbooks.push(object),
                other => {
                    return Err(Error::new(format!(
                        "document {} is a {}, but a TaskBook file holds TaskBooks only",
                        sourced.document_index + 1,
                        other.kind()
                    ))
                    .in_file(file)
                    .with_hint("store other objects in the cluster with `weft apply -f FILE`"))
                }
            }
        }
        let object = match taskbooks.len() {
            1 => taskbooks.remove(0),
            0 => {
                return Err(Error::new("the file holds no TaskBook")
                    .in_file(file)
                    .with_hint(
                        "a TaskBook starts with `apiVersion: weft/v1` and `kind: TaskBook`",
                    ))
            }
            n => {
                return Err(Error::new(format!(
                    "the file holds {n} TaskBooks ({}); weft runs one TaskBook per file",
                    taskbooks
                        .iter()
                        .map(|t| t.metadata.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .in_file(file)
                .with_hint("put each TaskBook in its own file, and use `include` to combine them"))
            }
        };

        let mut steps = Vec::new();
        let mut vars = Vars::new();
        let mut sources = vec![file.to_path_buf()];
        for include in &object.spec.include {
            let Some(included) = load_include(include, file, loading)? else {
                continue;
            };
            vars.extend(included.vars);
            steps.extend(included.steps);
            sources.extend(included.sources);
        }
        vars.extend(object.spec.vars);
        for mut step in object.spec.steps {
            step.file = file.to_path_buf();
            steps.push(step);
        }
        let taskbook = TaskBook {
            metadata: object.metadata,
            file: file.to_path_buf(),
            sources,
            vars,
            steps,
        };
        taskbook.validate()?;
        Ok(taskbook)
    }

    /// Checks what the types cannot: handler references, names, template syntax.
    fn validate(&self) -> Result<()> {
        let mut renderer = Renderer::default();
        for (step_index, step) in self.steps.iter().enumerate() {
            let in_step = |e: Error, list: &str, index: usize| {
                e.under_path(&task_field_path(step_index, list, index))
                    .in_file(&step.file)
            };
            let handler_names: Vec<&str> = step
                .handlers
                .iter()
                .filter_map(|h| h.name.as_deref())
                .collect();
            for (index, handler) in step.handlers.iter().enumerate() {
                if handler.name.is_none() {
                    return Err(in_step(
                        Error::new("a handler needs a `name`, which tasks `notify`")
                            .at(handler.span),
                        "handlers",
                        index,
                    ));
                }
            }
            for (list, tasks) in [("tasks", &step.tasks), ("handlers", &step.handlers)] {
                for (index, task) in tasks.iter().enumerate() {
                    validate_task(task, &handler_names, &mut renderer)
                        .map_err(|e| in_step(e, list, index))?;
                }
            }
        }
        Ok(())
    }
}

fn validate_task(task: &Task, handler_names: &[&str], renderer: &mut Renderer) -> Result<()> {
    for notified in &task.notify {
        if !handler_names.contains(&notified.value.as_str()) {
            return Err(Error::new(format!(
                "`notify` names `{}`, but this step has no handler of that name",
                notified.value
            ))
            .at(notified.span())
            .under(PathSegment::Key("notify".into()))
            .with_hint(unknown_name_hint(&notified.value, handler_names)));
        }
    }
    if let Some(register) = &task.register {
        if !is_identifier(&register.value) {
            return Err(Error::new(format!(
                "`{}` cannot be a variable name: use letters, digits and `_`, not starting with a digit",
                register.value
            ))
            .at(register.span())
            .under(PathSegment::Key("register".into())));
        }
    }
    for (key, conditions) in [
        ("when", &task.when),
        ("changed_when", &task.changed_when),
        ("failed_when", &task.failed_when),
        ("until", &task.until),
    ] {
        for condition in &conditions.0 {
            renderer
                .check_condition_syntax(&condition.value, spanned_origin(condition))
                .map_err(|e| e.under(PathSegment::Key(key.into())))?;
        }
    }
    if let Some(items) = &task.loop_items {
        renderer
            .check_node_syntax(items)
            .map_err(|e| e.under(PathSegment::Key("loop".into())))?;
    }
    renderer
        .check_node_syntax(&task.args)
        .map_err(|e| e.under(PathSegment::Key(task.module.value.clone())))
}

/// `spec.steps[S].tasks[T]` (or `handlers`): where a task's errors are reported.
/// A task or handler with the step it is in, as [`TaskBook::placed_tasks`] lists them.
pub struct PlacedTask<'a> {
    pub step: &'a Step,
    pub task: &'a Task,
    step_index: usize,
    list: &'static str,
    index: usize,
}

impl PlacedTask<'_> {
    /// `error` (placed within the task) placed in the TaskBook: its file and field path.
    pub fn place(&self, error: Error) -> Error {
        error
            .under_path(&task_field_path(self.step_index, self.list, self.index))
            .in_file(&self.step.file)
    }
}

impl TaskBook {
    /// Every step's tasks, then its handlers, in order.
    pub fn placed_tasks(&self) -> impl Iterator<Item = PlacedTask<'_>> {
        self.steps
            .iter()
            .enumerate()
            .flat_map(|(step_index, step)| {
                [("tasks", &step.tasks), ("handlers", &step.handlers)]
                    .into_iter()
                    .flat_map(move |(list, tasks)| {
                        tasks
                            .iter()
                            .enumerate()
                            .map(move |(index, task)| PlacedTask {
                                step,
                                task,
                                step_index,
                                list,
                                index,
                            })
                    })
            })
    }
}

pub fn task_field_path(step_index: usize, list: &str, index: usize) -> Vec<PathSegment> {
    vec![
        PathSegment::Key("spec".into()),
        PathSegment::Key("steps".into()),
        PathSegment::Index(step_index),
        PathSegment::Key(list.into()),
        PathSegment::Index(index),
    ]
}

/// A spanned string's position for Tera; the offset is unknown, so errors point at its start.
pub fn spanned_origin<T>(spanned: &Spanned<T>) -> TemplateOrigin {
    TemplateOrigin {
        span: spanned.span(),
        offset: 0,
    }
}

pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `None`: a repository include left to the master.
fn load_include(
    include: &Spanned<Include>,
    file: &Path,
    loading: &mut Loading,
) -> Result<Option<TaskBook>> {
    let at_include = |e: Error| {
        e.at(include.span())
            .under(PathSegment::Key("include".into()))
            .under(PathSegment::Key("spec".into()))
            .in_file(file)
    };
    let path = match &include.value.repo {
        Some(repo) => {
            let relative = Path::new(&include.value.path);
            if !relative
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)))
            {
                return Err(at_include(Error::new(format!(
                    "`{}` is not a path inside the repository",
                    include.value.path
                )))
                .with_hint("name a file from the repository's top, like `taskbooks/base.yml`"));
            }
            let Some(dir) = loading.repos.repo_dir(repo).map_err(at_include)? else {
                return Ok(None);
            };
            let path = dir.join(relative);
            if !path.is_file() {
                return Err(at_include(Error::new(format!(
                    "the GitRepository `{repo}` has no file `{}` in the commit this run reads",
                    include.value.path
                ))));
            }
            path
        }
        None => {
            let path = file
                .parent()
                .unwrap_or(Path::new("."))
                .join(&include.value.path);
            if !path.is_file() {
                return Err(at_include(Error::new(format!(
                    "included file `{}` does not exist",
                    path.display()
                ))));
            }
            path
        }
    };
    TaskBook::load_nested(&path, loading).map(Some)
}

/// Reads a TaskBook or object file, refusing what cannot be one.
pub fn read_source(file: &Path) -> Result<String> {
    let metadata = std::fs::metadata(file).map_err(|e| {
        Error::new(format!("cannot read the file: {e}"))
            .in_file(file)
            .with_hint("check the path")
    })?;
    if metadata.is_dir() {
        return Err(Error::new("expected a YAML file, found a directory")
            .in_file(file)
            .with_hint("name the TaskBook file inside it, e.g. `site.yml`"));
    }
    if metadata.len() > crate::yaml::MAX_SOURCE_BYTES as u64 {
        return Err(Error::new(format!(
            "the file is {} bytes; weft reads YAML files of at most {} bytes",
            metadata.len(),
            crate::yaml::MAX_SOURCE_BYTES
        ))
        .in_file(file)
        .with_hint("split it into several files and use `include`"));
    }
    let bytes = std::fs::read(file)
        .map_err(|e| Error::new(format!("cannot read the file: {e}")).in_file(file))?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let col = String::from_utf8_lossy(&valid[line_start..])
            .chars()
            .count()
            + 1;
        Error::new("the file is not UTF-8 text")
            .at(crate::Span { line, col })
            .in_file(file)
            .with_hint("save it as UTF-8")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct OneRepo(PathBuf);

    impl RepoFiles for OneRepo {
        fn repo_dir(&mut self, repo: &str) -> Result<Option<PathBuf>> {
            match repo {
                "infra" => Ok(Some(self.0.clone())),
                other => Err(Error::new(format!("no GitRepository `{other}`"))),
            }
        }
    }

    const BASE: &str = "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: base}\nspec:\n  steps:\n    - name: from the repository\n      tasks: [{ping: {}}]\n";

    fn site(dir: &Path, include: &str) -> PathBuf {
        let file = dir.join("site.yml");
        std::fs::write(
            &file,
            format!("apiVersion: weft/v1\nkind: TaskBook\nmetadata: {{name: site}}\nspec:\n  include:\n    - {include}\n  steps:\n    - name: own\n      tasks: [{{ping: {{}}}}]\n"),
        )
        .unwrap();
        file
    }

    #[test]
    fn repository_includes_read_where_the_lookup_says_and_errors_point_at_the_include() {
        let repo = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(repo.path().join("taskbooks")).unwrap();
        std::fs::write(repo.path().join("taskbooks/base.yml"), BASE).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut repos = OneRepo(repo.path().to_path_buf());

        let file = site(dir.path(), "{repo: infra, path: taskbooks/base.yml}");
        let taskbook = TaskBook::load_with_repos(&file, &mut repos).unwrap();
        let names: Vec<_> = taskbook
            .steps
            .iter()
            .map(|s| s.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["from the repository", "own"]);
        assert_eq!(
            taskbook.steps[0].file,
            repo.path().join("taskbooks/base.yml")
        );

        let without_master = TaskBook::load(&file).unwrap_err();
        assert!(
            without_master.message.contains("only a master can fetch"),
            "{without_master}"
        );
        assert_eq!(without_master.location(), format!("{}:6:7", file.display()));
        let checked_here = TaskBook::load_with_repos(&file, &mut MasterReadsRepos).unwrap();
        assert_eq!(checked_here.steps.len(), 1, "the master reads the include");

        for (include, expected) in [
            ("{repo: infra, path: nope.yml}", "has no file `nope.yml`"),
            (
                "{repo: infra, path: ../site.yml}",
                "is not a path inside the repository",
            ),
            (
                "{repo: infra, path: /etc/passwd}",
                "is not a path inside the repository",
            ),
            ("{repo: other, path: base.yml}", "no GitRepository `other`"),
        ] {
            let file = site(dir.path(), include);
            let error = TaskBook::load_with_repos(&file, &mut repos).unwrap_err();
            assert!(error.message.contains(expected), "{include}: {error}");
            assert_eq!(
                error.location(),
                format!("{}:6:7", file.display()),
                "{include}"
            );
        }
    }
}
