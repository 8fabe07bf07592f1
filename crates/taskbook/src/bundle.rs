//! A TaskBook travels to the master and on to its nodes as a bundle: exactly the files
//! the run can read, taken by the CLI from the admin's machine and written out again
//! under a private directory wherever it runs, so relative paths resolve there as
//! they did where the TaskBook was written. What travels: the TaskBook, its includes,
//! every file a task names by a fixed relative path (`src` of copy, template and
//! custom modules), and the `templates/` and `files/` folders beside the TaskBook and
//! beside each included file. Nothing else of its folder: a TaskBook saved in a home
//! directory must not ship that directory.
//!
//! Files a run reads from GitRepositories travel in the same bundle, each repository's
//! commit under `.repos/<name>/`: a hidden folder, which the CLI never takes from an
//! admin's folder, so only the master puts files there.
//!
//! The bundle is the TaskBook with the files it needs, so it lives beside the TaskBook;
//! what only the modules know (which files a task reads, whether its arguments are
//! right) is asked of the caller's `Modules`, which weft-modules implements.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::error::PathSegment;
use crate::limits::{human_bytes, MAX_BUNDLE_BYTES, MAX_BUNDLE_FILES};
use crate::regular_file::{check_regular, read_regular_file, ReadLimit};
use crate::taskbook::RepoFiles;
use crate::{Error, Task, TaskBook};

/// The folders beside a TaskBook (and each file it includes) that travel whole, for
/// `src` paths that are only known once rendered.
pub const BUNDLED_FOLDERS: [&str; 2] = ["templates", "files"];
/// How deep the bundled folders are read.
const MAX_BUNDLE_DEPTH: usize = 8;
/// The folder of a bundle that holds GitRepositories' files, one folder each.
pub const REPOS_DIR: &str = ".repos";
/// How many of the biggest files an oversized bundle's error names.
const BIGGEST_NAMED: usize = 5;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bundle {
    /// The TaskBook's path inside the bundle.
    pub taskbook_file: String,
    /// By `/`-separated relative path.
    pub files: BTreeMap<String, bytes::Bytes>,
}

/// What only the module library knows of a TaskBook's tasks, asked of it by who makes or
/// loads a bundle (weft-modules implements it): this crate knows tasks, not modules.
pub trait Modules {
    /// The files on this machine that `task`, read from a file in `base_dir`, reads by
    /// a path fixed before the run: each as the task names it, with where it was found
    /// or why it cannot be read.
    fn files_read<'t>(
        &self,
        task: &'t Task,
        base_dir: &Path,
    ) -> Vec<(&'t str, Result<PathBuf, String>)>;

    /// Checks every task's module and arguments.
    fn validate(&self, taskbook: &TaskBook) -> Result<(), Error>;
}

impl Bundle {
    /// The files `taskbook` (loaded from this machine) can read, read from here. Refused
    /// before anything is read when they pass the bounds, naming the biggest.
    pub fn for_taskbook(taskbook: &TaskBook, modules: &dyn Modules) -> Result<Bundle, Error> {
        let mut sizes = BTreeMap::new();
        for file in needed_files(taskbook, modules)? {
            let size = regular_file_size(&file)?;
            sizes.insert(file, size);
        }
        for dir in needed_folders(taskbook) {
            read_folder_sizes(&dir, 0, &mut sizes)?;
        }
        let root = common_folder(&normalized(&taskbook.file), sizes.keys());
        let relative = |path: &Path| -> String {
            let inside = path.strip_prefix(&root).unwrap_or(path);
            inside
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/")
        };
        check_bounds(
            sizes
                .iter()
                .map(|(path, size)| (relative(path), *size as usize)),
        )?;
        let mut bundle = Bundle {
            taskbook_file: relative(&normalized(&taskbook.file)),
            files: BTreeMap::new(),
        };
        for (path, size) in &sizes {
            let content = read_regular_file(path, true, &BUNDLE_LIMIT).map_err(Error::new)?;
            if content.len() as u64 != *size {
                return Err(Error::new("the file changed while the run was read").in_file(path));
            }
            bundle.files.insert(relative(path), content.into());
        }
        Ok(bundle)
    }

