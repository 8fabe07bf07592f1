//! A minion's identity, kept in its data directory after `weft minion join`: its name
//! and labels, where the master is, the cluster CA and its own certificate and key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tonic::transport::Channel;
use weft_proto::credentials::{ClientCredentials, RenewalKey};
use weft_proto::vpnapi::vpn_api_client::VpnApiClient;
use weft_proto::vpnapi::RenewCertificateRequest;
use weft_taskbook::state_file;
use weft_taskbook::Error;

use crate::mesh::MeshIdentity;

pub const IDENTITY_FILE: &str = "identity.yaml";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinionIdentity {
    pub node_name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub credentials: ClientCredentials,
    /// Set when the cluster runs the mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<MeshIdentity>,
}

pub fn identity_path(data_dir: &Path) -> PathBuf {
    data_dir.join(IDENTITY_FILE)
}

impl MinionIdentity {
    pub fn load(data_dir: &Path) -> Result<MinionIdentity, Error> {
        let path = identity_path(data_dir);
        if !path.exists() {
            return Err(Error::new(format!(
                "this node has not joined a cluster: {} does not exist",
                path.display()
            ))
            .with_hint("join first with `weft minion join --token TOKEN --data-dir DIR`"));
        }
        state_file::read(&path)
    }

    pub fn save(&self, data_dir: &Path) -> Result<(), Error> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            Error::new(format!("cannot create the data directory: {e}")).in_file(data_dir)
        })?;
        state_file::write_private(&identity_path(data_dir), self)
    }
}

impl MinionIdentity {
    /// When the certificate is due for renewal, on the clock `Instant`s run on; `None`
    /// when it cannot be read (the session will say so when the master refuses it).
    pub fn renewal_due(&self) -> Option<Instant> {
        match self.credentials.renewal_due() {
            Ok(due) => {
                let wait = due.duration_since(SystemTime::now()).unwrap_or_default();
                Some(Instant::now() + wait)
            }
            Err(error) => {
                tracing::warn!(%error, "the node certificate's validity is unreadable; it is not renewed");
                None
            }
        }
    }

    /// Renews the node's certificate over the session's connection, with a new key,
    /// and writes the identity with it (whole or not at all, private to root). The
    /// master refuses the current certificate from then on: reconnect with the new one.
    pub async fn renew(
        &self,
        channel: &Channel,
        data_dir: &Path,
    ) -> Result<MinionIdentity, String> {
        let key = RenewalKey::generate().map_err(|error| error.to_string())?;
        let request = RenewCertificateRequest {
            csr_der: key.csr_der.clone().into(),
        };
        let response = VpnApiClient::new(channel.clone())
            .renew_certificate(request)
            .await
            .map_err(|status| format!("the master refused to renew: {}", status.message()))?
            .into_inner();
        let renewed = MinionIdentity {
            credentials: self
                .credentials
                .renewed(key, response.cert_pem, response.ca_cert_pem),
            ..self.clone()
        };
        renewed
            .save(data_dir)
            .map_err(|error| format!("the renewed certificate could not be written: {error}"))?;
        Ok(renewed)
    }
}
