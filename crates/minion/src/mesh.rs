//! The node's side of the mesh: its interface, brought up at start with the peers it
//! last knew (before the master is reached, and whether it ever is), then kept equal
//! to the master's registry: pushed updates, a jittered resync poll, and liveness
//! checks (seed 004): a peer silent for too long is removed only when the master
//! confirms it is no longer a member. Without the master nothing is ever removed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tonic::transport::Channel;
use weft_proto::vpnapi::vpn_api_client::VpnApiClient;
use weft_proto::vpnapi::{CheckPeerRequest, GetPeersRequest};
use weft_vpn::device::{DeviceSettings, MeshDevice, NAT_KEEPALIVE_SECONDS};
use weft_vpn::peer_registry::PeerUpdate;
use weft_vpn::peer_set::{OutOfOrder, PeerSet, PeerSetError};
use weft_vpn::vpn_key::VpnKeyPair;

use crate::MinionError;

pub const VPN_KEY_FILE: &str = "vpn.key";
pub const PEERS_FILE: &str = "peers.json";
/// The resync poll's mean interval; each wait is drawn from half to one and a half times it.
const RESYNC_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(300);

/// The node's place in the mesh, kept in `identity.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshIdentity {
    pub node_vpn_ip: String,
    pub vpn_cidr: String,
    pub master_node_name: String,
    pub interface: String,
    pub listen_port: u16,
}

pub struct NodeMesh {
    node_name: String,
    master_node_name: String,
    device: MeshDevice,
    peers: Mutex<PeerSet>,
    cache_path: PathBuf,
}

impl NodeMesh {
    /// Brings the interface up with the cached peers. Blocking (netlink, UAPI).
    pub fn start(
        data_dir: &Path,
        node_name: &str,
        identity: &MeshIdentity,
    ) -> Result<NodeMesh, MinionError> {
        let key = VpnKeyPair::load_or_create(&data_dir.join(VPN_KEY_FILE))
            .map_err(|e| MinionError::Mesh(e.to_string()))?;
        let node_vpn_ip: std::net::Ipv4Addr = identity.node_vpn_ip.parse().map_err(|_| {
            MinionError::Mesh(format!(
                "bad VPN address `{}` in the identity",
                identity.node_vpn_ip
            ))
        })?;
        let prefix_len = identity
            .vpn_cidr
            .rsplit_once('/')
            .and_then(|(_, prefix)| prefix.parse().ok())
            .ok_or_else(|| {
                MinionError::Mesh(format!(
                    "bad cluster network `{}` in the identity",
                    identity.vpn_cidr
                ))
            })?;
        let device = MeshDevice::open(&DeviceSettings {
            interface: identity.interface.clone(),
            private_key_base64: key.private_key_base64,
            listen_port: identity.listen_port,
            node_vpn_ip,
            vpn_prefix_len: prefix_len,
        })
        .map_err(|e| MinionError::Mesh(e.to_string()))?;
        let cache_path = data_dir.join(PEERS_FILE);
        let peers = PeerSet::load(&cache_path).unwrap_or_else(|error| {
            tracing::warn!(%error, "the cached peers are unreadable; starting without them");
            PeerSet::default()
        });
        let mesh = NodeMesh {
            node_name: node_name.to_string(),
            master_node_name: identity.master_node_name.clone(),
            device,
            peers: Mutex::new(peers),
            cache_path,
        };
        {
            let peers = mesh.lock();
            mesh.configure(&peers)?;
            tracing::info!(
                peers = peers.peers.len().saturating_sub(1),
                version = peers.version,
                "mesh up with the cached peers"
            );
        }
        Ok(mesh)
    }

    fn lock(&self) -> MutexGuard<'_, PeerSet> {
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn version(&self) -> u64 {
        self.lock().version
    }

    /// Applies an update from the master. Blocking.
    pub fn apply(&self, update: &PeerUpdate) -> Result<(), ApplyError> {
        let mut peers = self.lock();
        let changed = peers.apply(update).map_err(|error| match error {
            PeerSetError::OutOfOrder(gap) => ApplyError::OutOfOrder(gap),
            refused => ApplyError::Refused(refused),
        })?;
        if !changed {
            return Ok(());
        }
        self.configure(&peers).map_err(ApplyError::Device)?;
        if let Err(error) = peers.save(&self.cache_path) {
            tracing::warn!(%error, path = %self.cache_path.display(), "the peers could not be cached");
        }
        tracing::info!(
            version = peers.version,
            peers = peers.peers.len().saturating_sub(1),
            "mesh updated"
        );
        Ok(())
    }

