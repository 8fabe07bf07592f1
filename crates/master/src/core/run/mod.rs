//! Runs a TaskBook across the fleet, in four phases:
//!
//! 1. [`plan`]: pure. Which nodes run each step, and every input the run needs from
//!    the master, as the modules declare them. A refused run has started nothing and
//!    recorded nothing.
//! 2. [`inputs`]: what the store holds is read while planning (Secrets, variable
//!    sources); what must run on nodes (computed variables, files `sync` carries) runs
//!    once the job is recorded, as internal jobs the job names.
//! 3. [`rollout`]: pure. Each step in batches, stopping at `max_fail_percent`.
//! 4. [`dispatch`]: one step to one node, and its reports back, bounded.
//!
//! [`source`] reads the TaskBook itself (a bundle, a stored TaskBook or a
//! GitRepository's file); [`job_run`] drives one job through its steps.

mod dispatch;
mod inputs;
mod job_run;
mod plan;
mod rollout;
mod source;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::Value;
use tokio::sync::mpsc;
use weft_taskbook::bundle::Bundle;
use weft_taskbook::objects::JobRetention;
use weft_taskbook::report::{unix_ms_now, RunReport, TaskResult};
use weft_taskbook::secrets::SecretMask;
use weft_taskbook::selector::NodeSelector;
use weft_taskbook::{Error, TaskBook, Vars};

pub use dispatch::DEFAULT_STEP_TIMEOUT;

use self::inputs::StoredInputs;
use self::job_run::JobRun;
use self::plan::{plan_run, Cluster, Plan};
use super::events::EventLog;
use super::git_repositories::{GitError, GitMirrors, RepoReader};
use super::job::{
    new_job_id, JobJournal, JobOrigin, JobRecord, JobState, JobStore, JobStoreError, LateOutcome,
    LateReport, NodeStepState,
};
use super::node_registry::{NodeRecord, NodeRegistry, NodeRegistryError};
use super::objects::{ObjectError, ObjectRegistry, DEFAULT_NAMESPACE};
use super::record::CorruptRecord;
use super::sessions::NodeSessions;
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

impl From<GitError> for RunError {
    fn from(error: GitError) -> Self {
        match error {
            GitError::Store(e) => RunError::Store(e),
            GitError::Corrupt(e) => RunError::Corrupt(e),
            GitError::Objects(e) => RunError::Objects(Box::new(e)),
            not_found @ GitError::NotFound { .. } => {
                RunError::Input(Error::new(not_found.to_string()))
            }
            GitError::Commit(e) => RunError::Input(e),
            GitError::Mirror(e) => RunError::Scratch(e),
        }
    }
}

/// A run checked and planned, not started yet: nothing of it ran or was recorded.
pub struct PlannedRun {
    request: RunRequest,
    taskbook: TaskBook,
    views: BTreeMap<String, NodeView>,
    plan: Plan,
    stored: StoredInputs,
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
    inner: Arc<Inner<S>>,
}

struct Inner<S> {
    objects: ObjectRegistry<S>,
    sessions: Arc<NodeSessions>,
    nodes: NodeRegistry<S>,
    jobs: JobStore<S>,
    events: EventLog<S>,
    /// Running jobs' cancel flags, and why they were cancelled.
    cancels: Mutex<HashMap<String, Arc<Mutex<Option<String>>>>>,
    journal: JobJournal,
    config: RunnerConfig,
    repos: RepoReader<S>,
}

/// A node as the run sees it when it is planned.
struct NodeView {
    record: NodeRecord,
    facts: Value,
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

    pub fn repos(&self) -> &RepoReader<S> {
        &self.inner.repos
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

    /// Plans the request, records the job and starts it. `Err` means nothing started
    /// and nothing was recorded. The job runs on whether or not anyone reads its events.
    pub async fn start(
        &self,
        request: RunRequest,
    ) -> Result<mpsc::UnboundedReceiver<JobEvent>, RunError> {
        let planned = self.plan(request).await?;
        Ok(self.launch(planned).await)
    }

    /// Everything `start` checks, reading the store and starting nothing: a caller with
    /// several runs to start together starts none when one of them is refused.
    pub async fn plan(&self, mut request: RunRequest) -> Result<PlannedRun, RunError> {
        request.bundle.validate().map_err(RunError::Input)?;
        let repo_namespace = match &request.scope {
            RunScope::Namespace(Some(namespace)) => namespace.clone(),
            _ => source::top_namespace(&request.bundle),
        };
        let taskbook = self.load(&mut request, &repo_namespace).await?;
        let namespace = match &request.scope {
            RunScope::Namespace(namespace) => Some(
                namespace
                    .clone()
                    .or_else(|| taskbook.metadata.namespace.clone())
                    .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
            ),
            RunScope::Internal => None,
        };
        let var_sources = match &namespace {
            Some(namespace) => Some(
                self.inner
                    .objects
                    .var_sources(namespace)
                    .await
                    .map_err(inputs::objects_error)?,
            ),
            None => None,
        };
        let views = self.node_views().await?;
        let cluster = Cluster {
            views: &views,
            var_sources: var_sources.as_ref(),
        };
        let plan = plan_run(
            &taskbook,
            &request.bundle,
            request.nodes_override.as_ref(),
            &cluster,
            weft_modules::master_needs_of,
        )
        .map_err(RunError::Input)?;
        let stored = self.read_inputs(var_sources, &plan).await?;
        let job = JobRecord {
            job_id: new_job_id(std::time::SystemTime::now()),
            taskbook: taskbook.metadata.name.clone(),
            file: request.bundle.taskbook_file.clone(),
            check_mode: request.check_mode,
            state: JobState::Running,
            started_unix_ms: unix_ms_now(),
            finished_unix_ms: None,
            steps: plan.steps.iter().map(|step| step.job.clone()).collect(),
            message: None,
            origin: request.origin.clone(),
            commits: request.commits.clone(),
            secrets_read: stored.secrets_read.clone(),
            input_jobs: Vec::new(),
        };
        Ok(PlannedRun {
            request,
            taskbook,
            views,
            plan,
            stored,
            job,
        })
    }

    /// Records a planned job and starts it.
    pub async fn launch(&self, planned: PlannedRun) -> mpsc::UnboundedReceiver<JobEvent> {
        let (run, receiver) = self.record_and_prepare(planned).await;
        tokio::spawn(run.run());
        receiver
    }

    /// [`launch`](Self::launch) for the master's own one-task runs, which need no
    /// inputs: they cannot start internal runs in turn.
    async fn launch_internal(&self, planned: PlannedRun) -> mpsc::UnboundedReceiver<JobEvent> {
        let (run, receiver) = self.record_and_prepare(planned).await;
        tokio::spawn(run.run_internal());
        receiver
    }

    async fn record_and_prepare(
        &self,
        planned: PlannedRun,
    ) -> (JobRun<S>, mpsc::UnboundedReceiver<JobEvent>) {
        // Written before anything runs, so a crash from here on leaves a job to interrupt.
        self.inner.journal.job(&planned.job);
        self.inner.journal.flush().await;
        let (events, receiver) = mpsc::unbounded_channel();
        let _ = events.send(JobEvent::Started {
            job_id: planned.job.job_id.clone(),
            step_count: planned.job.steps.len(),
        });
        let cancelled = lock(&self.inner.cancels)
            .entry(planned.job.job_id.clone())
            .or_default()
            .clone();
        let run = JobRun::new(self.clone(), planned, cancelled, events);
        (run, receiver)
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
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
