//! Jobs as stored: a header per job (`/jobs/<id>`), a record per node and step
//! (`/job-steps/<id>/<node>/<step>`) and every task result
//! (`/job-results/<id>/<node>/<step>/<seq>`). Keys are idempotent, so a node that
//! reports a result twice (after a reconnect) stores it once. A node's word is bounded:
//! sequences stay within what its step can produce, a result once stored does not
//! change, and a step that ended (the node's own end, or the master's verdict) takes
//! nothing more. Writes go through a
//! journal that commits them in groups, one transaction (one fsync) per group, so a
//! thousand nodes answering at once cost a handful of disk syncs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use weft_taskbook::bundle::Bundle;
use weft_taskbook::objects::{JobRetention, Kind};
use weft_taskbook::report::{RunReport, TaskResult, TaskStatus};
use weft_taskbook::{Step, Vars};

use super::record::{decode, encode, CorruptRecord};
use crate::store::{Operation, Precondition, Store, StoreError, MAX_OPERATIONS};

pub const JOB_SCHEMA: &str = "weft.job/v1";
const JOBS_PREFIX: &str = "/jobs/";
const STEPS_PREFIX: &str = "/job-steps/";
const RESULTS_PREFIX: &str = "/job-results/";

/// One step of one job for one node, as the master sends it.
#[derive(Debug, Clone, Default)]
pub struct StepAssignment {
    pub job_id: String,
    pub step_index: u32,
    pub bundle: Arc<Bundle>,
    /// Variables below the TaskBook's in precedence.
    pub cluster_vars: Arc<Vars>,
    /// The Secrets this step's tasks read, opened: `{name: {key: value}}`.
    pub secrets: Arc<Value>,
    pub extra_vars: Arc<Vec<Vars>>,
    /// `node` and `nodes`, as tasks read them.
    pub context: Value,
    /// The node's registered results so far.
    pub registered: Vars,
    pub check_mode: bool,
    pub diff: bool,
    pub tags: Arc<Vec<String>>,
    pub skip_tags: Arc<Vec<String>>,
    pub run_once_node: Option<String>,
}

impl StepAssignment {
    /// At least what the step's message to its node weighs: a step over
    /// `MAX_MESSAGE_BYTES` is refused here, since the node could not read it and
    /// would lose its session.
    pub fn message_bytes(&self) -> usize {
        let files: usize = self
            .bundle
            .files
            .iter()
            .map(|(path, content)| path.len() + content.len())
            .sum();
        files
            + json_len(&*self.cluster_vars)
            + json_len(&*self.secrets)
            + json_len(&*self.extra_vars)
            + json_len(&self.context)
            + json_len(&self.registered)
    }
}

/// The length of `value` as JSON, counted without building the text.
fn json_len<T: Serialize + ?Sized>(value: &T) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, value).expect("JSON values always serialize");
    counter.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
    /// The master stopped while the job ran; the job's records say how far it got.
    Interrupted,
    /// Stopped on purpose (a CronJob's `replace` policy): no new node or step started.
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Interrupted => "interrupted",
            JobState::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStepPlan {
    pub name: String,
    pub nodes: Vec<String>,
    /// The most results a node reports for this step ([`step_result_limit`]); 0 in jobs
    /// recorded before weft kept it, whose late reports are refused.
    #[serde(default)]
    pub max_results: u32,
}

/// The most results a node reports for `step`: one per task and handler, and the two
/// it adds when the step cannot start or cannot hand on its registered results.
pub fn step_result_limit(step: &Step) -> u32 {
    u32::try_from(step.tasks.len() + step.handlers.len() + 2).unwrap_or(u32::MAX)
}

/// Why a node's report on a step was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportRefused {
    #[error("result {sequence} is past the {max_results} results this step can have (one per task and handler, and two for a step that could not start or hand on its results)")]
    OutOfRange { sequence: u32, max_results: u32 },
    #[error("result {0} was reported already; a step's results stay as first reported")]
    Repeated(u32),
    #[error("result {0} was stored with other content; a step's results stay as first reported")]
    Rewritten(u32),
    #[error("the step ended `{0}` on this node; an ended step takes no more reports")]
    StepEnded(&'static str),
    #[error("the job still runs and no longer waits for this step on this node (the node ended it, its deadline passed, or its session ended)")]
    GivenUp,
    #[error("this node was not given that step of the job")]
    NotAssigned,
    #[error("no such job (swept since?)")]
    NoJob,
}

