//! Where a run's TaskBook comes from: the bundle a person sent, a stored TaskBook, or a
//! file of a GitRepository at its last fetched commit; repository includes are read
//! from the master's mirrors, and what was read joins the bundle the nodes get.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use weft_modules::CustomModules;
use weft_taskbook::bundle::{Bundle, REPOS_DIR};
use weft_taskbook::objects::{AnyObject, Kind};
use weft_taskbook::taskbook::{RepoFiles, TaskBookRef};
use weft_taskbook::{Error, TaskBook};

use super::{JobRunner, RunError, RunRequest};
use crate::core::git_repositories::{GitMirrors, RepoId, RepoState};
use crate::core::objects::{namespace_for, ObjectError, DEFAULT_NAMESPACE};
use crate::store::Store;

impl<S: Store + Clone> JobRunner<S> {
    /// The bundle of a TaskBook named by another object, and the commits it was read
    /// from: a stored TaskBook (`{name}`, in `namespace`), or a file of a
    /// GitRepository of `namespace` at its last fetched commit (`{repo, path}`).
    /// Repository includes are read when the run starts.
    pub async fn bundle_for(
        &self,
        taskbook: &TaskBookRef,
        namespace: &str,
    ) -> Result<(Bundle, BTreeMap<String, String>), RunError> {
        match (&taskbook.name, &taskbook.repo, &taskbook.path) {
            (Some(name), None, None) => Ok((self.stored_bundle(name, namespace).await?, BTreeMap::new())),
            (None, Some(repo), Some(path)) => {
                let id = RepoId {
                    namespace: namespace.to_string(),
                    name: repo.clone(),
                };
                let states = self.inner.repos.states(namespace).await?;
                let commit = fetched_commit(&states, repo, namespace).map_err(RunError::Input)?;
                let bundle = self.inner.repos.bundle_at(&id, &commit, path).await?;
                Ok((bundle, [(repo.clone(), commit)].into()))
            }
            _ => Err(RunError::Input(Error::new(
                "a TaskBook is named either by `name` (a stored TaskBook) or by `repo` and `path` (a file in a GitRepository)",
            ))),
        }
    }

    /// A stored TaskBook as a bundle of one file, the document as it was applied.
    async fn stored_bundle(&self, name: &str, namespace: &str) -> Result<Bundle, RunError> {
        let namespace = namespace_for(Kind::TaskBook, Some(namespace));
        let stored = self
            .inner
            .objects
            .get(Kind::TaskBook, namespace.as_deref(), name)
            .await
            .map_err(|e| RunError::Objects(Box::new(e)))?
            .ok_or_else(|| {
                RunError::Objects(Box::new(ObjectError::NotFound {
                    kind: Kind::TaskBook,
                    namespace: namespace.clone(),
                    name: name.into(),
                }))
            })?;
        let file = format!("{name}.yml");
        Ok(Bundle {
            files: [(file.clone(), stored.record.document.into_bytes().into())].into(),
            taskbook_file: file,
        })
    }

    /// Reads the request's TaskBook. Repository includes read the GitRepositories of
    /// `namespace` at their last fetched commit (or the commit the request names); the
    /// files read join the bundle, so the nodes read the same, and their commits join
    /// the request's.
    pub(super) async fn load(
        &self,
        request: &mut RunRequest,
        namespace: &str,
    ) -> Result<TaskBook, RunError> {
        if let Some(repo) = request
            .bundle
            .repos()
            .into_iter()
            .find(|repo| !request.commits.contains_key(*repo))
        {
            return Err(RunError::Input(Error::new(format!(
                "the bundle carries files under `{REPOS_DIR}/{repo}/` without the commit they are from; that folder is the master's"
            ))));
        }
        let states = self.inner.repos.states(namespace).await?;
        let scratch = self.inner.config.scratch_dir.clone();
        let bundle = request.bundle.clone();
        let mut repos = MasterRepos {
            namespace: namespace.to_string(),
            states,
            read: request.commits.clone(),
            added: BTreeMap::new(),
            mirrors: self.inner.repos.mirrors(),
            dir: PathBuf::new(),
        };
        let (taskbook, repos, read) = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&scratch)
                .map_err(|e| RunError::Scratch(format!("{}: {e}", scratch.display())))?;
            let dir = tempfile::tempdir_in(&scratch)
                .map_err(|e| RunError::Scratch(format!("{}: {e}", scratch.display())))?;
            repos.dir = dir.path().join(REPOS_DIR);
            let taskbook = bundle
                .load_taskbook_with(dir.path(), &mut repos, &CustomModules::OnNodes)
                .map_err(RunError::Input)?;
            let mut read = bundle;
            read.files.extend(std::mem::take(&mut repos.added));
            read.retain_read_by(&taskbook, dir.path(), &CustomModules::OnNodes)
                .map_err(RunError::Input)?;
            Ok::<_, RunError>((taskbook, repos, read))
        })
        .await
        .map_err(|e| RunError::Scratch(e.to_string()))??;
        request.bundle = read;
        request.commits = repos.read;
        request.bundle.validate().map_err(RunError::Input)?;
        Ok(taskbook)
    }
}

