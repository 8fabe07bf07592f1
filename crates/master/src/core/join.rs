//! Join: a node trades a bootstrap token and a certificate request for its identity.
//! Everything that can be refused is checked before anything is written, so a refused
//! join leaves no trace but, for a valid token, nothing either: the use is spent last
//! but one, right before the node's record.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use weft_taskbook::objects::{validate_labels, validate_name};
use weft_taskbook::report::unix_ms;

use super::mesh::{Admission, Mesh, MeshError, NodeVpn};
use super::node_registry::{cert_sha256_hex, NodeRecord, NodeRegistry, NodeRegistryError};
use super::pki::{ClusterCa, PkiError};
use super::token::{TokenCredentials, TokenError};
use super::token_registry::{TokenRegistry, TokenRegistryError};
use crate::store::Store;

pub struct JoinRequest {
    pub credentials: TokenCredentials,
    pub node_name: String,
    pub node_labels: BTreeMap<String, String>,
    pub node_csr_der: Vec<u8>,
    pub node_vpn_pub_key: Option<String>,
    pub node_public_endpoint: Option<String>,
    pub node_vpn_listen_port: u16,
    /// The address the join came from: the node's endpoint when it announced none.
    pub seen_from: Option<std::net::IpAddr>,
}

pub struct Joined {
    pub node_cert_pem: String,
    pub ca_cert_pem: String,
    /// With the mesh on: the node's address and the peers.
    pub mesh: Option<Admission>,
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("invalid node name: {0}")]
    InvalidName(String),
    #[error("invalid node labels: {0}")]
    InvalidLabels(String),
    #[error("the certificate request was refused: {0}")]
    Csr(#[from] PkiError),
    #[error(
        "a node named `{0}` is online; pick another name with --name, or remove it first \
         with `weft node remove {0}`"
    )]
    NameInUse(String),
    #[error(transparent)]
    Token(#[from] TokenRegistryError),
    #[error(transparent)]
    Nodes(#[from] NodeRegistryError),
    #[error(transparent)]
    Mesh(#[from] MeshError),
    #[error(
        "this cluster runs the WireGuard mesh and the node sent no WireGuard key (or a bad \
         one); join it without --vpn off"
    )]
    MeshKeyMissing,
}

impl From<TokenError> for JoinError {
    fn from(error: TokenError) -> Self {
        JoinError::Token(error.into())
    }
}

pub struct Joiner<S> {
    ca: Arc<ClusterCa>,
    tokens: TokenRegistry<S>,
    nodes: NodeRegistry<S>,
    mesh: Option<Arc<Mesh<S>>>,
    /// Joins that share one token take turns here rather than racing on its record.
    redeem_turn: tokio::sync::Mutex<()>,
}

impl<S: Store + Clone> Joiner<S> {
    pub fn new(ca: Arc<ClusterCa>, store: S, mesh: Option<Arc<Mesh<S>>>) -> Self {
        Joiner {
            ca,
            tokens: TokenRegistry::new(store.clone()),
            nodes: NodeRegistry::new(store),
            mesh,
            redeem_turn: tokio::sync::Mutex::new(()),
        }
    }

