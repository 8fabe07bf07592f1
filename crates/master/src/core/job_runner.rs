//! Runs a TaskBook across the fleet: picks each step's nodes, rolls the step out in
//! batches (`barrier`: a batch ends before the next starts; `window`: a node starts
//! as soon as one finishes), stops at `max_fail_percent`, and records every result as
//! it arrives. A step is a barrier across all its nodes. Nodes that fail or cannot be
//! reached stop there; the others go on.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use base64::Engine;
use futures_util::future::join_all;
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use weft_modules::bundle::{Bundle, REPOS_DIR};
use weft_modules::sync::{synced_entry, SyncSource, SYNCED_VAR};
use weft_taskbook::limits::{human_bytes, MAX_MESSAGE_BYTES};
use weft_taskbook::objects::{AnyObject, JobRetention, NodeGroupSpec};
use weft_taskbook::report::{unix_ms_now, RunReport, TaskResult, TaskStatus};
use weft_taskbook::rollout::plan_batches;
use weft_taskbook::secrets::SecretMask;
use weft_taskbook::selector::NodeSelector;
use weft_taskbook::taskbook::{RepoFiles, Rollout, RolloutMode, TaskBookRef};
use weft_taskbook::{Error, Step, TaskBook, Vars};

use super::cluster_inputs::ClusterInputs;
use super::events::{types, EventCause, EventLog, NewEvent};
use super::git_repositories::{GitMirrors, RepoId, RepoReader, RepoState};
use super::job::{
    check_sequence, new_job_id, step_result_limit, unreachable_result, JobJournal, JobOrigin,
    JobRecord, JobState, JobStepPlan, JobStore, JobStoreError, LateOutcome, LateReport,
    NodeStepRecord, NodeStepState, ReportRefused, SecretsRead, StepAssignment,
};
use super::node_registry::{NodeRecord, NodeRegistry, NodeRegistryError};
use super::objects::{namespace_for, ObjectError, ObjectRegistry, DEFAULT_NAMESPACE};
use super::record::CorruptRecord;
use super::sessions::{NodeSessions, NotConnected, StepEvent};
use crate::store::{Store, StoreError};

/// What `weft run taskbook` asks for.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    pub bundle: Bundle,
    pub check_mode: bool,
    pub diff: bool,
    pub tags: Vec<String>,
    pub skip_tags: Vec<String>,
    pub extra_vars: Vec<Vars>,
    /// Replaces every step's own node selection (`--nodes`).
    pub nodes_override: Option<NodeSelector>,
    pub scope: RunScope,
    /// What asks for the run, when it is not a person.
    pub origin: Option<JobOrigin>,
    /// The commit of each GitRepository the bundle was read from.
    pub commits: BTreeMap<String, String>,
}

/// Which cluster variables and secrets a run reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunScope {
    /// Those of this namespace; `None`: the TaskBook's own (`metadata.namespace`), else
    /// `default`.
    Namespace(Option<String>),
    /// None at all: the master's own runs (computing a variable on a node).
    Internal,
}

impl Default for RunScope {
    fn default() -> Self {
        RunScope::Namespace(None)
    }
}