/// The namespace a TaskBook names for itself, else `default`; a file that does not parse
/// is reported when it is loaded.
pub(super) fn top_namespace(bundle: &Bundle) -> String {
    bundle
        .taskbook_source()
        .ok()
        .and_then(|source| {
            weft_taskbook::objects::parse_objects(
                source,
                std::path::Path::new(&bundle.taskbook_file),
            )
            .ok()
        })
        .and_then(|objects| {
            objects
                .into_iter()
                .find_map(|sourced| match sourced.object {
                    AnyObject::TaskBook(taskbook) => taskbook.metadata.namespace,
                    _ => None,
                })
        })
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
}

/// The last fetched commit of `repo`, or why there is none.
fn fetched_commit(
    states: &BTreeMap<String, RepoState>,
    repo: &str,
    namespace: &str,
) -> Result<String, Error> {
    match states.get(repo) {
        Some(RepoState::Fetched(commit)) => Ok(commit.clone()),
        Some(RepoState::NeverFetched { last_error }) => Err(Error::new(format!(
            "the GitRepository `{repo}` has not been fetched yet{}",
            last_error
                .as_ref()
                .map(|e| format!(" (the last fetch failed: {e})"))
                .unwrap_or_default()
        ))
        .with_hint(format!(
            "`weft get gitrepositories {repo} -n {namespace}` shows its status"
        ))),
        None => Err(Error::new(format!(
            "no GitRepository `{repo}` in namespace `{namespace}`"
        ))
        .with_hint(format!(
            "`weft get gitrepositories -n {namespace}` lists them; a run reads the repositories of its own namespace"
        ))),
    }
}

/// Repository includes as the master reads them: each repository once per run, at the
/// commit the run already read it at, else at its last fetched commit.
struct MasterRepos {
    namespace: String,
    states: BTreeMap<String, RepoState>,
    /// Commit by repository, of those read so far.
    read: BTreeMap<String, String>,
    /// The files of repositories read from their mirrors, by bundle path.
    added: BTreeMap<String, bytes::Bytes>,
    mirrors: Arc<dyn GitMirrors>,
    /// Where the bundle's repositories are written out.
    dir: PathBuf,
}

impl RepoFiles for MasterRepos {
    fn repo_dir(&mut self, repo: &str) -> Result<Option<PathBuf>, Error> {
        let dir = self.dir.join(repo);
        if self.read.contains_key(repo) {
            return Ok(Some(dir));
        }
        let commit = fetched_commit(&self.states, repo, &self.namespace)?;
        let id = RepoId {
            namespace: self.namespace.clone(),
            name: repo.to_string(),
        };
        let files = self
            .mirrors
            .read_commit(&id, &commit)
            .map_err(|e| Error::new(format!("the GitRepository `{repo}` cannot be read: {e}")))?;
        for (path, content) in files {
            let target = dir.join(&path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    Error::new(format!("cannot create the folder: {e}")).in_file(parent)
                })?;
            }
            std::fs::write(&target, &content)
                .map_err(|e| Error::new(format!("cannot write the file: {e}")).in_file(&target))?;
            self.added.insert(Bundle::repo_path(repo, &path), content);
        }
        self.read.insert(repo.to_string(), commit);
        Ok(Some(dir))
    }
}
