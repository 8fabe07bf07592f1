//! The nodes that joined: identity (certificate fingerprint), labels, addresses and
//! facts, under `/nodes/<name>` and `/facts/<name>`. Whether a node is online is not
//! stored: it is whether its session is open now (see `sessions`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use weft_taskbook::Vars;

use super::pki::CertTerms;
use super::record::{decode, encode, CorruptRecord};
use crate::store::{
    EventKind, Operation, Precondition, Store, StoreError, WatchEvent, WatchStream,
};

const NODES_PREFIX: &str = "/nodes/";
const FACTS_PREFIX: &str = "/facts/";

const SWAP_CERT_ATTEMPTS: usize = 3;

/// Facts are bounded so that one node cannot fill the store.
pub const MAX_FACTS_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node_name: String,
    pub labels: BTreeMap<String, String>,
    /// The node's current certificate: any other one, even from this CA, is refused,
    /// so removing the record (or a rejoin) revokes what was issued before.
    pub node_cert_sha256: String,
    pub node_cert_serial: String,
    /// When the current certificate ends (0 in records from before it was kept).
    #[serde(default)]
    pub node_cert_not_after_unix_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_vpn_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_vpn_pub_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_public_endpoint: Option<String>,
    pub joined_unix_ms: u64,
    #[serde(default)]
    pub last_seen_unix_ms: u64,
    /// Variables for this node alone (`weft node vars`), above its NodeGroups'.
    #[serde(default, skip_serializing_if = "Vars::is_empty")]
    pub vars: Vars,
}

#[cfg(test)]
impl NodeRecord {
    /// A node with a name and nothing else, for tests of what runs on nodes.
    pub fn named(node_name: &str) -> Self {
        NodeRecord {
            node_name: node_name.to_string(),
            labels: BTreeMap::new(),
            node_cert_sha256: String::new(),
            node_cert_serial: String::new(),
            node_cert_not_after_unix_ms: 0,
            node_vpn_ip: None,
            node_vpn_pub_key: None,
            node_public_endpoint: None,
            joined_unix_ms: 0,
            last_seen_unix_ms: 0,
            vars: Default::default(),
        }
    }
}

impl NodeRecord {
    /// Whether `cert_der` is the certificate this node holds now.
    pub fn holds_cert(&self, cert_der: &[u8]) -> bool {
        cert_sha256_hex(cert_der) == self.node_cert_sha256
    }
}

/// The node whose record a change from `watch_removals` deleted.
pub fn removed_node(change: &WatchEvent) -> Option<&str> {
    match change.kind {
        EventKind::Delete => change.key.strip_prefix(NODES_PREFIX),
        EventKind::Put => None,
    }
}

