//! Hosts in network namespaces for the mesh tests: one namespace per host, each with a
//! veth whose other end sits on a bridge in a hub namespace, so the hosts share a LAN
//! (172.31.0.0/24) and nothing else. A master and minions run in them as real `weft`
//! processes with the mesh on; WireGuard interface names carry this process's id,
//! since UAPI sockets live in one directory for the whole machine.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::cluster::assert_success;

/// Reconnects back off up to 30 s, so a restarted master may wait that long for a node.
const SETTLE: Duration = Duration::from_secs(60);
const MASTER: &str = "master";

/// Why the mesh tests cannot run here, if they cannot.
pub fn missing_capability() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("not root: network namespaces and TUN devices need root".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing".into());
    }
    for tool in ["ip", "wg", "ping"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!(
                "`{tool}` is not installed (scripts/test installs it)"
            ));
        }
    }
    None
}

pub struct MeshLab {
    pub dir: tempfile::TempDir,
    tag: String,
    hosts: Vec<String>,
    master: Option<Child>,
    minions: Vec<(String, Child)>,
}

impl MeshLab {
    /// The hub and a master host, with `weft master init` done and the master running.
    pub fn start() -> MeshLab {
        let tag = format!("{}", std::process::id() % 100_000);
        let mut lab = MeshLab {
            dir: tempfile::tempdir().unwrap(),
            tag,
            hosts: Vec::new(),
            master: None,
            minions: Vec::new(),
        };
        let hub = lab.namespace("hub");
        sh(&format!(
            "ip netns add {hub} && ip -n {hub} link add br0 type bridge && ip -n {hub} link set br0 up"
        ));
        lab.add_host(MASTER);
        let init = lab
            .weft_in(
                MASTER,
                &["master", "init", "--cluster-name", "mesh", "--name", "m1"],
            )
            .arg("--data-dir")
            .arg(lab.data_dir(MASTER))
            .args(["--public-endpoint", &format!("{}:7443", lab.lan_ip(MASTER))])
            .output()
            .unwrap();
        assert_success(&init, "master init");
        lab.start_master();
        lab
    }

    fn namespace(&self, host: &str) -> String {
        format!("weft{}-{host}", self.tag)
    }

    /// The host's WireGuard interface name (at most 15 bytes, unique on the machine).
    pub fn interface(&self, host: &str) -> String {
        let index = self.host_index(host);
        format!("wg{}h{index}", self.tag)
    }

    fn host_index(&self, host: &str) -> usize {
        self.hosts
            .iter()
            .position(|h| h == host)
            .unwrap_or_else(|| panic!("no host {host}"))
    }

