//! `group`: a local group present with a gid, or absent (Ansible's `group`), through
//! the system's own `groupadd`, `groupmod` and `groupdel`, which lock /etc/group and
//! /etc/gshadow and replace them whole: never a half-written file.

use nix::unistd::{Gid, Group as SystemGroup};
use serde::Deserialize;

use crate::module::{Module, ModuleContext, ModuleError, Outcome};
use crate::system_tool::{run_tool, SHADOW_TOOLS};

pub struct Group;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupArgs {
    name: String,
    gid: Option<u32>,
    /// A system group (a gid from the system range) when it is created.
    #[serde(default)]
    system: bool,
    #[serde(default)]
    state: GroupState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum GroupState {
    #[default]
    Present,
    Absent,
}

/// The group named `name`, as the system's name service sees it.
pub(crate) fn find_group(name: &str) -> Result<Option<SystemGroup>, ModuleError> {
    SystemGroup::from_name(name)
        .map_err(|e| ModuleError::Failed(format!("cannot look up the group `{name}`: {e}")))
}

/// A name `groupadd` and `useradd` take: no option, separator or space in it.
pub(crate) fn check_account_name(kind: &str, name: &str) -> Result<(), ModuleError> {
    let fits = !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '$'));
    if fits {
        Ok(())
    } else {
        Err(ModuleError::Failed(format!(
            "`{name}` is not a {kind} name: expected up to 32 letters, digits, `_`, `-` or `.`, not starting with `-`"
        )))
    }
}

impl Module for Group {
    const NAME: &'static str = "group";
    type Args = GroupArgs;

    fn check_apply(
        &self,
        args: GroupArgs,
        context: &mut ModuleContext,
        apply: bool,
    ) -> Result<Outcome, ModuleError> {
        check_account_name("group", &args.name)?;
        let name = args.name.as_str();
        let current = find_group(name)?;
        let change = match (args.state, &current) {
            (GroupState::Absent, None) => None,
            (GroupState::Absent, Some(_)) => Some((
                "groupdel",
                vec![name.to_string()],
                "state: present -> absent".to_string(),
            )),
            (GroupState::Present, None) => {
                let mut tool_args = Vec::new();
                if let Some(gid) = args.gid {
                    tool_args.extend(["--gid".to_string(), gid.to_string()]);
                }
                if args.system {
                    tool_args.push("--system".into());
                }
                tool_args.push(name.to_string());
                Some((
                    "groupadd",
                    tool_args,
                    "state: absent -> present".to_string(),
                ))
            }
            (GroupState::Present, Some(group)) => match args.gid {
                Some(gid) if gid != group.gid.as_raw() => Some((
                    "groupmod",
                    vec!["--gid".into(), gid.to_string(), name.to_string()],
                    format!("gid: {} -> {gid}", group.gid),
                )),
                _ => None,
            },
        };
        let Some((program, tool_args, diff)) = change else {
            let outcome = Outcome::unchanged().with_output("name", name);
            return Ok(match current {
                Some(group) => outcome
                    .with_output("state", state_name(GroupState::Present))
                    .with_output("gid", group.gid.as_raw()),
                None => outcome.with_output("state", state_name(GroupState::Absent)),
            });
        };
        if apply {
            run_tool(program, &tool_args, None, SHADOW_TOOLS, context.deadline)?;
        }
        let mut outcome = Outcome::changed(true)
            .with_diff(context.want_diff.then_some(diff))
            .with_output("name", name)
            .with_output("state", state_name(args.state));
        let gid = find_group(name)?
            .map(|group| group.gid)
            .or(args.gid.map(Gid::from_raw));
        if let (GroupState::Present, Some(gid)) = (args.state, gid) {
            outcome = outcome.with_output("gid", gid.as_raw());
        }
        Ok(outcome)
    }
}

