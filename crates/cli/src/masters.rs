//! `weft masters`: the cluster's masters and which one leads.

use serde_json::json;
use weft_proto::adminapi::ListMastersRequest;

use crate::admin::AdminClient;
use crate::output::{print_json, table, Output};
use crate::CliError;

pub async fn list_masters(client: &mut AdminClient, output: Output) -> Result<(), CliError> {
    let response = client
        .list_masters(ListMastersRequest {})
        .await?
        .into_inner();
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
                .map(|master| {
                    json!({
                        "name": master.master_name,
                        "public_endpoint": master.master_public_endpoint,
                        "vpnapi_endpoint": master.master_vpnapi_endpoint,
                        "leader": master.master_name == response.leader_name,
                    })
                })
                .collect::<Vec<_>>(),
        ),
        Output::Text => {
            let rows: Vec<Vec<String>> = response
                .masters
                .iter()
                .map(|master| {
                    vec![
                        master.master_name.clone(),
                        role(&master.master_name).to_string(),
                        master.master_public_endpoint.clone(),
                        master.master_vpnapi_endpoint.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(&["NAME", "ROLE", "PUBLIC ENDPOINT", "VPNAPI"], &rows)
            );
            if response.leader_name.is_empty() {
                eprintln!("no master leads right now: an election is under way");
            }
        }
    }
    Ok(())
}
