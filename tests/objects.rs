//! Cluster objects against a real master and real minions: `weft apply`, `get`,
//! `describe`, `delete`, `node label`, optimistic concurrency, NodeGroups in steps,
//! stored TaskBooks, cluster variables (static, templated, computed on a node) and
//! secrets that reach the tasks that read them and show nowhere else.

mod common;

use std::path::Path;
use std::process::Output;

use common::cluster::{assert_success, Cluster};
use common::etcd::{missing_etcd, EtcdCluster};
use common::{stderr, stdout};
use serde_json::Value;

const NODES: [&str; 3] = ["ca-1", "web-1", "web-2"];
const PASSWORD: &str = "pw-Zx81-unlikely-anywhere";
/// A private key as Secrets most often hold one: many lines, each of which must stay
/// hidden on its own (a diff shows them one by one).
const PEM_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDZq7Lr2uXWkQ9a
Jm3vT0Gd8sFq4vYc1pLx7nKoE2rHhB6tWz9yN5aUeR3cMiVbXfA0lOgS8jPdQ4Tw
mK7uY1Hn2ZsCxLr9vBe6WqoN3aFt5gJpD0hXiE8lMbKcV4yRzU7OfGsTn1dQw2Ae
-----END PRIVATE KEY-----
";

fn apply(cluster: &Cluster, file: &Path) -> Output {
    cluster.admin(&["apply", "-f", file.to_str().unwrap()])
}

fn write(cluster: &Cluster, name: &str, content: &str) -> std::path::PathBuf {
    let path = cluster.dir.path().join(name);
    std::fs::write(&path, content).unwrap();
    path
}

#[test]
fn objects_are_applied_listed_described_versioned_and_deleted() {
    let cluster = Cluster::start(&NODES);
    let fleet = common::repo_path("examples/fleet.yml");
    let first = apply(&cluster, &fleet);
    assert_success(&first, "apply fleet.yml");
    assert!(
        stdout(&first).contains("namespace/prod created"),
        "{}",
        stdout(&first)
    );
    assert!(stdout(&first).contains("secret/db -n prod created"));
    let again = apply(&cluster, &fleet);
    assert_success(&again, "apply fleet.yml again");
    assert!(!stdout(&again).contains("created") && !stdout(&again).contains("configured"));

    let namespaces: Vec<String> = cluster
        .admin_json(&["get", "namespaces"])
        .as_array()
        .unwrap()
        .iter()
        .map(|ns| ns["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(namespaces, ["default", "prod", "staging", "system"]);
    let secret = cluster.admin(&["get", "secret", "db", "-n", "prod", "-o", "yaml"]);
    assert_success(&secret, "get secret");
    assert!(stdout(&secret).contains("password: \"********\""));
    assert!(!stdout(&secret).contains("change-me"));

    // Two admins edit the same object from the same read: the second is refused.
    let read = cluster.admin(&["get", "variables", "app", "-n", "prod", "-o", "yaml"]);
    let four = write(
        &cluster,
        "four.yml",
        &stdout(&read).replace("replicas: 3", "replicas: 4"),
    );
    let five = write(
        &cluster,
        "five.yml",
        &stdout(&read).replace("replicas: 3", "replicas: 5"),
    );
    assert_success(&apply(&cluster, &four), "first edit");
    let refused = apply(&cluster, &five);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("changed since it was read"),
        "{}",
        stderr(&refused)
    );
    let app = cluster.admin_json(&["get", "variables", "app", "-n", "prod"]);
    assert_eq!(app["spec"]["vars"]["replicas"], 4);
    assert_eq!(app["metadata"]["generation"], 2);

    // Labels change; the NodeGroup follows, in `describe` and in a step.
    let labeled = cluster.admin(&["node", "label", "web-2", "role=edge", "index-"]);
    assert_success(&labeled, "node label");
    let group = write(
        &cluster,
        "group.yml",
        "apiVersion: weft/v1\nkind: NodeGroup\nmetadata: {name: edge}\nspec: {selector: {role: edge}, nodes: [ca-1]}\n",
    );
    assert_success(&apply(&cluster, &group), "apply NodeGroup");
    let described = cluster.admin(&["describe", "ng", "edge"]);
    assert!(
        stdout(&described).contains("Nodes now:         ca-1, web-2"),
        "{}",
        stdout(&described)
    );
    let book = write(
        &cluster,
        "edge.yml",
        "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: edge}\nspec:\n  steps:\n    - name: edge nodes\n      nodes: {group: edge}\n      tasks:\n        - ping: {}\n",
    );
    // Stored, then run by name (in `default`, where fleet.yml's computed CA, which
    // needs a file on ca-1, is not bound).
    assert_success(&apply(&cluster, &book), "apply TaskBook");
    let run = cluster.admin(&["run", "taskbook", "edge", "-o", "json"]);
    assert_success(&run, "run stored TaskBook");
    let report: Value = serde_json::from_slice(&run.stdout).unwrap();
    let mut nodes: Vec<&str> = report["recap"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["node"].as_str().unwrap())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["ca-1", "web-2"]);
    // fleet.yml's Config rolls steps without a rollout of their own out 25% at a time:
    // one of the two nodes, then the other.
    let job = cluster.admin_json(&["job", "show", report["job"].as_str().unwrap()]);
    let mut spans: Vec<(u64, u64)> = job["node_steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let dispatched = s["dispatched_unix_ms"].as_u64().unwrap();
            (dispatched, s["finished_unix_ms"].as_u64().unwrap())
        })
        .collect();
    spans.sort();
    assert!(spans[1].0 >= spans[0].1, "both nodes ran at once: {job:#}");
    // The Config also bounds job history and sets the tokens' default lifetime.
    let config = write(
        &cluster,
        "config.yml",
        "apiVersion: weft/v1\nkind: Config\nmetadata: {name: default}\nspec:\n  token_ttl: 2h\n  job_retention: {max_jobs: 1, max_age: 1d}\n",
    );
    assert_success(&apply(&cluster, &config), "apply Config");
    assert_success(&cluster.admin(&["run", "taskbook", "edge"]), "second run");
    assert_eq!(cluster.admin_json(&["jobs"]).as_array().unwrap().len(), 1);
    let token = cluster.admin(&["token", "create"]);
    assert_success(&token, "token create");
    let until = stderr(&token)
        .split_whitespace()
        .nth(3)
        .unwrap()
        .to_string();
    let until = std::process::Command::new("date")
        .args(["-u", "+%s", "-d", &until])
        .output()
        .unwrap();
    let until: u64 = stdout(&until).trim().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!((7100..=7200).contains(&(until - now)), "{}", stderr(&token));
    let missing = cluster.admin(&["run", "taskbook", "edge", "-n", "staging"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("no TaskBook `edge` in namespace `staging`"));

    let kept = cluster.admin(&["delete", "namespace", "prod"]);
    assert_eq!(kept.status.code(), Some(1));
    assert!(stderr(&kept).contains("still holds"), "{}", stderr(&kept));
    assert_success(&cluster.admin(&["delete", "taskbook", "edge"]), "delete");
    let gone = cluster.admin(&["get", "taskbook", "edge"]);
    assert_eq!(gone.status.code(), Some(1));
}

