//! `known_hosts`: a host's public key in an SSH known_hosts file (Ansible's
//! `known_hosts`). Entries are found by host name, hashed ones (`|1|salt|hash`, as
//! `ssh-keyscan -H` writes them) included: a host's key of the same type is replaced,
//! a new type added, and `state: absent` removes every key of the host.

use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::hmac;
use serde::Deserialize;

use crate::file::directory;
use crate::files::WantedAttributes;
use crate::module::{Module, ModuleContext, ModuleError, Outcome};
use crate::text_file::{edit_text_file, Edited, TextFile, WhenMissing};

pub struct KnownHosts;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownHostsArgs {
    /// The host, as ssh names it: `github.com`, or `[host]:2222` with another port.
    name: String,
    /// `NAME TYPE DATA`, as `ssh-keyscan` prints it (required with `state: present`).
    key: Option<String>,
    /// Default: `~/.ssh/known_hosts` of the user weft runs as.
    path: Option<PathBuf>,
    /// Write the host name hashed, as `ssh-keyscan -H`.
    #[serde(default)]
    hash_host: bool,
    #[serde(default)]
    state: HostState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum HostState {
    #[default]
    Present,
    Absent,
}

/// One known_hosts line with a key: who it is for, and the key.
struct HostKey<'a> {
    hosts: &'a str,
    key_type: &'a str,
    data: &'a str,
}

impl<'a> HostKey<'a> {
    /// `None` for blanks, comments and marked lines (`@cert-authority`, `@revoked`),
    /// which this module leaves alone.
    fn parse(line: &'a str) -> Option<HostKey<'a>> {
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', '@']) {
            return None;
        }
        let mut fields = line.split_whitespace();
        Some(HostKey {
            hosts: fields.next()?,
            key_type: fields.next()?,
            data: fields.next()?,
        })
    }

    /// Whether the entry is for `host`: one of its comma-separated names, or its hash.
    fn is_for(&self, host: &str) -> bool {
        self.hosts
            .split(',')
            .any(|pattern| match hashed_parts(pattern) {
                Some((salt, hash)) => hashed(&salt, host) == hash,
                None => pattern == host,
            })
    }
}

/// The salt and hash of a `|1|salt|hash` name.
fn hashed_parts(pattern: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let rest = pattern.strip_prefix("|1|")?;
    let (salt, hash) = rest.split_once('|')?;
    Some((STANDARD.decode(salt).ok()?, STANDARD.decode(hash).ok()?))
}

/// HMAC-SHA1 of the host name keyed with the salt: OpenSSH's hashed names.
fn hashed(salt: &[u8], host: &str) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, salt);
    hmac::sign(&key, host.as_bytes()).as_ref().to_vec()
}

/// The salt comes from the host and its key rather than from chance, so check mode shows
/// the line a real run writes, and a run that finds the entry again writes nothing.
fn hashed_name(host: &str, key_data: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{host} {key_data}"));
    let salt = &digest[..20];
    format!(
        "|1|{}|{}",
        STANDARD.encode(salt),
        STANDARD.encode(hashed(salt, host))
    )
}

fn edited(text: &str, host: &str, wanted: Option<&str>) -> Option<Edited> {
    let wanted_key = wanted.and_then(HostKey::parse);
    if let Some(key) = &wanted_key {
        let known = text.lines().filter_map(HostKey::parse).any(|found| {
            found.is_for(host) && found.key_type == key.key_type && found.data == key.data
        });
        if known {
            return None;
        }
    }
    let mut removed = 0;
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|line| {
            let replaced = HostKey::parse(line).is_some_and(|found| {
                found.is_for(host)
                    && wanted_key
                        .as_ref()
                        .is_none_or(|key| key.key_type == found.key_type)
            });
            removed += usize::from(replaced);
            !replaced
        })
        .collect();
    let msg = match (wanted, removed) {
        (None, 0) => return None,
        (None, removed) => format!("{removed} key(s) of {host} removed"),
        (Some(_), 0) => format!("a key of {host} added"),
        (Some(_), _) => format!("the key of {host} replaced"),
    };
    lines.extend(wanted);
    Some(Edited {
        text: lines.iter().map(|line| format!("{line}\n")).collect(),
        msg,
    })
}

impl Module for KnownHosts {
    const NAME: &'static str = "known_hosts";
    type Args = KnownHostsArgs;

