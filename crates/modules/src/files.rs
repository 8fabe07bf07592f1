//! What `file`, `copy`, `template` and `lineinfile` share: atomic writes, mode and
//! ownership changes reported as `what: before -> after` lines, content diffs, where a
//! relative `src` is looked for, and the static checks of their common arguments.
//!
//! A symbolic link at the path a task names is not followed unless the task says
//! `follow: true` (Ansible's argument): someone who may create links in a folder weft
//! writes to could otherwise point the write, chmod or chown at any file of the host.
//! Without `follow`, writing content replaces the link with a regular file, as
//! Ansible's `copy` does, and changing a mode or owner through a link is refused.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{AtFlags, AT_FDCWD};
use nix::sys::stat::{fchmodat, FchmodatFlags};
use nix::unistd::{Gid, Group, Uid, User};
use similar::TextDiff;
use weft_taskbook::bundle::BUNDLED_FOLDERS;
use weft_taskbook::error::PathSegment;
use weft_taskbook::regular_file::{read_regular_file, ReadLimit};
use weft_taskbook::whole_file::{self, ReplaceError};
use weft_taskbook::yaml::{Node, ScalarValue};
use weft_taskbook::Error;

use crate::module::{ModuleError, Outcome};

/// Permissions of a file weft creates without a `mode` (what umask 022 gives).
const NEW_FILE_MODE: u32 = 0o644;

/// The permission bits `chmod` deals in: rwx for all three classes, setuid, setgid, sticky.
const PERMISSION_BITS: u32 = 0o7777;

const MODE_EXPECTED: &str = "expected octal digits like 0644, or symbolic like u=rw,g=r,o=r";

/// A wanted `mode`: octal, or symbolic (`u=rw,g=r,o=r`, `a+x`, `go-w`) relative to the
/// current mode, as `chmod` reads it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Mode {
    Octal(u32),
    Symbolic(Vec<SymbolicClause>),
}

/// One comma-separated part of a symbolic mode: `go-w`, `u=rwx`, `+X`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SymbolicClause {
    /// The bits this clause may touch: the named classes' rwx and their special bits.
    classes: u32,
    operations: Vec<(char, String)>,
}

impl Mode {
    /// Reads `0644`, `644`, `0o644`, or a symbolic mode. Always octal: a YAML `644` is
    /// read from its source text, so there is no decimal 420 to confuse it with.
    pub(crate) fn parse(text: &str) -> Result<Mode, String> {
        let text = text.trim();
        let digits = text.strip_prefix("0o").unwrap_or(text);
        let invalid = || format!("invalid mode `{text}`: {MODE_EXPECTED}");
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            return match u32::from_str_radix(digits, 8) {
                Ok(bits) if bits <= PERMISSION_BITS => Ok(Mode::Octal(bits)),
                _ => Err(invalid()),
            };
        }
        text.split(',')
            .map(SymbolicClause::parse)
            .collect::<Option<Vec<_>>>()
            .map(Mode::Symbolic)
            .ok_or_else(invalid)
    }

    /// The mode a path with `current` permissions ends up with.
    pub(crate) fn applied_to(&self, current: u32, is_dir: bool) -> u32 {
        match self {
            Mode::Octal(bits) => *bits,
            Mode::Symbolic(clauses) => clauses
                .iter()
                .fold(current & PERMISSION_BITS, |mode, clause| {
                    clause.applied_to(mode, is_dir)
                }),
        }
    }
}

impl SymbolicClause {
    fn parse(text: &str) -> Option<SymbolicClause> {
        let is_operator = |c: char| matches!(c, '+' | '-' | '=');
        let (class_letters, rest) = text.split_at(text.find(is_operator)?);
        let mut classes = 0;
        for letter in class_letters.chars() {
            classes |= match letter {
                'u' => 0o4700,
                'g' => 0o2070,
                'o' => 0o1007,
                'a' => PERMISSION_BITS,
                _ => return None,
            };
        }
        if classes == 0 {
            classes = PERMISSION_BITS;
        }
        let mut operations: Vec<(char, String)> = Vec::new();
        for c in rest.chars() {
            match operations.last_mut() {
                _ if is_operator(c) => operations.push((c, String::new())),
                Some((_, permissions)) if "rwxXst".contains(c) => permissions.push(c),
                _ => return None,
            }
        }
        Some(SymbolicClause {
            classes,
            operations,
        })
    }

    fn applied_to(&self, mut mode: u32, is_dir: bool) -> u32 {
        for (operator, permissions) in &self.operations {
            let bits = permissions.chars().fold(0, |bits, permission| {
                bits | match permission {
                    'r' => 0o444,
                    'w' => 0o222,
                    'x' => 0o111,
                    // `X`: searchable directories and already-executable files only.
                    'X' if is_dir || mode & 0o111 != 0 => 0o111,
                    's' => 0o6000,
                    't' => 0o1000,
                    _ => 0,
                }
            }) & self.classes;
            mode = match operator {
                '+' => mode | bits,
                '-' => mode & !bits,
                _ => (mode & !self.classes) | bits,
            };
        }
        mode
    }
}

