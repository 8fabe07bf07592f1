//! Custom modules: any executable in a module directory is a module named by its file.
//! It reads one JSON request on stdin and answers one JSON object on stdout (the
//! protocol is in the README, "Writing custom modules").

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command as Process;

use serde_json::{json, Map, Value};
use weft_taskbook::yaml::{Node, NodeValue};
use weft_taskbook::Error;

use crate::module::{DynModule, MasterNeeds, ModuleContext, ModuleError, Outcome};
use crate::process::{first_lines, run_captured};

/// Shared modules first, the local sysadmin's overrides last: later directories win.
pub const DEFAULT_MODULE_DIRS: &[&str] = &["/usr/local/share/weft/modules", "/etc/weft/modules"];

/// Colon-separated module directories replacing the defaults, later ones winning.
pub const MODULE_PATH_ENV: &str = "WEFT_MODULE_PATH";

/// Where custom modules are looked for, lowest precedence first.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleDirs(Vec<PathBuf>);

impl ModuleDirs {
    /// Relative directories are taken from the current one, now: modules run in the
    /// TaskBook's folder.
    pub fn new(dirs: impl IntoIterator<Item = PathBuf>) -> Self {
        ModuleDirs(
            dirs.into_iter()
                .map(|dir| std::path::absolute(&dir).unwrap_or(dir))
                .collect(),
        )
    }

    /// `$WEFT_MODULE_PATH` when set, else the default directories.
    pub fn from_env() -> Self {
        match std::env::var_os(MODULE_PATH_ENV) {
            Some(value) => ModuleDirs::new(
                std::env::split_paths(&value).filter(|dir| !dir.as_os_str().is_empty()),
            ),
            None => ModuleDirs::new(DEFAULT_MODULE_DIRS.iter().map(PathBuf::from)),
        }
    }

    /// The module `name` from the directory with the highest precedence that holds a
    /// file of that name. Being there decides, not being executable: an override that
    /// lost its execute bit fails loudly instead of the shared version running.
    pub fn find(&self, name: &str) -> Option<CustomModule> {
        if !is_module_name(name) {
            return None;
        }
        self.0.iter().rev().find_map(|dir| {
            let path = dir.join(name);
            path.is_file().then(|| CustomModule {
                name: name.to_string(),
                path,
            })
        })
    }

    /// Why `name` is not a module, naming the directories in the order they win.
    pub fn not_found(&self, name: &str) -> String {
        let dirs: Vec<String> = self
            .0
            .iter()
            .rev()
            .map(|d| d.display().to_string())
            .collect();
        let searched = match dirs.as_slice() {
            [] => format!("no module directories are set (${MODULE_PATH_ENV} is empty)"),
            [only] => format!("not found in {only}"),
            [init @ .., last] => format!("not found in {} or {last}", init.join(", ")),
        };
        format!("no module `{name}`: not built in and {searched}")
    }
}

/// Names are file names, never paths: a task key cannot reach outside the directories.
fn is_module_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// One executable found in a module directory.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomModule {
    name: String,
    path: PathBuf,
}

impl CustomModule {
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_executable(&self) -> Result<(), String> {
        let mode = std::fs::metadata(&self.path)
            .map_err(|e| format!("cannot read custom module {}: {e}", self.path.display()))?
            .permissions()
            .mode();
        if mode & 0o111 == 0 {
            return Err(format!(
                "custom module {} is not executable; make it so with `chmod +x`, or remove it",
                self.path.display()
            ));
        }
        Ok(())
    }

    /// Reads the module's answer; `rc` non-zero always fails the task.
    fn answer(&self, rc: i32, stdout: &str, stderr: &str) -> Result<Outcome, ModuleError> {
        let path = self.path.display();
        let stderr_note = match first_lines(stderr) {
            lines if lines.is_empty() => String::from("; it wrote nothing on stderr"),
            lines => format!("; its stderr{lines}"),
        };
        let answer = match serde_json::from_str::<Value>(stdout.trim()) {
            Ok(Value::Object(answer)) => answer,
            _ if rc != 0 => {
                return Err(ModuleError::Failed(format!(
                    "custom module {path} exited with {rc} without a JSON answer{stderr_note}"
                )))
            }
            parsed => {
                let why = match parsed {
                    Ok(other) => format!("a JSON {}", json_kind(&other)),
                    Err(e) => format!("not JSON ({e})"),
                };
                let start: String = stdout.trim().chars().take(200).collect();
                return Err(ModuleError::Failed(format!(
                    "custom module {path} must answer one JSON object on stdout, but its answer is {why}: `{start}`{stderr_note}"
                )));
            }
        };
        let mut outcome = Outcome::unchanged();
        for (key, value) in answer {
            let wrong = |expected: &str| {
                ModuleError::Failed(format!(
                    "custom module {path} answered `{key}` as a JSON {}, expected {expected}",
                    json_kind(&value)
                ))
            };
            match key.as_str() {
                "changed" => {
                    outcome.changed = value.as_bool().ok_or_else(|| wrong("true or false"))?
                }
                "failed" => {
                    outcome.failed = value.as_bool().ok_or_else(|| wrong("true or false"))?
                }
                "msg" | "diff" if value.is_null() => {}
                "msg" => {
                    outcome.msg = Some(value.as_str().ok_or_else(|| wrong("a string"))?.into())
                }
                "diff" => {
                    outcome.diff = Some(value.as_str().ok_or_else(|| wrong("a string"))?.into())
                }
                _ => {
                    outcome.output.insert(key, value);
                }
            }
        }
        if rc != 0 {
            outcome.failed = true;
            let said = outcome
                .msg
                .take()
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            outcome.msg = Some(format!("custom module {path} exited with {rc}{said}"));
        }
        Ok(outcome)
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

/// Arguments travel as one JSON object, so the task's arguments must be a mapping.
fn check_args(args: &Node, name: &str) -> Result<(), Error> {
    match &args.value {
        NodeValue::Mapping(_) => Ok(()),
        NodeValue::Scalar { .. } if args.to_json().is_null() => Ok(()),
        _ => Err(Error::new(format!(
            "custom module `{name}` takes a mapping of arguments, found {}",
            args.kind_name()
        ))
        .at(args.span)
        .with_hint(format!("write `{name}: {{key: value}}`"))),
    }
}

impl DynModule for CustomModule {
    fn name(&self) -> &str {
        &self.name
    }

    /// The module decides what check mode means: it is told and must change nothing.
    fn skipped_in_check_mode(&self) -> bool {
        false
    }

    fn validate(&self, args: &Node, _base_dir: &Path) -> Result<(), Error> {
        check_args(args, &self.name)?;
        self.check_executable()
            .map_err(|msg| Error::new(msg).at(args.span))
    }

    /// A custom module reads its files from its working directory, the TaskBook's
    /// folder; like `copy`, its `src` names one.
    fn master_needs<'a>(&self, args: &'a Node) -> MasterNeeds<'a> {
        MasterNeeds {
            files: crate::files::fixed_relative_src(args),
            ..MasterNeeds::default()
        }
    }

