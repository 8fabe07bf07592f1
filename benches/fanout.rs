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
#[path = "swarm.rs"]
mod swarm;

use std::time::{Duration, Instant};

use weft_minion::agent::FactsSource;
use weft_proto::adminapi::{run_event, RunTaskBookRequest};
use weft_taskbook::report::{RunReport, TaskStatus};

use swarm::{
    admin, facts, own_rss_mb, percentile, raise_fd_limit, scratch_dir, start_swarm, Master,
};

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

async fn measure(size: usize, on_etcd: bool) -> Measured {
    let dir = scratch_dir();
    let etcd = on_etcd.then(|| etcd::EtcdCluster::start(1));
    let store_args: Vec<String> = etcd
        .as_ref()
        .map(etcd::EtcdCluster::init_args)
        .unwrap_or_default();
    let (master, _endpoint) = Master::start(dir.path(), &store_args);
    let mut admin = admin(dir.path()).await;

    let started = Instant::now();
    let (join_seconds, stop) =
        start_swarm(&mut admin, dir.path(), size, FactsSource::Fixed(facts())).await;
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
