//! Replacing a file whole or not at all: the one way weft writes a file it must not
//! leave half-written, whether its own state (credentials, identities) or a file a
//! module manages on a node.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReplaceError {
    #[error("cannot create a temporary file in {}: {}", .0.display(), .1)]
    Folder(PathBuf, io::Error),
    #[error("cannot write {}: {}", .0.display(), .1)]
    File(PathBuf, io::Error),
}

/// Replaces the file at `path` with `bytes` so that readers see the old content or the
/// new, never a mix, even if weft is killed midway: a temporary file in the same folder
/// is written, synced and renamed over `path`. The new file has `mode`, and the old
/// file's owner and group when root writes it (only root may give a file away). A
/// symbolic link at `path` is replaced, not written through.
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ReplaceError> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let write_error = |e: io::Error| ReplaceError::File(path.to_path_buf(), e);
    let existing = fs::symlink_metadata(path)
        .ok()
        .filter(|metadata| metadata.is_file());

    // Dropping `temp` on any error below deletes it: no stray files are left behind.
    let mut temp = tempfile::Builder::new()
        .prefix(".weft-")
        .tempfile_in(dir)
        .map_err(|e| ReplaceError::Folder(dir.to_path_buf(), e))?;
    temp.write_all(bytes).map_err(write_error)?;
    if let Some(existing) = &existing {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::fchown(temp.as_file(), Some(existing.uid()), Some(existing.gid()))
                .map_err(write_error)?;
        }
    }
    // After fchown, which clears the setuid and setgid bits.
    temp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(write_error)?;
    temp.as_file().sync_all().map_err(write_error)?;
    temp.persist(path).map_err(|e| write_error(e.error))?;
    // Makes the rename itself durable. Best effort: some filesystems cannot sync a
    // directory, and the file is complete either way.
    if let Ok(directory) = fs::File::open(dir) {
        let _ = directory.sync_all();
    }
    Ok(())
}
