//! Real git for the tests: the `git` CLI insulated from this machine's configuration,
//! and a real OpenSSH server on loopback that serves repositories over ssh://.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::cluster::assert_success;
use super::{free_port, stdout};

const SSHD: &str = "/usr/sbin/sshd";

/// Runs the git CLI in `dir`, insulated from this machine's git configuration.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args([
            "-c",
            "user.name=weft test",
            "-c",
            "user.email=test@weft.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert_success(&output, &format!("git {args:?}"));
    stdout(&output).trim().to_string()
}

/// Commits a tree holding `entries` (name, content) exactly as given onto `main` of the
/// repository at `dir`, and returns the commit id. The tree is written raw, past the
/// checks of `git mktree`, so names git itself never makes (`..`, `a/../b`, `/etc/x`)
/// can be given to see what readers of such a commit do.
pub fn commit_crafted_tree(dir: &Path, entries: &[(&str, &str)]) -> String {
    let mut entries = entries.to_vec();
    // Git's tree order; for plain files that is byte order.
    entries.sort_by_key(|(name, _)| name.as_bytes());
    let mut tree = Vec::new();
    for (name, content) in entries {
        let blob = hash_object(dir, &["-w", "--stdin"], content.as_bytes());
        tree.extend_from_slice(format!("100644 {name}\0").as_bytes());
        tree.extend_from_slice(&hex_bytes(&blob));
    }
    let tree = hash_object(dir, &["-t", "tree", "--literally", "-w", "--stdin"], &tree);
    let commit = git(dir, &["commit-tree", &tree, "-m", "crafted"]);
    git(dir, &["update-ref", "refs/heads/main", &commit]);
    commit
}

/// `git hash-object ARGS` with `input` on stdin: the object id.
fn hash_object(dir: &Path, args: &[&str], input: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .arg("hash-object")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("git runs");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let output = child.wait_with_output().unwrap();
    assert_success(&output, &format!("git hash-object {args:?}"));
    stdout(&output).trim().to_string()
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("an object id is hex"))
        .collect()
}

/// An sshd on 127.0.0.1 that lets this user in with one key only (no passwords), so
/// `ssh://` URLs reach repositories on this machine as they would a git host's.
pub struct Sshd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    host_public_key: String,
}

impl Sshd {
    /// Starts one, or says why it cannot (sshd is missing) so the caller skips aloud.
    pub fn start() -> Result<Sshd, String> {
        if !Path::new(SSHD).exists() {
            return Err(format!(
                "{SSHD} is missing (Debian's openssh-server; scripts/test installs it)"
            ));
        }
        let dir = tempfile::tempdir().unwrap();
        for key in ["host_key", "client_key"] {
            keygen(&dir.path().join(key));
        }
        let authorized = dir.path().join("authorized_keys");
        std::fs::copy(dir.path().join("client_key.pub"), &authorized).unwrap();
        // sshd refuses to start without its privilege separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("sshd.log")).unwrap();
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f", "/dev/null", "-p", &port.to_string()])
            .arg("-h")
            .arg(dir.path().join("host_key"))
            .arg("-o")
            .arg(format!("AuthorizedKeysFile={}", authorized.display()))
            .args([
                "-o",
                "ListenAddress=127.0.0.1",
                "-o",
                "PasswordAuthentication=no",
                "-o",
                "KbdInteractiveAuthentication=no",
                "-o",
                "PermitRootLogin=prohibit-password",
                "-o",
                "StrictModes=no",
                "-o",
                "PidFile=none",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let host_public_key = std::fs::read_to_string(dir.path().join("host_key.pub")).unwrap();
        let mut sshd = Sshd {
            child,
            port,
            dir,
            host_public_key,
        };
        sshd.wait_until_listening();
        Ok(sshd)
    }

    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sshd exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "sshd is not listening:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `ssh://USER@127.0.0.1:PORT/PATH` for a repository at the absolute `path`.
    pub fn url(&self, path: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            user_name(),
            self.port,
            path.display()
        )
    }

    /// The private key sshd accepts.
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// A private key sshd does not accept.
    pub fn other_key(&self) -> PathBuf {
        let other = self.dir.path().join("other_key");
        if !other.exists() {
            keygen(&other);
        }
        other
    }

    /// Writes `HOME/.ssh/known_hosts` so that a client with that HOME trusts this server.
    pub fn trust_in(&self, home: &Path) {
        let ssh = home.join(".ssh");
        std::fs::create_dir_all(&ssh).unwrap();
        let mut fields = self.host_public_key.split_whitespace();
        let (kind, key) = (fields.next().unwrap(), fields.next().unwrap());
        std::fs::write(
            ssh.join("known_hosts"),
            format!("[127.0.0.1]:{} {kind} {key}\n", self.port),
        )
        .unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let output = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "weft-test", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen runs (Debian's openssh-client)");
    assert_success(&output, "ssh-keygen");
}

fn user_name() -> String {
    let output = Command::new("id").arg("-un").output().expect("id runs");
    stdout(&output).trim().to_string()
}
