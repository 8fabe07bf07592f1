//! TLS on the wire, in one place. The master serves every API on one listener with its
//! certificate chain (leaf, then the cluster CA; replaced in place when it renews, see
//! [`ServerTls`]) and asks for, but does not require,
//! client certificates: Join comes without one, and the vpnapi and adminapi handlers
//! check the peer certificate themselves. Clients verify the master against the
//! cluster CA and the name [`MASTER_SERVER_NAME`]; a joining node, which knows only the
//! CA's hash from its token, pins that hash ([`connect_pinned`]).

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Request;

/// Every master certificate carries this DNS name; clients verify it instead of the
/// dialled host, so one certificate serves the public endpoint, VPN IPs and every master.
pub const MASTER_SERVER_NAME: &str = "master.weft";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections handshaken and not yet taken by the server.
const ACCEPTED_BACKLOG: usize = 64;

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

/// The master's side of TLS, whose certificate can be replaced while it serves: a
/// renewed certificate ([`ServerTls::replace_cert`]) is shown to every connection from
/// then on, and connections already open keep going. Client certificates are asked
/// for, not required, and verified against the cluster CA.
#[derive(Clone)]
pub struct ServerTls {
    current: Arc<CurrentCert>,
    config: Arc<rustls::ServerConfig>,
}

#[derive(Debug)]
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.0
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

impl ServerTls {
    /// `cert_chain_pem`: the master's certificate, then the CA's.
    pub fn new(cert_chain_pem: &str, key_pem: &str, client_ca_pem: &str) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        for ca in pem_certificates(client_ca_pem)? {
            roots
                .add(ca)
                .map_err(|e| TlsError::Config(format!("the CA certificate: {e}")))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let current = Arc::new(CurrentCert(RwLock::new(certified_key(
            cert_chain_pem,
            key_pem,
        )?)));
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(current.clone());
        // Webhook senders may speak HTTP/1.1 (the public listener accepts it).
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(ServerTls {
            current,
            config: Arc::new(config),
        })
    }

    pub fn replace_cert(&self, cert_chain_pem: &str, key_pem: &str) -> Result<(), TlsError> {
        let certified = certified_key(cert_chain_pem, key_pem)?;
        *self
            .current
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner) = certified;
        Ok(())
    }

    /// TLS over each accepted connection, handshakes side by side (one slow client
    /// holds up no other); a failed or timed-out handshake just closes its connection.
    pub fn accept<S, IO>(
        &self,
        incoming: S,
    ) -> impl Stream<Item = std::io::Result<tokio_rustls::server::TlsStream<IO>>> + Send + 'static
    where
        S: Stream<Item = std::io::Result<IO>> + Send + 'static,
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.clone());
        let (handshaken, receiver) = tokio::sync::mpsc::channel(ACCEPTED_BACKLOG);
        tokio::spawn(async move {
            tokio::pin!(incoming);
            while let Some(accepted) = incoming.next().await {
                let Ok(io) = accepted else { continue };
                let (acceptor, sender) = (acceptor.clone(), handshaken.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                        Ok(Ok(tls)) => {
                            let _ = sender.send(Ok(tls)).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
                if handshaken.is_closed() {
                    return;
                }
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(receiver)
    }
}

fn pem_certificates(pem_text: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let blocks = pem::parse_many(pem_text).map_err(|e| TlsError::Config(e.to_string()))?;
    let certs: Vec<_> = blocks
        .into_iter()
        .filter(|block| block.tag() == "CERTIFICATE")
        .map(|block| CertificateDer::from(block.into_contents()))
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Config("expected a PEM CERTIFICATE".into()));
    }
    Ok(certs)
}

/// Whether `bundle_pem` holds the certificate whose DER hashes to `cert_sha256` (the
/// CA a token pins, among the CAs a master hands out during a rotation).
pub fn pem_bundle_holds(bundle_pem: &str, cert_sha256: [u8; 32]) -> bool {
    pem_certificates(bundle_pem).is_ok_and(|certs| {
        certs
            .iter()
            .any(|cert| <[u8; 32]>::from(Sha256::digest(cert.as_ref())) == cert_sha256)
    })
}

fn certified_key(cert_chain_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = pem_certificates(cert_chain_pem)?;
    let key = pem::parse(key_pem).map_err(|e| TlsError::Config(format!("the key: {e}")))?;
    let key_der = match key.tag() {
        "PRIVATE KEY" => PrivateKeyDer::Pkcs8(key.into_contents().into()),
        "EC PRIVATE KEY" => PrivateKeyDer::Sec1(key.into_contents().into()),
        other => {
            return Err(TlsError::Config(format!(
                "expected a PEM PRIVATE KEY, found {other}"
            )))
        }
    };
    let signing_key = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| TlsError::Config(format!("the key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|e| {
        TlsError::Config(format!("the key does not belong to the certificate: {e}"))
    })?;
    Ok(Arc::new(certified))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed() -> rcgen::Certificate {
        let key = rcgen::KeyPair::generate().unwrap();
        rcgen::CertificateParams::new(vec!["ca.example".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
    }

    #[test]
    fn a_pem_bundle_holds_a_certificate_by_its_der_hash() {
        let (first, second, other) = (self_signed(), self_signed(), self_signed());
        let bundle = format!("{}{}", first.pem(), second.pem());
        let hash = |cert: &rcgen::Certificate| <[u8; 32]>::from(Sha256::digest(cert.der()));
        assert!(pem_bundle_holds(&bundle, hash(&first)));
        assert!(pem_bundle_holds(&bundle, hash(&second)));
        assert!(!pem_bundle_holds(&bundle, hash(&other)));
        assert!(!pem_bundle_holds("", hash(&first)));
        assert!(!pem_bundle_holds("not pem", hash(&first)));
    }
}