pub fn cert_sha256_hex(cert_der: &[u8]) -> String {
    Sha256::digest(cert_der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FactsRecord {
    pub facts: Value,
    pub updated_unix_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeRegistryError {
    #[error("the node store failed: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Corrupt(#[from] CorruptRecord),
    #[error("facts of {size} bytes are over the limit of {MAX_FACTS_BYTES} bytes")]
    FactsTooLarge { size: usize },
}

#[derive(Clone)]
pub struct NodeRegistry<S> {
    store: S,
}

impl<S: Store> NodeRegistry<S> {
    pub fn new(store: S) -> Self {
        NodeRegistry { store }
    }

    pub async fn get(&self, node_name: &str) -> Result<Option<NodeRecord>, NodeRegistryError> {
        match self.store.get(&node_key(node_name)).await? {
            Some(entry) => Ok(Some(decode(&entry)?)),
            None => Ok(None),
        }
    }

    /// Sorted by name.
    pub async fn list(&self) -> Result<Vec<NodeRecord>, NodeRegistryError> {
        let entries = self.store.list(NODES_PREFIX).await?;
        Ok(entries.iter().map(decode).collect::<Result<_, _>>()?)
    }

    /// Writes the record of a node that joined; a node that joined before under the
    /// same name is replaced (its old certificate stops working), its facts are kept.
    pub async fn put(&self, record: &NodeRecord) -> Result<(), NodeRegistryError> {
        self.store
            .put(
                &node_key(&record.node_name),
                encode(record),
                Precondition::None,
            )
            .await?;
        Ok(())
    }

    /// The node's address went to another node (the network was full).
    pub async fn clear_vpn_ip(&self, node_name: &str) -> Result<(), NodeRegistryError> {
        let Some(entry) = self.store.get(&node_key(node_name)).await? else {
            return Ok(());
        };
        let mut record: NodeRecord = decode(&entry)?;
        record.node_vpn_ip = None;
        self.store
            .put(
                &entry.key,
                encode(&record),
                Precondition::ModRevision(entry.mod_revision),
            )
            .await?;
        Ok(())
    }

    /// The store's changes to node records from now on (see `removed_node`), and the
    /// names of the nodes of `online` that have no record now: together they miss no
    /// removal, whichever master served it.
    pub async fn watch_removals(
        &self,
        online: Vec<String>,
    ) -> Result<(WatchStream, Vec<String>), NodeRegistryError> {
        let revision = self.store.current_revision().await?;
        let changes = self.store.watch(NODES_PREFIX, revision).await?;
        let mut gone = Vec::new();
        for node_name in online {
            if self.get(&node_name).await?.is_none() {
                gone.push(node_name);
            }
        }
        Ok((changes, gone))
    }

    /// Forgets the node and its facts in one write; `false` when there was no such node.
    pub async fn remove(&self, node_name: &str) -> Result<bool, NodeRegistryError> {
        let Some(entry) = self.store.get(&node_key(node_name)).await? else {
            return Ok(false);
        };
        let facts_key = facts_key(node_name);
        let mut operations = vec![Operation::Delete {
            key: entry.key,
            precondition: Precondition::ModRevision(entry.mod_revision),
        }];
        if self.store.get(&facts_key).await?.is_some() {
            operations.push(Operation::Delete {
                key: facts_key,
                precondition: Precondition::None,
            });
        }
        self.store.transaction(operations).await?;
        Ok(true)
    }

    pub async fn set_facts(
        &self,
        node_name: &str,
        facts: &FactsRecord,
    ) -> Result<(), NodeRegistryError> {
        let value = encode(facts);
        if value.len() > MAX_FACTS_BYTES {
            return Err(NodeRegistryError::FactsTooLarge { size: value.len() });
        }
        self.store
            .put(&facts_key(node_name), value, Precondition::None)
            .await?;
        Ok(())
    }

    pub async fn facts(&self, node_name: &str) -> Result<Option<FactsRecord>, NodeRegistryError> {
        match self.store.get(&facts_key(node_name)).await? {
            Some(entry) => Ok(Some(decode(&entry)?)),
            None => Ok(None),
        }
    }

    /// Every node's facts, by node name.
    pub async fn all_facts(&self) -> Result<BTreeMap<String, FactsRecord>, NodeRegistryError> {
        let entries = self.store.list(FACTS_PREFIX).await?;
        entries
            .iter()
            .map(|entry| {
                let name = entry.key[FACTS_PREFIX.len()..].to_string();
                Ok((name, decode(entry)?))
            })
            .collect()
    }

    /// A renewed certificate replaces the node's current one, which stops working; only
    /// if `old_cert_der` is still the current one (a rejoin or removal meanwhile wins).
    /// `false` when it was not.
    pub async fn swap_cert(
        &self,
        node_name: &str,
        old_cert_der: &[u8],
        new_cert_der: &[u8],
        new_cert: &CertTerms,
    ) -> Result<bool, NodeRegistryError> {
        // Heartbeats rewrite the record too: a write lost to one is tried again.
        for _ in 0..SWAP_CERT_ATTEMPTS {
            let Some(entry) = self.store.get(&node_key(node_name)).await? else {
                return Ok(false);
            };
            let mut record: NodeRecord = decode(&entry)?;
            if !record.holds_cert(old_cert_der) {
                return Ok(false);
            }
            record.node_cert_sha256 = cert_sha256_hex(new_cert_der);
            record.node_cert_serial = new_cert.serial.clone();
            record.node_cert_not_after_unix_ms = new_cert.not_after_unix_ms;
            let written = self
                .store
                .put(
                    &entry.key,
                    encode(&record),
                    Precondition::ModRevision(entry.mod_revision),
                )
                .await;
            match written {
                Ok(_) => return Ok(true),
                Err(StoreError::Conflict { .. }) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Ok(false)
    }

    /// Records when the node was last heard from, if it is still registered.
    pub async fn set_last_seen(
        &self,
        node_name: &str,
        unix_ms: u64,
    ) -> Result<(), NodeRegistryError> {
        let Some(entry) = self.store.get(&node_key(node_name)).await? else {
            return Ok(());
        };
        let mut record: NodeRecord = decode(&entry)?;
        record.last_seen_unix_ms = unix_ms;
        let written = self
            .store
            .put(
                &entry.key,
                encode(&record),
                Precondition::ModRevision(entry.mod_revision),
            )
            .await;
        match written {
            // Removed or rejoined meanwhile: that write wins.
            Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
            Err(other) => Err(other.into()),
        }
    }
}

fn node_key(node_name: &str) -> String {
    format!("{NODES_PREFIX}{node_name}")
}

fn facts_key(node_name: &str) -> String {
    format!("{FACTS_PREFIX}{node_name}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::SqliteStore;

    fn record(name: &str) -> NodeRecord {
        NodeRecord {
            node_name: name.into(),
            labels: [("role".to_string(), "web".to_string())].into(),
            node_cert_sha256: cert_sha256_hex(name.as_bytes()),
            node_cert_serial: "01".into(),
            node_cert_not_after_unix_ms: 0,
            node_vpn_ip: None,
            node_vpn_pub_key: None,
            node_public_endpoint: None,
            joined_unix_ms: 1,
            last_seen_unix_ms: 0,
            vars: Vars::new(),
        }
    }

    #[tokio::test]
    async fn nodes_and_facts_live_and_go_together() {
        let registry = NodeRegistry::new(SqliteStore::open_in_memory().unwrap());
        registry.put(&record("web-1")).await.unwrap();
        registry.put(&record("web-2")).await.unwrap();
        let facts = FactsRecord {
            facts: json!({"os": {"family": "debian"}}),
            updated_unix_ms: 5,
        };
        registry.set_facts("web-1", &facts).await.unwrap();

        let names: Vec<_> = registry.list().await.unwrap();
        assert_eq!(names.len(), 2);
        assert!(names[0].holds_cert(b"web-1"));
        assert!(!names[0].holds_cert(b"web-2"));
        assert_eq!(registry.facts("web-1").await.unwrap(), Some(facts));

        assert!(registry.remove("web-1").await.unwrap());
        assert!(!registry.remove("web-1").await.unwrap());
        assert_eq!(registry.get("web-1").await.unwrap(), None);
        assert_eq!(registry.facts("web-1").await.unwrap(), None);
        assert_eq!(registry.all_facts().await.unwrap().len(), 0);
    }

    #[tokio::test]
    async fn oversized_facts_are_refused_and_not_stored() {
        let registry = NodeRegistry::new(SqliteStore::open_in_memory().unwrap());
        let facts = FactsRecord {
            facts: json!({"blob": "x".repeat(MAX_FACTS_BYTES)}),
            updated_unix_ms: 5,
        };
        assert!(matches!(
            registry.set_facts("web-1", &facts).await,
            Err(NodeRegistryError::FactsTooLarge { .. })
        ));
        assert_eq!(registry.facts("web-1").await.unwrap(), None);
    }
}
