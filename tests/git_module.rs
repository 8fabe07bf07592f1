//! The `git` module through the real binary, against bare repositories the `git` CLI
//! makes and pushes to in a scratch folder.

mod common;

use std::path::PathBuf;

use common::git::{commit_crafted_tree, git, Sshd};
use common::{json_report, local_command, snapshot, stderr};
use serde_json::Value;

/// A bare repository and a clone of it to push commits from.
struct Upstream {
    work: tempfile::TempDir,
}

impl Upstream {
    fn new() -> Upstream {
        let work = tempfile::tempdir().unwrap();
        git(work.path(), &["init", "--bare", "remote.git"]);
        git(work.path(), &["clone", "remote.git", "src"]);
        Upstream { work }
    }

    fn url(&self) -> String {
        format!("file://{}", self.work.path().join("remote.git").display())
    }

    fn src(&self) -> PathBuf {
        self.work.path().join("src")
    }

    /// Commits `content` as `a.txt`, pushes, and returns the commit id.
    fn push(&self, content: &str) -> String {
        std::fs::write(self.src().join("a.txt"), content).unwrap();
        git(&self.src(), &["add", "a.txt"]);
        git(&self.src(), &["commit", "-m", content]);
        git(&self.src(), &["push", "-q", "origin", "main", "--tags"]);
        git(&self.src(), &["rev-parse", "HEAD"])
    }

    fn tag(&self, name: &str) {
        git(&self.src(), &["tag", "-a", name, "-m", name]);
        git(&self.src(), &["push", "-q", "origin", name]);
    }

    fn home(&self) -> PathBuf {
        self.work.path().join("home")
    }

    fn dest(&self) -> PathBuf {
        self.work.path().join("checkout")
    }

    /// Runs a book with one `git` task whose arguments are `repo`, `dest` and `extra`.
    fn run(&self, extra: &str, flags: &[&str]) -> (Value, i32) {
        self.run_with(&self.url(), extra, flags)
    }

    /// A book with one `git` task whose arguments are `repo`, `dest` and `extra`.
    fn book(&self, repo: &str, extra: &str) -> PathBuf {
        let book = self.work.path().join("book.yml");
        std::fs::write(
            &book,
            format!(
                "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {{name: git}}\nspec:\n  steps:\n    - name: s\n      tasks:\n        - name: checkout\n          git: {{repo: \"{repo}\", dest: \"{}\"{extra}}}\n",
                self.dest().display()
            ),
        )
        .unwrap();
        book
    }

    fn run_with(&self, repo: &str, extra: &str, flags: &[&str]) -> (Value, i32) {
        let book = self.book(repo, extra);
        // HOME is the client's: libgit2 reads `~/.ssh/known_hosts` from it.
        let (report, output) = json_report(
            local_command(&book, flags)
                .args(["-o", "json"])
                .env("HOME", self.home())
                .output()
                .unwrap(),
        );
        let result = report["results"][0].clone();
        assert!(result.is_object(), "{report}\n{}", stderr(&output));
        (result, output.status.code().unwrap())
    }

    /// Runs a book whose task must fail (exit status 2) and returns its message.
    fn fails(&self, repo: &str, extra: &str) -> String {
        let (result, code) = self.run_with(repo, extra, &[]);
        assert_eq!(
            (result["status"].as_str(), code),
            (Some("failed"), 2),
            "{result}"
        );
        result["msg"].as_str().unwrap().to_string()
    }

    fn checked_out(&self) -> String {
        std::fs::read_to_string(self.dest().join("a.txt")).unwrap()
    }
}

