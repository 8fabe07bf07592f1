//! One step to one node: the assignment (bundle, variables, the step's Secrets, what
//! the node may read of others), bounded before it is sent; then the node's reports,
//! each taken once and within the step's limit, until the node ends the step, its
//! session ends or the step's deadline passes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use weft_modules::sync::SYNCED_VAR;
use weft_taskbook::limits::{human_bytes, MAX_MESSAGE_BYTES};
use weft_taskbook::report::{unix_ms_now, TaskResult, TaskStatus};
use weft_taskbook::Step;

use super::job_run::JobRun;
use super::{lock, JobEvent, NodeView};
use crate::core::job::{
    check_sequence, unreachable_result, NodeStepRecord, NodeStepState, ReportRefused,
    StepAssignment,
};
use crate::core::sessions::{NotConnected, StepEvent};
use crate::store::Store;

/// What a node's step may take beyond its tasks' own `timeout`s when no Config sets
/// `step_timeout`.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(3600);

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

impl<S: Store + Clone> JobRun<S> {
    pub(super) async fn run_node_step(
        &self,
        index: usize,
        step_name: &str,
        node: &str,
        run_once_node: Option<&str>,
    ) -> NodeStepState {
        let deadline = step_deadline(&self.taskbook.steps[index], self.stored.step_timeout);
        let job_id = &self.job.job_id;
        let mut record = NodeStepRecord {
            node: node.to_string(),
            step_index: index as u32,
            state: NodeStepState::Running,
            dispatched_unix_ms: unix_ms_now(),
            finished_unix_ms: None,
            note: None,
        };
        self.runner.inner.journal.node_step(job_id, &record);
        let assignment = Arc::new(StepAssignment {
            job_id: job_id.clone(),
            step_index: index as u32,
            bundle: self.bundle.clone(),
            cluster_vars: self.vars_by_node.get(node).cloned().unwrap_or_default(),
            secrets: self
                .stored
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
            self.runner
                .inner
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
        self.runner.inner.journal.node_step(job_id, &record);
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
                self.runner
                    .inner
                    .sessions
                    .abandon_step(node, job_id, index as u32);
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
                        .for_each(|value| self.stored.secret_mask.mask_value(value));
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
        let result = self.stored.secret_mask.mask_result(result);
        // What the master read for itself (a file for `sync`, say) may be anything, a
        // private key included: the job keeps it in memory only.
        let stored = match self.internal {
            true => &TaskResult {
                output: Value::Null,
                ..result.clone()
            },
            false => &result,
        };
        self.runner
            .inner
            .journal
            .result(&self.job.job_id, index as u32, sequence, stored);
        lock(&self.report).record(result.clone());
        let _ = self.events.send(JobEvent::Result(Box::new(result)));
    }

    fn unreachable(&self, index: usize, step_name: &str, node: &str, reason: &str) {
        self.master_verdict(index, step_name, node, TaskStatus::Unreachable, reason);
    }

    /// A result the master records for a node it could not hand the step to.
    pub(super) fn master_verdict(
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

    pub(super) fn skip(&self, index: usize, node: &str) {
        let now = unix_ms_now();
        let record = NodeStepRecord {
            node: node.to_string(),
            step_index: index as u32,
            state: NodeStepState::Skipped,
            dispatched_unix_ms: now,
            finished_unix_ms: Some(now),
            note: Some("not started: the rollout stopped".to_string()),
        };
        self.runner
            .inner
            .journal
            .node_step(&self.job.job_id, &record);
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
}

/// Why a step did not reach its node.
enum StepRefused {
    /// Its message would pass the bound a node reads (bytes).
    TooLarge(usize),
    NotConnected(NotConnected),
}

#[cfg(test)]
mod tests {
    use weft_taskbook::bundle::Bundle;
    use weft_taskbook::objects::JobRetention;
    use weft_taskbook::{TaskBook, Vars};

    use super::*;
    use crate::core::events::EventLog;
    use crate::core::node_registry::{NodeRecord, NodeRegistry};
    use crate::core::objects::ObjectRegistry;
    use crate::core::run::{JobRunner, RunRequest, RunnerConfig};
    use crate::core::secret_box::SecretBox;
    use crate::core::sessions::{NodeSessions, ToNode};
    use crate::store::SqliteStore;

    #[tokio::test]
    async fn a_step_no_node_could_read_is_never_sent() {
        let store = SqliteStore::open_in_memory().unwrap();
        let sessions = Arc::new(NodeSessions::default());
        let registry = NodeRegistry::new(store.clone());
        let mut handles = Vec::new();
        for name in ["n0", "n1"] {
            registry.put(&NodeRecord::named(name)).await.unwrap();
            handles.push(sessions.open(name));
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
        let source = "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: t}\nspec:\n  steps:\n    - tasks: [{ping: {}}]\n";
        let blob = "x".repeat(MAX_MESSAGE_BYTES);
        let mut events = runner
            .start(RunRequest {
                bundle: Bundle {
                    taskbook_file: "site.yml".into(),
                    files: [("site.yml".to_string(), source.into())].into(),
                },
                extra_vars: vec![Vars::from_iter([("blob".to_string(), blob.into())])],
                ..RunRequest::default()
            })
            .await
            .unwrap();
        let report = loop {
            match events.recv().await {
                Some(JobEvent::Finished(report)) => break report,
                Some(_) => {}
                None => panic!("the job never finished"),
            }
        };
        for handle in &mut handles {
            assert!(
                !matches!(handle.to_node.try_recv(), Ok(ToNode::RunStep(_))),
                "a node got the step"
            );
        }
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
}
