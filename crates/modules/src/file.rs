//! `file`: what is at a path (a file, a directory, a link, nothing) and its mode and
//! owner; never a file's content (that is `copy`, `template` and `lineinfile`).

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use weft_taskbook::yaml::Node;
use weft_taskbook::Error;

use crate::files::{
    converge_attributes, metadata_if_exists, parent_dir, validate_mode, write_atomic,
    WantedAttributes,
};
use crate::module::{Module, ModuleContext, ModuleError, Outcome};

pub struct File;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileArgs {
    path: PathBuf,
    #[serde(default)]
    state: FileState,
    mode: Option<String>,
    owner: Option<String>,
    group: Option<String>,
    /// For `state: link`: where the link points, stored as given (relative stays relative).
    src: Option<PathBuf>,
    /// For `state: link`: replace a regular file at `path` with the link.
    #[serde(default)]
    force: bool,
    /// Change the mode and owner of what a symbolic link at `path` points to, instead
    /// of refusing. Ansible's `file` follows by default; weft does not.
    #[serde(default)]
    follow: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FileState {
    #[default]
    File,
    Directory,
    Absent,
    Touch,
    Link,
}

impl FileState {
    fn name(self) -> &'static str {
        match self {
            FileState::File => "file",
            FileState::Directory => "directory",
            FileState::Absent => "absent",
            FileState::Touch => "touch",
            FileState::Link => "link",
        }
    }
}

impl Module for File {
    const NAME: &'static str = "file";
    type Args = FileArgs;

    fn validate(args: &Node, _base_dir: &Path) -> Result<(), Error> {
        validate_mode(args)
    }

    fn check_apply(
        &self,
        args: FileArgs,
        context: &mut ModuleContext,
        apply: bool,
    ) -> Result<Outcome, ModuleError> {
        let attributes = WantedAttributes::resolve(
            args.mode.as_deref(),
            args.owner.as_deref(),
            args.group.as_deref(),
            apply,
        )?;
        let state = args.state;
        if !attributes.is_empty() && matches!(state, FileState::Absent | FileState::Link) {
            return Err(ModuleError::Failed(format!(
                "`mode`, `owner` and `group` do not apply to `state: {}`",
                state.name()
            )));
        }
        let path = args.path.as_path();
        let changes = match (state, &args.src) {
            (FileState::Link, Some(target)) => link(path, target, args.force, apply)?,
            (FileState::Link, None) => {
                return Err(ModuleError::Failed(
                    "`state: link` needs `src`, the path the link points to".into(),
                ))
            }
            (_, Some(_)) => {
                return Err(ModuleError::Failed(
                    "`src` only applies to `state: link`; use `copy` to copy a file".into(),
                ))
            }
            (FileState::File, None) => existing_file(path, &attributes, args.follow, apply)?,
            (FileState::Directory, None) => directory(path, &attributes, args.follow, apply)?,
            (FileState::Absent, None) => absent(path, apply)?,
            (FileState::Touch, None) => touch(path, &attributes, args.follow, apply)?,
        };
        let changed = !changes.is_empty();
        Ok(Outcome::changed(changed)
            .with_diff((context.want_diff && changed).then(|| changes.join("\n")))
            .with_output("path", path.display().to_string())
            .with_output("state", state.name()))
    }
}

/// What a `state: X -> Y` line calls the thing at a path.
fn kind_name(metadata: &fs::Metadata) -> &'static str {
    let file_type = metadata.file_type();
    if file_type.is_symlink() {
        "link"
    } else if file_type.is_dir() {
        "directory"
    } else if file_type.is_file() {
        "file"
    } else {
        "special file"
    }
}

fn existing_file(
    path: &Path,
    attributes: &WantedAttributes,
    follow: bool,
    apply: bool,
) -> Result<Vec<String>, ModuleError> {
    match metadata_if_exists(path, true)? {
        Some(metadata) if metadata.is_dir() => Err(ModuleError::Failed(format!(
            "{} is a directory; use `state: directory` to manage it",
            path.display()
        ))),
        Some(_) => converge_attributes(path, attributes, follow, apply),
        None => Err(ModuleError::Failed(format!(
            "{} does not exist, and `state: file` only changes an existing file; \
             use `state: touch` to create an empty one, or `copy` or `template` to \
             give it content",
            path.display()
        ))),
    }
}

pub(crate) fn directory(
    path: &Path,
    attributes: &WantedAttributes,
    follow: bool,
    apply: bool,
) -> Result<Vec<String>, ModuleError> {
    match metadata_if_exists(path, true)? {
        Some(metadata) if metadata.is_dir() => converge_attributes(path, attributes, follow, apply),
        Some(metadata) => Err(ModuleError::Failed(format!(
            "{} is a {}, not a directory",
            path.display(),
            kind_name(&metadata)
        ))),
        None => {
            if apply {
                fs::create_dir_all(path)
                    .map_err(|e| ModuleError::io(path, "create the directory", e))?;
                // A new directory has no old attributes to report: the state line says it.
                converge_attributes(path, attributes, follow, true)?;
            }
            Ok(vec!["state: absent -> directory".into()])
        }
    }
}

