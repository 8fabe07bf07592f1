//! Each task key does what the README says, through the real binary.

mod common;

use std::path::Path;

use common::{run_local_json, statuses};
use serde_json::Value;

fn book(dir: &Path, tasks: &str, handlers: &str) -> std::path::PathBuf {
    let file = dir.join("book.yml");
    let source = format!(
        "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {{name: semantics}}\nspec:\n  vars: {{dir: \"{}\", users: [ann, bo], port: 8080}}\n  steps:\n    - name: s\n      tasks:\n{tasks}      handlers:\n{handlers}",
        dir.display()
    );
    std::fs::write(&file, source).unwrap();
    file
}

fn run(dir: &Path, tasks: &str, handlers: &str, args: &[&str]) -> Value {
    let (report, _) = run_local_json(&book(dir, tasks, handlers), args);
    report
}

fn status_of<'a>(report: &'a Value, task: &str) -> &'a str {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["task"] == task)
        .unwrap_or_else(|| panic!("no result for {task}: {:?}", statuses(report)))["status"]
        .as_str()
        .unwrap()
}

#[test]
fn when_loop_register_and_cross_task_reads() {
    let dir = tempfile::tempdir().unwrap();
    let report = run(
        dir.path(),
        r#"        - name: homes
          file: {path: "{{ dir }}/{{ item }}", state: directory}
          loop: "{{ users }}"
          register: homes
        - name: skipped
          debug: {msg: never}
          when: port > 9000
        - name: reads the register
          copy: {dest: "{{ dir }}/count", content: "{{ homes.results | length }} {{ homes.changed }}"}
        - name: list condition is AND-ed
          debug: {msg: hi}
          when: [port == 8080, "users | length == 3"]
"#,
        "        - {name: unused, ping: }\n",
        &[],
    );
    assert_eq!(status_of(&report, "homes"), "changed");
    assert!(dir.path().join("ann").is_dir() && dir.path().join("bo").is_dir());
    assert_eq!(report["results"][0]["items"].as_array().unwrap().len(), 2);
    assert_eq!(status_of(&report, "skipped"), "skipped");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("count")).unwrap(),
        "2 true"
    );
    assert_eq!(status_of(&report, "list condition is AND-ed"), "skipped");
    assert_eq!(
        report["results"][3]["msg"],
        "skipped: `users | length == 3` is false"
    );
}

#[test]
fn handlers_run_once_and_only_after_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = r#"        - name: a
          copy: {dest: "{{ dir }}/a", content: a}
          notify: [restart]
        - name: b
          copy: {dest: "{{ dir }}/b", content: b}
          notify: [restart]
