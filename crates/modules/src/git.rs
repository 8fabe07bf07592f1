//! `git`: a working copy of a repository at `dest`, checked out at `version`, with
//! libgit2 (no `git` program needed on the node). Arguments follow Ansible's
//! `ansible.builtin.git`. The remote is listed before `dest` is touched, so check mode,
//! an unreachable repository and an unknown version all leave `dest` as it was.

use std::path::{Path, PathBuf};

use git2::build::CheckoutBuilder;
use git2::{
    AutotagOption, Cred, CredentialType, Direction, FetchOptions, Oid, Remote, RemoteCallbacks,
    Repository, Status, StatusOptions, Tree, TreeWalkMode, TreeWalkResult,
};
use serde::Deserialize;
use weft_taskbook::objects::validate_git_url;
use weft_taskbook::yaml::Node;
use weft_taskbook::Error;

use crate::files::{arg_error, literal_arg};
use crate::module::{Module, ModuleContext, ModuleError, Outcome};

pub struct Git;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitArgs {
    /// A URL: file://, https://, ssh:// or user@host:path (see `validate_git_url`).
    repo: String,
    dest: PathBuf,
    /// A branch, a tag or a commit id; the remote's default branch when absent.
    version: Option<String>,
    /// Discard changes to tracked files in `dest` instead of failing on them.
    #[serde(default)]
    force: bool,
    /// The private key for ssh:// repositories; without it the ssh agent is asked.
    key_file: Option<PathBuf>,
}

const REMOTE: &str = "origin";
/// Most files a local-changes message names.
const LISTED_FILES: usize = 10;

impl Module for Git {
    const NAME: &'static str = "git";
    type Args = GitArgs;

    fn validate(args: &Node, _base_dir: &Path) -> Result<(), Error> {
        match literal_arg(args, "repo") {
            Some((node, url)) => {
                validate_git_url(url).map_err(|message| arg_error(node, "repo", message))
            }
            None => Ok(()),
        }
    }

    fn check_apply(
        &self,
        args: GitArgs,
        context: &mut ModuleContext,
        apply: bool,
    ) -> Result<Outcome, ModuleError> {
        validate_git_url(&args.repo).map_err(ModuleError::Failed)?;
        let target = resolve_version(&args, &list_remote(&args)?)?;
        let outcome = match open_dest(&args.dest)? {
            None => clone(&args, &target, apply)?,
            Some(repo) => update(&args, &repo, &target, apply)?,
        };
        Ok(if context.want_diff {
            let diff = outcome
                .output
                .get("before")
                .zip(outcome.output.get("after"));
            let line = diff.and_then(|(before, after)| {
                let show = |v: &serde_json::Value| v.as_str().unwrap_or("(none)").to_string();
                (before != after).then(|| format!("commit: {} -> {}\n", show(before), show(after)))
            });
            outcome.with_diff(line)
        } else {
            outcome
        })
    }
}

/// What `version` names on the remote.
#[derive(Debug, PartialEq)]
enum Target {
    Branch {
        name: String,
        oid: Oid,
    },
    /// A tag, peeled to its commit.
    Tag {
        name: String,
        oid: Oid,
    },
    /// A commit id (perhaps abbreviated), found only once fetched.
    Commit(String),
}

impl Target {
    fn known_oid(&self) -> Option<Oid> {
        match self {
            Target::Branch { oid, .. } | Target::Tag { oid, .. } => Some(*oid),
            Target::Commit(_) => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Target::Branch { name, .. } => format!("branch {name}"),
            Target::Tag { name, .. } => format!("tag {name}"),
            Target::Commit(id) => format!("commit {id}"),
        }
    }
}

/// The remote's refs by name, with `HEAD`'s symbolic target when the remote tells it.
struct Listing {
    refs: Vec<(String, Oid)>,
    default_branch: Option<String>,
}

impl Listing {
    fn get(&self, name: &str) -> Option<Oid> {
        self.refs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, oid)| *oid)
    }
}

fn unreachable(repo: &str, error: git2::Error) -> ModuleError {
    ModuleError::Failed(format!(
        "cannot reach the repository {repo}: {}",
        git_error_message(&error)
    ))
}

