//! What a run takes from the cluster's objects: each node's cluster variables (with
//! computed ones run on the nodes they name) and the Secrets each step reads, opened
//! here on the master and sent only to the nodes of the steps that read them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use weft_modules::bundle::Bundle;
use weft_taskbook::cluster_vars::{
    NodeCommand, NodeCommandOutputs, NodeView as VarNode, ResolvedVars, VarSources,
};
use weft_taskbook::objects::JobRetention;
use weft_taskbook::render::Renderer;
use weft_taskbook::report::{TaskResult, TaskStatus};
use weft_taskbook::secrets::{secret_references, SecretMask};
use weft_taskbook::taskbook::Rollout;
use weft_taskbook::{Error, TaskBook, Vars};

use super::job::JobStepPlan;
use super::job_runner::{JobEvent, JobRunner, NodeView, RunError, RunRequest, RunScope};
use super::objects::ObjectError;
use crate::store::Store;

/// How long a computed variable's command may take on its node, dispatch included.
const NODE_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A run's share of the cluster's objects.
#[derive(Debug, Default)]
pub struct ClusterInputs {
    pub vars_by_node: HashMap<String, Arc<Vars>>,
    /// By step index: `{name: {key: value}}` of the Secrets the step reads.
    pub secrets_by_step: Vec<Arc<Value>>,
    /// Every secret value the run carries, to mask wherever it would show.
    pub secret_mask: Arc<SecretMask>,
    /// The names of the Secrets the run reads.
    pub secret_names: BTreeSet<String>,
    /// The Config's rollout, for steps that set none.
    pub default_rollout: Option<Rollout>,
    /// The Config's job history bounds, over the master's flags.
    pub job_retention: Option<JobRetention>,
    /// The Config's allowance for what a step's tasks do not bound themselves.
    pub step_timeout: Option<std::time::Duration>,
}

fn objects_error(error: ObjectError) -> RunError {
    match error {
        ObjectError::NotFound {
            kind,
            namespace,
            name,
        } if kind == "Secret" => RunError::Input(
            Error::new(format!(
                "the TaskBook reads secrets.{name}, but namespace `{}` has no Secret `{name}`",
                namespace.unwrap_or_default()
            ))
            .with_hint("apply the Secret with `weft apply`, or run in its namespace with -n"),
        ),
        other => RunError::Objects(Box::new(other)),
    }
}

impl<S: Store + Clone> JobRunner<S> {
    pub(super) async fn cluster_inputs(
        &self,
        namespace: &str,
        taskbook: &TaskBook,
        bundle: &Bundle,
        plans: &[JobStepPlan],
        views: &BTreeMap<String, NodeView>,
    ) -> Result<ClusterInputs, RunError> {
        let objects = &self.inner.objects;
        let sources = objects
            .var_sources(namespace)
            .await
            .map_err(objects_error)?;
        let mut outputs = NodeCommandOutputs::new();
        let mut renderer = Renderer::default();
        let mut vars_by_node = HashMap::new();
        let nodes: BTreeSet<&String> = plans.iter().flat_map(|plan| &plan.nodes).collect();
        for name in nodes {
            let Some(view) = views.get(name) else {
                continue;
            };
            let resolved = self
                .resolve_vars(&sources, view, &mut outputs, &mut renderer)
                .await?;
            vars_by_node.insert(name.clone(), Arc::new(resolved.vars));
        }

        // Template files can read secrets too; a step with a template task gets theirs.
        let file_references = secret_references(
            &bundle
                .files
                .iter()
                .filter(|(path, _)| **path != bundle.taskbook_file)
                .map(|(_, content)| String::from_utf8_lossy(content))
                .collect::<Vec<_>>()
                .join("\n"),
        );
        let mut names_by_step = Vec::new();
        for step in &taskbook.steps {
            // The debug form holds every field of a step that can carry a template.
            let mut names = secret_references(&format!("{step:?}"));
            let templates = step
                .tasks
                .iter()
                .chain(&step.handlers)
                .any(|task| task.module.value == "template");
            if templates {
                names.extend(file_references.iter().cloned());
            }
            names_by_step.push(names);
        }
        let every_name: BTreeSet<String> = names_by_step.iter().flatten().cloned().collect();
        let opened = objects
            .open_secrets(namespace, &every_name)
            .await
            .map_err(objects_error)?;
        let secrets_by_step = names_by_step
            .iter()
            .map(|names| {
                let step_secrets: serde_json::Map<String, Value> = names
                    .iter()
                    .filter_map(|name| Some((name.clone(), opened.get(name)?.clone())))
                    .collect();
                Arc::new(Value::Object(step_secrets))
            })
            .collect();
        Ok(ClusterInputs {
            default_rollout: sources
                .configs
                .iter()
                .find_map(|(_, config)| config.rollout.clone()),
            job_retention: sources
                .configs
                .iter()
                .find_map(|(_, config)| config.job_retention.clone()),
            step_timeout: sources
                .configs
                .iter()
                .find_map(|(_, config)| config.step_timeout.map(|t| t.0)),
            vars_by_node,
            secrets_by_step,
            secret_mask: Arc::new(SecretMask::new(&opened)),
            secret_names: every_name,
        })
    }

