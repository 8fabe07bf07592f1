//! The tonic services, thin: each call is authenticated by its peer certificate, checked
//! for size by tonic's limits, and handed to the core.

pub mod adminapi;
pub mod connection_limit;
pub mod pubapi;
pub mod vpnapi;
pub mod webhook;

use std::sync::Arc;
use std::time::SystemTime;

use tonic::{Request, Status};
use weft_proto::tls::peer_cert_der;
use weft_taskbook::report::unix_ms;

use crate::core::admin_registry::{AdminRefusal, AdminRegistry};
use crate::core::beacons::BeaconPlanner;
use crate::core::cron_jobs::CronJobEngine;
use crate::core::events::{EventLog, NewEvent};
use crate::core::join::Joiner;
use crate::core::leadership::{Leadership, MasterRegistry};
use crate::core::mesh::{Departure, Mesh};
use crate::core::node_registry::NodeRegistry;
use crate::core::objects::ObjectRegistry;
use crate::core::pki::{cert_terms, peer_identity, ClusterCa, PeerIdentity, PkiError, SignedCert};
use crate::core::run::JobRunner;
use crate::core::sessions::{NodeSessions, ToNode};
use crate::core::token_registry::TokenRegistry;
use crate::store::Store;

/// Largest message the pubapi accepts: Join is a name, labels and a certificate
/// request. The vpnapi and adminapi carry runs and use weft's one message bound,
/// `weft_taskbook::limits::MAX_MESSAGE_BYTES`, as the CLI and the nodes do.
pub const PUBAPI_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A certificate request is a key and a signature; anything much larger is not one.
const MAX_CSR_BYTES: usize = 16 * 1024;

/// What every service reaches.
pub struct MasterContext<S> {
    pub ca: Arc<ClusterCa>,
    pub master_public_endpoint: String,
    /// Where nodes reach this master's vpnapi (with `--vpn off`, the public endpoint).
    pub master_vpnapi_endpoint: String,
    pub master_name: String,
    pub leadership: Leadership,
    /// Every master of the cluster, for nodes to fail over to.
    pub masters: MasterRegistry<S>,
    pub sessions: Arc<NodeSessions>,
    pub nodes: NodeRegistry<S>,
    /// The admins and their certificates that are still good; every adminapi call is
    /// checked against it ([`admin_callers_only`]).
    pub admins: AdminRegistry<S>,
    pub tokens: TokenRegistry<S>,
    pub joiner: Joiner<S>,
    pub runner: JobRunner<S>,
    pub objects: ObjectRegistry<S>,
    pub events: EventLog<S>,
    pub beacons: BeaconPlanner<S>,
    pub cron_jobs: Arc<CronJobEngine<S>>,
    /// With the mesh on: the peers, and the master's own WireGuard interface.
    pub mesh: Option<Arc<Mesh<S>>>,
    pub mesh_device: Option<Arc<weft_vpn::device::MeshDevice>>,
}

impl<S: Store + Clone> MasterContext<S> {
    /// Takes a node out of the cluster (`weft node remove`, or the node leaving): its
    /// record goes, so its certificate is refused; its peer goes from every node; its
    /// address is free. `false` when there was no such node.
    pub async fn forget_node(&self, node_name: &str, departure: Departure) -> Result<bool, Status> {
        let reason = departure.reason();
        let removed = self
            .nodes
            .remove(node_name)
            .await
            .map_err(|error| Status::internal(error.to_string()))?;
        if let Some(mesh) = &self.mesh {
            mesh.remove(node_name, departure)
                .await
                .map_err(|error| Status::internal(error.to_string()))?;
        }
        self.sessions.kick(node_name, reason);
        if removed {
            tracing::info!(node = %node_name, %reason, "node removed; its certificate is refused from now on");
        }
        Ok(removed)
    }