/// Each malformed object is refused with its file:line and field, and nothing of the
/// apply is stored, not even its valid objects.
#[test]
fn malformed_objects_are_refused_with_their_place_and_nothing_is_stored() {
    let cluster = Cluster::start(&[]);
    let valid = "apiVersion: weft/v1\nkind: Namespace\nmetadata: {name: fine}\n---\n";
    let cases = [
        ("apiVersion: weft/v2\nkind: Namespace\nmetadata: {name: a}\n", "5:13", "unsupported apiVersion"),
        ("apiVersion: weft/v1\nkind: Namspace\nmetadata: {name: a}\n", "", "did you mean `Namespace`"),
        ("apiVersion: weft/v1\nkind: NodeGroup\nmetadata: {name: g}\nspec: {selector: {\"bad key!\": x}}\n", "spec.selector", "is not valid"),
        ("apiVersion: weft/v1\nkind: Variables\nmetadata: {name: v}\nspec:\n  computed:\n    a: {template: \"{{ b }}\"}\n    b: {template: \"{{ a }}\"}\n", "spec.computed.a", "cycle: a -> b -> a"),
        ("apiVersion: weft/v1\nkind: Variables\nmetadata: {name: v}\nspec:\n  computed:\n    a: {from_node: n1}\n", "spec.computed.a", "`from_node` with `command`"),
        ("apiVersion: weft/v1\nkind: ClusterVariables\nmetadata: {name: cv}\n---\napiVersion: weft/v1\nkind: ClusterVariablesBinding\nmetadata: {name: b}\nspec: {cluster_variables: cv, namespaces: [nowhere]}\n", "spec.namespaces", "namespace `nowhere`, which does not exist"),
        ("apiVersion: weft/v1\nkind: Variables\nmetadata: {name: v, namespace: nowhere}\n", "metadata.namespace", "namespace `nowhere` does not exist"),
        ("apiVersion: weft/v1\nkind: Namespace\nmetadata: {name: Bad_Name}\n", "metadata.name", "not a valid name"),
        ("apiVersion: weft/v1\nkind: Config\nmetadata: {name: c, namespace: prod}\n", "metadata.namespace", "cluster-wide"),
        ("apiVersion: weft/v1\nkind: Config\nmetadata: {name: c}\nspec: {step_timeout: 100ms}\n", "spec.step_timeout", "`step_timeout` is at least 1s"),
        ("apiVersion: weft/v1\nkind: Secret\nmetadata: {name: s}\nspec: {data: {k: [1, 2]}}\n", "spec.data.k", "expected a string"),
        ("apiVersion: weft/v1\nkind: Node\nmetadata: {name: n}\n", "kind", "registered by `weft minion join`"),
        ("apiVersion: weft/v1\nkind: Namespace\nmetadata: {name: x, resource_version: abc}\n", "metadata.resource_version", "not a number"),
        ("apiVersion: weft/v1\nkind: Namespace\nmetadata: {name: x}\n  bad: [indent\n", "", "YAML syntax error"),
        ("apiVersion: weft/v1\nkind: GitRepository\nmetadata: {name: r}\nspec: {url: \"http://git.example.com/r.git\"}\n", "8:13: `spec.url`", "uses http://, which is unauthenticated"),
        ("apiVersion: weft/v1\nkind: GitRepository\nmetadata: {name: r}\nspec: {url: \"git://git.example.com/r.git\"}\n", "8:13: `spec.url`", "uses git://, which is unauthenticated"),
        ("apiVersion: weft/v1\nkind: GitRepository\nmetadata: {name: r}\nspec: {url: \"ext::sh -c touch% /tmp/pwned\"}\n", "8:13: `spec.url`", "`ext::` transport, which runs a program"),
        ("apiVersion: weft/v1\nkind: GitRepository\nmetadata: {name: r}\nspec: {url: /srv/git/r.git}\n", "8:13: `spec.url`", "is a local path; write it as file:///srv/git/r.git"),
    ];
    let before = cluster.admin_json(&["get", "namespaces"]);
    for (index, (case, field, message)) in cases.iter().enumerate() {
        let file = write(
            &cluster,
            &format!("bad-{index}.yml"),
            &format!("{valid}{case}"),
        );
        let output = apply(&cluster, &file);
        let error = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "case {index}: {error}");
        assert!(
            error.contains(file.to_str().unwrap()),
            "case {index} names no file: {error}"
        );
        assert!(
            error.contains(field) && error.contains(message),
            "case {index}: {error}"
        );
    }
    assert_eq!(cluster.admin_json(&["get", "namespaces"]), before);
}

