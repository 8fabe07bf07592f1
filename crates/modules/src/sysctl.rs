//! `sysctl`: a kernel parameter in a sysctl file and, on request, in the running kernel
//! (Ansible's `sysctl`). As Ansible's, a file whose value must change is written back
//! with every setting as `name=value`, one per name, comments kept; the file is then
//! loaded with `sysctl -p` unless `reload: false`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::module::{Module, ModuleContext, ModuleError, Outcome};
use crate::system_tool::run_tool;
use crate::text_file::{edit_text_file, Edited, TextFile, WhenMissing};

pub struct Sysctl;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SysctlArgs {
    /// `net.ipv4.ip_forward` (or with `/` separators).
    name: String,
    value: Option<Value>,
    #[serde(default)]
    state: SysctlState,
    #[serde(default = "default_file")]
    sysctl_file: PathBuf,
    /// Load the file with `sysctl -p` when it changed.
    #[serde(default = "crate::module::yes")]
    reload: bool,
    /// Also set the running kernel's value when it differs, file changed or not.
    #[serde(default)]
    sysctl_set: bool,
    /// Let `sysctl -p` pass over unknown names.
    #[serde(default)]
    ignoreerrors: bool,
}

fn default_file() -> PathBuf {
    PathBuf::from("/etc/sysctl.conf")
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SysctlState {
    #[default]
    Present,
    Absent,
}

/// The value as the kernel prints it: booleans (and yes/no, on/off) as 1/0, whitespace
/// collapsed.
fn normalized(value: &Value) -> Result<String, ModuleError> {
    let text = match value {
        Value::Bool(true) => "1".to_string(),
        Value::Bool(false) => "0".to_string(),
        Value::Number(number) => number.to_string(),
        // As Ansible reads them, whatever the YAML version took them for.
        Value::String(text) => match text.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" | "on" | "true" | "t" => "1".to_string(),
            "n" | "no" | "off" | "false" | "f" => "0".to_string(),
            _ => text.split_whitespace().collect::<Vec<_>>().join(" "),
        },
        _ => {
            return Err(ModuleError::Failed(
                "`value` must be a string, a number or a boolean".into(),
            ))
        }
    };
    if text.contains(['\n', '=']) {
        return Err(ModuleError::Failed(
            "`value` cannot hold `=` or a line break".into(),
        ));
    }
    Ok(text)
}

/// `name`'s file under /proc/sys, refusing names that would climb out of it.
fn proc_path(name: &str) -> Result<PathBuf, ModuleError> {
    let parts: Vec<&str> = name.split(['.', '/']).collect();
    if parts.iter().any(|part| part.is_empty() || *part == "..") {
        return Err(ModuleError::Failed(format!(
            "`{name}` is not a sysctl name such as net.ipv4.ip_forward"
        )));
    }
    Ok(Path::new("/proc/sys").join(parts.join("/")))
}

/// A setting line's name and value; `None` for comments, blanks and other lines.
fn setting(line: &str) -> Option<(String, String)> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with(['#', ';']) {
        return None;
    }
    let (name, value) = trimmed.split_once('=')?;
    Some((name.trim().to_string(), value.trim().to_string()))
}

/// The file with `name` set to `value` (or gone), written as Ansible writes it.
fn edited(text: &str, name: &str, value: Option<&str>) -> Option<Edited> {
    let current = text
        .lines()
        .filter_map(setting)
        .find(|(found, _)| found == name)
        .map(|(_, value)| value.split_whitespace().collect::<Vec<_>>().join(" "));
    if current.as_deref() == value {
        return None;
    }
    let mut seen = Vec::new();
    let mut lines = Vec::new();
    for line in text.lines() {
        let Some((found, found_value)) = setting(line) else {
            lines.push(line.to_string());
            continue;
        };
        if seen.contains(&found) {
            continue;
        }
        if found == name {
            lines.extend(value.map(|value| format!("{name}={value}")));
        } else {
            lines.push(format!("{found}={found_value}"));
        }
        seen.push(found);
    }
    if let (Some(value), false) = (value, seen.iter().any(|found| found == name)) {
        lines.push(format!("{name}={value}"));
    }
    let msg = match value {
        Some(value) => format!("{name} set to {value} in the file"),
        None => format!("{name} removed from the file"),
    };
    Some(Edited {
        text: lines.iter().map(|line| format!("{line}\n")).collect(),
        msg,
    })
}

impl Module for Sysctl {
    const NAME: &'static str = "sysctl";
    type Args = SysctlArgs;

