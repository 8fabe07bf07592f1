//! The cluster CA and the certificates it issues, all ECDSA P-256.
//!
//! Identity: every leaf certificate carries exactly one URI SAN `weft://<role>/<name>`,
//! role `master`, `admin` or `node` ([`PeerIdentity`]'s `Display`), and [`peer_identity`]
//! reads it back, so the adminapi can refuse a node's certificate and the vpnapi an
//! admin's. A URI SAN rather than a subject field because it is typed, one per
//! certificate, and ignored by host name verification, so a role can never pass for a
//! host. The subject CN repeats the name for people reading certificates with openssl.
//!
//! Chain verification belongs to rustls, with the CA certificate as the only root of
//! every mTLS listener and client: [`peer_identity`] assumes a verified chain.
//! [`ClusterCa::has_issued`] checks one signature, for files read from disk and tests.
//!
//! Lifetimes: the CA lives ten years, leaves one year ([`leaf_validity`]); nodes, admins
//! and masters renew their leaves at two thirds of their life, so no leaf is ever near
//! its end while the cluster runs. The CA itself is replaced by `weft master rotate-ca`
//! (`crate::ca_rotation`), with an overlap in which [`ClusterCa::rotating_from`] trusts
//! both CAs.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::ExtendedKeyUsagePurpose::{self, ClientAuth, ServerAuth};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use sha2::{Digest, Sha256};
use weft_proto::bootstrap_token::is_dns_name;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// TEST ONLY: the lifetime of leaves the master issues, in seconds (`60` or `60s`), so
/// tests can watch certificates renew and expire. Never set it on a real cluster.
pub const TEST_CERT_LIFETIME_ENV: &str = "WEFT_TEST_CERT_LIFETIME";
/// The shortest test lifetime taken: shorter ones would expire before a renewal lands.
const MIN_TEST_LEAF_VALIDITY: Duration = Duration::from_secs(10);
/// Certificates start this far in the past, so that a peer whose clock is a little
/// behind the master's accepts a certificate issued a moment ago.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(5 * 60);
const IDENTITY_URI_SCHEME: &str = "weft://";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(
        "invalid {kind} name {name:?}: use 1-63 characters of a-z, 0-9, '-', '.' and '_', \
         starting with a letter or digit"
    )]
    InvalidName { kind: &'static str, name: String },
    #[error(
        "invalid master certificate host {0:?}: expected a DNS name or an IP address, \
         without port or brackets"
    )]
    InvalidHost(String),
    #[error("the master certificate needs at least one host: its public endpoint's host")]
    NoHosts,
    #[error("could not create a key or certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("could not read the {what}: {reason}")]
    Parse { what: &'static str, reason: String },
    #[error("the CA certificate is not a CA (no basicConstraints CA:true); is it the cluster's?")]
    NotACa,
    #[error(
        "the CA key does not belong to the CA certificate; restore both from the same \
         master data directory"
    )]
    KeyMismatch,
    #[error(
        "the certificate carries no weft identity (one `weft://<role>/<name>` URI); was it \
         issued by this cluster's CA?"
    )]
    NoIdentity,
}

/// Who a verified peer certificate belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerIdentity {
    Master { name: String },
    Admin { name: String },
    Node { name: String },
}

impl PeerIdentity {
    pub fn role(&self) -> &'static str {
        match self {
            Self::Master { .. } => "master",
            Self::Admin { .. } => "admin",
            Self::Node { .. } => "node",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Self::Master { name } | Self::Admin { name } | Self::Node { name } => name,
        }
    }
}

/// The identity URI the certificate carries.
impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{IDENTITY_URI_SCHEME}{}/{}", self.role(), self.name())
    }
}

/// A leaf certificate and its private key, for the caller to hand out or write down.
pub struct IssuedCert {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub key_pem: String,
    /// Lowercase hex, as the certificate carries it; the handle for revocation.
    pub serial: String,
    pub not_after_unix_ms: u64,
}

/// A certificate signed for a key the master never saw (from a certificate request).
#[derive(Debug, Clone)]
pub struct SignedCert {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    pub serial: String,
    pub not_after_unix_ms: u64,
}

impl SignedCert {
    pub fn terms(&self) -> CertTerms {
        CertTerms {
            serial: self.serial.clone(),
            not_after_unix_ms: self.not_after_unix_ms,
        }
    }
}

