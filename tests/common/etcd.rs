//! Real etcd clusters on loopback for tests: each member an `etcd` process with its own
//! ports and data directory, stopped and removed on drop. By default etcd serves its
//! clients and its peers over TLS and admits only certificates of a CA made here for the
//! test, as the README tells operators to run it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Elections on loopback need no slack; the defaults (100 ms, 1 s) only slow the start.
const HEARTBEAT_MS: &str = "50";
const ELECTION_MS: &str = "500";
/// How long a cluster may take to elect a leader before the test gives up.
const START_PATIENCE: Duration = Duration::from_secs(30);

/// Why the etcd tests cannot run here, if they cannot.
pub fn missing_etcd() -> Option<String> {
    match etcd_binary() {
        Some(_) => None,
        None => Some(
            "no `etcd` on PATH: install Debian's etcd-server (scripts/test installs it)".into(),
        ),
    }
}

fn etcd_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("etcd"))
        .find(|candidate| candidate.is_file())
}

/// How clients and members reach each other.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum EtcdSecurity {
    /// https for clients and peers, each admitted only with a certificate of the test CA.
    ClientCertificates,
    /// Plain http, for `--etcd-insecure`.
    PlainHttp,
}

/// A test CA and what it signed, as PEM files: etcd's server certificate (for 127.0.0.1
/// and localhost, which members also show each other as peers) and a client certificate
/// for the masters.
pub struct TestPki {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestPki {
    /// Generates the certificates into `dir`.
    pub fn generate(dir: &Path) -> TestPki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let named = |name: &str, sans: &[&str]| {
            let sans: Vec<String> = sans.iter().map(|san| san.to_string()).collect();
            let mut params = CertificateParams::new(sans).expect("valid names");
            params.distinguished_name.push(DnType::CommonName, name);
            params
        };
        let mut ca_params = named("weft test etcd CA", &[]);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().expect("a key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("the CA signs itself");
        let issuer = Issuer::new(ca_params, ca_key);
        let issue = |mut params: CertificateParams, usages: &[ExtendedKeyUsagePurpose]| {
            params.extended_key_usages = usages.to_vec();
            let key = KeyPair::generate().expect("a key");
            let cert = params.signed_by(&key, &issuer).expect("the CA signs");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = issue(
            named("etcd", &["127.0.0.1", "localhost"]),
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        let (client_cert, client_key) = issue(
            named("weft-master", &[]),
            &[ExtendedKeyUsagePurpose::ClientAuth],
        );
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("a PEM file");
            path
        };
        TestPki {
            ca_cert: write("ca.pem", &ca_cert.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
        }
    }
}

pub struct EtcdCluster {
    pub dir: tempfile::TempDir,
    /// `None` on plain http.
    pub pki: Option<TestPki>,
    members: Vec<Member>,
}

struct Member {
    client_url: String,
    /// Plain http, for the health check, whatever the clients speak.
    metrics_url: String,
    process: Child,
}

impl EtcdCluster {
    /// `size` members that have elected a leader, with the limits weft needs raised,
    /// serving clients over TLS with client certificates.
    pub fn start(size: usize) -> EtcdCluster {
        Self::start_with(size, EtcdSecurity::ClientCertificates)
    }

    /// The ports are free when chosen but released before etcd binds them, so another
    /// process's outgoing connection can take one in between: a start that lost a port
    /// is tried again on fresh ones.
    pub fn start_with(size: usize, security: EtcdSecurity) -> EtcdCluster {
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            let mut cluster = Self::launch(size, security);
            match cluster.wait_healthy() {
                Ok(()) => return cluster,
                Err(failure)
                    if attempt < ATTEMPTS && failure.contains("address already in use") =>
                {
                    eprintln!("etcd lost a port to another process; starting again on fresh ones")
                }
                Err(failure) => panic!("{failure}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn launch(size: usize, security: EtcdSecurity) -> EtcdCluster {
        static CLUSTERS: AtomicUsize = AtomicUsize::new(0);
        let binary = etcd_binary().expect("etcd is installed (check missing_etcd first)");
        let dir = tempfile::tempdir().expect("temp dir");
        let pki =
            (security == EtcdSecurity::ClientCertificates).then(|| TestPki::generate(dir.path()));
        let scheme = if pki.is_some() { "https" } else { "http" };
        // All ports are taken before any member starts, so that no member can grab
        // another's port while it is free.
        let listeners: Vec<_> = (0..3 * size)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
            .collect();
        let url = |scheme: &str, index: usize| {
            let port = listeners[index].local_addr().expect("bound").port();
            format!("{scheme}://127.0.0.1:{port}")
        };
        let client_urls: Vec<String> = (0..size).map(|member| url(scheme, 3 * member)).collect();
        let peer_urls: Vec<String> = (0..size)
            .map(|member| url(scheme, 3 * member + 1))
            .collect();
        let metrics_urls: Vec<String> = (0..size)
            .map(|member| url("http", 3 * member + 2))
            .collect();
        drop(listeners);
        let initial_cluster = peer_urls
            .iter()
            .enumerate()
            .map(|(member, peer_url)| format!("m{member}={peer_url}"))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!(
            "weft-test-{}-{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, Ordering::Relaxed)
        );
        let members = (0..size)
            .map(|member| {
                let name = format!("m{member}");
                let log = std::fs::File::create(dir.path().join(format!("{name}.log")))
                    .expect("log file");
                let mut command = Command::new(&binary);
                if let Some(pki) = &pki {
                    command
                        .arg("--client-cert-auth")
                        .arg("--trusted-ca-file")
                        .arg(&pki.ca_cert)
                        .arg("--cert-file")
                        .arg(&pki.server_cert)
                        .arg("--key-file")
                        .arg(&pki.server_key)
                        .arg("--peer-client-cert-auth")
                        .arg("--peer-trusted-ca-file")
                        .arg(&pki.ca_cert)
                        .arg("--peer-cert-file")
                        .arg(&pki.server_cert)
                        .arg("--peer-key-file")
                        .arg(&pki.server_key);
                }
                let process = command
                    .arg("--name")
                    .arg(&name)
                    .arg("--data-dir")
                    .arg(dir.path().join(&name))
                    .args(["--listen-client-urls", &client_urls[member]])
                    .args(["--advertise-client-urls", &client_urls[member]])
                    .args(["--listen-metrics-urls", &metrics_urls[member]])
                    .args(["--listen-peer-urls", &peer_urls[member]])
                    .args(["--initial-advertise-peer-urls", &peer_urls[member]])
                    .args(["--initial-cluster", &initial_cluster])
                    .args(["--initial-cluster-state", "new"])
                    .args(["--initial-cluster-token", &token])
                    .args(["--heartbeat-interval", HEARTBEAT_MS])
                    .args(["--election-timeout", ELECTION_MS])
                    // What weft_master::store::etcd::ETCD_FLAGS asks for.
                    .args(["--max-txn-ops", "1024", "--max-request-bytes", "2097152"])
                    .args(["--logger", "zap", "--log-outputs", "stderr"])
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .expect("etcd starts");
                Member {
                    client_url: client_urls[member].clone(),
                    metrics_url: metrics_urls[member].clone(),
                    process,
                }
            })
            .collect();
        EtcdCluster { dir, pki, members }
    }

    /// Every member's client URL, for `--etcd-endpoints`.
    pub fn client_urls(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|member| member.client_url.clone())
            .collect()
    }

    /// What a master connects to the members `urls` with: the test CA's client
    /// certificate, or plain http on the operator's word.
    pub fn settings_for(&self, urls: &[String]) -> weft_master::store::EtcdSettings {
        weft_master::store::EtcdSettings {
            etcd_endpoints: urls.to_vec(),
            etcd_tls: self
                .pki
                .as_ref()
                .map(|pki| weft_master::store::EtcdTlsFiles {
                    cacert: pki.ca_cert.clone(),
                    cert: pki.client_cert.clone(),
                    key: pki.client_key.clone(),
                }),
            etcd_insecure: self.pki.is_none(),
        }
    }

    /// [`Self::settings_for`] every member.
    pub fn settings(&self) -> weft_master::store::EtcdSettings {
        self.settings_for(&self.client_urls())
    }

    /// `weft master init`'s arguments for this cluster.
    pub fn init_args(&self) -> Vec<String> {
        let mut args = vec![
            "--store".to_string(),
            "etcd".to_string(),
            "--etcd-endpoints".to_string(),
            self.client_urls().join(","),
        ];
        match &self.pki {
            Some(pki) => {
                for (flag, path) in [
                    ("--etcd-cacert", &pki.ca_cert),
                    ("--etcd-cert", &pki.client_cert),
                    ("--etcd-key", &pki.client_key),
                ] {
                    args.push(flag.to_string());
                    args.push(path.display().to_string());
                }
            }
            None => args.push("--etcd-insecure".to_string()),
        }
        args
    }

    /// What the members logged, for failure messages.
    pub fn logs(&self) -> String {
        (0..self.members.len())
            .map(|member| {
                let path = self.dir.path().join(format!("m{member}.log"));
                let log = std::fs::read_to_string(&path).unwrap_or_default();
                format!("--- etcd m{member} ---\n{log}")
            })
            .collect()
    }

    fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_PATIENCE;
        for member in 0..self.members.len() {
            while !healthy(&self.members[member].metrics_url) {
                if let Ok(Some(status)) = self.members[member].process.try_wait() {
                    return Err(format!(
                        "etcd m{member} exited with {status}:\n{}",
                        self.logs()
                    ));
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "etcd did not elect a leader within {START_PATIENCE:?}:\n{}",
                        self.logs()
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

/// etcd's `/health` on the metrics port says `"health":"true"` once the member has a leader.
fn healthy(metrics_url: &str) -> bool {
    let address = metrics_url.trim_start_matches("http://");
    let Ok(mut connection) = TcpStream::connect(address) else {
        return false;
    };
    let _ = connection.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /health HTTP/1.0\r\nHost: {address}\r\n\r\n");
    let mut response = String::new();
    connection.write_all(request.as_bytes()).is_ok()
        && connection.read_to_string(&mut response).is_ok()
        && response.contains("\"health\":\"true\"")
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            let _ = member.process.kill();
            let _ = member.process.wait();
        }
    }
}