/// What a job reports while it runs, in order.
#[derive(Debug, Clone)]
pub enum JobEvent {
    Started {
        job_id: String,
        step_count: usize,
    },
    StepStarted {
        step_index: usize,
        step_count: usize,
        step_name: String,
        nodes: Vec<String>,
    },
    Result(Box<TaskResult>),
    NodeStepDone {
        step_index: usize,
        node: String,
        state: NodeStepState,
    },
    Finished(Box<RunReport>),
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Input(Error),
    #[error("{0}")]
    Nodes(#[from] NodeRegistryError),
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Corrupt(#[from] CorruptRecord),
    #[error("the master could not prepare the run: {0}")]
    Scratch(String),
    #[error(transparent)]
    Objects(Box<ObjectError>),
    #[error(transparent)]
    Jobs(#[from] JobStoreError),
}

impl From<super::git_repositories::GitError> for RunError {
    fn from(error: super::git_repositories::GitError) -> Self {
        use super::git_repositories::GitError;
        match error {
            GitError::Store(e) => RunError::Store(e),
            GitError::Corrupt(e) => RunError::Corrupt(e),
            GitError::Objects(e) => RunError::Objects(Box::new(e)),
            not_found @ GitError::NotFound { .. } => {
                RunError::Input(Error::new(not_found.to_string()))
            }
        }
    }
}

/// A run checked and planned, not started yet.
pub struct PlannedRun {
    request: RunRequest,
    taskbook: TaskBook,
    views: BTreeMap<String, NodeView>,
    inputs: ClusterInputs,
    job: JobRecord,
}

impl PlannedRun {
    pub fn job_id(&self) -> &str {
        &self.job.job_id
    }
}

pub struct RunnerConfig {
    /// Private scratch space where bundles are unpacked to be read.
    pub scratch_dir: PathBuf,
    pub retention: JobRetention,
}

#[derive(Clone)]
pub struct JobRunner<S> {
    pub(super) inner: Arc<Inner<S>>,
}

pub(super) struct Inner<S> {
    pub(super) objects: ObjectRegistry<S>,
    sessions: Arc<NodeSessions>,
    pub(super) nodes: NodeRegistry<S>,
    jobs: JobStore<S>,
    events: EventLog<S>,
    /// Running jobs' cancel flags, and why they were cancelled.
    cancels: Mutex<HashMap<String, Arc<Mutex<Option<String>>>>>,
    journal: JobJournal,
    config: RunnerConfig,
    repos: RepoReader<S>,
}

/// A node as the run sees it when it starts.
pub(super) struct NodeView {
    pub(super) record: NodeRecord,
    pub(super) facts: Value,
}

impl<S: Store + Clone> JobRunner<S> {
    pub fn new(
        store: S,
        objects: ObjectRegistry<S>,
        sessions: Arc<NodeSessions>,
        events: EventLog<S>,
        config: RunnerConfig,
        mirrors: Arc<dyn GitMirrors>,
    ) -> Self {
        JobRunner {
            inner: Arc::new(Inner {
                repos: RepoReader::new(store.clone(), objects.clone(), mirrors),
                objects,
                events,
                cancels: Mutex::default(),
                nodes: NodeRegistry::new(store.clone()),
                jobs: JobStore::new(store.clone()),
                journal: JobJournal::start(store),
                sessions,
                config,
            }),
        }
    }

    pub fn jobs(&self) -> &JobStore<S> {
        &self.inner.jobs
    }

    /// Keeps a report that arrived after its job stopped waiting for it, masked with
    /// the Secrets the job read, as a live report is.
    pub async fn record_late(
        &self,
        job_id: &str,
        node: &str,
        step_index: u32,
        late: LateReport,
        now_ms: u64,
    ) -> Result<LateOutcome, RunError> {
        let late = match late {
            LateReport::Result { sequence, result } => {
                let mask = self.secret_mask_of(job_id).await?;
                LateReport::Result {
                    sequence,
                    result: Box::new(mask.mask_result(*result)),
                }
            }
            done => done,
        };
        Ok(self
            .inner
            .jobs
            .record_late(job_id, node, step_index, late, now_ms)
            .await?)
    }

    /// The mask of the Secrets job `job_id` read, as they are now.
    async fn secret_mask_of(&self, job_id: &str) -> Result<SecretMask, RunError> {
        let read = match self.inner.jobs.get(job_id).await {
            Ok(job) => job.secrets_read,
            Err(JobStoreError::NotFound(_)) => None,
            Err(error) => return Err(error.into()),
        };
        let Some(read) = read else {
            return Ok(SecretMask::default());
        };
        let opened = self
            .inner
            .objects
            .open_secrets(&read.namespace, &read.names)
            .await
            .map_err(|e| RunError::Objects(Box::new(e)))?;
        Ok(SecretMask::new(&opened))
    }

    pub fn repos(&self) -> &RepoReader<S> {
        &self.inner.repos
    }

    /// Stops a running job from starting any more nodes or steps; steps already on a
    /// node finish there. `false` when this master runs no such job.
    pub fn cancel(&self, job_id: &str, reason: &str) -> bool {
        let flag = lock(&self.inner.cancels).get(job_id).cloned();
        match flag {
            Some(flag) => {
                *lock(&flag) = Some(reason.to_string());
                true
            }
            None => false,
        }
    }

    /// Checks the request, plans which nodes run which step, records the job and
    /// starts it. `Err` means nothing started and nothing was recorded. The job runs on
    /// whether or not anyone reads its events.
    pub async fn start(
        &self,
        request: RunRequest,
    ) -> Result<mpsc::UnboundedReceiver<JobEvent>, RunError> {
        let planned = self.plan(request).await?;
        Ok(self.launch(planned).await)
    }

    /// The bundle of a TaskBook named by another object, and the commits it was read
    /// from: a stored TaskBook (`{name}`, in `namespace`), or a file of a
    /// GitRepository of `namespace` at its last fetched commit (`{repo, path}`).
    /// Repository includes are read when the run starts.
    pub async fn bundle_for(
        &self,
        taskbook: &TaskBookRef,
        namespace: &str,
    ) -> Result<(Bundle, BTreeMap<String, String>), RunError> {
        match (&taskbook.name, &taskbook.repo, &taskbook.path) {
            (Some(name), None, None) => Ok((self.stored_bundle(name, namespace).await?, BTreeMap::new())),
            (None, Some(repo), Some(path)) => {
                let id = RepoId {
                    namespace: namespace.to_string(),
                    name: repo.clone(),
                };
                let states = self.inner.repos.states(namespace).await?;
                let commit = fetched_commit(&states, repo, namespace).map_err(RunError::Input)?;
                let bundle = self.inner.repos.bundle_at(&id, &commit, path).await?;
                Ok((bundle, [(repo.clone(), commit)].into()))
            }
            _ => Err(RunError::Input(Error::new(
                "a TaskBook is named either by `name` (a stored TaskBook) or by `repo` and `path` (a file in a GitRepository)",
            ))),
        }
    }

    /// A stored TaskBook as a bundle of one file, the document as it was applied.
    async fn stored_bundle(&self, name: &str, namespace: &str) -> Result<Bundle, RunError> {
        let namespace = namespace_for("TaskBook", Some(namespace));
        let stored = self
            .inner
            .objects
            .get("TaskBook", namespace.as_deref(), name)
            .await
            .map_err(|e| RunError::Objects(Box::new(e)))?
            .ok_or_else(|| {
                RunError::Objects(Box::new(ObjectError::NotFound {
                    kind: "TaskBook".into(),
                    namespace: namespace.clone(),
                    name: name.into(),
                }))
            })?;
        let file = format!("{name}.yml");
        Ok(Bundle {
            files: [(file.clone(), stored.record.document.into_bytes().into())].into(),
            taskbook_file: file,
        })
    }

    /// Everything `start` checks, with nothing started or recorded: a caller with several
    /// runs to start together starts none when one of them is refused.
    pub async fn plan(&self, mut request: RunRequest) -> Result<PlannedRun, RunError> {
        request.bundle.validate().map_err(RunError::Input)?;
        let repo_namespace = match &request.scope {
            RunScope::Namespace(Some(namespace)) => namespace.clone(),
            _ => top_namespace(&request.bundle),
        };
        let taskbook = self.load(&mut request, &repo_namespace).await?;
        let views = self.node_views().await?;
        let mut step_plans = Vec::new();
        for (index, step) in taskbook.steps.iter().enumerate() {
            let selector = request.nodes_override.as_ref().unwrap_or(&step.nodes);
            let nodes = self.select(selector, &views, step, index).await?;
            step_plans.push(JobStepPlan {
                name: step.display_name(index),
                nodes,
                max_results: step_result_limit(step),
            });
        }
        let (inputs, secrets_read) = match &request.scope {
            RunScope::Namespace(namespace) => {
                let namespace = namespace
                    .clone()
                    .or_else(|| taskbook.metadata.namespace.clone())
                    .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
                let inputs = self
                    .cluster_inputs(&namespace, &taskbook, &request.bundle, &step_plans, &views)
                    .await?;
                let secrets_read = (!inputs.secret_names.is_empty()).then(|| SecretsRead {
                    namespace,
                    names: inputs.secret_names.clone(),
                });
                (inputs, secrets_read)
            }
            RunScope::Internal => (ClusterInputs::default(), None),
        };
        let now = SystemTime::now();
        let job = JobRecord {
            job_id: new_job_id(now),
            taskbook: taskbook.metadata.name.clone(),
            file: request.bundle.taskbook_file.clone(),
            check_mode: request.check_mode,
            state: JobState::Running,
            started_unix_ms: unix_ms_now(),
            finished_unix_ms: None,
            steps: step_plans,
            message: None,
            origin: request.origin.clone(),
            commits: request.commits.clone(),
            secrets_read,
        };
        Ok(PlannedRun {
            request,
            taskbook,
            views,
            inputs,
            job,
        })
    }

    /// Records a planned job and starts it.
    pub async fn launch(&self, planned: PlannedRun) -> mpsc::UnboundedReceiver<JobEvent> {
        let PlannedRun {
            request,
            taskbook,
            views,
            inputs,
            job,
        } = planned;
        // Written before anything runs, so a crash from here on leaves a job to interrupt.
        self.inner.journal.job(&job);
        self.inner.journal.flush().await;

        let (events, receiver) = mpsc::unbounded_channel();
        let _ = events.send(JobEvent::Started {
            job_id: job.job_id.clone(),
            step_count: job.steps.len(),
        });
        let reads_other_nodes =
            reads_other_nodes(request.bundle.taskbook_source().unwrap_or_default());
        let run = JobRun {
            inner: self.inner.clone(),
            report: Mutex::new(new_report(&job)),
            registered: Mutex::new(HashMap::new()),
            synced: Mutex::new(Value::Null),
            views,
            reads_other_nodes,
            bundle: Arc::new(request.bundle),
            extra_vars: Arc::new(request.extra_vars),
            tags: Arc::new(request.tags),
            skip_tags: Arc::new(request.skip_tags),
            check_mode: request.check_mode,
            diff: request.diff,
            internal: request.scope == RunScope::Internal,
            cancelled: lock(&self.inner.cancels)
                .entry(job.job_id.clone())
                .or_default()
                .clone(),
            inputs,
            events,
            job,
        };
        tokio::spawn(run.run(taskbook));
        receiver
    }

    /// Reads the request's TaskBook. Repository includes read the GitRepositories of
    /// `namespace` at their last fetched commit (or the commit the request names); the
    /// files read join the bundle, so the nodes read the same, and their commits join
    /// the request's.
    async fn load(&self, request: &mut RunRequest, namespace: &str) -> Result<TaskBook, RunError> {
        if let Some(repo) = request
            .bundle
            .repos()
            .into_iter()
            .find(|repo| !request.commits.contains_key(*repo))
        {
            return Err(RunError::Input(Error::new(format!(
                "the bundle carries files under `{REPOS_DIR}/{repo}/` without the commit they are from; that folder is the master's"
            ))));
        }
        let states = self.inner.repos.states(namespace).await?;
        let scratch = self.inner.config.scratch_dir.clone();
        let bundle = request.bundle.clone();
        let mut repos = MasterRepos {
            namespace: namespace.to_string(),
            states,
            read: request.commits.clone(),
            added: BTreeMap::new(),
            mirrors: self.inner.repos.mirrors(),
            dir: PathBuf::new(),
        };
        let (taskbook, repos, read) = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&scratch)
                .map_err(|e| RunError::Scratch(format!("{}: {e}", scratch.display())))?;
            let dir = tempfile::tempdir_in(&scratch)
                .map_err(|e| RunError::Scratch(format!("{}: {e}", scratch.display())))?;
            repos.dir = dir.path().join(REPOS_DIR);
            let taskbook = bundle
                .load_taskbook_with(dir.path(), &mut repos)
                .map_err(RunError::Input)?;
            let mut read = bundle;
            read.files.extend(std::mem::take(&mut repos.added));
            read.retain_read_by(&taskbook, dir.path())
                .map_err(RunError::Input)?;
            Ok::<_, RunError>((taskbook, repos, read))
        })
        .await
        .map_err(|e| RunError::Scratch(e.to_string()))??;
        request.bundle = read;
        request.commits = repos.read;
        request.bundle.validate().map_err(RunError::Input)?;
        Ok(taskbook)
    }

