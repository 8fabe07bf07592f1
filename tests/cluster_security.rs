//! Security against a real master: every refusal is checked together with what it must
//! not leave behind (no node, no identity, no spent token, no job).

mod common;

use std::path::Path;
use std::time::Duration;

use common::cluster::{assert_success, taskbook, Cluster};
use tonic::Code;
use weft_minion::identity::MinionIdentity;
use weft_proto::adminapi::admin_api_client::AdminApiClient;
use weft_proto::adminapi::{
    CreateTokenRequest, ListNodesRequest, RemoveNodeRequest, RunTaskBookRequest,
};
use weft_proto::bootstrap_token::BootstrapToken;
use weft_proto::credentials::ClientCredentials;
use weft_proto::pubapi::pub_api_client::PubApiClient;
use weft_proto::pubapi::JoinRequest;
use weft_proto::tls::{connect_mtls, connect_pinned};
use weft_proto::vpnapi::vpn_api_client::VpnApiClient;
use weft_proto::vpnapi::NodeMessage;
use weft_taskbook::limits::MAX_MESSAGE_BYTES;
use weft_taskbook::state_file;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn node_names(cluster: &Cluster) -> Vec<String> {
    cluster
        .nodes()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect()
}

/// A refused join: exit status 1, the message, and no identity written.
fn assert_join_refused(cluster: &Cluster, name: &str, token: &str, expected: &str) {
    let output = cluster.try_join(name, token, "");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(expected),
        "expected `{expected}` in: {stderr}"
    );
    assert!(!cluster.minion_dir(name).join("identity.yaml").exists());
}

/// `weft1.<id>.<secret>.<endpoint>.<hash>` with field `index` replaced.
fn with_field(token: &str, index: usize, value: &str) -> String {
    let mut fields: Vec<&str> = token.split('.').collect();
    fields[index] = value;
    fields.join(".")
}

fn credentials(path: &Path) -> ClientCredentials {
    state_file::read(path).unwrap()
}

fn node_credentials(cluster: &Cluster, name: &str) -> ClientCredentials {
    let identity: MinionIdentity =
        state_file::read(&cluster.minion_dir(name).join("identity.yaml")).unwrap();
    identity.credentials
}

async fn connect(
    cluster: &Cluster,
    credentials: &ClientCredentials,
) -> Result<tonic::transport::Channel, String> {
    connect_mtls(
        &cluster.endpoint,
        &credentials.ca_cert_pem,
        &credentials.cert_pem,
        &credentials.key_pem,
    )
    .await
    .map_err(|e| e.to_string())
}

#[test]
fn an_expired_token_is_refused() {
    let cluster = Cluster::start(&[]);
    let output = cluster.admin(&["token", "create", "--ttl", "1m"]);
    assert_success(&output, "token create");
    let token = String::from_utf8(output.stdout).unwrap().trim().to_string();
    std::thread::sleep(Duration::from_secs(61));
    assert_join_refused(&cluster, "node-a", &token, "expired");
    assert!(node_names(&cluster).is_empty());
}

#[test]
fn a_used_up_token_is_refused() {
    let cluster = Cluster::start(&[]);
    let token = cluster.token(1);
    cluster.join("node-a", &token, "");
    assert_join_refused(&cluster, "node-b", &token, "no uses left");
    assert_eq!(node_names(&cluster), ["node-a"]);
}

/// A token with one field changed is refused with `expected`, stores nothing, and does
/// not spend the real token's one use.
fn assert_altered_token_refused(field: usize, value: &str, expected: &str) {
    let cluster = Cluster::start(&[]);
    let token = cluster.token(1);
    assert_join_refused(
        &cluster,
        "node-a",
        &with_field(&token, field, value),
        expected,
    );
    assert!(node_names(&cluster).is_empty());
    cluster.join("node-a", &token, "");
    assert_eq!(node_names(&cluster), ["node-a"]);
}

#[test]
fn a_forged_token_is_refused_and_the_real_one_still_works() {
    assert_altered_token_refused(2, &"f".repeat(32), "not valid for this cluster");
}

#[test]
fn a_token_naming_another_ca_makes_the_minion_refuse_the_master() {
    // The master never sees a join: the minion stops at the TLS handshake.
    assert_altered_token_refused(4, &"ab".repeat(32), "not the one the token names");
}

#[test]
fn the_vpnapi_refuses_a_caller_without_a_certificate() {
    let cluster = Cluster::start(&[]);
    let token = BootstrapToken::parse(&cluster.token(1)).unwrap();
    let status = runtime().block_on(async {
        let (channel, _) = connect_pinned(&cluster.endpoint, token.ca_cert_sha256())
            .await
            .unwrap();
        let hello = tokio_stream::iter(Vec::<NodeMessage>::new());
        VpnApiClient::new(channel).session(hello).await.unwrap_err()
    });
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(node_names(&cluster).is_empty());
}

#[test]
fn a_removed_nodes_certificate_is_refused() {
    let cluster = Cluster::start(&["node-a", "node-b"]);
    let removed = node_credentials(&cluster, "node-b");
    assert_success(&cluster.admin(&["node", "remove", "node-b"]), "node remove");
    let status = runtime().block_on(async {
        let channel = connect(&cluster, &removed).await.unwrap();
        let hello = tokio_stream::iter(Vec::<NodeMessage>::new());
        VpnApiClient::new(channel).session(hello).await.unwrap_err()
    });
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("revoked"), "{status:?}");
    // Its agent keeps knocking and stays out.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(node_names(&cluster), ["node-a"]);
}

