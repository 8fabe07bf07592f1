//! A node's (or the master's) WireGuard key pair: made on first start, kept in a file
//! only root can read, and reused ever after, so the node's identity in the mesh
//! survives restarts.

use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use wireguard_control::Key;

#[derive(Clone)]
pub struct VpnKeyPair {
    pub private_key_base64: String,
    pub public_key_base64: String,
}

// The private key never reaches a log.
impl std::fmt::Debug for VpnKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VpnKeyPair")
            .field("public_key_base64", &self.public_key_base64)
            .finish_non_exhaustive()
    }
}

/// Whether `text` is a WireGuard public key (32 bytes in base64).
pub fn is_public_key(text: &str) -> bool {
    Key::from_base64(text).is_ok()
}

#[derive(Debug, thiserror::Error)]
pub enum VpnKeyError {
    #[error("cannot read the WireGuard key {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("cannot write the WireGuard key {path}: {source}")]
    Write { path: String, source: io::Error },
    #[error(
        "{path} does not hold a WireGuard private key (one line of base64); move it away \
         and a new key is made at the next start"
    )]
    Invalid { path: String },
    #[error("{path} is readable by others (mode {mode:o}); run `chmod 600 {path}`")]
    TooOpen { path: String, mode: u32 },
}

impl VpnKeyPair {
    pub fn generate() -> VpnKeyPair {
        VpnKeyPair::from_private(Key::generate_private())
    }

    fn from_private(private: Key) -> VpnKeyPair {
        VpnKeyPair {
            public_key_base64: private.get_public().to_base64(),
            private_key_base64: private.to_base64(),
        }
    }

    /// The key in `path`, or a new one written there (mode 0600) when there is none.
    pub fn load_or_create(path: &Path) -> Result<VpnKeyPair, VpnKeyError> {
        let shown = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let mode = std::fs::metadata(path)
                    .map_err(|source| VpnKeyError::Read {
                        path: shown.clone(),
                        source,
                    })?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(VpnKeyError::TooOpen {
                        path: shown,
                        mode: mode & 0o777,
                    });
                }
                let key = Key::from_base64(text.trim())
                    .map_err(|_| VpnKeyError::Invalid { path: shown })?;
                Ok(VpnKeyPair::from_private(key))
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                let pair = VpnKeyPair::generate();
                let write = || -> io::Result<()> {
                    let mut file = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(path)?;
                    writeln!(file, "{}", pair.private_key_base64)?;
                    file.sync_all()
                };
                write().map_err(|source| VpnKeyError::Write {
                    path: shown,
                    source,
                })?;
                Ok(pair)
            }
            Err(source) => Err(VpnKeyError::Read {
                path: shown,
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vpn.key");
        let first = VpnKeyPair::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = VpnKeyPair::load_or_create(&path).unwrap();
        assert_eq!(first.public_key_base64, again.public_key_base64);
        assert!(!format!("{first:?}").contains(&first.private_key_base64));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            VpnKeyPair::load_or_create(&path),
            Err(VpnKeyError::TooOpen { .. })
        ));
        std::fs::write(&path, "not a key\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            VpnKeyPair::load_or_create(&path),
            Err(VpnKeyError::Invalid { .. })
        ));
    }
}