    fn check_apply(
        &self,
        args: SysctlArgs,
        context: &mut ModuleContext,
        apply: bool,
    ) -> Result<Outcome, ModuleError> {
        let live = proc_path(&args.name)?;
        let value = match (args.state, &args.value) {
            (SysctlState::Present, Some(value)) => Some(normalized(value)?),
            (SysctlState::Present, None) => {
                return Err(ModuleError::Failed("`state: present` needs `value`".into()))
            }
            (SysctlState::Absent, _) => None,
        };
        let file = TextFile {
            path: &args.sysctl_file,
            mode: None,
            owner: None,
            group: None,
            backup: false,
            follow: false,
        };
        let mut outcome = edit_text_file(
            Self::NAME,
            &file,
            WhenMissing::Create,
            context,
            apply,
            |text| Ok(edited(text, &args.name, value.as_deref())),
        )?;
        if outcome.changed && args.reload && apply {
            let mut reload = vec!["-p".to_string(), args.sysctl_file.display().to_string()];
            if args.ignoreerrors {
                reload.insert(0, "-e".into());
            }
            run_tool("sysctl", &reload, None, "procps", context.deadline)?;
        }
        if let (true, Some(value)) = (args.sysctl_set, &value) {
            let running = std::fs::read_to_string(&live).map_err(|e| {
                ModuleError::Failed(format!(
                    "cannot read {} ({}): {e}",
                    args.name,
                    live.display()
                ))
            })?;
            let running = running.split_whitespace().collect::<Vec<_>>().join(" ");
            if running != *value {
                if apply {
                    std::fs::write(&live, value).map_err(|e| {
                        ModuleError::Failed(format!("cannot set {} to {value}: {e}", args.name))
                    })?;
                }
                outcome.changed = true;
                let line = format!("{} (running): {running} -> {value}", args.name);
                if context.want_diff {
                    outcome.diff = Some(match outcome.diff.take() {
                        Some(diff) => format!("{diff}\n{line}"),
                        None => line,
                    });
                }
            }
        }
        Ok(outcome.with_output("name", args.name.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::files::test_support::{assert_converges, run};

    #[test]
    fn the_file_is_written_as_ansible_writes_it() {
        let text = "# tuning\nvm.swappiness = 10\nnet.ipv4.ip_forward=0\nvm.swappiness=20\n";
        let set = edited(text, "net.ipv4.ip_forward", Some("1")).unwrap();
        assert_eq!(
            set.text,
            "# tuning\nvm.swappiness=10\nnet.ipv4.ip_forward=1\n"
        );
        assert_eq!(edited(&set.text, "net.ipv4.ip_forward", Some("1")), None);
        let added = edited("", "kernel.pid_max", Some("65536")).unwrap();
        assert_eq!(added.text, "kernel.pid_max=65536\n");
        let removed = edited(&set.text, "vm.swappiness", None).unwrap();
        assert_eq!(removed.text, "# tuning\nnet.ipv4.ip_forward=1\n");
        assert_eq!(edited("a=1\n", "b", None), None);
    }

    #[test]
    fn a_file_setting_converges_without_reload() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("99-weft.conf");
        let task = format!(
            "name: vm.swappiness\nvalue: 10\nsysctl_file: {}\nreload: false",
            file.display()
        );
        let outcome = assert_converges(&Sysctl, &task, dir.path());
        assert_eq!(fs::read_to_string(&file).unwrap(), "vm.swappiness=10\n");
        assert_eq!(
            outcome.msg.as_deref(),
            Some("vm.swappiness set to 10 in the file")
        );
        let yes = format!(
            "name: net.ipv4.ip_forward\nvalue: yes\nsysctl_file: {}\nreload: false",
            file.display()
        );
        run(&Sysctl, &yes, dir.path(), true).unwrap();
        assert!(fs::read_to_string(&file)
            .unwrap()
            .contains("net.ipv4.ip_forward=1\n"));
    }

    #[test]
    fn names_that_leave_proc_sys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = run(
            &Sysctl,
            "name: ../../etc/passwd\nvalue: 1",
            dir.path(),
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("is not a sysctl name"), "{err}");
    }

    /// In a network namespace of its own, so the host's forwarding is never touched.
    #[test]
    fn the_running_value_is_set_and_the_file_loaded_in_a_namespace() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: a network namespace needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("99-weft.conf");
        let task = format!(
            "name: net.ipv4.ip_forward\nvalue: 1\nsysctl_file: {}\nsysctl_set: true",
            file.display()
        );
        let base = dir.path().to_path_buf();
        let (applied, running) = std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("a network namespace");
            let applied = run(&Sysctl, &task, &base, true).unwrap();
            let again = run(&Sysctl, &task, &base, true).unwrap();
            assert!(!again.changed, "{:?}", again.diff);
            (
                applied,
                fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
            )
        })
        .join()
        .unwrap();
        assert!(applied.changed);
        assert_eq!(running.trim(), "1");
    }
}
