//! `user`: a local account present with its uid, groups, shell, home and password
//! hash, or absent (Ansible's `user`), through the system's own `useradd`, `usermod`,
//! `userdel` and `chpasswd`, which lock /etc/passwd and /etc/shadow and replace them
//! whole: never a half-written file. The password is a crypt(3) hash; it goes to
//! `chpasswd` on its stdin, never in an argument (every user of the node sees those in
//! `ps`), and never into the task's output or diff.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::path::PathBuf;

use nix::unistd::{getgrouplist, Gid, Group as SystemGroup, User as SystemUser};
use serde::Deserialize;
use weft_taskbook::task::StringList;

use crate::group::{check_account_name, find_group};
use crate::module::{Module, ModuleContext, ModuleError, Outcome};
use crate::system_tool::{run_tool, SHADOW_TOOLS};

pub struct User;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserArgs {
    name: String,
    uid: Option<u32>,
    /// The primary group (a name or a gid); it must exist.
    group: Option<String>,
    /// Supplementary groups: a list, or comma-separated; `''` for none.
    groups: Option<StringList>,
    /// Add `groups` to the ones the user has instead of making them the only ones.
    #[serde(default)]
    append: bool,
    shell: Option<String>,
    home: Option<PathBuf>,
    /// With `home`, move the old home's contents to the new one.
    #[serde(default)]
    move_home: bool,
    #[serde(default = "crate::module::yes")]
    create_home: bool,
    /// A system account (a uid from the system range) when created.
    #[serde(default)]
    system: bool,
    /// The GECOS field.
    comment: Option<String>,
    /// A crypt(3) hash (`mkpasswd -m sha-512`), `!` or `*`.
    password: Option<String>,
    #[serde(default)]
    update_password: UpdatePassword,
    #[serde(default)]
    state: UserState,
    /// With `state: absent`, remove the home folder and mail spool too.
    #[serde(default)]
    remove: bool,
    /// With `state: absent`, remove the user even while logged in.
    #[serde(default)]
    force: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum UpdatePassword {
    #[default]
    Always,
    OnCreate,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum UserState {
    #[default]
    Present,
    Absent,
}

/// A plain password would be stored as given and match at no login.
fn check_password_hash(password: &str) -> Result<(), ModuleError> {
    let locked = matches!(password, "!" | "*" | "!*");
    let hashed = password.starts_with('$') && password.len() >= 13;
    if (locked || hashed) && !password.contains([':', '\n']) {
        Ok(())
    } else {
        Err(ModuleError::Failed(
            "`password` must be a crypt(3) hash such as `$6$...` (`mkpasswd -m sha-512` makes one), or `!` to lock the account; a plain password would never match at login".into(),
        ))
    }
}

/// A group named by name or gid, which must exist.
fn existing_group(named: &str) -> Result<SystemGroup, ModuleError> {
    let found = match named.parse::<u32>() {
        Ok(gid) => SystemGroup::from_gid(Gid::from_raw(gid))
            .map_err(|e| ModuleError::Failed(format!("cannot look up the group {gid}: {e}")))?,
        Err(_) => find_group(named)?,
    };
    found.ok_or_else(|| {
        ModuleError::Failed(format!(
            "the group `{named}` does not exist: create it with a `group` task first"
        ))
    })
}

/// The names of the groups `list` names, each of which must exist.
fn existing_groups(list: &StringList) -> Result<BTreeSet<String>, ModuleError> {
    list.comma_separated_items()
        .iter()
        .map(|named| existing_group(named).map(|group| group.name))
        .collect()
}

/// The names of the groups `user` belongs to beside its primary group.
fn supplementary_groups(user: &SystemUser) -> Result<BTreeSet<String>, ModuleError> {
    let name = CString::new(user.name.as_str()).expect("account names hold no NUL");
    let gids = getgrouplist(&name, user.gid).map_err(|e| {
        ModuleError::Failed(format!("cannot list the groups of `{}`: {e}", user.name))
    })?;
    let mut names = BTreeSet::new();
    for gid in gids.into_iter().filter(|gid| *gid != user.gid) {
        if let Ok(Some(group)) = SystemGroup::from_gid(gid) {
            names.insert(group.name);
        }
    }
    Ok(names)
}

/// The hash /etc/shadow holds for `name`.
fn shadow_hash(name: &str) -> Result<Option<String>, ModuleError> {
    let shadow = std::fs::read_to_string("/etc/shadow")
        .map_err(|e| ModuleError::Failed(format!("cannot read /etc/shadow: {e}")))?;
    Ok(shadow.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next() == Some(name)).then(|| fields.next().unwrap_or_default().to_string())
    }))
}

