//! bench/store: the master's two stores side by side, the embedded sqlite file and a
//! real etcd (one member on loopback, started here), through the same code the master
//! runs: `ObjectRegistry::apply` and `get`/`list` for `weft apply` and `weft get`, and
//! `Store::watch` for how fast a change reaches a watcher.
//!
//! `cargo bench --bench store -- [OBJECTS]` prints Markdown tables on stdout;
//! `bench/store` puts them into bench/RESULTS.md.

#[path = "../tests/common/etcd.rs"]
#[allow(dead_code)]
mod etcd;

use std::path::Path;
use std::time::{Duration, Instant};

use tokio_stream::StreamExt;
use weft_master::core::objects::ObjectRegistry;
use weft_master::core::secret_box::SecretBox;
use weft_master::store::etcd::EtcdStore;
use weft_master::store::{Precondition, SqliteStore, Store};
use weft_taskbook::objects::{parse_objects, Kind};

const WATCHED_PUTS: usize = 500;
const WATCH_PREFIX: &str = "/bench/watch/";

struct Measured {
    apply_per_s: f64,
    get_per_s: f64,
    list_ms: f64,
    watch_p50_ms: f64,
    watch_p99_ms: f64,
}

fn main() {
    let objects: usize = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(1000);
    if let Some(reason) = etcd::missing_etcd() {
        eprintln!("bench/store needs etcd: {reason}");
        std::process::exit(1);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let etcd_cluster = etcd::EtcdCluster::start(1);
    let (sqlite, etcd) = runtime.block_on(async {
        let sqlite = SqliteStore::open(&scratch.path().join("store.db")).unwrap();
        let sqlite = measure(sqlite, objects).await;
        let store = EtcdStore::connect(&etcd_cluster.settings()).await.unwrap();
        (sqlite, measure(store, objects).await)
    });
    println!("| operation | sqlite | etcd | etcd / sqlite |");
    println!("|---|---:|---:|---:|");
    let row = |what: &str, unit: &str, sqlite: f64, etcd: f64| {
        println!(
            "| {what} | {sqlite:.1} {unit} | {etcd:.1} {unit} | {:.2}x |",
            etcd / sqlite
        );
    };
    row(
        &format!("`weft apply`, one object each ({objects} objects)"),
        "objects/s",
        sqlite.apply_per_s,
        etcd.apply_per_s,
    );
    row(
        "`weft get` one object",
        "gets/s",
        sqlite.get_per_s,
        etcd.get_per_s,
    );
    row(
        &format!("list all {objects}"),
        "ms",
        sqlite.list_ms,
        etcd.list_ms,
    );
    row(
        &format!("put -> watcher, p50 ({WATCHED_PUTS} puts)"),
        "ms",
        sqlite.watch_p50_ms,
        etcd.watch_p50_ms,
    );
    row(
        "put -> watcher, p99",
        "ms",
        sqlite.watch_p99_ms,
        etcd.watch_p99_ms,
    );
}

async fn measure<S: Store + Clone>(store: S, objects: usize) -> Measured {
    let registry = ObjectRegistry::new(store.clone(), SecretBox::from_key(&[7; 32]));
    registry.ensure_builtin_namespaces().await.unwrap();
    let documents: Vec<_> = (0..objects)
        .map(|index| {
            let source = format!(
                "apiVersion: weft/v1\nkind: Variables\nmetadata: {{name: app-{index}}}\nspec:\n  vars: {{replicas: {index}, image: \"registry.example/app:{index}\"}}\n"
            );
            parse_objects(&source, Path::new("bench.yml")).unwrap()
        })
        .collect();
    let started = Instant::now();
    for document in documents {
        let applied = registry.apply(document, false).await.unwrap();
        assert_eq!(applied.len(), 1);
    }
    let apply_per_s = objects as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    for index in 0..objects {
        let name = format!("app-{index}");
        assert!(registry
            .get(Kind::Variables, None, &name)
            .await
            .unwrap()
            .is_some());
    }
    let get_per_s = objects as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let listed = registry.list(Kind::Variables, None).await.unwrap();
    let list_ms = started.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(listed.len(), objects);

    let mut watch = store
        .watch(WATCH_PREFIX, store.current_revision().await.unwrap())
        .await
        .unwrap();
    let mut latencies = Vec::with_capacity(WATCHED_PUTS);
    for index in 0..WATCHED_PUTS {
        let key = format!("{WATCH_PREFIX}{index}");
        let started = Instant::now();
        store
            .put(&key, b"changed".to_vec(), Precondition::None)
            .await
            .unwrap();
        let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("the watcher hears of the put")
            .unwrap()
            .unwrap();
        assert_eq!(event.key, key);
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    Measured {
        apply_per_s,
        get_per_s,
        list_ms,
        watch_p50_ms: percentile(0.5),
        watch_p99_ms: percentile(0.99),
    }
}