    async fn node_views(&self) -> Result<BTreeMap<String, NodeView>, RunError> {
        let mut facts = self.inner.nodes.all_facts().await?;
        Ok(self
            .inner
            .nodes
            .list()
            .await?
            .into_iter()
            .map(|record| {
                let facts = facts
                    .remove(&record.node_name)
                    .map_or(Value::Null, |f| f.facts);
                (record.node_name.clone(), NodeView { record, facts })
            })
            .collect())
    }

    async fn select(
        &self,
        selector: &NodeSelector,
        views: &BTreeMap<String, NodeView>,
        step: &Step,
        index: usize,
    ) -> Result<Vec<String>, RunError> {
        let refuse = |problem: String, hint: &str| {
            RunError::Input(
                Error::new(format!(
                    "step {} (`{}`) {problem}",
                    index + 1,
                    step.display_name(index)
                ))
                .in_file(&step.file)
                .with_hint(hint),
            )
        };
        let group: Option<NodeGroupSpec> = match &selector.group {
            None => None,
            Some(group) => {
                let spec = self
                    .inner
                    .objects
                    .node_group(group)
                    .await
                    .map_err(|e| RunError::Objects(Box::new(e)))?;
                let Some(spec) = spec else {
                    return Err(refuse(
                        format!("selects NodeGroup `{group}`, which does not exist"),
                        "select nodes by `names`, `selector` or `facts`, or create the group with `weft apply`",
                    ));
                };
                Some(spec)
            }
        };
        if let Some(unknown) = selector
            .names
            .iter()
            .find(|name| !views.contains_key(*name))
        {
            return Err(refuse(
                format!("names node `{unknown}`, which has not joined"),
                "`weft nodes` lists the nodes",
            ));
        }
        Ok(views
            .values()
            .filter(|view| {
                selector.selects(
                    &view.record.node_name,
                    &view.record.labels,
                    &view.facts,
                    group.as_ref(),
                )
            })
            .map(|view| view.record.node_name.clone())
            .collect())
    }
}