fn absent(path: &Path, apply: bool) -> Result<Vec<String>, ModuleError> {
    // Without its trailing slash, `link/` names the link, not the tree it points to.
    let path: PathBuf = path.components().collect();
    let path = path.as_path();
    let Some(metadata) = metadata_if_exists(path, false)? else {
        return Ok(Vec::new());
    };
    if path.parent().is_none() {
        return Err(ModuleError::Failed(format!(
            "refusing to remove {}",
            path.display()
        )));
    }
    if apply {
        // A link is removed, never what it points to.
        let removed = if metadata.is_dir() {
            fs::remove_dir_all(path)
        } else {
            fs::remove_file(path)
        };
        removed.map_err(|e| ModuleError::io(path, "remove", e))?;
    }
    Ok(vec![format!("state: {} -> absent", kind_name(&metadata))])
}

/// Unlike touch(1) and Ansible, an existing path keeps its times: weft's touch stays
/// idempotent, so a run that has nothing to do reports nothing changed.
fn touch(
    path: &Path,
    attributes: &WantedAttributes,
    follow: bool,
    apply: bool,
) -> Result<Vec<String>, ModuleError> {
    if metadata_if_exists(path, true)?.is_some() {
        return converge_attributes(path, attributes, follow, apply);
    }
    if apply {
        write_atomic(path, b"", attributes.mode(), follow)?;
        converge_attributes(path, attributes, follow, true)?;
    }
    Ok(vec!["state: absent -> file".into()])
}

fn link(path: &Path, target: &Path, force: bool, apply: bool) -> Result<Vec<String>, ModuleError> {
    let change = match metadata_if_exists(path, false)? {
        None => format!("state: absent -> link to {}", target.display()),
        Some(metadata) if metadata.file_type().is_symlink() => {
            let current = fs::read_link(path).map_err(|e| ModuleError::io(path, "read", e))?;
            if current == target {
                return Ok(Vec::new());
            }
            format!("link: {} -> {}", current.display(), target.display())
        }
        Some(metadata) if metadata.is_dir() => {
            return Err(ModuleError::Failed(format!(
                "{} is a directory; weft does not replace a directory with a link \
                 (remove it first with `state: absent`)",
                path.display()
            )))
        }
        Some(metadata) if !force => {
            return Err(ModuleError::Failed(format!(
                "{} is a {}, not a link; set `force: true` to replace it with a link",
                path.display(),
                kind_name(&metadata)
            )))
        }
        Some(metadata) => format!(
            "state: {} -> link to {}",
            kind_name(&metadata),
            target.display()
        ),
    };
    if apply {
        replace_with_symlink(path, target)?;
    }
    Ok(vec![change])
}

