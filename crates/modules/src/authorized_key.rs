//! `authorized_key`: SSH public keys in a user's `~/.ssh/authorized_keys` (Ansible's
//! `authorized_key`). A key is known by its type and key data: a line with the same
//! key but other options or comment is rewritten, never doubled. `~/.ssh` (0700) and
//! the file (0600) are made and owned by the user, as sshd's StrictModes requires; a
//! symbolic link at either is refused, so a user cannot point root's write elsewhere.

use std::path::PathBuf;

use nix::unistd::{Group as SystemGroup, User as SystemUser};
use serde::Deserialize;

use crate::file::directory;
use crate::files::WantedAttributes;
use crate::module::{Module, ModuleContext, ModuleError, Outcome};
use crate::text_file::{edit_text_file, Edited, TextFile, WhenMissing};

pub struct AuthorizedKey;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizedKeyArgs {
    user: String,
    /// One key, or several on their own lines, as `ssh-keygen` writes them.
    key: String,
    #[serde(default)]
    state: KeyState,
    /// Remove every other key of the file.
    #[serde(default)]
    exclusive: bool,
    /// Options for every key given (`no-port-forwarding,from="10.0.0.0/8"`).
    key_options: Option<String>,
    /// Another file than `~/.ssh/authorized_keys`.
    path: Option<PathBuf>,
    /// Make `~/.ssh` and own the file by the user.
    #[serde(default = "crate::module::yes")]
    manage_dir: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum KeyState {
    #[default]
    Present,
    Absent,
}

/// One key line: `[options] type data [comment]`.
#[derive(Debug, Clone, PartialEq)]
struct KeyLine {
    options: Option<String>,
    key_type: String,
    data: String,
    comment: Option<String>,
}

impl KeyLine {
    /// `None` for lines that hold no key (blank, comments, garbage kept as found).
    fn parse(line: &str) -> Option<KeyLine> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let tokens = split_outside_quotes(line);
        let at = tokens.iter().position(|token| is_key_type(token))?;
        let data = tokens.get(at + 1)?.to_string();
        Some(KeyLine {
            options: (at > 0).then(|| tokens[..at].join(" ")),
            key_type: tokens[at].to_string(),
            data,
            comment: (tokens.len() > at + 2).then(|| tokens[at + 2..].join(" ")),
        })
    }

    fn same_key(&self, other: &KeyLine) -> bool {
        self.key_type == other.key_type && self.data == other.data
    }

    fn render(&self) -> String {
        [
            self.options.as_deref(),
            Some(self.key_type.as_str()),
            Some(self.data.as_str()),
            self.comment.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ")
    }
}

fn is_key_type(token: &str) -> bool {
    token.starts_with("ssh-") || token.starts_with("ecdsa-sha2-") || token.starts_with("sk-")
}

/// Whitespace-separated tokens; options may hold quoted spaces (`command="a b"`).
fn split_outside_quotes(line: &str) -> Vec<&str> {
    let mut tokens = Vec::new();
    let (mut start, mut quoted) = (None, false);
    for (at, c) in line.char_indices() {
        match c {
            '"' => {
                quoted = !quoted;
                start.get_or_insert(at);
            }
            c if c.is_whitespace() && !quoted => {
                if let Some(from) = start.take() {
                    tokens.push(&line[from..at]);
                }
            }
            _ => {
                start.get_or_insert(at);
            }
        }
    }
    if let Some(from) = start {
        tokens.push(&line[from..]);
    }
    tokens
}

/// The file's lines with the wanted keys in or out; what was done.
fn edit(text: &str, wanted: &[KeyLine], state: KeyState, exclusive: bool) -> Option<Edited> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let (mut added, mut removed) = (0, 0);
    lines.retain(|line| {
        let Some(found) = KeyLine::parse(line) else {
            return true;
        };
        let listed = wanted.iter().any(|key| key.same_key(&found));
        let keep = match state {
            KeyState::Present => listed || !exclusive,
            KeyState::Absent => !listed,
        };
        if !keep {
            removed += 1;
        }
        keep
    });
    if state == KeyState::Present {
        for key in wanted {
            let existing = lines
                .iter()
                .position(|line| KeyLine::parse(line).is_some_and(|found| found.same_key(key)));
            match existing {
                Some(index) if lines[index] != key.render() => lines[index] = key.render(),
                Some(_) => {}
                None => {
                    lines.push(key.render());
                    added += 1;
                }
            }
        }
    }
    let mut edited = lines.join("\n");
    if !edited.is_empty() {
        edited.push('\n');
    }
    if edited == text {
        return None;
    }
    let msg = match (added, removed) {
        (0, 0) => "key options or comment updated".to_string(),
        (added, 0) => format!("{added} key(s) added"),
        (0, removed) => format!("{removed} key(s) removed"),
        (added, removed) => format!("{added} key(s) added, {removed} removed"),
    };
    Some(Edited { text: edited, msg })
}

