//! Runs a step's tasks on this node: `when`, `loop`, module call with retries, the
//! `changed_when` / `failed_when` verdicts, `register`, and handlers at the end of the
//! step. The same executor serves local runs and the master's jobs (`agent.rs`).

use std::collections::BTreeSet;
use std::time::Instant;

use serde_json::{json, Map, Value};
use weft_modules::{
    content_reads_secrets, find_module, DynModule, ModuleContext, ModuleDirs, ModuleError, Outcome,
};
use weft_taskbook::error::PathSegment;
use weft_taskbook::render::{describe_value, Renderer, TimeLimit};
use weft_taskbook::report::{unix_ms_now, ItemResult, TaskResult, TaskStatus};
use weft_taskbook::secrets::HIDDEN_CONTENT;
use weft_taskbook::task::Conditions;
use weft_taskbook::taskbook::spanned_origin;
use weft_taskbook::vars::{resolve_templated_vars, VarLayers, VarLevel};
use weft_taskbook::{Error, Step, Task, TaskBook, Vars};

/// How a run treats every task.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub check_mode: bool,
    pub diff: bool,
    /// Run only tasks with one of these tags (plus those tagged `always`).
    pub tags: Vec<String>,
    pub skip_tags: Vec<String>,
    /// In a cluster run, the node `run_once` tasks run on; the others skip them.
    pub run_once_node: Option<String>,
}

impl RunOptions {
    fn selects(&self, task: &Task) -> bool {
        let tagged = |wanted: &[String]| task.tags.iter().any(|t| wanted.contains(t));
        if tagged(&self.skip_tags) {
            return false;
        }
        self.tags.is_empty() || tagged(&self.tags) || task.tags.iter().any(|t| t == "always")
    }
}

const HIDDEN: &str = "output hidden by no_log";

/// One node's state across a run: its variables, registered results and whether it failed.
pub struct NodeExecutor {
    pub node_name: String,
    context: tera::Context,
    /// Registered results and `set_var` values: the highest precedence, kept apart so
    /// a later step's variables cannot shadow them.
    registered: Vars,
    renderer: Renderer,
    /// Where this node's custom modules are.
    module_dirs: ModuleDirs,
    pub failed: bool,
}

/// What one attempt of one item produced, before it becomes a result line.
struct Attempted {
    status: TaskStatus,
    msg: Option<String>,
    diff: Option<String>,
    registered: Value,
    set_vars: Vars,
    attempts: u32,
}

impl NodeExecutor {
    /// `context` holds everything tasks can read: vars, `facts`, `node`, `nodes`.
    pub fn new(
        node_name: impl Into<String>,
        context: tera::Context,
        module_dirs: ModuleDirs,
    ) -> Self {
        NodeExecutor {
            node_name: node_name.into(),
            context,
            registered: Vars::new(),
            renderer: Renderer::default(),
            module_dirs,
            failed: false,
        }
    }

    /// Sets variables for the coming tasks (a step's variables, say); registered
    /// results keep precedence over them.
    pub fn set_vars(&mut self, vars: &Vars) {
        for (key, value) in vars.iter().chain(&self.registered) {
            self.context.insert(key, value);
        }
    }

    /// Starts from registered results a previous step left (cluster runs carry them
    /// from step to step through the master).
    pub fn with_registered(mut self, registered: Vars) -> Self {
        self.registered = registered;
        self
    }

    pub fn registered(&self) -> &Vars {
        &self.registered
    }

    /// Runs step `index` of the TaskBook with every variable layered by precedence:
    /// `cluster` (Config, cluster and node variables, below the TaskBook's), the
    /// TaskBook's, the step's, then each of `extra` (`-e`), registered results on top.
    /// `Err` is a variable that cannot be rendered: no task ran.
    pub fn run_taskbook_step(
        &mut self,
        taskbook: &TaskBook,
        index: usize,
        cluster: &Vars,
        extra: &[Vars],
        options: &RunOptions,
        emit: &mut dyn FnMut(TaskResult),
    ) -> Result<(), Error> {
        let step = &taskbook.steps[index];
        let mut layers = VarLayers::default();
        layers.push(VarLevel::Node, cluster.clone());
        layers.push(VarLevel::TaskBook, taskbook.vars.clone());
        layers.push(VarLevel::Step, step.vars.clone());
        for vars in extra {
            layers.push(VarLevel::ExtraVars, vars.clone());
        }
        let mut vars = layers.merged();
        let base = self.context.clone();
        resolve_templated_vars(&mut vars, &base, &mut self.renderer)
            .map_err(|e| e.in_file(&step.file))?;
        self.set_vars(&vars);
        self.run_step(step, &step.display_name(index), options, emit);
        Ok(())
    }