/// What the master records of a certificate it accepts: which one, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertTerms {
    /// Lowercase hex, as [`IssuedCert::serial`].
    pub serial: String,
    pub not_after_unix_ms: u64,
}

/// How long the leaves issued now live: a year, or the test-only
/// [`TEST_CERT_LIFETIME_ENV`] when it is set to a number of seconds.
pub fn leaf_validity() -> Duration {
    static VALIDITY: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *VALIDITY.get_or_init(|| {
        let Ok(text) = std::env::var(TEST_CERT_LIFETIME_ENV) else {
            return LEAF_VALIDITY;
        };
        match text.trim_end_matches('s').parse::<u64>() {
            Ok(seconds) => Duration::from_secs(seconds).clamp(MIN_TEST_LEAF_VALIDITY, LEAF_VALIDITY),
            Err(_) => {
                tracing::warn!(value = %text, "{TEST_CERT_LIFETIME_ENV} is not a number of seconds; leaves live a year");
                LEAF_VALIDITY
            }
        }
    })
}

/// The serial and end of a certificate.
pub fn cert_terms(cert_der: &[u8]) -> Result<CertTerms, PkiError> {
    let cert = parse_der(cert_der)?;
    Ok(CertTerms {
        serial: serial_hex(cert.raw_serial()),
        not_after_unix_ms: unix_ms(cert.validity().not_after.timestamp()),
    })
}

/// The first certificate of a PEM file (a leaf, before its chain).
pub fn leaf_der_from_pem(cert_pem: &str) -> Result<Vec<u8>, PkiError> {
    match x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()) {
        Ok((_, pem)) if pem.label == "CERTIFICATE" => Ok(pem.contents),
        Ok(_) => Err(PkiError::Parse {
            what: "certificate",
            reason: "expected a PEM CERTIFICATE block".into(),
        }),
        Err(error) => Err(PkiError::Parse {
            what: "certificate",
            reason: error.to_string(),
        }),
    }
}

fn unix_ms(timestamp_seconds: i64) -> u64 {
    u64::try_from(timestamp_seconds)
        .unwrap_or_default()
        .saturating_mul(1000)
}

fn serial_hex(serial: &[u8]) -> String {
    serial.iter().map(|byte| format!("{byte:02x}")).collect()
}

pub struct ClusterCa {
    cert_pem: String,
    cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
    /// During a CA rotation, the CA being replaced: still trusted, and still the issuer
    /// of the masters' own certificates, so that clients which have not renewed yet
    /// (and trust only it) keep reaching the masters.
    previous: Option<Box<ClusterCa>>,
}