fn state_name(state: GroupState) -> &'static str {
    match state {
        GroupState::Present => "present",
        GroupState::Absent => "absent",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Mutex, MutexGuard};

    use super::*;
    use crate::files::test_support::run;
    use crate::module::DynModule;

    /// useradd and groupadd lock /etc/passwd and /etc/group, so two at once fail: the
    /// account tests take turns.
    static ACCOUNTS: Mutex<()> = Mutex::new(());

    /// The account tests change the real /etc files, as the modules do on a node: they
    /// need root and the shadow tools, and skip with the reason without them.
    pub(crate) fn accounts_lock() -> Option<MutexGuard<'static, ()>> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: managing accounts needs root");
            return None;
        }
        if !std::path::Path::new("/usr/sbin/useradd").exists() {
            eprintln!("skipped: no /usr/sbin/useradd (Debian's passwd package)");
            return None;
        }
        Some(
            ACCOUNTS
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// A name no account has, removed again when the test ends.
    pub(crate) struct Scratch {
        pub name: String,
    }

    impl Scratch {
        pub fn new(tag: &str) -> Scratch {
            let name = format!("wt{tag}{}", std::process::id());
            Scratch { name }
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let quiet = |program: &str, args: &[&str]| {
                let _ = std::process::Command::new(program)
                    .args(args)
                    .stderr(std::process::Stdio::null())
                    .status();
            };
            quiet("userdel", &["--remove", &self.name]);
            quiet("groupdel", &[&self.name]);
        }
    }

    fn account_files() -> Vec<String> {
        ["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"]
            .iter()
            .map(|path| std::fs::read_to_string(path).unwrap_or_default())
            .collect()
    }

    /// As `assert_converges`, watching the account files: check mode predicts the
    /// change and its diff and writes nothing; a second run finds nothing to do.
    pub(crate) fn assert_accounts_converge(module: &dyn DynModule, yaml: &str) -> Outcome {
        let dir = std::path::Path::new("/");
        let before = account_files();
        let predicted = run(module, yaml, dir, false).expect("check mode succeeds");
        assert!(
            predicted.changed,
            "check mode should predict a change: {yaml}"
        );
        assert_eq!(
            account_files(),
            before,
            "check mode must not touch anything"
        );
        let applied = run(module, yaml, dir, true).expect("the run succeeds");
        assert!(applied.changed);
        assert_eq!(predicted.diff, applied.diff, "check mode predicts the diff");
        let again = run(module, yaml, dir, true).expect("the second run succeeds");
        assert!(
            !again.changed,
            "a second run changes nothing: {:?}",
            again.diff
        );
        applied
    }

    /// A gid no group has.
    fn free_gid() -> u32 {
        (42_000..60_000)
            .find(|gid| matches!(SystemGroup::from_gid(Gid::from_raw(*gid)), Ok(None)))
            .expect("a free gid")
    }

    #[test]
    fn a_group_is_created_given_its_gid_and_removed() {
        let Some(_turn) = accounts_lock() else { return };
        let scratch = Scratch::new("g");
        let name = &scratch.name;
        let gid = free_gid();
        let outcome = assert_accounts_converge(&Group, &format!("name: {name}\ngid: {gid}"));
        assert_eq!(outcome.diff.as_deref(), Some("state: absent -> present"));
        assert_eq!(outcome.output["gid"], gid);
        let other = free_gid() + 1;
        let outcome = assert_accounts_converge(&Group, &format!("name: {name}\ngid: {other}"));
        assert_eq!(outcome.diff.unwrap(), format!("gid: {gid} -> {other}"));
        assert_accounts_converge(&Group, &format!("name: {name}\nstate: absent"));
        assert!(find_group(name).unwrap().is_none());
    }

    #[test]
    fn names_that_would_be_options_are_refused() {
        let err = run(&Group, "name: --help", std::path::Path::new("/"), false).unwrap_err();
        assert!(err.to_string().contains("is not a group name"), "{err}");
    }
}