/// `mode`, `owner` and `group` as a module wants them, names already looked up so that
/// an unknown user fails a real run before anything is written.
#[derive(Debug, Default)]
pub(crate) struct WantedAttributes {
    mode: Option<Mode>,
    owner: Option<WantedId>,
    group: Option<WantedId>,
}

/// A wanted owner or group.
#[derive(Debug)]
enum WantedId {
    Id(u32),
    /// In check mode only: a name this host does not know yet, which an earlier task
    /// skipped in check mode (`shell: useradd ...`) may create. A real run fails on it.
    NotYetKnown(String),
}

impl WantedAttributes {
    /// `apply` false is check mode, where an unknown user or group is a pending change.
    pub(crate) fn resolve(
        mode: Option<&str>,
        owner: Option<&str>,
        group: Option<&str>,
        apply: bool,
    ) -> Result<Self, ModuleError> {
        let mode = mode
            .map(Mode::parse)
            .transpose()
            .map_err(|message| ModuleError::Failed(format!("`mode`: {message}")))?;
        let owner = owner
            .map(|name| {
                WantedId::resolve("user", name, apply, |name| {
                    User::from_name(name).map(|user| user.map(|u| u.uid.as_raw()))
                })
            })
            .transpose()?;
        let group = group
            .map(|name| {
                WantedId::resolve("group", name, apply, |name| {
                    Group::from_name(name).map(|group| group.map(|g| g.gid.as_raw()))
                })
            })
            .transpose()?;
        Ok(WantedAttributes { mode, owner, group })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.mode.is_none() && self.owner.is_none() && self.group.is_none()
    }

    pub(crate) fn mode(&self) -> Option<&Mode> {
        self.mode.as_ref()
    }
}

impl WantedId {
    /// From a name or a number (ids need not exist in /etc/passwd).
    fn resolve(
        kind: &str,
        name: &str,
        apply: bool,
        find: impl FnOnce(&str) -> nix::Result<Option<u32>>,
    ) -> Result<WantedId, ModuleError> {
        if let Ok(id) = name.parse::<u32>() {
            return Ok(WantedId::Id(id));
        }
        match find(name) {
            Ok(Some(id)) => Ok(WantedId::Id(id)),
            Ok(None) if !apply => Ok(WantedId::NotYetKnown(name.to_string())),
            Ok(None) => Err(ModuleError::Failed(format!(
                "unknown {kind} `{name}`: there is no such {kind} on this host"
            ))),
            Err(error) => Err(ModuleError::Failed(format!(
                "cannot look up the {kind} `{name}`: {error}"
            ))),
        }
    }

    /// The id to change to (`None` when not known yet) and the `before -> after` text,
    /// unless `current` is already it.
    fn change_from(
        &self,
        current: u32,
        name_of: fn(u32) -> String,
    ) -> Option<(Option<u32>, String)> {
        match self {
            WantedId::Id(id) if *id == current => None,
            WantedId::Id(id) => Some((
                Some(*id),
                format!("{} -> {}", name_of(current), name_of(*id)),
            )),
            WantedId::NotYetKnown(name) => Some((
                None,
                format!("{} -> {name} (not on this host yet)", name_of(current)),
            )),
        }
    }
}

pub(crate) fn user_name(uid: u32) -> String {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    }
}

pub(crate) fn group_name(gid: u32) -> String {
    match Group::from_gid(Gid::from_raw(gid)) {
        Ok(Some(group)) => group.name,
        _ => gid.to_string(),
    }
}

