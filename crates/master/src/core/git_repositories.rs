//! GitRepository objects: the leader fetches each repository's branch every
//! `interval` (at once when the object changes or a fetch is asked for), keeps what it
//! saw in the store under `/git-status/<namespace>/<name>`, and runs the `on_push`
//! TaskBooks of each new commit. The status write that records a commit is
//! conditional on the status read before the fetch, so a commit is handled by one
//! leader once, even across a change of leader.
//!
//! Events of a repository go to the repository's own namespace, where its runs read
//! variables and secrets and where its admins look.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use weft_modules::bundle::Bundle;
use weft_taskbook::objects::{AnyObject, GitRepositorySpec, SecretKeyRef};
use weft_taskbook::report::unix_ms_now;

use super::events::{types, EventLog, NewEvent};
use super::job::JobOrigin;
use super::job_runner::{JobRunner, PlannedRun, RunError, RunRequest, RunScope};
use super::objects::{ObjectError, ObjectRegistry, StoredObject};
use super::record::{decode, encode, CorruptRecord};
use crate::store::{Precondition, Store, StoreError};

const STATUS_PREFIX: &str = "/git-status/";
const FETCH_REQUEST_PREFIX: &str = "/git-fetch-requests/";
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
    fn key(&self, prefix: &str) -> String {
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
struct Repo {
    id: RepoId,
    spec: GitRepositorySpec,
    revision: u64,
}

impl Repo {
    fn from_stored(stored: &StoredObject) -> Result<Option<Repo>, GitError> {
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
        for stored in self.objects.list("GitRepository", Some(namespace)).await? {
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
            .get("GitRepository", Some(&repo.namespace), &repo.name)
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
            .get("GitRepository", Some(&repo.namespace), &repo.name)
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
    ) -> Result<Bundle, RunError> {
        let mirrors = self.mirrors.clone();
        let (id, at) = (repo.clone(), commit.to_string());
        let files = tokio::task::spawn_blocking(move || mirrors.read_commit(&id, &at))
            .await
            .map_err(|e| RunError::Scratch(e.to_string()))?
            .map_err(|e| {
                RunError::Input(weft_taskbook::Error::new(format!(
                    "the GitRepository `{}` cannot be read at {commit}: {e}",
                    repo.name
                )))
            })?;
        if !files.contains_key(path) {
            return Err(RunError::Input(
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

/// The leader's duty: fetch, decide, record, run.
pub struct GitPoller<S> {
    store: S,
    objects: ObjectRegistry<S>,
    events: EventLog<S>,
    runner: JobRunner<S>,
}

impl<S: Store + Clone> GitPoller<S> {
    pub fn new(
        store: S,
        objects: ObjectRegistry<S>,
        events: EventLog<S>,
        runner: JobRunner<S>,
    ) -> Self {
        GitPoller {
            store,
            objects,
            events,
            runner,
        }
    }

    /// Polls until dropped (when this master stops leading).
    pub async fn run(self) {
        let mut tick = tokio::time::interval(POLL_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(error) = self.poll_due().await {
                tracing::warn!(%error, "GitRepositories could not be polled");
            }
        }
    }

    async fn poll_due(&self) -> Result<(), GitError> {
        let mut live = BTreeSet::new();
        for stored in self.objects.list("GitRepository", None).await? {
            let Some(repo) = Repo::from_stored(&stored)? else {
                continue;
            };
            live.insert(repo.id.clone());
            let status_entry = self.store.get(&repo.id.key(STATUS_PREFIX)).await?;
            let status: GitStatus = match &status_entry {
                Some(entry) => decode(entry)?,
                None => GitStatus::default(),
            };
            let requested = match self.store.get(&repo.id.key(FETCH_REQUEST_PREFIX)).await? {
                Some(entry) => decode::<u64>(&entry).ok(),
                None => None,
            };
            let interval = repo.spec.interval.0;
            if !is_due(&status, repo.revision, interval, requested, unix_ms_now()) {
                continue;
            }
            let precondition = match &status_entry {
                Some(entry) => Precondition::ModRevision(entry.mod_revision),
                None => Precondition::Absent,
            };
            if let Err(error) = self.fetch(&repo, &status, precondition).await {
                tracing::warn!(namespace = %repo.id.namespace, repo = %repo.id.name, %error, "GitRepository not handled");
            }
        }
        self.forget_deleted(&live).await
    }

    /// A deleted repository's status and mirror go, so one created again under its
    /// name starts afresh (its first commit runs its `on_push`).
    async fn forget_deleted(&self, live: &BTreeSet<RepoId>) -> Result<(), GitError> {
        for entry in self.store.list(STATUS_PREFIX).await? {
            let Some((namespace, name)) = entry.key[STATUS_PREFIX.len()..].split_once('/') else {
                continue;
            };
            let repo = RepoId {
                namespace: namespace.to_string(),
                name: name.to_string(),
            };
            if live.contains(&repo) {
                continue;
            }
            let mirrors = self.runner.repos().mirrors();
            let id = repo.clone();
            match tokio::task::spawn_blocking(move || mirrors.remove(&id)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    tracing::warn!(namespace = %repo.namespace, repo = %repo.name, %error, "the mirror of a deleted GitRepository stays");
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, "the mirror of a deleted GitRepository stays");
                    continue;
                }
            }
            self.store
                .delete(&repo.key(FETCH_REQUEST_PREFIX), Precondition::None)
                .await?;
            self.store
                .delete(&entry.key, Precondition::ModRevision(entry.mod_revision))
                .await?;
            tracing::info!(namespace = %repo.namespace, repo = %repo.name, "deleted GitRepository forgotten: status and mirror removed");
        }
        Ok(())
    }

    async fn fetch(
        &self,
        repo: &Repo,
        status: &GitStatus,
        precondition: Precondition,
    ) -> Result<(), GitError> {
        let started = unix_ms_now();
        let fetched = match self.ssh_key(repo).await {
            Ok(ssh_key) => self.fetch_blocking(repo, ssh_key).await,
            Err(error) => Err(error),
        };
        let decision = decide(status, fetched, repo.revision, started);
        // Conditional: a leader that lost the race (or its term) handles nothing.
        self.store
            .put(
                &repo.id.key(STATUS_PREFIX),
                encode(&decision.status),
                precondition,
            )
            .await?;
        let (ns, name) = (&repo.id.namespace, &repo.id.name);
        if let Some(error) = decision.new_error {
            tracing::warn!(namespace = %ns, repo = %name, %error, "GitRepository fetch failed");
            self.emit(
                repo,
                types::GIT_FETCH_FAILED,
                json!({"repo": name, "namespace": ns, "url": repo.spec.url, "error": error}),
            )
            .await;
        }
        if let Some((fetched, previous)) = decision.new_commit {
            tracing::info!(namespace = %ns, repo = %name, commit = %fetched.commit, "GitRepository has a new commit");
            self.emit(
                repo,
                types::GIT_COMMIT,
                json!({"repo": name, "namespace": ns, "commit": fetched.commit,
                       "previous": previous, "message": fetched.summary}),
            )
            .await;
            self.run_on_push(repo, &fetched.commit).await;
        }
        Ok(())
    }

    async fn ssh_key(&self, repo: &Repo) -> Result<Option<String>, String> {
        let Some(key_ref) = &repo.spec.ssh_key else {
            return Ok(None);
        };
        secret_value(&self.objects, &repo.id.namespace, key_ref)
            .await
            .map(Some)
            .map_err(|e| format!("the ssh key cannot be read: {e}"))
    }

    async fn fetch_blocking(
        &self,
        repo: &Repo,
        ssh_key: Option<String>,
    ) -> Result<FetchedCommit, String> {
        let mirrors = self.runner.repos().mirrors();
        let (id, url, branch) = (
            repo.id.clone(),
            repo.spec.url.clone(),
            repo.spec.branch.clone(),
        );
        let fetch = tokio::task::spawn_blocking(move || {
            let remote = Remote {
                url: &url,
                branch: &branch,
                ssh_key: ssh_key.as_deref(),
            };
            mirrors.fetch(&id, remote)
        });
        // The mirror aborts a slow transfer itself; this bounds what it cannot see.
        match tokio::time::timeout(FETCH_TIMEOUT * 2, fetch).await {
            Ok(Ok(fetched)) => fetched,
            Ok(Err(error)) => Err(format!("the fetch stopped: {error}")),
            Err(_) => Err("the fetch did not finish in time; it is abandoned".into()),
        }
    }

    /// Every `on_push` TaskBook of `commit` is planned before any starts: one that is
    /// invalid stops them all, so a commit runs whole or not at all.
    async fn run_on_push(&self, repo: &Repo, commit: &str) {
        let origin = JobOrigin {
            kind: "GitRepository".into(),
            namespace: repo.id.namespace.clone(),
            name: repo.id.name.clone(),
            event_id: None,
        };
        let mut planned: Vec<PlannedRun> = Vec::new();
        for on_push in &repo.spec.on_push {
            let prepared = match self
                .runner
                .repos()
                .bundle_at(&repo.id, commit, &on_push.path)
                .await
            {
                Ok(bundle) => {
                    self.runner
                        .plan(RunRequest {
                            bundle,
                            scope: RunScope::Namespace(Some(repo.id.namespace.clone())),
                            origin: Some(origin.clone()),
                            commits: [(repo.id.name.clone(), commit.to_string())].into(),
                            ..RunRequest::default()
                        })
                        .await
                }
                Err(error) => Err(error),
            };
            match prepared {
                Ok(run) => planned.push(run),
                // The master's own trouble (store, scratch space), not the commit's.
                Err(error) if !matches!(error, RunError::Input(_)) => {
                    tracing::error!(namespace = %repo.id.namespace, repo = %repo.id.name, %commit, path = %on_push.path, %error, "the commit's on_push TaskBooks could not be prepared and do not run");
                    return;
                }
                Err(error) => {
                    tracing::warn!(namespace = %repo.id.namespace, repo = %repo.id.name, %commit, path = %on_push.path, %error, "the commit's on_push TaskBooks do not run");
                    self.emit(
                        repo,
                        types::GIT_INVALID,
                        json!({"repo": repo.id.name, "namespace": repo.id.namespace,
                               "commit": commit, "path": on_push.path, "error": error.to_string()}),
                    )
                    .await;
                    return;
                }
            }
        }
        for run in planned {
            let job_id = run.job_id().to_string();
            self.runner.launch(run).await;
            tracing::info!(namespace = %repo.id.namespace, repo = %repo.id.name, %commit, job = %job_id, "on_push TaskBook started");
        }
    }

    async fn emit(&self, repo: &Repo, event_type: &str, data: Value) {
        let event = NewEvent {
            event_type: event_type.to_string(),
            namespace: repo.id.namespace.clone(),
            data: data.as_object().cloned().unwrap_or_default(),
            ..NewEvent::default()
        };
        if let Err(error) = self.events.emit(event).await {
            tracing::warn!(event = %event_type, %error, "event not stored");
        }
    }
}

async fn secret_value<S: Store + Clone>(
    objects: &ObjectRegistry<S>,
    namespace: &str,
    key_ref: &SecretKeyRef,
) -> Result<String, String> {
    let stored = objects
        .get("Secret", Some(namespace), &key_ref.secret)
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
