//! Identities that cannot be stolen at join, against a real master and real minions:
//! each test is an attack that used to succeed, and now fails leaving the victim whole.
//! The mesh attack runs in network namespaces with userspace WireGuard (root and
//! /dev/net/tun; without them it says why and does nothing).

mod common;

use std::time::Duration;

use common::cluster::{assert_success, Cluster};
use common::mesh::{missing_capability, MeshLab};
use serde_json::Value;
use tonic::Code;
use weft_proto::bootstrap_token::BootstrapToken;
use weft_proto::pubapi::pub_api_client::PubApiClient;
use weft_proto::pubapi::JoinRequest;
use weft_proto::tls::connect_pinned;

fn token_with(cluster: &Cluster, args: &[&str]) -> String {
    let mut all = vec!["token", "create"];
    all.extend(args);
    let output = cluster.admin(&all);
    assert_success(&output, "token create");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// `weft minion join` for `name` from a data directory of its own (a second machine).
fn join_from(cluster: &Cluster, dir: &str, name: &str, token: &str) -> std::process::Output {
    cluster
        .command(&[
            "minion", "join", "--vpn", "off", "--name", name, "--token", token,
        ])
        .arg("--data-dir")
        .arg(cluster.dir.path().join(dir))
        .output()
        .unwrap()
}

fn node(cluster: &Cluster, name: &str) -> Value {
    cluster
        .nodes()
        .into_iter()
        .find(|node| node["name"] == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

/// Before: a token holder who joined under an existing node's name replaced that node
/// (new record, new certificate: the real node's was revoked) as soon as it had been
/// offline 30 s, or at any time through a standby master (which sees no sessions).
/// Now the name is refused whatever the node's state, the token is not spent, and only
/// a token created with `--replace NAME` takes the name — ending the old node's session.
#[test]
fn a_join_cannot_take_an_existing_nodes_name_without_a_replace_token() {
    let mut cluster = Cluster::start(&["node-a"]);
    cluster.wait_online(&["node-a"]);
    let victim = node(&cluster, "node-a");
    let token = cluster.token(1);
    let expected = "node node-a exists; remove it first with `weft node remove node-a`, or \
                    create the token with `--replace node-a`";

    // Online, then offline: refused alike, and no waiting makes a difference.
    let online = join_from(&cluster, "thief", "node-a", &token);
    cluster.kill_minion("node-a");
    let offline = join_from(&cluster, "thief", "node-a", &token);
    for refused in [online, offline] {
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
    assert!(!cluster.dir.path().join("thief/identity.yaml").exists());
    assert_eq!(
        node(&cluster, "node-a")["joined_unix_ms"],
        victim["joined_unix_ms"]
    );
    // The refusals spent nothing: the token still joins a new name.
    assert_success(&join_from(&cluster, "new", "node-b", &token), "join node-b");

    // Without the token's secret, nothing is said about the name.
    let forged = BootstrapToken::parse(&cluster.token(1)).unwrap();
    let status = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let (channel, _) =
                connect_pinned(forged.master_public_endpoint(), forged.ca_cert_sha256())
                    .await
                    .unwrap();
            PubApiClient::new(channel)
                .join(JoinRequest {
                    token_id: forged.token_id().to_string(),
                    token_secret: "f".repeat(forged.credentials().token_secret.len()),
                    node_name: "node-a".into(),
                    ..Default::default()
                })
                .await
                .unwrap_err()
        });
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(!status.message().contains("node-a"), "{status:?}");

    // A replace token joins its name only; then it replaces the node.
    let replace = token_with(&cluster, &["--replace", "node-a"]);
    let listed = cluster.admin_json(&["token", "list"]);
    let listed = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|token| token["replace"] == "node-a")
        .unwrap_or_else(|| panic!("the replace token is not listed: {listed:#}"));
    assert_eq!(listed["uses_left"], 1);
    assert!(!listed
        .to_string()
        .contains(replace.split('.').nth(2).unwrap()));
    let elsewhere = join_from(&cluster, "other", "node-c", &replace);
    assert_eq!(elsewhere.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&elsewhere.stderr).contains("replace node `node-a`"));
    cluster.start_minion("node-a");
    cluster.wait_online(&["node-a"]);
    assert_success(
        &join_from(&cluster, "replacement", "node-a", &replace),
        "join with --replace",
    );
    let replaced = node(&cluster, "node-a");
    assert_ne!(replaced["joined_unix_ms"], victim["joined_unix_ms"]);
    // The old node's session ended and its certificate is refused from now on.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !cluster.minion_log("node-a").contains("revoked") {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            cluster.minion_log("node-a")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `weft token list` shows tokens without their secrets; `weft token delete` ends one.
#[test]
fn a_deleted_token_joins_nothing() {
    let cluster = Cluster::start(&[]);
    let token = cluster.token(3);
    let token_id = BootstrapToken::parse(&token)
        .unwrap()
        .token_id()
        .to_string();
    let listed = cluster.admin(&["token", "list"]);
    assert_success(&listed, "token list");
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains(&token_id), "{text}");
    assert!(!text.contains(&token), "{text}");
    assert_success(
        &cluster.admin(&["token", "delete", &token_id]),
        "token delete",
    );
    let refused = join_from(&cluster, "a", "node-a", &token);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not valid for this cluster"));
    let again = cluster.admin(&["token", "delete", &token_id]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("weft token list"));
}

