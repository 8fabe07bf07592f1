//! A real cluster on loopback for end-to-end tests: a `weft master` process and
//! `weft minion` processes, each with its own data directory, joined with a real token.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::weft;

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub endpoint: String,
    /// Set for every `weft` command but the minions' (`init`, the master, the CLI).
    env: Vec<(String, String)>,
    master: Option<Child>,
    minions: Vec<(String, Child)>,
}

/// How long a cluster may take to come up or settle before a test gives up.
const SETTLE: Duration = Duration::from_secs(30);

impl Cluster {
    /// A master and `names.len()` minions, all online. Each minion gets the label
    /// `index=<i>` and `role=<web|db>` (the first is `db`).
    pub fn start(names: &[&str]) -> Cluster {
        Self::start_with(names, &[])
    }

    /// Like [`Cluster::start`], with more flags for `weft master init` (e.g. the store).
    pub fn start_with(names: &[&str], init_args: &[&str]) -> Cluster {
        Self::start_from(Self::init(init_args), names)
    }

    /// Like [`Cluster::start`], with environment variables for `init`, the master and the
    /// CLI (e.g. the test-only certificate lifetime).
    pub fn start_with_env(names: &[&str], env: &[(&str, &str)]) -> Cluster {
        Self::start_from(Self::init_with_env(&[], env), names)
    }

    fn start_from(mut cluster: Cluster, names: &[&str]) -> Cluster {
        cluster.start_master();
        if !names.is_empty() {
            let token = cluster.token(names.len() as u32);
            for (index, name) in names.iter().enumerate() {
                let role = if index == 0 { "db" } else { "web" };
                cluster.join(name, &token, &format!("index={index},role={role}"));
                cluster.start_minion(name);
            }
            cluster.wait_online(names);
        }
        cluster
    }

    /// A master's directory made by `weft master init INIT_ARGS`, with no master running.
    pub fn init(init_args: &[&str]) -> Cluster {
        Self::init_with_env(init_args, &[])
    }

