//! A TaskBook travels to the master and on to its nodes as a bundle: the TaskBook's
//! folder (the file itself, its includes, `templates/`, `files/`), read by the CLI and
//! written out again under a private directory wherever it runs, so relative paths
//! resolve there exactly as they did on the admin's machine.
//!
//! Files a run reads from GitRepositories travel in the same bundle, each repository's
//! commit under `.repos/<name>/`: a hidden folder, which `Bundle::read` never takes
//! from an admin's folder, so only the master puts files there.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

use weft_taskbook::taskbook::RepoFiles;
use weft_taskbook::{Error, TaskBook};

/// Bounds on what one run may ship: enough for templates and small files, not a disk.
pub const MAX_BUNDLE_BYTES: usize = 8 * 1024 * 1024;
pub const MAX_BUNDLE_FILES: usize = 1000;
const MAX_BUNDLE_DEPTH: usize = 8;
/// The folder of a bundle that holds GitRepositories' files, one folder each.
pub const REPOS_DIR: &str = ".repos";

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bundle {
    /// The TaskBook's path inside the bundle.
    pub taskbook_file: String,
    /// By `/`-separated relative path.
    pub files: BTreeMap<String, bytes::Bytes>,
}

impl Bundle {
    /// Reads the folder that holds `taskbook`, skipping hidden entries.
    pub fn read(taskbook: &Path) -> Result<Bundle, Error> {
        let root = match taskbook.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let taskbook_file = taskbook
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .ok_or_else(|| Error::new("expected a TaskBook file").in_file(taskbook))?;
        let mut bundle = Bundle {
            taskbook_file,
            files: BTreeMap::new(),
        };
        let mut size = 0;
        bundle.read_dir(&root, "", 0, &mut size)?;
        Ok(bundle)
    }

    fn read_dir(
        &mut self,
        dir: &Path,
        prefix: &str,
        depth: usize,
        size: &mut usize,
    ) -> Result<(), Error> {
        let unreadable = |e: std::io::Error| {
            Error::new(format!("cannot read the TaskBook's folder: {e}")).in_file(dir)
        };
        let mut entries = fs::read_dir(dir)
            .map_err(unreadable)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(unreadable)?;
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let relative = format!("{prefix}{name}");
            let file_type = entry.file_type().map_err(unreadable)?;
            if file_type.is_dir() {
                if depth + 1 < MAX_BUNDLE_DEPTH {
                    self.read_dir(&path, &format!("{relative}/"), depth + 1, size)?;
                }
                continue;
            }
            let content = fs::read(&path)
                .map_err(|e| Error::new(format!("cannot read the file: {e}")).in_file(&path))?;
            *size += content.len();
            if *size > MAX_BUNDLE_BYTES || self.files.len() >= MAX_BUNDLE_FILES {
                return Err(too_large().in_file(dir));
            }
            self.files.insert(relative, content.into());
        }
        Ok(())
    }

    /// Checks what arrived over the wire before anything is written: relative paths
    /// that stay inside the bundle, within the bounds, and the TaskBook among them.
    pub fn validate(&self) -> Result<(), Error> {
        let size: usize = self.files.values().map(|content| content.len()).sum();
        if size > MAX_BUNDLE_BYTES || self.files.len() > MAX_BUNDLE_FILES {
            return Err(too_large());
        }
        for path in self.files.keys() {
            let inside = !path.is_empty()
                && Path::new(path)
                    .components()
                    .all(|component| matches!(component, Component::Normal(_)));
            if !inside {
                return Err(Error::new(format!(
                    "the bundle path `{path}` leaves the bundle"
                )));
            }
        }
        if !self.files.contains_key(&self.taskbook_file) {
            return Err(Error::new(format!(
                "the bundle lacks its TaskBook `{}`",
                self.taskbook_file
            )));
        }
        Ok(())
    }

    /// Writes the files under `dir` (which must exist) and returns the TaskBook's path.
    pub fn write_to(&self, dir: &Path) -> Result<PathBuf, Error> {
        self.validate()?;
        for (relative, content) in &self.files {
            let path = dir.join(relative);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(|e| {
                    Error::new(format!("cannot create the folder: {e}")).in_file(parent)
                })?;
            }
            fs::write(&path, content)
                .map_err(|e| Error::new(format!("cannot write the file: {e}")).in_file(&path))?;
        }
        Ok(dir.join(&self.taskbook_file))
    }

    /// The bundle path of `path` in the GitRepository `repo`.
    pub fn repo_path(repo: &str, path: &str) -> String {
        format!("{REPOS_DIR}/{repo}/{path}")
    }

    /// The GitRepositories whose files this bundle carries.
    pub fn repos(&self) -> BTreeSet<&str> {
        self.files
            .keys()
            .filter_map(|path| path.strip_prefix(REPOS_DIR)?.strip_prefix('/'))
            .filter_map(|rest| rest.split_once('/').map(|(repo, _)| repo))
            .collect()
    }

    /// Writes the bundle under `dir`, then reads and validates its TaskBook with the
    /// modules' own checks; repository includes read the repositories it carries.
    /// Errors name files as the bundle does, not by `dir`.
    ///
    /// Custom modules are taken to be on the nodes even when a node loads the bundle:
    /// one lacking a module then fails that task, not the whole step.
    pub fn load_taskbook(&self, dir: &Path) -> Result<TaskBook, Error> {
        self.load_taskbook_with(
            dir,
            &mut BundledRepos {
                dir: dir.join(REPOS_DIR),
            },
        )
    }

    /// As `load_taskbook`, with repository includes found by `repos` (the master's,
    /// which fetches what the bundle does not carry yet).
    pub fn load_taskbook_with(
        &self,
        dir: &Path,
        repos: &mut dyn RepoFiles,
    ) -> Result<TaskBook, Error> {
        let loaded = self.write_to(dir).and_then(|file| {
            let taskbook = TaskBook::load_with_repos(&file, repos)?;
            crate::validate_taskbook(&taskbook, crate::CustomModules::OnNodes)?;
            Ok(taskbook)
        });
        loaded.map_err(|mut error| {
            if let Some(relative) = error.file.as_ref().and_then(|f| f.strip_prefix(dir).ok()) {
                error.file = Some(relative.to_path_buf());
            }
            error
        })
    }

    /// The TaskBook's text.
    pub fn taskbook_source(&self) -> Result<&str, Error> {
        let content = self.files.get(&self.taskbook_file).ok_or_else(|| {
            Error::new(format!(
                "the bundle lacks its TaskBook `{}`",
                self.taskbook_file
            ))
        })?;
        std::str::from_utf8(content).map_err(|_| Error::new("the TaskBook is not UTF-8 text"))
    }
}

