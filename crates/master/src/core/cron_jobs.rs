//! CronJobs: the leader runs each one's TaskBook at the times its schedule names.
//!
//! After an outage (no leader for a while) a CronJob runs at most once, for the latest
//! time it missed, and only if that time is within its `starting_deadline`; the times
//! it skipped are counted and said with a `cronjob.missed` event, never run in a
//! burst. The time last run is in the store and moves with a compare-and-swap before
//! the run starts, so with several masters exactly one starts each run.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::json;
use weft_taskbook::objects::{AnyObject, ConcurrencyPolicy, CronJobSpec, Kind};
use weft_taskbook::report::unix_ms;
use weft_taskbook::schedule::CronSchedule;

use super::events::{types, EventLog, NewEvent};
use super::job::{JobOrigin, JobState, JobStore, JobStoreError};
use super::objects::{ObjectError, ObjectRegistry};
use super::record::{decode, encode, CorruptRecord};
use super::run::{JobEvent, JobRunner, RunRequest, RunScope};
use crate::store::{Precondition, Store, StoreError};

const STATUS_PREFIX: &str = "/cronjob-status/";
/// How often the leader looks at the schedules: the finest a schedule fires is a second.
const TICK: Duration = Duration::from_millis(500);
/// Missed times counted after an outage; more are reported as "at least".
const MAX_COUNTED_MISSES: usize = 10_000;

/// `/cronjob-status/<ns>/<name>`: what `weft get cronjobs` shows beside the spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronJobStatus {
    /// The scheduled time of the last run started (or skipped by the deadline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_unix_ms: Option<u64>,
    /// Jobs this CronJob started, newest last; trimmed to the history limits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<String>,
    /// Scheduled times that never ran: past their deadline, or forbidden by a run
    /// still going.
    #[serde(default)]
    pub missed: u64,
}

/// What the schedule says at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CronDecision {
    /// Nothing due; the next time.
    Wait(Option<SystemTime>),
    /// Run for `scheduled`; `skipped` earlier times were missed.
    Run {
        scheduled: SystemTime,
        skipped: usize,
    },
    /// Times were missed and the latest is past the deadline: none runs.
    TooLate { latest: SystemTime, skipped: usize },
}