impl ClusterCa {
    pub fn generate(cluster_name: &str, now: SystemTime) -> Result<Self, PkiError> {
        validate_name("cluster", cluster_name)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(&format!("weft CA {cluster_name}"));
        // Path length 0: the CA signs leaves only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        set_validity(&mut params, now, CA_VALIDITY);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
            previous: None,
        })
    }

    /// Loads what [`Self::cert_pem`] and [`Self::key_pem`] wrote, refusing a mixed-up pair.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let parse_error = |reason: String| PkiError::Parse {
            what: "CA certificate",
            reason,
        };
        let (rest, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
            .map_err(|error| parse_error(error.to_string()))?;
        if pem.label != "CERTIFICATE" || !rest.trim_ascii().is_empty() {
            return Err(parse_error("expected one PEM CERTIFICATE block".into()));
        }
        let key = KeyPair::from_pem(key_pem).map_err(|error| PkiError::Parse {
            what: "CA key",
            reason: error.to_string(),
        })?;
        let cert = parse_der(&pem.contents)?;
        if !cert.is_ca() {
            return Err(PkiError::NotACa);
        }
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(PkiError::KeyMismatch);
        }
        let issuer = Issuer::from_ca_cert_der(&pem.contents.as_slice().into(), key)?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            cert_der: pem.contents,
            issuer,
            previous: None,
        })
    }

    /// This CA in the overlap of a rotation away from `previous`: leaves for nodes and
    /// admins come from this one, masters' from `previous`, and both are trusted.
    pub fn rotating_from(self, previous: ClusterCa) -> Self {
        Self {
            previous: Some(Box::new(previous)),
            ..self
        }
    }

    /// The CA that issues the masters' certificates and whose hash bootstrap tokens pin:
    /// the one every client trusts, the previous one while a rotation overlaps.
    pub fn master_issuer(&self) -> &ClusterCa {
        self.previous.as_deref().unwrap_or(self)
    }

    /// What clients and masters trust: this CA, and the previous one during a rotation.
    pub fn trust_bundle_pem(&self) -> String {
        match &self.previous {
            Some(previous) => format!("{}{}", self.cert_pem, previous.cert_pem),
            None => self.cert_pem.clone(),
        }
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// What bootstrap tokens carry, so a joining node can recognise this CA.
    pub fn ca_cert_sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.cert_der).into()
    }

    /// `hosts` are the names and IPs nodes and admins dial: the public endpoint's host,
    /// the master's VPN IP. clientAuth too, for the connections the master opens.
    pub fn issue_master_cert(
        &self,
        master_name: &str,
        hosts: &[String],
        now: SystemTime,
    ) -> Result<IssuedCert, PkiError> {
        if hosts.is_empty() {
            return Err(PkiError::NoHosts);
        }
        let host_sans = hosts
            .iter()
            .map(|host| match host.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) if is_dns_name(host) => Ok(SanType::DnsName(host.as_str().try_into()?)),
                Err(_) => Err(PkiError::InvalidHost(host.clone())),
            })
            .collect::<Result<_, _>>()?;
        let identity = PeerIdentity::Master {
            name: master_name.to_owned(),
        };
        self.issue(identity, host_sans, vec![ServerAuth, ClientAuth], now)
    }

    pub fn issue_admin_cert(
        &self,
        admin_name: &str,
        now: SystemTime,
    ) -> Result<IssuedCert, PkiError> {
        let identity = PeerIdentity::Admin {
            name: admin_name.to_owned(),
        };
        self.issue(identity, Vec::new(), vec![ClientAuth], now)
    }

    pub fn issue_node_cert(
        &self,
        node_name: &str,
        now: SystemTime,
    ) -> Result<IssuedCert, PkiError> {
        let identity = PeerIdentity::Node {
            name: node_name.to_owned(),
        };
        self.issue(identity, Vec::new(), vec![ClientAuth], now)
    }

    /// A node's certificate for the key in its certificate request, so the node's private
    /// key never leaves the node (Join, and renewal). Only the public key is taken from
    /// the request, after its signature proves the node holds the key; the identity,
    /// usages and validity are the master's, whatever the request asked for.
    pub fn sign_node_csr(
        &self,
        node_name: &str,
        csr_der: &[u8],
        now: SystemTime,
    ) -> Result<SignedCert, PkiError> {
        let identity = PeerIdentity::Node {
            name: node_name.to_owned(),
        };
        self.sign_csr(identity, csr_der, now)
    }

    /// An admin's renewed certificate, on the terms of [`Self::sign_node_csr`].
    pub fn sign_admin_csr(
        &self,
        admin_name: &str,
        csr_der: &[u8],
        now: SystemTime,
    ) -> Result<SignedCert, PkiError> {
        let identity = PeerIdentity::Admin {
            name: admin_name.to_owned(),
        };
        self.sign_csr(identity, csr_der, now)
    }

    fn sign_csr(
        &self,
        identity: PeerIdentity,
        csr_der: &[u8],
        now: SystemTime,
    ) -> Result<SignedCert, PkiError> {
        let request =
            CertificateSigningRequestParams::from_der(&csr_der.to_vec().into()).map_err(|e| {
                PkiError::Parse {
                    what: "certificate request",
                    reason: e.to_string(),
                }
            })?;
        let (params, serial) = self.leaf_params(identity, Vec::new(), vec![ClientAuth], now)?;
        let not_after_unix_ms = unix_ms(params.not_after.unix_timestamp());
        let cert = params.signed_by(&request.public_key, &self.issuer)?;
        Ok(SignedCert {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            serial,
            not_after_unix_ms,
        })
    }

    /// Whether this CA signed `cert_der`. Expiry and usage are rustls' to check.
    pub fn has_issued(&self, cert_der: &[u8]) -> bool {
        let (Ok(ca), Ok(cert)) = (parse_der(&self.cert_der), parse_der(cert_der)) else {
            return false;
        };
        cert.issuer().as_raw() == ca.subject().as_raw()
            && cert.verify_signature(Some(ca.public_key())).is_ok()
    }

    fn issue(
        &self,
        identity: PeerIdentity,
        subject_alt_names: Vec<SanType>,
        extended_key_usages: Vec<ExtendedKeyUsagePurpose>,
        now: SystemTime,
    ) -> Result<IssuedCert, PkiError> {
        let (params, serial) =
            self.leaf_params(identity, subject_alt_names, extended_key_usages, now)?;
        let not_after_unix_ms = unix_ms(params.not_after.unix_timestamp());
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
            serial,
            not_after_unix_ms,
        })
    }

    /// Everything a leaf certificate says, and its serial as lowercase hex.
    fn leaf_params(
        &self,
        identity: PeerIdentity,
        mut subject_alt_names: Vec<SanType>,
        extended_key_usages: Vec<ExtendedKeyUsagePurpose>,
        now: SystemTime,
    ) -> Result<(CertificateParams, String), PkiError> {
        validate_name(identity.role(), identity.name())?;
        subject_alt_names.push(SanType::URI(identity.to_string().try_into()?));
        let serial = random_serial();
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(identity.name());
        params.subject_alt_names = subject_alt_names;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = extended_key_usages;
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        set_validity(&mut params, now, leaf_validity());
        Ok((params, serial_hex(&serial)))
    }
}

