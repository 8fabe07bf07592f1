//! Where the admin's credentials are (`--config`, then `$WEFT_CONFIG`, then
//! `~/.config/weft/config.yaml`) and a connection to the adminapi with them.

use std::path::{Path, PathBuf};

use tonic::transport::Channel;
use weft_modules::state_file;
use weft_proto::adminapi::admin_api_client::AdminApiClient;
use weft_proto::adminapi::ListMastersRequest;
use weft_proto::credentials::ClientCredentials;
use weft_proto::tls::connect_mtls;
use weft_taskbook::limits::MAX_MESSAGE_BYTES;

use crate::CliError;

pub type AdminClient = AdminApiClient<Channel>;

/// `~/.config/weft/config.yaml`, where `weft master init` also writes the credentials.
pub fn user_config_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".config/weft/config.yaml"))
}

fn config_path(explicit: Option<&Path>) -> Result<PathBuf, CliError> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    if let Some(path) = std::env::var_os("WEFT_CONFIG") {
        return Ok(PathBuf::from(path));
    }
    user_config_path().ok_or_else(|| {
        CliError::NoCredentials(
            "no admin credentials: pass --config FILE or set WEFT_CONFIG".into(),
        )
    })
}

/// A connection to the cluster's leading master: the first master reachable says who
/// leads, and work with nodes (runs) only the leader takes. Where the leader cannot be
/// reached, the first master's connection serves (reads and applies work on any).
pub async fn connect(explicit_config: Option<&Path>) -> Result<AdminClient, CliError> {
    let (credentials, mut client) = connect_any(explicit_config).await?;
    let Ok(masters) = client.list_masters(ListMastersRequest {}).await else {
        return Ok(client);
    };
    let masters = masters.into_inner();
    if masters.leader_name.is_empty() || masters.leader_name == masters.answered_by {
        return Ok(client);
    }
    let leader = masters
        .masters
        .iter()
        .find(|master| master.master_name == masters.leader_name);
    if let Some(leader) = leader {
        if let Ok(channel) = connect_mtls(
            &leader.master_public_endpoint,
            &credentials.ca_cert_pem,
            &credentials.cert_pem,
            &credentials.key_pem,
        )
        .await
        {
            return Ok(admin_client(channel));
        }
    }
    Ok(client)
}

fn admin_client(channel: Channel) -> AdminClient {
    AdminApiClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// The first master in the credentials' list that answers.
async fn connect_any(
    explicit_config: Option<&Path>,
) -> Result<(ClientCredentials, AdminClient), CliError> {
    let path = config_path(explicit_config)?;
    if !path.exists() {
        return Err(CliError::NoCredentials(format!(
            "no admin credentials at {}: `weft master init` writes them to DATA_DIR/admin.yaml; pass that with --config or WEFT_CONFIG",
            path.display()
        )));
    }
    let credentials: ClientCredentials = state_file::read(&path)?;
    let mut last_error = None;
    for endpoint in &credentials.master_endpoints {
        match connect_mtls(
            endpoint,
            &credentials.ca_cert_pem,
            &credentials.cert_pem,
            &credentials.key_pem,
        )
        .await
        {
            Ok(channel) => return Ok((credentials, admin_client(channel))),
            Err(error) => last_error = Some(error.to_string()),
        }
    }
    Err(CliError::Master(last_error.unwrap_or_else(|| {
        format!("{} lists no master endpoint", path.display())
    })))
}