    /// Runs the step's tasks, then its notified handlers; each result goes to `emit`.
    pub fn run_step(
        &mut self,
        step: &Step,
        step_name: &str,
        options: &RunOptions,
        emit: &mut dyn FnMut(TaskResult),
    ) {
        let mut notified = BTreeSet::new();
        for task in step.tasks.iter().filter(|t| options.selects(t)) {
            if self.failed {
                return;
            }
            let result = self.run_task(task, step, step_name, false, options);
            if result.status == TaskStatus::Changed {
                notified.extend(task.notify.iter().map(|n| n.value.clone()));
            }
            self.failed |= result.status.stops_node();
            emit(result);
        }
        for handler in &step.handlers {
            if self.failed {
                return;
            }
            if handler.name.as_ref().is_some_and(|n| notified.contains(n)) {
                let result = self.run_task(handler, step, step_name, true, options);
                self.failed |= result.status.stops_node();
                emit(result);
            }
        }
    }

    fn run_task(
        &mut self,
        task: &Task,
        step: &Step,
        step_name: &str,
        handler: bool,
        options: &RunOptions,
    ) -> TaskResult {
        let started_unix_ms = unix_ms_now();
        let started = Instant::now();
        let location = format!(
            "{}:{}:{}",
            step.file.display(),
            task.span.line,
            task.span.col
        );
        let mut result = TaskResult {
            node: self.node_name.clone(),
            step: step_name.to_string(),
            task: task.display_name(),
            module: task.module.value.clone(),
            location,
            handler,
            status: TaskStatus::Ok,
            msg: None,
            diff: None,
            items: Vec::new(),
            output: Value::Null,
            attempts: 0,
            started_unix_ms,
            duration_ms: 0.0,
        };
        let run_once_elsewhere = options
            .run_once_node
            .as_ref()
            .filter(|node| task.run_once && **node != self.node_name);
        let module = find_module(&task.module.value, &self.module_dirs);
        // The task's `timeout` bounds rendering its `loop` here, then each item.
        self.renderer
            .set_time_limit(TimeLimit::starting_now(task.timeout.map(|t| t.0)));
        let outcome =
            match (run_once_elsewhere, module) {
                (Some(node), _) => Ok(Items::Single(Attempted::skipped(format!(
                    "run_once: runs on {node} only"
                )))),
                (None, Some(module)) => self.run_items(task, step, &*module, options),
                // A cluster run takes unknown names for custom modules of the nodes.
                (None, None) => Err(Error::new(self.module_dirs.not_found(&task.module.value))
                    .at(task.module.span())),
            };
        match outcome {
            Ok(Items::Single(attempted)) => {
                result.status = attempted.status;
                result.msg = attempted.msg;
                result.diff = attempted.diff;
                result.attempts = attempted.attempts;
                self.keep(task, attempted.registered.clone(), attempted.set_vars);
                result.output = attempted.registered;
            }
            Ok(Items::Looped(items)) => {
                result.status = aggregate(items.iter().map(|(_, a)| a.status));
                result.attempts = items.iter().map(|(_, a)| a.attempts).max().unwrap_or(0);
                let registered: Vec<Value> =
                    items.iter().map(|(_, a)| a.registered.clone()).collect();
                let mut set_vars = Vars::new();
                for (item, attempted) in items {
                    set_vars.extend(attempted.set_vars);
                    result.items.push(ItemResult {
                        item,
                        status: attempted.status,
                        msg: attempted.msg,
                        diff: attempted.diff,
                    });
                }
                let summary = json!({
                    "results": registered,
                    "changed": result.status == TaskStatus::Changed,
                    "failed": result.status == TaskStatus::Failed,
                    "skipped": result.status == TaskStatus::Skipped,
                });
                self.keep(task, summary.clone(), set_vars);
                result.output = summary;
            }
            Err(error) => {
                result.status = if task.ignore_errors {
                    TaskStatus::Ignored
                } else {
                    TaskStatus::Failed
                };
                result.msg = Some(error.in_file(&step.file).to_string());
            }
        }
        self.renderer.set_time_limit(TimeLimit::Default);
        if task.no_log {
            hide(&mut result);
        }
        result.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        result
    }

    /// Stores what later tasks may read: the registered result and `set_var` values.
    fn keep(&mut self, task: &Task, registered: Value, set_vars: Vars) {
        if let Some(name) = &task.register {
            self.registered.insert(name.value.clone(), registered);
        }
        self.registered.extend(set_vars);
        for (key, value) in &self.registered {
            self.context.insert(key, value);
        }
    }

