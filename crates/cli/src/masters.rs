//! `weft masters`: the cluster's masters, which one leads, and which this machine
//! reaches.

use serde_json::json;
use weft_proto::adminapi::ListMastersRequest;
use weft_proto::credentials::ClientCredentials;

use crate::admin::{connect_master, AdminClient};
use crate::output::{print_json, table, Output};
use crate::CliError;

pub async fn list_masters(
    client: &mut AdminClient,
    credentials: &ClientCredentials,
    output: Output,
) -> Result<(), CliError> {
    let response = client
        .list_masters(ListMastersRequest {})
        .await?
        .into_inner();
    // Each master tried at once, from here: what a command would meet if it had to
    // fail over to that one.
    let unreachable: Vec<Option<String>> = futures_util::future::join_all(
        response
            .masters
            .iter()
            .map(|master| connect_master(&master.master_public_endpoint, credentials)),
    )
    .await
    .into_iter()
    .map(|connected| connected.err())
    .collect();
    let role = |name: &str| {
        if name == response.leader_name {
            "leader"
        } else {
            "standby"
        }
    };
    match output {
        Output::Json => print_json(
            &response
                .masters
                .iter()
                .zip(&unreachable)
                .map(|(master, unreachable)| {
                    json!({
                        "name": master.master_name,
                        "public_endpoint": master.master_public_endpoint,
                        "vpnapi_endpoint": master.master_vpnapi_endpoint,
                        "leader": master.master_name == response.leader_name,
                        "reachable": unreachable.is_none(),
                        "unreachable_because": unreachable,
                    })
                })
                .collect::<Vec<_>>(),
        ),
        Output::Text => {
            let rows: Vec<Vec<String>> = response
                .masters
                .iter()
                .zip(&unreachable)
                .map(|(master, unreachable)| {
                    vec![
                        master.master_name.clone(),
                        role(&master.master_name).to_string(),
                        master.master_public_endpoint.clone(),
                        master.master_vpnapi_endpoint.clone(),
                        if unreachable.is_some() { "no" } else { "yes" }.to_string(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["NAME", "ROLE", "PUBLIC ENDPOINT", "VPNAPI", "REACHABLE"],
                    &rows
                )
            );
            for (master, unreachable) in response.masters.iter().zip(&unreachable) {
                if let Some(reason) = unreachable {
                    eprintln!(
                        "{} is not reachable from here: {reason}",
                        master.master_name
                    );
                }
            }
            if response.leader_name.is_empty() {
                eprintln!("no master leads right now: an election is under way");
            }
        }
    }
    Ok(())
}
