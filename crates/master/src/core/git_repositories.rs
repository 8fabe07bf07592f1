//! GitRepository objects as the rest of the master reads them: each repository's
//! status (`/git-status/<namespace>/<name>`), what a fetch decides, webhooks, and the
//! files of a commit from the mirrors. The leader's polling lives in `git_poller.rs`.
//!
//! Events of a repository go to the repository's own namespace, where its runs read
//! variables and secrets and where its admins look.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use weft_taskbook::bundle::Bundle;
use weft_taskbook::objects::{AnyObject, GitRepositorySpec, Kind, SecretKeyRef};
use weft_taskbook::report::unix_ms_now;

use super::objects::{ObjectError, ObjectRegistry, StoredObject};
use super::record::{decode, encode, CorruptRecord};
use crate::store::{Precondition, Store, StoreError};

pub(super) const STATUS_PREFIX: &str = "/git-status/";
pub(super) const FETCH_REQUEST_PREFIX: &str = "/git-fetch-requests/";
/// A fetch that takes longer is abandoned: a hung remote must not hold the leader.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the leader looks for repositories that are due; the shortest interval.
pub const POLL_TICK: Duration = Duration::from_secs(1);
/// A webhook body larger than this is refused unread.
pub const MAX_WEBHOOK_BODY_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoId {
    pub namespace: String,
    pub name: String,
}

impl RepoId {
    pub(super) fn key(&self, prefix: &str) -> String {
        format!("{prefix}{}/{}", self.namespace, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedCommit {
    pub commit: String,
    /// The first line of the commit message.
    pub summary: String,
}

/// Where a fetch reads from.
#[derive(Debug, Clone, Copy)]
pub struct Remote<'a> {
    pub url: &'a str,
    pub branch: &'a str,
    /// An ssh private key (PEM), for `ssh://`.
    pub ssh_key: Option<&'a str>,
}

/// The repositories' local copies. Calls block (network, disk): run them off the runtime.
pub trait GitMirrors: Send + Sync + 'static {
    /// Fetches the remote's branch into the mirror and returns its commit.
    fn fetch(&self, repo: &RepoId, remote: Remote) -> Result<FetchedCommit, String>;
    /// The files of a fetched commit, by `/`-separated path, within the bundle bounds.
    fn read_commit(&self, repo: &RepoId, commit: &str) -> Result<BTreeMap<String, Bytes>, String>;
    /// Removes the mirror of a deleted repository (none is fine).
    fn remove(&self, repo: &RepoId) -> Result<(), String>;
}

/// What the leader knows of a repository, kept in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitStatus {
    /// The last commit seen on the branch; its `on_push` TaskBooks ran (or were invalid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// When the last fetch started, whether or not it worked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched_unix_ms: Option<u64>,
    /// Why the last fetch failed; cleared by one that works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The object's revision at the last fetch: a changed object is fetched at once.
    #[serde(default)]
    pub object_revision: u64,
}

/// What one fetch means, decided from the status before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchDecision {
    pub status: GitStatus,
    /// A commit the branch did not have before, and the one it replaces.
    pub new_commit: Option<(FetchedCommit, Option<String>)>,
    /// An error to report: one not reported by the fetch before.
    pub new_error: Option<String>,
}

/// The status after a fetch that started at `now`, and what is new in it.
pub fn decide(
    previous: &GitStatus,
    fetched: Result<FetchedCommit, String>,
    object_revision: u64,
    now_unix_ms: u64,
) -> FetchDecision {
    let mut status = GitStatus {
        fetched_unix_ms: Some(now_unix_ms),
        object_revision,
        ..previous.clone()
    };
    match fetched {
        Ok(fetched) => {
            status.last_error = None;
            let new = previous.commit.as_deref() != Some(fetched.commit.as_str());
            status.commit = Some(fetched.commit.clone());
            status.summary = Some(fetched.summary.clone());
            FetchDecision {
                status,
                new_commit: new.then(|| (fetched, previous.commit.clone())),
                new_error: None,
            }
        }
        Err(error) => {
            let new_error = (previous.last_error.as_ref() != Some(&error)).then(|| error.clone());
            status.last_error = Some(error);
            FetchDecision {
                status,
                new_commit: None,
                new_error,
            }
        }
    }
}