#[test]
fn variables_and_secrets_reach_the_tasks_that_read_them_and_secrets_show_nowhere_else() {
    variables_and_secrets(Cluster::start(&NODES), None);
}

/// The same on etcd, whose data files (its bbolt database and write-ahead log) are
/// searched for the plaintext too.
#[test]
fn on_etcd_secrets_are_sealed_in_its_data_files_too() {
    if let Some(reason) = missing_etcd() {
        eprintln!("SKIPPED on_etcd_secrets_are_sealed_in_its_data_files_too: {reason}");
        return;
    }
    let etcd = EtcdCluster::start(1);
    let init_args = etcd.init_args();
    let init_args: Vec<&str> = init_args.iter().map(String::as_str).collect();
    let cluster = Cluster::start_with(&NODES, &init_args);
    variables_and_secrets(cluster, Some(etcd.dir.path()));
}

fn variables_and_secrets(cluster: Cluster, raw_store: Option<&Path>) {
    // The CA lives on ca-1 only; its content is a computed variable for everyone.
    let ca_file = cluster.dir.path().join("ca-1.pem");
    std::fs::write(&ca_file, "CA-PEM-OF-CA-1\n").unwrap();
    let out = cluster.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let objects = write(
        &cluster,
        "objects.yml",
        &format!(
            r#"apiVersion: weft/v1
kind: Namespace
metadata: {{name: prod}}
---
apiVersion: weft/v1
kind: Config
metadata: {{name: default}}
spec: {{vars: {{ntp: pool.ntp.org, port: 1}}}}
---
apiVersion: weft/v1
kind: ClusterVariables
metadata: {{name: dns}}
spec:
  vars: {{dns_server: 10.77.0.53, port: 2}}
  computed:
    upstream: {{template: "{{{{ dns_server }}}}:53"}}
    ca_pem: {{from_node: ca-1, command: "cat {ca}"}}
---
apiVersion: weft/v1
kind: ClusterVariablesBinding
metadata: {{name: dns-prod}}
spec: {{cluster_variables: dns, namespaces: [prod]}}
---
apiVersion: weft/v1
kind: Variables
metadata: {{name: app, namespace: prod}}
spec: {{vars: {{port: 3}}}}
---
apiVersion: weft/v1
kind: NodeGroup
metadata: {{name: web}}
spec: {{selector: {{role: web}}, vars: {{workers: 4}}}}
---
apiVersion: weft/v1
kind: Secret
metadata: {{name: db, namespace: prod}}
spec: {{data: {{password: {PASSWORD}}}}}
---
apiVersion: weft/v1
kind: Secret
metadata: {{name: tls, namespace: prod}}
spec: {{data: {{key: {pem:?}}}}}
---
apiVersion: weft/v1
kind: TaskBook
metadata: {{name: app, namespace: prod}}
spec:
  steps:
    - name: config with the password
      nodes: {{group: web}}
      tasks:
        - name: app.conf
          copy:
            dest: "{out}/{{{{ node.name }}}}.conf"
            content: "ntp={{{{ ntp }}}} port={{{{ port }}}} dns={{{{ upstream }}}} workers={{{{ workers }}}} ca={{{{ ca_pem }}}} pw={{{{ secrets.db.password }}}}\n"
        - name: say it
          debug: {{msg: "the password is {{{{ secrets.db.password }}}}"}}
          register: said
    - name: no secrets here
      tasks:
        - ping: {{}}
"#,
            ca = ca_file.display(),
            out = out.display(),
            pem = PEM_KEY,
        ),
    );
    assert_success(&apply(&cluster, &objects), "apply");

    let set = cluster.admin(&["node", "vars", "web-1", "region=eu", "workers=8"]);
    assert_success(&set, "node vars");
    let vars = cluster.admin_json(&["vars", "web-1", "-n", "prod"]);
    assert_eq!(vars["vars"]["region"], "eu");
    assert_eq!(vars["origins"]["region"]["object"], "Node/web-1");
    // The node's own value beats its NodeGroup's, until it is removed.
    assert_eq!(vars["vars"]["workers"], 8);
    assert_success(
        &cluster.admin(&["node", "vars", "web-1", "workers-"]),
        "node vars -",
    );
    let vars = cluster.admin_json(&["vars", "web-1", "-n", "prod"]);
    assert_eq!(vars["vars"]["port"], 3);
    assert_eq!(vars["origins"]["port"]["object"], "Variables/prod/app");
    assert_eq!(vars["vars"]["ntp"], "pool.ntp.org");
    assert_eq!(vars["origins"]["ntp"]["level"], "config");
    assert_eq!(vars["vars"]["upstream"], "10.77.0.53:53");
    assert_eq!(vars["origins"]["upstream"]["computed"], "template");
    assert_eq!(vars["vars"]["ca_pem"], "CA-PEM-OF-CA-1");
    assert_eq!(vars["origins"]["ca_pem"]["computed"], "from_node");
    assert_eq!(vars["vars"]["workers"], 4);
    // Outside prod the binding does not apply.
    let default_vars = cluster.admin_json(&["vars", "web-1"]);
    assert!(default_vars["vars"].get("dns_server").is_none());

    let run = cluster.admin(&["run", "taskbook", "app", "-n", "prod", "-o", "json"]);
    assert_success(&run, "run app");
    for node in ["web-1", "web-2"] {
        let written = std::fs::read_to_string(out.join(format!("{node}.conf"))).unwrap();
        assert_eq!(
            written,
            format!("ntp=pool.ntp.org port=3 dns=10.77.0.53:53 workers=4 ca=CA-PEM-OF-CA-1 pw={PASSWORD}\n")
        );
    }
    let report = stdout(&run);
    assert!(report.contains("the password is ********"), "{report}");
    let job_id = serde_json::from_str::<Value>(&report).unwrap()["job"]
        .as_str()
        .unwrap()
        .to_string();
    let job = stdout(&cluster.admin(&["job", "show", &job_id, "-o", "json"]));
    let text_run = cluster.admin(&["run", "taskbook", "app", "-n", "prod", "--diff"]);
    let (pem_runs, pem_jobs) = write_pem_key(&cluster, &out);
    let events = stdout(&cluster.admin(&["events", "-o", "json"]));
    // Everything a person or a script could see, and everything stored.
    let mut seen: Vec<(String, String)> = vec![
        ("the run report".into(), report.clone()),
        ("the job record".into(), job),
        ("a text run".into(), stdout(&text_run) + &stderr(&text_run)),
        ("the key's runs".into(), pem_runs),
        ("the key's job records".into(), pem_jobs),
        ("the events".into(), events),
        ("the master log".into(), cluster.master_log()),
    ];
    for node in NODES {
        let log = cluster.dir.path().join(format!("minion-{node}.log"));
        seen.push((
            log.display().to_string(),
            std::fs::read_to_string(&log).unwrap(),
        ));
        // What nodes keep (identity, peer cache, unsent results) holds no secret.
        seen.extend(files_under(&cluster.minion_dir(node)));
    }
    // The store (sqlite file and its write-ahead log), keys, settings, scratch.
    seen.extend(files_under(&cluster.master_dir()));
    let store_files = match raw_store {
        Some(raw_store) => files_under(raw_store),
        None => files_under(&cluster.master_dir()),
    };
    // The search reads the stored objects: plain values are there to be found.
    assert!(store_files
        .iter()
        .any(|(_, text)| text.contains("10.77.0.53")));
    seen.extend(store_files);
    // Its BEGIN/END lines are in every PEM file, the nodes' own keys included.
    let pem_lines: Vec<&str> = PEM_KEY
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    for (what, text) in seen {
        assert!(!text.contains(PASSWORD), "the password shows in {what}");
        for line in &pem_lines {
            assert!(
                !text.contains(line),
                "a line of the key shows in {what}: {line}"
            );
        }
    }
}

