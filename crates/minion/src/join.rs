//! `weft minion join`: trusts the master only if it presents the CA the token names,
//! sends a certificate request (the private key never leaves this node), and keeps
//! the identity the master answers with.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rcgen::{CertificateParams, KeyPair};
use weft_proto::bootstrap_token::{is_endpoint, BootstrapToken, LEADER_PUBLIC_ENDPOINT_HEADER};
use weft_proto::credentials::ClientCredentials;
use weft_proto::pubapi::pub_api_client::PubApiClient;
use weft_proto::pubapi::{JoinRequest, JoinResponse};
use weft_proto::tls::{connect_pinned, pem_bundle_holds};

use weft_vpn::peer_registry::PeerUpdate;
use weft_vpn::peer_set::PeerSet;
use weft_vpn::vpn_key::VpnKeyPair;

use crate::identity::{identity_path, MinionIdentity};
use crate::mesh::{MeshIdentity, PEERS_FILE, VPN_KEY_FILE};
use crate::MinionError;

pub struct JoinOptions {
    pub token: String,
    pub node_name: String,
    pub labels: BTreeMap<String, String>,
    pub data_dir: PathBuf,
    /// `host:port` where peers reach this node; empty: what the master sees.
    pub node_public_endpoint: Option<String>,
    /// `None`: join without the mesh (`--vpn off`).
    pub vpn: Option<JoinVpnOptions>,
}

pub struct JoinVpnOptions {
    pub interface: String,
    pub listen_port: u16,
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

    // The WireGuard key is made (once) before the join: the master records its public half.
    let vpn_key = match &options.vpn {
        Some(_) => {
            std::fs::create_dir_all(&options.data_dir)
                .map_err(|e| MinionError::Io(format!("{}: {e}", options.data_dir.display())))?;
            let key = VpnKeyPair::load_or_create(&options.data_dir.join(VPN_KEY_FILE))
                .map_err(|e| MinionError::Mesh(e.to_string()))?;
            Some(key)
        }
        None => None,
    };

    let credentials = token.credentials();
    let request = JoinRequest {
        token_id: credentials.token_id,
        token_secret: credentials.token_secret,
        node_name: options.node_name.clone(),
        node_labels: options.labels.clone().into_iter().collect(),
        node_csr_der: csr.der().to_vec().into(),
        node_vpn_pub_key: vpn_key
            .as_ref()
            .map(|key| key.public_key_base64.clone())
            .unwrap_or_default(),
        node_public_endpoint: options.node_public_endpoint.clone().unwrap_or_default(),
        node_vpn_listen_port: options.vpn.as_ref().map_or(0, |vpn| vpn.listen_port.into()),
    };
    let (response, ca_cert_pem) = join_leader(&token, request).await?;

    let identity = MinionIdentity {
        node_name: response.node_name,
        labels: options.labels.clone(),
        credentials: ClientCredentials {
            master_endpoints: if response.master_vpnapi_endpoints.is_empty() {
                vec![token.master_public_endpoint().to_string()]
            } else {
                response.master_vpnapi_endpoints
            },
            // The CA this node verified; or the CAs the answer hands out (both during a
            // CA rotation), which came over the channel that CA verified, as long as
            // they include it.
            ca_cert_pem: if pem_bundle_holds(&response.ca_cert_pem, token.ca_cert_sha256()) {
                response.ca_cert_pem
            } else {
                ca_cert_pem
            },
            cert_pem: response.node_cert_pem,
            key_pem: key.serialize_pem(),
        },
        mesh: None,
    };
    let mut identity = identity;
    match (response.mesh, &options.vpn) {
        (Some(mesh), Some(vpn)) => {
            let peers: PeerUpdate = mesh.peers.unwrap_or_default().into();
            let mut peer_set = PeerSet::default();
            // A snapshot: it applies to an empty set, unless it is unsafe to configure.
            peer_set
                .apply(&PeerUpdate { full: true, ..peers })
                .map_err(|error| MinionError::Mesh(error.to_string()))?;
            peer_set
                .save(&options.data_dir.join(PEERS_FILE))
                .map_err(|e| MinionError::Io(format!("{PEERS_FILE}: {e}")))?;
            identity.mesh = Some(MeshIdentity {
                node_vpn_ip: mesh.node_vpn_ip,
                vpn_cidr: mesh.vpn_cidr,
                master_node_name: mesh.master_node_name,
                interface: vpn.interface.clone(),
                listen_port: vpn.listen_port,
            });
        }
        (None, Some(_)) => tracing::warn!(
            "the master runs without the mesh (--vpn off): this node talks to it over its public endpoint"
        ),
        _ => {}
    }
    identity.save(&options.data_dir)?;
    Ok(identity)
}

/// Joins through the master the token names or, when that one is a standby, once
/// through the leader it points to, pinned to the same CA.
async fn join_leader(
    token: &BootstrapToken,
    request: JoinRequest,
) -> Result<(JoinResponse, String), MinionError> {
    let mut endpoint = token.master_public_endpoint().to_string();
    let mut followed = false;
    loop {
        let (channel, ca_cert_pem) = connect_pinned(&endpoint, token.ca_cert_sha256()).await?;
        let status = match PubApiClient::new(channel).join(request.clone()).await {
            Ok(response) => return Ok((response.into_inner(), ca_cert_pem)),
            Err(status) => status,
        };
        let leader = status
            .metadata()
            .get(LEADER_PUBLIC_ENDPOINT_HEADER)
            .and_then(|value| value.to_str().ok())
            .filter(|leader| *leader != endpoint && is_endpoint(leader));
        match leader {
            Some(leader) if !followed => {
                tracing::info!(standby = %endpoint, %leader, "the master is a standby; joining through the leader");
                endpoint = leader.to_string();
                followed = true;
            }
            _ => return Err(MinionError::Refused(status.message().to_string())),
        }
    }
}
