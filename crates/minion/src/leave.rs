//! `weft minion leave`: the node unregisters itself. The master removes its peer from
//! every node, frees its address and stops accepting its certificate; the node then
//! forgets its identity, key and peers, so it can join again (any cluster) later.

use std::path::Path;

use weft_proto::tls::mtls_endpoint;
use weft_proto::vpnapi::vpn_api_client::VpnApiClient;
use weft_proto::vpnapi::LeaveRequest;

use crate::identity::{identity_path, MinionIdentity};
use crate::mesh::{PEERS_FILE, VPN_KEY_FILE};
use crate::MinionError;

/// Needs the master reachable: through the mesh, that is while `weft minion` runs.
pub async fn leave(data_dir: &Path) -> Result<MinionIdentity, MinionError> {
    let identity = MinionIdentity::load(data_dir)?;
    let credentials = &identity.credentials;
    let mut last_error = MinionError::NoMaster;
    for endpoint in &credentials.master_endpoints {
        let channel = mtls_endpoint(
            endpoint,
            &credentials.ca_cert_pem,
            &credentials.cert_pem,
            &credentials.key_pem,
        )?
        .connect()
        .await;
        let channel = match channel {
            Ok(channel) => channel,
            Err(error) => {
                let hint = if identity.mesh.is_some() {
                    " (the master is reached through the mesh: is `weft minion` running?)"
                } else {
                    ""
                };
                last_error = MinionError::Io(format!(
                    "cannot reach the master at {endpoint}{hint}: {error}"
                ));
                continue;
            }
        };
        VpnApiClient::new(channel)
            .leave(LeaveRequest {})
            .await
            .map_err(|status| MinionError::Master(status.message().to_string()))?;
        for file in [PEERS_FILE, VPN_KEY_FILE] {
            let _ = std::fs::remove_file(data_dir.join(file));
        }
        std::fs::remove_file(identity_path(data_dir))
            .map_err(|e| MinionError::Io(format!("{}: {e}", identity_path(data_dir).display())))?;
        return Ok(identity);
    }
    Err(last_error)
}