    fn run_items(
        &mut self,
        task: &Task,
        step: &Step,
        module: &dyn DynModule,
        options: &RunOptions,
    ) -> Result<Items, Error> {
        let Some(loop_node) = &task.loop_items else {
            let context = self.context.clone();
            return self
                .run_item(task, step, module, options, context)
                .map(Items::Single);
        };
        let in_loop = |e: Error| e.under(PathSegment::Key("loop".into()));
        let items = match self
            .renderer
            .render_node(loop_node, &self.context)
            .map_err(in_loop)?
        {
            Value::Array(items) => items,
            other => {
                return Err(Error::new(format!(
                    "expected a list to loop over, found {}",
                    describe_value(&other)
                ))
                .at(loop_node.span)
                .under(PathSegment::Key("loop".into()))
                .with_hint("loop over a list: `loop: [a, b]` or `loop: \"{{ users }}\"`"))
            }
        };
        let mut results = Vec::with_capacity(items.len());
        for item in items {
            let mut context = self.context.clone();
            context.insert("item", &item);
            let attempted = self.run_item(task, step, module, options, context)?;
            let stop = attempted.status == TaskStatus::Failed;
            results.push((item, attempted));
            if stop {
                break;
            }
        }
        Ok(Items::Looped(results))
    }

    fn run_item(
        &mut self,
        task: &Task,
        step: &Step,
        module: &dyn DynModule,
        options: &RunOptions,
        mut context: tera::Context,
    ) -> Result<Attempted, Error> {
        // One `timeout` covers rendering `when` and the arguments, and the first attempt;
        // each retry gets it afresh.
        let mut time_limit = TimeLimit::starting_now(task.timeout.map(|t| t.0));
        self.renderer.set_time_limit(time_limit);
        if let Some(false_condition) = self.first_false("when", &task.when, &context)? {
            return Ok(Attempted::skipped(format!(
                "skipped: `{false_condition}` is false"
            )));
        }
        let check_mode = task.check_mode.unwrap_or(options.check_mode);
        if check_mode && module.skipped_in_check_mode() {
            return Ok(Attempted::skipped(format!(
                "skipped in check mode: `{}` may change anything; set `check_mode: false` on read-only probes",
                module.name()
            )));
        }
        let args = self
            .renderer
            .render_to_node(&task.args, &context)
            .map_err(|e| e.under(PathSegment::Key(task.module.value.clone())))?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            if attempts > 1 {
                time_limit = TimeLimit::starting_now(task.timeout.map(|t| t.0));
                self.renderer.set_time_limit(time_limit);
            }
            let mut module_context = ModuleContext {
                base_dir: step.base_dir(),
                vars: &context,
                renderer: &mut self.renderer,
                deadline: time_limit.deadline(),
                want_diff: options.diff || check_mode,
            };
            let outcome = match module.run(&args, &mut module_context, !check_mode) {
                Ok(outcome) => outcome,
                Err(ModuleError::Arguments(error)) => {
                    return Err(error.under(PathSegment::Key(task.module.value.clone())))
                }
                Err(ModuleError::Failed(msg)) => Outcome {
                    failed: true,
                    msg: Some(msg),
                    ..Outcome::default()
                },
            };
            // Masking hides a secret's lines as they are; this hides them changed too.
            let outcome = match outcome.diff {
                Some(_) if content_reads_secrets(module, &task.args, step.base_dir()) => Outcome {
                    diff: Some(HIDDEN_CONTENT.to_string()),
                    ..outcome
                },
                _ => outcome,
            };
            let mut attempted = self.judge(task, outcome, &mut context)?;
            attempted.attempts = attempts;
            let done = if task.until.is_set() {
                self.first_false("until", &task.until, &context)?.is_none()
            } else {
                attempted.status != TaskStatus::Failed
            };
            if done || attempts > task.retries {
                if task.until.is_set() && !done {
                    attempted.status = TaskStatus::Failed;
                    attempted.msg = Some(format!(
                        "`until` was still false after {attempts} attempts{}",
                        attempted.msg.map(|m| format!(": {m}")).unwrap_or_default()
                    ));
                }
                if attempted.status == TaskStatus::Failed && task.ignore_errors {
                    attempted.status = TaskStatus::Ignored;
                }
                return Ok(attempted);
            }
            std::thread::sleep(task.delay.0);
        }
    }

    /// Applies `changed_when` and `failed_when` to a module's outcome. The result is
    /// readable in them as `result` (and under the `register` name).
    fn judge(
        &mut self,
        task: &Task,
        outcome: Outcome,
        context: &mut tera::Context,
    ) -> Result<Attempted, Error> {
        let mut registered = Map::new();
        registered.extend(outcome.output);
        registered.insert("changed".into(), outcome.changed.into());
        registered.insert("failed".into(), outcome.failed.into());
        if let Some(msg) = &outcome.msg {
            registered.insert("msg".into(), msg.clone().into());
        }
        let mut registered = Value::Object(registered);
        context.insert("result", &registered);
        if let Some(name) = &task.register {
            context.insert(&name.value, &registered);
        }
        let changed = if task.changed_when.is_set() {
            self.first_false("changed_when", &task.changed_when, context)?
                .is_none()
        } else {
            outcome.changed
        };
        let failed = if task.failed_when.is_set() {
            self.first_false("failed_when", &task.failed_when, context)?
                .is_none()
        } else {
            outcome.failed
        };
        registered["changed"] = changed.into();
        registered["failed"] = failed.into();
        let status = match (failed, changed) {
            (true, _) => TaskStatus::Failed,
            (false, true) => TaskStatus::Changed,
            (false, false) => TaskStatus::Ok,
        };
        // A failure forced by `failed_when` says which condition held.
        let msg = match (&outcome.msg, failed && !outcome.failed) {
            (None, true) => Some(format!(
                "failed_when: {}",
                task.failed_when
                    .0
                    .iter()
                    .map(|c| c.value.as_str())
                    .collect::<Vec<_>>()
                    .join(" and ")
            )),
            _ => outcome.msg,
        };
        Ok(Attempted {
            status,
            msg,
            diff: outcome.diff,
            registered,
            set_vars: outcome.set_vars,
            attempts: 1,
        })
    }

    /// The first condition that is false, if any (conditions in a list are AND-ed).
    fn first_false(
        &mut self,
        key: &str,
        conditions: &Conditions,
        context: &tera::Context,
    ) -> Result<Option<String>, Error> {
        for condition in &conditions.0 {
            let holds = self
                .renderer
                .condition(&condition.value, context, spanned_origin(condition))
                .map_err(|e| e.under(PathSegment::Key(key.into())))?;
            if !holds {
                return Ok(Some(condition.value.clone()));
            }
        }
        Ok(None)
    }
}

