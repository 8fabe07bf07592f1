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

/// An etcd of `members` members and the cluster's first master, m1, leading on it.
fn first_master(members: usize) -> (EtcdCluster, Cluster) {
    let etcd = EtcdCluster::start(members);
    let init_args = etcd.init_args();
    let init_args: Vec<&str> = init_args.iter().map(String::as_str).collect();
    let mut cluster = Cluster::init(&init_args);
    cluster.start_master();
    let m1_admin = cluster.admin_config();
    wait_for("m1 leads", Duration::from_secs(20), || {
        leader(&cluster, &m1_admin).as_deref() == Some("m1")
    });
    (etcd, cluster)
}

#[test]
fn another_master_takes_over_when_the_leader_dies_mid_run() {
    if let Some(reason) = missing_etcd() {
        eprintln!("SKIPPED another_master_takes_over_when_the_leader_dies_mid_run: {reason}");
        return;
    }
    let (etcd, mut cluster) = first_master(3);
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

/// Before: a join sent to a standby was decided there, where no session is seen, so a
/// token holder could take the name of a node online on the leader; and `weft node
/// remove` served by a standby (any admin client may ask one; it answers) deleted the
/// node's record while the node's session on the leader lived on, still taking work.
/// Now a standby sends the joining node to the leader (the minion follows, pinned to
/// the same CA), and the leader ends the session of a node removed through any master.
#[test]
fn joins_go_to_the_leader_and_a_node_removed_through_a_standby_loses_its_session() {
    if let Some(reason) = missing_etcd() {
        eprintln!("SKIPPED joins_go_to_the_leader_and_a_node_removed_through_a_standby_loses_its_session: {reason}");
        return;
    }
    let (_etcd, mut cluster) = first_master(1);
    let m2 = standby(&cluster, "m2", &cluster.master_dir());
    let m2_admin = m2.dir.join("admin.yaml");
    let mut m2_endpoint = String::new();
    wait_for("m2 registered", Duration::from_secs(20), || {
        let Some(masters) = masters(&cluster, &m2_admin) else {
            return false;
        };
        let m2 = masters
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "m2");
        m2_endpoint = m2.map_or(String::new(), |m| {
            m["public_endpoint"].as_str().unwrap().to_string()
        });
        !m2_endpoint.is_empty()
    });
    wait_for("m2 knows m1 leads", Duration::from_secs(5), || {
        leader(&cluster, &m2_admin).as_deref() == Some("m1")
    });

    // The token names the standby: it refuses, and the minion joins through the leader.
    let token = cluster.token(1);
    let mut fields: Vec<&str> = token.split('.').collect();
    let base64url = Command::new("sh")
        .args([
            "-c",
            "printf %s \"$1\" | base64 -w0 | tr '+/' '-_' | tr -d '='",
            "-",
        ])
        .arg(&m2_endpoint)
        .output()
        .unwrap();
    let m2_field = String::from_utf8(base64url.stdout).unwrap();
    fields[3] = &m2_field;
    cluster.join("node-a", &fields.join("."), "");
    cluster.start_minion("node-a");
    cluster.wait_online(&["node-a"]);
    let m2_log = std::fs::read_to_string(cluster.dir.path().join("m2.log")).unwrap();
    assert!(
        !m2_log.contains("node joined"),
        "the standby decided a join"
    );

    // Removed through the standby itself, not the leader the CLI would find.
    let admin: weft_proto::credentials::ClientCredentials =
        weft_taskbook::state_file::read(&m2_admin).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let channel = weft_proto::tls::connect_mtls(
                &m2_endpoint,
                &admin.ca_cert_pem,
                &admin.cert_pem,
                &admin.key_pem,
            )
            .await
            .unwrap();
            weft_proto::adminapi::admin_api_client::AdminApiClient::new(channel)
                .remove_node(weft_proto::adminapi::RemoveNodeRequest {
                    node_name: "node-a".into(),
                })
                .await
                .unwrap();
        });
    // The leader ended the session; the node, reconnecting, hears it was revoked.
    wait_for("node-a's session ends", Duration::from_secs(30), || {
        cluster.minion_log("node-a").contains("revoked")
    });
    assert!(
        cluster
            .master_log()
            .contains("the node was removed: its session ends"),
        "{}",
        cluster.master_log()
    );
}

fn credentials_endpoints(admin: &std::path::Path) -> Vec<String> {
    let credentials: weft_proto::credentials::ClientCredentials =
        weft_taskbook::state_file::read(admin).unwrap();
    credentials.master_endpoints
}

