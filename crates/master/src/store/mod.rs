//! The master's state as a small revisioned key-value store with etcd's semantics.
//!
//! The core maps its entities onto keys (`/nodes/<name>`, `/jobs/<id>/results/<node>/<seq>`,
//! ...) with JSON values and knows nothing of the backend. Every committed write bumps one
//! global revision (a transaction counts once, as in etcd), every key remembers the revision
//! that created it and the one that last changed it, and the history of changes can be
//! watched from any revision not yet compacted away. [`conformance`] holds the tests every
//! backend must pass.

pub mod any;
pub mod conformance;
pub mod etcd;
mod etcd_election;
pub mod etcd_settings;
pub mod sqlite;

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;

use tokio_stream::Stream;

pub use any::{AnyStore, StoreSettings};
pub use etcd::EtcdStore;
pub use etcd_settings::{EtcdSettings, EtcdTlsFiles};
pub use sqlite::SqliteStore;

/// Longest key, in bytes (ASCII, so also in characters).
pub const MAX_KEY_BYTES: usize = 1024;
/// Most bytes of keys and values one write may carry: etcd's default request limit.
pub const MAX_WRITE_BYTES: usize = 1536 * 1024;
/// Most operations in one transaction.
pub const MAX_OPERATIONS: usize = 1024;

/// A key as stored, with the revisions that created it and last changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: u64,
    pub mod_revision: u64,
}

/// What must hold of a key for a write to go ahead, like etcd's transaction compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    None,
    Absent,
    /// The key exists and was last changed at this revision.
    ModRevision(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    Put {
        key: String,
        value: Vec<u8>,
        precondition: Precondition,
    },
    Delete {
        key: String,
        precondition: Precondition,
    },
}

impl Operation {
    pub fn key(&self) -> &str {
        match self {
            Operation::Put { key, .. } | Operation::Delete { key, .. } => key,
        }
    }

    pub fn precondition(&self) -> Precondition {
        match self {
            Operation::Put { precondition, .. } | Operation::Delete { precondition, .. } => {
                *precondition
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change to one key; a revision holds several when a transaction changed several keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub revision: u64,
    pub kind: EventKind,
    pub key: String,
    /// The new value; `None` for a delete.
    pub value: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("precondition failed on {key}: nothing was written")]
    Conflict { key: String },
    /// `oldest` is the lowest `after_revision` a watch can still start from: list the keys
    /// again and watch from there.
    #[error("history after revision {requested} is compacted; the oldest revision to watch after is {oldest}")]
    Compacted { requested: u64, oldest: u64 },
    /// The write that reaches `key` carries `size` bytes of keys and values.
    #[error("write reaching {key} carries {size} bytes, more than the {max} allowed")]
    TooLarge {
        key: String,
        size: usize,
        max: usize,
    },
    #[error("transaction of {count} operations, more than the {max} allowed")]
    TooManyOperations { count: usize, max: usize },
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    /// I/O, corruption, a lost connection: a message for operators.
    #[error("{0}")]
    Backend(String),
}

/// Events on keys under a prefix, in revision order. The stream ends after an error.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, StoreError>> + Send>>;

/// A revisioned key-value store. Keys are ASCII, start with `/` and are at most
/// [`MAX_KEY_BYTES`] long; prefixes follow the same rules and match bytewise (`/a` matches
/// `/ab`, `/a/` does not). Writes that change nothing (deleting an absent key) use no revision.
/// A write whose future is dropped may still commit, as a request to a server would.
pub trait Store: Send + Sync + 'static {
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Entry>, StoreError>> + Send;

    /// Entries under `prefix`, sorted by key.
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Vec<Entry>, StoreError>> + Send;

    /// Returns the new revision: a transaction of one.
    fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        precondition: Precondition,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        self.transaction(vec![Operation::Put {
            key: key.to_owned(),
            value,
            precondition,
        }])
    }

    /// Returns the new revision, or `None` when the key was absent.
    fn delete(
        &self,
        key: &str,
        precondition: Precondition,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;

    /// Deletes every key under `prefix` in one revision; returns how many there were.
    fn delete_prefix(&self, prefix: &str)
        -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Checks every precondition against the state before the transaction, then applies
    /// all operations in one revision, or none: `Conflict` names the first failing key.
    /// A key may appear once. Returns the revision after the transaction.
    fn transaction(
        &self,
        operations: Vec<Operation>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    fn current_revision(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Every event on keys under `prefix` with a revision above `after_revision`, in order,
    /// then live ones as they commit. History that is gone, at the start or because the
    /// watcher fell behind a compaction, ends the stream with `Compacted`.
    fn watch(
        &self,
        prefix: &str,
        after_revision: u64,
    ) -> impl Future<Output = Result<WatchStream, StoreError>> + Send;

    /// Forgets the history up to and including `revision`; keys and values stay.
    /// Compacting to an already compacted revision does nothing.
    fn compact(&self, revision: u64) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Keys and prefixes: visible ASCII so that a prefix's end is one byte up and keys read
/// well in logs and in `sqlite3`.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    let reason = if !key.starts_with('/') {
        "must start with /"
    } else if key.len() > MAX_KEY_BYTES {
        "longer than 1024 bytes"
    } else if !key.bytes().all(|byte| byte.is_ascii_graphic()) {
        "only visible ASCII characters are allowed"
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidKey {
        key: key.to_owned(),
        reason,
    })
}

/// What every backend checks before a write, so all of them reject the same writes.
pub fn validate_write(operations: &[Operation]) -> Result<(), StoreError> {
    if operations.len() > MAX_OPERATIONS {
        return Err(StoreError::TooManyOperations {
            count: operations.len(),
            max: MAX_OPERATIONS,
        });
    }
    let mut size = 0;
    let mut keys = HashSet::new();
    for operation in operations {
        let key = operation.key();
        validate_key(key)?;
        if !keys.insert(key) {
            return Err(StoreError::InvalidKey {
                key: key.to_owned(),
                reason: "appears twice in one transaction",
            });
        }
        size += key.len();
        if let Operation::Put { value, .. } = operation {
            size += value.len();
        }
        if size > MAX_WRITE_BYTES {
            return Err(StoreError::TooLarge {
                key: key.to_owned(),
                size,
                max: MAX_WRITE_BYTES,
            });
        }
    }
    Ok(())
}
