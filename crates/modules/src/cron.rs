//! `cron`: one named job in a user's crontab or in a file of /etc/cron.d (Ansible's
//! `cron`). The job is found by the comment line above it, `#Ansible: NAME`, which
//! Ansible writes too: jobs an Ansible play made are taken over, not doubled. A user's
//! crontab is read with `crontab -l` and written with `crontab -`, so cron sees the
//! change and the spool keeps its owner and mode.

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use serde::Deserialize;

use crate::module::{Module, ModuleContext, ModuleError, Outcome};
use crate::process::{first_lines, run_captured};
use crate::system_tool::run_tool;
use crate::text_file::{edit_text_file, Edited, TextFile, WhenMissing};

pub struct Cron;

const MARKER: &str = "#Ansible: ";
const SPECIAL_TIMES: &[&str] = &[
    "reboot", "yearly", "annually", "monthly", "weekly", "daily", "hourly",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronArgs {
    name: String,
    job: Option<String>,
    #[serde(default = "any")]
    minute: String,
    #[serde(default = "any")]
    hour: String,
    #[serde(default = "any")]
    day: String,
    #[serde(default = "any")]
    month: String,
    #[serde(default = "any")]
    weekday: String,
    /// `@reboot`, `@daily`... instead of the five fields (without the `@`).
    special_time: Option<String>,
    /// Whose crontab (default root), or the user a cron.d file runs the job as.
    user: Option<String>,
    /// A file of /etc/cron.d (or an absolute path) instead of a user's crontab.
    cron_file: Option<PathBuf>,
    /// Keep the job, commented out.
    #[serde(default)]
    disabled: bool,
    #[serde(default)]
    state: CronState,
    #[serde(default)]
    backup: bool,
}

fn any() -> String {
    "*".to_string()
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum CronState {
    #[default]
    Present,
    Absent,
}

/// The job's line as cron reads it.
fn job_line(args: &CronArgs) -> Result<String, ModuleError> {
    let job = args
        .job
        .as_deref()
        .ok_or_else(|| ModuleError::Failed("`state: present` needs `job`".into()))?;
    let when = match &args.special_time {
        Some(special) if SPECIAL_TIMES.contains(&special.as_str()) => format!("@{special}"),
        Some(special) => {
            return Err(ModuleError::Failed(format!(
                "`special_time: {special}`: expected one of {}",
                SPECIAL_TIMES.join(", ")
            )))
        }
        None => {
            let fields = [
                &args.minute,
                &args.hour,
                &args.day,
                &args.month,
                &args.weekday,
            ];
            if let Some(bad) = fields
                .iter()
                .find(|field| field.trim().is_empty() || field.contains(char::is_whitespace))
            {
                return Err(ModuleError::Failed(format!(
                    "`{bad}` is not a cron time field: one of minute, hour, day, month, weekday is empty or holds a space"
                )));
            }
            fields.map(String::as_str).join(" ")
        }
    };
    let user = match (&args.cron_file, &args.user) {
        (Some(_), Some(user)) => format!(" {user}"),
        (Some(_), None) => " root".to_string(),
        (None, _) => String::new(),
    };
    let disabled = if args.disabled { "#" } else { "" };
    Ok(format!("{disabled}{when}{user} {job}"))
}

/// The crontab with the job named `name` set to `line` (or gone).
fn edited(text: &str, name: &str, line: Option<&str>) -> Option<Edited> {
    let marker = format!("{MARKER}{name}");
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let found = lines.iter().position(|existing| *existing == marker);
    let msg = match (found, line) {
        (Some(at), Some(line)) => {
            if lines.get(at + 1).map(String::as_str) == Some(line) {
                return None;
            }
            if at + 1 < lines.len() {
                lines[at + 1] = line.to_string();
            } else {
                lines.push(line.to_string());
            }
            "job changed"
        }
        (None, Some(line)) => {
            lines.extend([marker, line.to_string()]);
            "job added"
        }
        (Some(at), None) => {
            let end = (at + 2).min(lines.len());
            lines.drain(at..end);
            "job removed"
        }
        (None, None) => return None,
    };
    Some(Edited {
        text: lines.iter().map(|line| format!("{line}\n")).collect(),
        msg: msg.into(),
    })
}

/// `user`'s crontab; empty when there is none.
fn read_crontab(user: &str, context: &ModuleContext) -> Result<String, ModuleError> {
    let mut process = Process::new("crontab");
    process.args(["-l", "-u", user]).env("LC_ALL", "C");
    let captured = run_captured(process, None, context.deadline)
        .map_err(|failure| failure.into_module_error("`crontab -l`"))?;
    match captured.rc {
        0 => Ok(captured.stdout),
        _ if captured.stderr.contains("no crontab for") => Ok(String::new()),
        rc => Err(ModuleError::Failed(format!(
            "`crontab -l -u {user}` exited with {rc}{}",
            first_lines(&captured.stderr)
        ))),
    }
}

impl Module for Cron {
    const NAME: &'static str = "cron";
    type Args = CronArgs;

    fn check_apply(
        &self,
        args: CronArgs,
        context: &mut ModuleContext,
        apply: bool,
    ) -> Result<Outcome, ModuleError> {
        if args.name.contains('\n') || args.job.as_ref().is_some_and(|job| job.contains('\n')) {
            return Err(ModuleError::Failed(
                "`name` and `job` must be single lines".into(),
            ));
        }
        let line = match args.state {
            CronState::Present => Some(job_line(&args)?),
            CronState::Absent => None,
        };
        let outcome = match &args.cron_file {
            Some(cron_file) => {
                if cron_file.is_relative() && cron_file.components().count() != 1 {
                    return Err(ModuleError::Failed(format!(
                        "`cron_file: {}`: a file name in /etc/cron.d, or an absolute path",
                        cron_file.display()
                    )));
                }
                let path = Path::new("/etc/cron.d").join(cron_file);
                let file = TextFile {
                    path: &path,
                    mode: Some("0644"),
                    owner: None,
                    group: None,
                    backup: args.backup,
                    follow: false,
                };
                let when_missing = match args.state {
                    CronState::Present => WhenMissing::Create,
                    CronState::Absent => WhenMissing::NothingToDo,
                };
                edit_text_file(Self::NAME, &file, when_missing, context, apply, |text| {
                    Ok(edited(text, &args.name, line.as_deref()))
                })?
            }
            None => {
                let user = args.user.as_deref().unwrap_or("root");
                let current = read_crontab(user, context)?;
                match edited(&current, &args.name, line.as_deref()) {
                    None => Outcome::unchanged(),
                    Some(edit) => {
                        if apply {
                            let args = ["-u".to_string(), user.to_string(), "-".to_string()];
                            run_tool(
                                "crontab",
                                &args,
                                Some(edit.text.clone()),
                                "cron",
                                context.deadline,
                            )?;
                        }
                        let diff = context.want_diff.then(|| {
                            crate::files::content_diff(
                                &format!("crontab of {user}"),
                                Some(current.as_bytes()),
                                edit.text.as_bytes(),
                            )
                        });
                        Outcome::changed(true).with_msg(edit.msg).with_diff(diff)
                    }
                }
            }
        };
        Ok(outcome.with_output("name", args.name.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::files::test_support::{assert_converges, run};

    #[test]
    fn jobs_are_found_by_their_marker_and_set_in_place() {
        let added = edited("MAILTO=ops\n", "backup", Some("0 3 * * * /bin/backup")).unwrap();
        assert_eq!(
            added.text,
            "MAILTO=ops\n#Ansible: backup\n0 3 * * * /bin/backup\n"
        );
        assert_eq!(
            edited(&added.text, "backup", Some("0 3 * * * /bin/backup")),
            None
        );
        let changed = edited(&added.text, "backup", Some("0 4 * * * /bin/backup")).unwrap();
        assert_eq!(
            changed.text,
            "MAILTO=ops\n#Ansible: backup\n0 4 * * * /bin/backup\n"
        );
        let removed = edited(&changed.text, "backup", None).unwrap();
        assert_eq!(removed.text, "MAILTO=ops\n");
    }

    #[test]
    fn a_cron_d_file_names_the_user_and_converges() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("weft-backup");
        let task = format!(
            "name: backup\nminute: '30'\nhour: '2'\njob: /usr/local/bin/backup\ncron_file: {}",
            file.display()
        );
        assert_converges(&Cron, &task, dir.path());
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            "#Ansible: backup\n30 2 * * * root /usr/local/bin/backup\n"
        );
        let daily = format!(
            "name: backup\nspecial_time: daily\nuser: nobody\ndisabled: true\njob: /usr/local/bin/backup\ncron_file: {}",
            file.display()
        );
        assert_converges(&Cron, &daily, dir.path());
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            "#Ansible: backup\n#@daily nobody /usr/local/bin/backup\n"
        );
        let err = run(
            &Cron,
            "name: x\njob: y\nspecial_time: sometimes",
            dir.path(),
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("expected one of reboot"), "{err}");
    }

    #[test]
    fn a_users_crontab_goes_through_crontab() {
        if !nix::unistd::geteuid().is_root() || !Path::new("/usr/bin/crontab").exists() {
            eprintln!("skipped: a user's crontab needs root and crontab (Debian's cron)");
            return;
        }
        let _turn = crate::group::tests::accounts_lock();
        let scratch = crate::group::tests::Scratch::new("c");
        let name = &scratch.name;
        crate::group::tests::assert_accounts_converge(&crate::user::User, &format!("name: {name}"));
        let dir = tempfile::tempdir().unwrap();
        let task = format!("name: hello\nuser: {name}\nminute: '*/5'\njob: echo hello");
        let outcome = assert_converges(&Cron, &task, dir.path());
        assert!(outcome.diff.unwrap().contains("+*/5 * * * * echo hello"));
        let listed = Process::new("crontab")
            .args(["-l", "-u", name])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&listed.stdout)
            .contains("#Ansible: hello\n*/5 * * * * echo hello\n"));
        assert_converges(
            &Cron,
            &format!("name: hello\nuser: {name}\nstate: absent"),
            dir.path(),
        );
        let _ = Process::new("crontab").args(["-r", "-u", name]).status();
    }
}
