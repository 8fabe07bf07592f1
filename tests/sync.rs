//! The `sync` module on a real cluster: a value made on one minion, and a file it holds,
//! reach the other two through the master; a rerun writes nothing.

mod common;

use common::cluster::{taskbook, Cluster};
use serde_json::Value;

fn statuses(report: &Value, task: &str) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|result| result["task"] == task)
        .map(|result| {
            (
                result["node"].as_str().unwrap().to_string(),
                result["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    found.sort();
    found
}

#[test]
fn a_value_made_on_one_node_reaches_the_others_once() {
    let cluster = Cluster::start(&["ca-1", "web-1", "web-2"]);
    let out = cluster.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let out = out.display();
    let file = taskbook(
        cluster.dir.path(),
        "sync",
        &format!(
            r#"apiVersion: weft/v1
kind: TaskBook
metadata: {{name: share-token}}
spec:
  steps:
    - name: make the token once
      nodes: {{names: [ca-1]}}
      tasks:
        - name: token
          shell: "test -f {out}/ca-token || head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n' > {out}/ca-token; cat {out}/ca-token"
          register: token
          changed_when: false
    - name: share it
      nodes: {{names: [web-1, web-2]}}
      tasks:
        - name: token value
          sync: {{from: ca-1, var: token.stdout, dest: "{out}/{{{{ node.name }}}}/token", mode: "0600"}}
        - name: token file
          sync: {{from: ca-1, src: "{out}/ca-token", dest: "{out}/{{{{ node.name }}}}/token-file"}}
"#
        ),
    );
    for node in ["web-1", "web-2"] {
        std::fs::create_dir_all(format!("{out}/{node}")).unwrap();
    }
    let (first, output) = cluster.run(&file, &[]);
    assert!(output.status.success(), "{first}\n{}", cluster.master_log());
    let token = std::fs::read_to_string(format!("{out}/ca-token")).unwrap();
    assert_eq!(token.len(), 32);
    for node in ["web-1", "web-2"] {
        assert_eq!(
            std::fs::read_to_string(format!("{out}/{node}/token")).unwrap(),
            token
        );
        assert_eq!(
            std::fs::read_to_string(format!("{out}/{node}/token-file")).unwrap(),
            token
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(format!("{out}/{node}/token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let changed = vec![
        ("web-1".to_string(), "changed".to_string()),
        ("web-2".to_string(), "changed".to_string()),
    ];
    assert_eq!(statuses(&first, "token value"), changed);
    assert_eq!(statuses(&first, "token file"), changed);
    assert!(!std::path::Path::new(&format!("{out}/ca-1")).exists());

    let (second, output) = cluster.run(&file, &[]);
    assert!(output.status.success(), "{second}");
    let ok = vec![
        ("web-1".to_string(), "ok".to_string()),
        ("web-2".to_string(), "ok".to_string()),
    ];
    assert_eq!(statuses(&second, "token value"), ok);
    assert_eq!(statuses(&second, "token file"), ok);
    assert_eq!(
        second["results"][1]["output"]["sha256"]
            .as_str()
            .map(str::len),
        Some(64)
    );

    // A source that does not exist stops the step before anything is written.
    let missing = taskbook(
        cluster.dir.path(),
        "missing",
        &format!(
            "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {{name: missing}}\nspec:\n  steps:\n    - nodes: {{names: [web-1]}}\n      tasks:\n        - sync: {{from: ca-1, src: /no/such/file, dest: {out}/web-1/never}}\n"
        ),
    );
    let (report, output) = cluster.run(&missing, &[]);
    assert!(!output.status.success(), "{report}");
    assert!(!std::path::Path::new(&format!("{out}/web-1/never")).exists());
}
