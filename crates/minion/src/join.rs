//! `weft minion join`: trusts the master only if it presents the CA the token names,
//! sends a certificate request (the private key never leaves this node), and keeps
//! the identity the master answers with.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rcgen::{CertificateParams, KeyPair};
use weft_proto::bootstrap_token::BootstrapToken;
use weft_proto::credentials::ClientCredentials;
use weft_proto::pubapi::pub_api_client::PubApiClient;
use weft_proto::pubapi::JoinRequest;
use weft_proto::tls::connect_pinned;

use crate::identity::{identity_path, MinionIdentity};
use crate::MinionError;

pub struct JoinOptions {
    pub token: String,
    pub node_name: String,
    pub labels: BTreeMap<String, String>,
    pub data_dir: PathBuf,
    /// `host:port` where peers reach this node; empty: what the master sees.
    pub node_public_endpoint: Option<String>,
}

pub async fn join(options: &JoinOptions) -> Result<MinionIdentity, MinionError> {
    let path = identity_path(&options.data_dir);
    if path.exists() {
        return Err(MinionError::AlreadyJoined(path.display().to_string()));
    }
    let token = BootstrapToken::parse(&options.token)?;
    let key = KeyPair::generate().map_err(|e| MinionError::Key(e.to_string()))?;
    let csr = CertificateParams::new(Vec::<String>::new())
        .and_then(|params| params.serialize_request(&key))
        .map_err(|e| MinionError::Key(e.to_string()))?;

    let (channel, ca_cert_pem) =
        connect_pinned(token.master_public_endpoint(), token.ca_cert_sha256()).await?;
    let credentials = token.credentials();
    let response = PubApiClient::new(channel)
        .join(JoinRequest {
            token_id: credentials.token_id,
            token_secret: credentials.token_secret,
            node_name: options.node_name.clone(),
            node_labels: options.labels.clone().into_iter().collect(),
            node_csr_der: csr.der().to_vec().into(),
            node_vpn_pub_key: String::new(),
            node_public_endpoint: options.node_public_endpoint.clone().unwrap_or_default(),
        })
        .await
        .map_err(|status| MinionError::Refused(status.message().to_string()))?
        .into_inner();

    let identity = MinionIdentity {
        node_name: response.node_name,
        labels: options.labels.clone(),
        credentials: ClientCredentials {
            master_endpoints: if response.master_vpnapi_endpoints.is_empty() {
                vec![token.master_public_endpoint().to_string()]
            } else {
                response.master_vpnapi_endpoints
            },
            // The CA this node verified, not whatever the answer says.
            ca_cert_pem,
            cert_pem: response.node_cert_pem,
            key_pem: key.serialize_pem(),
        },
    };
    identity.save(&options.data_dir)?;
    Ok(identity)
}
