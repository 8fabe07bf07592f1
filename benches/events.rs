//! bench/events: Beacons, Events and Triggers against a real master (its own process,
//! embedded sqlite) and 1,000 simulated minions in this process, each the real agent
//! running the Beacons the master sends it.
//!
//! Latency: a `command` Beacon on one minion fires (the bench creates the file it
//! tests); a Trigger runs a one-`ping` TaskBook on that node. Measured from the event's
//! time (the master stamps it when it stores the event) to the `ping`'s start on the
//! node (the minion stamps it), over R firings.
//!
//! Throughput: every minion runs a `disk_usage` Beacon on one small tmpfs that the
//! bench fills and empties every second, so each minion's check flips at every
//! interval: 1,000 events a second offered. A Trigger counts every one (it never
//! reaches its count, so it never runs anything). Reported: events stored per second
//! over the window, and how long after the last one the Trigger engine has handled
//! them all (a final event that fires the latency Trigger).
//!
//! `cargo bench --bench events -- [MINIONS]` prints Markdown on stdout; `bench/events`
//! puts it into bench/RESULTS.md. Needs root (the tmpfs).

#[path = "swarm.rs"]
#[allow(dead_code)] // the process measures live in bench/fanout
mod swarm;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use weft_minion::agent::FactsSource;
use weft_proto::adminapi::{
    ApplyObjectsRequest, GetJobRequest, ListEventsRequest, ListJobsRequest, SourceFile,
};

use swarm::{admin, facts, percentile, raise_fd_limit, scratch_dir, start_swarm, Admin, Master};

const FIRINGS: usize = 10;
const BURST: Duration = Duration::from_secs(8);

fn main() {
    let minions: usize = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(1000);
    // SAFETY: geteuid reads the process's own id.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("bench/events needs root (it mounts a tmpfs); nothing measured");
        std::process::exit(1);
    }
    let fd_limit = raise_fd_limit();
    assert!(
        fd_limit as usize >= minions * 2 + 256,
        "the open-file limit {fd_limit} is too low for {minions} minions"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(measure(minions));
}

async fn apply(admin: &mut Admin, yaml: String) {
    admin
        .apply_objects(ApplyObjectsRequest {
            files: vec![SourceFile {
                path: "bench.yml".into(),
                content: yaml,
            }],
            dry_run: false,
        })
        .await
        .unwrap();
}