/// libgit2's message, with what to do where libgit2 leaves it out. Shared with the
/// master's mirrors of GitRepositories, which fetch the same way.
pub fn git_error_message(error: &git2::Error) -> String {
    let unknown_host_key =
        error.class() == git2::ErrorClass::Ssh && error.code() == git2::ErrorCode::Certificate;
    if unknown_host_key {
        format!(
            "{}: the server's host key is not in ~/.ssh/known_hosts of the user weft runs as; \
             add it after checking its fingerprint (`ssh-keyscan -p PORT HOST >> ~/.ssh/known_hosts`)",
            error.message()
        )
    } else {
        error.message().to_string()
    }
}

/// Checks a name read from a repository's tree before it becomes part of a path: git
/// never makes an entry that is empty, `.` or `..`, or holds `/` or NUL, so a tree with
/// one was crafted to place a file outside the folder it is written to. Shared with the
/// master's mirrors of GitRepositories. `folder` is where the entry is, `a/b/` or empty.
pub fn check_tree_entry_name(folder: &str, name: &[u8]) -> Result<(), String> {
    let unsafe_name =
        matches!(name, b"" | b"." | b"..") || name.contains(&b'/') || name.contains(&0);
    if !unsafe_name {
        return Ok(());
    }
    let place = if folder.is_empty() {
        "at its top".to_string()
    } else {
        format!("in `{folder}`")
    };
    Err(format!(
        "the commit holds an entry named {:?} {place}; a file or folder name must not be \
         empty, `.` or `..`, or hold `/` or NUL, and git never makes such a tree: it was \
         crafted to write outside the checkout. Nothing of the commit was written; repair \
         the repository's history, or stop using it",
        String::from_utf8_lossy(name)
    ))
}

/// Every name in `tree` and its subtrees, checked before a checkout writes any.
fn check_tree_names(tree: &Tree) -> Result<(), ModuleError> {
    let mut refused = None;
    let walked = tree.walk(
        TreeWalkMode::PreOrder,
        |folder, entry| match check_tree_entry_name(folder, entry.name_bytes()) {
            Ok(()) => TreeWalkResult::Ok,
            Err(message) => {
                refused = Some(message);
                TreeWalkResult::Abort
            }
        },
    );
    match (refused, walked) {
        (Some(message), _) => Err(ModuleError::Failed(message)),
        (None, Err(e)) => Err(failed("cannot read the commit's files", e)),
        (None, Ok(())) => Ok(()),
    }
}

/// Asks for a key only once per kind, so a refused key fails instead of looping.
fn callbacks(key_file: Option<&Path>) -> RemoteCallbacks<'_> {
    let mut key_tried = false;
    let mut callbacks = RemoteCallbacks::new();
    callbacks.credentials(move |_url, username, allowed| {
        let user = username.unwrap_or("git");
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(user);
        }
        if allowed.contains(CredentialType::SSH_KEY) && !key_tried {
            key_tried = true;
            return match key_file {
                Some(key) => Cred::ssh_key(user, None, key, None),
                None => Cred::ssh_key_from_agent(user),
            };
        }
        Err(git2::Error::from_str(if key_tried {
            match key_file {
                Some(_) => "the server refused the ssh key in `key_file`",
                None => "the server refused the ssh agent's keys; name a key with `key_file`",
            }
        } else {
            "the repository asks for credentials weft cannot give; use a URL that needs none, or ssh:// with `key_file`"
        }))
    });
    callbacks
}

fn list_remote(args: &GitArgs) -> Result<Listing, ModuleError> {
    let mut remote =
        Remote::create_detached(args.repo.as_str()).map_err(|e| unreachable(&args.repo, e))?;
    let connection = remote
        .connect_auth(
            Direction::Fetch,
            Some(callbacks(args.key_file.as_deref())),
            None,
        )
        .map_err(|e| unreachable(&args.repo, e))?;
    let refs = connection
        .list()
        .map_err(|e| unreachable(&args.repo, e))?
        .iter()
        .map(|head| (head.name().to_string(), head.oid()))
        .collect();
    let default_branch = connection
        .default_branch()
        .ok()
        .and_then(|name| name.as_str().map(str::to_string));
    Ok(Listing {
        refs,
        default_branch,
    })
}