/// Before: Join took any well-formed WireGuard public key. Nodes key their peers by
/// public key, so a token holder who joined announcing the master's key (only the
/// public half is sent; here the thief's `weft minion join` derives it from a copy of
/// the key file) had every node route the master's key to the thief's endpoint: the
/// nodes lost the master, and the thief received what they sent it. Now the master
/// refuses a key another node or a master holds, spends nothing, and the nodes keep
/// the master's endpoint.
#[test]
fn a_join_cannot_take_the_masters_or_another_nodes_wireguard_key() {
    if let Some(reason) = missing_capability() {
        eprintln!(
            "SKIPPED a_join_cannot_take_the_masters_or_another_nodes_wireguard_key: {reason}"
        );
        return;
    }
    let mut lab = MeshLab::start();
    let token = lab.token(2);
    lab.join_and_start("n1", &token, &[]);
    lab.wait_online(&["n1"]);
    let master_key = lab.wg_public_key("master");
    let master_endpoint = format!("{}:", lab.lan_ip("master"));

    lab.add_host("thief");
    let thief_key = lab.data_dir("thief").join("vpn.key");
    for victim in ["master", "n1"] {
        std::fs::create_dir_all(lab.data_dir("thief")).unwrap();
        std::fs::copy(lab.data_dir(victim).join("vpn.key"), &thief_key).unwrap();
        let refused = lab
            .weft_in(
                "thief",
                &["minion", "join", "--name", "thief", "--token", &token],
            )
            .arg("--data-dir")
            .arg(lab.data_dir("thief"))
            .args(["--vpn-interface", &lab.interface("thief")])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{victim}'s key was taken");
        assert!(
            stderr.contains("already belongs to another node or to a master"),
            "{stderr}"
        );
        assert!(!lab.data_dir("thief").join("identity.yaml").exists());
    }
    let names: Vec<Value> = lab
        .admin_json(&["nodes"])
        .as_array()
        .unwrap()
        .iter()
        .map(|node| node["name"].clone())
        .collect();
    assert_eq!(names, ["n1"]);
    // n1 still reaches the master at the master's address.
    let endpoints = lab
        .in_host("n1", "wg")
        .args(["show", &lab.interface("n1"), "endpoints"])
        .output()
        .unwrap();
    let endpoints = String::from_utf8_lossy(&endpoints.stdout).to_string();
    let master_line = endpoints
        .lines()
        .find(|line| line.starts_with(&master_key))
        .unwrap_or_else(|| panic!("n1 lost the master's peer: {endpoints}"));
    assert!(master_line.contains(&master_endpoint), "{endpoints}");

    // With a key of its own, the same token (its use unspent) joins.
    std::fs::remove_file(&thief_key).unwrap();
    lab.join("thief", &token);
}
