use super::*;
use crate::store::SqliteStore;

fn job(job_id: &str, state: JobState, started_unix_ms: u64) -> JobRecord {
    JobRecord {
        job_id: job_id.into(),
        taskbook: "site".into(),
        file: "site.yml".into(),
        check_mode: false,
        state,
        started_unix_ms,
        finished_unix_ms: None,
        steps: vec![JobStepPlan {
            name: "step 1".into(),
            nodes: vec!["a".into(), "b".into()],
            max_results: 3,
        }],
        message: None,
        origin: None,
        commits: BTreeMap::new(),
        secrets_read: None,
        input_jobs: Vec::new(),
    }
}

fn node_step(node: &str, state: NodeStepState) -> NodeStepRecord {
    NodeStepRecord {
        node: node.into(),
        step_index: 0,
        state,
        dispatched_unix_ms: 1,
        finished_unix_ms: None,
        note: None,
    }
}

fn result(node: &str, task: &str) -> TaskResult {
    let mut result = unreachable_result(node, "step 1", "site.yml", "x", 1);
    result.status = TaskStatus::Ok;
    result.task = task.into();
    result
}

/// Job records are stored as JSON: one written before kinds were typed reads back.
#[test]
fn a_stored_job_origin_reads_back_with_its_kind() {
    let stored = r#"{"job_id":"j1","taskbook":"site","file":"site.yml","check_mode":false,"state":"succeeded","started_unix_ms":1,"steps":[],"origin":{"kind":"Trigger","namespace":"default","name":"disk","event_id":"e1"}}"#;
    let record: JobRecord = serde_json::from_str(stored).unwrap();
    let origin = record.origin.as_ref().unwrap();
    assert_eq!(origin.kind, Kind::Trigger);
    assert_eq!(origin.describe(), "Trigger default/disk");
    assert_eq!(serde_json::to_string(&record).unwrap(), stored);
}

#[tokio::test]
async fn the_journal_writes_everything_and_a_repeated_report_is_stored_once() {
    let store = SqliteStore::open_in_memory().unwrap();
    let journal = JobJournal::start(store.clone());
    journal.job(&job("j1", JobState::Running, 1));
    for _ in 0..2 {
        journal.result("j1", 0, 0, &result("a", "first"));
    }
    journal.result("j1", 0, 1, &result("a", "second"));
    journal.node_step("j1", &node_step("a", NodeStepState::Running));
    journal.node_step("j1", &node_step("a", NodeStepState::Ok));
    journal.flush().await;

    let detail = JobStore::new(store).detail("j1").await.unwrap();
    let tasks: Vec<&str> = detail
        .report
        .results
        .iter()
        .map(|r| r.task.as_str())
        .collect();
    assert_eq!(tasks, ["first", "second"]);
    assert_eq!(detail.node_steps, [node_step("a", NodeStepState::Ok)]);
    assert_eq!(
        detail.report.recap.len(),
        2,
        "both planned nodes are in the recap"
    );
}

#[tokio::test]
async fn a_record_too_large_to_store_costs_only_itself() {
    let store = SqliteStore::open_in_memory().unwrap();
    let journal = JobJournal::start(store.clone());
    journal.job(&job("j1", JobState::Running, 1));
    let mut huge = result("a", "huge");
    huge.output = Value::String("x".repeat(crate::store::MAX_WRITE_BYTES));
    journal.result("j1", 0, 0, &huge);
    journal.result("j1", 0, 1, &result("a", "after"));
    journal.node_step("j1", &node_step("b", NodeStepState::Ok));
    journal.flush().await;

    let detail = JobStore::new(store).detail("j1").await.unwrap();
    let tasks: Vec<&str> = detail
        .report
        .results
        .iter()
        .map(|r| r.task.as_str())
        .collect();
    assert_eq!(tasks, ["after"]);
    assert_eq!(detail.node_steps, [node_step("b", NodeStepState::Ok)]);
}

