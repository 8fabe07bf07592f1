//! Real etcd clusters on loopback for tests: each member an `etcd` process with its own
//! ports and data directory, stopped and removed on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
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

pub struct EtcdCluster {
    pub dir: tempfile::TempDir,
    members: Vec<Member>,
}

struct Member {
    client_url: String,
    process: Child,
}

impl EtcdCluster {
    /// `size` members that have elected a leader, with the limits weft needs raised.
    pub fn start(size: usize) -> EtcdCluster {
        static CLUSTERS: AtomicUsize = AtomicUsize::new(0);
        let binary = etcd_binary().expect("etcd is installed (check missing_etcd first)");
        let dir = tempfile::tempdir().expect("temp dir");
        // All ports are taken before any member starts, so that no member can grab
        // another's port while it is free.
        let listeners: Vec<_> = (0..2 * size)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
            .collect();
        let url = |index: usize| {
            let port = listeners[index].local_addr().expect("bound").port();
            format!("http://127.0.0.1:{port}")
        };
        let client_urls: Vec<String> = (0..size).map(|member| url(2 * member)).collect();
        let peer_urls: Vec<String> = (0..size).map(|member| url(2 * member + 1)).collect();
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
                let process = Command::new(&binary)
                    .arg("--name")
                    .arg(&name)
                    .arg("--data-dir")
                    .arg(dir.path().join(&name))
                    .args(["--listen-client-urls", &client_urls[member]])
                    .args(["--advertise-client-urls", &client_urls[member]])
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
                    process,
                }
            })
            .collect();
        let mut cluster = EtcdCluster { dir, members };
        cluster.wait_healthy();
        cluster
    }

    /// Every member's client URL, for `--etcd-endpoints` or `EtcdStore::connect`.
    pub fn client_urls(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|member| member.client_url.clone())
            .collect()
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

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + START_PATIENCE;
        for member in 0..self.members.len() {
            while !healthy(&self.members[member].client_url) {
                if let Ok(Some(status)) = self.members[member].process.try_wait() {
                    panic!("etcd m{member} exited with {status}:\n{}", self.logs());
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd did not elect a leader within {START_PATIENCE:?}:\n{}",
                    self.logs()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// etcd's `/health` on the client port says `"health":"true"` once the member has a leader.
fn healthy(client_url: &str) -> bool {
    let address = client_url.trim_start_matches("http://");
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
