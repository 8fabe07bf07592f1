//! Certificates over time against a real master, real minions and real certificates:
//! nodes, admins and the master renew theirs, the cluster outlives its first
//! certificates, and an expired, replaced or revoked certificate is refused.
//!
//! The renewal test runs with the test-only `WEFT_TEST_CERT_LIFETIME`, so that a
//! certificate lives a minute instead of a year.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use common::cluster::{assert_one_task_runs_on_node_a, assert_success, Cluster};
use serde_json::Value;
use weft_minion::identity::MinionIdentity;
use weft_proto::credentials::{cert_validity, ClientCredentials};
use weft_proto::tls::connect_mtls;
use weft_proto::vpnapi::vpn_api_client::VpnApiClient;
use weft_taskbook::state_file;

/// Long enough for a run to fit between renewals on a loaded machine, short enough
/// for a test to see certificates expire.
const TEST_LIFETIME: &str = "60";
/// How long the test waits for something that the lifetime above makes happen.
const PATIENCE: Duration = Duration::from_secs(180);

fn credentials(path: &Path) -> ClientCredentials {
    state_file::read(path).unwrap()
}

fn node_credentials(cluster: &Cluster, name: &str) -> ClientCredentials {
    let identity: MinionIdentity =
        state_file::read(&cluster.minion_dir(name).join("identity.yaml")).unwrap();
    identity.credentials
}

fn not_after(cert_pem: &str) -> SystemTime {
    cert_validity(cert_pem).unwrap().1
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// What the vpnapi says to a node presenting `credentials`, to a call that first checks
/// the certificate is the node's current one.
fn vpnapi_answer(cluster: &Cluster, credentials: &ClientCredentials) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let channel = connect_mtls(
            &cluster.endpoint,
            &credentials.ca_cert_pem,
            &credentials.cert_pem,
            &credentials.key_pem,
        )
        .await
        .map_err(|error| error.to_string())?;
        VpnApiClient::new(channel)
            .check_peer(weft_proto::vpnapi::CheckPeerRequest {
                node_name: "node-a".into(),
            })
            .await
            .map(|_| ())
            .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
    })
}