    fn configure(&self, peers: &PeerSet) -> Result<(), MinionError> {
        let others: Vec<_> = peers.others(&self.node_name).cloned().collect();
        let changes = self
            .device
            .apply_peers(&others, NAT_KEEPALIVE_SECONDS)
            .map_err(|e| MinionError::Mesh(e.to_string()))?;
        tracing::debug!(?changes, "interface peers");
        Ok(())
    }

    /// Each peer's time since its last handshake, `None` before the first, by name
    /// (the master excepted: it is the one asked about the others). Blocking.
    fn peer_handshake_ages(&self) -> Vec<(String, Option<Duration>)> {
        let statuses = match self.device.peer_statuses() {
            Ok(statuses) => statuses,
            Err(error) => {
                tracing::warn!(%error, "cannot read the interface");
                return Vec::new();
            }
        };
        let ages: HashMap<String, Option<Duration>> = statuses
            .into_iter()
            .map(|status| (status.node_vpn_pub_key, status.last_handshake_age))
            .collect();
        self.lock()
            .others(&self.node_name)
            .filter(|peer| peer.node_name != self.master_node_name)
            .map(|peer| {
                let age = ages.get(&peer.node_vpn_pub_key).copied().flatten();
                (peer.node_name.clone(), age)
            })
            .collect()
    }

    /// The master confirmed the peer is gone. Blocking.
    fn forget(&self, node_name: &str) -> Result<(), MinionError> {
        let mut peers = self.lock();
        if peers.forget(node_name) {
            self.configure(&peers)?;
            let _ = peers.save(&self.cache_path);
        }
        Ok(())
    }
}

#[derive(Debug)]
pub enum ApplyError {
    OutOfOrder(OutOfOrder),
    /// The update would make the peers unsafe (see `PeerSetError`); nothing changed.
    Refused(PeerSetError),
    Device(MinionError),
}

/// Applies a pushed update; one that does not follow on from this node's version is
/// answered by asking the master for the changes since that version.
pub async fn apply_update(mesh: &Arc<NodeMesh>, update: PeerUpdate, channel: &Channel) {
    let applied = {
        let mesh = mesh.clone();
        tokio::task::spawn_blocking(move || mesh.apply(&update)).await
    };
    match applied {
        Ok(Ok(())) => {}
        Ok(Err(ApplyError::OutOfOrder(gap))) => {
            tracing::debug!(?gap, "an update out of order; asking for the changes");
            resync(mesh, channel).await;
        }
        Ok(Err(ApplyError::Refused(error))) => tracing::error!(%error, "mesh update refused"),
        Ok(Err(ApplyError::Device(error))) => tracing::warn!(%error, "the mesh update failed"),
        Err(error) => tracing::warn!(%error, "the mesh update stopped"),
    }
}

/// Asks the master for what changed since this node's version and applies it.
pub async fn resync(mesh: &Arc<NodeMesh>, channel: &Channel) {
    let since_version = mesh.version();
    match VpnApiClient::new(channel.clone())
        .get_peers(GetPeersRequest { since_version })
        .await
    {
        Ok(update) => {
            let update: PeerUpdate = update.into_inner().into();
            let mesh = mesh.clone();
            match tokio::task::spawn_blocking(move || mesh.apply(&update)).await {
                Ok(Ok(())) => {}
                Ok(Err(ApplyError::Refused(error))) => {
                    tracing::error!(%error, "mesh resync refused")
                }
                Ok(Err(error)) => tracing::warn!(?error, "the resync could not be applied"),
                Err(error) => tracing::warn!(%error, "the resync stopped"),
            }
        }
        Err(status) => tracing::debug!(status = %status.message(), "resync poll failed"),
    }
}