#[test]
fn the_adminapi_refuses_a_nodes_certificate() {
    let cluster = Cluster::start(&["node-a", "node-b"]);
    let node = node_credentials(&cluster, "node-a");
    let codes = runtime().block_on(async {
        let mut client = AdminApiClient::new(connect(&cluster, &node).await.unwrap());
        vec![
            client
                .list_nodes(ListNodesRequest::default())
                .await
                .unwrap_err(),
            client
                .remove_node(RemoveNodeRequest {
                    node_name: "node-b".into(),
                })
                .await
                .unwrap_err(),
            client
                .create_token(CreateTokenRequest {
                    ttl_seconds: 600,
                    uses: 5,
                    ..Default::default()
                })
                .await
                .unwrap_err(),
        ]
    });
    for status in codes {
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("admin"), "{status:?}");
    }
    assert_eq!(node_names(&cluster), ["node-a", "node-b"]);
}

#[test]
fn oversized_messages_are_refused_and_store_nothing() {
    let mut cluster = Cluster::start(&[]);
    let token = BootstrapToken::parse(&cluster.token(1)).unwrap();
    let admin = credentials(&cluster.admin_config());
    let (join, run) = runtime().block_on(async {
        let (channel, _) = connect_pinned(&cluster.endpoint, token.ca_cert_sha256())
            .await
            .unwrap();
        let credentials = token.credentials();
        let labels = (0..1000)
            .map(|i| (format!("label-{i}"), "v".repeat(63)))
            .collect();
        let join = PubApiClient::new(channel)
            .join(JoinRequest {
                token_id: credentials.token_id,
                token_secret: credentials.token_secret,
                node_name: "node-a".into(),
                node_labels: labels,
                ..JoinRequest::default()
            })
            .await
            .unwrap_err();
        let mut client = AdminApiClient::new(connect(&cluster, &admin).await.unwrap())
            .max_encoding_message_size(64 * 1024 * 1024);
        let files = [(
            "site.yml".to_string(),
            bytes::Bytes::from(vec![b'#'; MAX_MESSAGE_BYTES + 1024 * 1024]),
        )];
        let run = client
            .run_task_book(RunTaskBookRequest {
                taskbook_file: "site.yml".into(),
                files: files.into(),
                ..RunTaskBookRequest::default()
            })
            .await
            .unwrap_err();
        (join, run)
    });
    assert_eq!(join.code(), Code::OutOfRange, "{join:?}");
    assert_eq!(run.code(), Code::OutOfRange, "{run:?}");
    assert!(node_names(&cluster).is_empty());
    assert_eq!(cluster.admin_json(&["jobs"]), serde_json::json!([]));
    // The token was not spent by the refused join: it still lets the node in.
    cluster.join("node-a", &token.encode(), "");
    cluster.start_minion("node-a");
    cluster.wait_online(&["node-a"]);
    let ping = taskbook(
        cluster.dir.path(),
        "ping",
        "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: ping}\nspec:\n  steps:\n    - tasks:\n        - ping: {}\n",
    );
    let (_, output) = cluster.run(&ping, &[]);
    assert_success(&output, "a normal run after the refusals");
}

#[test]
fn an_admin_of_another_cluster_is_refused() {
    let cluster = Cluster::start(&["node-a"]);
    let other = tempfile::tempdir().unwrap();
    let init = cluster
        .command(&[
            "master",
            "init",
            "--public-endpoint",
            &cluster.endpoint,
            "--data-dir",
        ])
        .arg(other.path().join("master"))
        .output()
        .unwrap();
    assert_success(&init, "init of another cluster");
    // Trusting only its own CA, the stranger's client refuses this master.
    let own_ca = credentials(&other.path().join("master/admin.yaml"));
    let refused_master = runtime().block_on(connect(&cluster, &own_ca));
    assert!(
        refused_master.is_err(),
        "a client trusted a master of another CA"
    );
    // Its admin certificate, presented to this master while trusting this master's CA.
    let mut stranger = credentials(&other.path().join("master/admin.yaml"));
    stranger.ca_cert_pem = credentials(&cluster.admin_config()).ca_cert_pem;
    let refused = runtime().block_on(async {
        let channel = connect(&cluster, &stranger).await;
        match channel {
            Err(error) => error,
            Ok(channel) => AdminApiClient::new(channel)
                .list_nodes(ListNodesRequest::default())
                .await
                .map(|_| "listed the nodes".to_string())
                .unwrap_or_else(|status| status.to_string()),
        }
    });
    assert_ne!(refused, "listed the nodes");
    let output = cluster
        .command(&["token", "create", "--config"])
        .arg(other.path().join("master/admin.yaml"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(node_names(&cluster), ["node-a"]);
}

/// `cluster.key` seals the Secrets: a master never makes one on its own, and one from
/// another cluster would seal what the rest of the cluster cannot open.
#[test]
fn a_master_without_its_cluster_key_or_with_another_clusters_refuses_to_start() {
    let mut cluster = Cluster::init(&[]);
    let key_file = cluster.master_dir().join("cluster.key");
    let own_key = std::fs::read(&key_file).unwrap();

    std::fs::remove_file(&key_file).unwrap();
    let (code, stderr) = cluster.master_refusal();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the cluster key {} is missing: only `weft master init` makes one; put back this \
             cluster's key",
            key_file.display()
        )),
        "{stderr}"
    );
    assert!(!key_file.exists(), "the master made a new key");

    let other = Cluster::init(&[]);
    std::fs::copy(other.master_dir().join("cluster.key"), &key_file).unwrap();
    let (code, stderr) = cluster.master_refusal();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the cluster key {} does not open the check value in this master's store: the key \
             belongs to another cluster",
            key_file.display()
        )),
        "{stderr}"
    );

    std::fs::write(&key_file, own_key).unwrap();
    cluster.start_master();
}