    /// Every host added so far, the master first.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    pub fn lan_ip(&self, host: &str) -> String {
        format!("172.31.0.{}", self.host_index(host) + 1)
    }

    pub fn data_dir(&self, host: &str) -> PathBuf {
        self.dir.path().join(host)
    }

    fn log_path(&self, host: &str) -> PathBuf {
        self.dir.path().join(format!("{host}.log"))
    }

    pub fn log(&self, host: &str) -> String {
        std::fs::read_to_string(self.log_path(host)).unwrap_or_default()
    }

    /// A namespace with a veth on the hub's bridge.
    pub fn add_host(&mut self, host: &str) {
        self.hosts.push(host.to_string());
        let index = self.hosts.len() - 1;
        let ns = self.namespace(host);
        let hub = self.namespace("hub");
        let (inside, outside) = (
            format!("ve{}i{index}", self.tag),
            format!("ve{}o{index}", self.tag),
        );
        let ip = self.lan_ip(host);
        sh(&format!(
            "ip netns add {ns} && ip -n {ns} link set lo up && \
             ip link add {inside} type veth peer name {outside} && \
             ip link set {inside} netns {ns} && ip link set {outside} netns {hub} && \
             ip -n {ns} link set {inside} name eth0 && ip -n {ns} addr add {ip}/24 dev eth0 && \
             ip -n {ns} link set eth0 up && \
             ip -n {hub} link set {outside} master br0 && ip -n {hub} link set {outside} up"
        ));
    }

    /// Runs a command inside the host's namespace.
    pub fn in_host(&self, host: &str, program: &str) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace(host), program])
            .env("HOME", self.dir.path().join("home"))
            .env("NO_COLOR", "1")
            .env_remove("WEFT_CONFIG");
        command
    }

    pub fn weft_in(&self, host: &str, args: &[&str]) -> Command {
        let mut command = self.in_host(host, env!("CARGO_BIN_EXE_weft"));
        command.args(args);
        command
    }

    pub fn admin(&self, args: &[&str]) -> Output {
        self.weft_in(MASTER, args)
            .arg("--config")
            .arg(self.data_dir(MASTER).join("admin.yaml"))
            .output()
            .unwrap()
    }

    pub fn admin_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let output = self.admin(&all);
        assert_success(&output, &args.join(" "));
        serde_json::from_slice(&output.stdout).expect("JSON output")
    }

    fn spawn_logged(&self, host: &str, mut command: Command) -> Child {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.log_path(host))
            .unwrap();
        command
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    pub fn start_master(&mut self) {
        let mut command = self.weft_in(MASTER, &["master"]);
        command
            .arg("--data-dir")
            .arg(self.data_dir(MASTER))
            .args(["--vpn-interface", &self.interface(MASTER)]);
        self.master = Some(self.spawn_logged(MASTER, command));
        let deadline = Instant::now() + SETTLE;
        while !self.admin(&["nodes"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "the master did not come up:\n{}",
                self.log(MASTER)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill_master(&mut self) {
        if let Some(mut master) = self.master.take() {
            master.kill().unwrap();
            master.wait().unwrap();
        }
    }

    pub fn token(&self, uses: u32) -> String {
        let output = self.admin(&["token", "create", "--uses", &uses.to_string()]);
        assert_success(&output, "token create");
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    }

    /// A new host that joins with `token` and runs `weft minion ARGS`.
    pub fn join_and_start(&mut self, host: &str, token: &str, minion_args: &[&str]) {
        self.add_host(host);
        self.join(host, token);
        self.start_minion(host, minion_args);
    }

    /// `weft minion join` on a host made with `add_host`.
    pub fn join(&self, host: &str, token: &str) {
        let join = self
            .weft_in(host, &["minion", "join", "--name", host, "--token", token])
            .arg("--data-dir")
            .arg(self.data_dir(host))
            .args(["--vpn-interface", &self.interface(host)])
            .output()
            .unwrap();
        assert_success(&join, &format!("minion join {host}"));
    }

    pub fn start_minion(&mut self, host: &str, minion_args: &[&str]) {
        let mut command = self.weft_in(host, &["minion"]);
        command
            .arg("--data-dir")
            .arg(self.data_dir(host))
            .args(minion_args);
        let child = self.spawn_logged(host, command);
        self.minions.push((host.to_string(), child));
    }

    pub fn wait_online(&self, hosts: &[&str]) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let nodes = self.admin_json(&["nodes"]);
            let online = |name: &str| {
                nodes
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|node| node["name"] == name && node["online"] == true)
            };
            if hosts.iter().all(|host| online(host)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not all of {hosts:?} came online: {nodes:#}\n{}",
                hosts
                    .iter()
                    .map(|h| format!("--- {h}\n{}", self.log(h)))
                    .collect::<String>()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// VPN address of every node (`weft nodes`) and of the master (the first address).
    pub fn vpn_ips(&self) -> Vec<(String, String)> {
        let mut ips = vec![(MASTER.to_string(), "10.77.0.1".to_string())];
        for node in self.admin_json(&["nodes"]).as_array().unwrap() {
            ips.push((
                node["name"].as_str().unwrap().to_string(),
                node["vpn_ip"].as_str().unwrap().to_string(),
            ));
        }
        ips
    }

    /// `ping` from one host to an address, `count` packets a `interval` apart; the
    /// number received.
    pub fn ping(&self, from: &str, address: &str, count: u32, interval: &str) -> u32 {
        let output = self
            .in_host(from, "ping")
            .args([
                "-n",
                "-q",
                "-c",
                &count.to_string(),
                "-i",
                interval,
                "-W",
                "2",
                address,
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        text.lines()
            .find_map(|line| {
                let (_, rest) = line.split_once("packets transmitted, ")?;
                rest.split_whitespace().next()?.parse().ok()
            })
            .unwrap_or(0)
    }

    /// The public keys of the peers on a host's WireGuard interface, as `wg` shows them.
    pub fn wg_peers(&self, host: &str) -> Vec<String> {
        let output = self
            .in_host(host, "wg")
            .args(["show", &self.interface(host), "peers"])
            .output()
            .unwrap();
        assert_success(&output, "wg show");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The host's WireGuard public key, from the private key it keeps (boringtun
    /// does not show its own key).
    pub fn wg_public_key(&self, host: &str) -> String {
        use std::io::Write;
        let private = std::fs::read(self.data_dir(host).join("vpn.key")).unwrap();
        let mut pubkey = Command::new("wg")
            .arg("pubkey")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        pubkey.stdin.take().unwrap().write_all(&private).unwrap();
        let output = pubkey.wait_with_output().unwrap();
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// The peer version a node has cached.
    pub fn cached_version(&self, host: &str) -> u64 {
        let cache = std::fs::read(self.data_dir(host).join("peers.json")).unwrap();
        serde_json::from_slice::<Value>(&cache).unwrap()["version"]
            .as_u64()
            .unwrap()
    }

    pub fn set_link(&self, host: &str, up: bool) {
        sh(&format!(
            "ip -n {} link set eth0 {}",
            self.namespace(host),
            if up { "up" } else { "down" }
        ));
    }

    /// SIGTERM to every daemon, as systemd stops them; returns the hosts whose daemon
    /// was still running `within` later (those are then killed).
    pub fn terminate_all(&mut self, within: Duration) -> Vec<String> {
        let mut daemons: Vec<(String, Child)> = std::mem::take(&mut self.minions);
        if let Some(master) = self.master.take() {
            daemons.push((MASTER.to_string(), master));
        }
        for (_, child) in &daemons {
            // SAFETY: a plain kill(2) on a child this lab started and has not reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        }
        let deadline = Instant::now() + within;
        let mut hung = Vec::new();
        for (host, mut child) in daemons {
            while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if child.try_wait().unwrap().is_none() {
                hung.push(host);
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        hung
    }

    /// The UAPI socket of the host's interface is still there.
    pub fn has_uapi_socket(&self, host: &str) -> bool {
        Path::new(&format!("/var/run/wireguard/{}.sock", self.interface(host))).exists()
    }

    /// Polls `check` until it holds or `within` passes; returns how long it took.
    pub fn wait_until(&self, what: &str, within: Duration, check: impl Fn() -> bool) -> Duration {
        let started = Instant::now();
        while !check() {
            assert!(started.elapsed() < within, "{what}: not within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        started.elapsed()
    }
}

impl Drop for MeshLab {
    fn drop(&mut self) {
        self.kill_master();
        for (_, child) in &mut self.minions {
            let _ = child.kill();
            let _ = child.wait();
        }
        for host in self.hosts.iter().chain(std::iter::once(&"hub".to_string())) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.namespace(host)])
                .status();
        }
        for host in &self.hosts {
            let _ =
                std::fs::remove_file(format!("/var/run/wireguard/{}.sock", self.interface(host)));
        }
    }
}

fn sh(script: &str) {
    let output = Command::new("sh").args(["-c", script]).output().unwrap();
    assert_success(&output, script);
}
