//! The mesh's peers as the master keeps them (seed 000): every change bumps one
//! version and is kept as a delta, so a node that says "I have version V" gets only
//! what changed since; a node too far behind (or ahead, after a master restored an
//! older store) gets the whole set.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Deltas kept; a node further behind gets a snapshot.
pub const KEPT_CHANGES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub node_name: String,
    pub node_vpn_pub_key: String,
    pub node_vpn_ip: String,
    /// `host:port`; empty when unknown (the node is reached through its peers' traffic).
    pub node_public_endpoint: String,
    /// Seconds; set for nodes behind NAT.
    pub persistent_keepalive: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Change {
    Upsert(Peer),
    Remove(String),
}

/// What a node applies to reach `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerUpdate {
    /// The version this update starts from (for a full set: any).
    pub since: u64,
    pub version: u64,
    /// `upserts` is the whole set: drop every peer not in it.
    pub full: bool,
    pub upserts: Vec<Peer>,
    pub removed: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRegistry {
    version: u64,
    peers: BTreeMap<String, Peer>,
    /// (version reached by the change, the change), oldest first.
    changes: VecDeque<(u64, Change)>,
}

impl PeerRegistry {
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    pub fn get(&self, node_name: &str) -> Option<&Peer> {
        self.peers.get(node_name)
    }

    /// Adds or replaces a peer; returns the new version, or the same one when the peer
    /// was already exactly so.
    pub fn upsert(&mut self, peer: Peer) -> u64 {
        if self.peers.get(&peer.node_name) == Some(&peer) {
            return self.version;
        }
        self.peers.insert(peer.node_name.clone(), peer.clone());
        self.record(Change::Upsert(peer))
    }

    pub fn remove(&mut self, node_name: &str) -> u64 {
        if self.peers.remove(node_name).is_none() {
            return self.version;
        }
        self.record(Change::Remove(node_name.to_string()))
    }

    fn record(&mut self, change: Change) -> u64 {
        self.version += 1;
        self.changes.push_back((self.version, change));
        while self.changes.len() > KEPT_CHANGES {
            self.changes.pop_front();
        }
        self.version
    }

    /// What a node at `since` needs: the changes after it, each peer once, or the
    /// whole set when those changes are no longer all kept.
    pub fn changes_since(&self, since: u64) -> PeerUpdate {
        let oldest_kept = self.changes.front().map_or(self.version + 1, |(v, _)| *v);
        let covered = since == self.version || (since < self.version && since + 1 >= oldest_kept);
        if !covered {
            return PeerUpdate {
                since,
                version: self.version,
                full: true,
                upserts: self.peers.values().cloned().collect(),
                removed: Vec::new(),
            };
        }
        // The last change of each peer decides.
        let mut last: BTreeMap<&str, &Change> = BTreeMap::new();
        for (_, change) in self.changes.iter().filter(|(v, _)| *v > since) {
            let name = match change {
                Change::Upsert(peer) => peer.node_name.as_str(),
                Change::Remove(name) => name.as_str(),
            };
            last.insert(name, change);
        }
        let mut update = PeerUpdate {
            since,
            version: self.version,
            full: false,
            upserts: Vec::new(),
            removed: Vec::new(),
        };
        for change in last.into_values() {
            match change {
                Change::Upsert(peer) => update.upserts.push(peer.clone()),
                Change::Remove(name) => update.removed.push(name.clone()),
            }
        }
        update
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, key: &str) -> Peer {
        Peer {
            node_name: name.into(),
            node_vpn_pub_key: key.into(),
            node_vpn_ip: "10.77.0.2".into(),
            node_public_endpoint: String::new(),
            persistent_keepalive: 0,
        }
    }

    fn names(peers: &[Peer]) -> Vec<&str> {
        peers.iter().map(|p| p.node_name.as_str()).collect()
    }

    #[test]
    fn a_node_gets_only_what_changed_since_its_version() {
        let mut registry = PeerRegistry::default();
        registry.upsert(peer("a", "k1"));
        let v1 = registry.version();
        assert_eq!(
            registry.upsert(peer("a", "k1")),
            v1,
            "no change, no new version"
        );
        registry.upsert(peer("b", "k1"));
        registry.upsert(peer("a", "k2"));
        registry.remove("b");

        let update = registry.changes_since(v1);
        assert!(!update.full);
        assert_eq!(update.version, 4);
        assert_eq!(names(&update.upserts), ["a"]);
        assert_eq!(update.upserts[0].node_vpn_pub_key, "k2");
        assert_eq!(update.removed, ["b"]);

        let current = registry.changes_since(4);
        assert!(!current.full && current.upserts.is_empty() && current.removed.is_empty());
        let from_scratch = registry.changes_since(0);
        assert!(!from_scratch.full, "all changes are still kept");
        assert_eq!(names(&from_scratch.upserts), ["a"]);
    }

    #[test]
    fn a_node_too_far_behind_or_ahead_gets_the_whole_set() {
        let mut registry = PeerRegistry::default();
        for index in 0..KEPT_CHANGES + 10 {
            registry.upsert(peer(&format!("n{}", index % 3), &index.to_string()));
        }
        let behind = registry.changes_since(3);
        assert!(behind.full);
        assert_eq!(names(&behind.upserts), ["n0", "n1", "n2"]);
        let ahead = registry.changes_since(registry.version() + 5);
        assert!(
            ahead.full,
            "a node ahead of the master (restored store) resyncs"
        );
        let stored: PeerRegistry =
            serde_json::from_str(&serde_json::to_string(&registry).unwrap()).unwrap();
        assert_eq!(
            stored.changes_since(registry.version() - 1),
            registry.changes_since(registry.version() - 1)
        );
    }
}
