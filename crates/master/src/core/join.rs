//! Join: a node trades a bootstrap token and a certificate request for its identity.
//! The token is checked first, so a caller without one learns nothing about the
//! cluster's nodes. Then everything that can be refused is checked before anything is
//! written, so a refused join leaves no trace and keeps the token's use: it is spent
//! last but one, right before the node's record.
//!
//! An identity cannot be taken at join: a name that exists is refused unless the token
//! was made to replace that node (`weft token create --replace NAME`), and a WireGuard
//! key another node or a master holds is refused (nodes route by key).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use weft_taskbook::objects::{validate_labels, validate_name};
use weft_taskbook::report::unix_ms;

use super::mesh::{Admission, Mesh, MeshError, NodeVpn};
use super::node_registry::{cert_sha256_hex, NodeRecord, NodeRegistry, NodeRegistryError};
use super::pki::{ClusterCa, PkiError};
use super::token::{TokenCredentials, TokenError, TokenRecord};
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
    /// An existing node of this name was replaced (its certificate no longer works).
    pub replaced: bool,
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
        "node {0} exists; remove it first with `weft node remove {0}`, or create the token \
         with `--replace {0}`"
    )]
    NameExists(String),
    #[error(
        "this token was created to replace node `{replace}` and joins under that name only; \
         join with --name {replace}, or create another token"
    )]
    NotTheReplacedName { replace: String },
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
    /// Joins take turns, so that two never both find a name or a key free and both take
    /// it. Joins are served by the leader alone, so this one lock is the cluster's.
    join_turn: tokio::sync::Mutex<()>,
}

impl<S: Store + Clone> Joiner<S> {
    pub fn new(ca: Arc<ClusterCa>, store: S, mesh: Option<Arc<Mesh<S>>>) -> Self {
        Joiner {
            ca,
            tokens: TokenRegistry::new(store.clone()),
            nodes: NodeRegistry::new(store),
            mesh,
            join_turn: tokio::sync::Mutex::new(()),
        }
    }