"#;
    let handlers = "        - name: restart\n          shell: \"echo x >> {{ dir }}/restarts\"\n";
    let first = run(dir.path(), tasks, handlers, &[]);
    let handler_results: Vec<_> = first["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["handler"] == true)
        .collect();
    assert_eq!(handler_results.len(), 1, "{first:#}");
    let second = run(dir.path(), tasks, handlers, &[]);
    assert!(second["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["handler"] == false));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("restarts")).unwrap(),
        "x\n"
    );
}

#[test]
fn changed_when_failed_when_and_ignore_errors() {
    let dir = tempfile::tempdir().unwrap();
    let report = run(
        dir.path(),
        r#"        - name: probe
          command: echo steady
          changed_when: false
        - name: judged by output
          shell: "echo ERROR: disk"
          failed_when: "'ERROR' in result.stdout"
          ignore_errors: true
        - name: exit code
          command: "false"
          ignore_errors: yes
        - name: still runs
          ping:
"#,
        "        - {name: unused, ping: }\n",
        &[],
    );
    assert_eq!(status_of(&report, "probe"), "ok");
    assert_eq!(status_of(&report, "judged by output"), "ignored");
    assert_eq!(status_of(&report, "exit code"), "ignored");
    assert_eq!(status_of(&report, "still runs"), "ok");
    assert_eq!(report["failed"], false);
    assert_eq!(report["recap"][0]["ignored"], 2);
}

#[test]
fn a_failure_stops_the_node_with_exit_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let (report, output) = run_local_json(
        &book(
            dir.path(),
            "        - name: boom\n          fail: {msg: stop here}\n        - name: after\n          copy: {dest: \"{{ dir }}/after\", content: x}\n",
            "        - {name: unused, ping: }\n",
        ),
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(status_of(&report, "boom"), "failed");
    assert_eq!(report["results"].as_array().unwrap().len(), 1);
    assert!(!dir.path().join("after").exists());
}

#[test]
fn retries_until_and_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let report = run(
        dir.path(),
        r#"        - name: third time lucky
          shell: "echo x >> {{ dir }}/tries; wc -l < {{ dir }}/tries"
          register: tries
          until: "tries.stdout | int >= 3"
          retries: 5
          delay: 10ms
        - name: gives up
          command: "false"
          retries: 2
          delay: 10ms
          ignore_errors: true
        - name: too slow
          command: sleep 5
          timeout: 200ms
          ignore_errors: true
"#,
        "        - {name: unused, ping: }\n",
        &[],
    );
    let results = report["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], "changed");
    assert_eq!(results[0]["attempts"], 3);
    assert_eq!(results[1]["attempts"], 3);
    assert_eq!(results[1]["status"], "ignored");
    assert_eq!(results[2]["status"], "ignored");
    assert!(
        results[2]["msg"].as_str().unwrap().contains("timeout"),
        "{:#}",
        results[2]
    );
    assert!(results[2]["duration_ms"].as_f64().unwrap() < 5000.0);
}

#[test]
fn tags_select_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = r#"        - {name: config, ping: , tags: [config]}
        - {name: packages, ping: , tags: packages}
        - {name: always, ping: , tags: [always]}
"#;
    let handlers = "        - {name: unused, ping: }\n";
    let names = |report: &Value| -> Vec<String> {
        statuses(report).into_iter().map(|(task, _)| task).collect()
    };
    assert_eq!(
        names(&run(dir.path(), tasks, handlers, &["--tags", "config"])),
        ["config", "always"]
    );
    assert_eq!(
        names(&run(
            dir.path(),
            tasks,
            handlers,
            &["--skip-tags", "config,always"]
        )),
        ["packages"]
    );
}

#[test]
fn no_log_hides_output_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let (report, output) = run_local_json(
        &book(
            dir.path(),
            "        - name: secret\n          shell: echo hunter2\n          no_log: true\n        - name: failing secret\n          fail: {msg: hunter2}\n          no_log: true\n",
            "        - {name: unused, ping: }\n",
        ),
        &[],
    );
    let text = format!("{report}{}", common::stderr(&output));
    assert!(!text.contains("hunter2"), "{text}");
    assert_eq!(report["results"][1]["msg"], "output hidden by no_log");

    let output = common::run_local(
        &book(
            dir.path(),
            "        - name: secret\n          fail: {msg: hunter2}\n          no_log: true\n",
            "        - {name: unused, ping: }\n",
        ),
        &[],
    );
    assert!(!common::stdout(&output).contains("hunter2"));
}

#[test]
fn precedence_extra_vars_and_set_var() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = r#"        - name: before
          copy: {dest: "{{ dir }}/port", content: "{{ port }}"}
        - set_var: {port: 1}
        - name: after
          copy: {dest: "{{ dir }}/port2", content: "{{ port }}"}
"#;
    run(
        dir.path(),
        tasks,
        "        - {name: unused, ping: }\n",
        &["-e", "port=9090"],
    );
    // -e beats TaskBook vars; set_var beats -e.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("port")).unwrap(),
        "9090"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("port2")).unwrap(),
        "1"
    );
}

#[test]
fn custom_facts_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let facts_dir = dir.path().join("facts.d");
    std::fs::create_dir(&facts_dir).unwrap();
    std::fs::write(facts_dir.join("rack.json"), r#"{"row": 4}"#).unwrap();
    let file = book(
        dir.path(),
        "        - copy: {dest: \"{{ dir }}/row\", content: \"{{ facts.custom.rack.row }}\"}\n",
        "        - {name: unused, ping: }\n",
    );
    let output = common::weft()
        .env("WEFT_FACTS_DIR", &facts_dir)
        .args(["run", "taskbook"])
        .arg(&file)
        .arg("--local")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", common::stdout(&output));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("row")).unwrap(),
        "4"
    );
}