#[test]
fn clones_then_stays_ok_then_follows_new_commits_and_pins_versions() {
    let upstream = Upstream::new();
    let first = upstream.push("one");
    upstream.tag("v1");
    let second = upstream.push("two");

    let (result, code) = upstream.run("", &[]);
    assert_eq!(
        (result["status"].as_str(), code),
        (Some("changed"), 0),
        "{result}"
    );
    assert_eq!(result["output"]["before"], Value::Null);
    assert_eq!(result["output"]["after"], second);
    assert_eq!(result["output"]["remote_url"], upstream.url());
    assert_eq!(upstream.checked_out(), "two");
    // On the default branch, as `git clone` leaves it, so `git pull` works there.
    assert_eq!(
        git(&upstream.dest(), &["symbolic-ref", "HEAD"]),
        "refs/heads/main"
    );

    let (result, _) = upstream.run("", &[]);
    assert_eq!(result["status"], "ok", "{result}");
    assert_eq!(result["output"]["before"], second);
    assert_eq!(result["output"]["after"], second);

    let third = upstream.push("three");
    let (result, _) = upstream.run("", &[]);
    assert_eq!(result["status"], "changed", "{result}");
    assert_eq!(result["output"]["before"], second);
    assert_eq!(result["output"]["after"], third);
    assert_eq!(
        result["msg"],
        format!(
            "move from {} to {} (branch main)",
            &second[..12],
            &third[..12]
        )
    );
    assert_eq!(upstream.checked_out(), "three");

    let (result, _) = upstream.run(", version: v1", &[]);
    assert_eq!(result["status"], "changed", "{result}");
    assert_eq!(result["output"]["after"], first, "the tag's commit");
    assert_eq!(upstream.checked_out(), "one");
    assert_eq!(
        git(&upstream.dest(), &["rev-parse", "--abbrev-ref", "HEAD"]),
        "HEAD",
        "a tag is checked out detached"
    );
    for version in [first.as_str(), &first[..8]] {
        let (result, _) = upstream.run(&format!(", version: \"{version}\""), &[]);
        assert_eq!(result["status"], "ok", "{version}: {result}");
    }

    let (result, _) = upstream.run(", version: main", &[]);
    assert_eq!(result["output"]["after"], third);
}

#[test]
fn local_changes_fail_unless_forced_away() {
    let upstream = Upstream::new();
    let commit = upstream.push("one");
    upstream.run("", &[]);
    std::fs::write(upstream.dest().join("a.txt"), "edited").unwrap();
    std::fs::write(upstream.dest().join("untracked.txt"), "mine").unwrap();

    assert_eq!(
        upstream.fails(&upstream.url(), ""),
        format!(
            "{} has local changes to a.txt; commit or undo them, or set `force: true` to discard them",
            upstream.dest().display()
        )
    );
    assert_eq!(upstream.checked_out(), "edited");

    let (result, code) = upstream.run(", force: true", &[]);
    assert_eq!(
        (result["status"].as_str(), code),
        (Some("changed"), 0),
        "{result}"
    );
    assert_eq!(result["msg"], "discard local changes to a.txt");
    assert_eq!(result["output"]["after"], commit);
    assert_eq!(upstream.checked_out(), "one");
    assert!(
        upstream.dest().join("untracked.txt").exists(),
        "untracked files are not local changes"
    );

    let (result, _) = upstream.run(", force: true", &[]);
    assert_eq!(result["status"], "ok", "{result}");
}

#[test]
fn check_mode_says_what_would_happen_and_touches_nothing() {
    let upstream = Upstream::new();
    let first = upstream.push("one");

    let (result, code) = upstream.run("", &["--check"]);
    assert_eq!(
        (result["status"].as_str(), code),
        (Some("changed"), 0),
        "{result}"
    );
    assert_eq!(
        result["msg"],
        format!(
            "would clone {} to {} at branch main",
            upstream.url(),
            upstream.dest().display()
        )
    );
    assert_eq!(result["output"]["after"], first);
    assert!(!upstream.dest().exists());

    upstream.run("", &[]);
    let second = upstream.push("two");
    let before = snapshot(&upstream.dest());
    let (result, _) = upstream.run("", &["--check"]);
    assert_eq!(result["status"], "changed", "{result}");
    assert_eq!(
        result["msg"],
        format!(
            "would move from {} to {} (branch main)",
            &first[..12],
            &second[..12]
        )
    );
    assert_eq!(result["output"]["before"], first);
    assert_eq!(result["output"]["after"], second);
    assert_eq!(
        result["diff"],
        format!("commit: {first} -> {second}\n"),
        "check mode shows the diff"
    );
    assert_eq!(snapshot(&upstream.dest()), before);
    assert_eq!(upstream.checked_out(), "one");
}

#[test]
fn bad_versions_repositories_and_dests_fail_clearly_and_change_nothing() {
    let upstream = Upstream::new();
    upstream.push("one");

    let url = upstream.url();
    assert_eq!(
        upstream.fails(&url, ", version: no-such-branch"),
        format!("`version` no-such-branch is not a branch or tag of {url}, nor a commit id")
    );
    assert!(!upstream.dest().exists());

    assert_eq!(
        upstream.fails(&url, ", version: deadbeef"),
        format!("unknown revision: commit deadbeef is not a commit on any branch or tag of {url}")
    );
    assert!(!upstream.dest().exists(), "a failed clone leaves nothing");

    let missing = format!("file://{}/absent.git", upstream.work.path().display());
    let msg = upstream.fails(&missing, "");
    assert!(
        msg.starts_with(&format!("cannot reach the repository {missing}: ")),
        "{msg}"
    );

    std::fs::create_dir_all(upstream.dest()).unwrap();
    std::fs::write(upstream.dest().join("notes.txt"), "keep").unwrap();
    let before = snapshot(&upstream.dest());
    assert_eq!(
        upstream.fails(&url, ""),
        format!(
            "dest {} exists and is not a git repository; remove it, or choose another dest",
            upstream.dest().display()
        )
    );
    assert_eq!(snapshot(&upstream.dest()), before);

    std::fs::remove_dir_all(upstream.dest()).unwrap();
    upstream.run("", &[]);
    let unknown = upstream.fails(&url, ", version: deadbeef");
    assert!(
        unknown.starts_with("unknown revision: commit deadbeef"),
        "{unknown}"
    );
    assert_eq!(upstream.checked_out(), "one", "an existing checkout stays");
}