/// Checks a result's sequence against the step's limit.
pub fn check_sequence(sequence: u32, max_results: u32) -> Result<(), ReportRefused> {
    if sequence < max_results {
        Ok(())
    } else {
        Err(ReportRefused::OutOfRange {
            sequence,
            max_results,
        })
    }
}

/// `/jobs/<id>`: small, whatever the number of nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub job_id: String,
    pub taskbook: String,
    pub file: String,
    pub check_mode: bool,
    pub state: JobState,
    pub started_unix_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_unix_ms: Option<u64>,
    pub steps: Vec<JobStepPlan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What started the job; `None`: a person (`weft run taskbook`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<JobOrigin>,
    /// The commit of each GitRepository the run read its TaskBook from, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub commits: BTreeMap<String, String>,
    /// The Secrets the run read, by name (never their values): a node's late report is
    /// masked with them as a live one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_read: Option<SecretsRead>,
    /// The internal jobs the run started for its inputs (computed variables, files
    /// `sync` carries), in the order they started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input_jobs: Vec<InputJob>,
}

/// An internal job a run started for one of its inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputJob {
    pub job_id: String,
    pub node: String,
    /// What it was for: `compute ca_pem for ClusterVariables/dns`.
    pub purpose: String,
}

/// Which Secrets a job read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretsRead {
    pub namespace: String,
    pub names: BTreeSet<String>,
}

/// The object that started a job, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOrigin {
    /// The object's kind: `CronJob`, `Trigger` or `GitRepository`.
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    /// The event a Trigger fired on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
}

impl JobOrigin {
    pub fn describe(&self) -> String {
        format!("{} {}/{}", self.kind, self.namespace, self.name)
    }
}

impl JobRecord {
    pub fn node_count(&self) -> usize {
        let mut nodes: Vec<&String> = self.steps.iter().flat_map(|s| &s.nodes).collect();
        nodes.sort();
        nodes.dedup();
        nodes.len()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStepState {
    Running,
    Ok,
    Failed,
    Unreachable,
    /// Never started: an earlier failure, or `max_fail_percent`, stopped the rollout.
    Skipped,
    /// Was running when the master stopped.
    Interrupted,
}

impl NodeStepState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStepState::Running => "running",
            NodeStepState::Ok => "ok",
            NodeStepState::Failed => "failed",
            NodeStepState::Unreachable => "unreachable",
            NodeStepState::Skipped => "skipped",
            NodeStepState::Interrupted => "interrupted",
        }
    }
}

/// `/job-steps/<id>/<node>/<step>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStepRecord {
    pub node: String,
    pub step_index: u32,
    pub state: NodeStepState,
    pub dispatched_unix_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_unix_ms: Option<u64>,
    /// Set when the node reported after the master had stopped waiting for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A job with everything recorded about it: what `weft job show` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDetail {
    pub schema: String,
    #[serde(flatten)]
    pub job: JobRecord,
    pub node_steps: Vec<NodeStepRecord>,
    pub report: RunReport,
}

#[derive(Debug, thiserror::Error)]
pub enum JobStoreError {
    #[error("the job store failed: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Corrupt(#[from] CorruptRecord),
    #[error("no job `{0}`; `weft jobs` lists them")]
    NotFound(String),
}

pub fn job_key(job_id: &str) -> String {
    format!("{JOBS_PREFIX}{job_id}")
}

fn node_step_key(job_id: &str, node: &str, step_index: u32) -> String {
    format!("{STEPS_PREFIX}{job_id}/{node}/{step_index:04}")
}

fn result_key(job_id: &str, node: &str, step_index: u32, sequence: u32) -> String {
    format!("{RESULTS_PREFIX}{job_id}/{node}/{step_index:04}/{sequence:06}")
}

/// Job ids sort by start time and read as one: `20261122-101500-3fa9`.
pub fn new_job_id(now: SystemTime) -> String {
    let stamp = humantime::format_rfc3339_seconds(now).to_string();
    let digits: String = stamp.chars().filter(char::is_ascii_digit).collect();
    format!(
        "{}-{}-{:04x}",
        &digits[..8],
        &digits[8..14],
        rand::random::<u16>()
    )
}

enum JournalEntry {
    Write(Operation),
    Flush(oneshot::Sender<()>),
}

/// Group commit of job records: writes queue up while the previous group syncs.
#[derive(Clone)]
pub struct JobJournal {
    entries: mpsc::UnboundedSender<JournalEntry>,
}

impl JobJournal {
    pub fn start<S: Store>(store: S) -> JobJournal {
        let (entries, queue) = mpsc::unbounded_channel();
        tokio::spawn(commit_groups(store, queue));
        JobJournal { entries }
    }