    /// Sends a connected node the Beacons it runs now.
    pub async fn send_beacons(&self, node_name: &str) {
        match self.beacons.beacons_for(node_name).await {
            Ok(beacons) => {
                let json = serde_json::to_string(&beacons).expect("beacons are plain data");
                self.sessions
                    .send(node_name, ToNode::Beacons(Arc::new(json)));
            }
            Err(error) => {
                tracing::warn!(node = %node_name, %error, "the node's beacons could not be worked out")
            }
        }
    }

    /// Stores an event; one that cannot be stored is logged, and the work that
    /// caused it goes on.
    pub async fn emit(&self, event: NewEvent) {
        let event_type = event.event_type.clone();
        if let Err(error) = self.events.emit(event).await {
            tracing::warn!(event = %event_type, %error, "event not stored");
        }
    }

    /// How long ago the master's interface last shook hands with each peer, by public key.
    pub async fn handshake_ages(&self) -> std::collections::HashMap<String, u64> {
        let Some(device) = self.mesh_device.clone() else {
            return Default::default();
        };
        let statuses = tokio::task::spawn_blocking(move || device.peer_statuses()).await;
        match statuses {
            Ok(Ok(statuses)) => statuses
                .into_iter()
                .filter_map(|status| {
                    let age = status.last_handshake_age?;
                    Some((status.node_vpn_pub_key, age.as_secs()))
                })
                .collect(),
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot read the WireGuard interface");
                Default::default()
            }
            Err(_) => Default::default(),
        }
    }

    /// Work with nodes (sessions, runs) is the leader's alone; a standby says who leads.
    pub fn require_leader(&self) -> Result<(), Status> {
        let state = self.leadership.state();
        if state.leading {
            return Ok(());
        }
        Err(Status::failed_precondition(match state.leader {
            Some(leader) => format!("this master is a standby; `{leader}` leads the cluster now"),
            None => "this master is a standby and no master leads yet (an election is under way); try again in a few seconds".to_string(),
        }))
    }

    /// Where nodes find the masters, the leader's first; this master's own if the
    /// registry cannot be read.
    pub async fn master_vpnapi_endpoints(&self) -> Vec<String> {
        let leader = self.leadership.state().leader;
        match self.masters.vpnapi_endpoints(leader.as_deref()).await {
            Ok(endpoints) if !endpoints.is_empty() => endpoints,
            Ok(_) => vec![self.master_vpnapi_endpoint.clone()],
            Err(error) => {
                tracing::warn!(%error, "the master list is unreadable; nodes learn only this master");
                vec![self.master_vpnapi_endpoint.clone()]
            }
        }
    }

    fn require_admin<T>(request: &Request<T>) -> Result<(), Status> {
        require_admin_role(request).map(|_| ())
    }

    /// A new certificate for the calling node (a node speaks for itself only), for the
    /// key in its request. Once stored, the certificate the call came with is refused:
    /// the node reconnects with the new one.
    pub async fn renew_node_cert<T>(
        &self,
        request: &Request<T>,
        csr_der: &[u8],
    ) -> Result<String, Status> {
        let node_name = self.require_node(request).await?;
        let old_cert_der = peer_cert_der(request).expect("require_node() found it");
        let signed = self.sign_request(csr_der, |csr_der, now| {
            self.ca.sign_node_csr(&node_name, csr_der, now)
        })?;
        let swapped = self
            .nodes
            .swap_cert(&node_name, &old_cert_der, &signed.cert_der, &signed.terms())
            .await
            .map_err(|error| Status::unavailable(error.to_string()))?;
        if !swapped {
            return Err(Status::permission_denied(format!(
                "the certificate of node `{node_name}` was replaced or revoked meanwhile; join it again with a new token if it keeps failing"
            )));
        }
        tracing::info!(node = %node_name, serial = %signed.serial, "node certificate renewed; the previous one is refused from now on");
        Ok(signed.cert_pem)
    }

    /// A new certificate for the calling admin, for the key in its request. The
    /// admin's earlier certificates stay good until they expire.
    pub async fn renew_admin_cert<T>(
        &self,
        request: &Request<T>,
        csr_der: &[u8],
    ) -> Result<String, Status> {
        let (admin_name, _) = require_listed_admin(&self.admins, request)?;
        let signed = self.sign_request(csr_der, |csr_der, now| {
            self.ca.sign_admin_csr(&admin_name, csr_der, now)
        })?;
        self.admins
            .renewed(&admin_name, &signed.terms(), unix_ms(SystemTime::now()))
            .await
            .map_err(|error| Status::failed_precondition(error.to_string()))?;
        tracing::info!(admin = %admin_name, serial = %signed.serial, "admin certificate renewed");
        Ok(signed.cert_pem)
    }

    fn sign_request(
        &self,
        csr_der: &[u8],
        sign: impl FnOnce(&[u8], SystemTime) -> Result<SignedCert, PkiError>,
    ) -> Result<SignedCert, Status> {
        if csr_der.len() > MAX_CSR_BYTES {
            return Err(Status::invalid_argument(format!(
                "a certificate request of {} bytes is over the limit of {MAX_CSR_BYTES}",
                csr_der.len()
            )));
        }
        sign(csr_der, SystemTime::now()).map_err(|error| match error {
            PkiError::Parse { .. } => Status::invalid_argument(error.to_string()),
            _ => Status::internal(error.to_string()),
        })
    }

    /// A node's name, if the certificate is the one it holds now: a removed node's, or
    /// one replaced by a rejoin, is refused.
    async fn require_node<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let PeerIdentity::Node { name } = identity(request)? else {
            return Err(Status::permission_denied(
                "the vpnapi takes node certificates only",
            ));
        };
        let cert_der = peer_cert_der(request).expect("identity() found it");
        match self.nodes.get(&name).await {
            Ok(Some(record)) if record.holds_cert(&cert_der) => Ok(name),
            Ok(_) => Err(Status::permission_denied(format!(
                "the certificate of node `{name}` was revoked (the node was removed or joined again); join it again with a new token"
            ))),
            Err(error) => Err(Status::unavailable(error.to_string())),
        }
    }
}

