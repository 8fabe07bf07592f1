//! What a run takes from the master besides its TaskBook. What the store holds (the
//! Secrets each step reads, the Config's settings, variable sources) is read while the
//! run is planned. What must run on nodes first (a computed variable's command, the
//! file a `sync` task carries) runs once the job is recorded, each as an internal job
//! the job names (`weft job show`), so a run refused while planning starts none.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use weft_modules::sync::{synced_entry, SyncSource};
use weft_taskbook::bundle::Bundle;
use weft_taskbook::cluster_vars::{NodeCommand, NodeCommandOutputs, ResolvedVars, VarSources};
use weft_taskbook::objects::{JobRetention, Kind};
use weft_taskbook::render::Renderer;
use weft_taskbook::report::{TaskResult, TaskStatus};
use weft_taskbook::secrets::SecretMask;
use weft_taskbook::taskbook::Rollout;
use weft_taskbook::{Error, Vars};

use super::plan::{Plan, StepPlan};
use super::{JobEvent, JobRunner, NodeView, RunError, RunRequest, RunScope};
use crate::core::job::{InputJob, SecretsRead};
use crate::core::objects::ObjectError;
use crate::store::Store;

/// How long an internal job may take on its node, dispatch included.
const INTERNAL_JOB_TIMEOUT: Duration = Duration::from_secs(60);

/// Told of each internal job a run's inputs start.
pub(super) type InputJobStarted<'a> = &'a (dyn Fn(InputJob) + Send + Sync);

/// What a run read from the store when it was planned.
#[derive(Default)]
pub(super) struct StoredInputs {
    /// By step index: `{name: {key: value}}` of the Secrets the step reads.
    pub secrets_by_step: Vec<Arc<Value>>,
    /// Every secret value the run carries, to mask wherever it would show.
    pub secret_mask: Arc<SecretMask>,
    pub secrets_read: Option<SecretsRead>,
    /// The Config's rollout, for steps that set none.
    pub default_rollout: Option<Rollout>,
    /// The Config's job history bounds, over the master's flags.
    pub job_retention: Option<JobRetention>,
    /// The Config's allowance for what a step's tasks do not bound themselves.
    pub step_timeout: Option<Duration>,
    /// Where each node's cluster variables come from, resolved once computed
    /// variables have run; `None` for the master's own runs.
    pub var_sources: Option<VarSources>,
}

pub(super) fn objects_error(error: ObjectError) -> RunError {
    match error {
        ObjectError::NotFound {
            kind: Kind::Secret,
            namespace,
            name,
        } => RunError::Input(
            Error::new(format!(
                "the TaskBook reads secrets.{name}, but namespace `{}` has no Secret `{name}`",
                namespace.unwrap_or_default()
            ))
            .with_hint("apply the Secret with `weft apply`, or run in its namespace with -n"),
        ),
        other => RunError::Objects(Box::new(other)),
    }
}

/// One node's cluster variables, given the outputs of the computed ones.
fn resolve_vars(
    sources: &VarSources,
    view: &NodeView,
    outputs: &NodeCommandOutputs,
    renderer: &mut Renderer,
) -> Result<ResolvedVars, Error> {
    sources.resolve(view.var_node(), outputs, renderer)
}

/// Each planned node's cluster variables.
pub(super) fn vars_by_node(
    sources: &VarSources,
    views: &BTreeMap<String, NodeView>,
    steps: &[StepPlan],
    outputs: &NodeCommandOutputs,
) -> Result<HashMap<String, Arc<Vars>>, Error> {
    let mut renderer = Renderer::default();
    let mut by_node = HashMap::new();
    for step in steps {
        for name in &step.job.nodes {
            if by_node.contains_key(name) {
                continue;
            }
            if let Some(view) = views.get(name) {
                let resolved = resolve_vars(sources, view, outputs, &mut renderer)?;
                by_node.insert(name.clone(), Arc::new(resolved.vars));
            }
        }
    }
    Ok(by_node)
}

impl<S: Store + Clone> JobRunner<S> {
    /// Opens the Secrets the plan reads (refusing the run when one is missing) and
    /// reads the Config's settings.
    pub(super) async fn read_inputs(
        &self,
        var_sources: Option<VarSources>,
        plan: &Plan,
    ) -> Result<StoredInputs, RunError> {
        let Some(sources) = var_sources else {
            return Ok(StoredInputs::default());
        };
        let opened = self
            .inner
            .objects
            .open_secrets(&sources.namespace, &plan.secret_names)
            .await
            .map_err(objects_error)?;
        let secrets_by_step = plan
            .steps
            .iter()
            .map(|step| {
                let step_secrets: serde_json::Map<String, Value> = step
                    .secret_names
                    .iter()
                    .filter_map(|name| Some((name.clone(), opened.get(name)?.clone())))
                    .collect();
                Arc::new(Value::Object(step_secrets))
            })
            .collect();
        let configs = &sources.configs;
        Ok(StoredInputs {
            secrets_by_step,
            secret_mask: Arc::new(SecretMask::new(&opened)),
            secrets_read: (!plan.secret_names.is_empty()).then(|| SecretsRead {
                namespace: sources.namespace.clone(),
                names: plan.secret_names.clone(),
            }),
            default_rollout: configs.iter().find_map(|(_, c)| c.rollout.clone()),
            job_retention: configs.iter().find_map(|(_, c)| c.job_retention.clone()),
            step_timeout: configs
                .iter()
                .find_map(|(_, c)| c.step_timeout.map(|t| t.0)),
            var_sources: Some(sources),
        })
    }