/// Whether a repository is fetched now: never fetched, changed since, asked for after
/// the last fetch started, or its interval is up.
pub fn is_due(
    status: &GitStatus,
    object_revision: u64,
    interval: Duration,
    requested_unix_ms: Option<u64>,
    now_unix_ms: u64,
) -> bool {
    let Some(fetched) = status.fetched_unix_ms else {
        return true;
    };
    status.object_revision != object_revision
        || requested_unix_ms.is_some_and(|requested| requested >= fetched)
        || now_unix_ms.saturating_sub(fetched) >= interval.as_millis() as u64
}

/// Whether `signature` (`X-Hub-Signature-256`: `sha256=<hex>`) is the HMAC-SHA256 of
/// `body` under `key`, compared in constant time.
pub fn verify_signature(key: &[u8], body: &[u8], signature: Option<&str>) -> bool {
    let Some(tag) = signature
        .and_then(|s| s.trim().strip_prefix("sha256="))
        .and_then(|hex_tag| hex::decode(hex_tag).ok())
    else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::verify(&key, body, &tag).is_ok()
}

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Corrupt(#[from] CorruptRecord),
    #[error(transparent)]
    Objects(#[from] ObjectError),
    #[error("no GitRepository `{name}` in namespace `{namespace}`")]
    NotFound { namespace: String, name: String },
    /// A commit or a file of it that cannot be read as asked.
    #[error("{0}")]
    Commit(weft_taskbook::Error),
    /// The master's own trouble reading its mirror.
    #[error("the mirror could not be read: {0}")]
    Mirror(String),
}

/// What a webhook call comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// Verified: a fetch is asked for.
    Accepted,
    /// No such repository, or one without a `webhook_secret`.
    NotFound,
    Unauthorized,
}

/// A repository as stored, with its spec.
pub(super) struct Repo {
    pub(super) id: RepoId,
    pub(super) spec: GitRepositorySpec,
    pub(super) revision: u64,
}

impl Repo {
    pub(super) fn from_stored(stored: &StoredObject) -> Result<Option<Repo>, GitError> {
        let AnyObject::GitRepository(object) = stored.object()? else {
            return Ok(None);
        };
        Ok(Some(Repo {
            id: RepoId {
                namespace: stored.record.namespace.clone().unwrap_or_default(),
                name: stored.record.name.clone(),
            },
            spec: object.spec,
            revision: stored.resource_version,
        }))
    }
}

/// The repositories' statuses and mirrors, as runs read them.
#[derive(Clone)]
pub struct RepoReader<S> {
    store: S,
    objects: ObjectRegistry<S>,
    mirrors: Arc<dyn GitMirrors>,
}

/// A repository as a run finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoState {
    Fetched(String),
    NeverFetched { last_error: Option<String> },
}

impl<S: Store + Clone> RepoReader<S> {
    pub fn new(store: S, objects: ObjectRegistry<S>, mirrors: Arc<dyn GitMirrors>) -> Self {
        RepoReader {
            store,
            objects,
            mirrors,
        }
    }

    pub fn mirrors(&self) -> Arc<dyn GitMirrors> {
        self.mirrors.clone()
    }

    pub async fn status(&self, repo: &RepoId) -> Result<GitStatus, GitError> {
        Ok(match self.store.get(&repo.key(STATUS_PREFIX)).await? {
            Some(entry) => decode(&entry)?,
            None => GitStatus::default(),
        })
    }

    /// Every GitRepository of `namespace`, by name.
    pub async fn states(&self, namespace: &str) -> Result<BTreeMap<String, RepoState>, GitError> {
        let mut states = BTreeMap::new();
        for stored in self
            .objects
            .list(Kind::GitRepository, Some(namespace))
            .await?
        {
            let id = RepoId {
                namespace: namespace.to_string(),
                name: stored.record.name.clone(),
            };
            let status = self.status(&id).await?;
            let state = match status.commit {
                Some(commit) => RepoState::Fetched(commit),
                None => RepoState::NeverFetched {
                    last_error: status.last_error,
                },
            };
            states.insert(id.name, state);
        }
        Ok(states)
    }