    fn put(&self, key: String, value: Vec<u8>) {
        let operation = Operation::Put {
            key,
            value,
            precondition: Precondition::None,
        };
        let _ = self.entries.send(JournalEntry::Write(operation));
    }

    pub fn job(&self, job: &JobRecord) {
        self.put(job_key(&job.job_id), encode(job));
    }

    pub fn node_step(&self, job_id: &str, record: &NodeStepRecord) {
        self.put(
            node_step_key(job_id, &record.node, record.step_index),
            encode(record),
        );
    }

    pub fn result(&self, job_id: &str, step_index: u32, sequence: u32, result: &TaskResult) {
        self.put(
            result_key(job_id, &result.node, step_index, sequence),
            encode(result),
        );
    }

    /// Waits until everything journaled before is committed (or failed to commit).
    pub async fn flush(&self) {
        let (done, committed) = oneshot::channel();
        if self.entries.send(JournalEntry::Flush(done)).is_ok() {
            let _ = committed.await;
        }
    }
}

async fn commit_groups<S: Store>(store: S, mut queue: mpsc::UnboundedReceiver<JournalEntry>) {
    let mut group: BTreeMap<String, Operation> = BTreeMap::new();
    let mut waiting = Vec::new();
    while let Some(entry) = queue.recv().await {
        let mut next = Some(entry);
        // Take what queued up meanwhile, up to one transaction's worth.
        while let Some(entry) = next.take() {
            match entry {
                JournalEntry::Write(operation) => {
                    group.insert(operation.key().to_string(), operation);
                }
                JournalEntry::Flush(done) => waiting.push(done),
            }
            if group.len() >= MAX_OPERATIONS {
                break;
            }
            next = queue.try_recv().ok();
        }
        if !group.is_empty() {
            let operations: Vec<Operation> = std::mem::take(&mut group).into_values().collect();
            if let Err(error) = commit(&store, operations).await {
                tracing::error!(%error, "job records could not be written");
            }
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

/// One transaction, split when the values are over one write's byte limit. Each half
/// is tried whatever became of the other: one record too large to store (a node's
/// result, say) costs that record only, never the others of its group.
async fn commit<S: Store>(store: &S, operations: Vec<Operation>) -> Result<(), StoreError> {
    match store.transaction(operations.clone()).await {
        Err(StoreError::TooLarge { .. }) if operations.len() > 1 => {
            let mut first = operations;
            let second = first.split_off(first.len() / 2);
            let first = Box::pin(commit(store, first)).await;
            let second = Box::pin(commit(store, second)).await;
            first.and(second)
        }
        other => other.map(|_| ()),
    }
}

/// Reading and tidying stored jobs.
pub struct JobStore<S> {
    store: S,
}

impl<S: Store> JobStore<S> {
    pub fn new(store: S) -> Self {
        JobStore { store }
    }

    /// Newest first.
    pub async fn list(&self, limit: usize) -> Result<Vec<JobRecord>, JobStoreError> {
        let entries = self.store.list(JOBS_PREFIX).await?;
        entries
            .iter()
            .rev()
            .take(limit)
            .map(|entry| Ok(decode(entry)?))
            .collect()
    }

    pub async fn get(&self, job_id: &str) -> Result<JobRecord, JobStoreError> {
        let entry = self
            .store
            .get(&job_key(job_id))
            .await?
            .ok_or_else(|| JobStoreError::NotFound(job_id.to_string()))?;
        Ok(decode(&entry)?)
    }

    pub async fn detail(&self, job_id: &str) -> Result<JobDetail, JobStoreError> {
        let job = self.get(job_id).await?;
        let node_steps: Vec<NodeStepRecord> = self
            .store
            .list(&format!("{STEPS_PREFIX}{job_id}/"))
            .await?
            .iter()
            .map(decode)
            .collect::<Result<_, _>>()?;
        let mut report = RunReport::new(&job.taskbook, &job.file, job.check_mode);
        report.job = Some(job.job_id.clone());
        report.started_unix_ms = job.started_unix_ms;
        for node in job.steps.iter().flat_map(|step| &step.nodes) {
            report.add_node(node);
        }
        for entry in self
            .store
            .list(&format!("{RESULTS_PREFIX}{job_id}/"))
            .await?
        {
            report.record(decode(&entry)?);
        }
        report.finish();
        if let Some(finished) = job.finished_unix_ms {
            report.duration_ms = finished.saturating_sub(job.started_unix_ms) as f64;
        }
        Ok(JobDetail {
            schema: JOB_SCHEMA.to_string(),
            job,
            node_steps,
            report,
        })
    }

    /// At start: a job the previous master left running cannot be resumed (its nodes
    /// may have gone on without it), so it is marked interrupted, and so is every node
    /// step it was waiting for. Nothing is re-run. Returns the jobs marked.
    pub async fn interrupt_unfinished(&self, now_ms: u64) -> Result<Vec<String>, JobStoreError> {
        let mut interrupted = Vec::new();
        for entry in self.store.list(JOBS_PREFIX).await? {
            let mut job: JobRecord = decode(&entry)?;
            if job.state != JobState::Running {
                continue;
            }
            let mut operations = Vec::new();
            let steps_prefix = format!("{STEPS_PREFIX}{}/", job.job_id);
            let mut running_steps = Vec::new();
            for step_entry in self.store.list(&steps_prefix).await? {
                let mut record: NodeStepRecord = decode(&step_entry)?;
                if record.state == NodeStepState::Running {
                    running_steps.push(format!("{} (step {})", record.node, record.step_index + 1));
                    record.state = NodeStepState::Interrupted;
                    operations.push(Operation::Put {
                        key: step_entry.key.clone(),
                        value: encode(&record),
                        precondition: Precondition::None,
                    });
                }
            }
            job.state = JobState::Interrupted;
            job.finished_unix_ms = Some(now_ms);
            job.message = Some(if running_steps.is_empty() {
                "the master stopped while this job ran; nothing was running on a node".to_string()
            } else {
                format!(
                    "the master stopped while this job ran on {}; those nodes' results up to then are recorded, later ones as the nodes report them",
                    running_steps.join(", ")
                )
            });
            operations.push(Operation::Put {
                key: entry.key.clone(),
                value: encode(&job),
                precondition: Precondition::ModRevision(entry.mod_revision),
            });
            for chunk in operations.rchunks(MAX_OPERATIONS) {
                self.store.transaction(chunk.to_vec()).await?;
            }
            interrupted.push(job.job_id);
        }
        Ok(interrupted)
    }

    /// A node reported on a step nobody waits for any more: kept, marked as late, only
    /// while the step is `interrupted` (its master stopped while the node ran it): the
    /// node finished the step on its own and sends what it has. The node's end of the
    /// step closes it. A step the master gave up on (`unreachable`, past its deadline)
    /// or that ended keeps its record. What is stored already, sent again the same (a
    /// node does after a reconnect), is no news; sent different, it is refused.
    pub async fn record_late(
        &self,
        job_id: &str,
        node: &str,
        step_index: u32,
        late: LateReport,
        now_ms: u64,
    ) -> Result<LateOutcome, JobStoreError> {
        let Some(job_entry) = self.store.get(&job_key(job_id)).await? else {
            return Ok(LateOutcome::Refused(ReportRefused::NoJob));
        };
        let job: JobRecord = decode(&job_entry)?;
        let Some(plan) = job
            .steps
            .get(step_index as usize)
            .filter(|step| step.nodes.iter().any(|n| n == node))
        else {
            return Ok(LateOutcome::Refused(ReportRefused::NotAssigned));
        };
        let key = node_step_key(job_id, node, step_index);
        let (mut record, record_precondition) = match self.store.get(&key).await? {
            Some(entry) => (
                decode::<NodeStepRecord>(&entry)?,
                Precondition::ModRevision(entry.mod_revision),
            ),
            // The master stopped before the dispatch was written.
            None => (
                NodeStepRecord {
                    node: node.to_string(),
                    step_index,
                    state: NodeStepState::Interrupted,
                    dispatched_unix_ms: now_ms,
                    finished_unix_ms: None,
                    note: None,
                },
                Precondition::Absent,
            ),
        };
        // Only an interrupted job's interrupted step takes news; the rest is refused,
        // unless it is what is stored already (a node sending again after a reconnect).
        let open = job.state != JobState::Running && record.state == NodeStepState::Interrupted;
        let refused = match record.state {
            NodeStepState::Running | NodeStepState::Interrupted => ReportRefused::GivenUp,
            ended => ReportRefused::StepEnded(ended.as_str()),
        };
        let mut operations = Vec::new();
        match late {
            LateReport::Result {
                sequence,
                mut result,
            } => {
                if let Err(refused) = check_sequence(sequence, plan.max_results) {
                    return Ok(LateOutcome::Refused(refused));
                }
                result.node = node.to_string();
                result.step = plan.name.clone();
                let result_key = result_key(job_id, node, step_index, sequence);
                if let Some(stored) = self.store.get(&result_key).await? {
                    let stored: TaskResult = decode(&stored)?;
                    return Ok(if same_result(&stored, &result) {
                        LateOutcome::AlreadyStored
                    } else {
                        LateOutcome::Refused(ReportRefused::Rewritten(sequence))
                    });
                }
                if !open {
                    return Ok(LateOutcome::Refused(refused));
                }
                operations.push(Operation::Put {
                    key: result_key,
                    value: encode(&result),
                    precondition: Precondition::Absent,
                });
            }
            LateReport::Done { failed } => {
                let state = if failed {
                    NodeStepState::Failed
                } else {
                    NodeStepState::Ok
                };
                if !open {
                    return Ok(if record.state == state {
                        LateOutcome::AlreadyStored
                    } else {
                        LateOutcome::Refused(refused)
                    });
                }
                record.state = state;
                record.finished_unix_ms = Some(now_ms);
            }
        }
        record.note = Some("reported by the node after the master stopped waiting".to_string());
        operations.push(Operation::Put {
            key,
            value: encode(&record),
            precondition: record_precondition,
        });
        self.store.transaction(operations).await?;
        Ok(LateOutcome::Stored)
    }

    /// Keeps at most `max_jobs` finished jobs, none older than `max_age`. Running jobs
    /// are never swept. Returns how many went.
    pub async fn sweep(
        &self,
        retention: &JobRetention,
        now: SystemTime,
    ) -> Result<usize, JobStoreError> {
        let max_age: Duration = retention.max_age.0;
        let oldest_ms = now
            .checked_sub(max_age)
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64);
        let jobs: Vec<JobRecord> = self
            .store
            .list(JOBS_PREFIX)
            .await?
            .iter()
            .map(decode)
            .collect::<Result<_, _>>()?;
        let finished: Vec<&JobRecord> = jobs
            .iter()
            .filter(|j| j.state != JobState::Running)
            .collect();
        let over_count = finished.len().saturating_sub(retention.max_jobs as usize);
        let mut swept = 0;
        // Ids sort by start time: the first ones are the oldest.
        for (index, job) in finished.iter().enumerate() {
            if index < over_count || job.started_unix_ms < oldest_ms {
                self.delete(&job.job_id).await?;
                swept += 1;
            }
        }
        Ok(swept)
    }

    /// Deletes a job that has ended (a CronJob's history over its limits).
    pub async fn delete_finished(&self, job_id: &str) -> Result<(), JobStoreError> {
        match self.get(job_id).await {
            Ok(job) if job.state != JobState::Running => self.delete(job_id).await,
            Ok(_) | Err(JobStoreError::NotFound(_)) => Ok(()),
            Err(error) => Err(error),
        }
    }

    async fn delete(&self, job_id: &str) -> Result<(), JobStoreError> {
        // Details first: a half-deleted job still shows in `weft jobs` and goes next time.
        self.store
            .delete_prefix(&format!("{RESULTS_PREFIX}{job_id}/"))
            .await?;
        self.store
            .delete_prefix(&format!("{STEPS_PREFIX}{job_id}/"))
            .await?;
        self.store
            .delete(&job_key(job_id), Precondition::None)
            .await?;
        Ok(())
    }
}

/// What became of a late report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LateOutcome {
    Stored,
    /// The same result was stored before (a node sends its results again after a
    /// reconnect).
    AlreadyStored,
    Refused(ReportRefused),
}

/// Whether two reports of one result say the same, as stored.
fn same_result(stored: &TaskResult, reported: &TaskResult) -> bool {
    serde_json::to_value(stored).ok() == serde_json::to_value(reported).ok()
}

pub enum LateReport {
    Result {
        sequence: u32,
        result: Box<TaskResult>,
    },
    Done {
        failed: bool,
    },
}

/// The result line for a node that could not run (or finish) a step.
pub fn unreachable_result(
    node: &str,
    step_name: &str,
    file: &str,
    reason: &str,
    now_ms: u64,
) -> TaskResult {
    TaskResult {
        node: node.to_string(),
        step: step_name.to_string(),
        task: String::new(),
        module: String::new(),
        location: file.to_string(),
        handler: false,
        status: TaskStatus::Unreachable,
        msg: Some(reason.to_string()),
        diff: None,
        items: Vec::new(),
        output: Value::Null,
        attempts: 0,
        started_unix_ms: now_ms,
        duration_ms: 0.0,
    }
}

#[cfg(test)]
mod tests;