/// Polls `done` (each poll is an admin call, which renews the admin's certificate when
/// due) until it holds.
fn wait_for(cluster: &Cluster, what: &str, mut done: impl FnMut(&[Value]) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let nodes = cluster.nodes();
        if done(&nodes) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen: {nodes:?}\nmaster log:\n{}",
            cluster.master_log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn nodes_admins_and_the_master_renew_and_the_cluster_outlives_its_first_certificates() {
    let mut cluster = Cluster::start_with_env(
        &["node-a", "node-b"],
        &[("WEFT_TEST_CERT_LIFETIME", TEST_LIFETIME)],
    );
    // node-b stops now and so never renews: its certificate must lapse.
    cluster.kill_minion("node-b");
    let first_admin = credentials(&cluster.admin_config());
    let first_node = node_credentials(&cluster, "node-a");
    let first_master_pem =
        std::fs::read_to_string(cluster.master_dir().join("master.pem")).unwrap();
    let old_admin_copy = cluster.dir.path().join("old-admin.yaml");
    std::fs::copy(cluster.admin_config(), &old_admin_copy).unwrap();
    std::fs::set_permissions(
        cluster.admin_config(),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let nodes = cluster.nodes();
    let shown_expiry = nodes[0]["cert_not_after_unix_ms"].as_u64().unwrap();
    let first_node_expiry = not_after(&first_node.cert_pem);
    assert_eq!(
        shown_expiry / 1000,
        first_node_expiry
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        "weft nodes shows the node certificate's end"
    );

    // The node renews with a new key, and its old certificate is refused at once,
    // long before it expires.
    wait_for(&cluster, "the node's renewal", |nodes| {
        nodes[0]["cert_not_after_unix_ms"].as_u64() != Some(shown_expiry)
            && nodes[0]["online"] == true
    });
    let renewed_node = node_credentials(&cluster, "node-a");
    assert_ne!(renewed_node.key_pem, first_node.key_pem, "the key rotates");
    assert!(not_after(&renewed_node.cert_pem) > first_node_expiry);
    assert_eq!(
        mode(&cluster.minion_dir("node-a").join("identity.yaml")),
        0o600
    );
    assert!(SystemTime::now() < first_node_expiry);
    let refused = vpnapi_answer(&cluster, &first_node).unwrap_err();
    assert!(refused.contains("PermissionDenied"), "{refused}");
    // The renewed one gets past the certificate check to the call itself, which has
    // nothing to say about a mesh the test cluster runs without.
    let answered = vpnapi_answer(&cluster, &renewed_node).unwrap_err();
    assert!(answered.contains("FailedPrecondition"), "{answered}");

    // Past every first certificate's end: the admin's (renewed by the CLI calls
    // above), the master's and node-a's have all been replaced.
    let first_end = [
        not_after(&first_admin.cert_pem),
        not_after(&first_master_pem),
        first_node_expiry,
    ]
    .into_iter()
    .max()
    .unwrap();
    wait_for(&cluster, "the first certificates' end", |nodes| {
        SystemTime::now() > first_end + Duration::from_secs(1)
            && nodes
                .iter()
                .any(|n| n["name"] == "node-a" && n["online"] == true)
    });
    let renewed_admin = credentials(&cluster.admin_config());
    assert_ne!(renewed_admin.key_pem, first_admin.key_pem);
    assert!(not_after(&renewed_admin.cert_pem) > SystemTime::now());
    assert_eq!(
        mode(&cluster.admin_config()),
        0o640,
        "the file keeps its mode"
    );
    let master_pem = std::fs::read_to_string(cluster.master_dir().join("master.pem")).unwrap();
    assert!(not_after(&master_pem) > SystemTime::now());
    assert!(cluster.master_log().contains("master certificate renewed"));

    // A run works with nothing but renewed certificates.
    assert_one_task_runs_on_node_a(&cluster, "run after the first certificates expired");

    // The old admin file has expired: refused.
    let old_admin = cluster
        .command(&["nodes", "--config"])
        .arg(&old_admin_copy)
        .output()
        .unwrap();
    assert!(
        !old_admin.status.success(),
        "an expired admin certificate was accepted"
    );
    // node-b never renewed: its agent, started now, is turned away.
    assert!(SystemTime::now() > not_after(&node_credentials(&cluster, "node-b").cert_pem));
    cluster.start_minion("node-b");
    let deadline = Instant::now() + PATIENCE;
    while !cluster
        .minion_log("node-b")
        .contains("no session with the master")
    {
        assert!(
            Instant::now() < deadline,
            "{}",
            cluster.minion_log("node-b")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let node_b = cluster
        .nodes()
        .into_iter()
        .find(|node| node["name"] == "node-b")
        .unwrap();
    assert_eq!(node_b["online"], false);
}

#[test]
fn admins_are_created_listed_and_revoked_and_a_revoked_one_is_refused_at_once() {
    let cluster = Cluster::start(&[]);
    let alice_file = cluster.dir.path().join("alice.yaml");
    let created = cluster
        .command(&["admin", "create", "alice", "--file"])
        .arg(&alice_file)
        .arg("--config")
        .arg(cluster.admin_config())
        .output()
        .unwrap();
    assert_success(&created, "admin create alice");
    assert_eq!(mode(&alice_file), 0o600);
    let as_alice = |args: &[&str]| {
        cluster
            .command(args)
            .arg("--config")
            .arg(&alice_file)
            .output()
            .unwrap()
    };
    assert_success(&as_alice(&["nodes"]), "nodes as alice");

    let again = cluster.admin(&["admin", "create", "alice"]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("exists"), "{}", stderr(&again));
    let bad = cluster.admin(&["admin", "create", "Alice Smith"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("invalid admin name"),
        "{}",
        stderr(&bad)
    );

    // Printed credentials work as well as written ones.
    let printed = cluster.admin(&["admin", "create", "bob"]);
    assert_success(&printed, "admin create bob");
    let bob_file = cluster.dir.path().join("bob.yaml");
    std::fs::write(&bob_file, &printed.stdout).unwrap();

    let listed = cluster.admin_json(&["admin", "list"]);
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|admin| admin["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "alice", "bob"]);
    assert!(listed[1]["cert_not_after_unix_ms"].as_u64().unwrap() > 0);
    assert!(listed[1]["revoked_unix_ms"].is_null());

    assert_success(
        &cluster.admin(&["admin", "revoke", "alice"]),
        "revoke alice",
    );
    let refused = as_alice(&["nodes"]);
    assert!(!refused.status.success(), "a revoked admin was let in");
    assert!(stderr(&refused).contains("revoked"), "{}", stderr(&refused));
    let twice = cluster.admin(&["admin", "revoke", "alice"]);
    assert!(!twice.status.success());
    let listed = cluster.admin_json(&["admin", "list"]);
    assert!(listed[1]["revoked_unix_ms"].as_u64().is_some());

    // Any admin can revoke another, the first one included.
    let revoke_first = cluster
        .command(&["admin", "revoke", "admin", "--config"])
        .arg(&bob_file)
        .output()
        .unwrap();
    assert_success(&revoke_first, "bob revokes admin");
    let first = cluster.admin(&["nodes"]);
    assert!(!first.status.success());
    assert!(stderr(&first).contains("revoked"), "{}", stderr(&first));
    let as_bob = cluster
        .command(&["nodes", "--config"])
        .arg(&bob_file)
        .output()
        .unwrap();
    assert_success(&as_bob, "nodes as bob");

    // A name given out again gets new credentials; the revoked ones stay refused.
    let recreate = cluster
        .command(&["admin", "create", "alice", "--config"])
        .arg(&bob_file)
        .output()
        .unwrap();
    assert_success(&recreate, "alice again");
    assert!(!as_alice(&["nodes"]).status.success());
}

#[test]
fn a_certificate_of_this_ca_that_was_never_listed_is_refused() {
    let cluster = Cluster::start(&[]);
    // An admin certificate signed by the cluster's own CA but never given out by the
    // master (as one made with the CA key by hand, or before a revocation): refused.
    let dir = cluster.master_dir();
    let ca = weft_master::core::pki::ClusterCa::from_pem(
        &std::fs::read_to_string(dir.join("ca.pem")).unwrap(),
        &std::fs::read_to_string(dir.join("ca.key")).unwrap(),
    )
    .unwrap();
    let issued = ca.issue_admin_cert("admin", SystemTime::now()).unwrap();
    let mut unlisted = credentials(&cluster.admin_config());
    unlisted.cert_pem = issued.cert_pem;
    unlisted.key_pem = issued.key_pem;
    let file = cluster.dir.path().join("unlisted.yaml");
    state_file::write_private(&file, &unlisted).unwrap();
    let output = cluster
        .command(&["nodes", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("not (or no longer) one of the cluster's admin credentials"),
        "{}",
        stderr(&output)
    );
}
