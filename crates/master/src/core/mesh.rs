//! The mesh as the master keeps it: the IP pool and the versioned peer registry, stored
//! together under one key so that an address and its peer never disagree, and a version
//! that continues across restarts. The master is a peer like any node.
//!
//! Every change is stored before it is announced: `changes()` ticks with the version,
//! and each session pushes what its node has not seen (see `api::vpnapi`).

use std::net::Ipv4Addr;
use std::sync::{Arc, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Mutex};
use weft_vpn::ip_pool::{IpPool, IpPoolError};
use weft_vpn::peer_registry::{Peer, PeerRegistry, PeerUpdate};

use super::record::{decode, encode, CorruptRecord};
use crate::store::{Precondition, Store, StoreError};

const MESH_KEY: &str = "/mesh/state";

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("the mesh store failed: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Corrupt(#[from] CorruptRecord),
    #[error(transparent)]
    Pool(#[from] IpPoolError),
    #[error(
        "the cluster network is {stored} (set by `weft master init`), not {asked}; drop \
         --vpn-cidr or start a new cluster to change it"
    )]
    CidrChanged { stored: String, asked: String },
    #[error("`{0}` is the master's name in the mesh; join the node under another name")]
    MasterName(String),
    /// Nodes route by public key: a second holder would draw the first one's traffic.
    #[error(
        "this WireGuard key already belongs to another node or to a master of this cluster; \
         each node needs its own key: if this node's data directory was copied from \
         another, delete its vpn key file and join again"
    )]
    KeyInUse,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MeshState {
    pool: IpPool,
    registry: PeerRegistry,
}

/// A node's place in the mesh, as Join hands it out.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    pub node_vpn_ip: Ipv4Addr,
    /// Every peer, the master and the node itself included.
    pub peers: PeerUpdate,
    /// An offline node whose address was reclaimed for this one (it must join again).
    pub reclaimed_from: Option<String>,
}

/// What a node announces about its WireGuard side.
#[derive(Debug, Clone)]
pub struct NodeVpn {
    pub node_vpn_pub_key: String,
    pub node_public_endpoint: String,
    pub persistent_keepalive: u16,
}

/// Why a node goes out of the mesh. One that left asked through its own tunnel and
/// waits for the answer, so the master's interface keeps it a moment (see
/// `weft_vpn::departed_peers`); a removed one is cut off at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    Left,
    Removed,
}

impl Departure {
    pub fn reason(self) -> &'static str {
        match self {
            Departure::Left => "the node left",
            Departure::Removed => "removed by the admin",
        }
    }
}

pub struct Mesh<S> {
    store: S,
    master_name: String,
    state: Mutex<(MeshState, u64)>,
    version: watch::Sender<u64>,
    /// Peers of the nodes that left since the master's interface last looked (`take_left`).
    left: std::sync::Mutex<Vec<Peer>>,
}

impl<S: Store> Mesh<S> {
    /// Loads the stored mesh (or starts one over `vpn_cidr`) and records the master's
    /// own peer, so a new master key or endpoint reaches every node.
    pub async fn open(
        store: S,
        vpn_cidr: &str,
        master: NodeVpn,
        master_name: &str,
    ) -> Result<Arc<Mesh<S>>, MeshError> {
        let asked = IpPool::new(vpn_cidr)?;
        let (state, revision) = match store.get(MESH_KEY).await? {
            Some(entry) => {
                let state: MeshState = decode(&entry)?;
                if state.pool.cidr() != asked.cidr() {
                    return Err(MeshError::CidrChanged {
                        stored: state.pool.cidr().to_string(),
                        asked: asked.cidr().to_string(),
                    });
                }
                (state, entry.mod_revision)
            }
            None => (
                MeshState {
                    pool: asked,
                    registry: PeerRegistry::default(),
                },
                0,
            ),
        };
        let mesh = Arc::new(Mesh {
            store,
            master_name: master_name.to_string(),
            version: watch::Sender::new(state.registry.version()),
            state: Mutex::new((state, revision)),
            left: Default::default(),
        });
        mesh.update(|state| {
            let master_vpn_ip = state.pool.master_vpn_ip();
            state
                .registry
                .upsert(peer(master_name, master_vpn_ip, master));
            Ok(())
        })
        .await?;
        Ok(mesh)
    }

    pub fn master_name(&self) -> &str {
        &self.master_name
    }

    pub async fn master_vpn_ip(&self) -> Ipv4Addr {
        self.state.lock().await.0.pool.master_vpn_ip()
    }

    pub async fn vpn_cidr(&self) -> String {
        self.state.lock().await.0.pool.cidr().to_string()
    }