/// Brings the mode, owner and group of `path` to `wanted`, only when `apply`; returns
/// one `what: before -> after` line per difference. A symbolic link at `path` is
/// followed only with `follow`, else refused.
pub(crate) fn converge_attributes(
    path: &Path,
    wanted: &WantedAttributes,
    follow: bool,
    apply: bool,
) -> Result<Vec<String>, ModuleError> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    refuse_symlink(path, follow, "changes the mode, owner or group of")?;
    let metadata = if follow {
        fs::metadata(path)
    } else {
        fs::symlink_metadata(path)
    };
    let metadata = metadata.map_err(|e| ModuleError::io(path, "inspect", e))?;
    let current_mode = metadata.mode() & PERMISSION_BITS;
    let target_mode = wanted.mode.as_ref().map_or(current_mode, |mode| {
        mode.applied_to(current_mode, metadata.is_dir())
    });
    let owner_change = wanted
        .owner
        .as_ref()
        .and_then(|owner| owner.change_from(metadata.uid(), user_name));
    let group_change = wanted
        .group
        .as_ref()
        .and_then(|group| group.change_from(metadata.gid(), group_name));

    let mut changes = Vec::new();
    if target_mode != current_mode {
        changes.push(format!("mode: {current_mode:04o} -> {target_mode:04o}"));
    }
    if let Some((_, change)) = &owner_change {
        changes.push(format!("owner: {change}"));
    }
    if let Some((_, change)) = &group_change {
        changes.push(format!("group: {change}"));
    }
    if apply && !changes.is_empty() {
        // Without `follow`, the calls below act on `path` itself even if a link was put
        // there since the check above: chown then changes the link, chmod fails.
        let at_flags = if follow {
            AtFlags::empty()
        } else {
            AtFlags::AT_SYMLINK_NOFOLLOW
        };
        if owner_change.is_some() || group_change.is_some() {
            let uid = owner_change.and_then(|(id, _)| id).map(Uid::from_raw);
            let gid = group_change.and_then(|(id, _)| id).map(Gid::from_raw);
            nix::unistd::fchownat(AT_FDCWD, path, uid, gid, at_flags).map_err(|e| {
                ModuleError::Failed(format!(
                    "cannot change the owner of {}: {e}",
                    path.display()
                ))
            })?;
        }
        // Also after a mere chown: it clears the setuid and setgid bits.
        let chmod_flags = if follow {
            FchmodatFlags::FollowSymlink
        } else {
            FchmodatFlags::NoFollowSymlink
        };
        fchmodat(
            AT_FDCWD,
            path,
            nix::sys::stat::Mode::from_bits_truncate(target_mode),
            chmod_flags,
        )
        .map_err(|e| ModuleError::io(path, "change the mode of", e.into()))?;
    }
    Ok(changes)
}

/// Where the symbolic link at `path` points; `None` when `path` is no link.
pub(crate) fn symlink_target(path: &Path) -> Result<Option<PathBuf>, ModuleError> {
    match metadata_if_exists(path, false)? {
        Some(metadata) if metadata.file_type().is_symlink() => fs::read_link(path)
            .map(Some)
            .map_err(|e| ModuleError::io(path, "read the link", e)),
        _ => Ok(None),
    }
}

/// Refuses to go through a symbolic link at `path` unless the task says `follow: true`;
/// `doing` finishes "weft ... what a link points to".
pub(crate) fn refuse_symlink(path: &Path, follow: bool, doing: &str) -> Result<(), ModuleError> {
    if follow {
        return Ok(());
    }
    match symlink_target(path)? {
        Some(target) => Err(ModuleError::Failed(format!(
            "{} is a symbolic link to {}: weft {doing} what a link points to only when the \
             task says `follow: true`",
            path.display(),
            target.display()
        ))),
        None => Ok(()),
    }
}

/// The metadata of whatever is at `path`, or `None` when nothing is; with
/// `follow_links`, a symlink stands for what it points to.
pub(crate) fn metadata_if_exists(
    path: &Path,
    follow_links: bool,
) -> Result<Option<fs::Metadata>, ModuleError> {
    let metadata = if follow_links {
        fs::metadata(path)
    } else {
        fs::symlink_metadata(path)
    };
    match metadata {
        Ok(metadata) => Ok(Some(metadata)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ModuleError::io(path, "inspect", e)),
    }
}

/// The largest file the file modules read whole: a `src` of `copy` or `template`, or a
/// `dest` they compare with. They hold it in memory, and a cluster run ships far less
/// anyway (`weft_taskbook::limits::MAX_BUNDLE_BYTES`).
pub const MAX_FILE_BYTES: u64 = 64 << 20;

pub(crate) const FILE_LIMIT: ReadLimit = ReadLimit {
    max_bytes: MAX_FILE_BYTES,
    reader: "the file modules read",
};

/// The content of the regular file at `path`, or `None` when there is none yet. Without
/// `follow`, a symbolic link counts as no file: a write replaces it, and what it points
/// to is never read (into a diff, or into the new file).
pub(crate) fn read_existing(path: &Path, follow: bool) -> Result<Option<Vec<u8>>, ModuleError> {
    match metadata_if_exists(path, follow)? {
        None => Ok(None),
        Some(metadata) if metadata.file_type().is_symlink() => Ok(None),
        Some(metadata) if metadata.is_dir() => Err(ModuleError::Failed(format!(
            "{} is a directory, not a file",
            path.display()
        ))),
        Some(_) => read_regular_file(path, follow, &FILE_LIMIT)
            .map(Some)
            .map_err(ModuleError::Failed),
    }
}

/// The directory a new entry at `path` goes into, which must exist.
pub(crate) fn parent_dir(path: &Path) -> Result<&Path, ModuleError> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if dir.is_dir() {
        return Ok(dir);
    }
    if dir.exists() {
        return Err(ModuleError::Failed(format!(
            "cannot create {}: {} is not a directory",
            path.display(),
            dir.display()
        )));
    }
    Err(ModuleError::Failed(format!(
        "parent directory {dir} does not exist; create it with a \
         `file: {{path: {dir}, state: directory}}` task first",
        dir = dir.display()
    )))
}