/// Pure: `since` is the last scheduled time handled (or when the CronJob was created).
pub fn decide(
    schedule: &CronSchedule,
    starting_deadline: Option<Duration>,
    since: SystemTime,
    now: SystemTime,
) -> CronDecision {
    let mut due = schedule.times_after(since).take_while(|time| *time <= now);
    let Some(mut latest) = due.next() else {
        return CronDecision::Wait(schedule.next_after(since));
    };
    let mut skipped = 0;
    for time in due.take(MAX_COUNTED_MISSES) {
        latest = time;
        skipped += 1;
    }
    let late = now.duration_since(latest).unwrap_or_default();
    match starting_deadline {
        Some(deadline) if late > deadline => CronDecision::TooLate {
            latest,
            skipped: skipped + 1,
        },
        _ => CronDecision::Run {
            scheduled: latest,
            skipped,
        },
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CronJobError {
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Objects(#[from] ObjectError),
    #[error(transparent)]
    Corrupt(#[from] CorruptRecord),
    #[error("{0}")]
    Run(String),
    #[error("there is no CronJob {0}")]
    NotFound(String),
}

pub struct CronJobEngine<S> {
    pub store: S,
    pub objects: ObjectRegistry<S>,
    pub runner: JobRunner<S>,
    pub events: EventLog<S>,
}

impl<S: Store + Clone> CronJobEngine<S> {
    /// Until dropped (this master stops leading).
    pub async fn run(self: std::sync::Arc<Self>) {
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            ticks.tick().await;
            if let Err(error) = self.tick(SystemTime::now()).await {
                tracing::warn!(%error, "cron jobs could not be looked at; trying again");
            }
        }
    }

    async fn tick(&self, now: SystemTime) -> Result<(), CronJobError> {
        for stored in self.objects.list(Kind::CronJob, None).await? {
            let AnyObject::CronJob(cron_job) = stored.object()? else {
                continue;
            };
            let namespace = stored.record.namespace.clone().unwrap_or_default();
            let name = cron_job.metadata.name.clone();
            if cron_job.spec.suspend {
                continue;
            }
            let Ok(schedule) =
                CronSchedule::parse(&cron_job.spec.schedule, cron_job.spec.timezone.as_deref())
            else {
                continue; // refused by `weft apply`; an older store may hold one
            };
            let created = UNIX_EPOCH + Duration::from_millis(stored.record.created_unix_ms);
            let (status, revision) = self.status(&namespace, &name).await?;
            let since = status
                .last_schedule_unix_ms
                .map_or(created, |ms| UNIX_EPOCH + Duration::from_millis(ms));
            let deadline = cron_job.spec.starting_deadline.map(|d| d.0);
            match decide(&schedule, deadline, since, now) {
                CronDecision::Wait(_) => {}
                CronDecision::TooLate { latest, skipped } => {
                    let mut status = status;
                    status.last_schedule_unix_ms = Some(unix_ms(latest));
                    status.missed += skipped as u64;
                    if self
                        .swap_status(&namespace, &name, &status, revision)
                        .await?
                    {
                        self.missed(&namespace, &name, skipped, "past the starting deadline")
                            .await;
                    }
                }
                CronDecision::Run { scheduled, skipped } => {
                    self.fire(
                        &namespace,
                        &name,
                        &cron_job.spec,
                        status,
                        revision,
                        scheduled,
                        skipped,
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn fire(
        &self,
        namespace: &str,
        name: &str,
        spec: &CronJobSpec,
        mut status: CronJobStatus,
        revision: Option<u64>,
        scheduled: SystemTime,
        skipped: usize,
    ) -> Result<(), CronJobError> {
        let running = self.running_jobs(&status).await?;
        status.last_schedule_unix_ms = Some(unix_ms(scheduled));
        status.missed += skipped as u64;
        let forbidden = spec.concurrency == ConcurrencyPolicy::Forbid && !running.is_empty();
        if forbidden {
            status.missed += 1;
        }
        // Claim the time first: a second master that read the same status loses here.
        if !self.swap_status(namespace, name, &status, revision).await? {
            return Ok(());
        }
        if skipped > 0 {
            self.missed(namespace, name, skipped, "no master led at the time")
                .await;
        }
        if forbidden {
            tracing::info!(cronjob = %format!("{namespace}/{name}"), running = ?running, "skipped: the last run is still going (concurrency: forbid)");
            self.missed(
                namespace,
                name,
                1,
                "the last run was still going (concurrency: forbid)",
            )
            .await;
            return Ok(());
        }
        if spec.concurrency == ConcurrencyPolicy::Replace {
            for job_id in &running {
                self.runner.cancel(
                    job_id,
                    &format!("replaced by the next run of CronJob {namespace}/{name}"),
                );
            }
        }
        match self.start(namespace, name, spec).await {
            Ok(job_id) => {
                tracing::info!(cronjob = %format!("{namespace}/{name}"), job = %job_id, "cron job started");
                self.record_job(namespace, name, spec, job_id).await?;
            }
            Err(error) => {
                tracing::warn!(cronjob = %format!("{namespace}/{name}"), %error, "cron job could not start");
                self.missed(namespace, name, 1, &error.to_string()).await;
            }
        }
        Ok(())
    }

    /// `weft cronjob run NAME`: one run now, whatever the schedule and the policy.
    pub async fn run_now(&self, namespace: &str, name: &str) -> Result<String, CronJobError> {
        let stored = self
            .objects
            .get(Kind::CronJob, Some(namespace), name)
            .await?
            .ok_or_else(|| CronJobError::NotFound(format!("{namespace}/{name}")))?;
        let AnyObject::CronJob(cron_job) = stored.object()? else {
            return Err(CronJobError::NotFound(format!("{namespace}/{name}")));
        };
        let job_id = self.start(namespace, name, &cron_job.spec).await?;
        self.record_job(namespace, name, &cron_job.spec, job_id.clone())
            .await?;
        Ok(job_id)
    }

    async fn start(
        &self,
        namespace: &str,
        name: &str,
        spec: &CronJobSpec,
    ) -> Result<String, CronJobError> {
        let (bundle, commits) = self
            .runner
            .bundle_for(&spec.taskbook, namespace)
            .await
            .map_err(|e| CronJobError::Run(e.to_string()))?;
        let request = RunRequest {
            bundle,
            nodes_override: spec.nodes.clone(),
            scope: RunScope::Namespace(Some(namespace.to_string())),
            origin: Some(JobOrigin {
                kind: Kind::CronJob,
                namespace: namespace.to_string(),
                name: name.to_string(),
                event_id: None,
            }),
            commits,
            ..RunRequest::default()
        };
        let mut events = self
            .runner
            .start(request)
            .await
            .map_err(|e| CronJobError::Run(e.to_string()))?;
        match events.try_recv() {
            Ok(JobEvent::Started { job_id, .. }) => Ok(job_id),
            _ => Err(CronJobError::Run("the run did not start".into())),
        }
    }

    /// Adds the job to the CronJob's history and deletes finished ones over the limits.
    async fn record_job(
        &self,
        namespace: &str,
        name: &str,
        spec: &CronJobSpec,
        job_id: String,
    ) -> Result<(), CronJobError> {
        let jobs = self.runner.jobs();
        loop {
            let (mut status, revision) = self.status(namespace, name).await?;
            let mut kept_ok = 0;
            let mut kept_failed = 0;
            let mut keep = Vec::new();
            let mut delete = Vec::new();
            for id in status.jobs.iter().rev() {
                let state = job_state(jobs, id).await?;
                let keep_it = match state {
                    None => false,
                    Some(JobState::Running) => true,
                    Some(JobState::Succeeded) => {
                        kept_ok += 1;
                        kept_ok <= spec.successful_jobs_history_limit
                    }
                    Some(_) => {
                        kept_failed += 1;
                        kept_failed <= spec.failed_jobs_history_limit
                    }
                };
                if keep_it {
                    keep.push(id.clone());
                } else if state.is_some() {
                    delete.push(id.clone());
                }
            }
            keep.reverse();
            keep.push(job_id.clone());
            status.jobs = keep;
            if self.swap_status(namespace, name, &status, revision).await? {
                for id in delete {
                    jobs.delete_finished(&id)
                        .await
                        .map_err(|e| CronJobError::Run(e.to_string()))?;
                }
                return Ok(());
            }
        }
    }

    async fn running_jobs(&self, status: &CronJobStatus) -> Result<Vec<String>, CronJobError> {
        let mut running = Vec::new();
        for id in &status.jobs {
            if job_state(self.runner.jobs(), id).await? == Some(JobState::Running) {
                running.push(id.clone());
            }
        }
        Ok(running)
    }

    /// What `weft get cronjobs` shows: the last and next scheduled times (Unix ms),
    /// the jobs running now, the last job, and how many times were missed.
    pub async fn status_view(
        &self,
        namespace: &str,
        name: &str,
        spec: &CronJobSpec,
        created_unix_ms: u64,
    ) -> Result<serde_json::Value, CronJobError> {
        let (status, _) = self.status(namespace, name).await?;
        let since = UNIX_EPOCH
            + Duration::from_millis(status.last_schedule_unix_ms.unwrap_or(created_unix_ms));
        let now = SystemTime::now();
        let next = CronSchedule::parse(&spec.schedule, spec.timezone.as_deref())
            .ok()
            .filter(|_| !spec.suspend)
            .and_then(|schedule| schedule.next_after(since.max(now)))
            .map(unix_ms);
        Ok(json!({
            "last_schedule_unix_ms": status.last_schedule_unix_ms,
            "next_schedule_unix_ms": next,
            "active": self.running_jobs(&status).await?.len(),
            "last_job_id": status.jobs.last(),
            "missed": status.missed,
        }))
    }

    pub async fn status(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<(CronJobStatus, Option<u64>), CronJobError> {
        read_status(&self.store, namespace, name).await
    }

    /// `false` when another master changed the status since it was read.
    async fn swap_status(
        &self,
        namespace: &str,
        name: &str,
        status: &CronJobStatus,
        revision: Option<u64>,
    ) -> Result<bool, CronJobError> {
        let precondition = match revision {
            Some(revision) => Precondition::ModRevision(revision),
            None => Precondition::Absent,
        };
        match self
            .store
            .put(&status_key(namespace, name), encode(status), precondition)
            .await
        {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    async fn missed(&self, namespace: &str, name: &str, count: usize, why: &str) {
        let data = serde_json::Map::from_iter([
            ("cronjob".to_string(), json!(format!("{namespace}/{name}"))),
            ("missed".to_string(), json!(count)),
            ("reason".to_string(), json!(why)),
        ]);
        let mut event = NewEvent::system(types::CRONJOB_MISSED, data);
        event.namespace = namespace.to_string();
        if let Err(error) = self.events.emit(event).await {
            tracing::warn!(%error, "the cronjob.missed event was not stored");
        }
    }
}

/// A CronJob's status and the revision it was read at (`None`: none yet).
pub async fn read_status<S: Store>(
    store: &S,
    namespace: &str,
    name: &str,
) -> Result<(CronJobStatus, Option<u64>), CronJobError> {
    match store.get(&status_key(namespace, name)).await? {
        Some(entry) => Ok((decode(&entry)?, Some(entry.mod_revision))),
        None => Ok((CronJobStatus::default(), None)),
    }
}

async fn job_state<S: Store + Clone>(
    jobs: &JobStore<S>,
    job_id: &str,
) -> Result<Option<JobState>, CronJobError> {
    match jobs.get(job_id).await {
        Ok(job) => Ok(Some(job.state)),
        // Swept by the job retention meanwhile.
        Err(JobStoreError::NotFound(_)) => Ok(None),
        Err(error) => Err(CronJobError::Run(error.to_string())),
    }
}

fn status_key(namespace: &str, name: &str) -> String {
    format!("{STATUS_PREFIX}{namespace}/{name}")
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::core::job::unreachable_result;
    use crate::core::node_registry::{NodeRecord, NodeRegistry};
    use crate::core::run::RunnerConfig;
    use crate::core::secret_box::SecretBox;
    use crate::core::sessions::{NodeSessions, StepEvent, ToNode};
    use crate::store::SqliteStore;
    use weft_taskbook::objects::{parse_objects, JobRetention};
    use weft_taskbook::Vars;

    /// A master's CronJob engine on an in-memory store, with one node that takes
    /// `step_time` per step, and a CronJob every 10 s with `concurrency`.
    async fn engine(
        concurrency: &str,
        step_time: Duration,
    ) -> (CronJobEngine<SqliteStore>, tempfile::TempDir) {
        let store = SqliteStore::open_in_memory().unwrap();
        let sessions = Arc::new(NodeSessions::default());
        NodeRegistry::new(store.clone())
            .put(&NodeRecord::named("n0"))
            .await
            .unwrap();
        let mut handle = sessions.open("n0");
        let node_sessions = sessions.clone();
        tokio::spawn(async move {
            while let Some(ToNode::RunStep(step)) = handle.to_node.recv().await {
                let sessions = node_sessions.clone();
                let session_id = handle.session_id;
                tokio::spawn(async move {
                    tokio::time::sleep(step_time).await;
                    let mut result = unreachable_result("n0", "", "site.yml", "", 0);
                    result.status = weft_taskbook::report::TaskStatus::Ok;
                    let events = [
                        StepEvent::Result {
                            sequence: 0,
                            result: Box::new(result),
                        },
                        StepEvent::Done {
                            failed: false,
                            registered: Vars::new(),
                        },
                    ];
                    for event in events {
                        sessions.deliver("n0", session_id, &step.job_id, step.step_index, event);
                    }
                });
            }
        });
        let objects = ObjectRegistry::new(store.clone(), SecretBox::from_key(&[1; 32]));
        let source = format!(
            "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {{name: two-steps}}\nspec:\n  steps:\n    - tasks: [{{ping: {{}}}}]\n    - tasks: [{{ping: {{}}}}]\n---\napiVersion: weft/v1\nkind: CronJob\nmetadata: {{name: tick}}\nspec:\n  schedule: '*/10 * * * * *'\n  taskbook: {{name: two-steps}}\n  concurrency: {concurrency}\n"
        );
        objects.ensure_builtin_namespaces().await.unwrap();
        let parsed = parse_objects(&source, Path::new("cron.yml")).unwrap();
        objects.apply(parsed, false).await.unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let events = EventLog::new(store.clone());
        let runner = JobRunner::new(
            store.clone(),
            objects.clone(),
            sessions,
            events.clone(),
            RunnerConfig {
                scratch_dir: scratch.path().to_path_buf(),
                retention: JobRetention::default(),
            },
            Arc::new(crate::git_mirror::GitMirrorDir::new(
                scratch.path().join("repos"),
            )),
        );
        let engine = CronJobEngine {
            store,
            objects,
            runner,
            events,
        };
        (engine, scratch)
    }

    async fn jobs(engine: &CronJobEngine<SqliteStore>) -> Vec<(String, JobState)> {
        let (status, _) = engine.status("default", "tick").await.unwrap();
        let mut jobs = Vec::new();
        for id in status.jobs {
            let state = engine.runner.jobs().get(&id).await.unwrap().state;
            jobs.push((id, state));
        }
        jobs
    }

    async fn settle(engine: &CronJobEngine<SqliteStore>) {
        while jobs(engine)
            .await
            .iter()
            .any(|(_, s)| *s == JobState::Running)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn forbid_skips_a_run_while_the_last_one_goes_on() {
        let (engine, _scratch) = engine("forbid", Duration::from_millis(300)).await;
        let now = SystemTime::now();
        engine.tick(now + Duration::from_secs(25)).await.unwrap();
        let (before, _) = engine.status("default", "tick").await.unwrap();
        // The clock jumps on while the first run is still in its first step.
        engine.tick(now + Duration::from_secs(35)).await.unwrap();
        assert_eq!(jobs(&engine).await.len(), 1);
        let (status, _) = engine.status("default", "tick").await.unwrap();
        assert_eq!(status.missed, before.missed + 1);
        settle(&engine).await;
        engine.tick(now + Duration::from_secs(45)).await.unwrap();
        settle(&engine).await;
        let states: Vec<JobState> = jobs(&engine).await.into_iter().map(|(_, s)| s).collect();
        assert_eq!(states, [JobState::Succeeded, JobState::Succeeded]);
    }

    #[tokio::test]
    async fn replace_cancels_the_running_one_and_allow_runs_both() {
        for (policy, first) in [
            ("replace", JobState::Cancelled),
            ("allow", JobState::Succeeded),
        ] {
            let (cron, _scratch) = engine(policy, Duration::from_millis(300)).await;
            let now = SystemTime::now();
            cron.tick(now + Duration::from_secs(25)).await.unwrap();
            cron.tick(now + Duration::from_secs(35)).await.unwrap();
            settle(&cron).await;
            let states: Vec<JobState> = jobs(&cron).await.into_iter().map(|(_, s)| s).collect();
            assert_eq!(states, [first, JobState::Succeeded], "{policy}");
        }
    }

    #[tokio::test]
    async fn an_outage_gives_one_run_and_a_missed_event_and_a_second_master_starts_none() {
        let (engine, _scratch) = engine("allow", Duration::from_millis(10)).await;
        let now = SystemTime::now();
        let stored = engine
            .objects
            .get(Kind::CronJob, Some("default"), "tick")
            .await
            .unwrap();
        let created = UNIX_EPOCH + Duration::from_millis(stored.unwrap().record.created_unix_ms);
        let later = now + Duration::from_secs(65);
        let schedule = CronSchedule::parse("*/10 * * * * *", None).unwrap();
        let due = schedule
            .times_after(created)
            .take_while(|t| *t <= later)
            .count();
        assert!(due >= 6);
        // A minute of schedule passes unseen.
        engine.tick(later).await.unwrap();
        settle(&engine).await;
        assert_eq!(jobs(&engine).await.len(), 1);
        let (missed, _) = engine
            .events
            .list(
                &crate::core::events::EventFilter {
                    event_type: Some(types::CRONJOB_MISSED.into()),
                    ..Default::default()
                },
                10,
            )
            .await
            .unwrap();
        assert_eq!(missed.len(), 1);
        assert_eq!(missed[0].data["missed"], due - 1);
        // Another master that read the status before the first wrote it loses the swap.
        let (status, revision) = engine.status("default", "tick").await.unwrap();
        assert!(engine
            .swap_status("default", "tick", &status, revision.map(|r| r - 1))
            .await
            .is_ok_and(|swapped| !swapped));
        engine.tick(now + Duration::from_secs(65)).await.unwrap();
        assert_eq!(jobs(&engine).await.len(), 1);
    }

    fn at(minutes: u64) -> SystemTime {
        // 2026-12-02T00:00:00Z
        UNIX_EPOCH + Duration::from_secs(1_796_169_600 + minutes * 60)
    }

    #[test]
    fn due_times_run_once_for_the_latest_and_never_in_a_burst() {
        let every_ten = CronSchedule::parse("*/10 * * * *", None).unwrap();
        assert_eq!(
            decide(&every_ten, None, at(0), at(5)),
            CronDecision::Wait(Some(at(10)))
        );
        assert_eq!(
            decide(&every_ten, None, at(0), at(10)),
            CronDecision::Run {
                scheduled: at(10),
                skipped: 0
            }
        );
        // An hour without a leader: one run, for 01:00, and five times missed.
        assert_eq!(
            decide(&every_ten, None, at(0), at(61)),
            CronDecision::Run {
                scheduled: at(60),
                skipped: 5
            }
        );
    }

    #[test]
    fn a_run_later_than_its_deadline_is_skipped_and_counted() {
        let hourly = CronSchedule::parse("0 * * * *", None).unwrap();
        let five_minutes = Some(Duration::from_secs(300));
        assert_eq!(
            decide(&hourly, five_minutes, at(0), at(64)),
            CronDecision::Run {
                scheduled: at(60),
                skipped: 0
            }
        );
        assert_eq!(
            decide(&hourly, five_minutes, at(0), at(66)),
            CronDecision::TooLate {
                latest: at(60),
                skipped: 1
            }
        );
        assert_eq!(
            decide(&hourly, five_minutes, at(0), at(3 * 60 + 10)),
            CronDecision::TooLate {
                latest: at(180),
                skipped: 3
            }
        );
    }
}