/// Writes the key with `copy` and with `template`, from a TaskBook file, with `--diff`
/// in text and in JSON: (everything the runs printed, their job records).
fn write_pem_key(cluster: &Cluster, out: &Path) -> (String, String) {
    let folder = cluster.dir.path().join("pem");
    std::fs::create_dir_all(folder.join("templates")).unwrap();
    std::fs::write(
        folder.join("templates/key.tera"),
        "# the service's key\n{{ secrets.tls.key }}",
    )
    .unwrap();
    let file = folder.join("site.yml");
    let taskbook = format!(
        r#"apiVersion: weft/v1
kind: TaskBook
metadata: {{name: pem, namespace: prod}}
spec:
  steps:
    - name: the key
      nodes: {{names: [web-1]}}
      tasks:
        - name: copied
          copy: {{content: "{{{{ secrets.tls.key }}}}", dest: "{out}/copied.pem", mode: "0600"}}
        - name: templated
          template: {{src: key.tera, dest: "{out}/templated.pem", mode: "0600"}}
        - name: upper
          copy: {{content: "{{{{ secrets.tls.key | upper }}}}", dest: "{out}/upper.pem"}}
          register: upper
        - name: lines apart
          debug: {{msg: "{{{{ secrets.tls.key | split(pat='\n') | join(sep=' | ') }}}}"}}
"#,
        out = out.display()
    );
    std::fs::write(&file, taskbook).unwrap();
    let mut printed = String::new();
    let mut jobs = String::new();
    for format in ["text", "json"] {
        for written in ["copied.pem", "templated.pem", "upper.pem"] {
            let _ = std::fs::remove_file(out.join(written));
        }
        let run = cluster.admin(&[
            "run",
            "taskbook",
            file.to_str().unwrap(),
            "--diff",
            "-o",
            format,
        ]);
        assert_success(&run, "the key's run");
        let shown = stdout(&run) + &stderr(&run);
        assert!(
            shown.contains("(content hidden: it holds a secret)"),
            "{shown}"
        );
        if format == "json" {
            let report: Value = serde_json::from_str(&stdout(&run)).unwrap();
            let job_id = report["job"].as_str().unwrap();
            jobs += &stdout(&cluster.admin(&["job", "show", job_id, "-o", "json"]));
            jobs += &stdout(&cluster.admin(&["job", "show", job_id]));
        }
        printed += &shown;
    }
    // The node wrote the key itself, whole.
    assert_eq!(
        std::fs::read_to_string(out.join("copied.pem")).unwrap(),
        PEM_KEY
    );
    assert_eq!(
        std::fs::read_to_string(out.join("templated.pem")).unwrap(),
        format!("# the service's key\n{PEM_KEY}")
    );
    (printed, jobs)
}

fn files_under(dir: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            files.push((
                path.display().to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
    }
    files
}
