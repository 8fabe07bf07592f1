//! Custom modules through the real binary: executables in module directories given by
//! `WEFT_MODULE_PATH`, speaking JSON on stdin and stdout, in local runs and on a
//! cluster's nodes.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::cluster::{assert_success, taskbook, Cluster};
use common::{json_report, local_command, snapshot, statuses, stderr};
use serde_json::Value;

/// Writes `args.content` to `args.path`, reporting ok when it is there already; in
/// check mode it only says what it would do. It echoes what it was told.
const MARKER: &str = r#"#!/usr/bin/python3
import json, os, sys
request = json.load(sys.stdin)
args = request["args"]
path, content = args["path"], args["content"]
current = open(path).read() if os.path.exists(path) else None
answer = {"path": path, "told": {"check_mode": request["check_mode"], "diff": request["diff"]}}
if current == content:
    answer["changed"] = False
else:
    answer["changed"] = True
    answer["diff"] = f"{current!r} -> {content!r}"
    if request["check_mode"]:
        answer["msg"] = f"would write {path}"
    else:
        with open(path, "w") as f:
            f.write(content)
        answer["msg"] = f"wrote {path}"
print(json.dumps(answer))
"#;

fn module(dir: &Path, name: &str, script: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn book(dir: &Path, tasks: &str) -> PathBuf {
    let path = dir.join("book.yml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {{name: custom}}\nspec:\n  steps:\n    - name: s\n      tasks:\n{tasks}"
        ),
    )
    .unwrap();
    path
}

fn run(book: &Path, module_path: &[&Path], args: &[&str]) -> (Value, std::process::Output) {
    let joined = std::env::join_paths(module_path).unwrap();
    let mut all = vec!["-o", "json"];
    all.extend_from_slice(args);
    json_report(
        local_command(book, &all)
            .env("WEFT_MODULE_PATH", joined)
            .output()
            .expect("weft runs"),
    )
}