fn resolve_version(args: &GitArgs, listing: &Listing) -> Result<Target, ModuleError> {
    let version = args.version.as_deref().filter(|v| *v != "HEAD");
    let Some(version) = version else {
        let branch = listing
            .default_branch
            .as_deref()
            .and_then(|r| r.strip_prefix("refs/heads/"));
        return match (branch, listing.get("HEAD")) {
            (Some(name), Some(oid)) => Ok(Target::Branch {
                name: name.to_string(),
                oid,
            }),
            _ => Err(ModuleError::Failed(format!(
                "the repository {} has no default branch (is it empty?); set `version` to a branch, tag or commit",
                args.repo
            ))),
        };
    };
    let short = version
        .strip_prefix("refs/heads/")
        .or_else(|| version.strip_prefix("refs/tags/"))
        .unwrap_or(version);
    let as_branch = format!("refs/heads/{short}");
    let as_tag = format!("refs/tags/{short}");
    if !version.starts_with("refs/tags/") {
        if let Some(oid) = listing.get(&as_branch) {
            return Ok(Target::Branch {
                name: short.to_string(),
                oid,
            });
        }
    }
    if !version.starts_with("refs/heads/") {
        // An annotated tag is listed twice: the tag object, and `^{}` its commit.
        let peeled = listing.get(&format!("{as_tag}^{{}}"));
        if let Some(oid) = peeled.or_else(|| listing.get(&as_tag)) {
            return Ok(Target::Tag {
                name: short.to_string(),
                oid,
            });
        }
    }
    let hex = (4..=40).contains(&version.len()) && version.chars().all(|c| c.is_ascii_hexdigit());
    if hex {
        return Ok(Target::Commit(version.to_ascii_lowercase()));
    }
    Err(ModuleError::Failed(format!(
        "`version` {version} is not a branch or tag of {}, nor a commit id",
        args.repo
    )))
}

/// The repository at `dest`; `None` when there is nothing there yet (or an empty folder).
fn open_dest(dest: &Path) -> Result<Option<Repository>, ModuleError> {
    match std::fs::read_dir(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(ModuleError::Failed(format!(
                "dest {} exists and is not a directory",
                dest.display()
            )))
        }
        Err(e) => return Err(ModuleError::io(dest, "read", e)),
        Ok(mut entries) => {
            if entries.next().is_none() {
                return Ok(None);
            }
        }
    }
    match Repository::open(dest) {
        Ok(repo) if !repo.is_bare() => Ok(Some(repo)),
        _ => Err(ModuleError::Failed(format!(
            "dest {} exists and is not a git repository; remove it, or choose another dest",
            dest.display()
        ))),
    }
}

fn failed(what: &str, error: git2::Error) -> ModuleError {
    ModuleError::Failed(format!("{what}: {}", git_error_message(&error)))
}

fn clone(args: &GitArgs, target: &Target, apply: bool) -> Result<Outcome, ModuleError> {
    let outcome = |after: Option<Oid>| {
        Outcome::changed(true)
            .with_output("before", serde_json::Value::Null)
            .with_output("after", after.map(|oid| oid.to_string()))
            .with_output("remote_url", args.repo.as_str())
    };
    if !apply {
        return Ok(outcome(target.known_oid()).with_msg(format!(
            "would clone {} to {} at {}",
            args.repo,
            args.dest.display(),
            target.describe()
        )));
    }
    let existed = args.dest.exists();
    let cloned = (|| {
        let repo = Repository::init(&args.dest)
            .map_err(|e| failed(&format!("cannot create {}", args.dest.display()), e))?;
        repo.remote(REMOTE, &args.repo)
            .map_err(|e| failed("cannot add the remote", e))?;
        fetch(args, &repo)?;
        checkout(args, &repo, target, CheckoutBuilder::new().force())
    })();
    match cloned {
        Ok(oid) => Ok(outcome(Some(oid)).with_msg(format!(
            "cloned {} at {}",
            args.repo,
            target.describe()
        ))),
        Err(error) => {
            // Leave no half-made repository for the next run to trip over.
            let _ = if existed {
                std::fs::remove_dir_all(args.dest.join(".git"))
            } else {
                std::fs::remove_dir_all(&args.dest)
            };
            Err(error)
        }
    }
}

