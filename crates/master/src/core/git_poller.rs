//! The leader's duty for GitRepository objects: fetch each repository's branch every
//! `interval` (at once when the object changes or a fetch is asked for), record what it
//! saw, and run the `on_push` TaskBooks of each new commit. The status write that
//! records a commit is conditional on the status read before the fetch, so a commit is
//! handled by one leader once, even across a change of leader.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use weft_taskbook::objects::Kind;
use weft_taskbook::report::unix_ms_now;

use super::events::{types, EventLog, NewEvent};
use super::git_repositories::{
    decide, is_due, secret_value, FetchedCommit, GitError, GitStatus, Remote, Repo, RepoId,
    FETCH_REQUEST_PREFIX, FETCH_TIMEOUT, POLL_TICK, STATUS_PREFIX,
};
use super::job::JobOrigin;
use super::objects::ObjectRegistry;
use super::record::{decode, encode};
use super::run::{JobRunner, PlannedRun, RunError, RunRequest, RunScope};
use crate::store::{Precondition, Store};

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
        for stored in self.objects.list(Kind::GitRepository, None).await? {
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
            kind: Kind::GitRepository,
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
                Err(error) => Err(RunError::from(error)),
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