    /// Asks the leader to fetch `repo` at its next tick (any master may ask).
    pub async fn request_fetch(&self, repo: &RepoId) -> Result<(), GitError> {
        if self
            .objects
            .get(Kind::GitRepository, Some(&repo.namespace), &repo.name)
            .await?
            .is_none()
        {
            return Err(GitError::NotFound {
                namespace: repo.namespace.clone(),
                name: repo.name.clone(),
            });
        }
        self.store
            .put(
                &repo.key(FETCH_REQUEST_PREFIX),
                encode(&unix_ms_now()),
                Precondition::None,
            )
            .await?;
        Ok(())
    }

    /// Checks a webhook call against the repository's `webhook_secret` and, when it holds,
    /// asks for a fetch. The outcome says nothing of why a call was refused.
    pub async fn webhook(
        &self,
        repo: &RepoId,
        body: &[u8],
        signature: Option<&str>,
    ) -> Result<WebhookOutcome, GitError> {
        let Some(stored) = self
            .objects
            .get(Kind::GitRepository, Some(&repo.namespace), &repo.name)
            .await?
        else {
            return Ok(WebhookOutcome::NotFound);
        };
        let Some(found) = Repo::from_stored(&stored)? else {
            return Ok(WebhookOutcome::NotFound);
        };
        let Some(key_ref) = &found.spec.webhook_secret else {
            return Ok(WebhookOutcome::NotFound);
        };
        let key = match secret_value(&self.objects, &repo.namespace, key_ref).await {
            Ok(key) => key,
            Err(error) => {
                tracing::warn!(namespace = %repo.namespace, repo = %repo.name, %error, "webhook refused: its key cannot be read");
                return Ok(WebhookOutcome::Unauthorized);
            }
        };
        if !verify_signature(key.as_bytes(), body, signature) {
            return Ok(WebhookOutcome::Unauthorized);
        }
        self.request_fetch(repo).await?;
        Ok(WebhookOutcome::Accepted)
    }

    /// `path` in `repo` at `commit`, as a bundle that carries the whole commit.
    pub async fn bundle_at(
        &self,
        repo: &RepoId,
        commit: &str,
        path: &str,
    ) -> Result<Bundle, GitError> {
        let mirrors = self.mirrors.clone();
        let (id, at) = (repo.clone(), commit.to_string());
        let files = tokio::task::spawn_blocking(move || mirrors.read_commit(&id, &at))
            .await
            .map_err(|e| GitError::Mirror(e.to_string()))?
            .map_err(|e| {
                GitError::Commit(weft_taskbook::Error::new(format!(
                    "the GitRepository `{}` cannot be read at {commit}: {e}",
                    repo.name
                )))
            })?;
        if !files.contains_key(path) {
            return Err(GitError::Commit(
                weft_taskbook::Error::new(format!(
                    "the GitRepository `{}` has no file `{path}` in commit {commit}",
                    repo.name
                ))
                .with_hint("name a file from the repository's top, like `taskbooks/site.yml`"),
            ));
        }
        Ok(Bundle {
            taskbook_file: Bundle::repo_path(&repo.name, path),
            files: files
                .into_iter()
                .map(|(file, content)| (Bundle::repo_path(&repo.name, &file), content))
                .collect(),
        })
    }
}

