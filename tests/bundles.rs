//! What a run ships to its nodes, on a real master and minions: exactly what the
//! TaskBook reads, never the rest of its folder, and never so much that a node loses
//! its session.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::cluster::{assert_success, Cluster};
use common::stderr;
use serde_json::Value;

const NODES: [&str; 2] = ["n1", "n2"];

/// A custom module that answers with the files of the folder it runs in (the
/// TaskBook's folder as the node unpacked it), as `received`.
const LIST_RECEIVED: &str = "#!/bin/sh
cat >/dev/null
received=$(find . -type f | sort | tr '\\n' ' ')
printf '{\"changed\": false, \"received\": \"%s\"}' \"$received\"
";

const SITE: &str = r#"apiVersion: weft/v1
kind: TaskBook
metadata: {name: site}
spec:
  steps:
    - name: configure
      tasks:
        - name: motd
          template: {src: motd.tera, dest: "{{ out }}/{{ node.name }}-motd"}
        - name: data
          copy: {src: "{{ 'data' }}.txt", dest: "{{ out }}/{{ node.name }}-data"}
        - name: what arrived
          list_received: {}
"#;

fn write(path: &Path, content: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn install_lister(cluster: &Cluster) {
    for node in NODES {
        let module = cluster.minion_modules(node).join("list_received");
        write(&module, LIST_RECEIVED.as_bytes());
        std::fs::set_permissions(&module, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

fn all_online(cluster: &Cluster) -> bool {
    cluster.nodes().iter().all(|node| node["online"] == true)
}

#[test]
fn only_what_the_taskbook_reads_reaches_the_nodes_and_an_oversized_run_is_refused_first() {
    let mut cluster = Cluster::start(&[]);
    install_lister(&cluster);
    let token = cluster.token(NODES.len() as u32);
    for node in NODES {
        cluster.join(node, &token, "");
        cluster.start_minion(node);
    }
    cluster.wait_online(&NODES);

    let out = cluster.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    // A TaskBook saved among things it does not read, as in a home directory.
    let folder = cluster.dir.path().join("home-folder");
    let file = folder.join("site.yml");
    write(&file, SITE.as_bytes());
    write(
        &folder.join("templates/motd.tera"),
        b"hello {{ node.name }}\n",
    );
    write(&folder.join("files/data.txt"), b"data\n");
    write(&folder.join("big.log"), &vec![b'x'; 20 * 1024 * 1024]);
    std::fs::copy(
        cluster.master_dir().join("cluster.key"),
        folder.join("cluster.key"),
    )
    .unwrap();

    let out_var = format!("out={}", out.display());
    let (report, output) = cluster.run(&file, &["-e", &out_var]);
    assert_success(&output, "the run");
    let received: Vec<&str> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|result| result["task"] == "what arrived")
        .map(|result| result["output"]["received"].as_str().unwrap())
        .collect();
    assert_eq!(received.len(), NODES.len(), "{report}");
    for files in received {
        assert_eq!(
            files.trim(),
            "./files/data.txt ./site.yml ./templates/motd.tera"
        );
    }
    for node in NODES {
        let motd = std::fs::read_to_string(out.join(format!("{node}-motd"))).unwrap();
        assert_eq!(motd, format!("hello {node}\n"));
        assert!(out.join(format!("{node}-data")).exists());
    }

    // Past the bound, the CLI refuses before anything is sent, naming the biggest file.
    write(&folder.join("files/disk.img"), &vec![0; 9 * 1024 * 1024]);
    let refused = cluster.admin(&["run", "taskbook", file.to_str().unwrap(), "-e", &out_var]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    let error = stderr(&refused);
    assert!(
        error.contains("the biggest: files/disk.img (9.0 MiB)"),
        "{error}"
    );
    assert_eq!(
        cluster.admin_json(&["jobs"]).as_array().unwrap().len(),
        1,
        "the refused run started a job"
    );

    // Every node kept its session, and the next run reaches all of them.
    std::fs::remove_file(folder.join("files/disk.img")).unwrap();
    assert!(all_online(&cluster), "{:?}", cluster.nodes());
    let (report, output) = cluster.run(&file, &["-e", &out_var]);
    assert_success(&output, "the run after the refusal");
    let recap: Vec<Value> = report["recap"].as_array().unwrap().clone();
    assert_eq!(recap.len(), NODES.len(), "{report}");
    assert!(all_online(&cluster));
}