    /// `is_online` says whether a node of that name has a session now: an online node's
    /// address is never reclaimed for another.
    pub async fn join(
        &self,
        request: JoinRequest,
        is_online: impl Fn(&str) -> bool,
        now: SystemTime,
    ) -> Result<Joined, JoinError> {
        request.credentials.validate().map_err(TokenError::from)?;
        validate_name(&request.node_name).map_err(JoinError::InvalidName)?;
        validate_labels(&request.node_labels).map_err(JoinError::InvalidLabels)?;
        // Checked before the turn is taken, so callers without a token never hold it.
        let token = self.tokens.check(&request.credentials, now).await?;
        let _turn = self.join_turn.lock().await;
        let replaced = self.check_name(&request.node_name, &token).await?;
        let signed = self
            .ca
            .sign_node_csr(&request.node_name, &request.node_csr_der, now)?;
        let node_vpn = match &self.mesh {
            Some(mesh) => {
                let node_vpn = node_vpn(&request).ok_or(JoinError::MeshKeyMissing)?;
                self.check_key_free(&request.node_name, &node_vpn.node_vpn_pub_key)
                    .await?;
                mesh.check_admission(&request.node_name, &node_vpn, &is_online)
                    .await?;
                Some((mesh, node_vpn))
            }
            None => None,
        };
        self.tokens.redeem(&request.credentials, now).await?;
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
            replaced,
            node_cert_pem: signed.cert_pem,
            ca_cert_pem: self.ca.trust_bundle_pem(),
            mesh: admission,
        })
    }

    /// Whether the join replaces an existing node: only with a token made for that name.
    async fn check_name(&self, node_name: &str, token: &TokenRecord) -> Result<bool, JoinError> {
        if let Some(replace) = &token.replace_node_name {
            if replace != node_name {
                return Err(JoinError::NotTheReplacedName {
                    replace: replace.clone(),
                });
            }
        }
        let exists = self.nodes.get(node_name).await?.is_some();
        if exists && token.replace_node_name.is_none() {
            return Err(JoinError::NameExists(node_name.to_string()));
        }
        Ok(exists)
    }

    /// A node out of the mesh (its address reclaimed) still owns its key: it may join
    /// again with it.
    async fn check_key_free(
        &self,
        node_name: &str,
        node_vpn_pub_key: &str,
    ) -> Result<(), JoinError> {
        let held = self.nodes.list().await?.into_iter().any(|node| {
            node.node_name != node_name
                && node.node_vpn_pub_key.as_deref() == Some(node_vpn_pub_key)
        });
        if held {
            tracing::warn!(node = %node_name, "a join presented the WireGuard key of another node; refused");
            return Err(MeshError::KeyInUse.into());
        }
        Ok(())
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
        replacing(cluster, uses, name, None).await
    }

    async fn replacing(
        cluster: &Cluster,
        uses: u32,
        name: &str,
        replace: Option<&str>,
    ) -> JoinRequest {
        let token = TokenRegistry::new(cluster.store.clone())
            .create(
                "127.0.0.1:7443",
                cluster.ca.ca_cert_sha256(),
                Duration::from_secs(600),
                uses,
                replace.map(str::to_string),
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
        let refusals: [(&str, Spoil); 2] = [
            ("bad name", |r| r.node_name = "Web_1!".into()),
            ("bad request", |r| {
                r.node_csr_der = b"not a request".to_vec()
            }),
        ];
        for (what, spoil) in refusals {
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
                .join(spoiled, |_| false, SystemTime::now())
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

    async fn uses_left(cluster: &Cluster, request: &JoinRequest) -> u32 {
        let tokens = TokenRegistry::new(cluster.store.clone())
            .list()
            .await
            .unwrap();
        tokens
            .into_iter()
            .find(|token| token.token_id == request.credentials.token_id)
            .unwrap()
            .uses_left
    }

    #[tokio::test]
    async fn a_name_that_exists_is_taken_only_with_a_token_made_to_replace_it() {
        let cluster = cluster();
        let nodes = NodeRegistry::new(cluster.store.clone());
        let first = request(&cluster, 1, "web-1").await;
        cluster
            .joiner
            .join(first, |_| false, SystemTime::now())
            .await
            .unwrap();
        let before = nodes.get("web-1").await.unwrap().unwrap();

        // Offline or not, the name is the node's.
        let thief = request(&cluster, 1, "web-1").await;
        let refused = cluster
            .joiner
            .join(thief.clone_for_test(), |_| false, SystemTime::now())
            .await;
        let Err(error) = refused else {
            panic!("an existing name was taken")
        };
        assert_eq!(
            error.to_string(),
            "node web-1 exists; remove it first with `weft node remove web-1`, or create the \
             token with `--replace web-1`"
        );
        assert_eq!(
            uses_left(&cluster, &thief).await,
            1,
            "the refusal spent nothing"
        );

        // A wrong secret for that name hears about the token, not the name.
        let mut forged = thief.clone_for_test();
        forged.credentials.token_secret = "a".repeat(forged.credentials.token_secret.len());
        let refused = cluster
            .joiner
            .join(forged, |_| false, SystemTime::now())
            .await;
        assert!(
            matches!(
                refused,
                Err(JoinError::Token(TokenRegistryError::Token(
                    TokenError::Invalid
                )))
            ),
            "{:?}",
            refused.err().map(|e| e.to_string())
        );

        // A replace token joins its own name only.
        let elsewhere = replacing(&cluster, 1, "web-2", Some("web-1")).await;
        let refused = cluster
            .joiner
            .join(elsewhere, |_| false, SystemTime::now())
            .await;
        assert!(matches!(refused, Err(JoinError::NotTheReplacedName { .. })));
        assert!(nodes.get("web-2").await.unwrap().is_none());

        let replacement = replacing(&cluster, 1, "web-1", Some("web-1")).await;
        let joined = cluster
            .joiner
            .join(replacement, |_| true, SystemTime::now())
            .await
            .unwrap();
        assert!(joined.replaced);
        let after = nodes.get("web-1").await.unwrap().unwrap();
        assert_ne!(
            after.node_cert_sha256, before.node_cert_sha256,
            "the old certificate is revoked"
        );
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

    impl JoinRequest {
        fn clone_for_test(&self) -> JoinRequest {
            JoinRequest {
                credentials: TokenCredentials {
                    token_id: self.credentials.token_id.clone(),
                    token_secret: self.credentials.token_secret.clone(),
                },
                node_name: self.node_name.clone(),
                node_labels: self.node_labels.clone(),
                node_csr_der: self.node_csr_der.clone(),
                node_vpn_pub_key: self.node_vpn_pub_key.clone(),
                node_public_endpoint: self.node_public_endpoint.clone(),
                node_vpn_listen_port: self.node_vpn_listen_port,
                seen_from: self.seen_from,
            }
        }
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