impl Module for AuthorizedKey {
    const NAME: &'static str = "authorized_key";
    type Args = AuthorizedKeyArgs;

    fn check_apply(
        &self,
        args: AuthorizedKeyArgs,
        context: &mut ModuleContext,
        apply: bool,
    ) -> Result<Outcome, ModuleError> {
        let user = SystemUser::from_name(&args.user)
            .map_err(|e| {
                ModuleError::Failed(format!("cannot look up the user `{}`: {e}", args.user))
            })?
            .ok_or_else(|| {
                ModuleError::Failed(format!(
                    "the user `{}` does not exist: create it with a `user` task first",
                    args.user
                ))
            })?;
        let mut wanted = Vec::new();
        for line in args.key.lines().filter(|line| !line.trim().is_empty()) {
            let mut key = KeyLine::parse(line).ok_or_else(|| {
                ModuleError::Failed(format!(
                    "`{}` is not an SSH public key: expected `TYPE DATA [COMMENT]` as `ssh-keygen` writes it (ssh-ed25519 AAAA... user@host)",
                    line.chars().take(40).collect::<String>()
                ))
            })?;
            if let Some(options) = &args.key_options {
                key.options = Some(options.clone());
            }
            wanted.push(key);
        }
        if wanted.is_empty() {
            return Err(ModuleError::Failed("`key` holds no key".into()));
        }
        let ssh_dir = user.dir.join(".ssh");
        let path = args
            .path
            .clone()
            .unwrap_or_else(|| ssh_dir.join("authorized_keys"));
        let owner = user.name.clone();
        let group = SystemGroup::from_gid(user.gid)
            .ok()
            .flatten()
            .map_or(user.gid.to_string(), |group| group.name);
        let mut diff = Vec::new();
        if args.manage_dir && args.path.is_none() && args.state == KeyState::Present {
            let attributes =
                WantedAttributes::resolve(Some("0700"), Some(&owner), Some(&group), apply)?;
            diff.extend(directory(&ssh_dir, &attributes, false, apply)?);
        }
        let (file_owner, file_group) = if args.manage_dir {
            (Some(owner.as_str()), Some(group.as_str()))
        } else {
            (None, None)
        };
        let file = TextFile {
            path: &path,
            mode: Some("0600"),
            owner: file_owner,
            group: file_group,
            backup: false,
            follow: false,
        };
        let when_missing = match args.state {
            KeyState::Present => WhenMissing::Create,
            KeyState::Absent => WhenMissing::NothingToDo,
        };
        let mut outcome =
            edit_text_file(Self::NAME, &file, when_missing, context, apply, |text| {
                Ok(edit(text, &wanted, args.state, args.exclusive))
            })?;
        if !diff.is_empty() {
            outcome.changed = true;
            if context.want_diff {
                diff.extend(outcome.diff.take());
                outcome.diff = Some(diff.join("\n"));
            }
        }
        Ok(outcome
            .with_output("user", args.user.as_str())
            .with_output("path", path.display().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    use super::*;
    use crate::files::test_support::run;
    use crate::group::tests::{accounts_lock, assert_accounts_converge, Scratch};
    use crate::user::User;

    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop";
    const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 bob@desk";

    #[test]
    fn key_lines_parse_with_quoted_options() {
        let key = KeyLine::parse(&format!("command=\"echo a b\",no-pty {ED}")).unwrap();
        assert_eq!(key.options.as_deref(), Some("command=\"echo a b\",no-pty"));
        assert_eq!(key.key_type, "ssh-ed25519");
        assert_eq!(key.comment.as_deref(), Some("alice@laptop"));
        assert_eq!(KeyLine::parse("# a comment"), None);
        assert_eq!(KeyLine::parse("garbage"), None);
    }

    #[test]
    fn keys_are_added_once_rewritten_in_place_and_removed() {
        let ed = KeyLine::parse(ED).unwrap();
        let rsa = KeyLine::parse(RSA).unwrap();
        let text = format!("# keep me\n{RSA}\n");
        let added = edit(&text, std::slice::from_ref(&ed), KeyState::Present, false).unwrap();
        assert_eq!(added.text, format!("# keep me\n{RSA}\n{ED}\n"));
        assert_eq!(
            edit(
                &added.text,
                std::slice::from_ref(&ed),
                KeyState::Present,
                false
            ),
            None
        );
        let mut restricted = ed.clone();
        restricted.options = Some("no-pty".into());
        let rewritten = edit(&added.text, &[restricted], KeyState::Present, false).unwrap();
        assert_eq!(rewritten.text, format!("# keep me\n{RSA}\nno-pty {ED}\n"));
        let exclusive = edit(
            &added.text,
            std::slice::from_ref(&ed),
            KeyState::Present,
            true,
        )
        .unwrap();
        assert_eq!(exclusive.text, format!("# keep me\n{ED}\n"));
        let removed = edit(&added.text, &[rsa], KeyState::Absent, false).unwrap();
        assert_eq!(removed.text, format!("# keep me\n{ED}\n"));
        assert_eq!(removed.msg, "1 key(s) removed");
    }

    #[test]
    fn the_file_and_its_folder_belong_to_the_user() {
        let Some(_turn) = accounts_lock() else { return };
        let scratch = Scratch::new("k");
        let name = &scratch.name;
        assert_accounts_converge(&User, &format!("name: {name}"));
        let home = SystemUser::from_name(name).unwrap().unwrap().dir;
        let outcome = crate::files::test_support::assert_converges(
            &AuthorizedKey,
            &format!("user: {name}\nkey: '{ED}'"),
            &home,
        );
        let file = home.join(".ssh/authorized_keys");
        assert_eq!(fs::read_to_string(&file).unwrap(), format!("{ED}\n"));
        let uid = SystemUser::from_name(name).unwrap().unwrap().uid.as_raw();
        for (path, mode) in [(home.join(".ssh"), 0o700), (file.clone(), 0o600)] {
            let metadata = fs::metadata(&path).unwrap();
            assert_eq!(
                metadata.permissions().mode() & 0o777,
                mode,
                "{}",
                path.display()
            );
            assert_eq!(metadata.uid(), uid);
        }
        assert!(outcome.diff.unwrap().contains("state: absent -> directory"));
    }

    #[test]
    fn a_link_planted_at_the_file_is_refused() {
        let Some(_turn) = accounts_lock() else { return };
        let scratch = Scratch::new("l");
        let name = &scratch.name;
        assert_accounts_converge(&User, &format!("name: {name}"));
        let home = SystemUser::from_name(name).unwrap().unwrap().dir;
        fs::create_dir_all(home.join(".ssh")).unwrap();
        let target = tempfile::NamedTempFile::new().unwrap();
        std::os::unix::fs::symlink(target.path(), home.join(".ssh/authorized_keys")).unwrap();
        let err = run(
            &AuthorizedKey,
            &format!("user: {name}\nkey: '{ED}'"),
            Path::new("/"),
            true,
        )
        .unwrap_err();
        assert!(err.to_string().contains("is a symbolic link"), "{err}");
        assert_eq!(fs::read_to_string(target.path()).unwrap(), "");
    }

    #[test]
    fn a_key_that_is_not_one_is_refused() {
        let err = run(
            &AuthorizedKey,
            "user: root\nkey: 'hello world'",
            Path::new("/"),
            false,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("is not an SSH public key"),
            "{err}"
        );
    }
}