    /// Runs each computed variable's command on its node, as an internal job.
    pub(super) async fn run_node_commands(
        &self,
        commands: &[NodeCommand],
        started: InputJobStarted<'_>,
    ) -> Result<NodeCommandOutputs, String> {
        let mut outputs = NodeCommandOutputs::new();
        for command in commands {
            let output = self.node_command_output(command, started).await?;
            outputs.insert((command.object.clone(), command.var.clone()), output);
        }
        Ok(outputs)
    }

    /// A computed variable's value: its command's standard output without the last
    /// newline.
    async fn node_command_output(
        &self,
        command: &NodeCommand,
        started: InputJobStarted<'_>,
    ) -> Result<String, String> {
        let task = json!({"name": "command", "shell": command.command, "changed_when": false});
        let purpose = format!("compute {} for {}", command.var, command.object);
        let result = self
            .run_internal_task(&command.from_node, &purpose, task, started)
            .await
            .map_err(|why| {
                format!(
                    "computed variable `{}` of {}: {why} (the command runs on `{}`, which must be online; `weft jobs` shows the attempt)",
                    command.var, command.object, command.from_node
                )
            })?;
        let stdout = result
            .output
            .get("stdout")
            .and_then(Value::as_str)
            .unwrap_or_default();
        Ok(stdout.strip_suffix('\n').unwrap_or(stdout).to_string())
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
        let commands = sources.node_commands(view.var_node());
        let outputs = self
            .run_node_commands(&commands, &|_| {})
            .await
            .map_err(|why| RunError::Input(Error::new(why)))?;
        resolve_vars(&sources, &view, &outputs, &mut Renderer::default()).map_err(RunError::Input)
    }

    /// What a step's `sync` tasks carry (`{source: {content, sha256}}`): a value the
    /// source node registered earlier in this job (`registered`), or a file it holds,
    /// read there by an internal job. `Null` for a step without `sync`.
    pub(super) async fn read_synced(
        &self,
        sources: &[SyncSource],
        registered: impl Fn(&str, &str) -> Result<Vec<u8>, String>,
        started: InputJobStarted<'_>,
    ) -> Result<Value, String> {
        let mut synced = serde_json::Map::new();
        for source in sources {
            let content = match (&source.var, source.read_task()) {
                (Some(var), _) => registered(&source.from, var)?,
                (None, Some(task)) => {
                    let src = source.src.as_deref().unwrap_or_default();
                    let purpose = format!("read {src} for sync");
                    let result = self
                        .run_internal_task(&source.from, &purpose, task, started)
                        .await
                        .map_err(|e| format!("cannot read {src} on `{}`: {e}", source.from))?;
                    let encoded = result.output["content"].as_str().unwrap_or_default();
                    base64::engine::general_purpose::STANDARD
                        .decode(encoded)
                        .map_err(|e| format!("`{}` sent {src} garbled: {e}", source.from))?
                }
                (None, None) => continue,
            };
            synced.insert(source.key(), synced_entry(&content));
        }
        Ok(if synced.is_empty() {
            Value::Null
        } else {
            Value::Object(synced)
        })
    }

    /// Runs one task on one node as an internal job of its own (in `weft jobs` like
    /// any other work on a node); its result when it was ok, else why not.
    async fn run_internal_task(
        &self,
        node: &str,
        purpose: &str,
        task: Value,
        started: InputJobStarted<'_>,
    ) -> Result<TaskResult, String> {
        let taskbook = json!({
            "apiVersion": "weft/v1",
            "kind": Kind::TaskBook,
            "metadata": {"name": "internal"},
            "spec": {"steps": [{
                "name": purpose,
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
        let planned = self.plan(request).await.map_err(|e| e.to_string())?;
        started(InputJob {
            job_id: planned.job_id().to_string(),
            node: node.to_string(),
            purpose: purpose.to_string(),
        });
        let mut events = self.launch_internal(planned).await;
        let report = tokio::time::timeout(INTERNAL_JOB_TIMEOUT, async {
            while let Some(event) = events.recv().await {
                if let JobEvent::Finished(report) = event {
                    return Some(report);
                }
            }
            None
        })
        .await
        .map_err(|_| format!("no answer within {INTERNAL_JOB_TIMEOUT:?}"))?
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
    }
}