/// Points `path` at `target` with one rename, so the path never goes missing in between.
fn replace_with_symlink(path: &Path, target: &Path) -> Result<(), ModuleError> {
    let link_error = |e| ModuleError::io(path, "create the link", e);
    let temp = tempfile::Builder::new()
        .prefix(".weft-")
        .make_in(parent_dir(path)?, |temp_path| {
            std::os::unix::fs::symlink(target, temp_path)
        })
        .map_err(link_error)?;
    temp.persist(path).map_err(|e| link_error(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::files::test_support::{assert_converges, is_root, mode_of, run, snapshot, validate};

    fn yaml(path: &Path, rest: &str) -> String {
        format!("path: {}\n{rest}", path.display())
    }

    #[test]
    fn directory_is_created_with_parents_then_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/c");
        let task = yaml(&path, "state: directory\nmode: '0750'");
        let outcome = assert_converges(&File, &task, dir.path());
        assert_eq!(outcome.diff.as_deref(), Some("state: absent -> directory"));
        assert_eq!(outcome.output["state"], "directory");
        assert_eq!(outcome.output["path"], path.display().to_string());
        assert!(path.is_dir());
        assert_eq!(mode_of(&path), 0o750);
    }

    #[test]
    fn directory_mode_changes_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        fs::create_dir(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
        let outcome = assert_converges(
            &File,
            &yaml(&path, "state: directory\nmode: 0755"),
            dir.path(),
        );
        assert_eq!(outcome.diff.as_deref(), Some("mode: 0700 -> 0755"));
    }

    #[test]
    fn directory_over_a_file_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, "x").unwrap();
        let err = run(&File, &yaml(&path, "state: directory"), dir.path(), true).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{} is a file, not a directory", path.display())
        );
    }

    #[test]
    fn file_state_changes_attributes_of_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, "x").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let outcome = assert_converges(&File, &yaml(&path, "mode: u=rw,g=r,o=r"), dir.path());
        assert_eq!(outcome.diff.as_deref(), Some("mode: 0600 -> 0644"));
        assert_eq!(fs::read(&path).unwrap(), b"x");
    }

    #[test]
    fn file_state_needs_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing");
        let err = run(&File, &yaml(&path, "state: file"), dir.path(), false).unwrap_err();
        assert!(err.to_string().contains("use `state: touch`"), "{err}");
        let err = run(&File, &yaml(dir.path(), "mode: 0755"), dir.path(), false).unwrap_err();
        assert!(
            err.to_string()
                .contains("is a directory; use `state: directory`"),
            "{err}"
        );
    }

    #[test]
    fn owner_changes_are_reported_by_name() {
        if !is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, "x").unwrap();
        let outcome = assert_converges(&File, &yaml(&path, "owner: '1'\ngroup: '1'"), dir.path());
        let diff = outcome.diff.unwrap();
        assert!(diff.starts_with("owner: root -> "), "{diff}");
        assert!(diff.contains("\ngroup: root -> "), "{diff}");
    }

    #[test]
    fn touch_creates_once_and_keeps_times() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let outcome = assert_converges(
            &File,
            &yaml(&path, "state: touch\nmode: '0600'"),
            dir.path(),
        );
        assert_eq!(outcome.diff.as_deref(), Some("state: absent -> file"));
        assert_eq!(fs::read(&path).unwrap(), b"");
        assert_eq!(mode_of(&path), 0o600);
    }

    #[test]
    fn absent_removes_files_links_and_trees() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir_all(tree.join("sub")).unwrap();
        fs::write(tree.join("sub/f"), "x").unwrap();
        let outcome = assert_converges(&File, &yaml(&tree, "state: absent"), dir.path());
        assert_eq!(outcome.diff.as_deref(), Some("state: directory -> absent"));
        assert!(!tree.exists());

        let kept = dir.path().join("kept");
        fs::create_dir(&kept).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&kept, &link).unwrap();
        let outcome = assert_converges(&File, &yaml(&link, "state: absent"), dir.path());
        assert_eq!(outcome.diff.as_deref(), Some("state: link -> absent"));
        assert!(kept.is_dir(), "the link's target stays");

        fs::write(kept.join("f"), "x").unwrap();
        std::os::unix::fs::symlink(&kept, &link).unwrap();
        let with_slash = format!("{}/", link.display());
        assert_converges(
            &File,
            &yaml(Path::new(&with_slash), "state: absent"),
            dir.path(),
        );
        assert!(kept.join("f").exists(), "`link/` removes the link only");
    }

    #[test]
    fn link_is_created_then_retargeted() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("current");
        let outcome = assert_converges(
            &File,
            &yaml(&link, "state: link\nsrc: releases/1"),
            dir.path(),
        );
        assert_eq!(
            outcome.diff.as_deref(),
            Some("state: absent -> link to releases/1")
        );
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("releases/1"));

        let outcome = assert_converges(
            &File,
            &yaml(&link, "state: link\nsrc: releases/2"),
            dir.path(),
        );
        assert_eq!(
            outcome.diff.as_deref(),
            Some("link: releases/1 -> releases/2")
        );
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("releases/2"));
    }

    #[test]
    fn link_replaces_a_file_only_with_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, "x").unwrap();
        let err = run(
            &File,
            &yaml(&path, "state: link\nsrc: /etc/hostname"),
            dir.path(),
            false,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .ends_with("set `force: true` to replace it with a link"),
            "{err}"
        );
        let outcome = assert_converges(
            &File,
            &yaml(&path, "state: link\nsrc: /etc/hostname\nforce: yes"),
            dir.path(),
        );
        assert_eq!(
            outcome.diff.as_deref(),
            Some("state: file -> link to /etc/hostname")
        );

        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let err = run(
            &File,
            &yaml(&sub, "state: link\nsrc: x\nforce: true"),
            dir.path(),
            true,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("does not replace a directory"),
            "{err}"
        );
    }

    #[test]
    fn argument_mistakes_fail_before_touching_anything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        let before = snapshot(dir.path());
        for (task, message) in [
            ("state: link", "`state: link` needs `src`"),
            (
                "state: touch\nsrc: y",
                "`src` only applies to `state: link`",
            ),
            (
                "state: absent\nmode: '0644'",
                "do not apply to `state: absent`",
            ),
            (
                "state: touch\nowner: no-such-user-x",
                "unknown user `no-such-user-x`",
            ),
        ] {
            let err = run(&File, &yaml(&path, task), dir.path(), true).unwrap_err();
            assert!(err.to_string().contains(message), "{task}: {err}");
        }
        assert_eq!(snapshot(dir.path()), before);
    }

    #[test]
    fn validation_checks_the_mode_and_state() {
        let err = validate(&File, "path: /x\nmode: '0999'", Path::new(".")).unwrap_err();
        assert_eq!(err.field_path(), "mode");
        assert!(err.message.starts_with("invalid mode `0999`"), "{err}");
        let err = validate(&File, "path: /x\nstate: dir", Path::new(".")).unwrap_err();
        assert!(err.message.starts_with("unknown value `dir`"), "{err}");
        validate(
            &File,
            "path: /x\nmode: '{{ m }}'\nstate: directory",
            Path::new("."),
        )
        .unwrap();
    }
}