async fn events(admin: &mut Admin, event_type: &str) -> Vec<Value> {
    let mut stream = admin
        .list_events(ListEventsRequest {
            event_type: event_type.into(),
            limit: 10_000,
            ..ListEventsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        events.push(serde_json::from_str(&message.event_json).unwrap());
    }
    events
}

/// The finished jobs the `on-flag` Trigger started, oldest first.
async fn flag_jobs(admin: &mut Admin) -> Vec<String> {
    let jobs = admin
        .list_jobs(ListJobsRequest { limit: 1000 })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    let mut ids: Vec<String> = jobs
        .into_iter()
        .filter(|job| job.origin == "Trigger default/on-flag" && job.state != "running")
        .map(|job| job.job_id)
        .collect();
    ids.reverse();
    ids
}

async fn wait_for_jobs(admin: &mut Admin, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let jobs = flag_jobs(admin).await;
        if jobs.len() >= count {
            return jobs;
        }
        assert!(Instant::now() < deadline, "the trigger did not run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Event time (ms, from the id the master gave it) to the ping's start on the node.
async fn latency_ms(admin: &mut Admin, job_id: &str) -> f64 {
    let job = admin
        .get_job(GetJobRequest {
            job_id: job_id.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let detail: Value = serde_json::from_str(&job.job_json).unwrap();
    let event_ms: f64 = detail["origin"]["event_id"].as_str().unwrap()[..13]
        .parse()
        .unwrap();
    let started = detail["report"]["results"][0]["started_unix_ms"]
        .as_f64()
        .unwrap();
    started - event_ms
}

async fn measure(minions: usize) {
    let dir = scratch_dir();
    let (_master, _) = Master::start(dir.path(), &[]);
    let mut admin = admin(dir.path()).await;
    let (_, stop) = start_swarm(&mut admin, dir.path(), minions, FactsSource::Fixed(facts())).await;
    eprintln!("{minions} minions online");

    let flag = dir.path().join("flag");
    let disk = dir.path().join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&disk)
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "cannot mount a tmpfs on {}",
        disk.display()
    );
    apply(
        &mut admin,
        format!(
            r#"apiVersion: weft/v1
kind: Config
metadata: {{name: bench}}
spec: {{max_events: 100000}}
---
apiVersion: weft/v1
kind: TaskBook
metadata: {{name: ping}}
spec:
  steps:
    - tasks: [{{ping: {{}}}}]
---
apiVersion: weft/v1
kind: Beacon
metadata: {{name: flag}}
spec:
  nodes: {{names: [sim-00000]}}
  interval: 1s
  check: {{command: {{cmd: "test ! -e {flag}"}}}}
  event: bench.flag
---
apiVersion: weft/v1
kind: Trigger
metadata: {{name: on-flag}}
spec:
  event: {{type: bench.flag}}
  run: {{taskbook: {{name: ping}}, on: event_node}}
"#,
            flag = flag.display()
        ),
    )
    .await;
    // Let every minion take its new Beacon set.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut latencies = Vec::new();
    for firing in 0..FIRINGS {
        std::fs::write(&flag, "").unwrap();
        let jobs = wait_for_jobs(&mut admin, firing + 1).await;
        latencies.push(latency_ms(&mut admin, &jobs[firing]).await);
        std::fs::remove_file(&flag).unwrap();
        let cleared = firing + 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        while events(&mut admin, "bench.flag.cleared").await.len() < cleared {
            assert!(Instant::now() < deadline, "the flag beacon did not clear");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    eprintln!("latencies (ms): {latencies:?}");

    apply(
        &mut admin,
        format!(
            r#"apiVersion: weft/v1
kind: Beacon
metadata: {{name: disk}}
spec:
  nodes: {{all: true}}
  interval: 1s
  check: {{disk_usage: {{path: {disk}, above_percent: 50}}}}
  event: bench.disk
---
apiVersion: weft/v1
kind: Trigger
metadata: {{name: count-disk}}
spec:
  event: {{type: "bench.disk*"}}
  condition: {{count: 4000000000, within: 1m}}
  run: {{taskbook: {{name: ping}}, on: event_node}}
"#,
            disk = disk.display()
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let filler = disk.join("fill");
    let burst_started = Instant::now();
    let mut full = false;
    while burst_started.elapsed() < BURST {
        if full {
            std::fs::remove_file(&filler).unwrap();
        } else {
            std::fs::write(&filler, vec![0u8; 768 * 1024]).unwrap();
        }
        full = !full;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if full {
        std::fs::remove_file(&filler).unwrap();
    }
    let offered_seconds = burst_started.elapsed().as_secs_f64();
    // Stored events stop growing once the swarm has sent its last transition.
    let mut stored = events(&mut admin, "bench.disk*").await;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let again = events(&mut admin, "bench.disk*").await;
        if again.len() == stored.len() {
            break;
        }
        stored = again;
    }
    let times: Vec<f64> = stored
        .iter()
        .map(|e| e["time_unix_ms"].as_f64().unwrap())
        .collect();
    let span_seconds = (times.iter().cloned().fold(f64::MIN, f64::max)
        - times.iter().cloned().fold(f64::MAX, f64::min))
        / 1000.0;
    let stored_per_second = stored.len() as f64 / span_seconds.max(0.001);
    // One more flag firing: its run starts only after the engine handled every
    // event before it.
    let drain_started = Instant::now();
    std::fs::write(&flag, "").unwrap();
    wait_for_jobs(&mut admin, FIRINGS + 1).await;
    let drain_seconds = drain_started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&flag);

    let _ = stop.send(true);
    let _ = Command::new("umount").arg(&disk).status();
    print_results(
        minions,
        &latencies,
        stored.len(),
        span_seconds,
        stored_per_second,
        offered_seconds,
        drain_seconds,
    );
}

fn print_results(
    minions: usize,
    latencies: &[f64],
    stored: usize,
    span_seconds: f64,
    stored_per_second: f64,
    offered_seconds: f64,
    drain_seconds: f64,
) {
    println!("| measure | value |");
    println!("|---|---:|");
    println!(
        "| event -> trigger -> first task started, p50 ({} firings) | {:.1} ms |",
        latencies.len(),
        percentile(latencies, 50.0)
    );
    println!("| same, p99 | {:.1} ms |", percentile(latencies, 99.0));
    println!(
        "| beacon events offered by {minions} minions ({:.0} s of flips every second) | about {} |",
        offered_seconds,
        minions * offered_seconds as usize
    );
    println!("| events stored | {stored} in {span_seconds:.1} s |");
    println!("| events stored per second | {stored_per_second:.0} |");
    println!(
        "| after the burst: a new event to its trigger's run finished | {drain_seconds:.2} s |"
    );
}
