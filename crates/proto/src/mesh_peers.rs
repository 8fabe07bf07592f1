//! The mesh's peers between the wire and `weft_vpn`'s types: one place for both
//! directions, used by the master (Join, pushes, polls) and the node.

use weft_vpn::peer_registry::{Peer, PeerUpdate};

use crate::mesh;

impl From<Peer> for mesh::Peer {
    fn from(peer: Peer) -> Self {
        mesh::Peer {
            node_name: peer.node_name,
            node_vpn_pub_key: peer.node_vpn_pub_key,
            node_vpn_ip: peer.node_vpn_ip,
            node_public_endpoint: peer.node_public_endpoint,
            persistent_keepalive: u32::from(peer.persistent_keepalive),
        }
    }
}

impl From<mesh::Peer> for Peer {
    fn from(peer: mesh::Peer) -> Self {
        Peer {
            node_name: peer.node_name,
            node_vpn_pub_key: peer.node_vpn_pub_key,
            node_vpn_ip: peer.node_vpn_ip,
            node_public_endpoint: peer.node_public_endpoint,
            persistent_keepalive: u16::try_from(peer.persistent_keepalive).unwrap_or(u16::MAX),
        }
    }
}

impl From<PeerUpdate> for mesh::PeerUpdate {
    fn from(update: PeerUpdate) -> Self {
        mesh::PeerUpdate {
            since: update.since,
            version: update.version,
            full: update.full,
            upserts: update.upserts.into_iter().map(Into::into).collect(),
            removed: update.removed,
        }
    }
}

impl From<mesh::PeerUpdate> for PeerUpdate {
    fn from(update: mesh::PeerUpdate) -> Self {
        PeerUpdate {
            since: update.since,
            version: update.version,
            full: update.full,
            upserts: update.upserts.into_iter().map(Into::into).collect(),
            removed: update.removed,
        }
    }
}