/// Whether the TaskBook reads `nodes[...]` / `nodes.x`; only then does every node get
/// every other node's facts and results, which is large on a big fleet.
fn reads_other_nodes(source: &str) -> bool {
    let bytes = source.as_bytes();
    source.match_indices("nodes").any(|(at, _)| {
        let before_ok =
            at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
        let after = source[at + 5..].trim_start();
        before_ok && (after.starts_with('[') || after.starts_with('.'))
    })
}

/// What a node's step may take beyond its tasks' own `timeout`s when no Config sets
/// `step_timeout`.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(3600);

/// What a node's step runs with besides the step itself.
#[derive(Clone, Copy)]
struct NodeStepOptions<'a> {
    /// The node `run_once` tasks run on.
    run_once_node: Option<&'a str>,
    /// How long the master waits for the node to end the step.
    deadline: Duration,
}

/// How long the master waits for a node to end `step`: what its tasks say they may
/// take (every attempt of every task and handler at its `timeout`, with the `delay`s
/// between attempts), plus the Config's `step_timeout` for all they do not bound: tasks
/// with no `timeout` or with a `loop` (whose items are known only when it runs),
/// unpacking, reporting, waiting behind another job's step on the node. A node that
/// heartbeats but never ends its step is given up at the deadline, like one that cannot
/// be reached, so no job (and no `concurrency: forbid` CronJob) waits forever.
fn step_deadline(step: &Step, step_timeout: Option<Duration>) -> Duration {
    step.tasks
        .iter()
        .chain(&step.handlers)
        .filter(|task| task.loop_items.is_none())
        .filter_map(|task| {
            let timeout = task.timeout?.0;
            Some(
                timeout
                    .saturating_mul(task.retries.saturating_add(1))
                    .saturating_add(task.delay.0.saturating_mul(task.retries)),
            )
        })
        .fold(
            step_timeout.unwrap_or(DEFAULT_STEP_TIMEOUT),
            Duration::saturating_add,
        )
}