/// The caller's identity from its client certificate, which the TLS layer has already
/// verified against the cluster CA.
fn identity<T>(request: &Request<T>) -> Result<PeerIdentity, Status> {
    let cert_der = peer_cert_der(request).ok_or_else(|| {
        Status::unauthenticated("this call needs a client certificate of this cluster")
    })?;
    peer_identity(&cert_der)
        .map_err(|e| Status::unauthenticated(format!("unusable client certificate: {e}")))
}

/// The caller's admin name and certificate.
fn require_admin_role<T>(request: &Request<T>) -> Result<(String, Vec<u8>), Status> {
    match identity(request)? {
        PeerIdentity::Admin { name } => {
            let cert_der = peer_cert_der(request).expect("identity() found it");
            Ok((name, cert_der))
        }
        other => Err(Status::permission_denied(format!(
            "the adminapi takes the admin's certificate, not {other}'s"
        ))),
    }
}

/// An admin certificate that is listed (not revoked, not replaced): its name and DER.
pub fn require_listed_admin<S: Store, T>(
    admins: &AdminRegistry<S>,
    request: &Request<T>,
) -> Result<(String, Vec<u8>), Status> {
    let (name, cert_der) = require_admin_role(request)?;
    let serial = cert_terms(&cert_der)
        .map_err(|e| Status::unauthenticated(format!("unusable client certificate: {e}")))?
        .serial;
    admins
        .check(&name, &serial)
        .map_err(|refusal| match refusal {
            AdminRefusal::ListUnavailable => Status::unavailable(refusal.to_string()),
            _ => Status::permission_denied(refusal.to_string()),
        })?;
    Ok((name, cert_der))
}

/// The adminapi's interceptor: it sees the call's headers and connection before the
/// message is read, and refuses all but listed admin certificates, on every call.
pub fn admin_callers_only<S: Store + Clone>(
    admins: AdminRegistry<S>,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |request| {
        require_listed_admin(&admins, &request)?;
        Ok(request)
    }
}
