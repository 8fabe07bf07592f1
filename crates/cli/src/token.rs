//! `weft token create|list|delete`.

use std::time::Duration;

use serde_json::json;
use weft_proto::adminapi::{CreateTokenRequest, DeleteTokenRequest, ListTokensRequest};

use crate::admin::AdminClient;
use crate::output::{print_json, table, timestamp, Output};
use crate::CliError;

/// Prints the token alone on stdout, so `$(weft token create)` works; the rest to stderr.
pub async fn create_token(
    client: &mut AdminClient,
    ttl: Option<Duration>,
    uses: u32,
    replace_node_name: Option<String>,
) -> Result<(), CliError> {
    let response = client
        .create_token(CreateTokenRequest {
            // 0: the cluster's default.
            ttl_seconds: ttl.map_or(0, |ttl| ttl.as_secs()),
            uses,
            replace_node_name: replace_node_name.clone().unwrap_or_default(),
        })
        .await?
        .into_inner();
    println!("{}", response.token);
    let name = match &replace_node_name {
        Some(name) => format!(" --name {name}"),
        None => String::new(),
    };
    eprintln!(
        "token valid until {} for {uses} join{}: weft minion join --token TOKEN{name}",
        timestamp(response.expires_unix_ms),
        if uses == 1 { "" } else { "s" }
    );
    if let Some(name) = replace_node_name {
        eprintln!("its join replaces node {name}: the old node's certificate and session end");
    }
    Ok(())
}

pub async fn list_tokens(client: &mut AdminClient, output: Output) -> Result<(), CliError> {
    let tokens = client
        .list_tokens(ListTokensRequest {})
        .await?
        .into_inner()
        .tokens;
    match output {
        Output::Json => print_json(
            &tokens
                .iter()
                .map(|token| {
                    json!({
                        "id": token.token_id,
                        "created_unix_ms": token.created_unix_ms,
                        "expires_unix_ms": token.expires_unix_ms,
                        "uses_left": token.uses_left,
                        "replace": (!token.replace_node_name.is_empty())
                            .then_some(&token.replace_node_name),
                    })
                })
                .collect::<Vec<_>>(),
        ),
        Output::Text => {
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|token| {
                    vec![
                        token.token_id.clone(),
                        timestamp(token.expires_unix_ms),
                        token.uses_left.to_string(),
                        token.replace_node_name.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(&["ID", "EXPIRES", "USES LEFT", "REPLACES"], &rows)
            );
        }
    }
    Ok(())
}

pub async fn delete_token(client: &mut AdminClient, token_id: &str) -> Result<(), CliError> {
    client
        .delete_token(DeleteTokenRequest {
            token_id: token_id.to_string(),
        })
        .await?;
    eprintln!("token {token_id} deleted: no node joins with it any more");
    Ok(())
}