/// The tools to run, in order, what they change, and the password hash to set.
#[derive(Default)]
struct Plan {
    steps: Vec<(&'static str, Vec<String>)>,
    diff: Vec<String>,
    new_password: Option<String>,
}

/// What must change, as tool arguments and diff lines.
#[derive(Default)]
struct Changes {
    args: Vec<String>,
    diff: Vec<String>,
    new_password: Option<String>,
}

impl Changes {
    fn set(&mut self, flag: &str, value: String, diff: String) {
        self.args.extend([flag.to_string(), value]);
        self.diff.push(diff);
    }
}

fn changes_to(args: &UserArgs, user: &SystemUser) -> Result<Changes, ModuleError> {
    let mut changes = Changes::default();
    if let Some(uid) = args.uid.filter(|uid| *uid != user.uid.as_raw()) {
        changes.set(
            "--uid",
            uid.to_string(),
            format!("uid: {} -> {uid}", user.uid),
        );
    }
    if let Some(named) = &args.group {
        let group = existing_group(named)?;
        if group.gid != user.gid {
            let before = SystemGroup::from_gid(user.gid)
                .ok()
                .flatten()
                .map_or(user.gid.to_string(), |g| g.name);
            changes.set(
                "--gid",
                group.name.clone(),
                format!("group: {before} -> {}", group.name),
            );
        }
    }
    if let Some(list) = &args.groups {
        let wanted = existing_groups(list)?;
        let current = supplementary_groups(user)?;
        let after: BTreeSet<String> = if args.append {
            current.union(&wanted).cloned().collect()
        } else {
            wanted.clone()
        };
        if after != current {
            let join = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>().join(",");
            if args.append {
                changes.args.push("--append".into());
            }
            let given = if args.append { &wanted } else { &after };
            changes.set(
                "--groups",
                join(given),
                format!("groups: {} -> {}", join(&current), join(&after)),
            );
        }
    }
    if let Some(shell) = args
        .shell
        .as_ref()
        .filter(|shell| **shell != user.shell.display().to_string())
    {
        changes.set(
            "--shell",
            shell.clone(),
            format!("shell: {} -> {shell}", user.shell.display()),
        );
    }
    if let Some(home) = args.home.as_ref().filter(|home| **home != user.dir) {
        if args.move_home {
            changes.args.push("--move-home".into());
        }
        changes.set(
            "--home",
            home.display().to_string(),
            format!("home: {} -> {}", user.dir.display(), home.display()),
        );
    }
    let gecos = user.gecos.to_string_lossy();
    if let Some(comment) = args.comment.as_ref().filter(|comment| **comment != gecos) {
        changes.set(
            "--comment",
            comment.clone(),
            format!("comment: {gecos} -> {comment}"),
        );
    }
    if let (Some(password), UpdatePassword::Always) = (&args.password, args.update_password) {
        if shadow_hash(&user.name)?.as_deref() != Some(password.as_str()) {
            changes.new_password = Some(password.clone());
            changes.diff.push("password: changed".into());
        }
    }
    Ok(changes)
}

fn useradd_args(args: &UserArgs) -> Result<Vec<String>, ModuleError> {
    let mut tool_args = Vec::new();
    let mut flag = |flag: &str, value: String| tool_args.extend([flag.to_string(), value]);
    if let Some(uid) = args.uid {
        flag("--uid", uid.to_string());
    }
    if let Some(named) = &args.group {
        flag("--gid", existing_group(named)?.name);
    }
    if let Some(list) = &args.groups {
        let names = existing_groups(list)?;
        if !names.is_empty() {
            flag("--groups", names.into_iter().collect::<Vec<_>>().join(","));
        }
    }
    if let Some(shell) = &args.shell {
        flag("--shell", shell.clone());
    }
    if let Some(home) = &args.home {
        flag("--home-dir", home.display().to_string());
    }
    if let Some(comment) = &args.comment {
        flag("--comment", comment.clone());
    }
    tool_args.push(if args.create_home {
        "--create-home".into()
    } else {
        "--no-create-home".into()
    });
    if args.system {
        tool_args.push("--system".into());
    }
    tool_args.push(args.name.clone());
    Ok(tool_args)
}

impl Module for User {
    const NAME: &'static str = "user";
    type Args = UserArgs;