    /// Keeps only the files `taskbook` reads, it having been loaded from this bundle
    /// written out under `dir`: a bundle made elsewhere (a repository's whole commit)
    /// then ships no more than one the CLI makes.
    pub fn retain_read_by(
        &mut self,
        taskbook: &TaskBook,
        dir: &Path,
        modules: &dyn Modules,
    ) -> Result<(), Error> {
        let files = needed_files(taskbook, modules)?;
        let folders = needed_folders(taskbook);
        let dir = normalized(dir);
        self.files.retain(|path, _| {
            let absolute = normalized(&dir.join(path));
            files.contains(&absolute) || folders.iter().any(|folder| absolute.starts_with(folder))
        });
        Ok(())
    }

    /// Checks what arrived over the wire before anything is written: relative paths
    /// that stay inside the bundle, within the bounds, and the TaskBook among them.
    pub fn validate(&self) -> Result<(), Error> {
        check_bounds(
            self.files
                .iter()
                .map(|(path, content)| (path.clone(), content.len())),
        )?;
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

    /// Writes the bundle under `dir`, then reads its TaskBook and validates it with the
    /// modules' own checks; repository includes read the repositories it carries.
    /// Errors name files as the bundle does, not by `dir`.
    pub fn load_taskbook(&self, dir: &Path, modules: &dyn Modules) -> Result<TaskBook, Error> {
        self.load_taskbook_with(
            dir,
            &mut BundledRepos {
                dir: dir.join(REPOS_DIR),
            },
            modules,
        )
    }

    /// As `load_taskbook`, with repository includes found by `repos` (the master's,
    /// which fetches what the bundle does not carry yet).
    pub fn load_taskbook_with(
        &self,
        dir: &Path,
        repos: &mut dyn RepoFiles,
        modules: &dyn Modules,
    ) -> Result<TaskBook, Error> {
        let loaded = self.write_to(dir).and_then(|file| {
            let taskbook = TaskBook::load_with_repos(&file, repos)?;
            modules.validate(&taskbook)?;
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

/// Every file the TaskBook names: its sources and the files its tasks read, found as the
/// modules find them, normalized so that one file is read once.
fn needed_files(taskbook: &TaskBook, modules: &dyn Modules) -> Result<BTreeSet<PathBuf>, Error> {
    let mut files: BTreeSet<PathBuf> = taskbook.sources.iter().map(|f| normalized(f)).collect();
    for placed in taskbook.placed_tasks() {
        let task = placed.task;
        for (src, found) in modules.files_read(task, placed.step.base_dir()) {
            let found = found.map_err(|message| {
                placed.place(
                    Error::new(format!(
                        "the task `{}` reads `{src}`, which cannot travel with the run: {message}",
                        task.display_name()
                    ))
                    .at(task.args.span)
                    .under(PathSegment::Key(task.module.value.clone())),
                )
            })?;
            files.insert(normalized(&found));
        }
    }
    Ok(files)
}

/// `templates/` and `files/` beside every file the TaskBook was read from.
fn needed_folders(taskbook: &TaskBook) -> BTreeSet<PathBuf> {
    taskbook
        .sources
        .iter()
        .map(|source| normalized(source.parent().unwrap_or(Path::new("."))))
        .flat_map(|dir| BUNDLED_FOLDERS.map(|folder| dir.join(folder)))
        .filter(|dir| dir.is_dir())
        .collect()
}

/// The regular files under `dir` with their sizes, hidden entries left out.
fn read_folder_sizes(
    dir: &Path,
    depth: usize,
    sizes: &mut BTreeMap<PathBuf, u64>,
) -> Result<(), Error> {
    let unreadable =
        |e: std::io::Error| Error::new(format!("cannot read the folder: {e}")).in_file(dir);
    for entry in fs::read_dir(dir).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            if depth + 1 < MAX_BUNDLE_DEPTH {
                read_folder_sizes(&path, depth + 1, sizes)?;
            }
        } else {
            let size = regular_file_size(&path)?;
            sizes.insert(path, size);
        }
        if sizes.len() > MAX_BUNDLE_FILES {
            return Err(Error::new(format!(
                "{} holds more than {MAX_BUNDLE_FILES} files, the most one run ships",
                dir.display()
            ))
            .with_hint(SHIPS_HINT));
        }
    }
    Ok(())
}

const SHIPS_HINT: &str = "a run ships its TaskBook, its includes, the files its tasks name by a fixed `src`, and the templates/ and files/ folders beside them: keep only what the run reads there";

/// Refuses a bundle past the bounds, naming its biggest files.
fn check_bounds(files: impl Iterator<Item = (String, usize)>) -> Result<(), Error> {
    let mut files: Vec<(String, usize)> = files.collect();
    let total: usize = files.iter().map(|(_, size)| size).sum();
    if total <= MAX_BUNDLE_BYTES && files.len() <= MAX_BUNDLE_FILES {
        return Ok(());
    }
    files.sort_by_key(|(path, size)| (std::cmp::Reverse(*size), path.clone()));
    let biggest: Vec<String> = files
        .iter()
        .take(BIGGEST_NAMED)
        .map(|(path, size)| format!("{path} ({})", human_bytes(*size)))
        .collect();
    Err(Error::new(format!(
        "the run would ship {} in {} files, more than one run carries ({} in {MAX_BUNDLE_FILES} files); the biggest: {}",
        human_bytes(total),
        files.len(),
        human_bytes(MAX_BUNDLE_BYTES),
        biggest.join(", ")
    ))
    .with_hint(SHIPS_HINT))
}

/// What one file of a run may be: regular (a device or FIFO could block the read, or
/// never end), and no bigger than a whole bundle.
const BUNDLE_LIMIT: ReadLimit = ReadLimit {
    max_bytes: MAX_BUNDLE_BYTES as u64,
    reader: "a run ships",
};

/// The size of the regular file at `path`, followed through links: a file linked into
/// templates/ is the file the run reads. Sizes are judged together, by `check_bounds`.
fn regular_file_size(path: &Path) -> Result<u64, Error> {
    let metadata = fs::metadata(path)
        .map_err(|e| Error::new(format!("cannot read the file: {e}")).in_file(path))?;
    check_regular(path, &metadata).map_err(Error::new)?;
    Ok(metadata.len())
}

/// `path` made absolute with `.` and `..` folded away, without touching the disk.
fn normalized(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The deepest folder holding the TaskBook file and every path: the bundle's root.
fn common_folder<'a>(taskbook_file: &Path, paths: impl Iterator<Item = &'a PathBuf>) -> PathBuf {
    let mut root = taskbook_file
        .parent()
        .unwrap_or(Path::new("/"))
        .to_path_buf();
    for path in paths {
        while !path.starts_with(&root) {
            if !root.pop() {
                break;
            }
        }
    }
    root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, content: &[u8]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn load(file: &Path) -> TaskBook {
        TaskBook::load(file).unwrap()
    }

    /// Modules whose tasks read a fixed `src` beside their file, and accept any arguments.
    struct SrcModules;

    impl Modules for SrcModules {
        fn files_read<'t>(
            &self,
            task: &'t Task,
            base_dir: &Path,
        ) -> Vec<(&'t str, Result<PathBuf, String>)> {
            let src = task.args.get("src").filter(|node| !node.is_template());
            src.and_then(|node| node.scalar())
                .filter(|src| Path::new(src).is_relative())
                .map(|src| (src, Ok(base_dir.join(src))))
                .into_iter()
                .collect()
        }

        fn validate(&self, _: &TaskBook) -> Result<(), Error> {
            Ok(())
        }
    }

    const SITE: &str = "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: t}\nspec:\n  include: [{path: base/base.yml}]\n  steps:\n    - tasks:\n        - copy: {src: motd.txt, dest: /tmp/motd}\n        - template: {src: \"{{ name }}.tera\", dest: /tmp/x}\n        - frobnicate: {src: data.json}\n";
    const BASE: &str = "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: base}\nspec:\n  steps:\n    - tasks:\n        - copy: {src: ../../shared/common.conf, dest: /tmp/c}\n        - copy: {src: /etc/hostname, dest: /tmp/h}\n";

    #[test]
    fn only_what_the_taskbook_reads_travels() {
        let home = tempfile::tempdir().unwrap();
        let folder = home.path().join("ops");
        write(&folder.join("site.yml"), SITE.as_bytes());
        write(&folder.join("motd.txt"), b"hi");
        write(&folder.join("data.json"), b"{}");
        write(&folder.join("templates/web.tera"), b"{{ name }}");
        write(&folder.join("files/logo.png"), b"png");
        write(&folder.join("templates/.swp"), b"editor");
        write(&folder.join("base/base.yml"), BASE.as_bytes());
        write(&folder.join("base/templates/b.tera"), b"b");
        write(&home.path().join("shared/common.conf"), b"common");
        // What lies around but no task reads.
        write(&folder.join("cluster.key"), b"key");
        write(&folder.join("notes.txt"), b"notes");
        write(&folder.join("big.log"), &vec![b'x'; MAX_BUNDLE_BYTES + 1]);
        write(&folder.join(".git/HEAD"), b"ref");
        write(&home.path().join("admin.yaml"), b"credentials");

        let bundle = Bundle::for_taskbook(&load(&folder.join("site.yml")), &SrcModules).unwrap();
        assert_eq!(
            bundle.files.keys().collect::<Vec<_>>(),
            [
                "ops/base/base.yml",
                "ops/base/templates/b.tera",
                "ops/data.json",
                "ops/files/logo.png",
                "ops/motd.txt",
                "ops/site.yml",
                "ops/templates/web.tera",
                "shared/common.conf",
            ]
        );
        assert_eq!(bundle.taskbook_file, "ops/site.yml");

        // Unpacked elsewhere, it loads and its paths resolve as they did here.
        let target = tempfile::tempdir().unwrap();
        let taskbook = bundle.load_taskbook(target.path(), &SrcModules).unwrap();
        assert_eq!(taskbook.steps.len(), 2);
        assert_eq!(
            fs::read_to_string(target.path().join("ops/templates/web.tera")).unwrap(),
            "{{ name }}"
        );
    }

    #[test]
    fn a_bundle_made_elsewhere_keeps_only_what_its_taskbook_reads() {
        let file = |content: &str| bytes::Bytes::from(content.to_string());
        let mut bundle = Bundle {
            taskbook_file: ".repos/infra/site.yml".into(),
            files: [
                (".repos/infra/site.yml", SITE),
                (".repos/infra/base/base.yml", BASE),
                (".repos/infra/motd.txt", "hi"),
                (".repos/infra/data.json", "{}"),
                (".repos/infra/templates/web.tera", "web"),
                (".repos/infra/README.md", "docs"),
                (".repos/infra/shared/common.conf", "not read"),
                ("shared/common.conf", "not read"),
                // base.yml's ../../shared/common.conf, seen from .repos/infra/base.
                (".repos/shared/common.conf", "common"),
            ]
            .into_iter()
            .map(|(path, content)| (path.to_string(), file(content)))
            .collect(),
        };
        let dir = tempfile::tempdir().unwrap();
        let taskbook = bundle.load_taskbook(dir.path(), &SrcModules).unwrap();
        bundle
            .retain_read_by(&taskbook, dir.path(), &SrcModules)
            .unwrap();
        assert_eq!(
            bundle.files.keys().collect::<Vec<_>>(),
            [
                ".repos/infra/base/base.yml",
                ".repos/infra/data.json",
                ".repos/infra/motd.txt",
                ".repos/infra/site.yml",
                ".repos/infra/templates/web.tera",
                ".repos/shared/common.conf",
            ]
        );
    }

    #[test]
    fn an_oversized_run_is_refused_with_its_biggest_files_named() {
        let folder = tempfile::tempdir().unwrap();
        let site = "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: t}\nspec:\n  steps:\n    - tasks:\n        - copy: {src: disk.img, dest: /tmp/d}\n";
        write(&folder.path().join("site.yml"), site.as_bytes());
        write(
            &folder.path().join("disk.img"),
            &vec![0; MAX_BUNDLE_BYTES - 100],
        );
        write(&folder.path().join("files/a.bin"), &[0; 2000]);
        write(&folder.path().join("files/b.bin"), &[0; 10]);
        let error = Bundle::for_taskbook(&load(&folder.path().join("site.yml")), &SrcModules)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("the biggest: disk.img (8.0 MiB), files/a.bin (1 KiB), site.yml"),
            "{error}"
        );
        assert!(error.contains("templates/ and files/"), "{error}");
    }

    #[test]
    fn a_fifo_among_the_files_is_refused_without_reading_it() {
        let folder = tempfile::tempdir().unwrap();
        let site = "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: t}\nspec:\n  steps:\n    - tasks:\n        - debug: {msg: hi}\n";
        write(&folder.path().join("site.yml"), site.as_bytes());
        fs::create_dir(folder.path().join("files")).unwrap();
        let fifo = folder.path().join("files/pipe");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let error = Bundle::for_taskbook(&load(&folder.path().join("site.yml")), &SrcModules)
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a regular file"), "{error}");
        assert!(error.contains("files/pipe"), "{error}");
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
