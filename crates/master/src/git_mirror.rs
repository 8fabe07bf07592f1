//! The git plumbing behind GitRepository objects (libgit2 through git2): one bare
//! mirror per repository under `<data-dir>/repos/<namespace>/<name>.git`, fetched one
//! branch at a time, and commits read back as files. The core sees it through
//! `core::git_repositories::GitMirrors` and knows nothing of git2.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use git2::{Cred, CredentialType, FetchOptions, ObjectType, Oid, RemoteCallbacks, Repository};
use weft_modules::{check_tree_entry_name, git_error_message};
use weft_taskbook::limits::{MAX_BUNDLE_BYTES, MAX_BUNDLE_FILES};
use weft_taskbook::objects::validate_git_url;

use crate::core::git_repositories::{FetchedCommit, GitMirrors, Remote, RepoId, FETCH_TIMEOUT};

/// A mirror larger than this is not fetched: a repository of TaskBooks is small.
const MAX_FETCH_BYTES: usize = 256 * 1024 * 1024;
/// Folders nest at most this deep in a commit that is read.
const MAX_TREE_DEPTH: usize = 8;

pub struct GitMirrorDir {
    root: PathBuf,
    /// Mirrors being fetched now; a second fetch of one waits for the next interval.
    fetching: Mutex<HashSet<RepoId>>,
}

impl GitMirrorDir {
    /// Mirrors under `root` (the master's `<data-dir>/repos`). Sets libgit2's network
    /// timeouts, which hold for the whole process.
    pub fn new(root: PathBuf) -> Self {
        let millis = FETCH_TIMEOUT.as_millis() as i32;
        // SAFETY: these set process-wide integers in libgit2, before any fetch runs.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(millis);
            let _ = git2::opts::set_server_timeout_in_milliseconds(millis);
        }
        GitMirrorDir {
            root,
            fetching: Mutex::new(HashSet::new()),
        }
    }

    fn path(&self, repo: &RepoId) -> PathBuf {
        self.root
            .join(&repo.namespace)
            .join(format!("{}.git", repo.name))
    }

    fn open_or_init(path: &Path) -> Result<Repository, String> {
        if path.exists() {
            return Repository::open_bare(path).map_err(|e| {
                format!(
                    "the mirror {} is unreadable: {}",
                    path.display(),
                    e.message()
                )
            });
        }
        std::fs::create_dir_all(path)
            .map_err(|e| format!("cannot create the mirror {}: {e}", path.display()))?;
        Repository::init_bare(path).map_err(|e| {
            format!(
                "cannot create the mirror {}: {}",
                path.display(),
                e.message()
            )
        })
    }

    fn fetch_locked(&self, repo: &RepoId, remote: Remote) -> Result<FetchedCommit, String> {
        let Remote {
            url,
            branch,
            ssh_key,
        } = remote;
        // Objects stored before URLs were checked on apply are checked here.
        validate_git_url(url)?;
        let reference = format!("refs/heads/{branch}");
        if !git2::Reference::is_valid_name(&reference) {
            return Err(format!("`{branch}` is not a valid branch name"));
        }
        let mirror = Self::open_or_init(&self.path(repo))?;
        let deadline = Instant::now() + FETCH_TIMEOUT;
        let mut callbacks = RemoteCallbacks::new();
        // Returning false aborts the transfer: past the deadline, or past the size bound.
        callbacks.transfer_progress(move |progress| {
            Instant::now() < deadline && progress.received_bytes() <= MAX_FETCH_BYTES
        });
        callbacks.sideband_progress(move |_| Instant::now() < deadline);
        let mut asked = 0;
        callbacks.credentials(move |_url, username, allowed| {
            asked += 1;
            let username = username.unwrap_or("git");
            match ssh_key {
                // libgit2 asks again after a refused key; once is enough to know.
                Some(_) if asked > 2 => Err(git2::Error::from_str(
                    "the remote refused the ssh key from the Secret named by `ssh_key`",
                )),
                Some(_) if allowed.contains(CredentialType::USERNAME) => Cred::username(username),
                Some(key) if allowed.contains(CredentialType::SSH_KEY) => {
                    Cred::ssh_key_from_memory(username, None, key, None)
                }
                _ => Err(git2::Error::from_str(
                    "the remote asks for credentials: give `ssh_key` for ssh:// (https:// is read anonymously)",
                )),
            }
        });
        let mut options = FetchOptions::new();
        options.remote_callbacks(callbacks);
        options.download_tags(git2::AutotagOption::None);
        let mut remote = mirror
            .remote_anonymous(url)
            .map_err(|e| format!("`{url}` is not a usable git URL: {}", e.message()))?;
        remote
            .fetch(
                &[format!("+{reference}:{reference}")],
                Some(&mut options),
                None,
            )
            .map_err(|e| {
                if Instant::now() >= deadline {
                    format!("the fetch took longer than {FETCH_TIMEOUT:?} and was abandoned")
                } else {
                    git_error_message(&e)
                }
            })?;
        let commit = mirror
            .find_reference(&reference)
            .and_then(|r| r.peel_to_commit())
            .map_err(|e| format!("branch `{branch}` has no commit: {}", e.message()))?;
        Ok(FetchedCommit {
            commit: commit.id().to_string(),
            summary: commit.summary().unwrap_or_default().to_string(),
        })
    }
}