/// The repositories a bundle carries, written out under `dir`.
struct BundledRepos {
    dir: PathBuf,
}

impl RepoFiles for BundledRepos {
    fn repo_dir(&mut self, repo: &str) -> Result<Option<PathBuf>, Error> {
        let dir = self.dir.join(repo);
        if dir.is_dir() {
            return Ok(Some(dir));
        }
        Err(Error::new(format!(
            "this run carries no files of the GitRepository `{repo}`"
        ))
        .with_hint("runs through the master read the repository's last fetched commit; run it with `weft run taskbook`"))
    }
}

fn too_large() -> Error {
    Error::new(format!(
        "the TaskBook's folder holds more than {} files or {} MiB, the most one run ships",
        MAX_BUNDLE_FILES,
        MAX_BUNDLE_BYTES / (1024 * 1024)
    ))
    .with_hint("keep a TaskBook in a folder of its own, with its templates/ and files/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_round_trips_and_hidden_entries_stay_behind() {
        let source = tempfile::tempdir().unwrap();
        fs::create_dir_all(source.path().join("templates")).unwrap();
        fs::create_dir_all(source.path().join(".git")).unwrap();
        fs::write(source.path().join("site.yml"), "kind: TaskBook").unwrap();
        fs::write(source.path().join("templates/motd.tera"), "hi").unwrap();
        fs::write(source.path().join(".git/HEAD"), "ref").unwrap();

        let bundle = Bundle::read(&source.path().join("site.yml")).unwrap();
        assert_eq!(
            bundle.files.keys().collect::<Vec<_>>(),
            ["site.yml", "templates/motd.tera"]
        );
        let target = tempfile::tempdir().unwrap();
        let taskbook = bundle.write_to(target.path()).unwrap();
        assert_eq!(fs::read_to_string(taskbook).unwrap(), "kind: TaskBook");
        assert_eq!(
            fs::read_to_string(target.path().join("templates/motd.tera")).unwrap(),
            "hi"
        );
    }

    #[test]
    fn paths_that_leave_the_bundle_are_refused_before_anything_is_written() {
        for path in ["../evil", "/etc/passwd", "a/../../b", ""] {
            let bundle = Bundle {
                taskbook_file: "site.yml".into(),
                files: [
                    ("site.yml".to_string(), bytes::Bytes::from_static(b"x")),
                    (path.to_string(), bytes::Bytes::from_static(b"x")),
                ]
                .into(),
            };
            let target = tempfile::tempdir().unwrap();
            let error = bundle.write_to(target.path()).unwrap_err();
            assert!(
                error.to_string().contains("leaves the bundle"),
                "{path}: {error}"
            );
            assert!(!target.path().join("site.yml").exists());
        }
    }
}