    fn check_apply(
        &self,
        args: UserArgs,
        context: &mut ModuleContext,
        apply: bool,
    ) -> Result<Outcome, ModuleError> {
        check_account_name("user", &args.name)?;
        if let Some(password) = &args.password {
            check_password_hash(password)?;
        }
        if args
            .comment
            .as_ref()
            .is_some_and(|c| c.contains([':', '\n']))
        {
            return Err(ModuleError::Failed(
                "`comment` cannot hold `:` or a line break".into(),
            ));
        }
        let name = args.name.as_str();
        let current = SystemUser::from_name(name)
            .map_err(|e| ModuleError::Failed(format!("cannot look up the user `{name}`: {e}")))?;
        let plan = match (args.state, &current) {
            (UserState::Absent, None) => Plan::default(),
            (UserState::Absent, Some(_)) => {
                let mut tool_args = Vec::new();
                if args.remove {
                    tool_args.push("--remove".to_string());
                }
                if args.force {
                    tool_args.push("--force".to_string());
                }
                tool_args.push(name.to_string());
                Plan {
                    steps: vec![("userdel", tool_args)],
                    diff: vec!["state: present -> absent".into()],
                    new_password: None,
                }
            }
            // A new account takes its password even with `update_password: on_create`.
            (UserState::Present, None) => Plan {
                steps: vec![("useradd", useradd_args(&args)?)],
                diff: vec!["state: absent -> present".into()],
                new_password: args.password.clone(),
            },
            (UserState::Present, Some(user)) => {
                let changes = changes_to(&args, user)?;
                let mut steps = Vec::new();
                if !changes.args.is_empty() {
                    let mut usermod_args = changes.args;
                    usermod_args.push(name.to_string());
                    steps.push(("usermod", usermod_args));
                }
                Plan {
                    steps,
                    diff: changes.diff,
                    new_password: changes.new_password,
                }
            }
        };
        let Plan {
            steps,
            diff,
            new_password,
        } = plan;
        let changed = !steps.is_empty() || new_password.is_some();
        if apply {
            for (program, tool_args) in &steps {
                run_tool(program, tool_args, None, SHADOW_TOOLS, context.deadline)?;
            }
            if let Some(password) = new_password {
                let line = format!("{name}:{password}\n");
                run_tool(
                    "chpasswd",
                    &["--encrypted".into()],
                    Some(line),
                    SHADOW_TOOLS,
                    context.deadline,
                )?;
            }
        }
        let mut outcome = Outcome::changed(changed)
            .with_diff((context.want_diff && changed).then(|| diff.join("\n")))
            .with_output("name", name);
        let after = if apply {
            SystemUser::from_name(name).ok().flatten()
        } else {
            current
        };
        if let Some(user) = after.filter(|_| args.state == UserState::Present) {
            outcome = outcome
                .with_output("state", "present")
                .with_output("uid", user.uid.as_raw())
                .with_output("group", user.gid.as_raw())
                .with_output(
                    "groups",
                    supplementary_groups(&user)?
                        .into_iter()
                        .collect::<Vec<_>>()
                        .join(","),
                )
                .with_output("home", user.dir.display().to_string())
                .with_output("shell", user.shell.display().to_string());
        } else {
            outcome = outcome.with_output(
                "state",
                if args.state == UserState::Present {
                    "present"
                } else {
                    "absent"
                },
            );
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::files::test_support::run;
    use crate::group::tests::{accounts_lock, assert_accounts_converge, Scratch};
    use crate::group::Group;

    const HASH: &str = "$6$saltsalt$Ycm8CyyN1Kf3uYGk9vrl4DuoSE8FoI1s0bb7YVGSr0Q.dwvDlSUaKqfw/1pJ6IqWkyzTK1DEy6Pa8h3Ox1Rk.";

    #[test]
    fn a_user_is_created_changed_and_removed_through_the_system_tools() {
        let Some(_turn) = accounts_lock() else { return };
        let scratch = Scratch::new("u");
        let group = Scratch::new("ug");
        let name = &scratch.name;
        let extra = &group.name;
        assert_accounts_converge(&Group, &format!("name: {extra}"));
        let created = assert_accounts_converge(
            &User,
            &format!("name: {name}\nshell: /bin/sh\ncomment: Test user\npassword: '{HASH}'"),
        );
        assert_eq!(created.output["shell"], "/bin/sh");
        assert_eq!(shadow_hash(name).unwrap().as_deref(), Some(HASH));
        let home = created.output["home"].as_str().unwrap().to_string();
        assert!(Path::new(&home).is_dir(), "create_home makes {home}");

        let changed = assert_accounts_converge(
            &User,
            &format!("name: {name}\nshell: /bin/bash\ngroups: {extra}\nappend: true"),
        );
        assert_eq!(
            changed.diff.unwrap(),
            format!("groups:  -> {extra}\nshell: /bin/sh -> /bin/bash")
        );
        let removed = assert_accounts_converge(&User, &format!("name: {name}\ngroups: ''"));
        assert_eq!(removed.diff.unwrap(), format!("groups: {extra} -> "));

        let other = HASH.replace("saltsalt", "pepper12");
        let repassworded =
            assert_accounts_converge(&User, &format!("name: {name}\npassword: '{other}'"));
        assert_eq!(repassworded.diff.as_deref(), Some("password: changed"));
        let shown = format!("{repassworded:?}");
        assert!(
            !shown.contains("pepper12"),
            "the hash appears nowhere: {shown}"
        );
        let kept = run(
            &User,
            &format!("name: {name}\npassword: '{HASH}'\nupdate_password: on_create"),
            Path::new("/"),
            true,
        )
        .unwrap();
        assert!(!kept.changed, "on_create leaves an existing password alone");

        assert_accounts_converge(&User, &format!("name: {name}\nstate: absent\nremove: true"));
        assert!(SystemUser::from_name(name).unwrap().is_none());
        assert!(!Path::new(&home).exists(), "remove takes the home folder");
    }

    #[test]
    fn plain_passwords_and_missing_groups_are_refused_before_anything_runs() {
        let root = Path::new("/");
        let err = run(&User, "name: someone\npassword: hunter2", root, false).unwrap_err();
        assert!(err.to_string().contains("must be a crypt(3) hash"), "{err}");
        assert!(!err.to_string().contains("hunter2"));
        let err = run(
            &User,
            "name: someone\ngroups: no-such-group-here",
            root,
            false,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("create it with a `group` task first"),
            "{err}"
        );
        let err = run(&User, "name: '-o'", root, false).unwrap_err();
        assert!(err.to_string().contains("is not a user name"), "{err}");
    }
}