enum Items {
    Single(Attempted),
    Looped(Vec<(Value, Attempted)>),
}

impl Attempted {
    fn skipped(msg: String) -> Self {
        Attempted {
            status: TaskStatus::Skipped,
            msg: Some(msg),
            diff: None,
            registered: json!({"changed": false, "failed": false, "skipped": true}),
            set_vars: Vars::new(),
            attempts: 0,
        }
    }
}

/// A looped task's status: failed beats changed beats ok; skipped only if all were.
fn aggregate(statuses: impl Iterator<Item = TaskStatus>) -> TaskStatus {
    let statuses: Vec<TaskStatus> = statuses.collect();
    let any = |s: TaskStatus| statuses.contains(&s);
    if any(TaskStatus::Failed) {
        TaskStatus::Failed
    } else if any(TaskStatus::Ignored) {
        TaskStatus::Ignored
    } else if any(TaskStatus::Changed) {
        TaskStatus::Changed
    } else if !statuses.is_empty() && statuses.iter().all(|s| *s == TaskStatus::Skipped) {
        TaskStatus::Skipped
    } else {
        TaskStatus::Ok
    }
}

fn hide(result: &mut TaskResult) {
    result.msg = result.msg.as_ref().map(|_| HIDDEN.to_string());
    result.diff = None;
    result.output = Value::Null;
    for item in &mut result.items {
        item.item = Value::String(HIDDEN.into());
        item.msg = item.msg.as_ref().map(|_| HIDDEN.to_string());
        item.diff = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_this_node_lacks_fails_that_task_with_where_it_looked() {
        let modules = tempfile::tempdir().unwrap();
        let taskbook = TaskBook::from_source(
            "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: t}\nspec:\n  steps:\n    - tasks:\n        - frobnicate: {level: 3}\n        - ping:\n",
            std::path::Path::new("book.yml"),
        )
        .unwrap();
        weft_modules::validate_taskbook(&taskbook, weft_modules::CustomModules::OnNodes)
            .expect("a cluster run takes the name for a custom module of the nodes");
        let dirs = ModuleDirs::new([modules.path().to_path_buf()]);
        let mut executor = NodeExecutor::new("n1", tera::Context::new(), dirs);
        let mut results = Vec::new();
        executor
            .run_taskbook_step(
                &taskbook,
                0,
                &Vars::new(),
                &[],
                &RunOptions::default(),
                &mut |r| results.push(r),
            )
            .unwrap();
        assert_eq!(results.len(), 1, "the failure stops the node: {results:?}");
        assert_eq!(results[0].status, TaskStatus::Failed);
        assert_eq!(
            results[0].msg.as_deref(),
            Some(
                format!(
                    "book.yml:7:11: no module `frobnicate`: not built in and not found in {}",
                    modules.path().display()
                )
                .as_str()
            )
        );
    }
}