    /// Ticks with every new version.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    pub async fn changes_since(&self, since: u64) -> PeerUpdate {
        self.state.lock().await.0.registry.changes_since(since)
    }

    pub async fn peers(&self) -> Vec<Peer> {
        self.state
            .lock()
            .await
            .0
            .registry
            .peers()
            .cloned()
            .collect()
    }

    pub async fn is_member(&self, node_name: &str) -> bool {
        self.state.lock().await.0.registry.get(node_name).is_some()
    }

    /// Whether `node` could be admitted under `node_name` now, without admitting it:
    /// Join checks before it spends the token.
    pub async fn check_admission(
        &self,
        node_name: &str,
        node: &NodeVpn,
        is_online: impl Fn(&str) -> bool,
    ) -> Result<(), MeshError> {
        if node_name == self.master_name {
            return Err(MeshError::MasterName(node_name.to_string()));
        }
        let state = self.state.lock().await;
        check_key_free(&state.0.registry, node_name, &node.node_vpn_pub_key)?;
        let mut pool = state.0.pool.clone();
        pool.assign(node_name, 0, is_online)?;
        Ok(())
    }

    /// Gives the node its address (the one it had, if any) and makes it a peer.
    /// `last_seen` says when each node was last heard from, for reclaiming.
    pub async fn admit(
        &self,
        node_name: &str,
        node: NodeVpn,
        now_unix_ms: u64,
        is_online: impl Fn(&str) -> bool,
        last_seen: impl IntoIterator<Item = (String, u64)>,
    ) -> Result<Admission, MeshError> {
        if node_name == self.master_name {
            return Err(MeshError::MasterName(node_name.to_string()));
        }
        let mut admitted = None;
        self.update(|state| {
            check_key_free(&state.registry, node_name, &node.node_vpn_pub_key)?;
            for (name, seen) in last_seen {
                state.pool.touch(&name, seen);
            }
            let assigned = state.pool.assign(node_name, now_unix_ms, is_online)?;
            if let Some(reclaimed) = &assigned.reclaimed_from {
                state.registry.remove(reclaimed);
            }
            state
                .registry
                .upsert(peer(node_name, assigned.node_vpn_ip, node));
            admitted = Some(assigned);
            Ok(())
        })
        .await?;
        let assigned = admitted.expect("set by the update");
        Ok(Admission {
            node_vpn_ip: assigned.node_vpn_ip,
            peers: self.changes_since(0).await,
            reclaimed_from: assigned.reclaimed_from,
        })
    }

    /// Takes the node out of the mesh and frees its address; `false` if it was not in it.
    pub async fn remove(&self, node_name: &str, departure: Departure) -> Result<bool, MeshError> {
        let mut removed = false;
        self.update(|state| {
            state.pool.release(node_name);
            if let Some(peer) = state.registry.get(node_name) {
                removed = true;
                if departure == Departure::Left {
                    // Noted before the change is announced, so whoever sees it knows why.
                    self.left_peers().push(peer.clone());
                }
            }
            state.registry.remove(node_name);
            Ok(())
        })
        .await?;
        Ok(removed)
    }

    /// The peers of the nodes that left (rather than were removed) since the last call.
    pub fn take_left(&self) -> Vec<Peer> {
        std::mem::take(&mut *self.left_peers())
    }

    fn left_peers(&self) -> std::sync::MutexGuard<'_, Vec<Peer>> {
        self.left.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `change` to a copy, stores it (only if nothing else wrote the mesh in
    /// between), then makes it current and announces the new version.
    async fn update(
        &self,
        change: impl FnOnce(&mut MeshState) -> Result<(), MeshError>,
    ) -> Result<(), MeshError> {
        let mut guard = self.state.lock().await;
        let (state, revision) = &mut *guard;
        let mut next = state.clone();
        change(&mut next)?;
        let unchanged = next.registry.version() == state.registry.version()
            && next.pool == state.pool
            && *revision != 0;
        if unchanged {
            return Ok(());
        }
        let precondition = if *revision == 0 {
            Precondition::Absent
        } else {
            Precondition::ModRevision(*revision)
        };
        *revision = self
            .store
            .put(MESH_KEY, encode(&next), precondition)
            .await?;
        *state = next;
        self.version.send_replace(state.registry.version());
        Ok(())
    }
}

/// The key may be `node_name`'s own already (a rejoin), never another peer's: the
/// masters are peers of the registry too.
fn check_key_free(
    registry: &PeerRegistry,
    node_name: &str,
    node_vpn_pub_key: &str,
) -> Result<(), MeshError> {
    let holder = registry
        .peers()
        .find(|peer| peer.node_vpn_pub_key == node_vpn_pub_key && peer.node_name != node_name);
    match holder {
        Some(holder) => {
            tracing::warn!(node = %node_name, holder = %holder.node_name, "a join presented the WireGuard key of another peer; refused");
            Err(MeshError::KeyInUse)
        }
        None => Ok(()),
    }
}