impl GitMirrors for GitMirrorDir {
    fn fetch(&self, repo: &RepoId, remote: Remote) -> Result<FetchedCommit, String> {
        let fetching = || self.fetching.lock().unwrap_or_else(PoisonError::into_inner);
        if !fetching().insert(repo.clone()) {
            return Err("the previous fetch of this repository is still running".into());
        }
        let fetched = self.fetch_locked(repo, remote);
        fetching().remove(repo);
        fetched
    }

    fn remove(&self, repo: &RepoId) -> Result<(), String> {
        let path = self.path(repo);
        match std::fs::remove_dir_all(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(format!("cannot remove {}: {e}", path.display()))
            }
            _ => Ok(()),
        }
    }

    fn read_commit(&self, repo: &RepoId, commit: &str) -> Result<BTreeMap<String, Bytes>, String> {
        let mirror = Repository::open_bare(self.path(repo))
            .map_err(|e| format!("the repository's mirror is unreadable: {}", e.message()))?;
        let oid = Oid::from_str(commit).map_err(|e| e.message().to_string())?;
        let tree = mirror
            .find_commit(oid)
            .and_then(|c| c.tree())
            .map_err(|e| format!("commit {commit} is not in the mirror: {}", e.message()))?;
        let mut files = BTreeMap::new();
        let mut size = 0;
        read_tree(&mirror, &tree, "", 0, &mut files, &mut size)?;
        Ok(files)
    }
}

/// The commit's files, bounded as a bundle is: hidden entries and
/// submodules stay behind, and the same bounds hold. A name that would leave the
/// folder refuses the whole commit, since the run writes these paths out.
fn read_tree(
    mirror: &Repository,
    tree: &git2::Tree,
    prefix: &str,
    depth: usize,
    files: &mut BTreeMap<String, Bytes>,
    size: &mut usize,
) -> Result<(), String> {
    for entry in tree.iter() {
        check_tree_entry_name(prefix, entry.name_bytes())?;
        let Ok(name) = std::str::from_utf8(entry.name_bytes()) else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let path = format!("{prefix}{name}");
        let unreadable = |e: git2::Error| format!("cannot read `{path}`: {}", e.message());
        match entry.kind() {
            Some(ObjectType::Tree) if depth + 1 < MAX_TREE_DEPTH => {
                let subtree = mirror.find_tree(entry.id()).map_err(unreadable)?;
                read_tree(
                    mirror,
                    &subtree,
                    &format!("{path}/"),
                    depth + 1,
                    files,
                    size,
                )?;
            }
            // 0o120000: a symbolic link, whose target may lie outside the repository.
            Some(ObjectType::Blob) if entry.filemode() != 0o120000 => {
                let blob = mirror.find_blob(entry.id()).map_err(unreadable)?;
                *size += blob.size();
                if *size > MAX_BUNDLE_BYTES || files.len() >= MAX_BUNDLE_FILES {
                    return Err(format!(
                        "the commit holds more than {MAX_BUNDLE_FILES} files or {} MiB, the most one run ships; keep TaskBooks in a smaller repository",
                        MAX_BUNDLE_BYTES / (1024 * 1024)
                    ));
                }
                files.insert(path, Bytes::copy_from_slice(blob.content()));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let output = Command::new("git")
            .current_dir(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@weft.invalid"])
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "git {args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    }

    #[test]
    fn a_branch_is_fetched_and_its_commit_read_as_a_folder_is() {
        let root = tempfile::tempdir().unwrap();
        let work = root.path().join("work");
        std::fs::create_dir_all(work.join("files")).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        std::fs::write(work.join("site.yml"), "kind: TaskBook").unwrap();
        std::fs::write(work.join("files/motd"), "hi").unwrap();
        std::fs::write(work.join(".hidden"), "no").unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "first line\n\nbody"]);
        let head = git(&work, &["rev-parse", "HEAD"]);

        let mirrors = GitMirrorDir::new(root.path().join("mirrors"));
        let repo = RepoId {
            namespace: "prod".into(),
            name: "infra".into(),
        };
        let url = format!("file://{}", work.display());
        let remote = |branch| Remote {
            url: &url,
            branch,
            ssh_key: None,
        };
        let fetched = mirrors.fetch(&repo, remote("main")).unwrap();
        assert_eq!(fetched.commit, head);
        assert_eq!(fetched.summary, "first line");
        assert!(root.path().join("mirrors/prod/infra.git").is_dir());
        let files = mirrors.read_commit(&repo, &head).unwrap();
        assert_eq!(files.keys().collect::<Vec<_>>(), ["files/motd", "site.yml"]);

        mirrors.remove(&repo).unwrap();
        assert!(!root.path().join("mirrors/prod/infra.git").exists());
        mirrors.remove(&repo).unwrap();
        mirrors.fetch(&repo, remote("main")).unwrap();

        let missing = mirrors.fetch(&repo, remote("nope")).unwrap_err();
        assert!(missing.contains("nope"), "{missing}");
        let bad = mirrors.fetch(&repo, remote("a..b")).unwrap_err();
        assert!(bad.contains("not a valid branch name"), "{bad}");
    }
}
