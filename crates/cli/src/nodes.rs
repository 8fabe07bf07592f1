//! `weft nodes`, `weft node show`, `weft node remove`, `weft facts NODE`.

use serde_json::{json, Value};
use weft_proto::adminapi::{
    GetFactsRequest, GetNodeRequest, ListNodesRequest, Node, RemoveNodeRequest,
};

use crate::admin::AdminClient;
use crate::output::{age, ago, print_json, table, timestamp, Output};
use crate::CliError;

pub(crate) fn labels_text(node: &Node) -> String {
    let mut labels: Vec<String> = node
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    labels.sort();
    labels.join(",")
}

/// When the master's WireGuard interface last shook hands with the node.
fn handshake_text(node: &Node) -> String {
    node.last_handshake_age_seconds
        .map_or_else(|| "-".to_string(), age)
}

fn node_json(node: &Node) -> Value {
    let labels: serde_json::Map<String, Value> = node
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    json!({
        "name": node.node_name,
        "labels": labels,
        "vpn_ip": (!node.node_vpn_ip.is_empty()).then_some(&node.node_vpn_ip),
        "public_endpoint": (!node.node_public_endpoint.is_empty()).then_some(&node.node_public_endpoint),
        "online": node.online,
        "last_handshake_age_s": node.last_handshake_age_seconds,
        "last_seen_unix_ms": node.last_seen_unix_ms,
        "joined_unix_ms": node.joined_unix_ms,
        "cert_not_after_unix_ms": (node.cert_not_after_unix_ms != 0).then_some(node.cert_not_after_unix_ms),
    })
}

pub async fn list_nodes(client: &mut AdminClient, output: Output) -> Result<(), CliError> {
    let nodes = client
        .list_nodes(ListNodesRequest::default())
        .await?
        .into_inner()
        .nodes;
    match output {
        Output::Json => print_json(&nodes.iter().map(node_json).collect::<Vec<_>>()),
        Output::Text => {
            let rows: Vec<Vec<String>> = nodes
                .iter()
                .map(|node| {
                    vec![
                        node.node_name.clone(),
                        if node.online { "online" } else { "offline" }.to_string(),
                        if node.node_vpn_ip.is_empty() {
                            "-".to_string()
                        } else {
                            node.node_vpn_ip.clone()
                        },
                        handshake_text(node),
                        if node.online {
                            "now".to_string()
                        } else {
                            ago(node.last_seen_unix_ms)
                        },
                        timestamp(node.cert_not_after_unix_ms),
                        labels_text(node),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        "NAME",
                        "STATE",
                        "VPN IP",
                        "HANDSHAKE",
                        "LAST SEEN",
                        "CERT EXPIRES",
                        "LABELS"
                    ],
                    &rows
                )
            );
            if nodes.is_empty() {
                eprintln!("no nodes yet: `weft token create`, then `weft minion join --token TOKEN` on each node");
            }
        }
    }
    Ok(())
}

pub async fn show_node(
    client: &mut AdminClient,
    name: &str,
    output: Output,
) -> Result<(), CliError> {
    let node = client
        .get_node(GetNodeRequest {
            node_name: name.to_string(),
        })
        .await?
        .into_inner();
    let facts: Value = serde_json::from_str(&node.facts_json).unwrap_or(Value::Null);
    match output {
        Output::Json => {
            let mut value = node_json(&node);
            value["facts"] = facts;
            print_json(&value);
        }
        Output::Text => {
            println!("name:            {}", node.node_name);
            println!(
                "state:           {}",
                if node.online { "online" } else { "offline" }
            );
            println!("labels:          {}", labels_text(&node));
            println!("joined:          {}", timestamp(node.joined_unix_ms));
            println!(
                "last seen:       {}",
                if node.online {
                    "now".to_string()
                } else {
                    timestamp(node.last_seen_unix_ms)
                }
            );
            println!(
                "vpn ip:          {}",
                if node.node_vpn_ip.is_empty() {
                    "- (no mesh)"
                } else {
                    &node.node_vpn_ip
                }
            );
            println!("last handshake:  {}", handshake_text(&node));
            // The node renews it at two thirds of its life.
            println!(
                "cert expires:    {}",
                timestamp(node.cert_not_after_unix_ms)
            );
            println!(
                "public endpoint: {}",
                if node.node_public_endpoint.is_empty() {
                    "-"
                } else {
                    &node.node_public_endpoint
                }
            );
            let fact = |path: &str| {
                path.split('.')
                    .try_fold(&facts, |value, key| value.get(key))
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                    .unwrap_or_else(|| "-".to_string())
            };
            println!("os:              {}", fact("os.name"));
            println!("kernel:          {}", fact("kernel.release"));
            println!("(all facts: weft facts {})", node.node_name);
        }
    }
    Ok(())
}

pub async fn remove_node(client: &mut AdminClient, name: &str) -> Result<(), CliError> {
    client
        .remove_node(RemoveNodeRequest {
            node_name: name.to_string(),
        })
        .await?;
    eprintln!("removed node {name}: its peer is gone from every node's mesh and its certificate is refused from now on; it can join again with a new token");
    Ok(())
}

pub async fn show_facts(client: &mut AdminClient, name: &str) -> Result<(), CliError> {
    let facts = client
        .get_facts(GetFactsRequest {
            node_name: name.to_string(),
        })
        .await?
        .into_inner();
    let value: Value = serde_json::from_str(&facts.facts_json)
        .map_err(|e| CliError::Master(format!("the master sent facts that are not JSON: {e}")))?;
    print_json(&value);
    Ok(())
}