/// Where writing to `path` lands. With `follow`, the file a symbolic link points to, so
/// that links into managed trees (`/etc/alternatives`, ...) stay links; `path` itself
/// otherwise, so the rename replaces a link there.
fn write_target(path: &Path, follow: bool) -> PathBuf {
    match fs::symlink_metadata(path) {
        Ok(metadata) if follow && metadata.file_type().is_symlink() => {
            // A dangling link has nothing to follow: it is replaced.
            fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
        }
        _ => path.to_path_buf(),
    }
}

/// Replaces the file at `path` with `bytes`, whole or not at all (`whole_file::replace`).
/// It takes `mode` when given (applied to the old mode when symbolic), else the old
/// file's mode, else 0644, and the old file's owner and group. A symbolic link at
/// `path` is written through only with `follow`; else it is replaced, and a new file's
/// defaults apply.
pub(crate) fn write_atomic(
    path: &Path,
    bytes: &[u8],
    mode: Option<&Mode>,
    follow: bool,
) -> Result<(), ModuleError> {
    let target = write_target(path, follow);
    parent_dir(&target)?;
    let old_mode = fs::symlink_metadata(&target)
        .ok()
        .filter(|metadata| metadata.is_file())
        .map_or(NEW_FILE_MODE, |metadata| metadata.mode() & PERMISSION_BITS);
    let new_mode = mode.map_or(old_mode, |mode| mode.applied_to(old_mode, false));
    whole_file::replace(&target, bytes, new_mode).map_err(|error| match error {
        ReplaceError::Folder(dir, e) => ModuleError::io(&dir, "create a temporary file in", e),
        ReplaceError::File(_, e) => ModuleError::io(path, "write", e),
    })
}

/// Keeps the file at `path` as `path.<unix time>~` before it is replaced. A hard link
/// costs nothing and keeps owner, mode and times; the rename that replaces `path`
/// leaves the old file to it.
fn back_up(path: &Path, follow: bool) -> Result<PathBuf, ModuleError> {
    let target = write_target(path, follow);
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    for attempt in 0..100u32 {
        let mut name = target.as_os_str().to_owned();
        name.push(match attempt {
            0 => format!(".{stamp}~"),
            n => format!(".{stamp}.{n}~"),
        });
        let backup = PathBuf::from(name);
        match fs::hard_link(&target, &backup) {
            Ok(()) => return Ok(backup),
            // Another backup in the same second.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            // A filesystem without hard links.
            Err(_) => {
                return fs::copy(&target, &backup)
                    .map(|_| backup.clone())
                    .map_err(|e| ModuleError::io(&backup, "create the backup", e))
            }
        }
    }
    Err(ModuleError::Failed(format!(
        "cannot find a free name to back up {}",
        path.display()
    )))
}

/// A unified diff of a file's content, or a one-line summary for binary content.
/// `before` is `None` for a file that does not exist yet.
pub(crate) fn content_diff(path_display: &str, before: Option<&[u8]>, after: &[u8]) -> String {
    fn as_text(bytes: &[u8]) -> Option<&str> {
        if bytes.contains(&0) {
            return None;
        }
        std::str::from_utf8(bytes).ok()
    }
    let (Some(old), Some(new)) = (as_text(before.unwrap_or_default()), as_text(after)) else {
        return format!(
            "binary content differs ({} bytes -> {} bytes)",
            before.map_or(0, <[u8]>::len),
            after.len()
        );
    };
    let old_header = match before {
        Some(_) => format!("{path_display} (before)"),
        None => "/dev/null".to_string(),
    };
    TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&old_header, &format!("{path_display} (after)"))
        .to_string()
}

/// How the content modules write: the attributes to converge, whether to back up, and
/// whether a symbolic link at the destination is followed.
pub(crate) struct WriteOptions {
    attributes: WantedAttributes,
    backup: bool,
    follow: bool,
}

impl WriteOptions {
    pub(crate) fn new(
        mode: Option<&str>,
        owner: Option<&str>,
        group: Option<&str>,
        backup: bool,
        follow: bool,
        apply: bool,
    ) -> Result<Self, ModuleError> {
        Ok(WriteOptions {
            attributes: WantedAttributes::resolve(mode, owner, group, apply)?,
            backup,
            follow,
        })
    }
}