/// Content, mode and owner of what is at `path`, not following a link.
fn file_state(path: &Path) -> (String, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::symlink_metadata(path).unwrap();
    let content = if metadata.file_type().is_symlink() {
        format!("-> {}", std::fs::read_link(path).unwrap().display())
    } else {
        std::fs::read_to_string(path).unwrap()
    };
    (content, metadata.mode() & 0o7777, metadata.uid())
}

/// Someone who may write to a folder weft manages links a destination in it to a file
/// elsewhere: without `follow: true` the file elsewhere keeps its content, mode and
/// owner (content modules replace the link, the others refuse it); with it, weft writes
/// through the link as Ansible's `follow: yes` does.
#[test]
fn links_planted_at_destinations_are_followed_only_with_follow() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let managed = dir.path().join("managed");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&managed).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(dir.path().join("motd.tera"), "rendered {{ port }}\n").unwrap();
    let modules = ["copy", "template", "file", "lineinfile"];
    let plant = || {
        for module in modules {
            let victim = elsewhere.join(module);
            std::fs::write(&victim, "secret\n").unwrap();
            std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
            std::os::unix::fs::chown(&victim, Some(1), Some(1)).unwrap();
            let link = managed.join(module);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&victim, &link).unwrap();
        }
    };
    let run_with = |follow: bool| {
        let m = managed.display();
        let tasks = format!(
            "        - name: copy
          copy: {{dest: {m}/copy, content: \"planted\\n\", mode: '0644', owner: '2', follow: {follow}}}
          ignore_errors: true
        - name: template
          template: {{src: motd.tera, dest: {m}/template, mode: '0644', owner: '2', follow: {follow}}}
          ignore_errors: true
        - name: file
          file: {{path: {m}/file, mode: '0644', owner: '2', follow: {follow}}}
          ignore_errors: true
        - name: lineinfile
          lineinfile: {{path: {m}/lineinfile, line: planted, mode: '0644', owner: '2', follow: {follow}}}
          ignore_errors: true
"
        );
        run(
            dir.path(),
            &tasks,
            "        - {name: unused, ping: }\n",
            &[],
        )
    };
    let untouched = |content: &str| (content.to_string(), 0o600, 1);
    let written = |content: &str| (content.to_string(), 0o644, 2);

    plant();
    let report = run_with(false);
    for module in modules {
        assert_eq!(
            file_state(&elsewhere.join(module)),
            untouched("secret\n"),
            "{module} went through the link: {report:#}"
        );
    }
    for (module, content) in [("copy", "planted\n"), ("template", "rendered 8080\n")] {
        assert_eq!(status_of(&report, module), "changed", "{report:#}");
        assert_eq!(file_state(&managed.join(module)), written(content));
    }
    for module in ["file", "lineinfile"] {
        assert_eq!(status_of(&report, module), "ignored", "{report:#}");
        let result = report["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["task"] == module)
            .unwrap();
        let msg = result["msg"].as_str().unwrap();
        assert!(
            msg.contains(&format!(
                "{} is a symbolic link to {}",
                managed.join(module).display(),
                elsewhere.join(module).display()
            )) && msg.ends_with("only when the task says `follow: true`"),
            "{msg}"
        );
        let link = file_state(&managed.join(module)).0;
        assert!(link.starts_with("-> "), "{module}: {link}");
    }

    plant();
    let report = run_with(true);
    for (module, content) in [
        ("copy", "planted\n"),
        ("template", "rendered 8080\n"),
        ("file", "secret\n"),
        ("lineinfile", "secret\nplanted\n"),
    ] {
        assert_eq!(status_of(&report, module), "changed", "{report:#}");
        assert_eq!(
            file_state(&elsewhere.join(module)),
            written(content),
            "{module}"
        );
        let link = file_state(&managed.join(module)).0;
        assert!(link.starts_with("-> "), "{module}: {link}");
    }
}