fn peer(node_name: &str, node_vpn_ip: Ipv4Addr, node: NodeVpn) -> Peer {
    Peer {
        node_name: node_name.to_string(),
        node_vpn_pub_key: node.node_vpn_pub_key,
        node_vpn_ip: node_vpn_ip.to_string(),
        node_public_endpoint: node.node_public_endpoint,
        persistent_keepalive: node.persistent_keepalive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn vpn(key: &str) -> NodeVpn {
        NodeVpn {
            node_vpn_pub_key: key.into(),
            node_public_endpoint: "192.0.2.1:51820".into(),
            persistent_keepalive: 0,
        }
    }

    #[tokio::test]
    async fn addresses_and_versions_survive_a_master_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = SqliteStore::open(&path).unwrap();
        let mesh = Mesh::open(store, "10.9.0.0/24", vpn("master-key"), "m")
            .await
            .unwrap();
        let mut changes = mesh.changes();
        let a = mesh.admit("a", vpn("ka"), 1, |_| false, []).await.unwrap();
        assert_eq!(a.node_vpn_ip.to_string(), "10.9.0.2");
        assert!(changes.has_changed().unwrap());
        assert_eq!(
            a.peers
                .upserts
                .iter()
                .map(|p| p.node_name.as_str())
                .collect::<Vec<_>>(),
            ["a", "m"]
        );
        mesh.admit("b", vpn("kb"), 2, |_| false, []).await.unwrap();
        let version = *changes.borrow_and_update();
        assert!(matches!(
            mesh.admit("m", vpn("x"), 3, |_| false, []).await,
            Err(MeshError::MasterName(_))
        ));
        drop(mesh);

        let store = SqliteStore::open(&path).unwrap();
        let mesh = Mesh::open(store.clone(), "10.9.0.0/24", vpn("master-key"), "m")
            .await
            .unwrap();
        assert_eq!(*mesh.changes().borrow(), version, "versions continue");
        let again = mesh.admit("a", vpn("ka2"), 4, |_| false, []).await.unwrap();
        assert_eq!(
            again.node_vpn_ip.to_string(),
            "10.9.0.2",
            "not re-addressed"
        );
        let delta = mesh.changes_since(version).await;
        assert_eq!(delta.upserts.len(), 1);
        assert_eq!(delta.upserts[0].node_vpn_pub_key, "ka2");

        assert!(mesh.remove("b", Departure::Left).await.unwrap());
        let left: Vec<_> = mesh.take_left().into_iter().map(|p| p.node_name).collect();
        assert_eq!(left, ["b"]);
        assert!(mesh.take_left().is_empty(), "each leave is told once");
        assert!(!mesh.is_member("b").await);
        assert_eq!(mesh.changes_since(version + 1).await.removed, ["b"]);
        assert!(mesh.remove("a", Departure::Removed).await.unwrap());
        assert!(mesh.take_left().is_empty(), "a removed node is not kept");
        assert!(matches!(
            Mesh::open(store, "10.8.0.0/24", vpn("master-key"), "m").await,
            Err(MeshError::CidrChanged { .. })
        ));
    }

    #[tokio::test]
    async fn a_full_network_reclaims_an_offline_node_and_drops_its_peer() {
        let store = SqliteStore::open_in_memory().unwrap();
        // /29: .1 master, .2-.6 nodes.
        let mesh = Mesh::open(store, "10.9.0.0/29", vpn("mk"), "m")
            .await
            .unwrap();
        for (index, name) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            mesh.admit(name, vpn(name), index as u64, |_| false, [])
                .await
                .unwrap();
        }
        assert!(matches!(
            mesh.check_admission("f", &vpn("f"), |_| true).await,
            Err(MeshError::Pool(IpPoolError::Exhausted { .. }))
        ));
        // a was seen last; b is online; c is the longest idle of the rest.
        let admitted = mesh
            .admit(
                "f",
                vpn("f"),
                10,
                |name| name == "b",
                [("a".to_string(), 9)],
            )
            .await
            .unwrap();
        assert_eq!(admitted.reclaimed_from.as_deref(), Some("c"));
        assert_eq!(admitted.node_vpn_ip.to_string(), "10.9.0.4");
        assert!(!mesh.is_member("c").await);
    }

    #[tokio::test]
    async fn a_key_held_by_the_master_or_another_node_is_refused_and_changes_nothing() {
        let store = SqliteStore::open_in_memory().unwrap();
        let mesh = Mesh::open(store, "10.9.0.0/24", vpn("mk"), "m")
            .await
            .unwrap();
        mesh.admit("a", vpn("ka"), 1, |_| false, []).await.unwrap();
        let version = *mesh.changes().borrow();
        for stolen in ["mk", "ka"] {
            assert!(matches!(
                mesh.check_admission("thief", &vpn(stolen), |_| false).await,
                Err(MeshError::KeyInUse)
            ));
            assert!(matches!(
                mesh.admit("thief", vpn(stolen), 2, |_| false, []).await,
                Err(MeshError::KeyInUse)
            ));
        }
        assert_eq!(*mesh.changes().borrow(), version);
        assert!(!mesh.is_member("thief").await);
        // A node joining again keeps its own key.
        mesh.admit("a", vpn("ka"), 3, |_| false, []).await.unwrap();
    }
}