/// Makes the file at `path` hold `content` with the wanted attributes. `current` is its
/// content now (`None`: missing), which the caller has read anyway. Check mode
/// (`apply` false) reports the same change and diff and touches nothing; it does not
/// require the parent directory either, which an earlier task may be about to create.
pub(crate) fn converge_file(
    path: &Path,
    current: Option<&[u8]>,
    content: &[u8],
    options: &WriteOptions,
    want_diff: bool,
    apply: bool,
) -> Result<Outcome, ModuleError> {
    let follow = options.follow;
    let content_changes = current != Some(content);
    // Measured before writing, so that check mode and a real run report alike; a file
    // this task creates has no old attributes to report.
    let attribute_changes = match current {
        Some(_) => converge_attributes(path, &options.attributes, follow, false)?,
        None => Vec::new(),
    };
    let replaced_link = if follow { None } else { symlink_target(path)? };
    let mut backup_file = None;
    if apply {
        if content_changes {
            if options.backup && current.is_some() {
                backup_file = Some(back_up(path, follow)?);
            }
            write_atomic(path, content, options.attributes.mode(), follow)?;
        }
        converge_attributes(path, &options.attributes, follow, true)?;
    }

    let changed = content_changes || !attribute_changes.is_empty();
    let diff = (want_diff && changed).then(|| {
        let mut parts = Vec::new();
        if let Some(target) = replaced_link {
            parts.push(format!("state: link to {} -> file", target.display()));
        }
        if content_changes {
            let diff = content_diff(&path.display().to_string(), current, content);
            parts.push(diff.trim_end().to_string());
        }
        parts.extend(attribute_changes);
        parts.join("\n")
    });
    let mut outcome = Outcome::changed(changed).with_diff(diff);
    if let Some(backup) = backup_file {
        outcome = outcome.with_output("backup_file", backup.display().to_string());
    }
    Ok(outcome)
}

/// `copy` and `template` once they have the content: write it to `dest`, or into it
/// when `dest` is a directory or ends with `/` (named after `src`, as `cp` does).
pub(crate) fn place_file(
    dest: &Path,
    src: Option<&Path>,
    content: &[u8],
    options: &WriteOptions,
    want_diff: bool,
    apply: bool,
) -> Result<Outcome, ModuleError> {
    let names_directory = dest.as_os_str().to_string_lossy().ends_with('/') || dest.is_dir();
    let dest = match (names_directory, src.and_then(Path::file_name)) {
        (false, _) => dest.to_path_buf(),
        (true, Some(file_name)) => dest.join(file_name),
        (true, None) => {
            return Err(ModuleError::Failed(format!(
                "`dest` {} is a directory; `content` needs the path of a file",
                dest.display()
            )))
        }
    };
    let current = read_existing(&dest, options.follow)?;
    let outcome = converge_file(
        &dest,
        current.as_deref(),
        content,
        options,
        want_diff,
        apply,
    )?;
    Ok(outcome
        .with_output("dest", dest.display().to_string())
        .with_output("size", content.len()))
}

/// Finds a relative `src` where Ansible users keep it: next to the TaskBook, or in its
/// `templates/` or `files/` folder. `one_file` finishes the message for a directory.
pub(crate) fn resolve_src(src: &str, base_dir: &Path, one_file: &str) -> Result<PathBuf, String> {
    let src_path = Path::new(src);
    let candidates = if src_path.is_absolute() {
        vec![src_path.to_path_buf()]
    } else {
        std::iter::once(base_dir.join(src_path))
            .chain(BUNDLED_FOLDERS.map(|folder| base_dir.join(folder).join(src_path)))
            .collect()
    };
    let Some(found) = candidates.iter().find(|candidate| candidate.exists()) else {
        let looked: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
        return Err(format!(
            "`src` {src} not found; looked for {}",
            looked.join(", ")
        ));
    };
    let metadata =
        fs::metadata(found).map_err(|e| format!("cannot read {}: {e}", found.display()))?;
    if metadata.is_dir() {
        return Err(format!(
            "`src` {} is a directory; {one_file}",
            found.display()
        ));
    }
    FILE_LIMIT
        .check(found, &metadata)
        .map_err(|problem| format!("`src` {problem}"))?;
    Ok(found.clone())
}

/// An argument's text when it is fixed before the run (not templated, not null): the
/// static checks look at these, templated values are checked once rendered.
pub(crate) fn literal_arg<'a>(args: &'a Node, key: &str) -> Option<(&'a Node, &'a str)> {
    let node = args.get(key)?;
    if node.is_template() || node.resolve_scalar() == Some(ScalarValue::Null) {
        return None;
    }
    node.scalar().map(|text| (node, text))
}

/// A task argument's `src` when it names a file beside the TaskBook: fixed before the
/// run (not templated) and relative. Absolute paths name files on the node.
pub(crate) fn fixed_relative_src(args: &Node) -> Vec<&str> {
    literal_arg(args, "src")
        .map(|(_, src)| src)
        .filter(|src| Path::new(src).is_relative())
        .into_iter()
        .collect()
}

/// An error about one argument, placed at its value.
pub(crate) fn arg_error(node: &Node, key: &str, message: impl Into<String>) -> Error {
    Error::new(message)
        .at(node.span)
        .under(PathSegment::Key(key.to_string()))
}

/// Checks a literal `mode` before the run.
pub(crate) fn validate_mode(args: &Node) -> Result<(), Error> {
    if let Some((node, text)) = literal_arg(args, "mode") {
        Mode::parse(text).map_err(|message| arg_error(node, "mode", message))?;
    }
    Ok(())
}