#[test]
fn a_custom_module_converges_reports_ok_after_and_only_looks_in_check_mode() {
    let work = tempfile::tempdir().unwrap();
    let modules = work.path().join("modules");
    let target = work.path().join("target");
    std::fs::create_dir_all(&modules).unwrap();
    std::fs::create_dir_all(&target).unwrap();
    module(&modules, "marker", MARKER);
    let file = target.join("flag");
    let book = book(
        work.path(),
        &format!(
            "        - name: flag\n          marker: {{path: {}, content: \"{{{{ word }}}}\"}}\n          register: flagged\n",
            file.display()
        ),
    );

    let before = snapshot(&target);
    let (report, output) = run(&book, &[&modules], &["--check", "-e", "word=up"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let result = &report["results"][0];
    assert_eq!(result["status"], "changed", "{result}");
    assert_eq!(result["msg"], format!("would write {}", file.display()));
    assert_eq!(result["diff"], "None -> 'up'");
    assert_eq!(result["output"]["told"]["check_mode"], true);
    assert_eq!(result["output"]["told"]["diff"], true);
    assert_eq!(snapshot(&target), before, "check mode changed nothing");

    let (report, output) = run(&book, &[&modules], &["-e", "word=up"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let result = &report["results"][0];
    assert_eq!(result["status"], "changed", "{result}");
    assert_eq!(result["output"]["told"]["check_mode"], false);
    assert_eq!(result["output"]["path"], file.display().to_string());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "up");

    let (report, _) = run(&book, &[&modules], &["-e", "word=up"]);
    assert_eq!(statuses(&report), [("flag".to_string(), "ok".to_string())]);
}

#[test]
fn later_directories_override_earlier_ones_but_never_a_builtin() {
    let work = tempfile::tempdir().unwrap();
    let shared = work.path().join("shared");
    let local = work.path().join("local");
    for dir in [&shared, &local] {
        std::fs::create_dir_all(dir).unwrap();
    }
    module(
        &shared,
        "whoami",
        "#!/bin/sh\necho '{\"msg\": \"shared\"}'\n",
    );
    module(&local, "whoami", "#!/bin/sh\necho '{\"msg\": \"local\"}'\n");
    let hijacked = work.path().join("hijacked");
    module(
        &local,
        "ping",
        &format!(
            "#!/bin/sh\ntouch {}\necho '{{\"msg\": \"not pong\"}}'\n",
            hijacked.display()
        ),
    );
    let book = book(
        work.path(),
        "        - name: who\n          whoami:\n        - name: builtin\n          ping:\n",
    );

    let (report, output) = run(&book, &[&shared, &local], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(report["results"][0]["msg"], "local");
    assert_eq!(report["results"][1]["output"]["ping"], "pong");
    assert!(!hijacked.exists(), "a file named like a builtin never runs");

    let (report, _) = run(&book, &[&local, &shared], &[]);
    assert_eq!(report["results"][0]["msg"], "shared");
}

#[test]
fn broken_modules_fail_their_task_naming_the_module_and_its_stderr() {
    let work = tempfile::tempdir().unwrap();
    let modules = work.path().join("modules");
    std::fs::create_dir_all(&modules).unwrap();
    let garbage = module(
        &modules,
        "garbage",
        "#!/bin/sh\necho 'debug: starting' >&2\necho 'hello, not json'\n",
    );
    let crashes = module(
        &modules,
        "crashes",
        "#!/bin/sh\necho 'Traceback: it broke' >&2\nexit 3\n",
    );
    module(
        &modules,
        "refuses",
        "#!/bin/sh\necho '{\"failed\": true, \"msg\": \"disk is read-only\"}'\n",
    );
    // Its child sleeps on after the shell is killed unless the whole group is.
    let hangs = module(
        &modules,
        "hangs",
        "#!/bin/sh\necho 'waiting for a lock' >&2\nsleep 600\necho '{}'\n",
    );
    let flood = module(
        &modules,
        "flood",
        "#!/bin/sh\nhead -c 3000000 /dev/zero | tr '\\0' x\nhead -c 3000000 /dev/zero | tr '\\0' y >&2\n",
    );
    let book = book(
        work.path(),
        "        - {name: garbage, garbage: {}, ignore_errors: true}\n\
         \x20       - {name: crashes, crashes: {}, ignore_errors: true}\n\
         \x20       - {name: refuses, refuses: {}, ignore_errors: true}\n\
         \x20       - {name: hangs, hangs: {}, ignore_errors: true, timeout: 1s}\n\
         \x20       - {name: flood, flood: {}, ignore_errors: true}\n",
    );

    let (report, output) = run(&book, &[&modules], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let msgs: Vec<&str> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["status"], "ignored", "{r}");
            r["msg"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        msgs[0],
        format!(
            "custom module {} must answer one JSON object on stdout, but its answer is not JSON \
             (expected value at line 1 column 1): `hello, not json`; its stderr:\ndebug: starting",
            garbage.display()
        )
    );
    assert_eq!(
        msgs[1],
        format!(
            "custom module {} exited with 3 without a JSON answer; its stderr:\nTraceback: it broke",
            crashes.display()
        )
    );
    assert_eq!(msgs[2], "disk is read-only");
    assert_eq!(
        msgs[3],
        format!(
            "custom module {} did not finish within the task's timeout and was killed:\nwaiting for a lock",
            hangs.display()
        )
    );
    // Output past 1 MiB is cut, so the answer is not JSON, and the message stays short.
    assert!(
        msgs[4].starts_with(&format!(
            "custom module {} must answer one JSON object on stdout, but its answer is not JSON",
            flood.display()
        )),
        "{}",
        &msgs[4][..300]
    );
    assert!(msgs[4].len() < 3000, "{} bytes", msgs[4].len());
}

#[test]
fn unusable_or_unknown_modules_are_refused_before_anything_runs() {
    let work = tempfile::tempdir().unwrap();
    let modules = work.path().join("modules");
    std::fs::create_dir_all(&modules).unwrap();
    let plain = modules.join("plain");
    std::fs::write(&plain, "#!/bin/sh\necho '{}'\n").unwrap();
    let witness = work.path().join("ran");
    let cases = [
        (
            "plain: {}",
            format!(
                "`spec.steps[0].tasks[1].plain`: custom module {} is not executable; make it so with `chmod +x`, or remove it",
                plain.display()
            ),
            None,
        ),
        (
            "frobnicate: {}",
            format!(
                "`spec.steps[0].tasks[1]`: no module `frobnicate`: not built in and not found in {}",
                modules.display()
            ),
            Some("  hint: a custom module is an executable file named `frobnicate` in a module directory ($WEFT_MODULE_PATH sets them)"),
        ),
        (
            "tempalte: {}",
            format!(
                "`spec.steps[0].tasks[1]`: no module `tempalte`: not built in and not found in {}",
                modules.display()
            ),
            Some("  hint: did you mean `template`?"),
        ),
        (
            "plain: [a, b]",
            "`spec.steps[0].tasks[1].plain`: custom module `plain` takes a mapping of arguments, found a list".to_string(),
            Some("  hint: write `plain: {key: value}`"),
        ),
    ];
    for (task, error, hint) in cases {
        let book = book(
            work.path(),
            &format!(
                "        - file: {{path: {}, state: touch}}\n        - {task}\n",
                witness.display()
            ),
        );
        let output = local_command(&book, &[])
            .env("WEFT_MODULE_PATH", &modules)
            .output()
            .unwrap();
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{task}: {text}");
        let mut lines = text.lines();
        let first = lines.next().unwrap_or_default();
        assert!(
            first.ends_with(&error),
            "{task}:\n{first}\nexpected to end with\n{error}"
        );
        assert!(first.contains("book.yml:9:"), "{first}");
        if let Some(hint) = hint {
            assert_eq!(lines.next(), Some(hint), "{text}");
        }
        assert!(!witness.exists(), "{task}: nothing ran");
    }
}

#[test]
fn on_a_cluster_the_nodes_have_the_modules_and_one_without_fails_that_task() {
    let cluster = Cluster::start(&["node-a", "node-b"]);
    let modules = cluster.minion_modules("node-a");
    std::fs::create_dir_all(&modules).unwrap();
    module(
        &modules,
        "whereami",
        "#!/bin/sh\necho '{\"changed\": false, \"msg\": \"here\", \"place\": \"a\"}'\n",
    );
    let book = taskbook(
        cluster.dir.path(),
        "custom",
        "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: custom}\nspec:\n  steps:\n    - name: s\n      tasks:\n        - name: where\n          whereami: {}\n",
    );

    // Neither the CLI nor the master has `whereami`, and both let it through.
    let (report, output) = cluster.run(&book, &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let result = |node: &str| {
        report["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["node"] == node)
            .cloned()
            .unwrap_or_else(|| panic!("no result for {node}: {report:#}"))
    };
    assert_eq!(result("node-a")["status"], "ok");
    assert_eq!(result("node-a")["msg"], "here");
    assert_eq!(result("node-a")["output"]["place"], "a");
    assert_eq!(result("node-b")["status"], "failed");
    assert!(
        result("node-b")["msg"]
            .as_str()
            .unwrap()
            .ends_with(&format!(
                "no module `whereami`: not built in and not found in {}",
                cluster.minion_modules("node-b").display()
            )),
        "{}",
        result("node-b")
    );

    // A likely typo of a builtin is still refused before anything is sent.
    let typo = taskbook(
        cluster.dir.path(),
        "typo",
        "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: typo}\nspec:\n  steps:\n    - name: s\n      tasks:\n        - tempalte: {src: a, dest: b}\n",
    );
    let output = cluster.admin(&["run", "taskbook", typo.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(
        text.contains("unknown module `tempalte`\n  hint: did you mean `template`?"),
        "{text}"
    );
    assert_success(&cluster.admin(&["nodes"]), "the cluster is still up");
}
