//! Work nobody types: Beacons on the minions fire Events, Triggers on the master run
//! TaskBooks on the node the event came from, once per cooldown, and never on the events
//! their own runs cause. Each minion runs in a mount namespace of its own with a small
//! tmpfs, so one node's disk can fill while the others' stay empty.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{assert_success, Cluster};
use common::stdout;
use serde_json::Value;

const NODES: [&str; 3] = ["m1", "m2", "m3"];
/// Where each minion mounts its own 1 MiB tmpfs.
const DISK: &str = "/run/weft-test-disk";
const WAIT: Duration = Duration::from_secs(60);

/// Why this machine cannot run the test, if it cannot.
fn missing_capability() -> Option<String> {
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root, for mount namespaces and tmpfs".into());
    }
    let probe = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mkdir -p {DISK} && mount -t tmpfs -o size=1m tmpfs {DISK}"
        ))
        .output();
    match probe {
        Ok(output) if output.status.success() => None,
        Ok(output) => Some(format!(
            "cannot mount a tmpfs in a mount namespace: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(error) => Some(format!("cannot run unshare: {error}")),
    }
}

fn wait_for(cluster: &Cluster, what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {WAIT:?}\nmaster log:\n{}\nm2 log:\n{}",
            cluster.master_log(),
            cluster.minion_log("m2")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |text| text.lines().count())
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

fn write(cluster: &Cluster, name: &str, content: &str) -> PathBuf {
    let path = cluster.dir.path().join(name);
    std::fs::write(&path, content).unwrap();
    path
}

#[test]
fn a_full_disk_on_one_node_runs_the_cleanup_there_once_per_cooldown() {
    if let Some(reason) = missing_capability() {
        eprintln!("skipped: {reason}");
        return;
    }
    let mut cluster = Cluster::init(&[]);
    cluster.start_master();
    let token = cluster.token(NODES.len() as u32);
    let mount = format!("mkdir -p {DISK} && mount -t tmpfs -o size=1m tmpfs {DISK} && exec \"$@\"");
    for name in NODES {
        cluster.join(name, &token, "role=web");
        cluster.start_minion_under(
            name,
            &[
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                &mount,
                "sh",
            ],
        );
    }
    cluster.wait_online(&NODES);

    let out = cluster.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let out = out.display();
    let objects = write(
        &cluster,
        "automation.yml",
        &format!(
            r#"apiVersion: weft/v1
kind: TaskBook
metadata: {{name: cleanup}}
spec:
  steps:
    - tasks:
        - shell: "rm -f {DISK}/fill && echo {{{{ event.type }}}} >> {out}/cleaned-{{{{ node.name }}}}"
---
apiVersion: weft/v1
kind: TaskBook
metadata: {{name: note}}
spec:
  steps:
    - tasks:
        - shell: "echo {{{{ event.type }}}} >> {out}/noted-{{{{ node.name }}}}"
---
apiVersion: weft/v1
kind: Beacon
metadata: {{name: tmp-disk}}
spec:
  nodes: {{all: true}}
  interval: 1s
  check: {{disk_usage: {{path: {DISK}, above_percent: 50}}}}
  event: disk.full
---
apiVersion: weft/v1
kind: Trigger
metadata: {{name: clean-disk}}
spec:
  event: {{type: disk.full, fields: {{path: {DISK}}}}}
  condition: {{count: 1, within: 10m}}
  cooldown: 1h
  run: {{taskbook: {{name: cleanup}}, on: event_node}}
---
apiVersion: weft/v1
kind: Trigger
metadata: {{name: note-disk}}
spec:
  event: {{type: disk.full}}
  run: {{taskbook: {{name: note}}, on: event_node}}
---
apiVersion: weft/v1
kind: Trigger
metadata: {{name: after-every-job}}
spec:
  event: {{type: job.finished}}
  run: {{taskbook: {{name: note}}, on: nodes, nodes: {{names: [m1]}}}}
"#
        ),
    );
    assert_success(
        &cluster.admin(&["apply", "-f", objects.to_str().unwrap()]),
        "apply",
    );
    wait_for(&cluster, "every minion runs the beacon", || {
        NODES
            .iter()
            .all(|n| cluster.minion_log(n).contains("beacon runs"))
    });

    let fill = write(
        &cluster,
        "fill.yml",
        &format!(
            "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {{name: fill}}\nspec:\n  steps:\n    - tasks:\n        - shell: \"dd if=/dev/zero of={DISK}/fill bs=64k count=12 2>/dev/null\"\n"
        ),
    );
    let (report, output) = cluster.run(&fill, &["--nodes", "m2"]);
    assert_success(&output, &format!("fill m2's disk: {report}"));

    let cleaned = |node: &str| {
        cluster
            .dir
            .path()
            .join("out")
            .join(format!("cleaned-{node}"))
    };
    let noted = |node: &str| cluster.dir.path().join("out").join(format!("noted-{node}"));
    wait_for(&cluster, "the cleanup ran on m2", || {
        lines(&cleaned("m2")) == 1
    });
    let full: Vec<Value> = events(&cluster, &["--type", "disk.full"]);
    assert_eq!(full.len(), 1, "{full:?}");
    assert_eq!(full[0]["source_node"], "m2");
    assert_eq!(full[0]["namespace"], "default");
    assert_eq!(full[0]["data"]["state"], "fired");
    assert!(full[0]["data"]["used_percent"].as_f64().unwrap() > 50.0);
    wait_for(&cluster, "the beacon cleared on m2", || {
        !events(&cluster, &["--type", "disk.full.cleared", "--node", "m2"]).is_empty()
    });

    // Full again within the cooldown: the note Trigger fires (so the event was
    // handled), the cleanup does not.
    let (_, output) = cluster.run(&fill, &["--nodes", "m2"]);
    assert_success(&output, "fill m2's disk again");
    wait_for(&cluster, "the second disk.full was handled", || {
        lines(&noted("m2")) == 2
    });
    assert_eq!(
        lines(&cleaned("m2")),
        1,
        "the cooldown let a second cleanup run"
    );
    for node in ["m1", "m3"] {
        assert_eq!(lines(&cleaned(node)), 0, "cleanup ran on {node}");
        assert_eq!(lines(&noted(node)).min(1), usize::from(node == "m1"));
    }

    // The job.finished Trigger ran after the others' jobs, and said no to its own.
    wait_for(
        &cluster,
        "a trigger's own events are refused, and said so",
        || {
            events(&cluster, &["--type", "trigger.loop_prevented"])
                .iter()
                .any(|e| e["data"]["trigger"] == "default/after-every-job")
        },
    );
    let jobs = cluster.admin_json(&["jobs"]);
    let by_trigger = |name: &str| {
        jobs.as_array()
            .unwrap()
            .iter()
            .filter(|job| job["origin"] == format!("Trigger default/{name}"))
            .count()
    };
    assert_eq!(by_trigger("clean-disk"), 1, "{jobs}");
    assert_eq!(by_trigger("note-disk"), 2, "{jobs}");
}

#[test]
fn a_cron_job_runs_on_its_minute_and_on_demand() {
    let cluster = Cluster::start(&["c1", "c2"]);
    let out = cluster.dir.path().join("cron-out");
    std::fs::create_dir_all(&out).unwrap();
    let objects = write(
        &cluster,
        "cron.yml",
        &format!(
            r#"apiVersion: weft/v1
kind: TaskBook
metadata: {{name: stamp}}
spec:
  steps:
    - tasks:
        - shell: "date +%s >> {}/{{{{ node.name }}}}"
---
apiVersion: weft/v1
kind: CronJob
metadata: {{name: every-minute}}
spec:
  schedule: "* * * * *"
  timezone: Europe/Berlin
  taskbook: {{name: stamp}}
  nodes: {{names: [c2]}}
  concurrency: forbid
  starting_deadline: 30s
"#,
            out.display()
        ),
    );
    assert_success(
        &cluster.admin(&["apply", "-f", objects.to_str().unwrap()]),
        "apply",
    );
    let listed = cluster.admin_json(&["get", "cronjobs"]);
    let next = listed[0]["status"]["next_schedule_unix_ms"]
        .as_u64()
        .unwrap();
    assert_eq!(next % 60_000, 0, "the next run is on a minute: {listed}");

    let manual = cluster.admin(&["cronjob", "run", "every-minute"]);
    assert_success(&manual, "weft cronjob run");
    let job_id = stdout(&manual).trim().to_string();
    assert!(!job_id.is_empty());

    let cron_jobs = || -> Vec<Value> {
        cluster
            .admin_json(&["jobs"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|job| job["origin"] == "CronJob default/every-minute")
            .cloned()
            .collect()
    };
    // One minute-scale wait: the scheduled run after the manual one.
    let deadline = Instant::now() + Duration::from_secs(80);
    while cron_jobs().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "no scheduled run within a minute and a bit\n{}",
            cluster.master_log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let listed = cluster.admin_json(&["get", "cronjob", "every-minute"]);
    let last = listed["status"]["last_schedule_unix_ms"].as_u64().unwrap();
    assert_eq!(last, next, "{listed}");
    assert_eq!(lines(&out.join("c1")), 0, "the override runs c2 only");
    wait_for(&cluster, "both runs wrote on c2", || {
        lines(&out.join("c2")) == 2
    });
}
