//! What the swarm benchmarks share: a real master in its own process, an admin
//! client, and N simulated minions in this process (each the real agent with its own
//! key, certificate and mTLS session; only its facts are fixed). Included by the
//! benches with `#[path]`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};
use weft_minion::agent::{run_agent, AgentOptions, FactsSource};
use weft_minion::identity::MinionIdentity;
use weft_minion::join::{join, JoinOptions};
use weft_proto::adminapi::admin_api_client::AdminApiClient;
use weft_proto::adminapi::{CreateTokenRequest, ListNodesRequest};
use weft_proto::credentials::ClientCredentials;
use weft_proto::tls::connect_mtls;
use weft_taskbook::state_file;

const JOINS_IN_FLIGHT: usize = 64;

pub type Admin = AdminApiClient<tonic::transport::Channel>;

/// Facts every simulated minion reports.
pub fn facts() -> serde_json::Value {
    serde_json::json!({"hostname": "sim", "os": {"family": "debian"}, "cpu": {"count": 1}})
}

/// Nearest-rank percentile.
pub fn percentile(samples: &[f64], percent: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((percent / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

pub fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

pub struct Master {
    pub child: Child,
}

impl Master {
    pub fn start(dir: &Path, store_args: &[String]) -> (Master, String) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let endpoint = format!("127.0.0.1:{port}");
        let weft = env!("CARGO_BIN_EXE_weft");
        let init = Command::new(weft)
            .env("HOME", dir)
            .args([
                "master",
                "init",
                "--cluster-name",
                "fanout",
                "--name",
                "m1",
                "--public-endpoint",
                &endpoint,
                "--data-dir",
            ])
            .arg(dir.join("master"))
            .args(store_args)
            .output()
            .unwrap();
        assert!(
            init.status.success(),
            "{}",
            String::from_utf8_lossy(&init.stderr)
        );
        let child = Command::new(weft)
            .env("RUST_LOG", "warn")
            .args(["master", "--vpn", "off", "--data-dir"])
            .arg(dir.join("master"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("master.log")).unwrap())
            .spawn()
            .unwrap();
        (Master { child }, endpoint)
    }

    pub fn status_field(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0)
    }

    pub fn peak_rss_mb(&self) -> f64 {
        self.status_field("VmHWM:") / 1024.0
    }

    /// User plus system time.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        // SAFETY: sysconf reads a constant.
        ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn own_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

pub async fn admin(dir: &Path) -> Admin {
    let credentials: ClientCredentials = state_file::read(&dir.join("master/admin.yaml")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let channel = connect_mtls(
            &credentials.master_endpoints[0],
            &credentials.ca_cert_pem,
            &credentials.cert_pem,
            &credentials.key_pem,
        )
        .await;
        if let Ok(channel) = channel {
            let mut client =
                AdminApiClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
            if client.list_nodes(ListNodesRequest::default()).await.is_ok() {
                return client;
            }
        }
        assert!(Instant::now() < deadline, "the master did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Joins `size` simulated minions (`sim-00000`...) and runs them until the returned
/// sender says stop; returns the time all joins took. Waits until all are online.
pub async fn start_swarm(
    admin: &mut Admin,
    dir: &Path,
    size: usize,
    facts: FactsSource,
) -> (f64, watch::Sender<bool>) {
    let mut tokens = Vec::new();
    for _ in 0..size.div_ceil(1000) {
        let request = CreateTokenRequest {
            ttl_seconds: 3600,
            uses: 1000,
            ..Default::default()
        };
        tokens.push(
            admin
                .create_token(request)
                .await
                .unwrap()
                .into_inner()
                .token,
        );
    }
    let started = Instant::now();
    let in_flight = Arc::new(Semaphore::new(JOINS_IN_FLIGHT));
    let joins: Vec<_> = (0..size)
        .map(|index| {
            let options = JoinOptions {
                token: tokens[index / 1000].clone(),
                node_name: format!("sim-{index:05}"),
                labels: [("swarm".to_string(), "yes".to_string())].into(),
                data_dir: dir.join("minions").join(index.to_string()),
                node_public_endpoint: None,
                vpn: None,
            };
            let in_flight = in_flight.clone();
            tokio::spawn(async move {
                let _turn = in_flight.acquire().await.unwrap();
                join(&options)
                    .await
                    .unwrap_or_else(|e| panic!("join {index}: {e}"))
            })
        })
        .collect();
    let mut identities: Vec<MinionIdentity> = Vec::new();
    for joined in joins {
        identities.push(joined.await.unwrap());
    }
    let join_seconds = started.elapsed().as_secs_f64();
    eprintln!("joined {size} in {join_seconds:.2} s");

    let (stop, stopped) = watch::channel(false);
    for (index, identity) in identities.into_iter().enumerate() {
        let options = AgentOptions {
            identity,
            data_dir: dir.join("identities").join(index.to_string()),
            work_dir: dir.join("work").join(index.to_string()),
            facts: facts.clone(),
            mesh: None,
            peer_timeout: Duration::from_secs(300),
        };
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.changed().await;
            };
            run_agent(options, shutdown).await.unwrap();
        });
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let nodes = admin
            .list_nodes(ListNodesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .nodes;
        let online = nodes.iter().filter(|n| n.online).count();
        if online == size {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {online} of {size} minions came online"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (join_seconds, stop)
}
