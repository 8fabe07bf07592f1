//! `weft master rotate-ca` against a real master, a real minion and real certificates:
//! during the overlap the node and the admin renew onto the new CA while the cluster
//! keeps working, and after `--finish` certificates of the old CA are refused.
//!
//! Runs with the test-only `WEFT_TEST_CERT_LIFETIME`, so renewals come within a minute.

mod common;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use common::cluster::{assert_one_task_runs_on_node_a, assert_success, Cluster};
use weft_master::core::pki::{leaf_der_from_pem, ClusterCa};
use weft_minion::identity::MinionIdentity;
use weft_proto::credentials::ClientCredentials;
use weft_taskbook::state_file;

const TEST_LIFETIME: &str = "60";
/// How the master refuses an admin certificate of a trusted CA that it never gave out.
const UNLISTED: &str = "one of the cluster's admin credentials";
/// How long the test waits for renewals the lifetime above makes happen.
const PATIENCE: Duration = Duration::from_secs(180);

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

fn master_ca(cluster: &Cluster) -> ClusterCa {
    let dir = cluster.master_dir();
    ClusterCa::from_pem(&read(&dir.join("ca.pem")), &read(&dir.join("ca.key"))).unwrap()
}

fn node_credentials(cluster: &Cluster) -> ClientCredentials {
    let identity: MinionIdentity =
        state_file::read(&cluster.minion_dir("node-a").join("identity.yaml")).unwrap();
    identity.credentials
}

fn issued_by(ca: &ClusterCa, cert_pem: &str) -> bool {
    ca.has_issued(&leaf_der_from_pem(cert_pem).unwrap())
}

fn rotate_ca(cluster: &Cluster, args: &[&str]) -> std::process::Output {
    cluster
        .command(&["master", "rotate-ca", "--data-dir"])
        .arg(cluster.master_dir())
        .args(args)
        .output()
        .unwrap()
}

fn admin_nodes(cluster: &Cluster, admin_file: &Path) -> std::process::Output {
    cluster
        .command(&["nodes", "--config"])
        .arg(admin_file)
        .output()
        .unwrap()
}

fn restart_master(cluster: &mut Cluster) {
    cluster.kill_master();
    cluster.start_master();
}

/// Polls (each poll an admin call, which renews the admin's certificate when due)
/// until `done` holds with node-a online.
fn wait_for(cluster: &Cluster, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let nodes = cluster.nodes();
        if nodes[0]["online"] == true && done() {
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
fn the_cluster_ca_rotates_with_an_overlap_and_the_old_ca_is_refused_after_finish() {
    let mut cluster =
        Cluster::start_with_env(&["node-a"], &[("WEFT_TEST_CERT_LIFETIME", TEST_LIFETIME)]);
    let old_ca = master_ca(&cluster);
    let old_admin_copy = cluster.dir.path().join("old-admin.yaml");
    std::fs::copy(cluster.admin_config(), &old_admin_copy).unwrap();

    assert_success(&rotate_ca(&cluster, &[]), "rotate-ca");
    let again = rotate_ca(&cluster, &[]);
    assert!(!again.status.success(), "a second rotation was started");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already under way"),
        "{again:?}"
    );
    let new_ca = master_ca(&cluster);
    assert_ne!(new_ca.cert_der(), old_ca.cert_der());
    restart_master(&mut cluster);

    // Overlap: the master keeps its certificate of the old CA, which the node (trusting
    // only the old CA until it renews) accepts; renewals come from the new CA and hand
    // out both CA certificates.
    let master_pem = read(&cluster.master_dir().join("master.pem"));
    assert!(issued_by(&old_ca, &master_pem));
    wait_for(
        &cluster,
        "the node's and the admin's renewal onto the new CA",
        || {
            let admin: ClientCredentials = state_file::read(&cluster.admin_config()).unwrap();
            issued_by(&new_ca, &node_credentials(&cluster).cert_pem)
                && issued_by(&new_ca, &admin.cert_pem)
        },
    );
    for credentials in [
        node_credentials(&cluster),
        state_file::read(&cluster.admin_config()).unwrap(),
    ] {
        assert!(credentials.ca_cert_pem.contains(new_ca.cert_pem()));
        assert!(credentials.ca_cert_pem.contains(old_ca.cert_pem()));
    }
    assert_one_task_runs_on_node_a(&cluster, "run during the overlap");
    // A certificate the old CA issues now for the listed admin passes the handshake
    // during the overlap, and is refused only because the master never listed it.
    let fresh_of_old_ca = old_ca.issue_admin_cert("admin", SystemTime::now()).unwrap();
    let mut forged: ClientCredentials = state_file::read(&cluster.admin_config()).unwrap();
    forged.cert_pem = fresh_of_old_ca.cert_pem;
    forged.key_pem = fresh_of_old_ca.key_pem;
    let forged_file = cluster.dir.path().join("old-ca-admin.yaml");
    state_file::write_private(&forged_file, &forged).unwrap();
    let unlisted = admin_nodes(&cluster, &forged_file);
    assert!(!unlisted.status.success());
    assert!(
        String::from_utf8_lossy(&unlisted.stderr).contains(UNLISTED),
        "{unlisted:?}"
    );
    // A node joining now, with a token pinning the CA the master serves, gets a
    // certificate of the new CA straight away.
    let token = cluster.token(1);
    cluster.join("node-b", &token, "role=web");
    cluster.start_minion("node-b");
    cluster.wait_online(&["node-a", "node-b"]);
    let node_b: MinionIdentity =
        state_file::read(&cluster.minion_dir("node-b").join("identity.yaml")).unwrap();
    assert!(issued_by(&new_ca, &node_b.credentials.cert_pem));

    assert_success(&rotate_ca(&cluster, &["--finish"]), "rotate-ca --finish");
    assert!(!cluster.master_dir().join("ca-previous.pem").exists());
    assert!(!rotate_ca(&cluster, &["--finish"]).status.success());
    restart_master(&mut cluster);
    // The master issued itself a certificate of the new CA at its start.
    let master_pem = read(&cluster.master_dir().join("master.pem"));
    assert!(issued_by(&new_ca, &master_pem));
    assert!(!issued_by(&old_ca, &master_pem));
    cluster.wait_online(&["node-a", "node-b"]);
    assert_one_task_runs_on_node_a(&cluster, "run after the finish");

    // The saved admin file of the old CA is refused, and so is a certificate the old CA
    // issued during the overlap for the listed admin: refused in the handshake, before the
    // master looks at who is calling.
    let old_admin = admin_nodes(&cluster, &old_admin_copy);
    assert!(
        !old_admin.status.success(),
        "the old admin file was accepted"
    );
    let refused = admin_nodes(&cluster, &forged_file);
    assert!(
        !refused.status.success(),
        "a certificate of the old CA was accepted"
    );
    let refusal = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refusal.contains(UNLISTED),
        "expected a refusal in the handshake, not as an unlisted admin: {refusal}"
    );
}
