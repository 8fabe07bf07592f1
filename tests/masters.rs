//! Three masters on a real three-member etcd on loopback: one leads, the others stand
//! by; the leader is killed in the middle of a run, another takes over within seconds,
//! the run is marked interrupted with the late results kept, no task runs twice, the
//! nodes follow the new leader and it serves the next run.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{
    assert_interrupted_once, assert_success, start_interruptible_run, taskbook, Cluster,
};
use common::etcd::{missing_etcd, EtcdCluster};
use serde_json::Value;

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

/// A standby master beside the cluster's first one.
struct Standby {
    dir: PathBuf,
    process: Child,
}

impl Drop for Standby {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn free_endpoint() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

fn standby(cluster: &Cluster, name: &str, joins: &std::path::Path) -> Standby {
    let dir = cluster.dir.path().join(name);
    let init = cluster
        .command(&[
            "master",
            "init",
            "--name",
            name,
            "--public-endpoint",
            &free_endpoint(),
        ])
        .arg("--data-dir")
        .arg(&dir)
        .arg("--another-master")
        .arg(joins)
        .output()
        .unwrap();
    assert_success(&init, &format!("master init {name}"));
    let log = std::fs::File::create(cluster.dir.path().join(format!("{name}.log"))).unwrap();
    let process = cluster
        .command(&["master", "--vpn", "off"])
        .arg("--data-dir")
        .arg(&dir)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Standby { dir, process }
}

/// `weft masters -o json` with the given admin credentials.
fn masters(cluster: &Cluster, admin: &std::path::Path) -> Option<Value> {
    let output = admin_command(cluster, admin, &["masters", "-o", "json"])
        .output()
        .unwrap();
    output
        .status
        .success()
        .then(|| serde_json::from_slice(&output.stdout).unwrap())
}

fn leader(cluster: &Cluster, admin: &std::path::Path) -> Option<String> {
    masters(cluster, admin)?
        .as_array()?
        .iter()
        .find(|m| m["leader"] == true)
        .map(|m| m["name"].as_str().unwrap().to_string())
}

fn admin_command(cluster: &Cluster, admin: &std::path::Path, args: &[&str]) -> Command {
    let mut command = cluster.command(args);
    command.arg("--config").arg(admin);
    command
}

fn wait_for(what: &str, within: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < within, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

#[test]
fn another_master_takes_over_when_the_leader_dies_mid_run() {
    if let Some(reason) = missing_etcd() {
        eprintln!("SKIPPED another_master_takes_over_when_the_leader_dies_mid_run: {reason}");
        return;
    }
    let etcd = EtcdCluster::start(3);
    let init_args = etcd.init_args();
    let init_args: Vec<&str> = init_args.iter().map(String::as_str).collect();
    let mut cluster = Cluster::init(&init_args);
    cluster.start_master();
    let m1_admin = cluster.admin_config();
    wait_for("m1 leads", Duration::from_secs(20), || {
        leader(&cluster, &m1_admin).as_deref() == Some("m1")
    });
    let m2 = standby(&cluster, "m2", &cluster.master_dir());
    let m3 = standby(&cluster, "m3", &m2.dir);
    // m3's credentials list every master: m3, m2, m1.
    let admin = m3.dir.join("admin.yaml");
    wait_for("three masters registered", Duration::from_secs(20), || {
        masters(&cluster, &admin).is_some_and(|m| m.as_array().unwrap().len() == 3)
    });
    wait_for("the standbys know m1 leads", Duration::from_secs(5), || {
        leader(&cluster, &admin).as_deref() == Some("m1")
    });

    let token = cluster.token(3);
    for (index, node) in NODES.iter().enumerate() {
        cluster.join(node, &token, &format!("index={index}"));
        cluster.start_minion(node);
    }
    cluster.wait_online(&NODES);
    // Asked through a standby first, the CLI finds the leader.
    let standby_admin = m2.dir.join("admin.yaml");
    let run = admin_command(&cluster, &standby_admin, &["run", "taskbook"]);
    let (out, run) = start_interruptible_run(&cluster, run, &NODES);
    cluster.kill_master();
    let took = wait_for("another master leads", Duration::from_secs(15), || {
        leader(&cluster, &admin).is_some_and(|l| l != "m1")
    });
    eprintln!("a new leader after {took:?}");
    let output = run.join().unwrap();
    assert_eq!(output.status.code(), Some(1), "the CLI lost the leader");

    // The nodes follow the new leader and hand in the step they finished.
    let online = || {
        let output = admin_command(&cluster, &admin, &["nodes", "-o", "json"])
            .output()
            .unwrap();
        output.status.success()
            && serde_json::from_slice::<Value>(&output.stdout)
                .unwrap()
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| n["online"] == true)
                .count()
                == NODES.len()
    };
    wait_for(
        "the nodes reach the new leader",
        Duration::from_secs(30),
        online,
    );
    let admin_json = |args: &[&str]| -> Value {
        let output = admin_command(&cluster, &admin, args)
            .args(["-o", "json"])
            .output()
            .unwrap();
        assert_success(&output, &args.join(" "));
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let jobs = admin_json(&["jobs"]);
    let job_id = jobs[0]["job_id"].as_str().unwrap().to_string();
    assert_eq!(jobs[0]["state"], "interrupted");
    let mut job = Value::Null;
    wait_for("the late results", Duration::from_secs(20), || {
        job = admin_json(&["job", "show", &job_id]);
        job["report"]["results"].as_array().unwrap().len() == 9
    });
    assert_interrupted_once(&job, &out, &NODES);

    // The new leader runs the next TaskBook.
    let ping = taskbook(
        cluster.dir.path(),
        "ping",
        "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: ping}\nspec:\n  steps:\n    - tasks:\n        - ping: {}\n",
    );
    let output = admin_command(&cluster, &admin, &["run", "taskbook", "-o", "json"])
        .arg(&ping)
        .output()
        .unwrap();
    assert_success(&output, "run on the new leader");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["results"].as_array().unwrap().len(), 3);
    // The mesh has one master address: a second master with it on is refused.
    let with_mesh = cluster
        .command(&["master", "--data-dir"])
        .arg(&m3.dir)
        .output()
        .unwrap();
    assert!(!with_mesh.status.success());
    assert!(
        String::from_utf8_lossy(&with_mesh.stderr).contains("run with `--vpn off`"),
        "{}",
        String::from_utf8_lossy(&with_mesh.stderr)
    );
    drop((m2, m3, etcd));
}
