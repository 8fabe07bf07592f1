//! What a client needs to reach the master: where it is, the cluster CA to trust, and
//! its own certificate and key. The admin's file (`admin.yaml`) and a node's identity
//! both hold one.
//!
//! Certificates renew themselves: [`ClientCredentials::renewal_due`] says when (two
//! thirds into the certificate's life), [`RenewalKey`] is the new key and the request
//! the master signs, and [`ClientCredentials::renewed`] the credentials to write back.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCredentials {
    /// `host:port`, tried in order.
    pub master_endpoints: Vec<String>,
    pub ca_cert_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Never prints the key.
impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("master_endpoints", &self.master_endpoints)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("the credentials' certificate is unreadable ({0}); get new credentials")]
    Certificate(String),
    #[error("could not make a new key or certificate request: {0}")]
    Key(String),
}

impl ClientCredentials {
    /// When the certificate should be renewed: two thirds into its life, so a third of
    /// it is left for the renewal to succeed.
    pub fn renewal_due(&self) -> Result<SystemTime, CredentialsError> {
        cert_renewal_due(&self.cert_pem)
    }

    /// These credentials with the certificate signed for `key`, trusting the CA
    /// certificates the renewal handed out (they change in a CA rotation); an empty
    /// `ca_cert_pem` keeps the current ones.
    pub fn renewed(
        &self,
        key: RenewalKey,
        cert_pem: String,
        ca_cert_pem: String,
    ) -> ClientCredentials {
        let ca_cert_pem = match ca_cert_pem.is_empty() {
            true => self.ca_cert_pem.clone(),
            false => ca_cert_pem,
        };
        ClientCredentials {
            master_endpoints: self.master_endpoints.clone(),
            ca_cert_pem,
            cert_pem,
            key_pem: key.key_pem,
        }
    }
}

/// When the first certificate of `cert_pem` (the leaf of a chain) is two thirds into its
/// life, the time to renew it.
pub fn cert_renewal_due(cert_pem: &str) -> Result<SystemTime, CredentialsError> {
    let (start, end) = cert_validity(cert_pem)?;
    let life = end.duration_since(start).unwrap_or_default();
    Ok(start + life * 2 / 3)
}

/// From when until when the first certificate of `cert_pem` is good.
pub fn cert_validity(cert_pem: &str) -> Result<(SystemTime, SystemTime), CredentialsError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| CredentialsError::Certificate(e.to_string()))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| CredentialsError::Certificate(e.to_string()))?;
    let validity = cert.validity();
    let at = |timestamp: i64| {
        UNIX_EPOCH + Duration::from_secs(u64::try_from(timestamp).unwrap_or_default())
    };
    Ok((
        at(validity.not_before.timestamp()),
        at(validity.not_after.timestamp()),
    ))
}

/// A fresh key for a renewed certificate and the request the master signs; the key
/// never leaves this host.
pub struct RenewalKey {
    key_pem: String,
    pub csr_der: Vec<u8>,
}

impl RenewalKey {
    pub fn generate() -> Result<RenewalKey, CredentialsError> {
        let key = rcgen::KeyPair::generate().map_err(|e| CredentialsError::Key(e.to_string()))?;
        // The master takes only the key from the request: identity and terms are its own.
        let csr = rcgen::CertificateParams::new(Vec::<String>::new())
            .and_then(|params| params.serialize_request(&key))
            .map_err(|e| CredentialsError::Key(e.to_string()))?;
        Ok(RenewalKey {
            key_pem: key.serialize_pem(),
            csr_der: csr.der().to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_between(not_before: u64, not_after: u64) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["node".to_string()]).unwrap();
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        params.not_before = epoch + Duration::from_secs(not_before);
        params.not_after = epoch + Duration::from_secs(not_after);
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn renewal_is_due_two_thirds_into_the_life() {
        let cert_pem = cert_between(1_700_000_000, 1_700_000_300);
        let at = |seconds: u64| UNIX_EPOCH + Duration::from_secs(seconds);
        assert_eq!(
            cert_validity(&cert_pem).unwrap(),
            (at(1_700_000_000), at(1_700_000_300))
        );
        assert_eq!(cert_renewal_due(&cert_pem).unwrap(), at(1_700_000_200));
        assert!(matches!(
            cert_renewal_due("not a certificate"),
            Err(CredentialsError::Certificate(_))
        ));
    }

    #[test]
    fn a_renewal_key_is_new_each_time_and_renewed_credentials_keep_the_rest() {
        let (first, second) = (
            RenewalKey::generate().unwrap(),
            RenewalKey::generate().unwrap(),
        );
        assert_ne!(first.key_pem, second.key_pem);
        let credentials = ClientCredentials {
            master_endpoints: vec!["192.0.2.1:7443".into()],
            ca_cert_pem: "ca".into(),
            cert_pem: "old".into(),
            key_pem: "old key".into(),
        };
        let key_pem = first.key_pem.clone();
        let renewed = credentials.renewed(first, "new".into(), String::new());
        assert_eq!(renewed.master_endpoints, credentials.master_endpoints);
        assert_eq!(renewed.ca_cert_pem, "ca");
        assert_eq!(renewed.cert_pem, "new");
        assert_eq!(renewed.key_pem, key_pem);
        let rotated = renewed.renewed(second, "newer".into(), "ca bundle".into());
        assert_eq!(rotated.ca_cert_pem, "ca bundle");
    }
}
