//! Stored records are JSON values under keys the core chooses; one place reads and
//! writes them so a damaged record reads as a clear error, never a panic.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::store::Entry;

#[derive(Debug, thiserror::Error)]
#[error("the stored record {key} is unreadable ({reason}); restore it from a backup or delete it")]
pub struct CorruptRecord {
    pub key: String,
    pub reason: String,
}

pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).expect("records are plain data and always serialize")
}

pub fn decode<T: DeserializeOwned>(entry: &Entry) -> Result<T, CorruptRecord> {
    serde_json::from_slice(&entry.value).map_err(|error| CorruptRecord {
        key: entry.key.clone(),
        reason: error.to_string(),
    })
}
