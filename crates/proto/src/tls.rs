//! TLS on the wire, in one place. The master serves every API on one listener with its
//! certificate chain (leaf, then the cluster CA) and asks for, but does not require,
//! client certificates: Join comes without one, and the vpnapi and adminapi handlers
//! check the peer certificate themselves. Clients verify the master against the
//! cluster CA and the name [`MASTER_SERVER_NAME`]; a joining node, which knows only the
//! CA's hash from its token, pins that hash ([`connect_pinned`]).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig,
};
use tonic::Request;

/// Every master certificate carries this DNS name; clients verify it instead of the
/// dialled host, so one certificate serves the public endpoint, VPN IPs and every master.
pub const MASTER_SERVER_NAME: &str = "master.weft";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("invalid master endpoint `{endpoint}`: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("cannot set up TLS: {0}")]
    Config(String),
    #[error(
        "the master at {endpoint} is not the one the token names: its CA certificate's SHA-256 \
         is {presented}, the token expects {expected}; check the token came from this cluster \
         and that nothing intercepts the connection"
    )]
    CaMismatch {
        endpoint: String,
        expected: String,
        presented: String,
    },
    #[error("cannot connect to the master at {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn server_tls_config(
    cert_chain_pem: &str,
    key_pem: &str,
    client_ca_pem: &str,
) -> ServerTlsConfig {
    ServerTlsConfig::new()
        .identity(Identity::from_pem(cert_chain_pem, key_pem))
        .client_ca_root(Certificate::from_pem(client_ca_pem))
        .client_auth_optional(true)
}

/// The leaf certificate the request's client presented, if any.
pub fn peer_cert_der<T>(request: &Request<T>) -> Option<Vec<u8>> {
    request
        .peer_certs()
        .and_then(|certs| certs.first().map(|cert| cert.to_vec()))
}

fn endpoint_for(endpoint: &str, scheme: &str) -> Result<Endpoint, TlsError> {
    Endpoint::from_shared(format!("{scheme}://{endpoint}"))
        .map(|e| {
            e.connect_timeout(CONNECT_TIMEOUT)
                .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                .keep_alive_while_idle(true)
                .tcp_nodelay(true)
        })
        .map_err(|e| TlsError::Endpoint {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        })
}

/// A node's or the admin's connection: trusts only the cluster CA, shows its own
/// certificate. Not connected yet: `connect()` it, or hand it to a reconnecting client.
pub fn mtls_endpoint(
    endpoint: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Endpoint, TlsError> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(Identity::from_pem(cert_pem, key_pem))
        .domain_name(MASTER_SERVER_NAME);
    endpoint_for(endpoint, "https")?
        .tls_config(tls)
        .map_err(|e| TlsError::Config(e.to_string()))
}

pub async fn connect_mtls(
    endpoint: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Channel, TlsError> {
    mtls_endpoint(endpoint, ca_pem, cert_pem, key_pem)?
        .connect()
        .await
        .map_err(|e| TlsError::Connect {
            endpoint: endpoint.to_string(),
            reason: error_chain(&e),
        })
}

/// Join: trusts the master only if its chain holds a CA certificate with this SHA-256
/// and the master's certificate verifies against that CA alone. Returns the CA as PEM.
pub async fn connect_pinned(
    endpoint: &str,
    ca_cert_sha256: [u8; 32],
) -> Result<(Channel, String), TlsError> {
    let verifier = Arc::new(PinnedCaVerifier {
        ca_cert_sha256,
        provider: provider(),
        seen: Mutex::new(Seen::default()),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let address = endpoint.to_string();
    let connect = tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let (connector, address) = (connector.clone(), address.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(&address).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(MASTER_SERVER_NAME).expect("a valid DNS name");
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    let connected = endpoint_for(endpoint, "http")?
        .connect_with_connector(connect)
        .await;
    let seen = std::mem::take(&mut *verifier.seen.lock().unwrap_or_else(PoisonError::into_inner));
    match (connected, seen.ca_pem) {
        (Ok(channel), Some(ca_pem)) => Ok((channel, ca_pem)),
        (_, None) if !seen.presented.is_empty() => Err(TlsError::CaMismatch {
            endpoint: endpoint.to_string(),
            expected: hex(&ca_cert_sha256),
            presented: seen.presented.join(" or "),
        }),
        (Ok(_), None) => Err(TlsError::Config(
            "the handshake did not show the master's CA".into(),
        )),
        (Err(error), _) => Err(TlsError::Connect {
            endpoint: endpoint.to_string(),
            reason: error_chain(&error),
        }),
    }
}

/// tonic's transport errors say "transport error"; the cause is further down.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Default)]
struct Seen {
    /// The pinned CA, once found and the master verified against it.
    ca_pem: Option<String>,
    /// Hashes of the chain's other certificates, for the error when none matched.
    presented: Vec<String>,
}

#[derive(Debug)]
struct PinnedCaVerifier {
    ca_cert_sha256: [u8; 32],
    provider: Arc<CryptoProvider>,
    seen: Mutex<Seen>,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seen")
            .field("presented", &self.presented)
            .finish_non_exhaustive()
    }
}

impl PinnedCaVerifier {
    fn webpki(&self, ca: &CertificateDer<'_>) -> Result<Arc<WebPkiServerVerifier>, rustls::Error> {
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let pinned = intermediates.iter().find(|cert| {
            let digest: [u8; 32] = Sha256::digest(cert.as_ref()).into();
            seen.presented.push(hex(&digest));
            digest == self.ca_cert_sha256
        });
        let Some(ca) = pinned else {
            return Err(rustls::Error::General(
                "the master's CA is not the one the token names".into(),
            ));
        };
        // The CA is the only root: the master's certificate must chain to it alone.
        let verified = self.webpki(ca)?.verify_server_cert(
            end_entity,
            &[],
            server_name,
            ocsp_response,
            now,
        )?;
        seen.ca_pem = Some(pem_certificate(ca.as_ref()));
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn pem_certificate(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der))
}