/// Whether `failed` of a step's `total` nodes is more than the rollout allows.
fn over_max_fail(rollout: &Rollout, failed: usize, total: usize) -> bool {
    rollout
        .max_fail_percent
        .is_some_and(|max| failed as f64 * 100.0 / total.max(1) as f64 > max)
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

/// One job while it runs.
struct JobRun<S> {
    inner: Arc<Inner<S>>,
    job: JobRecord,
    report: Mutex<RunReport>,
    /// Registered results per node, carried from step to step.
    registered: Mutex<HashMap<String, Vars>>,
    /// What the current step's `sync` tasks carry (`{source: {content, sha256}}`).
    synced: Mutex<Value>,
    views: BTreeMap<String, NodeView>,
    reads_other_nodes: bool,
    bundle: Arc<Bundle>,
    extra_vars: Arc<Vec<Vars>>,
    tags: Arc<Vec<String>>,
    skip_tags: Arc<Vec<String>>,
    check_mode: bool,
    diff: bool,
    /// The master's own run (computing a variable, reading a file for `sync`): its end
    /// is no event, and its results' output is not stored.
    internal: bool,
    /// Why the job was cancelled, once it is.
    cancelled: Arc<Mutex<Option<String>>>,
    inputs: ClusterInputs,
    events: mpsc::UnboundedSender<JobEvent>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<S: Store + Clone> JobRun<S> {
    async fn run(mut self, taskbook: TaskBook) {
        let step_count = taskbook.steps.len();
        let mut stopped: HashSet<String> = HashSet::new();
        let mut abort: Option<String> = None;
        for (index, step) in taskbook.steps.iter().enumerate() {
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
                match self.synced_for(step).await {
                    Ok(synced) => *lock(&self.synced) = synced,
                    Err(error) => {
                        let message = format!(
                            "step {} (`{step_name}`) could not start: {error}",
                            index + 1
                        );
                        // Each node's result says why, so the run reads as failed.
                        for node in &nodes {
                            let mut result = unreachable_result(
                                node,
                                &step_name,
                                &self.job.file,
                                &message,
                                unix_ms_now(),
                            );
                            result.status = TaskStatus::Failed;
                            self.record(index, u32::MAX / 2, result);
                        }
                        abort = Some(message);
                    }
                }
            }
            if abort.is_some() {
                for node in &nodes {
                    self.skip(index, node);
                }
                continue;
            }
            let rollout = step
                .rollout
                .clone()
                .or_else(|| self.inputs.default_rollout.clone())
                .unwrap_or_default();
            let run_once_node = step
                .tasks
                .iter()
                .any(|t| t.run_once)
                .then(|| nodes.first().cloned())
                .flatten();
            let deadline = step_deadline(step, self.inputs.step_timeout);
            let outcomes = self
                .roll_out(
                    index,
                    &step_name,
                    &nodes,
                    &rollout,
                    NodeStepOptions {
                        run_once_node: run_once_node.as_deref(),
                        deadline,
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

        let mut report = std::mem::replace(&mut *lock(&self.report), RunReport::new("", "", false));
        report.finish();
        lock(&self.inner.cancels).remove(&self.job.job_id);
        let cancelled = self.cancel_reason();
        self.job.state = if cancelled.is_some() {
            JobState::Cancelled
        } else if report.failed || abort.is_some() {
            JobState::Failed
        } else {
            JobState::Succeeded
        };
        let abort = cancelled.or(abort);
        self.job.finished_unix_ms = Some(unix_ms_now());
        self.job.message = abort;
        self.inner.journal.job(&self.job);
        self.inner.journal.flush().await;
        self.announce_finished().await;
        let _ = self.events.send(JobEvent::Finished(Box::new(report)));
        let retention = self
            .inputs
            .job_retention
            .as_ref()
            .unwrap_or(&self.inner.config.retention);
        if let Err(error) = self.inner.jobs.sweep(retention, SystemTime::now()).await {
            tracing::warn!(%error, "old jobs could not be swept");
        }
    }

    /// Reads what the step's `sync` tasks carry before the step starts: a value the
    /// source node registered earlier in this job, or a file it holds (read there with
    /// `slurp`, as an internal job). `Null` for a step without `sync`.
    async fn synced_for(&self, step: &Step) -> Result<Value, String> {
        let mut synced = serde_json::Map::new();
        let sources = step
            .tasks
            .iter()
            .chain(&step.handlers)
            .filter(|task| task.module.value == "sync")
            .filter_map(|task| SyncSource::of(&task.args));
        for source in sources {
            let key = source.key();
            if synced.contains_key(&key) {
                continue;
            }
            let content = match (&source.src, &source.var) {
                (_, Some(var)) => self.registered_value(&source.from, var)?,
                (Some(src), None) => {
                    let runner = JobRunner {
                        inner: self.inner.clone(),
                    };
                    let task = json!({"name": "read for sync", "slurp": {"src": src}});
                    let step_name = format!("read {src} for sync");
                    let result = runner
                        .run_internal_task(&source.from, &step_name, task)
                        .await
                        .map_err(|e| format!("cannot read {src} on `{}`: {e}", source.from))?;
                    let encoded = result.output["content"].as_str().unwrap_or_default();
                    base64::engine::general_purpose::STANDARD
                        .decode(encoded)
                        .map_err(|e| format!("`{}` sent {src} garbled: {e}", source.from))?
                }
                (None, None) => continue,
            };
            synced.insert(key, synced_entry(&content));
        }
        Ok(if synced.is_empty() {
            Value::Null
        } else {
            Value::Object(synced)
        })
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

    fn cancel_reason(&self) -> Option<String> {
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
            .filter(|origin| origin.kind == "Trigger")
            .map(|origin| EventCause {
                trigger: format!("{}/{}", origin.namespace, origin.name),
                job_id: job.job_id.clone(),
            });
        if let Err(error) = self.inner.events.emit(event).await {
            tracing::warn!(job = %job.job_id, %error, "the job.finished event was not stored");
        }
    }

    /// Returns each node's final state for the step.
    async fn roll_out(
        &self,
        index: usize,
        step_name: &str,
        nodes: &[String],
        rollout: &Rollout,
        options: NodeStepOptions<'_>,
    ) -> Vec<(String, NodeStepState)> {
        let sizes = plan_batches(nodes.len(), &rollout.batch);
        let pause = rollout.pause.map(|p| p.0).unwrap_or(Duration::ZERO);
        let failed = std::sync::atomic::AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let run_node = |node: String| {
            let failed = &failed;
            let stop = &stop;
            async move {
                if stop.load(Ordering::SeqCst) || self.cancel_reason().is_some() {
                    self.skip(index, &node);
                    return (node, NodeStepState::Skipped);
                }
                let state = self.run_node_step(index, step_name, &node, options).await;
                if matches!(state, NodeStepState::Failed | NodeStepState::Unreachable)
                    && over_max_fail(
                        rollout,
                        failed.fetch_add(1, Ordering::SeqCst) + 1,
                        nodes.len(),
                    )
                {
                    stop.store(true, Ordering::SeqCst);
                }
                (node, state)
            }
        };
        match rollout.mode {
            RolloutMode::Barrier => {
                let mut outcomes = Vec::new();
                let mut rest = nodes;
                for (batch_index, size) in sizes.iter().enumerate() {
                    let (batch, later) = rest.split_at(*size);
                    rest = later;
                    if batch_index > 0 && !pause.is_zero() && !stop.load(Ordering::SeqCst) {
                        tokio::time::sleep(pause).await;
                    }
                    outcomes.extend(join_all(batch.iter().cloned().map(run_node)).await);
                }
                outcomes
            }
            RolloutMode::Window => {
                // The window is the ramp's first size until that many nodes have
                // finished, then its second size, and so on: a ramp [1, 10] is a canary
                // that must finish before ten go at once.
                let width_after: Vec<usize> = sizes
                    .iter()
                    .flat_map(|size| std::iter::repeat_n(*size, *size))
                    .collect();
                let mut running = FuturesUnordered::new();
                let mut outcomes = Vec::new();
                for (position, node) in nodes.iter().enumerate() {
                    while running.len() >= width_after[outcomes.len().min(width_after.len() - 1)] {
                        outcomes.extend(running.next().await);
                    }
                    if position >= sizes[0] && !pause.is_zero() && !stop.load(Ordering::SeqCst) {
                        // Keep taking results while the pause runs.
                        let pause = tokio::time::sleep(pause);
                        tokio::pin!(pause);
                        loop {
                            tokio::select! {
                                _ = &mut pause => break,
                                Some(outcome) = running.next(), if !running.is_empty() => outcomes.push(outcome),
                            }
                        }
                    }
                    running.push(run_node(node.clone()));
                }
                while let Some(outcome) = running.next().await {
                    outcomes.push(outcome);
                }
                outcomes
            }
        }
    }

    async fn run_node_step(
        &self,
        index: usize,
        step_name: &str,
        node: &str,
        NodeStepOptions {
            run_once_node,
            deadline,
        }: NodeStepOptions<'_>,
    ) -> NodeStepState {
        let job_id = &self.job.job_id;
        let mut record = NodeStepRecord {
            node: node.to_string(),
            step_index: index as u32,
            state: NodeStepState::Running,
            dispatched_unix_ms: unix_ms_now(),
            finished_unix_ms: None,
            note: None,
        };
        self.inner.journal.node_step(job_id, &record);
        let assignment = Arc::new(StepAssignment {
            job_id: job_id.clone(),
            step_index: index as u32,
            bundle: self.bundle.clone(),
            cluster_vars: self
                .inputs
                .vars_by_node
                .get(node)
                .cloned()
                .unwrap_or_default(),
            secrets: self
                .inputs
                .secrets_by_step
                .get(index)
                .cloned()
                .unwrap_or_default(),
            extra_vars: self.extra_vars.clone(),
            context: self.context_for(node),
            registered: lock(&self.registered)
                .get(node)
                .cloned()
                .unwrap_or_default(),
            check_mode: self.check_mode,
            diff: self.diff,
            tags: self.tags.clone(),
            skip_tags: self.skip_tags.clone(),
            run_once_node: run_once_node.map(str::to_string),
        });
        let message_bytes = assignment.message_bytes();
        let dispatched = if message_bytes > MAX_MESSAGE_BYTES {
            Err(StepRefused::TooLarge(message_bytes))
        } else {
            self.inner
                .sessions
                .dispatch(node, assignment)
                .map_err(StepRefused::NotConnected)
        };
        let state = match dispatched {
            Err(StepRefused::TooLarge(bytes)) => {
                let reason = format!(
                    "this step would send {node} {}, more than the {} a node accepts (the files {}; the rest is variables, secrets, registered results and, when the TaskBook reads `nodes`, every node's facts); it was not sent",
                    human_bytes(bytes),
                    human_bytes(MAX_MESSAGE_BYTES),
                    human_bytes(self.bundle.files.values().map(|c| c.len()).sum()),
                );
                self.master_verdict(index, step_name, node, TaskStatus::Failed, &reason);
                NodeStepState::Failed
            }
            Err(StepRefused::NotConnected(error)) => {
                self.unreachable(
                    index,
                    step_name,
                    node,
                    &format!("{error}; it was not sent this step"),
                );
                NodeStepState::Unreachable
            }
            Ok(events) => {
                self.follow_step(index, step_name, node, events, deadline)
                    .await
            }
        };
        record.state = state;
        record.finished_unix_ms = Some(unix_ms_now());
        self.inner.journal.node_step(job_id, &record);
        let _ = self.events.send(JobEvent::NodeStepDone {
            step_index: index,
            node: node.to_string(),
            state,
        });
        state
    }

    /// Reads a node's reports on a step until it ends it, its session ends or the
    /// deadline passes. A result is taken once per sequence, within the step's limit;
    /// the first refusal is logged, the rest counted.
    async fn follow_step(
        &self,
        index: usize,
        step_name: &str,
        node: &str,
        mut events: mpsc::UnboundedReceiver<StepEvent>,
        deadline: Duration,
    ) -> NodeStepState {
        let job_id = &self.job.job_id;
        let max_results = self.job.steps[index].max_results;
        let mut reported = HashSet::new();
        let mut refusals = 0u64;
        let ends_at = tokio::time::Instant::now() + deadline;
        let state = loop {
            let Ok(event) = tokio::time::timeout_at(ends_at, events.recv()).await else {
                // The node may be alive and heartbeating: only its step is over.
                self.inner.sessions.abandon_step(node, job_id, index as u32);
                self.unreachable(
                    index,
                    step_name,
                    node,
                    &format!(
                        "no result within the step's deadline of {}; the job went on without this node (see `step_timeout` in the Config)",
                        humantime::format_duration(deadline)
                    ),
                );
                break NodeStepState::Unreachable;
            };
            match event {
                Some(StepEvent::Result {
                    sequence,
                    mut result,
                }) => {
                    let checked = check_sequence(sequence, max_results).and_then(|()| {
                        reported
                            .insert(sequence)
                            .then_some(())
                            .ok_or(ReportRefused::Repeated(sequence))
                    });
                    if let Err(refused) = checked {
                        if refusals == 0 {
                            tracing::warn!(%node, job = %job_id, step = index + 1, %refused, "a task result was refused");
                        }
                        refusals += 1;
                        continue;
                    }
                    // A node reports for itself only.
                    result.node = node.to_string();
                    result.step = step_name.to_string();
                    self.record(index, sequence, *result);
                }
                Some(StepEvent::Done {
                    failed,
                    mut registered,
                }) => {
                    registered
                        .values_mut()
                        .for_each(|value| self.inputs.secret_mask.mask_value(value));
                    lock(&self.registered).insert(node.to_string(), registered);
                    break if failed {
                        NodeStepState::Failed
                    } else {
                        NodeStepState::Ok
                    };
                }
                Some(StepEvent::Lost(reason)) => {
                    self.unreachable(index, step_name, node, &reason);
                    break NodeStepState::Unreachable;
                }
                None => {
                    self.unreachable(index, step_name, node, "the node's session ended");
                    break NodeStepState::Unreachable;
                }
            }
        };
        if refusals > 1 {
            tracing::warn!(%node, job = %job_id, step = index + 1, refusals, "task results were refused on this step");
        }
        state
    }

    fn record(&self, index: usize, sequence: u32, result: TaskResult) {
        // Nodes mask what they send; this holds even for one that did not.
        let result = self.inputs.secret_mask.mask_result(result);
        // What the master read for itself (a file for `sync`, say) may be anything, a
        // private key included: the job keeps it in memory only.
        let stored = match self.internal {
            true => &TaskResult {
                output: Value::Null,
                ..result.clone()
            },
            false => &result,
        };
        self.inner
            .journal
            .result(&self.job.job_id, index as u32, sequence, stored);
        lock(&self.report).record(result.clone());
        let _ = self.events.send(JobEvent::Result(Box::new(result)));
    }

    fn unreachable(&self, index: usize, step_name: &str, node: &str, reason: &str) {
        self.master_verdict(index, step_name, node, TaskStatus::Unreachable, reason);
    }

    /// A result the master records for a node it could not hand the step to.
    fn master_verdict(
        &self,
        index: usize,
        step_name: &str,
        node: &str,
        status: TaskStatus,
        reason: &str,
    ) {
        let mut result = unreachable_result(node, step_name, &self.job.file, reason, unix_ms_now());
        result.status = status;
        // Past any sequence a node uses, so a late report never overwrites it.
        self.record(index, u32::MAX / 2, result);
    }

    fn skip(&self, index: usize, node: &str) {
        let now = unix_ms_now();
        let record = NodeStepRecord {
            node: node.to_string(),
            step_index: index as u32,
            state: NodeStepState::Skipped,
            dispatched_unix_ms: now,
            finished_unix_ms: Some(now),
            note: Some("not started: the rollout stopped".to_string()),
        };
        self.inner.journal.node_step(&self.job.job_id, &record);
        let _ = self.events.send(JobEvent::NodeStepDone {
            step_index: index,
            node: node.to_string(),
            state: NodeStepState::Skipped,
        });
    }

    /// `node` and, when the TaskBook reads them, `nodes`.
    fn context_for(&self, node: &str) -> Value {
        let describe = |view: &NodeView| {
            json!({
                "name": view.record.node_name,
                "labels": view.record.labels,
                "vpn_ip": view.record.node_vpn_ip,
            })
        };
        let mut context = json!({"node": self.views.get(node).map(describe)});
        let synced = lock(&self.synced).clone();
        if !synced.is_null() {
            context[SYNCED_VAR] = synced;
        }
        if self.reads_other_nodes {
            let registered = lock(&self.registered);
            let nodes: serde_json::Map<String, Value> = self
                .views
                .iter()
                .map(|(name, view)| {
                    let mut entry = describe(view);
                    entry["facts"] = view.facts.clone();
                    entry["register"] =
                        Value::Object(registered.get(name).cloned().unwrap_or_default());
                    (name.clone(), entry)
                })
                .collect();
            context["nodes"] = Value::Object(nodes);
        }
        context
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

/// Why a step did not reach its node.
enum StepRefused {
    /// Its message would pass the bound a node reads (bytes).
    TooLarge(usize),
    NotConnected(NotConnected),
}

/// The namespace a TaskBook names for itself, else `default`; a file that does not parse
/// is reported when it is loaded.
fn top_namespace(bundle: &Bundle) -> String {
    bundle
        .taskbook_source()
        .ok()
        .and_then(|source| {
            weft_taskbook::objects::parse_objects(
                source,
                std::path::Path::new(&bundle.taskbook_file),
            )
            .ok()
        })
        .and_then(|objects| {
            objects
                .into_iter()
                .find_map(|sourced| match sourced.object {
                    AnyObject::TaskBook(taskbook) => taskbook.metadata.namespace,
                    _ => None,
                })
        })
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
}

/// The last fetched commit of `repo`, or why there is none.
fn fetched_commit(
    states: &BTreeMap<String, RepoState>,
    repo: &str,
    namespace: &str,
) -> Result<String, Error> {
    match states.get(repo) {
        Some(RepoState::Fetched(commit)) => Ok(commit.clone()),
        Some(RepoState::NeverFetched { last_error }) => Err(Error::new(format!(
            "the GitRepository `{repo}` has not been fetched yet{}",
            last_error
                .as_ref()
                .map(|e| format!(" (the last fetch failed: {e})"))
                .unwrap_or_default()
        ))
        .with_hint(format!(
            "`weft get gitrepositories {repo} -n {namespace}` shows its status"
        ))),
        None => Err(Error::new(format!(
            "no GitRepository `{repo}` in namespace `{namespace}`"
        ))
        .with_hint(format!(
            "`weft get gitrepositories -n {namespace}` lists them; a run reads the repositories of its own namespace"
        ))),
    }
}

/// Repository includes as the master reads them: each repository once per run, at the
/// commit the run already read it at, else at its last fetched commit.
struct MasterRepos {
    namespace: String,
    states: BTreeMap<String, RepoState>,
    /// Commit by repository, of those read so far.
    read: BTreeMap<String, String>,
    /// The files of repositories read from their mirrors, by bundle path.
    added: BTreeMap<String, bytes::Bytes>,
    mirrors: Arc<dyn GitMirrors>,
    /// Where the bundle's repositories are written out.
    dir: PathBuf,
}

impl RepoFiles for MasterRepos {
    fn repo_dir(&mut self, repo: &str) -> Result<Option<PathBuf>, Error> {
        let dir = self.dir.join(repo);
        if self.read.contains_key(repo) {
            return Ok(Some(dir));
        }
        let commit = fetched_commit(&self.states, repo, &self.namespace)?;
        let id = RepoId {
            namespace: self.namespace.clone(),
            name: repo.to_string(),
        };
        let files = self
            .mirrors
            .read_commit(&id, &commit)
            .map_err(|e| Error::new(format!("the GitRepository `{repo}` cannot be read: {e}")))?;
        for (path, content) in files {
            let target = dir.join(&path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    Error::new(format!("cannot create the folder: {e}")).in_file(parent)
                })?;
            }
            std::fs::write(&target, &content)
                .map_err(|e| Error::new(format!("cannot write the file: {e}")).in_file(&target))?;
            self.added.insert(Bundle::repo_path(repo, &path), content);
        }
        self.read.insert(repo.to_string(), commit);
        Ok(Some(dir))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use weft_taskbook::report::TaskStatus;

    use crate::core::secret_box::SecretBox;
    use crate::core::sessions::ToNode;
    use crate::store::SqliteStore;

    #[test]
    fn other_nodes_are_sent_only_to_taskbooks_that_read_them() {
        assert!(reads_other_nodes(
            r#"msg: "{{ nodes["db-1"].register.out }}""#
        ));
        assert!(reads_other_nodes(
            "when: nodes.db.facts.os.family == 'debian'"
        ));
        assert!(!reads_other_nodes("nodes: {all: true}"));
        assert!(!reads_other_nodes("msg: '{{ my_nodes.x }}'"));
    }

    #[test]
    fn a_steps_deadline_is_its_tasks_timeouts_plus_the_configs_allowance() {
        let taskbook = TaskBook::from_source(
            r#"apiVersion: weft/v1
kind: TaskBook
metadata: {name: deadlines}
spec:
  steps:
    - tasks:
        - {shell: "sleep 1", timeout: 10s}
        - {shell: "curl x", timeout: 5s, retries: 2, delay: 3s}
        - shell: "no timeout"
        - {debug: {msg: "{{ item }}"}, loop: [1, 2], timeout: 1h}
      handlers:
        - {name: restart, shell: "true", timeout: 20s}
    - tasks:
        - shell: "no timeout"
"#,
            std::path::Path::new("deadlines.yml"),
        )
        .unwrap();
        let minute = Duration::from_secs(60);
        // 10s, then three attempts of 5s with two delays of 3s, then the handler's
        // 20s; the loop counts only in the allowance, as its items are unknown.
        let tasks = Duration::from_secs(10 + 3 * 5 + 2 * 3 + 20);
        assert_eq!(
            step_deadline(&taskbook.steps[0], Some(minute)),
            minute + tasks
        );
        assert_eq!(step_deadline(&taskbook.steps[1], Some(minute)), minute);
        assert_eq!(
            step_deadline(&taskbook.steps[1], None),
            DEFAULT_STEP_TIMEOUT
        );
    }

    /// Nodes played in memory: each takes `work` per step, those in `failing` fail;
    /// returns how many ran at once when each node started, in start order.
    async fn roll(
        rollout: &str,
        node_count: usize,
        work: Duration,
        failing: &[usize],
    ) -> (Vec<usize>, RunReport) {
        roll_with(rollout, node_count, work, failing, Vec::new()).await
    }

    /// [`roll`] with `-e` variables.
    async fn roll_with(
        rollout: &str,
        node_count: usize,
        work: Duration,
        failing: &[usize],
        extra_vars: Vec<Vars>,
    ) -> (Vec<usize>, RunReport) {
        let store = SqliteStore::open_in_memory().unwrap();
        let sessions = Arc::new(NodeSessions::default());
        let registry = NodeRegistry::new(store.clone());
        let running = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(Mutex::new(Vec::new()));
        for index in 0..node_count {
            let name = format!("n{index}");
            registry.put(&NodeRecord::named(&name)).await.unwrap();
            let mut handle = sessions.open(&name);
            let (sessions, running, started) = (sessions.clone(), running.clone(), started.clone());
            let failed = failing.contains(&index);
            tokio::spawn(async move {
                while let Some(ToNode::RunStep(step)) = handle.to_node.recv().await {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    lock(&started).push(now);
                    tokio::time::sleep(work).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    let mut result = unreachable_result(&name, "", "site.yml", "", 0);
                    result.status = if failed {
                        TaskStatus::Failed
                    } else {
                        TaskStatus::Ok
                    };
                    let result = StepEvent::Result {
                        sequence: 0,
                        result: Box::new(result),
                    };
                    sessions.deliver(
                        &name,
                        handle.session_id,
                        &step.job_id,
                        step.step_index,
                        result,
                    );
                    let done = StepEvent::Done {
                        failed,
                        registered: Vars::new(),
                    };
                    sessions.deliver(
                        &name,
                        handle.session_id,
                        &step.job_id,
                        step.step_index,
                        done,
                    );
                }
            });
        }
        let scratch = tempfile::tempdir().unwrap();
        let runner = JobRunner::new(
            store.clone(),
            ObjectRegistry::new(store.clone(), SecretBox::from_key(&[1; 32])),
            sessions,
            EventLog::new(store),
            RunnerConfig {
                scratch_dir: scratch.path().to_path_buf(),
                retention: JobRetention::default(),
            },
            Arc::new(crate::git_mirror::GitMirrorDir::new(
                scratch.path().join("repos"),
            )),
        );
        let source = format!(
            "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {{name: t}}\nspec:\n  steps:\n    - rollout: {rollout}\n      tasks:\n        - ping: {{}}\n"
        );
        let bundle = Bundle {
            taskbook_file: "site.yml".into(),
            files: [("site.yml".to_string(), bytes::Bytes::from(source))].into(),
        };
        let mut events = runner
            .start(RunRequest {
                bundle,
                extra_vars,
                ..RunRequest::default()
            })
            .await
            .unwrap();
        while let Some(event) = events.recv().await {
            if let JobEvent::Finished(report) = event {
                return (lock(&started).clone(), *report);
            }
        }
        panic!("the job never finished");
    }

    #[tokio::test]
    async fn a_step_no_node_could_read_is_never_sent() {
        let blob = "x".repeat(MAX_MESSAGE_BYTES);
        let extra_vars = vec![Vars::from_iter([("blob".to_string(), blob.into())])];
        let (started, report) = roll_with("{batch: 1}", 2, Duration::ZERO, &[], extra_vars).await;
        assert!(started.is_empty(), "a node got the step");
        assert!(report.failed);
        assert_eq!(report.results.len(), 2);
        for result in &report.results {
            assert_eq!(result.status, TaskStatus::Failed);
            let msg = result.msg.as_deref().unwrap();
            assert!(
                msg.contains("more than the 16.0 MiB a node accepts"),
                "{msg}"
            );
        }
    }

    #[tokio::test]
    async fn a_window_widens_with_its_ramp_and_never_past_it() {
        let (concurrency, report) = roll(
            "{batch: [1, 3], mode: window}",
            7,
            Duration::from_millis(40),
            &[],
        )
        .await;
        assert_eq!(concurrency.len(), 7);
        // The canary runs alone, and the next node starts only once it finished.
        assert_eq!(concurrency[..2], [1, 1], "{concurrency:?}");
        assert!(concurrency.iter().all(|c| *c <= 3), "{concurrency:?}");
        assert_eq!(concurrency.iter().max(), Some(&3), "{concurrency:?}");
        assert_eq!(report.recap.len(), 7);
        assert!(!report.failed);
    }

    #[tokio::test]
    async fn barrier_batches_follow_a_percentage() {
        let (concurrency, _) = roll("{batch: \"50%\"}", 4, Duration::from_millis(20), &[]).await;
        assert_eq!(concurrency.iter().max(), Some(&2), "{concurrency:?}");
    }

    #[tokio::test]
    async fn the_rollout_stops_past_max_fail_percent_and_the_rest_never_start() {
        let rollout = "{batch: 1, max_fail_percent: 20}";
        let (started, report) = roll(rollout, 5, Duration::from_millis(5), &[1]).await;
        // One failure of five is 20%, not over the limit: all five run.
        assert_eq!(started.len(), 5);
        assert!(report.failed);
        let (started, report) = roll(rollout, 5, Duration::from_millis(5), &[0, 1]).await;
        assert_eq!(
            started.len(),
            2,
            "two of five failed (40%): the other three never start"
        );
        assert!(report.failed);
        let (started, _) = roll("{batch: 1}", 5, Duration::from_millis(5), &[0, 1]).await;
        assert_eq!(
            started.len(),
            5,
            "without max_fail_percent the others go on"
        );
    }
}