/// Before, the credentials `weft master init` wrote listed only the first master, and
/// masters added later never reached them: with the first master dead every admin
/// command failed ("cannot connect to the master at ...") while two healthy masters,
/// one of them the new leader, were running. Now the file learns every master on each
/// command, the leader's first, and the CLI goes on to the next one that answers.
#[test]
fn admin_commands_go_on_through_the_other_masters_when_the_first_dies() {
    if let Some(reason) = missing_etcd() {
        eprintln!(
            "SKIPPED admin_commands_go_on_through_the_other_masters_when_the_first_dies: {reason}"
        );
        return;
    }
    let (_etcd, mut cluster) = first_master(1);
    let admin = cluster.admin_config();
    std::fs::set_permissions(&admin, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    assert_eq!(credentials_endpoints(&admin), [cluster.endpoint.clone()]);
    let _m2 = standby(&cluster, "m2", &cluster.master_dir());
    let _m3 = standby(&cluster, "m3", &cluster.master_dir());
    wait_for("three masters registered", Duration::from_secs(20), || {
        masters(&cluster, &admin).is_some_and(|m| m.as_array().unwrap().len() == 3)
    });
    // The next command records them, the leader's first, and keeps the file's mode and
    // its credentials.
    assert_success(&cluster.admin(&["nodes"]), "weft nodes");
    let endpoints = credentials_endpoints(&admin);
    assert_eq!(endpoints.len(), 3, "{endpoints:?}");
    assert_eq!(endpoints[0], cluster.endpoint);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&admin).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o640);

    let token = cluster.token(1);
    cluster.join("node-a", &token, "");
    cluster.start_minion("node-a");
    cluster.wait_online(&["node-a"]);

    cluster.kill_master();
    wait_for(
        "`weft nodes` through another master",
        Duration::from_secs(20),
        || cluster.admin(&["nodes"]).status.success(),
    );
    wait_for("a new leader", Duration::from_secs(30), || {
        matches!(leader(&cluster, &admin).as_deref(), Some("m2" | "m3"))
    });
    cluster.wait_online(&["node-a"]);
    // The leader now comes first, so the next command need not wait on the dead one.
    let endpoints = credentials_endpoints(&admin);
    assert_ne!(endpoints[0], cluster.endpoint, "{endpoints:?}");
    assert!(
        endpoints.contains(&cluster.endpoint),
        "m1 is still a master: {endpoints:?}"
    );
    let listed = masters(&cluster, &admin).unwrap();
    for master in listed.as_array().unwrap() {
        let expected = master["name"] != "m1";
        assert_eq!(master["reachable"], expected, "{listed}");
    }

    let ping = taskbook(
        cluster.dir.path(),
        "ping",
        "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: ping}\nspec:\n  steps:\n    - tasks:\n        - ping: {}\n",
    );
    let (_, run) = cluster.run(&ping, &[]);
    assert_success(&run, "a run with the first master dead");
    let group = cluster.dir.path().join("group.yml");
    std::fs::write(
        &group,
        "apiVersion: weft/v1\nkind: NodeGroup\nmetadata: {name: edge}\nspec: {nodes: [node-a]}\n",
    )
    .unwrap();
    assert_success(
        &cluster.admin(&["apply", "-f", group.to_str().unwrap()]),
        "apply with the first master dead",
    );

    // Back, it stands by; every command keeps working.
    cluster.start_master();
    wait_for("m1 reachable again", Duration::from_secs(20), || {
        masters(&cluster, &admin).is_some_and(|listed| {
            listed
                .as_array()
                .unwrap()
                .iter()
                .all(|master| master["reachable"] == true)
        })
    });
    let (_, run) = cluster.run(&ping, &[]);
    assert_success(&run, "a run after the first master came back");
}

/// A credentials file the CLI cannot rewrite (here on a read-only mount) is left as it
/// was: the command still runs, and says why the masters were not recorded.
#[test]
fn a_refresh_that_cannot_be_written_leaves_the_credentials_as_they_were() {
    if let Some(reason) = missing_etcd() {
        eprintln!("SKIPPED a_refresh_that_cannot_be_written_leaves_the_credentials_as_they_were: {reason}");
        return;
    }
    let (_etcd, cluster) = first_master(1);
    let admin_dir = cluster.dir.path().join("admin");
    std::fs::create_dir(&admin_dir).unwrap();
    let admin = admin_dir.join("admin.yaml");
    std::fs::copy(cluster.admin_config(), &admin).unwrap();
    let before = std::fs::read(&admin).unwrap();
    let _m2 = standby(&cluster, "m2", &cluster.master_dir());
    wait_for("two masters registered", Duration::from_secs(20), || {
        cluster
            .admin_json(&["masters"])
            .as_array()
            .is_some_and(|listed| listed.len() == 2)
    });
    let script = format!(
        "mount --bind {dir} {dir} && mount -o remount,bind,ro {dir} && exec \"$0\" nodes --config {dir}/admin.yaml",
        dir = admin_dir.display()
    );
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .arg(env!("CARGO_BIN_EXE_weft"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("mount:") {
        eprintln!("SKIPPED a_refresh_that_cannot_be_written_leaves_the_credentials_as_they_were: no read-only bind mount here: {stderr}");
        return;
    }
    assert_success(&output, "weft nodes with read-only credentials");
    assert!(
        stderr.contains("could not be recorded"),
        "the failed refresh is reported: {stderr}"
    );
    assert_eq!(std::fs::read(&admin).unwrap(), before);
    // Writable again, the next command records both masters.
    assert_success(
        &admin_command(&cluster, &admin, &["nodes"])
            .output()
            .unwrap(),
        "weft nodes",
    );
    assert_eq!(credentials_endpoints(&admin).len(), 2);
}