    /// One node's cluster variables in `namespace`, with where each came from
    /// (`weft vars`). Computed values from other nodes are run for it.
    pub async fn node_vars(
        &self,
        namespace: &str,
        node_name: &str,
    ) -> Result<ResolvedVars, RunError> {
        let sources = self
            .inner
            .objects
            .var_sources(namespace)
            .await
            .map_err(objects_error)?;
        let record = self.inner.nodes.get(node_name).await?.ok_or_else(|| {
            RunError::Input(
                Error::new(format!("no node `{node_name}`"))
                    .with_hint("`weft nodes` lists the nodes"),
            )
        })?;
        let facts = self
            .inner
            .nodes
            .facts(node_name)
            .await?
            .map(|f| f.facts)
            .unwrap_or(Value::Null);
        let view = NodeView { record, facts };
        self.resolve_vars(
            &sources,
            &view,
            &mut NodeCommandOutputs::new(),
            &mut Renderer::default(),
        )
        .await
    }

    async fn resolve_vars(
        &self,
        sources: &VarSources,
        view: &NodeView,
        outputs: &mut NodeCommandOutputs,
        renderer: &mut Renderer,
    ) -> Result<ResolvedVars, RunError> {
        let node = VarNode {
            name: &view.record.node_name,
            labels: &view.record.labels,
            facts: &view.facts,
            vars: &view.record.vars,
        };
        for command in sources.node_commands(node) {
            let key = (command.object.clone(), command.var.clone());
            if let std::collections::btree_map::Entry::Vacant(entry) = outputs.entry(key) {
                entry.insert(Box::pin(self.node_command_output(&command)).await?);
            }
        }
        sources
            .resolve(node, outputs, renderer)
            .map_err(RunError::Input)
    }

    /// Runs a computed variable's command on its node as a job of its own (so it is
    /// in `weft jobs` like any other work on a node) and returns its standard output
    /// without the last newline.
    async fn node_command_output(&self, command: &NodeCommand) -> Result<String, RunError> {
        let failed = |why: String| {
            RunError::Input(
                Error::new(format!(
                    "computed variable `{}` of {}: {why}",
                    command.var, command.object
                ))
                .with_hint(format!(
                    "the command runs on `{}`, which must be online; `weft jobs` shows the attempt",
                    command.from_node
                )),
            )
        };
        let task = json!({"name": "command", "shell": command.command, "changed_when": false});
        let step_name = format!("compute {} for {}", command.var, command.object);
        let result = self
            .run_internal_task(&command.from_node, &step_name, task)
            .await
            .map_err(failed)?;
        let stdout = result
            .output
            .get("stdout")
            .and_then(Value::as_str)
            .unwrap_or_default();
        Ok(stdout.strip_suffix('\n').unwrap_or(stdout).to_string())
    }

    /// Runs one task on one node as an internal job of its own (in `weft jobs` like
    /// any other work on a node); its result when it was ok, else why not.
    ///
    /// Boxed with its type spelled out: a job's step may start one (`sync` reading a
    /// file), and a future that contains itself needs a name to be `Send`.
    pub(super) fn run_internal_task<'a>(
        &'a self,
        node: &'a str,
        step_name: &'a str,
        task: Value,
    ) -> Pin<Box<dyn Future<Output = Result<TaskResult, String>> + Send + 'a>> {
        Box::pin(async move {
            let taskbook = json!({
                "apiVersion": "weft/v1",
                "kind": "TaskBook",
                "metadata": {"name": "internal"},
                "spec": {"steps": [{
                    "name": step_name,
                    "nodes": {"names": [node]},
                    "tasks": [task],
                }]},
            });
            let file = "internal.yml".to_string();
            let request = RunRequest {
                bundle: Bundle {
                    files: [(file.clone(), taskbook.to_string().into_bytes().into())].into(),
                    taskbook_file: file,
                },
                scope: RunScope::Internal,
                ..Default::default()
            };
            let mut events = self.start(request).await.map_err(|e| e.to_string())?;
            let report = tokio::time::timeout(NODE_COMMAND_TIMEOUT, async {
                while let Some(event) = events.recv().await {
                    if let JobEvent::Finished(report) = event {
                        return Some(report);
                    }
                }
                None
            })
            .await
            .map_err(|_| format!("no answer within {NODE_COMMAND_TIMEOUT:?}"))?
            .ok_or_else(|| "the run ended without a report".to_string())?;
            let result = report
                .results
                .into_iter()
                .find(|result| result.node == node)
                .ok_or_else(|| "the node sent no result".to_string())?;
            if result.status != TaskStatus::Ok {
                return Err(format!(
                    "the task {} on `{node}`: {}",
                    result.status.as_str(),
                    result.msg.clone().unwrap_or_default()
                ));
            }
            Ok(result)
        })
    }
}
