//! The store a master opens from its settings. [`Store`] returns `impl Future`, which
//! rules out `dyn Store`, so the daemon holds this enum of the backends instead.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{
    Entry, EtcdSettings, EtcdStore, Operation, Precondition, SqliteStore, Store, StoreError,
    WatchStream,
};

/// Where a master keeps its state, as `master.yaml` records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreSettings {
    /// One file in the data directory.
    #[default]
    Sqlite,
    /// An etcd cluster, which several masters can share.
    Etcd(EtcdSettings),
}

impl StoreSettings {
    /// Whether the master reaches its store over a network without TLS.
    pub fn is_plain_http(&self) -> bool {
        matches!(self, StoreSettings::Etcd(etcd) if etcd.etcd_insecure)
    }
}

#[derive(Clone)]
pub enum AnyStore {
    Sqlite(SqliteStore),
    Etcd(EtcdStore),
}

impl AnyStore {
    /// Opens the store `settings` name; `sqlite_file` is where sqlite's lives.
    pub async fn open(settings: &StoreSettings, sqlite_file: &Path) -> Result<Self, StoreError> {
        match settings {
            StoreSettings::Sqlite => SqliteStore::open(sqlite_file).map(AnyStore::Sqlite),
            StoreSettings::Etcd(etcd) => EtcdStore::connect(etcd).await.map(AnyStore::Etcd),
        }
    }
}

macro_rules! delegate {
    ($(fn $method:ident(&self $(, $arg:ident: $type:ty)*) -> $output:ty;)*) => {
        $(
            async fn $method(&self $(, $arg: $type)*) -> Result<$output, StoreError> {
                match self {
                    AnyStore::Sqlite(store) => store.$method($($arg),*).await,
                    AnyStore::Etcd(store) => store.$method($($arg),*).await,
                }
            }
        )*
    };
}

impl Store for AnyStore {
    delegate! {
        fn get(&self, key: &str) -> Option<Entry>;
        fn list(&self, prefix: &str) -> Vec<Entry>;
        fn put(&self, key: &str, value: Vec<u8>, precondition: Precondition) -> u64;
        fn delete(&self, key: &str, precondition: Precondition) -> Option<u64>;
        fn delete_prefix(&self, prefix: &str) -> usize;
        fn transaction(&self, operations: Vec<Operation>) -> u64;
        fn current_revision(&self) -> u64;
        fn watch(&self, prefix: &str, after_revision: u64) -> WatchStream;
        fn compact(&self, revision: u64) -> ();
    }
}