    /// `is_online` says whether a node of that name has a session now: a live node's
    /// name cannot be taken over.
    pub async fn join(
        &self,
        request: JoinRequest,
        is_online: impl Fn(&str) -> bool,
        now: SystemTime,
    ) -> Result<Joined, JoinError> {
        request.credentials.validate().map_err(TokenError::from)?;
        validate_name(&request.node_name).map_err(JoinError::InvalidName)?;
        validate_labels(&request.node_labels).map_err(JoinError::InvalidLabels)?;
        let signed = self
            .ca
            .sign_node_csr(&request.node_name, &request.node_csr_der, now)?;
        if is_online(&request.node_name) {
            return Err(JoinError::NameInUse(request.node_name));
        }
        let node_vpn = match &self.mesh {
            Some(mesh) => {
                let node_vpn = node_vpn(&request).ok_or(JoinError::MeshKeyMissing)?;
                mesh.check_room(&request.node_name, &is_online).await?;
                Some((mesh, node_vpn))
            }
            None => None,
        };
        {
            let _turn = self.redeem_turn.lock().await;
            self.tokens.redeem(&request.credentials, now).await?;
        }
        let admission = match node_vpn {
            Some((mesh, node_vpn)) => {
                let last_seen = self
                    .nodes
                    .list()
                    .await?
                    .into_iter()
                    .map(|node| (node.node_name, node.last_seen_unix_ms));
                let admission = mesh
                    .admit(
                        &request.node_name,
                        node_vpn,
                        unix_ms(now),
                        &is_online,
                        last_seen,
                    )
                    .await?;
                if let Some(reclaimed) = &admission.reclaimed_from {
                    tracing::warn!(node = %reclaimed, address = %admission.node_vpn_ip, "the network is full: the address of the longest-idle offline node was reclaimed; it must join again");
                    self.nodes.clear_vpn_ip(reclaimed).await?;
                }
                Some(admission)
            }
            None => None,
        };
        let node_public_endpoint = match &admission {
            Some(admission) => admission
                .peers
                .upserts
                .iter()
                .find(|peer| peer.node_name == request.node_name)
                .map(|peer| peer.node_public_endpoint.clone()),
            None => request.node_public_endpoint,
        };
        let record = NodeRecord {
            node_cert_sha256: cert_sha256_hex(&signed.cert_der),
            node_cert_serial: signed.serial,
            node_cert_not_after_unix_ms: signed.not_after_unix_ms,
            node_name: request.node_name,
            labels: request.node_labels,
            node_vpn_ip: admission.as_ref().map(|a| a.node_vpn_ip.to_string()),
            node_vpn_pub_key: request.node_vpn_pub_key,
            node_public_endpoint,
            joined_unix_ms: unix_ms(now),
            last_seen_unix_ms: 0,
            vars: Default::default(),
        };
        self.nodes.put(&record).await?;
        Ok(Joined {
            node_cert_pem: signed.cert_pem,
            ca_cert_pem: self.ca.cert_pem().to_string(),
            mesh: admission,
        })
    }
}