/// The role and name in a peer's certificate, whose chain the TLS layer has verified.
pub fn peer_identity(cert_der: &[u8]) -> Result<PeerIdentity, PkiError> {
    let cert = parse_der(cert_der)?;
    let subject_alt_name = cert
        .subject_alternative_name()
        .map_err(|error| PkiError::Parse {
            what: "certificate's subject alternative names",
            reason: error.to_string(),
        })?;
    let mut identity_uris = subject_alt_name
        .iter()
        .flat_map(|extension| &extension.value.general_names)
        .filter_map(|general_name| match general_name {
            GeneralName::URI(uri) => uri.strip_prefix(IDENTITY_URI_SCHEME),
            _ => None,
        });
    // Two identities in one certificate would leave the role to whoever looks first.
    let (Some(identity_uri), None) = (identity_uris.next(), identity_uris.next()) else {
        return Err(PkiError::NoIdentity);
    };
    let (role, name) = identity_uri.split_once('/').ok_or(PkiError::NoIdentity)?;
    let name = name.to_owned();
    let identity = match role {
        "master" => PeerIdentity::Master { name },
        "admin" => PeerIdentity::Admin { name },
        "node" => PeerIdentity::Node { name },
        _ => return Err(PkiError::NoIdentity),
    };
    validate_name(identity.role(), identity.name())?;
    Ok(identity)
}

/// A host name as X.509 dNSName and DNS allow it: dot-separated labels of 1-63
/// letters, digits and inner hyphens, 253 characters at most.
/// Names end up in URIs, file names and command lines, hence the tight alphabet and
/// the leading letter or digit (no `-flag`, no `..`).
fn validate_name(kind: &'static str, name: &str) -> Result<(), PkiError> {
    let valid = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(PkiError::InvalidName {
            kind,
            name: name.to_owned(),
        })
    }
}

fn common_name(name: &str) -> DistinguishedName {
    let mut distinguished_name = DistinguishedName::new();
    distinguished_name.push(DnType::CommonName, name);
    distinguished_name
}

/// 126 random bits, positive and with a non-zero first byte, so DER stores exactly these
/// 16 bytes and the hex we report is the serial `openssl x509 -serial` shows.
fn random_serial() -> [u8; 16] {
    let mut serial: [u8; 16] = rand::random();
    serial[0] = (serial[0] & 0x7f) | 0x40;
    serial
}

fn set_validity(params: &mut CertificateParams, now: SystemTime, validity: Duration) {
    // rcgen's time crate is built without `std`, so count from the epoch ourselves.
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    // A tenth at most, so that a (test) lifetime of seconds is not mostly in the past
    // and renewal, due at two thirds of the whole span, does not come at once.
    let skew_allowance = CLOCK_SKEW_ALLOWANCE.min(validity / 10);
    params.not_before = epoch + since_epoch.saturating_sub(skew_allowance);
    params.not_after = epoch + since_epoch + validity;
}

fn parse_der(cert_der: &[u8]) -> Result<X509Certificate<'_>, PkiError> {
    let parse_error = |reason: String| PkiError::Parse {
        what: "certificate",
        reason,
    };
    match x509_parser::parse_x509_certificate(cert_der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(parse_error(
            "trailing bytes after the DER certificate".into(),
        )),
        Err(error) => Err(parse_error(error.to_string())),
    }
}

#[cfg(test)]
mod tests;