    fn run(
        &self,
        args: &Node,
        context: &mut ModuleContext,
        apply: bool,
    ) -> Result<Outcome, ModuleError> {
        check_args(args, &self.name).map_err(ModuleError::Arguments)?;
        self.check_executable().map_err(ModuleError::Failed)?;
        let arguments = match args.to_json() {
            Value::Null => Value::Object(Map::new()),
            other => other,
        };
        let request = json!({
            "args": arguments,
            "check_mode": !apply,
            "diff": context.want_diff,
        });
        let mut process = Process::new(&self.path);
        // Relative paths in arguments mean what they mean for `copy` and `template`.
        process.current_dir(context.base_dir);
        let what = format!("custom module {}", self.path.display());
        let captured = run_captured(process, Some(request.to_string()), context.deadline)
            .map_err(|failure| failure.into_module_error(&what))?;
        self.answer(captured.rc, &captured.stdout, &captured.stderr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module() -> CustomModule {
        CustomModule {
            name: "m".into(),
            path: PathBuf::from("/mods/m"),
        }
    }

    #[test]
    fn later_directories_win_and_names_never_leave_them() {
        let root = tempfile::tempdir().unwrap();
        let (low, high) = (root.path().join("low"), root.path().join("high"));
        for dir in [&low, &high] {
            std::fs::create_dir(dir).unwrap();
            std::fs::write(dir.join("m"), "").unwrap();
        }
        std::fs::write(low.join("only_low"), "").unwrap();
        std::fs::write(root.path().join("escape"), "").unwrap();
        let dirs = ModuleDirs::new([low.clone(), high.clone()]);
        assert_eq!(dirs.find("m").unwrap().path(), high.join("m"));
        assert_eq!(dirs.find("only_low").unwrap().path(), low.join("only_low"));
        assert_eq!(dirs.find("absent"), None);
        for name in ["../escape", ".", "", "a/b", "-rf"] {
            assert_eq!(dirs.find(name), None, "{name}");
        }
    }

    #[test]
    fn not_found_names_the_directories_in_the_order_they_win() {
        let dirs = ModuleDirs::new(DEFAULT_MODULE_DIRS.iter().map(PathBuf::from));
        assert_eq!(
            dirs.not_found("x"),
            "no module `x`: not built in and not found in /etc/weft/modules or /usr/local/share/weft/modules"
        );
    }

    #[test]
    fn answers_become_outcomes() {
        let outcome = module()
            .answer(
                0,
                r#"{"changed": true, "msg": "did", "diff": "a -> b", "n": 3}"#,
                "",
            )
            .unwrap();
        assert!(outcome.changed && !outcome.failed);
        assert_eq!(outcome.msg.as_deref(), Some("did"));
        assert_eq!(outcome.diff.as_deref(), Some("a -> b"));
        assert_eq!(outcome.output["n"], 3);

        let failed = module().answer(3, r#"{"msg": "no disk"}"#, "").unwrap();
        assert!(failed.failed);
        assert_eq!(
            failed.msg.as_deref(),
            Some("custom module /mods/m exited with 3: no disk")
        );
    }

    #[test]
    fn bad_answers_name_the_module_and_show_its_stderr() {
        let cases = [
            (0, "hello", "oops", "custom module /mods/m must answer one JSON object on stdout, but its answer is not JSON (expected value at line 1 column 1): `hello`; its stderr:\noops"),
            (0, "[1]", "", "custom module /mods/m must answer one JSON object on stdout, but its answer is a JSON list: `[1]`; it wrote nothing on stderr"),
            (2, "", "boom", "custom module /mods/m exited with 2 without a JSON answer; its stderr:\nboom"),
            (0, r#"{"changed": "yes"}"#, "", "custom module /mods/m answered `changed` as a JSON string, expected true or false"),
        ];
        for (rc, stdout, stderr, expected) in cases {
            match module().answer(rc, stdout, stderr) {
                Err(ModuleError::Failed(msg)) => assert_eq!(msg, expected),
                other => panic!("{stdout}: {other:?}"),
            }
        }
    }
}
