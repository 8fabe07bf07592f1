//! bench/fanout: a swarm of simulated minions against a real master (Salt's
//! minionswarm, in one process). Every simulated minion is the real agent
//! (`weft_minion::agent::run_agent`) with its own key, certificate and mTLS
//! connection; only its facts are fixed instead of gathered. The master is the real
//! `weft` binary in its own process, so its memory and CPU are measured alone.
//!
//! For each swarm size: join time (all nodes, 64 joins in flight), then R runs of a
//! one-step TaskBook with one `ping` task on every node, timed from the RunTaskBook
//! call to the final report (each run must come back with one ok result per node),
//! the master's peak RSS and its CPU seconds over the whole size.
//!
//! `cargo bench --bench fanout -- 100 1000 5000` prints a Markdown table on stdout;
//! `bench/fanout` puts it into bench/RESULTS.md. With `--etcd` the master keeps its
//! state in a real etcd (one member on loopback, fresh for each size) instead of sqlite.

#[path = "../tests/common/etcd.rs"]
#[allow(dead_code)]
mod etcd;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::{watch, Semaphore};
use weft_minion::agent::{run_agent, AgentOptions, FactsSource};
use weft_minion::identity::MinionIdentity;
use weft_minion::join::{join, JoinOptions};
use weft_modules::state_file;
use weft_proto::adminapi::admin_api_client::AdminApiClient;
use weft_proto::adminapi::{run_event, CreateTokenRequest, ListNodesRequest, RunTaskBookRequest};
use weft_proto::credentials::ClientCredentials;
use weft_proto::tls::connect_mtls;
use weft_taskbook::report::{RunReport, TaskStatus};

const JOINS_IN_FLIGHT: usize = 64;
const PING_TASKBOOK: &str = "apiVersion: weft/v1
kind: TaskBook
metadata: {name: fanout}
spec:
  steps:
    - name: everyone
      nodes: {all: true}
      tasks:
        - name: ping
          ping: {}
";

type Admin = AdminApiClient<tonic::transport::Channel>;

struct Measured {
    minions: usize,
    join_seconds: f64,
    runs: Vec<f64>,
    master_peak_rss_mb: f64,
    master_cpu_seconds: f64,
    swarm_rss_mb: f64,
}

fn main() {
    let on_etcd = std::env::args().any(|arg| arg == "--etcd");
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|arg| arg.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100, 1000, 5000]
    } else {
        sizes
    };
    let fd_limit = raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for size in sizes {
        // Each minion holds a socket here and one on the master, plus files while it joins.
        if (fd_limit as usize) < size * 2 + 256 {
            eprintln!(
                "skipping {size} minions: the open-file limit is {fd_limit}, below {}",
                size * 2 + 256
            );
            continue;
        }
        eprintln!("== {size} minions");
        rows.push(runtime.block_on(measure(size, on_etcd)));
    }
    println!("| minions | join all | run p50 | run p99 | runs | master peak RSS | master CPU | swarm RSS |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        println!(
            "| {} | {:.2} s | {:.3} s | {:.3} s | {} | {:.0} MB | {:.1} s | {:.0} MB |",
            row.minions,
            row.join_seconds,
            percentile(&row.runs, 50.0),
            percentile(&row.runs, 99.0),
            row.runs.len(),
            row.master_peak_rss_mb,
            row.master_cpu_seconds,
            row.swarm_rss_mb,
        );
    }
}

/// Nearest-rank percentile.
fn percentile(samples: &[f64], percent: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((percent / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn raise_fd_limit() -> u64 {
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

fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

struct Master {
    child: Child,
}

impl Master {
    fn start(dir: &Path, store_args: &[String]) -> (Master, String) {
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

    fn status_field(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0)
    }

    fn peak_rss_mb(&self) -> f64 {
        self.status_field("VmHWM:") / 1024.0
    }

    /// User plus system time.
    fn cpu_seconds(&self) -> f64 {
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

fn own_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

async fn admin(dir: &Path) -> Admin {
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

async fn measure(size: usize, on_etcd: bool) -> Measured {
    let dir = scratch_dir();
    let etcd = on_etcd.then(|| etcd::EtcdCluster::start(1));
    let store_args: Vec<String> = match &etcd {
        Some(etcd) => vec![
            "--store".into(),
            "etcd".into(),
            "--etcd-endpoints".into(),
            etcd.client_urls().join(","),
        ],
        None => Vec::new(),
    };
    let (master, _endpoint) = Master::start(dir.path(), &store_args);
    let mut admin = admin(dir.path()).await;

    let mut tokens = Vec::new();
    for _ in 0..size.div_ceil(1000) {
        let request = CreateTokenRequest {
            ttl_seconds: 3600,
            uses: 1000,
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
                data_dir: dir.path().join("minions").join(index.to_string()),
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
    let facts = json!({"hostname": "sim", "os": {"family": "debian"}, "cpu": {"count": 1}});
    for (index, identity) in identities.into_iter().enumerate() {
        let options = AgentOptions {
            identity,
            work_dir: dir.path().join("work").join(index.to_string()),
            facts: FactsSource::Fixed(facts.clone()),
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
    eprintln!(
        "{size} online after {:.2} s; master RSS {:.0} MB (peak {:.0} MB)",
        started.elapsed().as_secs_f64(),
        master.status_field("VmRSS:") / 1024.0,
        master.peak_rss_mb()
    );

    let repetitions = if size >= 5000 { 5 } else { 10 };
    let mut runs = Vec::new();
    for _ in 0..repetitions {
        let request = RunTaskBookRequest {
            taskbook_file: "fanout.yml".into(),
            files: [(
                "fanout.yml".to_string(),
                bytes::Bytes::from_static(PING_TASKBOOK.as_bytes()),
            )]
            .into(),
            ..RunTaskBookRequest::default()
        };
        let started = Instant::now();
        let mut events = admin.run_task_book(request).await.unwrap().into_inner();
        let report = loop {
            match events
                .message()
                .await
                .unwrap()
                .expect("the run ended without a report")
                .kind
            {
                Some(run_event::Kind::ReportJson(json)) => {
                    break serde_json::from_str::<RunReport>(&json).unwrap()
                }
                _ => continue,
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        let ok = report
            .results
            .iter()
            .filter(|r| r.status == TaskStatus::Ok)
            .count();
        assert_eq!(ok, size, "a run came back with {ok} ok results of {size}");
        eprintln!(
            "run: {size} pings in {seconds:.3} s; master RSS {:.0} MB",
            master.status_field("VmRSS:") / 1024.0
        );
        runs.push(seconds);
    }
    let measured = Measured {
        minions: size,
        join_seconds,
        runs,
        master_peak_rss_mb: master.peak_rss_mb(),
        master_cpu_seconds: master.cpu_seconds(),
        swarm_rss_mb: own_rss_mb(),
    };
    let _ = stop.send(true);
    drop(master);
    tokio::time::sleep(Duration::from_millis(200)).await;
    measured
}
