//! A node speaks for itself only. Each test holds a node's real certificate and talks
//! the vpnapi directly, as a compromised node could, against a real master (and real
//! minions where the honest side is needed), and checks that nothing it was not
//! entitled to say was stored.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{assert_success, taskbook, Cluster};
use common::stdout;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Streaming;
use weft_minion::identity::MinionIdentity;
use weft_proto::tls::connect_mtls;
use weft_proto::vpnapi::vpn_api_client::VpnApiClient;
use weft_proto::vpnapi::{
    master_message, node_message, BeaconEvent, Facts, Heartbeat, Hello, MasterMessage, NodeMessage,
    RunStep, StepDone, TaskResult,
};
use weft_taskbook::limits::MAX_REGISTERED_BYTES;
use weft_taskbook::state_file;

const WAIT: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn wait_for(cluster: &Cluster, what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {WAIT:?}\nmaster log:\n{}",
            cluster.master_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn events(cluster: &Cluster, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["events", "-o", "json", "--limit", "1000"];
    all.extend_from_slice(args);
    let output = cluster.admin(&all);
    assert_success(&output, "weft events");
    stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn apply(cluster: &Cluster, name: &str, yaml: &str) {
    let path = cluster.dir.path().join(name);
    std::fs::write(&path, yaml).unwrap();
    assert_success(
        &cluster.admin(&["apply", "-f", path.to_str().unwrap()]),
        &format!("apply {name}"),
    );
}

/// Nodes joined with real tokens and certificates, with no minion running.
fn join_silent(cluster: &Cluster, names: &[&str]) {
    let token = cluster.token(names.len() as u32);
    for name in names {
        cluster.join(name, &token, "role=web");
    }
}

/// A node's session driven by hand with the node's own certificate.
struct RawNode {
    name: String,
    to_master: mpsc::UnboundedSender<NodeMessage>,
    from_master: Streaming<MasterMessage>,
    barriers: u64,
}

fn message(kind: node_message::Kind) -> NodeMessage {
    NodeMessage { kind: Some(kind) }
}

impl RawNode {
    async fn connect(cluster: &Cluster, name: &str) -> RawNode {
        let identity: MinionIdentity =
            state_file::read(&cluster.minion_dir(name).join("identity.yaml")).unwrap();
        let credentials = identity.credentials;
        let channel = connect_mtls(
            &cluster.endpoint,
            &credentials.ca_cert_pem,
            &credentials.cert_pem,
            &credentials.key_pem,
        )
        .await
        .unwrap();
        let (to_master, outbound) = mpsc::unbounded_channel();
        to_master
            .send(message(node_message::Kind::Hello(Hello {
                weft_version: "raw".into(),
            })))
            .unwrap();
        let from_master = VpnApiClient::new(channel)
            .session(UnboundedReceiverStream::new(outbound))
            .await
            .unwrap()
            .into_inner();
        let mut node = RawNode {
            name: name.to_string(),
            to_master,
            from_master,
            barriers: 0,
        };
        node.send(node_message::Kind::Facts(Facts {
            facts_json: json!({"hostname": name}).to_string(),
        }));
        node
    }

    fn send(&mut self, kind: node_message::Kind) {
        self.to_master.send(message(kind)).unwrap();
    }

    fn result(&mut self, job_id: &str, step_index: u32, sequence: u32, task: &str) {
        self.result_with(job_id, step_index, sequence, task, json!({"ping": "pong"}));
    }

    fn result_with(
        &mut self,
        job_id: &str,
        step_index: u32,
        sequence: u32,
        task: &str,
        output: Value,
    ) {
        let result = json!({
            "node": "someone-else", "step": "forged", "task": task, "module": "ping",
            "location": "site.yml", "handler": false, "status": "ok", "items": [],
            "output": output, "attempts": 1, "started_unix_ms": 1, "duration_ms": 1.0
        });
        self.send(node_message::Kind::TaskResult(TaskResult {
            job_id: job_id.into(),
            step_index,
            sequence,
            result_json: result.to_string(),
        }));
    }

    fn done(&mut self, job_id: &str, step_index: u32, failed: bool) {
        self.send(node_message::Kind::StepDone(StepDone {
            job_id: job_id.into(),
            step_index,
            failed,
            registered_json: String::new(),
        }));
    }

    /// The next step the master sends; beacons and peers are passed over.
    async fn next_step(&mut self) -> RunStep {
        loop {
            let message = tokio::time::timeout(WAIT, self.from_master.message())
                .await
                .expect("a step within the wait")
                .expect("the session holds")
                .expect("the session is open");
            if let Some(master_message::Kind::RunStep(step)) = message.kind {
                return step;
            }
        }
    }

    /// Returns once the master has handled everything this node sent before: a
    /// session's messages are handled in order, and the facts sent last show in
    /// `weft facts`.
    fn barrier(&mut self, cluster: &Cluster) {
        self.barriers += 1;
        let marker = self.barriers;
        self.send(node_message::Kind::Facts(Facts {
            facts_json: json!({"hostname": self.name, "barrier": marker}).to_string(),
        }));
        wait_for(cluster, "the master handled the node's messages", || {
            let output = cluster.admin(&["facts", &self.name]);
            output.status.success()
                && serde_json::from_slice::<Value>(&output.stdout)
                    .is_ok_and(|facts| facts["barrier"] == marker)
        });
    }
}

/// Before: the master took a node's report for any Beacon that existed, so a node
/// could fire Triggers (and run TaskBooks on other nodes) for checks it never ran,
/// and its data could name the beacon and state it liked.
#[test]
fn a_node_reports_only_for_beacons_that_select_it_and_its_data_stays_data() {
    let cluster = Cluster::start(&["node-c"]);
    join_silent(&cluster, &["node-a", "node-b"]);
    let out = cluster.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let out = out.display();
    apply(
        &cluster,
        "automation.yml",
        &format!(
            r#"apiVersion: weft/v1
kind: Beacon
metadata: {{name: beacon-a}}
spec:
  nodes: {{names: [node-a]}}
  interval: 1h
  check: {{disk_usage: {{path: /, above_percent: 100}}}}
  event: disk.a
---
apiVersion: weft/v1
kind: Beacon
metadata: {{name: beacon-b}}
spec:
  nodes: {{names: [node-b]}}
  interval: 1h
  check: {{disk_usage: {{path: /, above_percent: 100}}}}
  event: disk.b
---
apiVersion: weft/v1
kind: TaskBook
metadata: {{name: on-b}}
spec:
  steps:
    - tasks:
        - shell: "echo fired >> {out}/on-b"
---
apiVersion: weft/v1
kind: Trigger
metadata: {{name: on-b}}
spec:
  event: {{type: disk.b}}
  run: {{taskbook: {{name: on-b}}, on: nodes, nodes: {{names: [node-c]}}}}
---
apiVersion: weft/v1
kind: TaskBook
metadata: {{name: clean}}
spec:
  steps:
    - tasks:
        - assert:
            that: ["event.data.path in ['/', '/srv']"]
            fail_msg: "not a mount this cleanup knows"
        - shell:
            cmd: 'printf "%s %s %s" "$MOUNT" "{{{{ event.data.beacon }}}}" "{{{{ event.node }}}}" > {out}/cleaned'
            env: {{MOUNT: "{{{{ event.data.path }}}}"}}
---
apiVersion: weft/v1
kind: Trigger
metadata: {{name: clean}}
spec:
  event: {{type: disk.a}}
  run: {{taskbook: {{name: clean}}, on: nodes, nodes: {{names: [node-c]}}}}
"#
        ),
    );
    let rt = runtime();
    let mut node_a = rt.block_on(RawNode::connect(&cluster, "node-a"));
    let report = |beacon: &str, data: Value| {
        node_message::Kind::BeaconEvent(BeaconEvent {
            namespace: "default".into(),
            beacon: beacon.into(),
            fired: true,
            data_json: data.to_string(),
        })
    };
    // node-a speaks for node-b's Beacon, then for its own with data that names
    // another beacon, another state and another node.
    node_a.send(report("beacon-b", json!({"path": "/"})));
    node_a.send(report(
        "beacon-a",
        json!({"path": "/srv", "beacon": "beacon-b", "state": "cleared", "node": "node-b"}),
    ));
    node_a.barrier(&cluster);

    assert!(events(&cluster, &["--type", "disk.b"]).is_empty());
    let own = events(&cluster, &["--type", "disk.a"]);
    assert_eq!(own.len(), 1, "{own:?}");
    assert_eq!(own[0]["source_node"], "node-a");
    assert_eq!(own[0]["data"]["beacon"], "beacon-a");
    assert_eq!(own[0]["data"]["state"], "fired");
    assert!(cluster
        .master_log()
        .contains("Beacon default/beacon-b, which does not select it"));

    // The Trigger's TaskBook reads the node's data as data: checked, and passed to
    // the shell in the environment, never spliced into the command.
    let cleaned = cluster.dir.path().join("out").join("cleaned");
    wait_for(&cluster, "the clean Trigger ran", || cleaned.exists());
    assert_eq!(
        std::fs::read_to_string(&cleaned).unwrap(),
        "/srv beacon-a node-a"
    );
    std::fs::remove_file(&cleaned).unwrap();
    node_a.send(report("beacon-a", json!({"path": "/srv; touch /tmp/x"})));
    wait_for(&cluster, "the second clean run ended", || {
        let jobs = cluster.admin_json(&["jobs"]);
        let jobs = jobs.as_array().unwrap();
        jobs.len() == 2 && jobs.iter().all(|job| job["state"] != "running")
    });
    let jobs = cluster.admin_json(&["jobs"]);
    let mut states: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["state"].as_str().unwrap())
        .collect();
    // Job ids sort by the second they started in: two in one second, in either order.
    states.sort();
    assert_eq!(states, ["failed", "succeeded"], "{jobs}");
    assert!(!cleaned.exists(), "the unchecked path reached the shell");
    assert!(
        !std::path::Path::new(&format!("{out}/on-b")).exists(),
        "node-b's Trigger fired"
    );
    assert!(jobs
        .as_array()
        .unwrap()
        .iter()
        .all(|job| job["origin"] == "Trigger default/clean"));
}

fn job_show(cluster: &Cluster, job_id: &str) -> Value {
    cluster.admin_json(&["job", "show", job_id])
}

/// (step index, state) of each of `node`'s step records.
fn node_steps(job: &Value, node: &str) -> Vec<(u64, String)> {
    job["node_steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["node"] == node)
        .map(|r| {
            (
                r["step_index"].as_u64().unwrap(),
                r["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// (task, status, msg) of each of `node`'s results.
fn results(job: &Value, node: &str) -> Vec<(String, String, String)> {
    job["report"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["node"] == node)
        .map(|r| {
            (
                r["task"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
                r["msg"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Before: a node could send any number of results under any sequence (the master's
/// own verdict included), rewrite them, end its step twice, and after the job ended
/// rewrite its history and turn the master's `unreachable` into `ok`; and a node that
/// heartbeats but never ends its step held the job forever.
#[test]
fn a_nodes_results_are_bounded_final_and_its_step_has_a_deadline() {
    let cluster = Cluster::start(&[]);
    join_silent(&cluster, &["node-a"]);
    apply(
        &cluster,
        "config.yml",
        "apiVersion: weft/v1\nkind: Config\nmetadata: {name: default}\nspec:\n  step_timeout: 2s\n",
    );
    let book = taskbook(
        cluster.dir.path(),
        "two-steps",
        "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: two-steps}\nspec:\n  steps:\n    - name: first\n      tasks:\n        - ping: {}\n    - name: second\n      tasks:\n        - ping: {}\n",
    );
    let rt = runtime();
    let mut node_a = rt.block_on(RawNode::connect(&cluster, "node-a"));
    let run = cluster.spawn_run(&book, &[]);
    let first = rt.block_on(node_a.next_step());
    let job_id = first.job_id.clone();
    assert_eq!(first.step_index, 0);
    // Heavier than one store write holds: cut to size, not lost.
    let heavy = json!({"stdout": "x".repeat(4 * 1024 * 1024)});
    node_a.result_with(&job_id, 0, 0, "honest", heavy);
    node_a.result(&job_id, 0, 0, "rewritten while running");
    // One task: three results at most (the task's, and two the node adds on failures).
    node_a.result(&job_id, 0, 3, "one too many");
    node_a.result(&job_id, 0, u32::MAX / 2, "the master's own slot");
    node_a.done(&job_id, 0, false);
    node_a.result(&job_id, 0, 1, "after the end");
    node_a.done(&job_id, 0, true);
    // The second step: heartbeats, never an end.
    let second = rt.block_on(node_a.next_step());
    assert_eq!(
        (second.job_id.as_str(), second.step_index),
        (job_id.as_str(), 1)
    );
    node_a.send(node_message::Kind::Heartbeat(Heartbeat { unix_ms: 1 }));
    let output = run.join().unwrap();
    assert_eq!(output.status.code(), Some(2), "the job failed on node-a");

    // The job is over: the node tries to rewrite it.
    node_a.done(&job_id, 1, false);
    node_a.result(&job_id, 1, 0, "too late");
    node_a.result(&job_id, 0, 1, "history");
    node_a.barrier(&cluster);

    let job = job_show(&cluster, &job_id);
    assert_eq!(job["state"], "failed");
    assert_eq!(
        node_steps(&job, "node-a"),
        [(0, "ok".to_string()), (1, "unreachable".to_string())]
    );
    let results = results(&job, "node-a");
    assert_eq!(results.len(), 2, "{results:#?}");
    assert_eq!(results[0].0, "honest");
    let honest = &job["report"]["results"][0];
    assert_eq!(honest["node"], "node-a");
    assert_eq!(honest["step"], "first");
    assert!(
        honest["output"]
            .as_str()
            .is_some_and(|note| note.starts_with("(output left out")),
        "{honest}"
    );
    assert_eq!(results[1].1, "unreachable");
    assert!(
        results[1]
            .2
            .contains("no result within the step's deadline of 2s"),
        "{results:#?}"
    );
    // Refusals are logged, within bounds: a step's first refused result, then how
    // many; a session's first refused late report, then how many when it ends.
    drop(node_a);
    wait_for(&cluster, "the node's session ended", || {
        cluster.master_log().contains("late_refusals=5")
    });
    let log = cluster.master_log();
    for refusal in [
        "result 0 was reported already",
        "refusals=3",
        "a late report was refused",
    ] {
        assert!(log.contains(refusal), "`{refusal}` not in:\n{log}");
    }
    drop(rt);
}

/// Before: a real minion whose task outlasted any reasonable time held its job (and
/// any `concurrency: forbid` CronJob behind it) until it ended, and its results, once
/// in, replaced the master's verdict.
#[test]
fn a_minion_past_its_steps_deadline_is_given_up_and_its_late_results_are_refused() {
    let cluster = Cluster::start(&["node-b"]);
    apply(
        &cluster,
        "config.yml",
        "apiVersion: weft/v1\nkind: Config\nmetadata: {name: default}\nspec:\n  step_timeout: 2s\n",
    );
    let book = taskbook(
        cluster.dir.path(),
        "slow",
        "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: slow}\nspec:\n  steps:\n    - tasks:\n        - shell: sleep 8\n    - tasks:\n        - ping: {}\n",
    );
    let (report, output) = cluster.run(&book, &[]);
    assert_eq!(output.status.code(), Some(2), "{report:#}");
    let job_id = report["job"].as_str().unwrap().to_string();
    // The minion finishes the sleep and reports; the master refuses it.
    wait_for(&cluster, "the minion's late report came in", || {
        cluster.master_log().contains("a late report was refused")
    });
    let job = job_show(&cluster, &job_id);
    assert_eq!(job["state"], "failed");
    assert_eq!(
        node_steps(&job, "node-b"),
        [(0, "unreachable".to_string())],
        "the second step never started: {job:#}"
    );
    let results = results(&job, "node-b");
    assert_eq!(results.len(), 1, "{results:#?}");
    assert!(results[0]
        .2
        .contains("no result within the step's deadline of 2s"));
    // The minion is still a good node: the next run goes through.
    let ping = taskbook(
        cluster.dir.path(),
        "ping",
        "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: ping}\nspec:\n  steps:\n    - tasks:\n        - ping: {}\n",
    );
    let (_, output) = cluster.run(&ping, &[]);
    assert_success(&output, "a run after the deadline");
}

/// Before: a node that took its step and never ended it held a `concurrency: forbid`
/// CronJob forever: its one job never ended, so no later run started.
#[test]
fn a_stalled_node_does_not_hold_a_forbid_cron_job_forever() {
    let cluster = Cluster::start(&[]);
    join_silent(&cluster, &["node-a"]);
    let rt = runtime();
    let node_a = rt.block_on(RawNode::connect(&cluster, "node-a"));
    apply(
        &cluster,
        "cron.yml",
        r#"apiVersion: weft/v1
kind: Config
metadata: {name: default}
spec: {step_timeout: 2s}
---
apiVersion: weft/v1
kind: TaskBook
metadata: {name: ping}
spec:
  steps:
    - tasks:
        - ping: {}
---
apiVersion: weft/v1
kind: CronJob
metadata: {name: every-second}
spec:
  schedule: "* * * * * *"
  taskbook: {name: ping}
  nodes: {names: [node-a]}
  concurrency: forbid
"#,
    );
    let cron_jobs = || -> Vec<Value> {
        let mut jobs: Vec<Value> = cluster
            .admin_json(&["jobs"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|job| job["origin"] == "CronJob default/every-second")
            .cloned()
            .collect();
        jobs.sort_by_key(|job| job["started_unix_ms"].as_u64());
        jobs
    };
    wait_for(&cluster, "a second run of the CronJob", || {
        cron_jobs().len() >= 2
    });
    let first = &cron_jobs()[0];
    assert_eq!(first["state"], "failed", "{first:#}");
    let job = job_show(&cluster, first["job_id"].as_str().unwrap());
    let results = results(&job, "node-a");
    assert!(
        results[0]
            .2
            .contains("no result within the step's deadline of 2s"),
        "{results:#?}"
    );
    drop(node_a);
    drop(rt);
}

/// The reason of each `node.lost` event, oldest first.
fn lost_reasons(cluster: &Cluster) -> Vec<String> {
    events(cluster, &["--type", "node.lost"])
        .iter()
        .map(|e| e["data"]["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Before: a node could hand on registered results of any size, which the master
/// kept and sent on to later steps and, for TaskBooks that read `nodes`, to every
/// other node.
#[test]
fn a_node_handing_on_oversized_registered_results_is_cut_off() {
    let cluster = Cluster::start(&[]);
    join_silent(&cluster, &["node-a"]);
    let rt = runtime();
    let mut node_a = rt.block_on(RawNode::connect(&cluster, "node-a"));
    let registered = json!({"blob": "x".repeat(MAX_REGISTERED_BYTES)}).to_string();
    node_a.send(node_message::Kind::StepDone(StepDone {
        job_id: "20261205-000000-0000".into(),
        step_index: 0,
        failed: false,
        registered_json: registered,
    }));
    wait_for(&cluster, "the session ended", || {
        lost_reasons(&cluster).iter().any(|reason| {
            reason.contains("of registered results, more than the 8.0 MiB a step may")
        })
    });
    drop(node_a);
    drop(rt);
}

/// Before: a node could send as many messages as it liked; every beacon event among
/// them was a write to the store.
#[test]
fn a_node_flooding_its_session_is_cut_off() {
    let cluster = Cluster::start(&[]);
    join_silent(&cluster, &["node-a"]);
    let rt = runtime();
    let mut node_a = rt.block_on(RawNode::connect(&cluster, "node-a"));
    let ended = rt.block_on(async {
        for _ in 0..1_000_000 {
            if node_a
                .to_master
                .send(message(node_message::Kind::Heartbeat(Heartbeat {
                    unix_ms: 1,
                })))
                .is_err()
            {
                break;
            }
        }
        loop {
            match tokio::time::timeout(WAIT, node_a.from_master.message()).await {
                Err(_) => break false,
                Ok(Ok(Some(_))) => continue,
                Ok(_) => break true,
            }
        }
    });
    assert!(ended, "the master kept the session");
    wait_for(&cluster, "the node is lost", || {
        lost_reasons(&cluster)
            .iter()
            .any(|reason| reason.contains("faster than a session allows"))
    });
}
