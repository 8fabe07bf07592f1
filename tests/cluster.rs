//! A real master and three real minion processes on loopback: rollouts in batches and
//! windows, results across nodes, run_once, unreachable nodes, and a master killed in
//! the middle of a run.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{
    assert_interrupted_once, assert_success, start_interruptible_run, taskbook, Cluster,
};
use serde_json::Value;

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

/// Each result's (node, start, end) in ms, for tasks named `name`.
fn intervals(report: &Value, name: &str) -> Vec<(String, u64, u64)> {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["task"] == name)
        .map(|r| {
            let start = r["started_unix_ms"].as_u64().unwrap();
            let end = start + r["duration_ms"].as_f64().unwrap().ceil() as u64;
            (r["node"].as_str().unwrap().to_string(), start, end)
        })
        .collect()
}

/// The most intervals that overlap at any instant.
fn max_concurrency(intervals: &[(String, u64, u64)]) -> usize {
    let mut edges: Vec<(u64, i32)> = intervals
        .iter()
        .flat_map(|(_, start, end)| [(*start, 1), (*end, -1)])
        .collect();
    // An end and a start at the same instant do not overlap.
    edges.sort_by_key(|(at, delta)| (*at, *delta));
    let (mut running, mut most) = (0i32, 0i32);
    for (_, delta) in edges {
        running += delta;
        most = most.max(running);
    }
    most as usize
}

#[test]
fn batches_never_overlap_and_a_window_of_two_runs_at_most_two() {
    let cluster = Cluster::start(&NODES);
    let serial = taskbook(
        cluster.dir.path(),
        "serial",
        r#"apiVersion: weft/v1
kind: TaskBook
metadata: {name: serial}
spec:
  steps:
    - name: one at a time
      nodes: {all: true}
      rollout: {batch: 1}
      tasks:
        - name: work
          command: sleep 0.4
"#,
    );
    let (report, output) = cluster.run(&serial, &[]);
    assert_success(&output, "serial run");
    let work = intervals(&report, "work");
    assert_eq!(work.len(), 3, "{report:#}");
    assert_eq!(max_concurrency(&work), 1, "batches overlapped: {work:?}");
    assert_eq!(report["failed"], false);

    let window = taskbook(
        cluster.dir.path(),
        "window",
        r#"apiVersion: weft/v1
kind: TaskBook
metadata: {name: window}
spec:
  steps:
    - name: two at a time
      rollout: {batch: 2, mode: window}
      vars:
        seconds: {node-a: 0.3, node-b: 1.2, node-c: 0.3}
      tasks:
        - name: work
          command: "sleep {{ seconds[node.name] }}"
"#,
    );
    let (report, output) = cluster.run(&window, &[]);
    assert_success(&output, "window run");
    let work = intervals(&report, "work");
    assert_eq!(work.len(), 3, "{report:#}");
    assert_eq!(
        max_concurrency(&work),
        2,
        "the window was not two wide: {work:?}"
    );
    // In a window the third node starts when the first finishes, not when both have.
    let by_node = |name: &str| work.iter().find(|(n, _, _)| n == name).unwrap().clone();
    let (_, _, a_end) = by_node("node-a");
    let (_, _, b_end) = by_node("node-b");
    let (_, c_start, _) = by_node("node-c");
    assert!(c_start < b_end && c_start + 50 >= a_end, "{work:?}");

    let jobs = cluster.admin_json(&["jobs"]);
    assert_eq!(jobs.as_array().unwrap().len(), 2, "{jobs:#}");
    assert!(jobs
        .as_array()
        .unwrap()
        .iter()
        .all(|j| j["state"] == "succeeded"));
}

#[test]
fn results_registered_on_one_node_are_read_on_others_and_run_once_runs_once() {
    let cluster = Cluster::start(&NODES);
    let out = cluster.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let book = taskbook(
        cluster.dir.path(),
        "registered",
        r#"apiVersion: weft/v1
kind: TaskBook
metadata: {name: registered}
spec:
  steps:
    - name: make a secret on the db node
      nodes: {selector: {role: db}}
      tasks:
        - name: generate
          command: echo s3cret-from-db
          register: generated
    - name: everyone reads it
      tasks:
        - name: once for all
          shell: "echo {{ node.name }} >> {{ out }}/once"
          run_once: true
          register: once
        - name: copy it
          copy:
            content: "{{ nodes['node-a'].register.generated.stdout }} on {{ node.name }}\n"
            dest: "{{ out }}/{{ node.name }}.txt"
"#,
    );
    let out_var = format!("out={}", out.display());
    let (report, output) = cluster.run(&book, &["-e", &out_var]);
    assert_success(&output, "run");
    for node in NODES {
        let text = std::fs::read_to_string(out.join(format!("{node}.txt"))).unwrap();
        assert_eq!(text, format!("s3cret-from-db on {node}\n"));
    }
    assert_eq!(
        std::fs::read_to_string(out.join("once")).unwrap(),
        "node-a\n"
    );
    let skipped: Vec<&Value> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["task"] == "once for all" && r["status"] == "skipped")
        .collect();
    assert_eq!(skipped.len(), 2, "{report:#}");
    assert!(skipped[0]["msg"]
        .as_str()
        .unwrap()
        .contains("runs on node-a"));

    // The job is kept with every result.
    let job_id = report["job"].as_str().unwrap();
    let job = cluster.admin_json(&["job", "show", job_id]);
    assert_eq!(job["state"], "succeeded");
    assert_eq!(
        job["report"]["results"].as_array().unwrap().len(),
        report["results"].as_array().unwrap().len()
    );
}

