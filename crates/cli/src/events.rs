//! `weft events`: what happened in the cluster, newest last; `--follow` keeps printing
//! new events as they are stored, like `kubectl get events --watch`.

use serde_json::Value;
use weft_proto::adminapi::ListEventsRequest;

use crate::admin::AdminClient;
use crate::output::{timestamp, Output};
use crate::CliError;

pub struct EventQuery {
    pub event_type: Option<String>,
    pub node_name: Option<String>,
    pub namespace: Option<String>,
    pub limit: u32,
    pub follow: bool,
}

pub async fn list_events(
    client: &mut AdminClient,
    query: EventQuery,
    output: Output,
) -> Result<(), CliError> {
    let mut events = client
        .list_events(ListEventsRequest {
            event_type: query.event_type.unwrap_or_default(),
            node_name: query.node_name.unwrap_or_default(),
            namespace: query.namespace.unwrap_or_default(),
            limit: query.limit,
            follow: query.follow,
        })
        .await?
        .into_inner();
    let mut printed = 0;
    while let Some(message) = events.message().await? {
        let event: Value = serde_json::from_str(&message.event_json).map_err(|e| {
            CliError::Master(format!("the master sent an event that is not JSON: {e}"))
        })?;
        match output {
            // One object per line, so `--follow -o json` pipes into `jq` as it goes.
            Output::Json => println!("{event}"),
            Output::Text => println!("{}", event_line(&event)),
        }
        printed += 1;
    }
    if printed == 0 && output == Output::Text {
        eprintln!("no events match");
    }
    Ok(())
}

/// `TIME  NAMESPACE  TYPE  NODE  key=value ...`
fn event_line(event: &Value) -> String {
    let text = |key: &str| event[key].as_str().unwrap_or("-").to_string();
    let data = event["data"]
        .as_object()
        .map(|data| {
            data.iter()
                .map(|(key, value)| match value {
                    Value::String(s) => format!("{key}={s}"),
                    other => format!("{key}={other}"),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let cause = event["cause"]["trigger"]
        .as_str()
        .map(|trigger| format!(" (caused by Trigger {trigger})"))
        .unwrap_or_default();
    format!(
        "{}  {:<10} {:<24} {:<14} {data}{cause}",
        timestamp(event["time_unix_ms"].as_u64().unwrap_or(0)),
        text("namespace"),
        text("event_type"),
        text("source_node"),
    )
}
