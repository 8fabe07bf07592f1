//! The master's public listener against callers who are not admins: what it refuses,
//! and how early. It answers anyone (Join needs no certificate), so it must neither
//! read an anonymous caller's big messages nor let one host hold every connection.

mod common;

use std::net::TcpStream;

use common::cluster::{assert_success, Cluster};
use tonic::Code;
use weft_minion::identity::MinionIdentity;
use weft_proto::adminapi::admin_api_client::AdminApiClient;
use weft_proto::adminapi::RunTaskBookRequest;
use weft_proto::bootstrap_token::BootstrapToken;
use weft_proto::tls::{connect_mtls, connect_pinned};
use weft_taskbook::limits::MAX_MESSAGE_BYTES;
use weft_taskbook::state_file;

fn oversized_run() -> RunTaskBookRequest {
    let files = [(
        "site.yml".to_string(),
        bytes::Bytes::from(vec![b'#'; MAX_MESSAGE_BYTES + 1024 * 1024]),
    )];
    RunTaskBookRequest {
        taskbook_file: "site.yml".into(),
        files: files.into(),
        ..RunTaskBookRequest::default()
    }
}

/// Before, the adminapi read and decoded a whole message and only then looked at the
/// certificate: an anonymous caller or a node had the master buffer 16 MiB a call, and
/// got "message too large" (OutOfRange). Now the certificate is judged first: the
/// refusal names the certificate, whatever the size of what follows.
#[test]
fn the_adminapi_refuses_non_admins_before_reading_their_message() {
    let cluster = Cluster::start(&["node-a"]);
    let token = BootstrapToken::parse(&cluster.token(1)).unwrap();
    let identity: MinionIdentity =
        state_file::read(&cluster.minion_dir("node-a").join("identity.yaml")).unwrap();
    let node = identity.credentials;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (anonymous, as_node) = runtime.block_on(async {
        let (anonymous, _) = connect_pinned(&cluster.endpoint, token.ca_cert_sha256())
            .await
            .unwrap();
        let anonymous = AdminApiClient::new(anonymous)
            .max_encoding_message_size(64 * 1024 * 1024)
            .run_task_book(oversized_run())
            .await
            .unwrap_err();
        let as_node = connect_mtls(
            &cluster.endpoint,
            &node.ca_cert_pem,
            &node.cert_pem,
            &node.key_pem,
        )
        .await
        .unwrap();
        let as_node = AdminApiClient::new(as_node)
            .max_encoding_message_size(64 * 1024 * 1024)
            .run_task_book(oversized_run())
            .await
            .unwrap_err();
        (anonymous, as_node)
    });
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous:?}");
    assert!(
        anonymous.message().contains("client certificate"),
        "{anonymous:?}"
    );
    assert_eq!(as_node.code(), Code::PermissionDenied, "{as_node:?}");
    assert!(as_node.message().contains("admin"), "{as_node:?}");
    assert_eq!(cluster.admin_json(&["jobs"]), serde_json::json!([]));
}

/// Before, one host could open connections without end, each holding a task and TLS
/// state on the master, until nobody else got in. Now connections past
/// `--max-connections-per-address` are closed at once, and a closed one frees its place.
#[test]
fn one_address_cannot_hold_every_connection() {
    let mut cluster = Cluster::init(&[]);
    cluster.start_master_with(&["--max-connections-per-address", "3"]);
    let held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(&cluster.endpoint).unwrap())
        .collect();
    let refused = cluster.admin(&["nodes"]);
    assert!(
        !refused.status.success(),
        "a fourth connection from the same address was served"
    );
    assert!(
        cluster
            .master_log()
            .contains("too many connections from one address"),
        "{}",
        cluster.master_log()
    );
    drop(held);
    // The master sees the held connections close a moment after the client does.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let served = cluster.admin(&["nodes"]);
        if served.status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the places were not given back: {}",
            String::from_utf8_lossy(&served.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_success(&cluster.admin(&["token", "create"]), "an admin call after");
}
