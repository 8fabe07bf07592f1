//! The mesh's benchmarks; `bench/mesh` runs them and puts the tables into
//! bench/RESULTS.md. Arguments pick the parts: `updates`, `convergence`, `throughput`
//! (default: all three).
//!
//! - updates: bytes the master sends to nodes for one topology change (a node joins)
//!   at 100, 1,000 and 10,000 nodes: weft's deltas (each node gets the one changed
//!   peer) beside full peer lists (seed 000 sent every node the whole list), as real
//!   encoded vpnapi messages with real keys.
//! - convergence: real `weft` master and minions in network namespaces (root); from
//!   the newcomer's `weft minion join` to every existing node, the master included,
//!   showing it as a WireGuard peer; 4 and 8 existing nodes, 3 joins each.
//! - throughput: iperf3 TCP between two namespaces through weft's embedded
//!   (boringtun) device, through wireguard-go, and over the plain veth, side by side.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::mesh::{missing_capability, MeshLab};
use prost::Message;
use weft_proto::vpnapi::{master_message, MasterMessage};
use weft_vpn::peer_registry::{Peer, PeerRegistry, PeerUpdate};
use weft_vpn::vpn_key::VpnKeyPair;

fn main() {
    let parts: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |part: &str| parts.is_empty() || parts.iter().any(|p| p == part);
    if wants("updates") {
        updates();
    }
    if wants("convergence") || wants("throughput") {
        if let Some(reason) = missing_capability() {
            println!("\nconvergence and throughput not measured: {reason}\n");
            return;
        }
    }
    if wants("convergence") {
        convergence();
    }
    if wants("throughput") {
        throughput();
    }
}

fn peer(index: usize) -> Peer {
    Peer {
        node_name: format!("node-{index:05}"),
        node_vpn_pub_key: VpnKeyPair::generate().public_key_base64,
        node_vpn_ip: format!("10.77.{}.{}", (index + 2) / 256, (index + 2) % 256),
        node_public_endpoint: format!("192.0.{}.{}:51820", index / 256 % 256, index % 256),
        persistent_keepalive: 25,
    }
}

fn message_bytes(update: PeerUpdate) -> usize {
    MasterMessage {
        kind: Some(master_message::Kind::Peers(update.into())),
    }
    .encoded_len()
}

fn updates() {
    println!("\n| nodes | delta to each node (B) | deltas, all nodes | full list to each node (B) | full lists, all nodes | full / delta |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for nodes in [100, 1_000, 10_000] {
        let mut registry = PeerRegistry::default();
        for index in 0..nodes {
            registry.upsert(peer(index));
        }
        let before = registry.version();
        // The change: one more node joins; the `nodes` existing ones must learn of it.
        registry.upsert(peer(nodes));
        let delta = message_bytes(registry.changes_since(before));
        let full = message_bytes(PeerUpdate {
            full: true,
            ..registry.changes_since(u64::MAX)
        });
        let (delta_all, full_all) = (delta * nodes, full * nodes);
        println!(
            "| {nodes} | {delta} | {} | {full} | {} | {:.0}x |",
            human_bytes(delta_all),
            human_bytes(full_all),
            full_all as f64 / delta_all as f64
        );
    }
}

fn human_bytes(bytes: usize) -> String {
    match bytes {
        0..10_000 => format!("{bytes} B"),
        10_000..10_000_000 => format!("{:.1} KB", bytes as f64 / 1e3),
        10_000_000..1_000_000_000 => format!("{:.1} MB", bytes as f64 / 1e6),
        _ => format!("{:.2} GB", bytes as f64 / 1e9),
    }
}

