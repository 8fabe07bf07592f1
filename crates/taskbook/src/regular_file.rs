//! Reading a local file whole, safely: a TaskBook's files travel in a bundle and the
//! file modules read their `src` and `dest`, and any of these paths may name a device
//! or a FIFO (which could block the read, or never end) or a file too big to hold.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use crate::limits::human_bytes;

/// How much is read of a local file, and who says so, for the message.
pub struct ReadLimit {
    pub max_bytes: u64,
    /// Finishes "... is N bytes; ": "the file modules read".
    pub reader: &'static str,
}

impl ReadLimit {
    /// A regular file (reading a device or a FIFO could block or never end) of at most
    /// `max_bytes`.
    pub fn check(&self, path: &Path, metadata: &fs::Metadata) -> Result<(), String> {
        check_regular(path, metadata)?;
        self.check_size(path, metadata.len())
    }

    fn check_size(&self, path: &Path, size: u64) -> Result<(), String> {
        if size <= self.max_bytes {
            return Ok(());
        }
        Err(format!(
            "{} is {size} bytes; {} files of at most {} bytes ({})",
            path.display(),
            self.reader,
            self.max_bytes,
            human_bytes(self.max_bytes as usize)
        ))
    }
}

/// Refuses what is not a regular file: reading a device or a FIFO could block or never end.
pub fn check_regular(path: &Path, metadata: &fs::Metadata) -> Result<(), String> {
    if metadata.is_file() {
        return Ok(());
    }
    Err(format!(
        "{} is {}, not a regular file",
        path.display(),
        file_kind(&metadata.file_type())
    ))
}

fn file_kind(file_type: &fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_fifo() {
        "a FIFO (named pipe)"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

/// Reads a local file whole, refusing anything but a regular file within `limit`
/// before opening it, and reading no more than the limit even if it grows meanwhile.
/// Without `follow`, a symbolic link at `path` is refused too.
pub fn read_regular_file(path: &Path, follow: bool, limit: &ReadLimit) -> Result<Vec<u8>, String> {
    let cannot = |e: io::Error| format!("cannot read {}: {e}", path.display());
    let metadata = if follow {
        fs::metadata(path)
    } else {
        fs::symlink_metadata(path)
    };
    limit.check(path, &metadata.map_err(cannot)?)?;
    // Should the path have become a FIFO since, opening it does not wait for a writer
    // (O_NONBLOCK), nor is a link put there read through without `follow` (O_NOFOLLOW);
    // the open file is checked again.
    let no_follow = if follow { 0 } else { libc::O_NOFOLLOW };
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(no_follow | libc::O_NONBLOCK)
        .open(path)
        .map_err(cannot)?;
    let metadata = file.metadata().map_err(cannot)?;
    limit.check(path, &metadata)?;
    let mut content = Vec::with_capacity(metadata.len() as usize);
    file.take(limit.max_bytes + 1)
        .read_to_end(&mut content)
        .map_err(cannot)?;
    limit.check_size(path, content.len() as u64)?;
    Ok(content)
}
