//! Templates and source files that would hang weft or abort it fail their own task,
//! through the real binary: the process survives and the tasks after them run.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{json_report, local_command, statuses};

/// Longer than any run here takes, even on a slow machine; a run still going then hangs.
const HANG: Duration = Duration::from_secs(60);

/// Runs `weft run taskbook FILE --local -o json`, killed after [`HANG`].
fn run_or_kill(dir: &Path, file: &Path) -> Output {
    let stdout = dir.join("stdout");
    let stderr = dir.join("stderr");
    let mut child = local_command(file, &["-o", "json"])
        .stdout(Stdio::from(std::fs::File::create(&stdout).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap()))
        .spawn()
        .expect("weft runs");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > HANG {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("weft hung: killed after {HANG:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: std::fs::read(stdout).unwrap(),
        stderr: std::fs::read(stderr).unwrap(),
    }
}

fn book(dir: &Path, tasks: &str) -> std::path::PathBuf {
    let file = dir.join("book.yml");
    let fifo = dir.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let source = format!(
        "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {{name: bombs}}\nspec:\n  vars: {{dir: \"{}\", fifo: \"{}\", zero: /dev/zero, urandom: /dev/urandom}}\n  steps:\n    - name: s\n      tasks:\n{tasks}",
        dir.display(),
        fifo.display(),
    );
    std::fs::write(&file, source).unwrap();
    file
}

/// Each bomb, then a harmless task that must still run.
const BOMBS: &[(&str, &str, &str)] = &[
    (
        "range bomb",
        "debug: {msg: \"{{ range(end=999999999) | length }}\"}",
        "range(end=999999999) asks for 999999999 numbers; at most 100000",
    ),
    (
        "loop of 10^8 steps",
        "debug: {msg: \"{% for i in range(end=10000) %}{% for j in range(end=10000) %}{% endfor %}{% endfor %}\"}\n          timeout: 2s",
        "rendering stopped after 2s (the task's `timeout`): a loop or macro runs too long",
    ),
    (
        "string doubling",
        "debug: {msg: \"{% set_global s = 'ab' %}{% for i in range(end=64) %}{% set_global s = s ~ s %}{% endfor %}{{ s | length }}\"}",
        "rendering used more than 256.0 MiB",
    ),
    (
        "template from /dev/zero",
        "template: {src: \"{{ zero }}\", dest: \"{{ dir }}/zero\"}",
        "`src` /dev/zero is a character device, not a regular file",
    ),
    (
        "copy from /dev/urandom",
        "copy: {src: \"{{ urandom }}\", dest: \"{{ dir }}/urandom\"}",
        "`src` /dev/urandom is a character device, not a regular file",
    ),
    (
        "template from a FIFO",
        "template: {src: \"{{ fifo }}\", dest: \"{{ dir }}/from-fifo\"}",
        "is a FIFO (named pipe), not a regular file",
    ),
    (
        "copy from a FIFO",
        "copy: {src: \"{{ fifo }}\", dest: \"{{ dir }}/from-fifo\"}",
        "is a FIFO (named pipe), not a regular file",
    ),
];

#[test]
fn each_bomb_fails_its_own_task_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut tasks = String::new();
    for (index, (name, task, _)) in BOMBS.iter().enumerate() {
        tasks.push_str(&format!(
            "        - name: {name}\n          {task}\n          ignore_errors: true\n        - name: after {index}\n          copy: {{dest: \"{{{{ dir }}}}/after-{index}\", content: ok}}\n"
        ));
    }
    // Not ignored: the run fails with status 2, and this node stops here.
    tasks.push_str("        - name: last bomb\n          debug: {msg: \"{{ range(end=999999999) }}\"}\n        - name: never\n          copy: {dest: \"{{ dir }}/never\", content: x}\n");
    let file = book(dir.path(), &tasks);

    let (report, output) = json_report(run_or_kill(dir.path(), &file));

    assert_eq!(output.status.code(), Some(2), "{report:#}");
    let results = report["results"].as_array().unwrap();
    for (index, (name, _, message)) in BOMBS.iter().enumerate() {
        let bomb = &results[2 * index];
        assert_eq!(bomb["task"], *name);
        assert_eq!(bomb["status"], "ignored", "{bomb:#}");
        let msg = bomb["msg"].as_str().unwrap();
        assert!(msg.contains(message), "{name}: {msg}");
        assert_eq!(results[2 * index + 1]["status"], "changed", "after {name}");
        assert!(dir.path().join(format!("after-{index}")).exists());
    }
    let last = &results[2 * BOMBS.len()];
    assert_eq!(last["status"], "failed");
    assert!(
        last["msg"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}:", file.display())),
        "positioned in the TaskBook: {last:#}"
    );
    assert_eq!(
        results.len(),
        2 * BOMBS.len() + 1,
        "{:?}",
        statuses(&report)
    );
    assert!(!dir.path().join("never").exists());
    for unwritten in ["zero", "urandom", "from-fifo"] {
        assert!(!dir.path().join(unwritten).exists(), "{unwritten}");
    }
}

#[test]
fn a_literal_src_that_is_a_device_is_refused_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let file = book(
        dir.path(),
        "        - name: first\n          copy: {dest: \"{{ dir }}/first\", content: x}\n        - template: {src: /dev/zero, dest: \"{{ dir }}/zero\"}\n",
    );
    let output = run_or_kill(dir.path(), &file);
    let stderr = common::stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:11:27: `spec.steps[0].tasks[1].template.src`: `src` /dev/zero is a character device, not a regular file",
            file.display()
        )),
        "{stderr}"
    );
    assert!(!dir.path().join("first").exists(), "nothing ran");
}
