//! Join, the one call a node makes before it has an identity.

use std::sync::Arc;
use std::time::SystemTime;

use tonic::{Request, Response, Status};
use weft_proto::bootstrap_token::LEADER_PUBLIC_ENDPOINT_HEADER;
use weft_proto::mesh::MeshSettings;
use weft_proto::pubapi::pub_api_server::PubApi;
use weft_proto::pubapi::{JoinRequest, JoinResponse};

use super::MasterContext;
use crate::core::events::{types, NewEvent};
use crate::core::join::{self, JoinError};
use crate::core::mesh::MeshError;
use crate::core::token::TokenCredentials;
use crate::core::token_registry::TokenRegistryError;
use crate::store::Store;

pub struct PubApiService<S> {
    pub context: Arc<MasterContext<S>>,
}

#[tonic::async_trait]
impl<S: Store + Clone> PubApi for PubApiService<S> {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        // Names and keys are judged by one master, so two joins never both take one.
        self.require_leader().await?;
        let seen_from = request.remote_addr();
        let request = request.into_inner();
        let node_name = request.node_name.clone();
        let non_empty = |text: String| (!text.is_empty()).then_some(text);
        let join_request = join::JoinRequest {
            credentials: TokenCredentials {
                token_id: request.token_id,
                token_secret: request.token_secret,
            },
            node_name: request.node_name,
            node_labels: request.node_labels.into_iter().collect(),
            node_csr_der: request.node_csr_der.to_vec(),
            node_vpn_pub_key: non_empty(request.node_vpn_pub_key),
            node_public_endpoint: non_empty(request.node_public_endpoint),
            node_vpn_listen_port: u16::try_from(request.node_vpn_listen_port).unwrap_or(0),
            seen_from: seen_from.map(|address| address.ip()),
        };
        let sessions = &self.context.sessions;
        let joined = self
            .context
            .joiner
            .join(
                join_request,
                |name| sessions.is_online(name),
                SystemTime::now(),
            )
            .await
            .map_err(|error| {
                tracing::warn!(node = %node_name, from = ?seen_from, %error, "join refused");
                join_status(error)
            })?;
        let mesh = match (joined.mesh, &self.context.mesh) {
            (Some(admission), Some(mesh)) => Some(MeshSettings {
                node_vpn_ip: admission.node_vpn_ip.to_string(),
                vpn_cidr: mesh.vpn_cidr().await,
                master_node_name: mesh.master_name().to_string(),
                peers: Some(admission.peers.into()),
            }),
            _ => None,
        };
        if joined.replaced {
            self.context.sessions.kick(
                &node_name,
                "replaced by a node that joined with a --replace token",
            );
        }
        tracing::info!(node = %node_name, replaced = joined.replaced, from = ?seen_from, vpn_ip = ?mesh.as_ref().map(|m| &m.node_vpn_ip), "node joined");
        let mut data = serde_json::Map::new();
        if let Some(mesh) = &mesh {
            data.insert("vpn_ip".into(), mesh.node_vpn_ip.clone().into());
        }
        if joined.replaced {
            data.insert("replaced".into(), true.into());
        }
        self.context
            .emit(NewEvent::system(types::NODE_JOINED, data).from_node(&node_name))
            .await;
        Ok(Response::new(JoinResponse {
            node_name,
            node_cert_pem: joined.node_cert_pem,
            ca_cert_pem: joined.ca_cert_pem,
            master_vpnapi_endpoints: self.context.master_vpnapi_endpoints().await,
            mesh,
        }))
    }
}

impl<S: Store + Clone> PubApiService<S> {
    /// A standby refuses, naming the leader's public endpoint in the answer's metadata
    /// (`LEADER_PUBLIC_ENDPOINT_HEADER`) for the node to join there: the node still
    /// checks that master against the CA its token names.
    async fn require_leader(&self) -> Result<(), Status> {
        let Err(mut status) = self.context.require_leader() else {
            return Ok(());
        };
        let leader = self.context.leadership.state().leader;
        let masters = self.context.masters.list().await.unwrap_or_default();
        let endpoint = masters
            .into_iter()
            .find(|master| Some(&master.master_name) == leader.as_ref())
            .and_then(|master| master.master_public_endpoint.parse().ok());
        if let Some(endpoint) = endpoint {
            status
                .metadata_mut()
                .insert(LEADER_PUBLIC_ENDPOINT_HEADER, endpoint);
        }
        Err(status)
    }
}

fn join_status(error: JoinError) -> Status {
    let message = error.to_string();
    match error {
        JoinError::InvalidName(_)
        | JoinError::InvalidLabels(_)
        | JoinError::Csr(_)
        | JoinError::MeshKeyMissing
        | JoinError::Mesh(MeshError::MasterName(_)) => Status::invalid_argument(message),
        JoinError::Mesh(MeshError::Pool(_)) => Status::resource_exhausted(message),
        JoinError::NameExists(_) | JoinError::Mesh(MeshError::KeyInUse) => {
            Status::already_exists(message)
        }
        JoinError::NotTheReplacedName { .. } => Status::permission_denied(message),
        JoinError::Token(TokenRegistryError::Token(_)) => Status::unauthenticated(message),
        JoinError::Token(TokenRegistryError::Contended) => Status::unavailable(message),
        JoinError::Token(_) | JoinError::Nodes(_) | JoinError::Mesh(_) => Status::internal(message),
    }
}