    pub fn init_with_env(init_args: &[&str], env: &[(&str, &str)]) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = super::free_port();
        let cluster = Cluster {
            endpoint: format!("127.0.0.1:{port}"),
            env: env
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
            dir,
            master: None,
            minions: Vec::new(),
        };
        let init = cluster
            .command(&["master", "init", "--cluster-name", "test", "--name", "m1"])
            .arg("--data-dir")
            .arg(cluster.master_dir())
            .arg("--public-endpoint")
            .arg(&cluster.endpoint)
            .args(init_args)
            .output()
            .unwrap();
        assert_success(&init, "master init");
        cluster
    }

    pub fn master_dir(&self) -> PathBuf {
        self.dir.path().join("master")
    }

    pub fn minion_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("minion-{name}"))
    }

    pub fn admin_config(&self) -> PathBuf {
        self.master_dir().join("admin.yaml")
    }

    /// `weft ARGS` with HOME inside the cluster's directory (nothing lands in the real one).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = weft();
        command
            .env("HOME", self.dir.path().join("home"))
            .env_remove("WEFT_CONFIG")
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .args(args);
        command
    }

    /// An admin command (with `--config`).
    pub fn admin(&self, args: &[&str]) -> Output {
        self.command(args)
            .arg("--config")
            .arg(self.admin_config())
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

    pub fn start_master(&mut self) {
        self.start_master_with(&[]);
    }

    /// `weft master` with `args` added to the test's usual ones.
    pub fn start_master_with(&mut self, args: &[&str]) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("master.log"))
            .unwrap();
        let child = self
            .command(&["master", "--vpn", "off"])
            .args(args)
            .arg("--data-dir")
            .arg(self.master_dir())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.master = Some(child);
        let deadline = Instant::now() + SETTLE;
        while !self.admin(&["nodes"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "the master did not come up:\n{}",
                self.master_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `weft master` on this directory expecting it to refuse to start: returns
    /// its exit status and what it wrote to stderr. Fails if it is still running after
    /// the settle time (it started).
    pub fn master_refusal(&self) -> (Option<i32>, String) {
        let log = self.dir.path().join("refused-master.log");
        let mut child = self
            .command(&["master", "--vpn", "off"])
            .arg("--data-dir")
            .arg(self.master_dir())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + SETTLE;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the master started instead of refusing:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        (status.code(), std::fs::read_to_string(&log).unwrap())
    }

    /// SIGKILL: no chance to tidy up.
    pub fn kill_master(&mut self) {
        if let Some(mut master) = self.master.take() {
            master.kill().unwrap();
            master.wait().unwrap();
        }
    }

    pub fn master_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("master.log")).unwrap_or_default()
    }

    pub fn token(&self, uses: u32) -> String {
        let output = self.admin(&["token", "create", "--uses", &uses.to_string()]);
        assert_success(&output, "token create");
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    }

    pub fn try_join(&self, name: &str, token: &str, labels: &str) -> Output {
        let mut command = self.command(&[
            "minion", "join", "--vpn", "off", "--name", name, "--token", token,
        ]);
        if !labels.is_empty() {
            command.args(["--labels", labels]);
        }
        command
            .arg("--data-dir")
            .arg(self.minion_dir(name))
            .output()
            .unwrap()
    }

    pub fn join(&self, name: &str, token: &str, labels: &str) {
        assert_success(&self.try_join(name, token, labels), &format!("join {name}"));
    }

    /// Where the minion `name` looks for custom modules: its own, not this machine's.
    pub fn minion_modules(&self, name: &str) -> PathBuf {
        self.minion_dir(name).join("modules")
    }

    pub fn start_minion(&mut self, name: &str) {
        self.start_minion_under(name, &[]);
    }

    /// Starts the minion as the last arguments of `wrapper` (e.g. `unshare --mount ...`),
    /// which must exec them.
    pub fn start_minion_under(&mut self, name: &str, wrapper: &[&str]) {
        let log =
            std::fs::File::create(self.dir.path().join(format!("minion-{name}.log"))).unwrap();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(env!("CARGO_BIN_EXE_weft"));
                command
            }
            None => weft(),
        };
        let child = command
            .env("HOME", self.dir.path().join("home"))
            .env("NO_COLOR", "1")
            .env_remove("WEFT_CONFIG")
            .arg("minion")
            .arg("--data-dir")
            .arg(self.minion_dir(name))
            .env("RUST_LOG", "info")
            .env("WEFT_MODULE_PATH", self.minion_modules(name))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.minions.push((name.to_string(), child));
    }

    pub fn minion_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("minion-{name}.log")))
            .unwrap_or_default()
    }

    pub fn minion_pid(&self, name: &str) -> Option<u32> {
        self.minions
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, child)| child.id())
    }

    pub fn kill_minion(&mut self, name: &str) {
        if let Some(position) = self.minions.iter().position(|(n, _)| n == name) {
            let (_, mut child) = self.minions.remove(position);
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn nodes(&self) -> Vec<Value> {
        self.admin_json(&["nodes"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn wait_online(&self, names: &[&str]) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let nodes = self.nodes();
            let online = |name: &&str| {
                nodes
                    .iter()
                    .any(|n| n["name"] == **name && n["online"] == true)
            };
            if names.iter().all(online) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nodes {names:?} not online: {nodes:?}\n{}",
                self.master_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `weft run taskbook FILE -o json ARGS...`: (report, exit status).
    pub fn run(&self, file: &Path, args: &[&str]) -> (Value, Output) {
        let mut all = vec!["run", "taskbook", file.to_str().unwrap(), "-o", "json"];
        all.extend_from_slice(args);
        let output = self.admin(&all);
        let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "no JSON report ({e}); exit {:?}\nstderr:\n{}\nmaster log:\n{}",
                output.status.code(),
                String::from_utf8_lossy(&output.stderr),
                self.master_log()
            )
        });
        (report, output)
    }
}

impl Cluster {
    /// `weft run taskbook FILE ARGS...` in the background, for tests that act mid-run.
    pub fn spawn_run(&self, file: &Path, args: &[&str]) -> std::thread::JoinHandle<Output> {
        let mut command = self.command(&["run", "taskbook", file.to_str().unwrap()]);
        command.args(args).arg("--config").arg(self.admin_config());
        std::thread::spawn(move || command.output().unwrap())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.minions {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.kill_master();
    }
}

pub fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Writes a TaskBook into its own folder and returns its path.
pub fn taskbook(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let folder = dir.join(format!("taskbook-{name}"));
    std::fs::create_dir_all(&folder).unwrap();
    let path = folder.join("site.yml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// A TaskBook whose first step is slow enough to lose its master in, and whose second
/// step must never start once it has.
const INTERRUPTIBLE_TASKBOOK: &str = r#"apiVersion: weft/v1
kind: TaskBook
metadata: {name: long}
spec:
  steps:
    - name: three tasks
      tasks:
        - name: first
          shell: "echo first >> {{ out }}/{{ node.name }}"
        - name: slow
          shell: "sleep 3; echo slow >> {{ out }}/{{ node.name }}"
        - name: last
          shell: "echo last >> {{ out }}/{{ node.name }}"
    - name: never reached
      tasks:
        - name: after
          shell: "echo after >> {{ out }}/{{ node.name }}"
"#;

/// A run of [`INTERRUPTIBLE_TASKBOOK`] started with `run` (`weft run taskbook` and its
/// credentials), once every node is inside the slow task: where the nodes write, and
/// the CLI's output when it ends.
pub fn start_interruptible_run(
    cluster: &Cluster,
    mut run: Command,
    nodes: &[&str],
) -> (PathBuf, std::thread::JoinHandle<Output>) {
    let out = cluster.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let book = taskbook(cluster.dir.path(), "long", INTERRUPTIBLE_TASKBOOK);
    run.arg(&book)
        .args(["-e", &format!("out={}", out.display())]);
    let handle = std::thread::spawn(move || run.output().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    while nodes.iter().any(|n| !out.join(n).exists()) {
        assert!(Instant::now() < deadline, "the run did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    (out, handle)
}

/// The interrupted job, once the nodes' late results are in: every node finished the
/// first step, none started the second, and each task ran exactly once.
pub fn assert_interrupted_once(job: &Value, out: &Path, nodes: &[&str]) {
    assert_eq!(job["state"], "interrupted", "{job:#}");
    assert!(
        job["message"].as_str().unwrap().contains("master stopped"),
        "{job:#}"
    );
    for record in job["node_steps"].as_array().unwrap() {
        assert_eq!(record["step_index"], 0, "a later step started: {job:#}");
        assert_eq!(record["state"], "ok", "{job:#}");
    }
    for node in nodes {
        let lines = std::fs::read_to_string(out.join(node)).unwrap();
        assert_eq!(
            lines, "first\nslow\nlast\n",
            "{node} ran a task twice or skipped one"
        );
    }
}

/// A one-task TaskBook run on node-a succeeds: the cluster's certificates all work.
pub fn assert_one_task_runs_on_node_a(cluster: &Cluster, what: &str) {
    let book = taskbook(
        cluster.dir.path(),
        "hello",
        r#"apiVersion: weft/v1
kind: TaskBook
metadata: {name: hello}
spec:
  steps:
    - name: hello
      nodes: {names: [node-a]}
      tasks:
        - name: say
          command: echo hello
"#,
    );
    let (report, output) = cluster.run(&book, &[]);
    assert_success(&output, what);
    assert_eq!(report["failed"], false, "{what}: {report:#}");
    assert_eq!(report["results"].as_array().unwrap().len(), 1, "{report:#}");
}