/// Checks before the run that a literal `src` is a file; returns where it is.
pub(crate) fn validate_src(
    args: &Node,
    base_dir: &Path,
    one_file: &str,
) -> Result<Option<PathBuf>, Error> {
    literal_arg(args, "src")
        .map(|(node, src)| {
            resolve_src(src, base_dir, one_file).map_err(|message| arg_error(node, "src", message))
        })
        .transpose()
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Runs modules the way the executor does and checks the contract every file module
    //! keeps: check mode predicts without touching, a second run changes nothing.

    use std::fs;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    use weft_taskbook::render::Renderer;
    use weft_taskbook::yaml::{parse_documents, Node};
    use weft_taskbook::Error;

    use crate::module::{DynModule, ModuleContext, ModuleError, Outcome};

    pub(crate) fn node(yaml: &str) -> Node {
        let documents = parse_documents(yaml, Path::new("t.yml")).expect("test YAML parses");
        documents[0].root.clone()
    }

    /// One module call with `want_diff` on and `{{ name }}` = "world".
    pub(crate) fn run(
        module: &dyn DynModule,
        yaml: &str,
        base_dir: &Path,
        apply: bool,
    ) -> Result<Outcome, ModuleError> {
        let vars = tera::Context::from_value(serde_json::json!({"name": "world"}))
            .expect("an object is a context");
        let mut renderer = Renderer::default();
        let mut context = ModuleContext {
            base_dir,
            vars: &vars,
            renderer: &mut renderer,
            deadline: None,
            want_diff: true,
        };
        module.run(&node(yaml), &mut context, apply)
    }

    pub(crate) fn validate(
        module: &dyn DynModule,
        yaml: &str,
        base_dir: &Path,
    ) -> Result<(), Error> {
        module.validate(&node(yaml), base_dir)
    }

    /// Everything under `dir` that a module could change: names, kinds, modes, owners,
    /// times, contents and link targets.
    pub(crate) fn snapshot(dir: &Path) -> Vec<String> {
        let mut entries = Vec::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(path) = pending.pop() {
            let metadata = fs::symlink_metadata(&path).expect("test files are readable");
            let what = if metadata.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&path).expect("a link").display())
            } else if metadata.is_dir() {
                for entry in fs::read_dir(&path).expect("a directory") {
                    pending.push(entry.expect("an entry").path());
                }
                "dir".to_string()
            } else {
                format!("{:?}", fs::read(&path).expect("a file"))
            };
            entries.push(format!(
                "{} {:o} {}:{} {}.{} {what}",
                path.display(),
                metadata.mode(),
                metadata.uid(),
                metadata.gid(),
                metadata.mtime(),
                metadata.mtime_nsec()
            ));
        }
        entries.sort();
        entries
    }

    /// Runs a task that has something to do, in check mode then for real, then again:
    /// check mode must predict the change and diff without touching `dir`, and the
    /// second run must find nothing to do. Returns the real run's outcome.
    pub(crate) fn assert_converges(module: &dyn DynModule, yaml: &str, dir: &Path) -> Outcome {
        let before = snapshot(dir);
        let predicted = run(module, yaml, dir, false).expect("check mode succeeds");
        assert!(predicted.changed, "check mode should predict a change");
        assert_eq!(snapshot(dir), before, "check mode must not touch anything");

        let applied = run(module, yaml, dir, true).expect("the run succeeds");
        assert!(applied.changed, "the run should change something");
        assert_eq!(predicted.diff, applied.diff, "check mode predicts the diff");
        assert!(applied.diff.is_some(), "a change has a diff");

        let again = run(module, yaml, dir, true).expect("the second run succeeds");
        assert!(
            !again.changed,
            "a second run changes nothing: {:?}",
            again.diff
        );
        assert_eq!(again.diff, None);
        let checked_again = run(module, yaml, dir, false).expect("check mode succeeds");
        assert!(!checked_again.changed);
        applied
    }

    pub(crate) fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    pub(crate) fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).expect("the file exists").mode() & 0o7777
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::test_support::{is_root, mode_of};
    use super::*;

    #[test]
    fn octal_modes_in_every_spelling() {
        for text in ["0644", "644", "0o644", " 0644 "] {
            assert_eq!(Mode::parse(text), Ok(Mode::Octal(0o644)), "{text}");
        }
        assert_eq!(Mode::parse("4755"), Ok(Mode::Octal(0o4755)));
        for bad in ["0849", "77777", "", "rw", "u=rwz", "u+r,", "q=r"] {
            let err = Mode::parse(bad).unwrap_err();
            assert!(
                err.contains("expected octal digits like 0644"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn symbolic_modes_apply_to_the_current_mode() {
        let apply = |text: &str, current: u32, is_dir: bool| {
            Mode::parse(text).unwrap().applied_to(current, is_dir)
        };
        assert_eq!(apply("u=rw,g=r,o=r", 0o777, false), 0o644);
        assert_eq!(apply("go-w", 0o666, false), 0o644);
        assert_eq!(apply("+x", 0o644, false), 0o755);
        assert_eq!(apply("a+X", 0o644, false), 0o644);
        assert_eq!(apply("a+X", 0o644, true), 0o755);
        assert_eq!(apply("u+s,o=", 0o755, false), 0o4750);
        assert_eq!(apply("u=rwx,g+r-w", 0o020, false), 0o740);
    }

    #[test]
    fn write_atomic_keeps_the_old_mode_unless_told() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomic(&path, b"one", None, false).unwrap();
        assert_eq!(mode_of(&path), NEW_FILE_MODE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        write_atomic(&path, b"two", None, false).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(fs::read(&path).unwrap(), b"two");
        write_atomic(&path, b"three", Some(&Mode::Octal(0o640)), false).unwrap();
        assert_eq!(mode_of(&path), 0o640);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left behind");
    }

    /// A file `real` (0600) and a link `link` to it, in a new folder.
    fn link_to_a_file() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        let link = dir.path().join("link");
        fs::write(&real, "old").unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        (dir, real, link)
    }

    #[test]
    fn write_atomic_replaces_a_symlink_unless_it_follows() {
        let (_dir, real, link) = link_to_a_file();
        write_atomic(&link, b"new", None, false).unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().is_file());
        assert_eq!(fs::read(&link).unwrap(), b"new");
        assert_eq!(
            mode_of(&link),
            NEW_FILE_MODE,
            "a new file, not the target's copy"
        );
        assert_eq!(fs::read(&real).unwrap(), b"old");

        let (_dir, real, link) = link_to_a_file();
        write_atomic(&link, b"new", None, true).unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&real).unwrap(), b"new");
        assert_eq!(mode_of(&real), 0o600);
    }

    #[test]
    fn attributes_go_through_a_symlink_only_when_it_follows() {
        let (_dir, real, link) = link_to_a_file();
        let wanted = WantedAttributes::resolve(Some("0644"), None, None, true).unwrap();
        let err = converge_attributes(&link, &wanted, false, true).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} is a symbolic link to {}: weft changes the mode, owner or group of what \
                 a link points to only when the task says `follow: true`",
                link.display(),
                real.display()
            )
        );
        assert_eq!(mode_of(&real), 0o600);
        assert_eq!(
            converge_attributes(&link, &wanted, true, true).unwrap(),
            ["mode: 0600 -> 0644"]
        );
        assert_eq!(mode_of(&real), 0o644);
    }

    #[test]
    fn read_existing_does_not_read_through_a_symlink_unless_it_follows() {
        let (_dir, _real, link) = link_to_a_file();
        assert_eq!(read_existing(&link, false).unwrap(), None);
        assert_eq!(read_existing(&link, true).unwrap(), Some(b"old".to_vec()));
    }

    #[test]
    fn write_atomic_names_a_missing_parent() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = write_atomic(&missing.join("f"), b"x", None, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "parent directory {0} does not exist; create it with a \
                 `file: {{path: {0}, state: directory}}` task first",
                missing.display()
            )
        );
    }

    #[test]
    fn attributes_report_then_apply() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, "x").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let wanted = WantedAttributes::resolve(Some("0644"), None, None, true).unwrap();
        let changes = converge_attributes(&path, &wanted, false, false).unwrap();
        assert_eq!(changes, ["mode: 0600 -> 0644"]);
        assert_eq!(mode_of(&path), 0o600, "not applied in check mode");
        assert_eq!(
            converge_attributes(&path, &wanted, false, true).unwrap(),
            changes
        );
        assert_eq!(mode_of(&path), 0o644);
        assert!(converge_attributes(&path, &wanted, false, true)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn ownership_by_name_or_number() {
        if !is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, "x").unwrap();
        let wanted = WantedAttributes::resolve(None, Some("1"), Some("1"), true).unwrap();
        let changes = converge_attributes(&path, &wanted, false, true).unwrap();
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(changes[0].starts_with("owner: root -> "), "{changes:?}");
        assert_eq!(fs::metadata(&path).unwrap().uid(), 1);
        let by_name = WantedAttributes::resolve(None, Some(&user_name(1)), None, true).unwrap();
        assert!(converge_attributes(&path, &by_name, false, true)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn unknown_users_and_groups_fail_clearly() {
        let err = WantedAttributes::resolve(None, Some("no-such-user-x"), None, true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown user `no-such-user-x`: there is no such user on this host"
        );
        let err = WantedAttributes::resolve(None, None, Some("no-such-group-x"), true).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("unknown group `no-such-group-x`"));
        let err = WantedAttributes::resolve(Some("999"), None, None, true).unwrap_err();
        assert!(err.to_string().starts_with("`mode`: invalid mode `999`"));
    }

    #[test]
    fn check_mode_expects_users_an_earlier_task_creates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, "x").unwrap();
        let wanted =
            WantedAttributes::resolve(None, Some("no-such-user-x"), Some("no-such-group-x"), false)
                .unwrap();
        let changes = converge_attributes(&path, &wanted, false, false).unwrap();
        assert_eq!(changes.len(), 2);
        assert!(
            changes[0].ends_with(" -> no-such-user-x (not on this host yet)"),
            "{changes:?}"
        );
        assert!(changes[1].starts_with("group: "), "{changes:?}");
    }

    #[test]
    fn diffs_of_text_new_and_binary_files() {
        let diff = content_diff("/etc/x", Some(b"a\nb\n"), b"a\nc\n");
        assert_eq!(
            diff,
            "--- /etc/x (before)\n+++ /etc/x (after)\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n"
        );
        let diff = content_diff("/etc/x", None, b"a\n");
        assert!(
            diff.starts_with("--- /dev/null\n+++ /etc/x (after)\n"),
            "{diff}"
        );
        assert_eq!(
            content_diff("/x", Some(b"a\0b"), b"abc"),
            "binary content differs (3 bytes -> 3 bytes)"
        );
        assert_eq!(
            content_diff("/x", None, &[0xff, 0xfe]),
            "binary content differs (0 bytes -> 2 bytes)"
        );
    }

    #[test]
    fn src_is_found_next_to_the_taskbook_then_in_templates_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        fs::create_dir_all(base.join("templates")).unwrap();
        fs::create_dir_all(base.join("files/sub")).unwrap();
        fs::write(base.join("files/a.conf"), "files").unwrap();
        assert_eq!(
            resolve_src("a.conf", base, "").unwrap(),
            base.join("files/a.conf")
        );
        fs::write(base.join("templates/a.conf"), "templates").unwrap();
        assert_eq!(
            resolve_src("a.conf", base, "").unwrap(),
            base.join("templates/a.conf")
        );
        fs::write(base.join("a.conf"), "next to it").unwrap();
        assert_eq!(
            resolve_src("a.conf", base, "").unwrap(),
            base.join("a.conf")
        );
        let absolute = base.join("a.conf");
        let absolute = absolute.to_str().unwrap();
        assert_eq!(
            resolve_src(absolute, Path::new("/elsewhere"), "").unwrap(),
            base.join("a.conf")
        );

        let err = resolve_src("missing.conf", base, "").unwrap_err();
        assert!(
            err.starts_with("`src` missing.conf not found; looked for "),
            "{err}"
        );
        assert!(err.contains(&base.join("files/missing.conf").display().to_string()));
        let err = resolve_src("sub", base, "copy copies one file").unwrap_err();
        assert!(
            err.ends_with("is a directory; copy copies one file"),
            "{err}"
        );
    }

    /// A FIFO, a socket and an oversized (sparse) file in a fresh directory.
    fn special_files() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let socket = dir.path().join("socket");
        std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let big = dir.path().join("big");
        fs::File::create(&big)
            .unwrap()
            .set_len(MAX_FILE_BYTES + 1)
            .unwrap();
        (dir, fifo, socket, big)
    }

    #[test]
    fn only_regular_files_within_the_bound_are_read() {
        let (dir, fifo, socket, big) = special_files();
        for (path, kind) in [
            (Path::new("/dev/zero"), "a character device"),
            (Path::new("/dev/urandom"), "a character device"),
            (&fifo, "a FIFO (named pipe)"),
            (&socket, "a socket"),
            (dir.path(), "a directory"),
        ] {
            let err = read_regular_file(path, true, &FILE_LIMIT).unwrap_err();
            assert_eq!(
                err,
                format!("{} is {kind}, not a regular file", path.display())
            );
        }
        assert_eq!(
            read_regular_file(&big, true, &FILE_LIMIT).unwrap_err(),
            format!(
                "{} is 67108865 bytes; the file modules read files of at most 67108864 bytes (64.0 MiB)",
                big.display()
            )
        );
        let small = dir.path().join("small");
        fs::write(&small, "x").unwrap();
        assert_eq!(read_regular_file(&small, true, &FILE_LIMIT).unwrap(), b"x");
    }

    #[test]
    fn src_must_be_a_regular_file_within_the_bound() {
        let (dir, fifo, _socket, big) = special_files();
        let err = resolve_src("/dev/zero", dir.path(), "").unwrap_err();
        assert_eq!(
            err,
            "`src` /dev/zero is a character device, not a regular file"
        );
        let err = resolve_src("fifo", dir.path(), "").unwrap_err();
        assert_eq!(
            err,
            format!(
                "`src` {} is a FIFO (named pipe), not a regular file",
                fifo.display()
            )
        );
        let err = resolve_src("big", dir.path(), "").unwrap_err();
        assert!(
            err.starts_with(&format!("`src` {} is 67108865 bytes; ", big.display())),
            "{err}"
        );
    }

    #[test]
    fn a_dest_that_is_not_a_regular_file_is_not_read() {
        let (_dir, fifo, _socket, _big) = special_files();
        let err = read_existing(&fifo, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} is a FIFO (named pipe), not a regular file",
                fifo.display()
            )
        );
    }
}
