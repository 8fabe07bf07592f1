//! The etcd store against real etcd processes on loopback: the conformance suite every
//! backend passes, on one member and on three, and a master that keeps its state in etcd
//! and refuses a master of another cluster on it.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::cluster::Cluster;
use common::etcd::{missing_etcd, EtcdCluster, EtcdSecurity};
use tokio_stream::StreamExt;
use weft_master::store::conformance::{self, next_event};
use weft_master::store::{EtcdStore, EventKind, Precondition, Store, StoreError};

/// Says why a test cannot run here, in a line the test summary is searched for.
fn skipped(test: &str) -> bool {
    match missing_etcd() {
        Some(reason) => {
            eprintln!("SKIPPED {test}: {reason}");
            true
        }
        None => false,
    }
}

async fn start_etcd(size: usize) -> EtcdCluster {
    tokio::task::spawn_blocking(move || EtcdCluster::start(size))
        .await
        .expect("etcd starts")
}

async fn connect(etcd: &EtcdCluster) -> EtcdStore {
    EtcdStore::connect(&etcd.settings())
        .await
        .unwrap_or_else(|error| panic!("connect: {error}\n{}", etcd.logs()))
}

/// Every case checks revisions from 0, so each gets an etcd of its own; when the next
/// case asks for a store, the last one is over and its etcd goes.
async fn conformance_on(size: usize) {
    let current = Mutex::new(None);
    let current = &current;
    conformance::run_conformance(|| async move {
        let etcd = start_etcd(size).await;
        let store = connect(&etcd).await;
        *current.lock().unwrap() = Some(etcd);
        store
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_on_one_member() {
    if skipped("conformance_on_one_member") {
        return;
    }
    conformance_on(1).await;
}

/// The client spreads requests over the members: reads, preconditions and watches must
/// hold whichever member answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_on_three_members() {
    if skipped("conformance_on_three_members") {
        return;
    }
    conformance_on(3).await;
}

/// Two masters on different members of one cluster see one store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_share_one_history() {
    if skipped("members_share_one_history") {
        return;
    }
    let etcd = start_etcd(3).await;
    let urls = etcd.client_urls();
    let first = EtcdStore::connect(&etcd.settings_for(&urls[..1]))
        .await
        .expect("connect m0");
    let third = EtcdStore::connect(&etcd.settings_for(&urls[2..]))
        .await
        .expect("connect m2");
    let mut events = third.watch("/nodes/", 0).await.expect("watch");
    assert_eq!(
        first
            .put("/nodes/a", b"1".to_vec(), Precondition::Absent)
            .await,
        Ok(1)
    );
    let seen = third.get("/nodes/a").await.expect("get").expect("present");
    assert_eq!(seen.mod_revision, 1);
    assert!(
        third
            .put("/nodes/a", b"2".to_vec(), Precondition::Absent)
            .await
            .is_err(),
        "the key exists whichever member is asked"
    );
    let event = next_event(&mut events).await.expect("event");
    assert_eq!((event.revision, event.kind), (1, EventKind::Put));
}

#[test]
fn master_keeps_its_state_in_etcd() {
    if skipped("master_keeps_its_state_in_etcd") {
        return;
    }
    let etcd = EtcdCluster::start(1);
    let init_args = etcd.init_args();
    let init_args: Vec<&str> = init_args.iter().map(String::as_str).collect();
    let mut cluster = Cluster::start_with(&["n1"], &init_args);
    assert!(!cluster.master_dir().join("store.db").exists());

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let nodes = runtime.block_on(async {
        let store = connect(&etcd).await;
        store.list("/nodes/").await.expect("list")
    });
    assert!(
        nodes.iter().any(|node| node.key == "/nodes/n1"),
        "n1 is in etcd: {nodes:?}"
    );

    cluster.kill_master();
    cluster.start_master();
    let names: Vec<_> = cluster.nodes().iter().map(|n| n["name"].clone()).collect();
    assert_eq!(names, ["n1"], "a restarted master reads the nodes back");

    // A master of another `weft master init` (not `--another-master`) pointed at the
    // same etcd has another cluster key, which the first start wrote the check for.
    let stranger = Cluster::init(&init_args);
    let (code, stderr) = stranger.master_refusal();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("does not open the check value in this master's store"),
        "{stderr}"
    );
}

/// Needs no etcd: nothing listens on the endpoint. On plain http, which the master also
/// warns about at its start.
#[test]
fn master_names_an_unreachable_etcd() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let cluster = Cluster::init(&[
        "--store",
        "etcd",
        "--etcd-endpoints",
        &endpoint,
        "--etcd-insecure",
    ]);
    let output = cluster
        .command(&["master", "--vpn", "off"])
        .arg("--data-dir")
        .arg(cluster.master_dir())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains(&endpoint), "{stderr}");
    assert!(stderr.contains("check that etcd runs"), "{stderr}");
    assert!(stderr.contains("plain http (--etcd-insecure)"), "{stderr}");
}

