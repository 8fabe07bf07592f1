//! GitRepository objects against a real master, real minions and real git
//! repositories made here: a push runs the `on_push` TaskBooks (with the files of the
//! pushed commit on the nodes) and the job records the commit; an invalid commit is a
//! `git.invalid` event with the file:line:column and runs nothing; fetch errors are
//! reported once; a signed webhook fetches at once, a badly signed one is refused;
//! `include: {repo}` and `weft run taskbook --repo` read the fetched commit; a commit
//! crafted to write outside its folder is refused; a refused commit runs none of the
//! inputs (computed variables) its other TaskBooks need.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::cluster::{assert_success, Cluster};
use common::git::{commit_crafted_tree, git, Sshd};
use common::{stderr, stdout};
use serde_json::Value;
use sha2::{Digest, Sha256};

const NODES: [&str; 2] = ["a", "b"];
/// How long a fetch and its run may take to show before a test gives up.
const DEADLINE: Duration = Duration::from_secs(60);

/// A bare repository and a work clone that pushes to it.
struct Repo {
    bare: PathBuf,
    work: PathBuf,
}

impl Repo {
    fn new(root: &Path, name: &str) -> Repo {
        let bare = root.join(format!("{name}.git"));
        let work = root.join(format!("{name}-work"));
        std::fs::create_dir_all(&bare).unwrap();
        git(&bare, &["init", "--bare", "-b", "main"]);
        git(
            root,
            &[
                "clone",
                "-q",
                bare.to_str().unwrap(),
                work.to_str().unwrap(),
            ],
        );
        git(&work, &["checkout", "-q", "-b", "main"]);
        Repo { bare, work }
    }