pub(super) async fn secret_value<S: Store + Clone>(
    objects: &ObjectRegistry<S>,
    namespace: &str,
    key_ref: &SecretKeyRef,
) -> Result<String, String> {
    let stored = objects
        .get(Kind::Secret, Some(namespace), &key_ref.secret)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no Secret `{}` in namespace `{namespace}`", key_ref.secret))?;
    let mut opened = objects.open_secret(&stored).map_err(|e| e.to_string())?;
    opened.remove(&key_ref.key).ok_or_else(|| {
        format!(
            "the Secret `{}` has no key `{}`",
            key_ref.secret, key_ref.key
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetched(commit: &str) -> Result<FetchedCommit, String> {
        Ok(FetchedCommit {
            commit: commit.into(),
            summary: format!("commit {commit}"),
        })
    }

    #[test]
    fn a_new_commit_is_new_once() {
        let first = decide(&GitStatus::default(), fetched("a"), 7, 1000);
        assert_eq!(
            first
                .new_commit
                .as_ref()
                .map(|(c, p)| (c.commit.as_str(), p.clone())),
            Some(("a", None))
        );
        assert_eq!(first.status.commit.as_deref(), Some("a"));
        assert_eq!(first.status.object_revision, 7);

        let same = decide(&first.status, fetched("a"), 7, 2000);
        assert_eq!(same.new_commit, None);
        assert_eq!(same.status.fetched_unix_ms, Some(2000));

        let next = decide(&same.status, fetched("b"), 7, 3000);
        assert_eq!(
            next.new_commit.map(|(c, p)| (c.commit, p)),
            Some(("b".to_string(), Some("a".to_string())))
        );
    }

    #[test]
    fn a_fetch_error_is_reported_once_until_it_changes_or_clears() {
        let ok = decide(&GitStatus::default(), fetched("a"), 1, 1000).status;
        let failed = decide(&ok, Err("unreachable".into()), 1, 2000);
        assert_eq!(failed.new_error.as_deref(), Some("unreachable"));
        assert_eq!(
            failed.status.commit.as_deref(),
            Some("a"),
            "the commit stays"
        );

        let again = decide(&failed.status, Err("unreachable".into()), 1, 3000);
        assert_eq!(again.new_error, None);
        let other = decide(&again.status, Err("refused".into()), 1, 4000);
        assert_eq!(other.new_error.as_deref(), Some("refused"));

        let recovered = decide(&other.status, fetched("a"), 1, 5000);
        assert_eq!(recovered.status.last_error, None);
        assert_eq!(
            recovered.new_commit, None,
            "the same commit is not new again"
        );
        let fails_again = decide(&recovered.status, Err("refused".into()), 1, 6000);
        assert_eq!(fails_again.new_error.as_deref(), Some("refused"));
    }

    #[test]
    fn a_repository_is_due_when_new_changed_asked_for_or_its_interval_is_up() {
        let minute = Duration::from_secs(60);
        assert!(is_due(&GitStatus::default(), 1, minute, None, 0));
        let status = GitStatus {
            fetched_unix_ms: Some(10_000),
            object_revision: 1,
            ..GitStatus::default()
        };
        assert!(!is_due(&status, 1, minute, None, 20_000));
        assert!(is_due(&status, 2, minute, None, 20_000), "changed object");
        assert!(
            is_due(&status, 1, minute, Some(15_000), 20_000),
            "asked for"
        );
        assert!(
            !is_due(&status, 1, minute, Some(5_000), 20_000),
            "asked before the last fetch"
        );
        assert!(is_due(&status, 1, minute, None, 70_000), "interval up");
    }

    #[test]
    fn only_the_hmac_of_the_body_under_the_key_verifies() {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"hook-key");
        let body = br#"{"ref":"refs/heads/main"}"#;
        let good = format!(
            "sha256={}",
            hex::encode(ring::hmac::sign(&key, body).as_ref())
        );
        assert!(verify_signature(b"hook-key", body, Some(&good)));
        assert!(!verify_signature(b"other-key", body, Some(&good)));
        assert!(!verify_signature(b"hook-key", b"{}", Some(&good)));
        assert!(!verify_signature(b"hook-key", body, None));
        assert!(
            !verify_signature(b"hook-key", body, Some(&good[7..])),
            "no sha256= prefix"
        );
        assert!(!verify_signature(b"hook-key", body, Some("sha256=zz")));
        assert!(!verify_signature(b"hook-key", body, Some("sha256=")));
    }
}
