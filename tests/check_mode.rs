//! `--check` changes nothing on disk and reports exactly what a real run then changes.

mod common;

use common::{run_local_json, snapshot};

const BOOK: &str = r#"
apiVersion: weft/v1
kind: TaskBook
metadata: {name: check-mode}
spec:
  vars: {greeting: hello}
  steps:
    - name: converge
      tasks:
        - name: new directory
          file: {path: "{{ root }}/conf.d", state: directory, mode: "0750"}
        - name: existing directory, wrong mode
          file: {path: "{{ root }}/data", state: directory, mode: "0700"}
        - name: new file from content
          copy: {dest: "{{ root }}/conf.d/app.conf", content: "{{ greeting }} world\n"}
        - name: changed file from content
          copy: {dest: "{{ root }}/motd", content: "new motd\n", mode: "0644"}
        - name: unchanged file
          copy: {dest: "{{ root }}/same", content: "same\n", mode: "0644"}
        - name: rendered template
          template: {src: page.tera, dest: "{{ root }}/page.html"}
        - name: line added
          lineinfile: {path: "{{ root }}/settings", line: "color=blue", regexp: "^color="}
        - name: line already there
          lineinfile: {path: "{{ root }}/settings", line: "size=10"}
        - name: stale file removed
          file: {path: "{{ root }}/stale", state: absent}
        - name: link made
          file: {path: "{{ root }}/current", src: "{{ root }}/data", state: link}
        - name: a command
          command: "touch {{ root }}/ran"
"#;

fn prepare() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir(r.join("data")).unwrap();
    std::fs::write(r.join("motd"), "old motd\n").unwrap();
    std::fs::write(r.join("same"), "same\n").unwrap();
    std::fs::write(r.join("settings"), "color=red\nsize=10\n").unwrap();
    std::fs::write(r.join("stale"), "x").unwrap();
    std::fs::write(r.join("page.tera"), "<h1>{{ greeting | upper }}</h1>\n").unwrap();
    std::fs::write(r.join("book.yml"), BOOK).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for path in ["data", "motd", "same", "settings"] {
        let mode = if path == "data" { 0o755 } else { 0o644 };
        std::fs::set_permissions(r.join(path), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    root
}

#[test]
fn check_mode_changes_nothing_and_predicts_the_real_run() {
    let root = prepare();
    let book = root.path().join("book.yml");
    let root_arg = format!("root={}", root.path().display());
    let args = ["--diff", "-e", root_arg.as_str()];

    let before = snapshot(root.path());
    let (check, output) = run_local_json(&book, &[&["--check"][..], &args].concat());
    assert_eq!(output.status.code(), Some(0), "{check:#}");
    assert_eq!(snapshot(root.path()), before, "check mode touched the disk");
    assert_eq!(check["check_mode"], true);

    let (real, output) = run_local_json(&book, &args);
    assert_eq!(output.status.code(), Some(0), "{real:#}");
    assert_ne!(snapshot(root.path()), before);

    let check_results = check["results"].as_array().unwrap();
    let real_results = real["results"].as_array().unwrap();
    assert_eq!(check_results.len(), real_results.len());
    for (predicted, done) in check_results.iter().zip(real_results) {
        let task = done["task"].as_str().unwrap();
        if task == "a command" {
            // Commands may change anything, so check mode skips them.
            assert_eq!(predicted["status"], "skipped", "{predicted:#}");
            assert_eq!(done["status"], "changed");
            continue;
        }
        assert_eq!(
            predicted["status"], done["status"],
            "{task}: {predicted:#} vs {done:#}"
        );
        assert_eq!(predicted["diff"], done["diff"], "{task}: diffs differ");
    }
    let changed: Vec<&str> = real_results
        .iter()
        .filter(|r| r["status"] == "changed")
        .map(|r| r["task"].as_str().unwrap())
        .collect();
    assert_eq!(
        changed,
        [
            "new directory",
            "existing directory, wrong mode",
            "new file from content",
            "changed file from content",
            "rendered template",
            "line added",
            "stale file removed",
            "link made",
            "a command"
        ]
    );
    let motd_diff = real_results[3]["diff"].as_str().unwrap();
    assert!(motd_diff.contains("-old motd\n+new motd"), "{motd_diff}");

    // And the real run converged: a second check predicts nothing but the command.
    let (again, _) = run_local_json(&book, &[&["--check"][..], &args].concat());
    let still_changing: Vec<_> = again["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "changed")
        .collect();
    assert!(still_changing.is_empty(), "{still_changing:#?}");
}