    fn check_apply(
        &self,
        args: KnownHostsArgs,
        context: &mut ModuleContext,
        apply: bool,
    ) -> Result<Outcome, ModuleError> {
        let host = args.name.to_ascii_lowercase();
        let line = match (args.state, &args.key) {
            (HostState::Absent, _) => None,
            (HostState::Present, None) => {
                return Err(ModuleError::Failed("`state: present` needs `key`".into()))
            }
            (HostState::Present, Some(key)) => {
                let key = key.trim();
                let parsed = HostKey::parse(key).filter(|_| !key.contains('\n'));
                match parsed {
                    Some(parsed) if parsed.is_for(&host) => Some(if args.hash_host {
                        let name = hashed_name(&host, parsed.data);
                        format!("{name} {} {}", parsed.key_type, parsed.data)
                    } else {
                        key.to_string()
                    }),
                    Some(_) => {
                        return Err(ModuleError::Failed(format!(
                            "`key` is for another host than `{host}`: it must start with the host's name, as `ssh-keyscan {host}` prints it"
                        )))
                    }
                    None => {
                        return Err(ModuleError::Failed(
                            "`key` is not a known_hosts line: expected `NAME TYPE DATA`, as `ssh-keyscan` prints it".into(),
                        ))
                    }
                }
            }
        };
        let path = match &args.path {
            Some(path) => path.clone(),
            None => {
                let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
                    .ok()
                    .flatten()
                    .ok_or_else(|| {
                        ModuleError::Failed(
                            "weft's own user has no home to keep known_hosts in: give `path`"
                                .into(),
                        )
                    })?;
                user.dir.join(".ssh/known_hosts")
            }
        };
        let mut diff = Vec::new();
        if let (HostState::Present, Some(folder)) = (args.state, path.parent()) {
            let attributes = WantedAttributes::resolve(Some("0700"), None, None, apply)?;
            if !folder.exists() {
                diff.extend(directory(folder, &attributes, false, apply)?);
            }
        }
        let file = TextFile {
            path: &path,
            mode: None,
            owner: None,
            group: None,
            backup: false,
            follow: false,
        };
        let when_missing = match args.state {
            HostState::Present => WhenMissing::Create,
            HostState::Absent => WhenMissing::NothingToDo,
        };
        let mut outcome =
            edit_text_file(Self::NAME, &file, when_missing, context, apply, |text| {
                Ok(edited(text, &host, line.as_deref()))
            })?;
        if !diff.is_empty() && context.want_diff {
            diff.extend(outcome.diff.take());
            outcome.diff = Some(diff.join("\n"));
        }
        Ok(outcome.with_output("name", host))
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::files::test_support::{assert_converges, run};

    const ED: &str = "example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    const ED2: &str = "example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
    const RSA: &str = "example.org,192.0.2.1 ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7";

    #[test]
    fn keys_are_added_replaced_by_type_and_removed() {
        let added = edited("other.host ssh-rsa AAAA\n", "example.org", Some(ED)).unwrap();
        assert_eq!(added.text, format!("other.host ssh-rsa AAAA\n{ED}\n"));
        assert!(edited(&added.text, "example.org", Some(ED)).is_none());
        let with_rsa = edited(&added.text, "example.org", Some(RSA)).unwrap();
        assert_eq!(
            with_rsa.text,
            format!("other.host ssh-rsa AAAA\n{ED}\n{RSA}\n")
        );
        let replaced = edited(&with_rsa.text, "example.org", Some(ED2)).unwrap();
        assert_eq!(
            replaced.text,
            format!("other.host ssh-rsa AAAA\n{RSA}\n{ED2}\n")
        );
        assert_eq!(replaced.msg, "the key of example.org replaced");
        let removed = edited(&replaced.text, "example.org", None).unwrap();
        assert_eq!(removed.text, "other.host ssh-rsa AAAA\n");
        assert_eq!(removed.msg, "2 key(s) of example.org removed");
    }

    /// A hashed name is OpenSSH's: HMAC-SHA1 of the name keyed with the salt.
    #[test]
    fn hashed_names_are_recognized_and_written() {
        let salt = [7u8; 20];
        let name = format!(
            "|1|{}|{}",
            STANDARD.encode(salt),
            STANDARD.encode(hashed(&salt, "example.org"))
        );
        let line = format!("{name} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl");
        assert!(HostKey::parse(&line).unwrap().is_for("example.org"));
        assert!(!HostKey::parse(&line).unwrap().is_for("example.com"));
        assert!(
            edited(&format!("{line}\n"), "example.org", Some(ED)).is_none(),
            "the hashed entry is that key"
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh/known_hosts");
        let task = format!(
            "name: example.org\nkey: '{ED}'\nhash_host: true\npath: {}",
            path.display()
        );
        let outcome = assert_converges(&KnownHosts, &task, dir.path());
        assert!(outcome
            .diff
            .unwrap()
            .starts_with("state: absent -> directory"));
        let written = fs::read_to_string(&path).unwrap();
        assert!(
            written.starts_with("|1|") && !written.contains("example.org"),
            "{written}"
        );
    }

    #[test]
    fn a_key_for_another_host_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let task = format!(
            "name: other.org\nkey: '{ED}'\npath: {}/k",
            dir.path().display()
        );
        let err = run(&KnownHosts, &task, dir.path(), false).unwrap_err();
        assert!(err.to_string().contains("is for another host"), "{err}");
    }
}
