//! `copy`: puts a file from the TaskBook's folder, or literal `content`, at `dest`.
//! Only the size is reported, not a checksum (`slurp` and `sync` report a SHA-256).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use weft_taskbook::regular_file::read_regular_file;
use weft_taskbook::yaml::Node;
use weft_taskbook::Error;

use crate::files::{
    place_file, resolve_src, validate_mode, validate_src, WriteOptions, FILE_LIMIT,
};
use crate::module::{MasterNeeds, Module, ModuleContext, ModuleError, Outcome};

pub struct Copy;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyArgs {
    dest: PathBuf,
    content: Option<String>,
    /// Relative paths are looked for next to the TaskBook, then in `templates/` and `files/`.
    src: Option<String>,
    mode: Option<String>,
    owner: Option<String>,
    group: Option<String>,
    #[serde(default)]
    backup: bool,
    /// Write through a symbolic link at `dest` instead of replacing it.
    #[serde(default)]
    follow: bool,
}

const CONTENT_OR_SRC: &str = "copy takes exactly one of `content` and `src`";
const COPIES_ONE_FILE: &str = "copy copies one file";

impl Module for Copy {
    const NAME: &'static str = "copy";
    type Args = CopyArgs;

    fn master_needs(args: &Node) -> MasterNeeds<'_> {
        MasterNeeds {
            files: crate::files::fixed_relative_src(args),
            ..MasterNeeds::default()
        }
    }

    fn validate(args: &Node, base_dir: &Path) -> Result<(), Error> {
        validate_mode(args)?;
        if args.get("content").is_some() == args.get("src").is_some() {
            return Err(Error::new(CONTENT_OR_SRC).at(args.span));
        }
        validate_src(args, base_dir, COPIES_ONE_FILE).map(drop)
    }

    fn check_apply(
        &self,
        args: CopyArgs,
        context: &mut ModuleContext,
        apply: bool,
    ) -> Result<Outcome, ModuleError> {
        let options = WriteOptions::new(
            args.mode.as_deref(),
            args.owner.as_deref(),
            args.group.as_deref(),
            args.backup,
            args.follow,
            apply,
        )?;
        let (content, src) = match (args.content, args.src) {
            (Some(content), None) => (content.into_bytes(), None),
            (None, Some(src)) => {
                let src = resolve_src(&src, context.base_dir, COPIES_ONE_FILE)
                    .map_err(ModuleError::Failed)?;
                let content =
                    read_regular_file(&src, true, &FILE_LIMIT).map_err(ModuleError::Failed)?;
                (content, Some(src))
            }
            _ => return Err(ModuleError::Failed(CONTENT_OR_SRC.into())),
        };
        place_file(
            &args.dest,
            src.as_deref(),
            &content,
            &options,
            context.want_diff,
            apply,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::files::test_support::{assert_converges, is_root, mode_of, run, snapshot, validate};

    fn dest_yaml(dest: &Path, rest: &str) -> String {
        format!("dest: {}\n{rest}", dest.display())
    }

    #[test]
    fn content_is_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("motd");
        let outcome = assert_converges(&Copy, &dest_yaml(&dest, "content: \"hi\\n\""), dir.path());
        assert_eq!(
            outcome.diff.as_deref(),
            Some(
                format!(
                    "--- /dev/null\n+++ {} (after)\n@@ -0,0 +1 @@\n+hi",
                    dest.display()
                )
                .as_str()
            )
        );
        assert_eq!(fs::read(&dest).unwrap(), b"hi\n");
        assert_eq!(mode_of(&dest), 0o644);
        assert_eq!(outcome.output["size"], 3);
        assert_eq!(outcome.output["dest"], dest.display().to_string());
    }

    #[test]
    fn changed_content_and_mode_share_one_diff() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("conf");
        fs::write(&dest, "a\nb\n").unwrap();
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o600)).unwrap();
        let task = dest_yaml(&dest, "content: \"a\\nc\\n\"\nmode: '0640'");
        let outcome = assert_converges(&Copy, &task, dir.path());
        let diff = outcome.diff.unwrap();
        assert!(diff.contains("\n-b\n+c\nmode: 0600 -> 0640"), "{diff}");
        assert_eq!(mode_of(&dest), 0o640);
    }

    #[test]
    fn replacing_keeps_the_old_mode_and_owner() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("conf");
        fs::write(&dest, "old").unwrap();
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o600)).unwrap();
        if is_root() {
            nix::unistd::chown(&dest, Some(nix::unistd::Uid::from_raw(1)), None).unwrap();
        }
        assert_converges(&Copy, &dest_yaml(&dest, "content: new"), dir.path());
        assert_eq!(mode_of(&dest), 0o600);
        if is_root() {
            use std::os::unix::fs::MetadataExt;
            assert_eq!(fs::metadata(&dest).unwrap().uid(), 1);
        }
    }

    #[test]
    fn a_symlink_at_dest_is_replaced_and_what_it_points_to_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        fs::write(&elsewhere, "secret\n").unwrap();
        let dest = dir.path().join("conf");
        std::os::unix::fs::symlink(&elsewhere, &dest).unwrap();
        let outcome = assert_converges(&Copy, &dest_yaml(&dest, "content: new"), dir.path());
        assert_eq!(
            outcome.diff.unwrap(),
            format!(
                "state: link to {} -> file\n--- /dev/null\n+++ {} (after)\n@@ -0,0 +1 @@\n+new\n\\ No newline at end of file",
                elsewhere.display(),
                dest.display()
            )
        );
        assert_eq!(fs::read(&dest).unwrap(), b"new");
        assert_eq!(fs::read(&elsewhere).unwrap(), b"secret\n");
    }

    #[test]
    fn src_goes_into_a_directory_dest_under_its_own_name() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("files")).unwrap();
        fs::write(dir.path().join("files/app.conf"), "x=1\n").unwrap();
        let etc = dir.path().join("etc");
        fs::create_dir(&etc).unwrap();
        let task = format!("src: app.conf\ndest: {}/", etc.display());
        let outcome = assert_converges(&Copy, &task, dir.path());
        assert_eq!(fs::read(etc.join("app.conf")).unwrap(), b"x=1\n");
        assert_eq!(
            outcome.output["dest"],
            etc.join("app.conf").display().to_string()
        );
    }

    #[test]
    fn backup_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("conf");
        fs::write(&dest, "old\n").unwrap();
        let outcome = assert_converges(
            &Copy,
            &dest_yaml(&dest, "content: new\nbackup: yes"),
            dir.path(),
        );
        let backup = outcome.output["backup_file"].as_str().unwrap().to_string();
        assert!(backup.starts_with(&format!("{}.", dest.display())) && backup.ends_with('~'));
        assert_eq!(fs::read(&backup).unwrap(), b"old\n");
        assert_eq!(fs::read(&dest).unwrap(), b"new");
    }

    #[test]
    fn binary_content_gets_a_summary_diff() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("blob"), [0u8, 1, 2]).unwrap();
        let dest = dir.path().join("out");
        let outcome = assert_converges(&Copy, &dest_yaml(&dest, "src: blob"), dir.path());
        assert_eq!(
            outcome.diff.as_deref(),
            Some("binary content differs (0 bytes -> 3 bytes)")
        );
    }

    #[test]
    fn runtime_errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("adir")).unwrap();
        let before = snapshot(dir.path());
        let missing_parent = dir.path().join("nope/out");
        for (task, message) in [
            (
                dest_yaml(&missing_parent, "content: x"),
                "parent directory".to_string(),
            ),
            (
                dest_yaml(dir.path(), "content: x"),
                "`content` needs the path of a file".into(),
            ),
            (
                dest_yaml(&dir.path().join("o"), "src: adir"),
                "is a directory; copy copies one file".into(),
            ),
            (
                dest_yaml(&dir.path().join("o"), "src: nope"),
                "`src` nope not found".into(),
            ),
            (
                dest_yaml(&dir.path().join("o"), "content: x\nsrc: adir"),
                CONTENT_OR_SRC.into(),
            ),
        ] {
            let err = run(&Copy, &task, dir.path(), true).unwrap_err();
            assert!(err.to_string().contains(&message), "{task}: {err}");
        }
        assert_eq!(snapshot(dir.path()), before);
    }

    #[test]
    fn validation_finds_a_bad_src_before_the_run() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("adir")).unwrap();
        fs::write(dir.path().join("ok"), "x").unwrap();
        validate(&Copy, "dest: /x\nsrc: ok", dir.path()).unwrap();
        validate(&Copy, "dest: /x\nsrc: '{{ name }}'", dir.path()).unwrap();

        let err = validate(&Copy, "dest: /x\nsrc: nope", dir.path()).unwrap_err();
        assert_eq!(err.field_path(), "src");
        assert_eq!(err.span.unwrap().line, 2);
        assert!(err.message.starts_with("`src` nope not found"), "{err}");
        let err = validate(&Copy, "dest: /x\nsrc: adir", dir.path()).unwrap_err();
        assert!(
            err.message
                .ends_with("is a directory; copy copies one file"),
            "{err}"
        );
        let err = validate(&Copy, "dest: /x", dir.path()).unwrap_err();
        assert_eq!(err.message, CONTENT_OR_SRC);
        let err = validate(&Copy, "dest: /x\ncontent: a\nmode: rw", dir.path()).unwrap_err();
        assert_eq!(err.field_path(), "mode");
    }

    #[test]
    fn src_that_is_a_device_or_fifo_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let dest = dir.path().join("out");
        for (src, kind) in [
            (Path::new("/dev/urandom"), "a character device"),
            (&fifo, "a FIFO (named pipe)"),
        ] {
            let task = dest_yaml(&dest, &format!("src: {}", src.display()));
            let message = format!("`src` {} is {kind}, not a regular file", src.display());
            let err = validate(&Copy, &task, dir.path()).unwrap_err();
            assert_eq!(err.message, message);
            let err = run(&Copy, &task, dir.path(), true).unwrap_err();
            assert_eq!(err.to_string(), message);
        }
        assert!(!dest.exists());
    }
}
