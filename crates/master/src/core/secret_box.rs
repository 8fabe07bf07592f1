//! Secret values at rest: sealed with the cluster key (ChaCha20-Poly1305), each bound to
//! where it belongs (`namespace/name/key`) so a sealed value copied into another Secret
//! or key does not open. The key lives in the master's data directory, never in the
//! store, so a copy of the store (an sqlite file, an etcd backup) holds no plaintext.
//!
//! Only `weft master init` makes a key. The store holds a check value sealed with it, so
//! a master whose key is missing or from another cluster refuses to start instead of
//! sealing new Secrets with a key that cannot open the old ones.

use std::fmt;
use std::path::Path;

use crate::store::{Precondition, Store, StoreError};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;

/// The prefix of a sealed value, with the format's version.
const SEALED_PREFIX: &str = "sealed:v1:";
const NONCE_BYTES: usize = 12;
const KEY_BYTES: usize = 32;

/// Where the store keeps the check value, and what it seals.
pub const CLUSTER_KEY_CHECK_KEY: &str = "/cluster/key-check";
const CLUSTER_KEY_CHECK_AAD: &str = "cluster/key-check";
const CLUSTER_KEY_CHECK_TEXT: &str = "weft cluster key";

/// What to do about a missing or wrong key file.
const RESTORE_HINT: &str = "put back this cluster's key: from a backup of the data \
     directory, or copied from another master of the cluster (same file name, mode 0600); \
     a new key would not open the Secrets already stored";

#[derive(Debug, thiserror::Error)]
pub enum SecretBoxError {
    #[error("the cluster key {path} is unreadable: {reason}")]
    KeyFile { path: String, reason: String },
    #[error(
        "the cluster key {path} is missing: only `weft master init` makes one; {RESTORE_HINT}"
    )]
    KeyMissing { path: String },
    #[error("the cluster key {path} does not open the check value in this master's store: the key belongs to another cluster (another `weft master init`); {RESTORE_HINT}")]
    KeyOfAnotherCluster { path: String },
    #[error("the cluster key could not be checked against the store: {0}")]
    Store(#[from] StoreError),
    #[error("a stored secret value for {aad} does not open with this master's cluster key: the store and the key file belong to different clusters, or the value was altered")]
    Open { aad: String },
}

/// The cluster's symmetric key. Debug output never shows it.
#[derive(Clone)]
pub struct SecretBox {
    cipher: ChaCha20Poly1305,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBox(********)")
    }
}

impl SecretBox {
    pub fn from_key(key: &[u8; KEY_BYTES]) -> Self {
        SecretBox {
            cipher: ChaCha20Poly1305::new(Key::from_slice(key)),
        }
    }

    /// Makes a new cluster's key and writes it to `path` (mode 0600).
    pub fn create(path: &Path) -> Result<Self, SecretBoxError> {
        let mut key = [0u8; KEY_BYTES];
        rand::rng().fill_bytes(&mut key);
        weft_taskbook::state_file::write_private_bytes(path, &key).map_err(|e| {
            SecretBoxError::KeyFile {
                path: path.display().to_string(),
                reason: e.to_string(),
            }
        })?;
        Ok(Self::from_key(&key))
    }

