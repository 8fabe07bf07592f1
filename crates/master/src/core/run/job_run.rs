//! One job while it runs: before the first step, the inputs that run on nodes
//! (computed variables); before each step, what its `sync` tasks carry; then the step
//! rolled out over its nodes, each failed or unreachable node stopping there while the
//! others go on. A step is a barrier across all its nodes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use weft_taskbook::bundle::Bundle;
use weft_taskbook::cluster_vars::NodeCommand;
use weft_taskbook::objects::Kind;
use weft_taskbook::report::{unix_ms_now, RunReport, TaskStatus};
use weft_taskbook::{Step, TaskBook, Vars};

use super::inputs::{vars_by_node, StoredInputs};
use super::plan::StepPlan;
use super::rollout::{over_max_fail, roll_out};
use super::{lock, JobEvent, JobRunner, NodeView, PlannedRun, RunScope};
use crate::core::events::{types, EventCause, NewEvent};
use crate::core::job::{InputJob, JobRecord, JobState, NodeStepState};
use crate::store::Store;

pub(super) struct JobRun<S> {
    pub(super) runner: JobRunner<S>,
    pub(super) job: JobRecord,
    pub(super) report: Mutex<RunReport>,
    /// Registered results per node, carried from step to step.
    pub(super) registered: Mutex<HashMap<String, Vars>>,
    /// What the current step's `sync` tasks carry (`{source: {content, sha256}}`).
    pub(super) synced: Mutex<Value>,
    pub(super) views: BTreeMap<String, NodeView>,
    pub(super) reads_other_nodes: bool,
    pub(super) bundle: Arc<Bundle>,
    pub(super) extra_vars: Arc<Vec<Vars>>,
    pub(super) tags: Arc<Vec<String>>,
    pub(super) skip_tags: Arc<Vec<String>>,
    pub(super) check_mode: bool,
    pub(super) diff: bool,
    /// The master's own run (computing a variable, reading a file for `sync`): its end
    /// is no event, and its results' output is not stored.
    pub(super) internal: bool,
    /// Why the job was cancelled, once it is.
    pub(super) cancelled: Arc<Mutex<Option<String>>>,
    pub(super) stored: StoredInputs,
    /// Each planned node's cluster variables, once resolved before the first step.
    pub(super) vars_by_node: HashMap<String, Arc<Vars>>,
    /// The internal jobs this job's inputs started.
    input_jobs: Mutex<Vec<InputJob>>,
    pub(super) taskbook: TaskBook,
    steps: Vec<StepPlan>,
    node_commands: Vec<NodeCommand>,
    pub(super) events: mpsc::UnboundedSender<JobEvent>,
}

impl<S: Store + Clone> JobRun<S> {
    pub(super) fn new(
        runner: JobRunner<S>,
        planned: PlannedRun,
        cancelled: Arc<Mutex<Option<String>>>,
        events: mpsc::UnboundedSender<JobEvent>,
    ) -> Self {
        let PlannedRun {
            request,
            taskbook,
            views,
            plan,
            stored,
            job,
        } = planned;
        JobRun {
            runner,
            report: Mutex::new(new_report(&job)),
            registered: Mutex::new(HashMap::new()),
            synced: Mutex::new(Value::Null),
            views,
            reads_other_nodes: plan.reads_other_nodes,
            bundle: Arc::new(request.bundle),
            extra_vars: Arc::new(request.extra_vars),
            tags: Arc::new(request.tags),
            skip_tags: Arc::new(request.skip_tags),
            check_mode: request.check_mode,
            diff: request.diff,
            internal: request.scope == RunScope::Internal,
            cancelled,
            stored,
            vars_by_node: HashMap::new(),
            input_jobs: Mutex::new(Vec::new()),
            taskbook,
            steps: plan.steps,
            node_commands: plan.node_commands,
            events,
            job,
        }
    }