#[test]
fn a_node_that_goes_away_mid_run_is_unreachable_and_the_run_ends() {
    let mut cluster = Cluster::start(&NODES);
    let book = taskbook(
        cluster.dir.path(),
        "slow",
        r#"apiVersion: weft/v1
kind: TaskBook
metadata: {name: slow}
spec:
  steps:
    - name: slow on c
      vars:
        seconds: {node-a: 0, node-b: 0, node-c: 30}
      tasks:
        - name: wait
          command: "sleep {{ seconds[node.name] }}"
    - name: after
      tasks:
        - name: still here
          ping: {}
"#,
    );
    let run = cluster.spawn_run(&book, &["-o", "json"]);
    std::thread::sleep(Duration::from_secs(2));
    let killed_at = Instant::now();
    cluster.kill_minion("node-c");
    let output = run.join().unwrap();
    assert!(
        killed_at.elapsed() < Duration::from_secs(20),
        "the run hung on the lost node"
    );
    assert_eq!(
        output.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let recap_c = report["recap"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["node"] == "node-c")
        .unwrap();
    assert_eq!(recap_c["unreachable"], 1, "{report:#}");
    let pinged: Vec<&Value> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["task"] == "still here")
        .collect();
    assert_eq!(pinged.len(), 2, "the other nodes went on: {report:#}");
}

#[test]
fn a_master_killed_mid_run_leaves_an_interrupted_job_and_no_task_runs_twice() {
    let mut cluster = Cluster::start(&NODES);
    let mut run = cluster.command(&["run", "taskbook", "--config"]);
    run.arg(cluster.admin_config());
    let (out, run) = start_interruptible_run(&cluster, run, &NODES);
    cluster.kill_master();
    let output = run.join().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "the CLI says the master went away: {stderr}"
    );
    assert!(stderr.contains("weft job show"), "{stderr}");

    cluster.start_master();
    cluster.wait_online(&NODES);
    let jobs = cluster.admin_json(&["jobs"]);
    let job_id = jobs[0]["job_id"].as_str().unwrap().to_string();
    assert_eq!(jobs[0]["state"], "interrupted");
    // The nodes finish the step they were in and report it after reconnecting.
    let deadline = Instant::now() + Duration::from_secs(20);
    let job = loop {
        let job = cluster.admin_json(&["job", "show", &job_id]);
        let results = job["report"]["results"].as_array().unwrap().len();
        if results == 9 {
            break job;
        }
        assert!(
            Instant::now() < deadline,
            "late results did not arrive: {job:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_interrupted_once(&job, &out, &NODES);
    for record in job["node_steps"].as_array().unwrap() {
        assert!(record["note"]
            .as_str()
            .unwrap()
            .contains("after the master stopped"));
    }
    // The store is intact: it still serves a new run.
    let ping = taskbook(
        cluster.dir.path(),
        "ping",
        "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: ping}\nspec:\n  steps:\n    - tasks:\n        - ping: {}\n",
    );
    let (report, output) = cluster.run(&ping, &[]);
    assert_success(&output, "run after restart");
    assert_eq!(report["results"].as_array().unwrap().len(), 3);
}

#[test]
fn nodes_facts_and_removal() {
    let cluster = Cluster::start(&NODES[..2]);
    let nodes = cluster.nodes();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0]["labels"]["role"], "db");
    let facts = cluster.admin(&["facts", "node-a"]);
    assert_success(&facts, "facts");
    let facts: Value = serde_json::from_slice(&facts.stdout).unwrap();
    assert!(facts["hostname"].is_string(), "{facts:#}");
    let show = cluster.admin(&["node", "show", "node-b"]);
    assert_success(&show, "node show");
    assert!(String::from_utf8_lossy(&show.stdout).contains("state:           online"));

    assert_success(&cluster.admin(&["node", "remove", "node-b"]), "node remove");
    let names: Vec<Value> = cluster.nodes().iter().map(|n| n["name"].clone()).collect();
    assert_eq!(names, ["node-a"]);
    let missing = cluster.admin(&["node", "show", "node-b"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no node `node-b`"));
    // The removed node's agent is refused from now on and stays out.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(cluster.nodes().len(), 1);
    let log = std::fs::read_to_string(cluster.dir.path().join("minion-node-b.log")).unwrap();
    assert!(log.contains("revoked"), "{log}");
}

#[test]
fn daemons_log_to_daily_files_with_a_main_file_pointing_at_today() {
    let dir = tempfile::tempdir().unwrap();
    let (data, logs) = (dir.path().join("master"), dir.path().join("logs"));
    let port = common::free_port();
    let init = common::weft()
        .env("HOME", dir.path())
        .args([
            "master",
            "init",
            "--public-endpoint",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert_success(&init, "master init");
    let mut master = common::weft()
        .args(["master", "--data-dir"])
        .arg(&data)
        .arg("--log-dir")
        .arg(&logs)
        .spawn()
        .unwrap();
    let main_log = logs.join("weft-master.log");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&main_log).is_ok_and(|text| text.contains("master listening")) {
        assert!(
            Instant::now() < deadline,
            "no log line in {}",
            main_log.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    master.kill().unwrap();
    master.wait().unwrap();
    let target = std::fs::read_link(&main_log).unwrap();
    let name = target.to_string_lossy();
    // weft-master.YYYY-MM-DD.log
    assert!(
        name.starts_with("weft-master.20") && name.ends_with(".log") && name.len() == 26,
        "{name}"
    );
}