    /// Reads the key file `init` wrote; never makes one.
    pub fn load(path: &Path) -> Result<Self, SecretBoxError> {
        let key_error = |reason: String| SecretBoxError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => SecretBoxError::KeyMissing {
                path: path.display().to_string(),
            },
            _ => key_error(error.to_string()),
        })?;
        let key: [u8; KEY_BYTES] = bytes.as_slice().try_into().map_err(|_| {
            key_error(format!(
                "it holds {} bytes, a cluster key is {KEY_BYTES}",
                bytes.len()
            ))
        })?;
        Ok(Self::from_key(&key))
    }

    /// Whether `sealed` is a check value this key made.
    fn opens_check_value(&self, sealed: &[u8]) -> bool {
        std::str::from_utf8(sealed)
            .ok()
            .and_then(|sealed| self.open(CLUSTER_KEY_CHECK_AAD, sealed).ok())
            .is_some_and(|text| text == CLUSTER_KEY_CHECK_TEXT)
    }

    /// Makes sure this is the key the store's Secrets are sealed with, by opening the
    /// check value in the store. A store without one (new, or from before the check) gets
    /// one sealed with this key. `path` is the key file, for the messages.
    pub async fn check_against<S: Store>(
        &self,
        store: &S,
        path: &Path,
    ) -> Result<(), SecretBoxError> {
        let stored = match store.get(CLUSTER_KEY_CHECK_KEY).await? {
            Some(entry) => entry.value,
            None => {
                let check_value = self.seal(CLUSTER_KEY_CHECK_AAD, CLUSTER_KEY_CHECK_TEXT);
                let written = store
                    .put(
                        CLUSTER_KEY_CHECK_KEY,
                        check_value.into_bytes(),
                        Precondition::Absent,
                    )
                    .await;
                match written {
                    Ok(_) => return Ok(()),
                    // Another master of the cluster wrote it first: that one must open too.
                    Err(StoreError::Conflict { .. }) => store
                        .get(CLUSTER_KEY_CHECK_KEY)
                        .await?
                        .map(|entry| entry.value)
                        .unwrap_or_default(),
                    Err(error) => return Err(error.into()),
                }
            }
        };
        if self.opens_check_value(&stored) {
            Ok(())
        } else {
            Err(SecretBoxError::KeyOfAnotherCluster {
                path: path.display().to_string(),
            })
        }
    }

    /// `aad` names the value's place; opening needs the same.
    pub fn seal(&self, aad: &str, plaintext: &str) -> String {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .expect("ChaCha20-Poly1305 encrypts any message below 256 GiB");
        let mut sealed = nonce.to_vec();
        sealed.extend(ciphertext);
        format!("{SEALED_PREFIX}{}", BASE64.encode(sealed))
    }

    pub fn open(&self, aad: &str, sealed: &str) -> Result<String, SecretBoxError> {
        let failed = || SecretBoxError::Open {
            aad: aad.to_string(),
        };
        let bytes = sealed
            .strip_prefix(SEALED_PREFIX)
            .and_then(|encoded| BASE64.decode(encoded).ok())
            .filter(|bytes| bytes.len() > NONCE_BYTES)
            .ok_or_else(failed)?;
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let plaintext = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| failed())?;
        String::from_utf8(plaintext).map_err(|_| failed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    #[test]
    fn a_sealed_value_opens_only_in_its_place_and_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        let secret_box = SecretBox::create(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let sealed = secret_box.seal("prod/db/password", "s3cr3t");
        assert!(!sealed.contains("s3cr3t"));
        assert_ne!(sealed, secret_box.seal("prod/db/password", "s3cr3t"));
        assert_eq!(
            secret_box.open("prod/db/password", &sealed).unwrap(),
            "s3cr3t"
        );
        assert!(secret_box.open("prod/db/user", &sealed).is_err());
        let again = SecretBox::load(&path).unwrap();
        assert_eq!(again.open("prod/db/password", &sealed).unwrap(), "s3cr3t");
        let other = SecretBox::from_key(&[7; KEY_BYTES]);
        assert!(other.open("prod/db/password", &sealed).is_err());
        let mut altered = sealed.clone();
        altered.pop();
        altered.push('A');
        assert!(secret_box.open("prod/db/password", &altered).is_err());
        assert!(format!("{secret_box:?}").contains("********"));
    }

    #[test]
    fn a_missing_or_short_key_file_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        let error = SecretBox::load(&path).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!(
                "the cluster key {} is missing: only `weft master init` makes one; put back",
                path.display()
            )),
            "{error}"
        );
        assert!(!path.exists(), "load made a key");
        std::fs::write(&path, [1; 16]).unwrap();
        let error = SecretBox::load(&path).unwrap_err().to_string();
        assert!(
            error.contains("it holds 16 bytes, a cluster key is 32"),
            "{error}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), [1; 16]);
    }

    #[tokio::test]
    async fn the_store_remembers_its_key_and_refuses_another() {
        let store = SqliteStore::open_in_memory().unwrap();
        let path = Path::new("/data/cluster.key");
        let key = SecretBox::from_key(&[1; KEY_BYTES]);
        assert_eq!(store.get(CLUSTER_KEY_CHECK_KEY).await.unwrap(), None);
        key.check_against(&store, path).await.unwrap();
        let check_value = store.get(CLUSTER_KEY_CHECK_KEY).await.unwrap().unwrap();
        assert!(!String::from_utf8_lossy(&check_value.value).contains(CLUSTER_KEY_CHECK_TEXT));
        // The same key, as another master of the cluster has it: the value is kept.
        SecretBox::from_key(&[1; KEY_BYTES])
            .check_against(&store, path)
            .await
            .unwrap();
        assert_eq!(
            store.get(CLUSTER_KEY_CHECK_KEY).await.unwrap().unwrap(),
            check_value
        );

        let other = SecretBox::from_key(&[2; KEY_BYTES]);
        let error = other.check_against(&store, path).await.unwrap_err();
        assert!(
            error.to_string().starts_with(
                "the cluster key /data/cluster.key does not open the check value in this \
                 master's store: the key belongs to another cluster"
            ),
            "{error}"
        );
        assert_eq!(
            store.get(CLUSTER_KEY_CHECK_KEY).await.unwrap().unwrap(),
            check_value,
            "a wrong key changes nothing"
        );

        // A value sealed elsewhere and copied here does not pass either.
        let elsewhere = SqliteStore::open_in_memory().unwrap();
        let moved = key.seal("prod/db/password", CLUSTER_KEY_CHECK_TEXT);
        elsewhere
            .put(
                CLUSTER_KEY_CHECK_KEY,
                moved.into_bytes(),
                Precondition::None,
            )
            .await
            .unwrap();
        assert!(key.check_against(&elsewhere, path).await.is_err());
    }
}
