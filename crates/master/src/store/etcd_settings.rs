//! How a master reaches etcd: the cluster's client URLs and the files of TLS with a client
//! certificate, named as etcdctl names them (`--cacert`, `--cert`, `--key`).
//!
//! Whoever can write to etcd writes the TaskBooks every node runs as root, so plain http
//! is refused unless the operator says `--etcd-insecure`, and a master on it warns at
//! every start. The files are read at every connect, so renewed certificates take effect
//! at the master's next start; `weft master init` reads them once to refuse wrong ones.

use std::path::{Path, PathBuf};

use etcd_client::{Certificate, Identity, TlsOptions};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use weft_proto::bootstrap_token::is_endpoint;

/// Most bytes one of the PEM files may have: a chain of a few certificates fits many
/// times over, and a wrong path (a log, a disk image) is refused before it is read whole.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// Said at `weft master init` and at every start of a master on plain http, so that the
/// choice is not forgotten in the logs of the day it was made.
pub const PLAIN_HTTP_WARNING: &str = "etcd is reached over plain http (--etcd-insecure): \
     anyone who reaches etcd can write what every node runs as root; set up TLS with client \
     certificates (README, \"Several masters on etcd\")";

/// How to set up what [`EtcdSettings::tls_options`] refuses, for its error messages.
const TLS_HOWTO: &str = "run etcd with --client-cert-auth --trusted-ca-file CA --cert-file \
     SERVER_CERT --key-file SERVER_KEY, and give weft https:// endpoints with --etcd-cacert \
     (the CA of etcd's server certificate), --etcd-cert and --etcd-key (a client certificate \
     signed by etcd's --trusted-ca-file)";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdSettings {
    /// The cluster's client URLs, `https://HOST:PORT` (`http://` with `etcd_insecure`).
    pub etcd_endpoints: Vec<String>,
    /// TLS with a client certificate; `None` only with `etcd_insecure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_tls: Option<EtcdTlsFiles>,
    /// Plain http, chosen with `--etcd-insecure`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub etcd_insecure: bool,
}

/// Paths as the operator gave them, made absolute so a master started from another
/// directory finds them; etcdctl keeps paths too, so a renewed file replaces the old one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdTlsFiles {
    /// The CA that signed etcd's server certificates (`--etcd-cacert`).
    pub cacert: PathBuf,
    /// The master's client certificate, or its chain (`--etcd-cert`).
    pub cert: PathBuf,
    /// The client certificate's private key (`--etcd-key`).
    pub key: PathBuf,
}

impl EtcdSettings {
    /// Checks the endpoints against the choice of TLS or plain http and reads the TLS
    /// files; `None` is plain http, which the operator asked for.
    pub fn tls_options(&self) -> Result<Option<TlsOptions>, String> {
        if self.etcd_endpoints.is_empty() {
            return Err("no etcd endpoints given: name the cluster's client URLs, \
                        comma-separated, e.g. https://10.0.0.5:2379,https://10.0.0.6:2379"
                .to_owned());
        }
        let scheme = if self.etcd_insecure { "http" } else { "https" };
        for url in &self.etcd_endpoints {
            let address = match url.split_once("://") {
                Some((given, address)) if given == scheme => address,
                Some(("http", _)) => {
                    return Err(format!(
                        "etcd endpoint `{url}` is plain http, where anyone who reaches etcd \
                         can write what every node runs as root: {TLS_HOWTO}; or, on a \
                         network only the masters and etcd reach, accept plain http with \
                         --etcd-insecure (etcd_insecure: true in master.yaml)"
                    ))
                }
                Some(("https", _)) => {
                    return Err(format!(
                        "etcd endpoint `{url}` is https, and --etcd-insecure is for http:// \
                         endpoints: drop --etcd-insecure and give --etcd-cacert, --etcd-cert \
                         and --etcd-key"
                    ))
                }
                _ => url,
            };
            if !is_endpoint(address) || address.contains('/') {
                return Err(format!(
                    "invalid etcd endpoint `{url}`: expected {scheme}://HOST:PORT, \
                     e.g. {scheme}://10.0.0.5:2379"
                ));
            }
        }
        match (&self.etcd_tls, self.etcd_insecure) {
            (None, true) => Ok(None),
            (Some(_), true) => Err("--etcd-insecure turns TLS off and --etcd-cacert, \
                 --etcd-cert and --etcd-key turn it on: give one or the other"
                .to_owned()),
            (None, false) => Err(format!(
                "etcd over https needs a client certificate: {TLS_HOWTO}"
            )),
            (Some(files), false) => files.load().map(Some),
        }
    }
}

impl EtcdTlsFiles {
    /// Reads and checks the three files, each error naming its file.
    fn load(&self) -> Result<TlsOptions, String> {
        let cacert = read_pem(&self.cacert, "--etcd-cacert")?;
        certificates(&cacert, &self.cacert, "--etcd-cacert")?;
        let cert = read_pem(&self.cert, "--etcd-cert")?;
        let chain = certificates(&cert, &self.cert, "--etcd-cert")?;
        let key = read_pem(&self.key, "--etcd-key")?;
        let private_key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|error| {
            format!(
                "--etcd-key {}: expected a PEM private key: {error}",
                self.key.display()
            )
        })?;
        let provider = rustls::crypto::ring::default_provider();
        CertifiedKey::from_der(chain, private_key, &provider).map_err(|error| {
            format!(
                "--etcd-key {} does not fit the certificate in --etcd-cert {}: {error}",
                self.key.display(),
                self.cert.display()
            )
        })?;
        Ok(TlsOptions::new()
            .ca_certificate(Certificate::from_pem(cacert))
            .identity(Identity::from_pem(cert, key)))
    }
}

fn read_pem(path: &Path, flag: &str) -> Result<String, String> {
    let refuse = |reason: String| format!("{flag} {}: {reason}", path.display());
    let size = std::fs::metadata(path)
        .map_err(|error| refuse(error.to_string()))?
        .len();
    if size > MAX_PEM_BYTES {
        return Err(refuse(format!(
            "{size} bytes, more than the {MAX_PEM_BYTES} a PEM file may have"
        )));
    }
    std::fs::read_to_string(path).map_err(|error| refuse(error.to_string()))
}

/// Every certificate in `pem`, refusing a file with none or with one that does not parse.
fn certificates(
    pem: &str,
    path: &Path,
    flag: &str,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let refuse = |reason: String| format!("{flag} {}: {reason}", path.display());
    let ders = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| refuse(error.to_string()))?;
    if ders.is_empty() {
        return Err(refuse("expected PEM CERTIFICATE blocks, found none".into()));
    }
    for der in &ders {
        x509_parser::parse_x509_certificate(der)
            .map_err(|error| refuse(format!("a certificate does not parse: {error}")))?;
    }
    Ok(ders)
}
