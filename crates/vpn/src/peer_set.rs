//! The peers a node knows, at the registry version it reached; cached on disk so that
//! a restarted node brings its interface back with its peers before (or without)
//! reaching the master.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::peer_registry::{Peer, PeerUpdate};

/// Bounds what a cache file or an update may hold (10,000 peers of ~200 bytes each,
/// with room to spare).
pub const MAX_PEER_SET_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSet {
    pub version: u64,
    pub peers: BTreeMap<String, Peer>,
}

/// An update that does not start where this set is: ask for the changes since our version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfOrder {
    pub have: u64,
    pub update_since: u64,
}

/// Why an update was not applied; the set stays as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerSetError {
    #[error("the update starts at version {} but this node is at {}", .0.update_since, .0.have)]
    OutOfOrder(OutOfOrder),
    /// WireGuard routes by public key: two peers with one key would send one peer's
    /// traffic to the other's endpoint, so such a set is never configured.
    #[error(
        "peers `{first}` and `{second}` have the same WireGuard key: refused, the peers in \
         use are kept (the master never sends this: check its log and `weft nodes`)"
    )]
    DuplicateKey { first: String, second: String },
}

impl PeerSet {
    /// Applies an update; `Ok(false)` when it brought nothing new. An update that would
    /// leave two peers with one key changes nothing.
    pub fn apply(&mut self, update: &PeerUpdate) -> Result<bool, PeerSetError> {
        let mut next = self.clone();
        let changed = next.apply_unchecked(update)?;
        if changed {
            next.check_keys_unique()?;
            *self = next;
        }
        Ok(changed)
    }

    fn check_keys_unique(&self) -> Result<(), PeerSetError> {
        let mut holders: std::collections::HashMap<&str, &str> = Default::default();
        for peer in self.peers.values() {
            if let Some(first) = holders.insert(&peer.node_vpn_pub_key, &peer.node_name) {
                return Err(PeerSetError::DuplicateKey {
                    first: first.to_string(),
                    second: peer.node_name.clone(),
                });
            }
        }
        Ok(())
    }

    fn apply_unchecked(&mut self, update: &PeerUpdate) -> Result<bool, PeerSetError> {
        if update.full {
            let peers: BTreeMap<String, Peer> = update
                .upserts
                .iter()
                .map(|peer| (peer.node_name.clone(), peer.clone()))
                .collect();
            let changed = peers != self.peers || update.version != self.version;
            self.peers = peers;
            self.version = update.version;
            return Ok(changed);
        }
        if update.version <= self.version {
            return Ok(false); // this set is already at least as new
        }
        if update.since != self.version {
            return Err(PeerSetError::OutOfOrder(OutOfOrder {
                have: self.version,
                update_since: update.since,
            }));
        }
        let mut changed = false;
        for peer in &update.upserts {
            changed |= self
                .peers
                .insert(peer.node_name.clone(), peer.clone())
                .as_ref()
                != Some(peer);
        }
        for name in &update.removed {
            changed |= self.peers.remove(name).is_some();
        }
        self.version = update.version;
        Ok(changed)
    }

    /// Drops a peer the master confirmed is gone, without a version of its own: the
    /// next update from the master says the same.
    pub fn forget(&mut self, node_name: &str) -> bool {
        self.peers.remove(node_name).is_some()
    }

    /// The peers to configure: everyone but `own_name`.
    pub fn others<'a>(&'a self, own_name: &'a str) -> impl Iterator<Item = &'a Peer> + 'a {
        self.peers
            .values()
            .filter(move |peer| peer.node_name != own_name)
    }

    /// The cached set; an empty one when there is no cache yet.
    pub fn load(path: &Path) -> io::Result<PeerSet> {
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(PeerSet::default()),
            Err(error) => return Err(error),
        };
        if file.metadata()?.len() > MAX_PEER_SET_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is larger than {MAX_PEER_SET_BYTES} bytes",
                    path.display()
                ),
            ));
        }
        let invalid = |error: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {error}", path.display()),
            )
        };
        let set: PeerSet = serde_json::from_reader(io::BufReader::new(file))
            .map_err(|error| invalid(error.to_string()))?;
        set.check_keys_unique()
            .map_err(|error| invalid(error.to_string()))?;
        Ok(set)
    }

    /// Writes the cache whole or not at all (temporary file, fsync, rename).
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let temporary = path.with_extension("tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(&serde_json::to_vec(self).map_err(io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer_registry::PeerRegistry;

    fn peer(name: &str, key: &str) -> Peer {
        Peer {
            node_name: name.into(),
            node_vpn_pub_key: key.into(),
            node_vpn_ip: "10.77.0.9".into(),
            node_public_endpoint: String::new(),
            persistent_keepalive: 0,
        }
    }

    #[test]
    fn a_node_follows_the_registry_and_asks_again_when_it_missed_an_update() {
        let mut registry = PeerRegistry::default();
        let mut set = PeerSet::default();
        registry.upsert(peer("a", "k1"));
        registry.upsert(peer("b", "k2"));
        assert_eq!(set.apply(&registry.changes_since(0)), Ok(true));
        assert_eq!(
            set.others("a")
                .map(|p| p.node_name.as_str())
                .collect::<Vec<_>>(),
            ["b"]
        );

        registry.remove("b");
        let missed = registry.changes_since(set.version);
        registry.upsert(peer("c", "k3"));
        let next = registry.changes_since(missed.version);
        assert_eq!(
            set.apply(&next),
            Err(PeerSetError::OutOfOrder(OutOfOrder {
                have: 2,
                update_since: 3
            }))
        );
        let resync = registry.changes_since(set.version);
        assert_eq!(set.apply(&resync), Ok(true));
        assert_eq!(set.peers.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(set.apply(&registry.changes_since(set.version)), Ok(false));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.json");
        assert_eq!(PeerSet::load(&path).unwrap(), PeerSet::default());
        set.save(&path).unwrap();
        assert_eq!(PeerSet::load(&path).unwrap(), set);
        std::fs::write(&path, "{").unwrap();
        assert!(PeerSet::load(&path)
            .unwrap_err()
            .to_string()
            .contains("peers.json"));
    }

    #[test]
    fn an_update_giving_two_peers_one_key_is_refused_and_the_peers_are_kept() {
        let mut registry = PeerRegistry::default();
        let mut set = PeerSet::default();
        registry.upsert(peer("master", "km"));
        registry.upsert(peer("a", "ka"));
        set.apply(&registry.changes_since(0)).unwrap();
        let before = set.clone();

        let since = registry.version();
        registry.upsert(peer("thief", "km"));
        let delta = registry.changes_since(since);
        let full = PeerUpdate {
            full: true,
            ..registry.changes_since(0)
        };
        for update in [&delta, &full] {
            assert_eq!(
                set.apply(update),
                Err(PeerSetError::DuplicateKey {
                    first: "master".into(),
                    second: "thief".into()
                })
            );
            assert_eq!(set, before, "the current peers are kept");
        }
        // Nor is such a set configured from the cache a node starts with.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.json");
        let mut cached = before.clone();
        cached.peers.insert("thief".into(), peer("thief", "km"));
        cached.save(&path).unwrap();
        assert!(PeerSet::load(&path).is_err());

        // The master moving a key from one name to another (remove, then upsert) is fine.
        registry.remove("thief");
        registry.remove("a");
        registry.upsert(peer("b", "ka"));
        assert_eq!(set.apply(&registry.changes_since(set.version)), Ok(true));
        assert_eq!(set.peers.keys().collect::<Vec<_>>(), ["b", "master"]);
    }
}