fn update(
    args: &GitArgs,
    repo: &Repository,
    target: &Target,
    apply: bool,
) -> Result<Outcome, ModuleError> {
    let before = repo.head().ok().and_then(|head| head.target());
    let remote_url = repo
        .find_remote(REMOTE)
        .ok()
        .and_then(|r| r.url().map(str::to_string));
    let url_changes = remote_url.as_deref() != Some(args.repo.as_str());
    let changed_files = local_changes(repo)?;
    if !changed_files.is_empty() && !args.force {
        return Err(ModuleError::Failed(format!(
            "{} has local changes to {}; commit or undo them, or set `force: true` to discard them",
            args.dest.display(),
            list_files(&changed_files)
        )));
    }

    let after = if apply {
        if url_changes {
            repo.remote_set_url(REMOTE, &args.repo)
                .map_err(|e| failed("cannot set the remote's URL", e))?;
        }
        fetch(args, repo)?;
        let moves = target_oid(repo, target)? != before;
        if moves || !changed_files.is_empty() {
            let mut options = CheckoutBuilder::new();
            if args.force {
                options.force();
            } else {
                options.safe();
            }
            Some(checkout(args, repo, target, &mut options)?)
        } else {
            before
        }
    } else {
        // Check mode fetches nothing: a commit id is resolved only if already here.
        target
            .known_oid()
            .or_else(|| target_oid(repo, target).ok().flatten())
    };

    let moved = after != before;
    let changed = moved || url_changes || !changed_files.is_empty();
    let would = if apply { "" } else { "would " };
    let mut said = Vec::new();
    if moved {
        let short = |oid: Option<Oid>| {
            oid.map(|o| o.to_string()[..12].to_string())
                .unwrap_or_else(|| "(nothing)".into())
        };
        said.push(match after {
            Some(_) => format!(
                "{would}move from {} to {} ({})",
                short(before),
                short(after),
                target.describe()
            ),
            None => format!("{would}fetch and check out {}", target.describe()),
        });
    }
    if !changed_files.is_empty() {
        said.push(format!(
            "{would}discard local changes to {}",
            list_files(&changed_files)
        ));
    }
    if url_changes {
        said.push(format!("{would}set the remote URL to {}", args.repo));
    }
    let mut outcome = Outcome::changed(changed)
        .with_output("before", before.map(|oid| oid.to_string()))
        .with_output("after", after.map(|oid| oid.to_string()))
        .with_output("remote_url", args.repo.as_str());
    if !said.is_empty() {
        outcome = outcome.with_msg(said.join("; "));
    }
    Ok(outcome)
}

fn fetch(args: &GitArgs, repo: &Repository) -> Result<(), ModuleError> {
    let mut remote = repo
        .find_remote(REMOTE)
        .map_err(|e| failed("cannot find the remote", e))?;
    let mut options = FetchOptions::new();
    options
        .remote_callbacks(callbacks(args.key_file.as_deref()))
        .download_tags(AutotagOption::All);
    let refspecs = [
        format!("+refs/heads/*:refs/remotes/{REMOTE}/*"),
        "+refs/tags/*:refs/tags/*".to_string(),
    ];
    remote
        .fetch(&refspecs, Some(&mut options), None)
        .map_err(|e| failed(&format!("cannot fetch from {}", args.repo), e))
}

/// The commit `target` is in `repo` (after a fetch); `None` for a commit not there.
fn target_oid(repo: &Repository, target: &Target) -> Result<Option<Oid>, ModuleError> {
    match target {
        Target::Branch { oid, .. } | Target::Tag { oid, .. } => Ok(Some(*oid)),
        Target::Commit(id) => Ok(repo
            .revparse_single(id)
            .and_then(|object| object.peel_to_commit())
            .ok()
            .map(|commit| commit.id())),
    }
}

/// Checks out `target` and points HEAD at it: the local branch for a branch (as a
/// clone would have it), detached for a tag or a commit.
fn checkout(
    args: &GitArgs,
    repo: &Repository,
    target: &Target,
    options: &mut CheckoutBuilder,
) -> Result<Oid, ModuleError> {
    let oid = target_oid(repo, target)?.ok_or_else(|| {
        ModuleError::Failed(format!(
            "unknown revision: {} is not a commit on any branch or tag of {}",
            target.describe(),
            args.repo
        ))
    })?;
    let commit = repo
        .find_commit(oid)
        .map_err(|e| failed(&format!("cannot read {}", target.describe()), e))?;
    let tree = commit
        .tree()
        .map_err(|e| failed(&format!("cannot read {}", target.describe()), e))?;
    check_tree_names(&tree)?;
    // The tree goes first, while HEAD still says what the working copy holds.
    repo.checkout_tree(commit.as_object(), Some(options))
        .map_err(|e| failed(&format!("cannot check out {}", target.describe()), e))?;
    let pointed = match target {
        Target::Branch { name, .. } => {
            let local = format!("refs/heads/{name}");
            repo.reference(&local, oid, true, "weft git: check out")
                .and_then(|_| repo.set_head(&local))
        }
        _ => repo.set_head_detached(oid),
    };
    pointed.map_err(|e| failed("cannot move HEAD", e))?;
    Ok(oid)
}