/// The jittered resync poll and the liveness checks, while there is a session
/// (`channel` holds its connection).
pub async fn keep_mesh(
    mesh: Arc<NodeMesh>,
    mut channel: watch::Receiver<Option<Channel>>,
    peer_timeout: Duration,
) {
    let check_every = (peer_timeout / 2).clamp(Duration::from_secs(1), Duration::from_secs(30));
    let mut next_resync = Instant::now() + jittered(RESYNC_INTERVAL);
    // When each silent peer was last asked about, so each is asked once per timeout.
    let mut asked: HashMap<String, Instant> = HashMap::new();
    let mut unheard_since: HashMap<String, Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(check_every) => {}
            changed = channel.changed() => if changed.is_err() { return },
        }
        let Some(current) = channel.borrow().clone() else {
            continue; // no master: nothing is removed
        };
        if Instant::now() >= next_resync {
            resync(&mesh, &current).await;
            next_resync = Instant::now() + jittered(RESYNC_INTERVAL);
        }
        let ages = {
            let mesh = mesh.clone();
            tokio::task::spawn_blocking(move || mesh.peer_handshake_ages())
                .await
                .unwrap_or_default()
        };
        let silent = silent_peers(ages, &mut unheard_since, peer_timeout);
        asked.retain(|name, _| silent.contains(name));
        for peer in silent {
            if asked
                .get(&peer)
                .is_some_and(|at| at.elapsed() < peer_timeout)
            {
                continue;
            }
            asked.insert(peer.clone(), Instant::now());
            let answer = VpnApiClient::new(current.clone())
                .check_peer(CheckPeerRequest {
                    node_name: peer.clone(),
                })
                .await;
            match answer {
                Ok(answer) if answer.get_ref().member => {
                    tracing::info!(%peer, timeout_s = peer_timeout.as_secs(), "no handshake with the peer for longer than the timeout; the master still lists it: kept");
                }
                Ok(_) => {
                    tracing::info!(%peer, "the master says the silent peer is gone: removed");
                    let mesh = mesh.clone();
                    let name = peer.clone();
                    if let Ok(Err(error)) =
                        tokio::task::spawn_blocking(move || mesh.forget(&name)).await
                    {
                        tracing::warn!(%error, %peer, "the peer could not be removed");
                    }
                }
                Err(status) => {
                    tracing::debug!(%peer, status = %status.message(), "cannot ask the master about a silent peer; kept");
                }
            }
        }
    }
}

/// The peers quiet for longer than `timeout`: since their last handshake, or, for a
/// peer never heard from, since this node first saw it so (a peer that just came up
/// gets its chance to shake hands first).
fn silent_peers(
    ages: Vec<(String, Option<Duration>)>,
    unheard_since: &mut HashMap<String, Instant>,
    timeout: Duration,
) -> Vec<String> {
    let now = Instant::now();
    unheard_since.retain(|name, _| ages.iter().any(|(peer, age)| peer == name && age.is_none()));
    ages.into_iter()
        .filter(|(name, age)| {
            let quiet_for = match age {
                Some(age) => *age,
                None => now.duration_since(*unheard_since.entry(name.clone()).or_insert(now)),
            };
            quiet_for > timeout
        })
        .map(|(name, _)| name)
        .collect()
}

fn jittered(mean: Duration) -> Duration {
    mean.mul_f64(rand::rng().random_range(0.5..1.5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_never_heard_from_gets_a_timeout_of_its_own_before_it_counts_as_silent() {
        let timeout = Duration::from_secs(60);
        let mut unheard_since = HashMap::new();
        let ages = || {
            vec![
                ("fresh".to_string(), None),
                ("talking".to_string(), Some(Duration::from_secs(5))),
                ("quiet".to_string(), Some(Duration::from_secs(61))),
            ]
        };
        assert_eq!(silent_peers(ages(), &mut unheard_since, timeout), ["quiet"]);
        // Still unheard a whole timeout later: now it is silent too.
        let first_seen = unheard_since["fresh"];
        unheard_since.insert("fresh".into(), first_seen - Duration::from_secs(61));
        assert_eq!(
            silent_peers(ages(), &mut unheard_since, timeout),
            ["fresh", "quiet"]
        );
        // Once it has shaken hands its own age counts, and the first sighting is dropped.
        let heard = vec![("fresh".to_string(), Some(Duration::from_secs(1)))];
        assert!(silent_peers(heard, &mut unheard_since, timeout).is_empty());
        assert!(unheard_since.is_empty());
    }
}