/// The node's WireGuard side: the endpoint it announced, else the address its join
/// came from (then it may be behind NAT: its peers keep the mapping open).
fn node_vpn(request: &JoinRequest) -> Option<NodeVpn> {
    let key = request.node_vpn_pub_key.as_ref()?;
    if !weft_vpn::vpn_key::is_public_key(key) {
        return None;
    }
    let (node_public_endpoint, persistent_keepalive) = match &request.node_public_endpoint {
        Some(endpoint) => (endpoint.clone(), 0),
        None => (
            request.seen_from.map_or(String::new(), |address| {
                std::net::SocketAddr::new(address, request.node_vpn_listen_port).to_string()
            }),
            weft_vpn::device::NAT_KEEPALIVE_SECONDS,
        ),
    };
    Some(NodeVpn {
        node_vpn_pub_key: key.clone(),
        node_public_endpoint,
        persistent_keepalive,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rcgen::{CertificateParams, KeyPair};

    use super::*;
    use crate::store::SqliteStore;

    struct Cluster {
        store: SqliteStore,
        joiner: Joiner<SqliteStore>,
        ca: Arc<ClusterCa>,
    }

    fn cluster() -> Cluster {
        let store = SqliteStore::open_in_memory().unwrap();
        let ca = Arc::new(ClusterCa::generate("test", SystemTime::now()).unwrap());
        Cluster {
            joiner: Joiner::new(ca.clone(), store.clone(), None),
            store,
            ca,
        }
    }

    fn csr() -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.serialize_request(&key).unwrap().der().to_vec()
    }

    async fn request(cluster: &Cluster, uses: u32, name: &str) -> JoinRequest {
        let token = TokenRegistry::new(cluster.store.clone())
            .create(
                "127.0.0.1:7443",
                cluster.ca.ca_cert_sha256(),
                Duration::from_secs(600),
                uses,
                SystemTime::now(),
            )
            .await
            .unwrap();
        JoinRequest {
            credentials: token.credentials(),
            node_name: name.into(),
            node_labels: BTreeMap::new(),
            node_csr_der: csr(),
            node_vpn_pub_key: None,
            node_public_endpoint: None,
            node_vpn_listen_port: 0,
            seen_from: None,
        }
    }

    #[tokio::test]
    async fn a_join_issues_a_certificate_and_records_the_node() {
        let cluster = cluster();
        let request = request(&cluster, 1, "web-1").await;
        let joined = cluster
            .joiner
            .join(request, |_| false, SystemTime::now())
            .await
            .unwrap();
        let node = NodeRegistry::new(cluster.store.clone())
            .get("web-1")
            .await
            .unwrap()
            .unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(joined.node_cert_pem.as_bytes()).unwrap();
        assert!(node.holds_cert(&pem.contents));
        assert!(cluster.ca.has_issued(&pem.contents));
    }

    #[tokio::test]
    async fn refused_joins_store_nothing_and_keep_the_token() {
        let cluster = cluster();
        let nodes = NodeRegistry::new(cluster.store.clone());
        let valid = request(&cluster, 1, "web-1").await;
        type Spoil = fn(&mut JoinRequest);
        let refusals: [(&str, Spoil, bool); 3] = [
            ("bad name", |r| r.node_name = "Web_1!".into(), false),
            (
                "bad request",
                |r| r.node_csr_der = b"not a request".to_vec(),
                false,
            ),
            ("name online", |_| {}, true),
        ];
        for (what, spoil, online) in refusals {
            let mut spoiled = JoinRequest {
                credentials: TokenCredentials {
                    token_id: valid.credentials.token_id.clone(),
                    token_secret: valid.credentials.token_secret.clone(),
                },
                node_name: valid.node_name.clone(),
                node_labels: BTreeMap::new(),
                node_csr_der: valid.node_csr_der.clone(),
                node_vpn_pub_key: None,
                node_public_endpoint: None,
                node_vpn_listen_port: 0,
                seen_from: None,
            };
            spoil(&mut spoiled);
            let refused = cluster
                .joiner
                .join(spoiled, |_| online, SystemTime::now())
                .await;
            assert!(refused.is_err(), "{what}");
            assert!(nodes.list().await.unwrap().is_empty(), "{what}");
        }
        // The token's one use is still there.
        cluster
            .joiner
            .join(valid, |_| false, SystemTime::now())
            .await
            .unwrap();
        assert_eq!(nodes.list().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn an_expired_token_is_refused_and_nothing_is_stored() {
        let cluster = cluster();
        let request = request(&cluster, 1, "web-1").await;
        let later = SystemTime::now() + Duration::from_secs(11 * 60);
        let refused = cluster.joiner.join(request, |_| false, later).await;
        let Err(error) = refused else {
            panic!("an expired token joined")
        };
        assert!(error.to_string().contains("expired"), "{error}");
        assert!(NodeRegistry::new(cluster.store.clone())
            .list()
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn a_mesh_join_without_a_key_keeps_the_token_and_one_with_a_key_gets_an_address() {
        let store = SqliteStore::open_in_memory().unwrap();
        let ca = Arc::new(ClusterCa::generate("test", SystemTime::now()).unwrap());
        let master = NodeVpn {
            node_vpn_pub_key: weft_vpn::vpn_key::VpnKeyPair::generate().public_key_base64,
            node_public_endpoint: "192.0.2.1:51820".into(),
            persistent_keepalive: 0,
        };
        let mesh = Mesh::open(store.clone(), "10.9.0.0/29", master, "master")
            .await
            .unwrap();
        let cluster = Cluster {
            joiner: Joiner::new(ca.clone(), store.clone(), Some(mesh.clone())),
            store,
            ca,
        };
        let mut keyless = request(&cluster, 1, "web-1").await;
        keyless.node_vpn_pub_key = Some("not a key".into());
        let credentials = TokenCredentials {
            token_id: keyless.credentials.token_id.clone(),
            token_secret: keyless.credentials.token_secret.clone(),
        };
        let refused = cluster
            .joiner
            .join(keyless, |_| false, SystemTime::now())
            .await;
        assert!(matches!(refused, Err(JoinError::MeshKeyMissing)));

        let mut keyed = request(&cluster, 1, "web-1").await;
        keyed.credentials = credentials;
        keyed.node_vpn_pub_key = Some(weft_vpn::vpn_key::VpnKeyPair::generate().public_key_base64);
        keyed.node_vpn_listen_port = 51821;
        keyed.seen_from = Some("198.51.100.7".parse().unwrap());
        let joined = cluster
            .joiner
            .join(keyed, |_| false, SystemTime::now())
            .await
            .unwrap();
        let admission = joined.mesh.unwrap();
        assert_eq!(admission.node_vpn_ip.to_string(), "10.9.0.2");
        let peer = admission
            .peers
            .upserts
            .iter()
            .find(|peer| peer.node_name == "web-1")
            .unwrap();
        // Behind NAT as far as the master knows: its peers keep the mapping open.
        assert_eq!(peer.node_public_endpoint, "198.51.100.7:51821");
        assert_eq!(
            peer.persistent_keepalive,
            weft_vpn::device::NAT_KEEPALIVE_SECONDS
        );
        assert!(mesh.is_member("web-1").await);
        let node = NodeRegistry::new(cluster.store.clone())
            .get("web-1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(node.node_vpn_ip.as_deref(), Some("10.9.0.2"));
    }
}