    fn url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    /// Writes the files, commits and pushes; returns the commit id.
    fn push(&self, files: &[(&str, &str)], message: &str) -> String {
        for (path, content) in files {
            let path = self.work.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", message]);
        git(&self.work, &["push", "-q", "origin", "main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

/// A TaskBook that copies `files/motd` from its own folder onto every node.
fn motd_taskbook(out: &Path) -> String {
    format!(
        "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {{name: motd}}\nspec:\n  steps:\n    - nodes: {{all: true}}\n      tasks:\n        - name: motd\n          copy: {{src: motd, dest: \"{}/{{{{ node.name }}}}\"}}\n",
        out.display()
    )
}

fn apply(cluster: &Cluster, name: &str, yaml: &str) {
    let path = cluster.dir.path().join(name);
    std::fs::write(&path, yaml).unwrap();
    let output = cluster.admin(&["apply", "-f", path.to_str().unwrap()]);
    assert_success(&output, &format!("apply {name}"));
}

/// Polls `probe` until it gives a value; fails with the master's log at the deadline.
fn wait_for<T>(cluster: &Cluster, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {DEADLINE:?}\nmaster log:\n{}",
            cluster.master_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every job's detail (`weft job show -o json`), newest first.
fn job_details(cluster: &Cluster) -> Vec<Value> {
    let jobs = cluster.admin_json(&["jobs"]);
    jobs.as_array()
        .unwrap()
        .iter()
        .map(|job| cluster.admin_json(&["job", "show", job["job_id"].as_str().unwrap()]))
        .collect()
}

/// The finished job that read `repo` at `commit`.
fn wait_for_job(cluster: &Cluster, repo: &str, commit: &str) -> Value {
    wait_for(
        cluster,
        &format!("a finished job of {repo} at {commit}"),
        || {
            job_details(cluster)
                .into_iter()
                .find(|job| job["commits"][repo] == commit && job["state"] != "running")
        },
    )
}

fn events(cluster: &Cluster, event_type: &str) -> Vec<Value> {
    let output = cluster.admin(&[
        "events", "--type", event_type, "-o", "json", "-n", "default",
    ]);
    assert_success(&output, "events");
    stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn repo_status(cluster: &Cluster, name: &str) -> Value {
    cluster.admin_json(&["get", "gitrepositories", name])["status"].clone()
}

fn read(path: PathBuf) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// A cluster, the folder its TaskBooks write to, and the repository `site` whose first
/// commit copies `files/motd` ("v1") there on every node.
fn site_repository() -> (Cluster, PathBuf, Repo, String) {
    let cluster = Cluster::start(&NODES);
    let out = cluster.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let repo = Repo::new(cluster.dir.path(), "site");
    let first = repo.push(
        &[("site.yml", &motd_taskbook(&out)), ("files/motd", "v1")],
        "first",
    );
    (cluster, out, repo, first)
}

#[test]
fn a_push_runs_on_push_from_the_new_commit_an_invalid_one_runs_nothing_and_fetch_errors_show_once()
{
    let (cluster, out, repo, first) = site_repository();
    apply(
        &cluster,
        "repo.yml",
        &format!(
            "apiVersion: weft/v1\nkind: GitRepository\nmetadata: {{name: site}}\nspec:\n  url: {}\n  interval: 1s\n  on_push: [{{path: site.yml}}]\n",
            repo.url()
        ),
    );
    let job = wait_for_job(&cluster, "site", &first);
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert_eq!(job["origin"]["kind"], "GitRepository");
    assert_eq!(job["origin"]["name"], "site");

    let second = repo.push(&[("files/motd", "v2")], "motd v2");
    let job = wait_for_job(&cluster, "site", &second);
    assert_eq!(job["state"], "succeeded", "{job:#}");
    for node in NODES {
        assert_eq!(read(out.join(node)).as_deref(), Some("v2"), "node {node}");
    }
    let commit_event = wait_for(&cluster, "the git.commit event", || {
        events(&cluster, "git.commit")
            .into_iter()
            .find(|e| e["data"]["commit"] == second)
    });
    assert_eq!(commit_event["data"]["previous"], first.as_str());
    assert_eq!(commit_event["data"]["message"], "motd v2");
    assert_eq!(repo_status(&cluster, "site")["commit"], second.as_str());

    // Line 6 holds a tab where YAML wants spaces.
    let broken = motd_taskbook(&out).replace("    - nodes", "\t- nodes");
    let third = repo.push(&[("site.yml", &broken), ("files/motd", "v3")], "broken");
    let invalid = wait_for(&cluster, "the git.invalid event", || {
        events(&cluster, "git.invalid")
            .into_iter()
            .find(|e| e["data"]["commit"] == third)
    });
    let error = invalid["data"]["error"].as_str().unwrap();
    assert!(
        error.contains(".repos/site/site.yml:6:"),
        "the error names the file, line and column: {error}"
    );
    // The event is stored before any run of the commit would start, and none does.
    assert!(job_details(&cluster)
        .iter()
        .all(|job| job["commits"]["site"] != third));
    assert_eq!(read(out.join("a")).as_deref(), Some("v2"));

    // A repository that vanishes: its error is reported once, however often it recurs.
    std::fs::rename(&repo.bare, cluster.dir.path().join("moved.git")).unwrap();
    let failed_at = wait_for(&cluster, "a failed fetch", || {
        let status = repo_status(&cluster, "site");
        status["last_error"]
            .is_string()
            .then(|| status["fetched_unix_ms"].clone())
    });
    wait_for(&cluster, "two more failed fetches", || {
        let status = repo_status(&cluster, "site");
        (status["fetched_unix_ms"].as_u64() > failed_at.as_u64().map(|t| t + 1000)).then_some(())
    });
    let failures = events(&cluster, "git.fetch_failed");
    assert_eq!(failures.len(), 1, "{failures:#?}");
    assert_eq!(failures[0]["data"]["repo"], "site");
    let status = repo_status(&cluster, "site");
    assert_eq!(
        status["commit"],
        third.as_str(),
        "the last commit seen stays"
    );
    let listed = cluster.admin(&["get", "gitrepositories"]);
    assert_success(&listed, "get gitrepositories");
}

/// A commit runs whole or not at all, inputs included: when one of its `on_push`
/// TaskBooks is refused, the computed variable the others need never runs on its node,
/// and no job, internal or not, is started. Once the commit is fixed, the run names the
/// internal job that computed the variable.
#[test]
fn a_refused_on_push_commit_runs_no_computed_variable_and_starts_no_job() {
    let cluster = Cluster::start(&NODES);
    let marker = cluster.dir.path().join("computed-ran");
    apply(
        &cluster,
        "vars.yml",
        &format!(
            "apiVersion: weft/v1\nkind: Variables\nmetadata: {{name: v, namespace: default}}\nspec:\n  computed:\n    stamp: {{from_node: a, command: \"touch {} && echo stamped\"}}\n",
            marker.display()
        ),
    );
    let good = "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: good}\nspec:\n  steps:\n    - nodes: {all: true}\n      tasks:\n        - debug: {msg: \"{{ stamp }}\"}\n";
    let bad = "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: bad}\nspec:\n  steps:\n    - nodes: {names: [zed]}\n      tasks:\n        - ping: {}\n";
    let repo = Repo::new(cluster.dir.path(), "pair");
    let refused = repo.push(&[("good.yml", good), ("bad.yml", bad)], "one refused");
    apply(
        &cluster,
        "repo.yml",
        &format!(
            "apiVersion: weft/v1\nkind: GitRepository\nmetadata: {{name: pair}}\nspec:\n  url: {}\n  interval: 1s\n  on_push: [{{path: good.yml}}, {{path: bad.yml}}]\n",
            repo.url()
        ),
    );
    let invalid = wait_for(&cluster, "the git.invalid event", || {
        events(&cluster, "git.invalid")
            .into_iter()
            .find(|e| e["data"]["commit"] == refused)
    });
    let error = invalid["data"]["error"].as_str().unwrap();
    assert!(error.contains("names node `zed`"), "{error}");
    assert_eq!(cluster.admin_json(&["jobs"]), serde_json::json!([]));
    assert!(!marker.exists(), "the computed variable's command ran");

    let fixed = repo.push(&[("bad.yml", &bad.replace("[zed]", "[b]"))], "fixed");
    let job = wait_for(&cluster, "the good TaskBook's job", || {
        job_details(&cluster).into_iter().find(|job| {
            job["commits"]["pair"] == fixed
                && job["taskbook"] == "good"
                && job["state"] != "running"
        })
    });
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert!(marker.exists());
    let inputs = job["input_jobs"]
        .as_array()
        .expect("the job names its input jobs");
    assert_eq!(inputs.len(), 1, "{job:#}");
    assert_eq!(inputs[0]["node"], "a");
    assert_eq!(
        inputs[0]["purpose"],
        "compute stamp for Variables/default/v"
    );
    let internal = cluster.admin_json(&["job", "show", inputs[0]["job_id"].as_str().unwrap()]);
    assert_eq!(internal["taskbook"], "internal");
    assert_eq!(internal["state"], "succeeded");
    let text = cluster.admin(&["job", "show", job["job_id"].as_str().unwrap()]);
    assert_success(&text, "job show");
    let expected = format!(
        "input:    {} on a: compute stamp for Variables/default/v",
        inputs[0]["job_id"].as_str().unwrap()
    );
    assert!(stdout(&text).contains(&expected), "{}", stdout(&text));
}

/// HMAC-SHA256 (RFC 2104), written out so the test does not share the master's code.
fn hmac_sha256(key: &[u8], body: &[u8]) -> String {
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(body)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

/// `curl` POSTs `body` to the master's public listener (over HTTP/2); returns the HTTP
/// status.
fn post_hook(cluster: &Cluster, path: &str, body: &str, signature: Option<&str>) -> String {
    post_hook_with(cluster, path, body, signature, &[])
}

fn post_hook_with(
    cluster: &Cluster,
    path: &str,
    body: &str,
    signature: Option<&str>,
    curl_args: &[&str],
) -> String {
    let mut curl = Command::new("curl");
    curl.args(curl_args);
    curl.args([
        "-k",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "POST",
    ])
    .args([
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        body,
    ]);
    if let Some(signature) = signature {
        curl.args(["-H", &format!("X-Hub-Signature-256: {signature}")]);
    }
    let output: Output = curl
        .arg(format!("https://{}{path}", cluster.endpoint))
        .output()
        .unwrap();
    stdout(&output)
}

#[test]
fn a_signed_webhook_fetches_at_once_and_a_badly_signed_one_is_refused() {
    let (cluster, out, repo, first) = site_repository();
    let key = "hook-key-Q8v2";
    apply(
        &cluster,
        "repo.yml",
        &format!(
            "apiVersion: weft/v1\nkind: Secret\nmetadata: {{name: hook}}\nspec: {{data: {{hmac: {key}}}}}\n---\napiVersion: weft/v1\nkind: GitRepository\nmetadata: {{name: site}}\nspec:\n  url: {}\n  interval: 1h\n  webhook_secret: {{secret: hook, key: hmac}}\n  on_push: [{{path: site.yml}}]\n",
            repo.url()
        ),
    );
    // A new object is fetched at once, whatever its interval.
    wait_for_job(&cluster, "site", &first);

    let second = repo.push(&[("files/motd", "v2")], "motd v2");
    let body = r#"{"ref":"refs/heads/main"}"#;
    let hook = "/hooks/git/default/site";
    let signature = format!("sha256={}", hmac_sha256(key.as_bytes(), body.as_bytes()));
    let wrong = format!("sha256={}", hmac_sha256(b"not-the-key", body.as_bytes()));
    assert_eq!(post_hook(&cluster, hook, body, Some(&wrong)), "401");
    assert_eq!(post_hook(&cluster, hook, body, None), "401");
    assert_eq!(post_hook(&cluster, hook, "{}", Some(&signature)), "401");
    assert_eq!(
        post_hook(&cluster, "/hooks/git/default/nope", body, Some(&signature)),
        "404"
    );
    assert_eq!(repo_status(&cluster, "site")["commit"], first.as_str());
    // As a sender that speaks HTTP/1.1 and names no ALPN protocol.
    let http1 = ["--http1.1", "--no-alpn"];
    assert_eq!(
        post_hook_with(&cluster, hook, body, Some(&signature), &http1),
        "202"
    );
    let job = wait_for_job(&cluster, "site", &second);
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert_eq!(read(out.join("b")).as_deref(), Some("v2"));

    let log = cluster.master_log();
    assert_eq!(
        log.matches("verified GitRepository webhook").count(),
        1,
        "{log}"
    );
    assert_eq!(log.matches("webhook refused").count(), 3, "{log}");
    assert!(!log.contains(key), "the webhook key is never logged");
}

#[test]
fn includes_and_run_taskbook_repo_read_the_last_fetched_commit() {
    let cluster = Cluster::start(&NODES);
    let out = cluster.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let repo = Repo::new(cluster.dir.path(), "infra");
    let commit = repo.push(
        &[
            ("taskbooks/base.yml", &motd_taskbook(&out)),
            ("taskbooks/files/motd", "from infra"),
        ],
        "base",
    );
    apply(
        &cluster,
        "repo.yml",
        &format!(
            "apiVersion: weft/v1\nkind: GitRepository\nmetadata: {{name: infra}}\nspec: {{url: {}, interval: 1h}}\n",
            repo.url()
        ),
    );
    wait_for(&cluster, "the first fetch", || {
        (repo_status(&cluster, "infra")["commit"] == commit.as_str()).then_some(())
    });

    let site = common::cluster::taskbook(
        cluster.dir.path(),
        "site",
        &format!(
            "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {{name: site}}\nspec:\n  include:\n    - {{repo: infra, path: taskbooks/base.yml}}\n  steps:\n    - nodes: {{all: true}}\n      tasks:\n        - shell: \"cat {out}/{{{{ node.name }}}} > {out}/{{{{ node.name }}}}.seen\"\n",
            out = out.display()
        ),
    );
    let (report, output) = cluster.run(&site, &[]);
    assert_success(&output, "run with a repository include");
    let job = cluster.admin_json(&["job", "show", report["job"].as_str().unwrap()]);
    assert_eq!(job["commits"]["infra"], commit.as_str(), "{job:#}");
    assert_eq!(read(out.join("a.seen")).as_deref(), Some("from infra"));

    std::fs::remove_file(out.join("b")).unwrap();
    let from_repo = cluster.admin(&[
        "run",
        "taskbook",
        "--repo",
        "infra",
        "taskbooks/base.yml",
        "-o",
        "json",
    ]);
    assert_success(&from_repo, "run taskbook --repo");
    let report: Value = serde_json::from_slice(&from_repo.stdout).unwrap();
    let job = cluster.admin_json(&["job", "show", report["job"].as_str().unwrap()]);
    assert_eq!(job["commits"]["infra"], commit.as_str(), "{job:#}");
    assert_eq!(read(out.join("b")).as_deref(), Some("from infra"));

    let unknown = cluster.admin(&["run", "taskbook", "--repo", "nope", "site.yml"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        stderr(&unknown).contains("no GitRepository `nope` in namespace `default`"),
        "{}",
        stderr(&unknown)
    );
    let missing = cluster.admin(&["run", "taskbook", "--repo", "infra", "nope.yml"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("has no file `nope.yml`"),
        "{}",
        stderr(&missing)
    );

    // The interval is an hour: only `weft repo fetch` brings the next commit now.
    let next = repo.push(&[("taskbooks/files/motd", "next")], "next");
    assert_success(&cluster.admin(&["repo", "fetch", "infra"]), "repo fetch");
    wait_for(&cluster, "the fetch asked for", || {
        (repo_status(&cluster, "infra")["commit"] == next.as_str()).then_some(())
    });
    let unknown = cluster.admin(&["repo", "fetch", "nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        stderr(&unknown).contains("no GitRepository `nope`"),
        "{}",
        stderr(&unknown)
    );

    // A deleted repository's mirror goes with it.
    let mirror = cluster.master_dir().join("repos/default/infra.git");
    assert!(mirror.is_dir());
    assert_success(
        &cluster.admin(&["delete", "gitrepository", "infra"]),
        "delete",
    );
    wait_for(&cluster, "the mirror removed", || {
        (!mirror.exists()).then_some(())
    });
}

#[test]
fn an_ssh_repository_is_fetched_with_the_key_from_a_secret_once_its_host_is_known() {
    let sshd = match Sshd::start() {
        Ok(sshd) => sshd,
        Err(why) => return eprintln!("SKIPPED GitRepository over ssh: {why}"),
    };
    let (cluster, out, repo, first) = site_repository();
    let private_key = std::fs::read_to_string(sshd.client_key()).unwrap();
    let indented: String = private_key
        .lines()
        .map(|line| format!("      {line}\n"))
        .collect();
    apply(
        &cluster,
        "repo.yml",
        &format!(
            "apiVersion: weft/v1\nkind: Secret\nmetadata: {{name: deploy}}\nspec:\n  data:\n    id_ed25519: |\n{indented}---\napiVersion: weft/v1\nkind: GitRepository\nmetadata: {{name: site}}\nspec:\n  url: {}\n  interval: 1h\n  ssh_key: {{secret: deploy, key: id_ed25519}}\n  on_push: [{{path: site.yml}}]\n",
            sshd.url(&repo.bare)
        ),
    );
    let error = wait_for(&cluster, "the unknown host refused", || {
        repo_status(&cluster, "site")["last_error"]
            .as_str()
            .map(str::to_string)
    });
    assert!(error.contains("known_hosts"), "{error}");
    assert!(job_details(&cluster).is_empty(), "nothing ran");

    sshd.trust_in(&cluster.dir.path().join("home"));
    assert_success(&cluster.admin(&["repo", "fetch", "site"]), "repo fetch");
    let job = wait_for_job(&cluster, "site", &first);
    assert_eq!(job["state"], "succeeded", "{job:#}\nsshd:\n{}", sshd.log());
    for node in NODES {
        assert_eq!(read(out.join(node)).as_deref(), Some("v1"), "node {node}");
    }
    let key_line = private_key.lines().nth(1).unwrap();
    assert!(
        !cluster.master_log().contains(key_line),
        "the private key reached the master's log"
    );
}

#[test]
fn a_commit_whose_names_would_leave_its_folder_is_refused_and_nothing_is_written() {
    let cluster = Cluster::start(&[]);
    let repo = Repo::new(cluster.dir.path(), "crafted");
    apply(
        &cluster,
        "repo.yml",
        &format!(
            "apiVersion: weft/v1\nkind: GitRepository\nmetadata: {{name: crafted}}\nspec: {{url: {}, interval: 1h}}\n",
            repo.url()
        ),
    );
    let base = "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: base}\nspec:\n  steps:\n    - nodes: {all: true}\n      tasks:\n        - ping:\n";
    let site = common::cluster::taskbook(
        cluster.dir.path(),
        "site",
        "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: site}\nspec:\n  include:\n    - {repo: crafted, path: base.yml}\n  steps:\n    - nodes: {all: true}\n      tasks:\n        - ping:\n",
    );
    // The master writes a repository's files under its data directory for a run: an
    // absolute name would land anywhere, `..` one level up.
    let outside = cluster.dir.path().join("outside");
    let absolute = outside.display().to_string();
    for name in [absolute.as_str(), ".."] {
        let commit = commit_crafted_tree(&repo.bare, &[("base.yml", base), (name, "planted")]);
        assert_success(&cluster.admin(&["repo", "fetch", "crafted"]), "repo fetch");
        wait_for(&cluster, "the crafted commit fetched", || {
            (repo_status(&cluster, "crafted")["commit"] == commit.as_str()).then_some(())
        });
        let expected = format!("the commit holds an entry named {name:?} at its top");
        let included = cluster.admin(&["run", "taskbook", site.to_str().unwrap()]);
        let from_repo = cluster.admin(&["run", "taskbook", "--repo", "crafted", "base.yml"]);
        for output in [included, from_repo] {
            assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
            assert!(
                stderr(&output).contains(&expected),
                "{name}: {}",
                stderr(&output)
            );
        }
        assert!(!outside.exists(), "{name}: a file was planted outside");
    }
}