/// etcd started as the README says admits only clients with a certificate of its CA:
/// not one without a certificate over TLS, nor one of another CA, nor plain http.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_refuses_clients_without_its_client_certificate() {
    if skipped("etcd_refuses_clients_without_its_client_certificate") {
        return;
    }
    let etcd = start_etcd(1).await;
    let pki = etcd.pki.as_ref().expect("etcd with client certificates");
    let https_url = etcd.client_urls()[0].clone();

    let ca = std::fs::read(&pki.ca_cert).unwrap();
    let server_only = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_tls(
            etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(ca)),
        );
    let refusal = match etcd_client::Client::connect([&https_url], Some(server_only)).await {
        Ok(mut client) => client.get("/", None).await.err(),
        Err(error) => Some(error),
    };
    assert!(
        refusal.is_some(),
        "etcd answered a client without a certificate"
    );

    let other_ca = tempfile::tempdir().unwrap();
    let stranger = common::etcd::TestPki::generate(other_ca.path());
    let mut settings = etcd.settings();
    let files = settings.etcd_tls.as_mut().unwrap();
    files.cert = stranger.client_cert;
    files.key = stranger.client_key;
    let Err(refusal) = EtcdStore::connect(&settings).await else {
        panic!("etcd answered a client of another CA");
    };
    assert!(
        refusal.to_string().contains("--trusted-ca-file signed"),
        "says which certificates to check: {refusal}"
    );

    let plain = etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_secs(5));
    let http_url = https_url.replacen("https://", "http://", 1);
    let refusal = match etcd_client::Client::connect([&http_url], Some(plain)).await {
        Ok(mut client) => client.get("/", None).await.err(),
        Err(error) => Some(error),
    };
    assert!(
        refusal.is_some(),
        "etcd answered plain http on its TLS port"
    );

    // The test's own client, with the right certificate, is admitted: the refusals above
    // are etcd's judgement of the certificates, not a cluster that answers nobody.
    connect(&etcd)
        .await
        .current_revision()
        .await
        .expect("a revision");
}

/// `weft master init --store etcd` refuses plain http unless the operator says
/// --etcd-insecure, and then warns; the master on it warns again at every start.
#[test]
fn plain_http_to_etcd_needs_etcd_insecure_and_warns() {
    if skipped("plain_http_to_etcd_needs_etcd_insecure_and_warns") {
        return;
    }
    let etcd = EtcdCluster::start_with(1, EtcdSecurity::PlainHttp);
    let dir = tempfile::tempdir().unwrap();
    let init = |data_dir: &str, insecure: &[&str]| {
        common::weft()
            .env("HOME", dir.path())
            .args(["master", "init", "--name", "m1", "--store", "etcd"])
            .arg("--data-dir")
            .arg(dir.path().join(data_dir))
            .arg("--etcd-endpoints")
            .arg(etcd.client_urls().join(","))
            .args(insecure)
            .output()
            .unwrap()
    };
    let refused = init("refused", &[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("--client-cert-auth"),
        "says how to set up TLS: {stderr}"
    );
    assert!(stderr.contains("--etcd-insecure"), "{stderr}");
    assert!(!dir.path().join("refused").exists());

    let accepted = init("master", &["--etcd-insecure"]);
    let stderr = String::from_utf8_lossy(&accepted.stderr);
    assert!(accepted.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: etcd is reached over plain http"),
        "{stderr}"
    );

    let init_args = etcd.init_args();
    let init_args: Vec<&str> = init_args.iter().map(String::as_str).collect();
    let mut cluster = Cluster::start_with(&[], &init_args);
    cluster.kill_master();
    cluster.start_master();
    cluster.kill_master();
    let log = cluster.master_log();
    assert_eq!(
        log.matches("plain http (--etcd-insecure)").count(),
        2,
        "a warning at each of two starts: {log}"
    );
}

/// A watcher nobody reads falls behind; once compaction passes it, it ends with
/// `Compacted` after the events it was still sent, as on sqlite.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lagging_watcher_ends_with_compacted() {
    if skipped("lagging_watcher_ends_with_compacted") {
        return;
    }
    // Large enough that the unread events overflow etcd's buffers and HTTP/2's windows,
    // which is when etcd stops sending and the watcher lags.
    const WRITES: u64 = 400;
    const VALUE_BYTES: usize = 128 * 1024;
    let etcd = start_etcd(1).await;
    let store = connect(&etcd).await;
    let mut events = store.watch("/", 0).await.expect("watch");
    for write in 0..WRITES {
        store
            .put("/k", vec![write as u8; VALUE_BYTES], Precondition::None)
            .await
            .expect("put");
    }
    store.compact(WRITES).await.expect("compact");
    let mut expected_revision = 1;
    let error = loop {
        match next_event(&mut events).await {
            Ok(event) => {
                assert_eq!(event.revision, expected_revision);
                expected_revision += 1;
            }
            Err(error) => break error,
        }
    };
    assert_eq!(
        error,
        StoreError::Compacted {
            requested: expected_revision - 1,
            oldest: WRITES
        }
    );
    assert!(
        expected_revision < WRITES,
        "the watcher should have fallen behind"
    );
    let end = tokio::time::timeout(Duration::from_secs(10), events.next()).await;
    assert!(matches!(end, Ok(None)), "the stream ends after an error");
}