#[test]
fn clones_over_ssh_with_its_key_file_and_refuses_an_unknown_host_or_a_refused_key() {
    let sshd = match Sshd::start() {
        Ok(sshd) => sshd,
        Err(why) => return eprintln!("SKIPPED git over ssh: {why}"),
    };
    let upstream = Upstream::new();
    let commit = upstream.push("over ssh");
    let url = sshd.url(&upstream.work.path().join("remote.git"));
    let key = format!(", key_file: {}", sshd.client_key().display());

    let unknown = upstream.fails(&url, &key);
    assert!(
        unknown.starts_with(&format!("cannot reach the repository {url}: "))
            && unknown.contains("known_hosts"),
        "an unknown host is refused, and the error says where its key belongs: {unknown}"
    );
    assert!(!upstream.dest().exists());

    sshd.trust_in(&upstream.home());
    let refused = upstream.fails(&url, &format!(", key_file: {}", sshd.other_key().display()));
    assert!(refused.contains("key_file"), "{refused}");
    assert!(!upstream.dest().exists());

    let (result, code) = upstream.run_with(&url, &key, &[]);
    assert_eq!(
        (result["status"].as_str(), code),
        (Some("changed"), 0),
        "{result}\nsshd:\n{}",
        sshd.log()
    );
    assert_eq!(result["output"]["after"], commit.as_str());
    assert_eq!(upstream.checked_out(), "over ssh");
    let (again, _) = upstream.run_with(&url, &key, &[]);
    assert_eq!(again["status"], "ok", "{again}");
}

#[test]
fn urls_of_unauthenticated_or_command_running_transports_are_refused() {
    let upstream = Upstream::new();
    let local_path = upstream.work.path().join("remote.git");
    let local_path = local_path.to_str().unwrap();
    for (url, expected) in [
        (
            "http://127.0.0.1:9/r.git",
            "uses http://, which is unauthenticated",
        ),
        (
            "git://127.0.0.1/r.git",
            "uses git://, which is unauthenticated",
        ),
        (
            "ext::sh -c touch% /tmp/weft-ext",
            "`ext::` transport, which runs a program",
        ),
        (local_path, "is a local path; write it as file://"),
    ] {
        // A literal URL is refused with its place before the run.
        let output = local_command(&upstream.book(url, ""), &[])
            .output()
            .unwrap();
        let error = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{url}: {error}");
        assert!(
            error.contains(expected)
                && error.contains("book.yml:9:23: `spec.steps[0].tasks[0].git.repo`: git URL"),
            "{url}: {error}"
        );
        // A templated one when the task runs.
        let (result, code) = upstream.run_with("{{ url }}", "", &["-e", &format!("url={url}")]);
        assert_eq!(
            (result["status"].as_str(), code),
            (Some("failed"), 2),
            "{result}"
        );
        assert!(
            result["msg"].as_str().unwrap().contains(expected),
            "{url}: {result}"
        );
        assert!(!upstream.dest().exists());
    }
}

#[test]
fn a_commit_whose_names_would_leave_the_checkout_is_refused_and_nothing_is_written() {
    let upstream = Upstream::new();
    let outside = upstream.work.path().join("outside");
    let absolute = outside.display().to_string();
    for name in ["..", "x/../../outside", absolute.as_str()] {
        commit_crafted_tree(
            &upstream.work.path().join("remote.git"),
            &[("a.txt", "fine"), (name, "planted")],
        );
        let msg = upstream.fails(&upstream.url(), "");
        assert!(
            msg.starts_with(&format!(
                "the commit holds an entry named {name:?} at its top"
            )),
            "{name}: {msg}"
        );
        assert!(msg.contains("Nothing of the commit was written"), "{msg}");
        assert!(!outside.exists(), "{name}: a file was planted outside");
        assert!(
            !upstream.dest().exists(),
            "{name}: a failed clone leaves nothing"
        );
    }
}
