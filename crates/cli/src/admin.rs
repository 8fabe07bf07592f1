//! Where the admin's credentials are (`--config`, then `$WEFT_CONFIG`, then
//! `~/.config/weft/config.yaml`) and a connection to the adminapi with them.

use std::path::{Path, PathBuf};

use tonic::transport::Channel;
use weft_modules::state_file;
use weft_proto::adminapi::admin_api_client::AdminApiClient;
use weft_proto::credentials::ClientCredentials;
use weft_proto::tls::connect_mtls;

use crate::CliError;

/// A run ships its TaskBook's folder; the master accepts up to this much.
const MAX_MESSAGE_BYTES: usize = 12 * 1024 * 1024;

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

pub async fn connect(explicit_config: Option<&Path>) -> Result<AdminClient, CliError> {
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
            Ok(channel) => {
                return Ok(AdminApiClient::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES))
            }
            Err(error) => last_error = Some(error.to_string()),
        }
    }
    Err(CliError::Master(last_error.unwrap_or_else(|| {
        format!("{} lists no master endpoint", path.display())
    })))
}
