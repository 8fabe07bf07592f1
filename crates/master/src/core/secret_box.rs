//! Secret values at rest: sealed with the cluster key (ChaCha20-Poly1305), each bound to
//! where it belongs (`namespace/name/key`) so a sealed value copied into another Secret
//! or key does not open. The key lives in the master's data directory, never in the
//! store, so a copy of the store (an sqlite file, an etcd backup) holds no plaintext.

use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;

/// The prefix of a sealed value, with the format's version.
const SEALED_PREFIX: &str = "sealed:v1:";
const NONCE_BYTES: usize = 12;
const KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SecretBoxError {
    #[error("the cluster key {path} is unreadable: {reason}")]
    KeyFile { path: String, reason: String },
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

    /// Reads the key file, creating it (mode 0600) with a fresh random key when absent,
    /// so clusters made before secrets existed get one at their next start.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretBoxError> {
        let key_error = |reason: String| SecretBoxError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                let key: [u8; KEY_BYTES] = bytes.as_slice().try_into().map_err(|_| {
                    key_error(format!(
                        "it holds {} bytes, a cluster key is {KEY_BYTES}",
                        bytes.len()
                    ))
                })?;
                Ok(Self::from_key(&key))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; KEY_BYTES];
                rand::rng().fill_bytes(&mut key);
                weft_modules::state_file::write_private_bytes(path, &key)
                    .map_err(|e| key_error(e.to_string()))?;
                Ok(Self::from_key(&key))
            }
            Err(error) => Err(key_error(error.to_string())),
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

    #[test]
    fn a_sealed_value_opens_only_in_its_place_and_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        let secret_box = SecretBox::load_or_create(&path).unwrap();
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
        let again = SecretBox::load_or_create(&path).unwrap();
        assert_eq!(again.open("prod/db/password", &sealed).unwrap(), "s3cr3t");
        let other = SecretBox::from_key(&[7; KEY_BYTES]);
        assert!(other.open("prod/db/password", &sealed).is_err());
        let mut altered = sealed.clone();
        altered.pop();
        altered.push('A');
        assert!(secret_box.open("prod/db/password", &altered).is_err());
        assert!(format!("{secret_box:?}").contains("********"));
    }
}