#[tokio::test]
async fn a_restart_interrupts_running_jobs_and_keeps_late_reports() {
    let store = SqliteStore::open_in_memory().unwrap();
    let journal = JobJournal::start(store.clone());
    journal.job(&job("done", JobState::Succeeded, 1));
    journal.job(&job("live", JobState::Running, 2));
    journal.node_step("live", &node_step("a", NodeStepState::Ok));
    journal.node_step("live", &node_step("b", NodeStepState::Running));
    journal.flush().await;

    let jobs = JobStore::new(store.clone());
    assert_eq!(jobs.interrupt_unfinished(9).await.unwrap(), ["live"]);
    let detail = jobs.detail("live").await.unwrap();
    assert_eq!(detail.job.state, JobState::Interrupted);
    assert!(detail.job.message.unwrap().contains("b (step 1)"));
    assert_eq!(detail.node_steps[1].state, NodeStepState::Interrupted);
    assert_eq!(jobs.get("done").await.unwrap().state, JobState::Succeeded);

    let late = LateReport::Result {
        sequence: 0,
        result: Box::new(result("b", "slow")),
    };
    let late_result = |sequence: u32, task: &str| LateReport::Result {
        sequence,
        result: Box::new(result("b", task)),
    };
    assert_eq!(
        jobs.record_late("live", "b", 0, late, 10).await.unwrap(),
        LateOutcome::Stored
    );
    // Sent again after another reconnect: the same is kept once, another is refused.
    assert_eq!(
        jobs.record_late("live", "b", 0, late_result(0, "slow"), 10)
            .await
            .unwrap(),
        LateOutcome::AlreadyStored
    );
    assert_eq!(
        jobs.record_late("live", "b", 0, late_result(0, "rewritten"), 10)
            .await
            .unwrap(),
        LateOutcome::Refused(ReportRefused::Rewritten(0))
    );
    assert_eq!(
        jobs.record_late("live", "b", 0, late_result(3, "one too many"), 10)
            .await
            .unwrap(),
        LateOutcome::Refused(ReportRefused::OutOfRange {
            sequence: 3,
            max_results: 3
        })
    );
    assert_eq!(
        jobs.record_late("live", "b", 0, LateReport::Done { failed: false }, 11)
            .await
            .unwrap(),
        LateOutcome::Stored
    );
    // The node's end closes the step: nothing new, not even another end; the
    // same sent again is no news.
    assert_eq!(
        jobs.record_late("live", "b", 0, late_result(1, "after the end"), 11)
            .await
            .unwrap(),
        LateOutcome::Refused(ReportRefused::StepEnded("ok"))
    );
    assert_eq!(
        jobs.record_late("live", "b", 0, LateReport::Done { failed: true }, 11)
            .await
            .unwrap(),
        LateOutcome::Refused(ReportRefused::StepEnded("ok"))
    );
    assert_eq!(
        jobs.record_late("live", "b", 0, late_result(0, "slow"), 11)
            .await
            .unwrap(),
        LateOutcome::AlreadyStored
    );
    assert_eq!(
        jobs.record_late("live", "b", 0, LateReport::Done { failed: false }, 11)
            .await
            .unwrap(),
        LateOutcome::AlreadyStored
    );
    let detail = jobs.detail("live").await.unwrap();
    assert_eq!(detail.report.results.len(), 1);
    assert_eq!(detail.node_steps[1].state, NodeStepState::Ok);
    assert!(detail.node_steps[1]
        .note
        .as_deref()
        .unwrap()
        .contains("after the master stopped"));
    // A node cannot report on a step it was never given.
    let stray = LateReport::Result {
        sequence: 5,
        result: Box::new(result("c", "stray")),
    };
    assert_eq!(
        jobs.record_late("live", "c", 0, stray, 12).await.unwrap(),
        LateOutcome::Refused(ReportRefused::NotAssigned)
    );
    assert_eq!(
        jobs.record_late("live", "a", 7, LateReport::Done { failed: true }, 12)
            .await
            .unwrap(),
        LateOutcome::Refused(ReportRefused::NotAssigned)
    );
    // A step that ended before the master stopped keeps its record.
    assert_eq!(
        jobs.record_late("live", "a", 0, LateReport::Done { failed: true }, 12)
            .await
            .unwrap(),
        LateOutcome::Refused(ReportRefused::StepEnded("ok"))
    );
    let detail = jobs.detail("live").await.unwrap();
    assert_eq!(detail.report.results.len(), 1);
    assert_eq!(detail.report.results[0].task, "slow");
    assert_eq!(detail.node_steps[0].state, NodeStepState::Ok);
    // Nothing more to interrupt on the next restart.
    assert!(jobs.interrupt_unfinished(12).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_running_job_and_the_masters_verdict_take_no_late_report() {
    let store = SqliteStore::open_in_memory().unwrap();
    let journal = JobJournal::start(store.clone());
    journal.job(&job("live", JobState::Running, 1));
    journal.node_step("live", &node_step("a", NodeStepState::Running));
    journal.job(&job("over", JobState::Failed, 2));
    journal.node_step("over", &node_step("a", NodeStepState::Unreachable));
    journal.flush().await;
    let jobs = JobStore::new(store);
    for (job_id, refused) in [
        ("live", ReportRefused::GivenUp),
        ("over", ReportRefused::StepEnded("unreachable")),
    ] {
        let late = LateReport::Result {
            sequence: 0,
            result: Box::new(result("a", "late")),
        };
        assert_eq!(
            jobs.record_late(job_id, "a", 0, late, 5).await.unwrap(),
            LateOutcome::Refused(refused.clone())
        );
        assert_eq!(
            jobs.record_late(job_id, "a", 0, LateReport::Done { failed: false }, 5)
                .await
                .unwrap(),
            LateOutcome::Refused(refused)
        );
        let detail = jobs.detail(job_id).await.unwrap();
        assert!(detail.report.results.is_empty());
        assert!(detail.node_steps[0].note.is_none());
    }
}

#[tokio::test]
async fn retention_keeps_the_newest_and_the_young_and_never_a_running_job() {
    let store = SqliteStore::open_in_memory().unwrap();
    let journal = JobJournal::start(store.clone());
    let day_ms = 86_400_000;
    let now = SystemTime::UNIX_EPOCH + Duration::from_millis(100 * day_ms);
    for (id, state, age_days) in [
        ("j1", JobState::Running, 90),
        ("j2", JobState::Failed, 50),
        ("j3", JobState::Succeeded, 3),
        ("j4", JobState::Succeeded, 2),
        ("j5", JobState::Interrupted, 1),
    ] {
        journal.job(&job(id, state, (100 - age_days) * day_ms));
        journal.result(id, 0, 0, &result("a", "t"));
    }
    journal.flush().await;
    let jobs = JobStore::new(store.clone());
    let retention = JobRetention {
        max_jobs: 2,
        max_age: weft_taskbook::duration::Duration::from_secs(30 * 86_400),
    };
    assert_eq!(jobs.sweep(&retention, now).await.unwrap(), 2);
    let left: Vec<String> = jobs
        .list(10)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.job_id)
        .collect();
    assert_eq!(left, ["j5", "j4", "j1"]);
    assert!(store.list("/job-results/j2/").await.unwrap().is_empty());
    assert!(store.list("/job-results/j3/").await.unwrap().is_empty());
}