    pub(super) async fn run(mut self) {
        let step_count = self.steps.len();
        let mut stopped: HashSet<String> = HashSet::new();
        let mut abort: Option<String> = None;
        let mut inputs_ready = false;
        for index in 0..step_count {
            let step_name = self.job.steps[index].name.clone();
            let nodes: Vec<String> = self.job.steps[index]
                .nodes
                .iter()
                .filter(|node| !stopped.contains(*node))
                .cloned()
                .collect();
            let _ = self.events.send(JobEvent::StepStarted {
                step_index: index,
                step_count,
                step_name: step_name.clone(),
                nodes: nodes.clone(),
            });
            if abort.is_none() {
                abort = self.cancel_reason();
            }
            if abort.is_none() {
                let mut prepared = Ok(());
                if !inputs_ready {
                    prepared = self.resolve_run_inputs().await;
                    inputs_ready = true;
                }
                if prepared.is_ok() {
                    prepared = self.resolve_step_inputs(index).await;
                }
                if let Err(error) = prepared {
                    let message = format!(
                        "step {} (`{step_name}`) could not start: {error}",
                        index + 1
                    );
                    // Each node's result says why, so the run reads as failed.
                    for node in &nodes {
                        self.master_verdict(index, &step_name, node, TaskStatus::Failed, &message);
                    }
                    abort = Some(message);
                }
            }
            if abort.is_some() {
                for node in &nodes {
                    self.skip(index, node);
                }
                continue;
            }
            let step = &self.taskbook.steps[index];
            let rollout = step
                .rollout
                .clone()
                .or_else(|| self.stored.default_rollout.clone())
                .unwrap_or_default();
            let run_once_node = step
                .tasks
                .iter()
                .any(|t| t.run_once)
                .then(|| nodes.first().cloned())
                .flatten();
            let run_once = run_once_node.as_deref();
            let run = &self;
            let outcomes = roll_out(
                &nodes,
                &rollout,
                || run.cancel_reason().is_some(),
                |node| run.skip(index, node),
                |node| {
                    let step_name = &step_name;
                    async move { run.run_node_step(index, step_name, &node, run_once).await }
                },
            )
            .await;

            let failed: Vec<&String> = outcomes
                .iter()
                .filter(|(_, state)| {
                    matches!(state, NodeStepState::Failed | NodeStepState::Unreachable)
                })
                .map(|(node, _)| node)
                .collect();
            stopped.extend(failed.iter().map(|n| n.to_string()));
            if over_max_fail(&rollout, failed.len(), nodes.len()) {
                abort = Some(format!(
                    "step {} (`{step_name}`) failed on {} of {} nodes, over max_fail_percent {}; the rollout stopped",
                    index + 1,
                    failed.len(),
                    nodes.len(),
                    rollout.max_fail_percent.unwrap_or_default()
                ));
            }
            if let Some(source) = &run_once_node {
                self.share_run_once_results(step, source, &nodes);
            }
        }
        self.finish(abort).await;
    }

    /// The master's own one-task run: its one step on its one node, with no inputs.
    pub(super) async fn run_internal(self) {
        let step_name = self.job.steps[0].name.clone();
        let nodes = self.job.steps[0].nodes.clone();
        let _ = self.events.send(JobEvent::StepStarted {
            step_index: 0,
            step_count: 1,
            step_name: step_name.clone(),
            nodes: nodes.clone(),
        });
        for node in &nodes {
            self.run_node_step(0, &step_name, node, None).await;
        }
        self.finish(None).await;
    }

    /// Before the first step: each node's cluster variables, running computed ones.
    async fn resolve_run_inputs(&mut self) -> Result<(), String> {
        let Some(sources) = &self.stored.var_sources else {
            return Ok(());
        };
        let outputs = self
            .runner
            .run_node_commands(&self.node_commands, &|job| self.note_input_job(job))
            .await?;
        self.vars_by_node = vars_by_node(sources, &self.views, &self.steps, &outputs)
            .map_err(|error| error.to_string())?;
        Ok(())
    }

    /// Before step `index`: what its `sync` tasks carry.
    async fn resolve_step_inputs(&self, index: usize) -> Result<(), String> {
        let synced = self
            .runner
            .read_synced(
                &self.steps[index].synced,
                |node, path| self.registered_value(node, path),
                &|job| self.note_input_job(job),
            )
            .await?;
        *lock(&self.synced) = synced;
        Ok(())
    }

    /// Names an internal job in the job's record as soon as it starts.
    fn note_input_job(&self, input: InputJob) {
        let mut input_jobs = lock(&self.input_jobs);
        input_jobs.push(input);
        let record = JobRecord {
            input_jobs: input_jobs.clone(),
            ..self.job.clone()
        };
        self.runner.inner.journal.job(&record);
    }

