//! `stat`: registers what is at a path (Ansible's `stat`, under the same `stat` key:
//! `register: found` then `found.stat.exists`, `found.stat.isdir`, `found.stat.mode`,
//! `found.stat.checksum`...). It only reads, so it runs in check mode too, and never
//! reports a change.

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::Digest;

use crate::files::{group_name, user_name};
use crate::module::{Module, ModuleContext, ModuleError, Outcome};
use crate::slurp::hex;

pub struct Stat;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatArgs {
    path: PathBuf,
    /// Describe what a symbolic link points to rather than the link.
    #[serde(default)]
    follow: bool,
    /// A regular file's `checksum`; off for files too large to read at every run.
    #[serde(default = "crate::module::yes")]
    get_checksum: bool,
    /// Only `sha256`: Ansible's default, sha1, is not offered.
    #[serde(default)]
    checksum_algorithm: ChecksumAlgorithm,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ChecksumAlgorithm {
    #[default]
    Sha256,
}

impl Module for Stat {
    const NAME: &'static str = "stat";
    type Args = StatArgs;

    fn check_apply(
        &self,
        args: StatArgs,
        context: &mut ModuleContext,
        _apply: bool,
    ) -> Result<Outcome, ModuleError> {
        let path = args.path.as_path();
        let found = if args.follow {
            std::fs::metadata(path)
        } else {
            std::fs::symlink_metadata(path)
        };
        let stat = match found {
            Ok(metadata) => {
                let ChecksumAlgorithm::Sha256 = args.checksum_algorithm;
                describe(path, &metadata, args.get_checksum, context.deadline)?
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Map::from_iter([("exists".to_string(), Value::Bool(false))])
            }
            Err(error) => return Err(ModuleError::io(path, "stat", error)),
        };
        Ok(Outcome::unchanged().with_output("stat", Value::Object(stat)))
    }
}

/// What `stat` registers for the thing at `path`, and `find` for each it finds.
pub(crate) fn describe(
    path: &Path,
    metadata: &Metadata,
    get_checksum: bool,
    deadline: Option<Instant>,
) -> Result<Map<String, Value>, ModuleError> {
    let kind = metadata.file_type();
    let mut stat = json!({
        "exists": true,
        "path": path.display().to_string(),
        "isreg": kind.is_file(),
        "isdir": kind.is_dir(),
        "islnk": kind.is_symlink(),
        "isfifo": kind.is_fifo(),
        "issock": kind.is_socket(),
        "isblk": kind.is_block_device(),
        "ischr": kind.is_char_device(),
        "mode": format!("{:04o}", metadata.mode() & 0o7777),
        "uid": metadata.uid(),
        "gid": metadata.gid(),
        "pw_name": user_name(metadata.uid()),
        "gr_name": group_name(metadata.gid()),
        "size": metadata.size(),
        "inode": metadata.ino(),
        "dev": metadata.dev(),
        "nlink": metadata.nlink(),
        "mtime": seconds(metadata.mtime(), metadata.mtime_nsec()),
        "atime": seconds(metadata.atime(), metadata.atime_nsec()),
        "ctime": seconds(metadata.ctime(), metadata.ctime_nsec()),
    });
    let stat = stat.as_object_mut().expect("a JSON object");
    if kind.is_symlink() {
        let target = std::fs::read_link(path).map_err(|e| ModuleError::io(path, "read", e))?;
        stat.insert("lnk_target".into(), target.display().to_string().into());
        if let Ok(source) = std::fs::canonicalize(path) {
            stat.insert("lnk_source".into(), source.display().to_string().into());
        }
    }
    if kind.is_file() && get_checksum {
        stat.insert("checksum".into(), sha256_of_file(path, deadline)?.into());
    }
    Ok(std::mem::take(stat))
}

fn seconds(secs: i64, nanos: i64) -> f64 {
    secs as f64 + nanos as f64 / 1e9
}

/// A regular file opened for reading without blocking, and checked again once open: a
/// FIFO swapped in after a stat must not hang the task.
pub(crate) fn open_regular(path: &Path) -> Result<File, ModuleError> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| ModuleError::io(path, "read", e))?;
    let opened = file
        .metadata()
        .map_err(|e| ModuleError::io(path, "read", e))?;
    if !opened.is_file() {
        return Err(ModuleError::Failed(format!(
            "{} changed into something other than a file while it was read",
            path.display()
        )));
    }
    Ok(file)
}

/// Read in pieces, so a large file takes no memory and gives up at the task's deadline.
fn sha256_of_file(path: &Path, deadline: Option<Instant>) -> Result<String, ModuleError> {
    let mut file = open_regular(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Err(ModuleError::Failed(format!(
                "reading {} for its checksum took past the task's timeout; `get_checksum: false` skips it",
                path.display()
            )));
        }
        let read = file
            .read(&mut buffer)
            .map_err(|e| ModuleError::io(path, "read", e))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::files::test_support::run;

    fn stat_of(dir: &Path, rest: &str) -> Map<String, Value> {
        let outcome = run(&Stat, rest, dir, false).unwrap();
        assert!(!outcome.changed);
        outcome.output["stat"].as_object().unwrap().clone()
    }

    #[test]
    fn a_file_is_described_with_its_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, "hello\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let stat = stat_of(dir.path(), &format!("path: {}", path.display()));
        assert_eq!(stat["exists"], true);
        assert_eq!(stat["isreg"], true);
        assert_eq!(stat["isdir"], false);
        assert_eq!(stat["mode"], "0640");
        assert_eq!(stat["size"], 6);
        assert_eq!(
            stat["checksum"],
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
        let stat = stat_of(
            dir.path(),
            &format!("path: {}\nget_checksum: false", path.display()),
        );
        assert!(!stat.contains_key("checksum"));
    }

    #[test]
    fn links_are_described_or_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("l")).unwrap();
        let link = dir.path().join("l");
        let stat = stat_of(dir.path(), &format!("path: {}", link.display()));
        assert_eq!(stat["islnk"], true);
        assert_eq!(stat["lnk_target"], dir.path().display().to_string());
        let stat = stat_of(
            dir.path(),
            &format!("path: {}\nfollow: true", link.display()),
        );
        assert_eq!(stat["islnk"], false);
        assert_eq!(stat["isdir"], true);
    }

    #[test]
    fn nothing_there_is_exists_false_and_other_algorithms_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none");
        let stat = stat_of(dir.path(), &format!("path: {}", missing.display()));
        assert_eq!(Value::Object(stat), json!({"exists": false}));
        let err = run(
            &Stat,
            &format!("path: {}\nchecksum_algorithm: sha1", missing.display()),
            dir.path(),
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("sha256"), "{err}");
    }
}
