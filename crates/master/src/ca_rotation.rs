//! `weft master rotate-ca`: replacing the cluster CA with an overlap, from files in
//! the master's data directory (the master reads them when it starts).
//!
//! `rotate_ca` keeps the CA as `ca-previous.pem`/`ca-previous.key` and writes a new
//! `ca.pem`/`ca.key`. Restarted on these, a master trusts both CAs, issues node and
//! admin certificates (new ones and renewals) under the new CA and hands out both CA
//! certificates as the trust anchor, while its own certificate stays under the previous
//! CA, which clients that have not renewed yet still hold. `finish_ca_rotation` drops
//! the previous CA: restarted, the master issues itself a certificate under the new CA
//! and refuses every certificate of the old one.

use std::fs;
use std::path::Path;
use std::time::SystemTime;

use weft_taskbook::state_file;

use crate::core::pki::{ClusterCa, PkiError};
use crate::init::{read_settings, CA_CERT_FILE, CA_KEY_FILE};

pub const CA_PREVIOUS_CERT_FILE: &str = "ca-previous.pem";
pub const CA_PREVIOUS_KEY_FILE: &str = "ca-previous.key";

#[derive(Debug, thiserror::Error)]
pub enum CaRotationError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(
        "a CA rotation is already under way in {0}: restart the masters, let nodes and \
         admins renew, then end it with `weft master rotate-ca --finish`"
    )]
    AlreadyRotating(String),
    #[error("no CA rotation is under way in {0}: start one with `weft master rotate-ca`")]
    NotRotating(String),
}

fn read_text(dir: &Path, file: &str) -> Result<String, CaRotationError> {
    let path = dir.join(file);
    fs::read_to_string(&path).map_err(|error| CaRotationError::File {
        path: path.display().to_string(),
        reason: error.to_string(),
    })
}

/// The cluster CA of a master's data directory, with the previous one while a rotation
/// overlaps.
pub fn load_cluster_ca(dir: &Path) -> Result<ClusterCa, CaRotationError> {
    let ca = ClusterCa::from_pem(
        &read_text(dir, CA_CERT_FILE)?,
        &read_text(dir, CA_KEY_FILE)?,
    )?;
    if !dir.join(CA_PREVIOUS_CERT_FILE).exists() {
        return Ok(ca);
    }
    let previous = ClusterCa::from_pem(
        &read_text(dir, CA_PREVIOUS_CERT_FILE)?,
        &read_text(dir, CA_PREVIOUS_KEY_FILE)?,
    )?;
    Ok(ca.rotating_from(previous))
}

/// Starts a rotation: the current CA becomes the previous one and a new CA is made.
pub fn rotate_ca(dir: &Path, now: SystemTime) -> Result<(), CaRotationError> {
    if dir.join(CA_PREVIOUS_CERT_FILE).exists() {
        return Err(CaRotationError::AlreadyRotating(dir.display().to_string()));
    }
    let settings = read_settings(dir).map_err(|error| CaRotationError::File {
        path: dir.display().to_string(),
        reason: error.to_string(),
    })?;
    let current = load_cluster_ca(dir)?;
    let next = ClusterCa::generate(&settings.cluster_name, now)?;
    // The previous pair first: a rotation cut short leaves the old CA in both places,
    // which loads as a rotation to itself and can be finished.
    write(dir, CA_PREVIOUS_KEY_FILE, &current.key_pem())?;
    write(dir, CA_PREVIOUS_CERT_FILE, current.cert_pem())?;
    write(dir, CA_KEY_FILE, &next.key_pem())?;
    write(dir, CA_CERT_FILE, next.cert_pem())?;
    Ok(())
}

/// Ends a rotation: the previous CA is forgotten.
pub fn finish_ca_rotation(dir: &Path) -> Result<(), CaRotationError> {
    if !dir.join(CA_PREVIOUS_CERT_FILE).exists() {
        return Err(CaRotationError::NotRotating(dir.display().to_string()));
    }
    for file in [CA_PREVIOUS_CERT_FILE, CA_PREVIOUS_KEY_FILE] {
        let path = dir.join(file);
        fs::remove_file(&path).map_err(|error| CaRotationError::File {
            path: path.display().to_string(),
            reason: error.to_string(),
        })?;
    }
    Ok(())
}

fn write(dir: &Path, file: &str, text: &str) -> Result<(), CaRotationError> {
    state_file::write_private_bytes(&dir.join(file), text.as_bytes()).map_err(|error| {
        CaRotationError::File {
            path: dir.join(file).display().to_string(),
            reason: error.to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::{write_master_cert, MasterSettings, SETTINGS_FILE};
    use crate::store::StoreSettings;

    fn master_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let settings = MasterSettings {
            cluster_name: "prod".into(),
            master_name: "m1".into(),
            master_public_endpoint: "127.0.0.1:7443".into(),
            vpn_cidr: "10.77.0.0/16".into(),
            store: StoreSettings::Sqlite,
        };
        state_file::write_private(&dir.path().join(SETTINGS_FILE), &settings).unwrap();
        let ca = ClusterCa::generate("prod", SystemTime::now()).unwrap();
        write(dir.path(), CA_KEY_FILE, &ca.key_pem()).unwrap();
        write(dir.path(), CA_CERT_FILE, ca.cert_pem()).unwrap();
        dir
    }

    #[test]
    fn a_rotation_keeps_the_previous_ca_until_it_is_finished() {
        let dir = master_dir();
        let first = load_cluster_ca(dir.path()).unwrap();
        assert!(matches!(
            finish_ca_rotation(dir.path()),
            Err(CaRotationError::NotRotating(_))
        ));
        rotate_ca(dir.path(), SystemTime::now()).unwrap();
        assert!(matches!(
            rotate_ca(dir.path(), SystemTime::now()),
            Err(CaRotationError::AlreadyRotating(_))
        ));
        let rotating = load_cluster_ca(dir.path()).unwrap();
        assert_ne!(rotating.cert_der(), first.cert_der());
        assert_eq!(rotating.master_issuer().cert_der(), first.cert_der());
        assert_eq!(rotating.master_issuer().key_pem(), first.key_pem());
        let written = write_master_cert(
            dir.path(),
            &rotating,
            "m1",
            "127.0.0.1:7443",
            SystemTime::now(),
        )
        .unwrap();
        assert!(written.chain_pem.ends_with(first.cert_pem()));

        finish_ca_rotation(dir.path()).unwrap();
        let finished = load_cluster_ca(dir.path()).unwrap();
        assert_eq!(finished.cert_der(), rotating.cert_der());
        assert_eq!(finished.master_issuer().cert_der(), rotating.cert_der());
        assert_eq!(finished.trust_bundle_pem(), finished.cert_pem());
    }
}