/// Tracked files changed in the index or the working copy; untracked ones do not
/// count, as in Ansible.
fn local_changes(repo: &Repository) -> Result<Vec<String>, ModuleError> {
    let mut options = StatusOptions::new();
    options
        .include_untracked(false)
        .include_ignored(false)
        .exclude_submodules(true);
    let statuses = repo
        .statuses(Some(&mut options))
        .map_err(|e| failed("cannot read the working copy's status", e))?;
    Ok(statuses
        .iter()
        .filter(|entry| entry.status() != Status::CURRENT)
        .filter_map(|entry| entry.path().map(str::to_string))
        .collect())
}

fn list_files(files: &[String]) -> String {
    let mut listed = files
        .iter()
        .take(LISTED_FILES)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if files.len() > LISTED_FILES {
        listed.push_str(&format!(" and {} more", files.len() - LISTED_FILES));
    }
    listed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing() -> Listing {
        let oid = |n: u8| Oid::from_bytes(&[n; 20]).unwrap();
        Listing {
            refs: vec![
                ("HEAD".into(), oid(1)),
                ("refs/heads/main".into(), oid(1)),
                ("refs/heads/v1".into(), oid(2)),
                ("refs/tags/v1".into(), oid(3)),
                ("refs/tags/v1^{}".into(), oid(4)),
                ("refs/tags/light".into(), oid(5)),
            ],
            default_branch: Some("refs/heads/main".into()),
        }
    }

    fn resolve(version: Option<&str>) -> Result<Target, ModuleError> {
        let args = GitArgs {
            repo: "file:///r.git".into(),
            dest: "/d".into(),
            version: version.map(str::to_string),
            force: false,
            key_file: None,
        };
        resolve_version(&args, &listing())
    }

    #[test]
    fn tree_entry_names_that_would_leave_the_checkout_are_refused() {
        for name in ["site.yml", ".hidden", "...", "a b", "é"] {
            assert_eq!(check_tree_entry_name("", name.as_bytes()), Ok(()), "{name}");
        }
        for name in ["", ".", "..", "a/b", "/etc/cron.d/x", "x/../../y", "a\0b"] {
            let error = check_tree_entry_name("roles/web/", name.as_bytes()).unwrap_err();
            assert!(
                error.starts_with(&format!(
                    "the commit holds an entry named {name:?} in `roles/web/`"
                )),
                "{error}"
            );
        }
    }

    #[test]
    fn versions_resolve_like_git_does() {
        let oid = |n: u8| Oid::from_bytes(&[n; 20]).unwrap();
        let branch = |name: &str, n| Target::Branch {
            name: name.into(),
            oid: oid(n),
        };
        let tag = |name: &str, n| Target::Tag {
            name: name.into(),
            oid: oid(n),
        };
        assert_eq!(resolve(None).unwrap(), branch("main", 1));
        assert_eq!(resolve(Some("HEAD")).unwrap(), branch("main", 1));
        // A branch wins over a tag of the same name, as `git checkout v1` has it.
        assert_eq!(resolve(Some("v1")).unwrap(), branch("v1", 2));
        assert_eq!(resolve(Some("refs/tags/v1")).unwrap(), tag("v1", 4));
        assert_eq!(resolve(Some("light")).unwrap(), tag("light", 5));
        assert_eq!(
            resolve(Some("ABC123")).unwrap(),
            Target::Commit("abc123".into())
        );
        match resolve(Some("nope")) {
            Err(ModuleError::Failed(msg)) => assert_eq!(
                msg,
                "`version` nope is not a branch or tag of file:///r.git, nor a commit id"
            ),
            other => panic!("{other:?}"),
        }
    }
}