    async fn finish(mut self, abort: Option<String>) {
        let mut report = std::mem::replace(&mut *lock(&self.report), RunReport::new("", "", false));
        report.finish();
        lock(&self.runner.inner.cancels).remove(&self.job.job_id);
        let cancelled = self.cancel_reason();
        self.job.state = if cancelled.is_some() {
            JobState::Cancelled
        } else if report.failed || abort.is_some() {
            JobState::Failed
        } else {
            JobState::Succeeded
        };
        self.job.finished_unix_ms = Some(unix_ms_now());
        self.job.message = cancelled.or(abort);
        self.job.input_jobs = lock(&self.input_jobs).clone();
        let inner = &self.runner.inner;
        inner.journal.job(&self.job);
        inner.journal.flush().await;
        self.announce_finished().await;
        let _ = self.events.send(JobEvent::Finished(Box::new(report)));
        let retention = self
            .stored
            .job_retention
            .as_ref()
            .unwrap_or(&inner.config.retention);
        if let Err(error) = inner.jobs.sweep(retention, SystemTime::now()).await {
            tracing::warn!(%error, "old jobs could not be swept");
        }
    }

    /// A value `node` registered (or set) earlier in this job, by dotted path; text as
    /// it is, anything else as JSON.
    fn registered_value(&self, node: &str, path: &str) -> Result<Vec<u8>, String> {
        let registered = lock(&self.registered);
        let mut parts = path.split('.');
        let first = parts.next().unwrap_or_default();
        let value = registered
            .get(node)
            .and_then(|vars| vars.get(first))
            .and_then(|value| parts.try_fold(value, |value, part| value.get(part)))
            .ok_or_else(|| {
                format!("`{node}` has registered no `{path}` in an earlier step of this job")
            })?;
        Ok(match value {
            Value::String(text) => text.clone().into_bytes(),
            other => other.to_string().into_bytes(),
        })
    }

    pub(super) fn cancel_reason(&self) -> Option<String> {
        lock(&self.cancelled).clone()
    }

    /// The `job.finished` event, which Triggers can follow. A job a Trigger started
    /// carries it as the cause, so that Trigger does not fire on it again.
    async fn announce_finished(&self) {
        if self.internal {
            return;
        }
        let job = &self.job;
        let mut data = serde_json::Map::new();
        data.insert("job_id".into(), json!(job.job_id));
        data.insert("taskbook".into(), json!(job.taskbook));
        data.insert("state".into(), json!(job.state.as_str()));
        if let Some(origin) = &job.origin {
            data.insert("origin".into(), json!(origin.describe()));
        }
        if !job.commits.is_empty() {
            data.insert("commits".into(), json!(job.commits));
        }
        let mut event = NewEvent::system(types::JOB_FINISHED, data);
        event.cause = job
            .origin
            .as_ref()
            .filter(|origin| origin.kind == Kind::Trigger)
            .map(|origin| EventCause {
                trigger: format!("{}/{}", origin.namespace, origin.name),
                job_id: job.job_id.clone(),
            });
        if let Err(error) = self.runner.inner.events.emit(event).await {
            tracing::warn!(job = %job.job_id, %error, "the job.finished event was not stored");
        }
    }

    /// What a `run_once` task registered on the node that ran it, every other node of
    /// the step sees as its own, as in Ansible.
    fn share_run_once_results(&self, step: &Step, source: &str, nodes: &[String]) {
        let names: Vec<&str> = step
            .tasks
            .iter()
            .filter(|task| task.run_once)
            .filter_map(|task| task.register.as_ref().map(|r| r.value.as_str()))
            .collect();
        let mut registered = lock(&self.registered);
        let shared: Vars = registered
            .get(source)
            .map(|vars| {
                vars.iter()
                    .filter(|(k, _)| names.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for node in nodes.iter().filter(|n| n.as_str() != source) {
            registered
                .entry(node.clone())
                .or_default()
                .extend(shared.clone());
        }
    }
}

fn new_report(job: &JobRecord) -> RunReport {
    let mut report = RunReport::new(&job.taskbook, &job.file, job.check_mode);
    report.job = Some(job.job_id.clone());
    report.started_unix_ms = job.started_unix_ms;
    for node in job.steps.iter().flat_map(|step| &step.nodes) {
        report.add_node(node);
    }
    report
}