fn convergence() {
    println!("\n| existing nodes | join -> all have the peer, median | max | runs |");
    println!("|---:|---:|---:|---:|");
    for existing in [4, 8] {
        let mut lab = MeshLab::start();
        let token = lab.token(existing as u32 + 3);
        let names: Vec<String> = (1..=existing).map(|i| format!("n{i}")).collect();
        for name in &names {
            lab.join_and_start(name, &token, &[]);
        }
        lab.wait_online(&names.iter().map(String::as_str).collect::<Vec<_>>());
        let mut times = Vec::new();
        for run in 1..=3 {
            let newcomer = format!("x{run}");
            let others: Vec<String> = lab.hosts().to_vec();
            lab.add_host(&newcomer);
            let started = Instant::now();
            lab.join(&newcomer, &token);
            let key = lab.wg_public_key(&newcomer);
            lab.wait_until(
                "every node has the newcomer",
                Duration::from_secs(60),
                || others.iter().all(|host| lab.wg_peers(host).contains(&key)),
            );
            times.push(started.elapsed());
            lab.start_minion(&newcomer, &[]);
            lab.wait_online(&[newcomer.as_str()]);
        }
        times.sort();
        println!(
            "| {existing} | {:.0} ms | {:.0} ms | {} |",
            times[times.len() / 2].as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3,
            times.len()
        );
    }
}

/// iperf3 TCP from `client` to `server_ip` (a server runs in `server`), Gbit/s.
fn iperf(lab: &MeshLab, client: &str, server: &str, server_ip: &str) -> f64 {
    let mut server_process = lab
        .in_host(server, "iperf3")
        .args(["-s", "-1", "-B", server_ip])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let output = lab
        .in_host(client, "iperf3")
        .args(["-c", server_ip, "-t", "6", "-O", "1", "-J"])
        .output()
        .unwrap();
    let _ = server_process.wait();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e9
}

/// Two namespaces joined by wireguard-go interfaces at 10.99.0.1 and .2.
fn wireguard_go_pair(lab: &mut MeshLab) -> Vec<std::process::Child> {
    let hosts = ["g1", "g2"];
    let keys: Vec<VpnKeyPair> = hosts.iter().map(|_| VpnKeyPair::generate()).collect();
    let mut daemons = Vec::new();
    for host in hosts {
        lab.add_host(host);
    }
    for (index, host) in hosts.iter().enumerate() {
        let interface = lab.interface(host);
        daemons.push(
            lab.in_host(host, "wireguard-go")
                .args(["-f", &interface])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let socket = format!("/var/run/wireguard/{interface}.sock");
        lab.wait_until("wireguard-go starts", Duration::from_secs(10), || {
            std::path::Path::new(&socket).exists()
        });
        let other = 1 - index;
        let key_file = lab.dir.path().join(format!("{host}.key"));
        std::fs::write(&key_file, &keys[index].private_key_base64).unwrap();
        let script = format!(
            "wg set {interface} private-key {key} listen-port 51820 peer {peer} allowed-ips 10.99.0.{peer_ip}/32 endpoint {endpoint}:51820 && \
             ip addr add 10.99.0.{own_ip}/24 dev {interface} && ip link set {interface} mtu 1420 up",
            key = key_file.display(),
            peer = keys[other].public_key_base64,
            peer_ip = other + 1,
            own_ip = index + 1,
            endpoint = lab.lan_ip(hosts[other]),
        );
        let status = lab
            .in_host(host, "sh")
            .args(["-c", &script])
            .status()
            .unwrap();
        assert!(status.success(), "wireguard-go setup failed: {script}");
    }
    daemons
}

fn throughput() {
    let mut lab = MeshLab::start();
    let token = lab.token(2);
    for name in ["n1", "n2"] {
        lab.join_and_start(name, &token, &[]);
    }
    lab.wait_online(&["n1", "n2"]);
    let n2_vpn_ip = lab
        .vpn_ips()
        .into_iter()
        .find(|(name, _)| name == "n2")
        .unwrap()
        .1;
    let mut daemons = wireguard_go_pair(&mut lab);
    let weft = iperf(&lab, "n1", "n2", &n2_vpn_ip);
    let wireguard_go = iperf(&lab, "g1", "g2", "10.99.0.2");
    let veth = iperf(&lab, "n1", "n2", &lab.lan_ip("n2"));
    for daemon in &mut daemons {
        let _ = daemon.kill();
        let _ = daemon.wait();
    }
    println!("\n| path | Gbit/s | vs wireguard-go | vs plain veth |");
    println!("|---|---:|---:|---:|");
    for (path, rate) in [
        ("weft (embedded boringtun, 1 thread)", weft),
        ("wireguard-go", wireguard_go),
        ("plain veth", veth),
    ] {
        println!(
            "| {path} | {rate:.2} | {:.2} | {:.3} |",
            rate / wireguard_go,
            rate / veth
        );
    }
}
