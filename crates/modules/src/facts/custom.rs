//! `custom`: the admin's own facts, from JSON files and executables in the custom facts
//! directory.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::{in_background, FactsError};
use crate::process::{self, Capture, Output, RunFailure};

/// Where custom facts live; `WEFT_FACTS_DIR` overrides it (tests, non-root users).
pub const CUSTOM_FACTS_DIR: &str = "/etc/weft/facts.d";

/// How long a custom facts executable may run before it is killed.
const CUSTOM_FACT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest custom facts file read (executables' output is cut at the same size): facts
/// end up in every template context, so one runaway file must not exhaust the node's memory.
const MAX_CUSTOM_FACT_BYTES: usize = 1024 * 1024;

/// `WEFT_FACTS_DIR` when set and not empty, else [`CUSTOM_FACTS_DIR`].
pub fn custom_facts_dir() -> PathBuf {
    match std::env::var_os("WEFT_FACTS_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(CUSTOM_FACTS_DIR),
    }
}

#[derive(Clone, Copy)]
enum SourceKind {
    Json,
    Executable,
}

impl SourceKind {
    fn evaluate(self, path: &Path) -> Value {
        match self {
            SourceKind::Json => read_json_fact(path),
            SourceKind::Executable => run_fact_executable(path),
        }
    }
}

/// The `custom` object: one entry per fact source, keyed by file stem and sorted. A
/// source that fails becomes `{"error": ...}` rather than failing the run.
pub(super) fn gather_custom_facts(dir: &Path) -> Result<Map<String, Value>, FactsError> {
    let unreadable = |source| FactsError::CustomFactsDir {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match fs::read_dir(dir) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Map::new()),
        listing => listing.map_err(unreadable)?,
    };
    let mut sources = Vec::new();
    for entry in entries {
        let path = entry.map_err(unreadable)?.path();
        if let Some(kind) = fact_source_kind(&path) {
            let name = path
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_default();
            sources.push((name, path, kind));
        }
    }
    sources.sort_by(|(name_a, path_a, _), (name_b, path_b, _)| {
        (name_a, path_a).cmp(&(name_b, path_b))
    });

    // All sources at once: slow executables then cost the slowest one's time, not the sum.
    let mut answers: Vec<(String, PathBuf, SourceKind, Receiver<Value>)> = Vec::new();
    for (name, path, kind) in sources {
        let answer = match answers.last() {
            // Sorted by stem, so a clash is with the previous source; it is not run at all.
            Some((previous_name, previous_path, ..)) if *previous_name == name => {
                let (sender, answer) = mpsc::channel();
                let _ = sender.send(fact_error(format!(
                    "{} and {} both provide custom fact `{name}`; rename one",
                    previous_path.display(),
                    path.display()
                )));
                answer
            }
            _ => in_background({
                let path = path.clone();
                move |sender| {
                    let _ = sender.send(kind.evaluate(&path));
                }
            }),
        };
        answers.push((name, path, kind, answer));
    }
    let mut facts = Map::new();
    for (name, path, kind, answer) in answers {
        // A source whose thread could not start is evaluated here instead.
        let value = answer.recv().unwrap_or_else(|_| kind.evaluate(&path));
        facts.insert(name, value);
    }
    Ok(facts)
}

/// `.json` files are data even when executable (copied from a filesystem without
/// modes); other files count only when executable. Dotfiles are left alone: editors'
/// swap and lock files live there.
fn fact_source_kind(path: &Path) -> Option<SourceKind> {
    if path.file_name()?.to_string_lossy().starts_with('.') {
        return None;
    }
    if path
        .extension()
        .is_some_and(|extension| extension == "json")
    {
        return Some(SourceKind::Json);
    }
    let metadata = fs::metadata(path).ok()?;
    (metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
        .then_some(SourceKind::Executable)
}

fn fact_error(message: String) -> Value {
    json!({ "error": message })
}

/// Reads one byte past the size limit, so that a file that does not fit can be told apart.
fn read_up_to_limit(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?
        .take(MAX_CUSTOM_FACT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn read_json_fact(path: &Path) -> Value {
    let bytes = match read_up_to_limit(path) {
        Ok(bytes) => bytes,
        Err(error) => {
            return fact_error(format!(
                "cannot read custom facts file {}: {error}",
                path.display()
            ))
        }
    };
    if bytes.len() > MAX_CUSTOM_FACT_BYTES {
        return fact_error(format!(
            "custom facts file {} is larger than 1 MiB; skipped",
            path.display()
        ));
    }
    serde_json::from_slice(&bytes).unwrap_or_else(|error| {
        fact_error(format!(
            "custom facts file {} is not valid JSON: {error}",
            path.display()
        ))
    })
}

fn run_fact_executable(path: &Path) -> Value {
    let described = format!("custom facts executable {}", path.display());
    let deadline = Instant::now() + CUSTOM_FACT_TIMEOUT;
    let finished = match process::run(Command::new(path), None, Capture::Output, Some(deadline)) {
        Ok(finished) => finished,
        Err(RunFailure::Spawn(error)) => {
            return fact_error(format!("cannot run {described}: {error}"))
        }
        Err(RunFailure::Wait { error, stderr }) => {
            return fact_error(format!(
                "{described} could not be waited for ({error}) and was killed{}",
                stderr_note(&stderr)
            ))
        }
        Err(RunFailure::TimedOut { stderr }) => {
            return fact_error(format!(
                "{described} did not finish within {CUSTOM_FACT_TIMEOUT:?} and was killed{}",
                stderr_note(&stderr)
            ))
        }
        Err(RunFailure::OutputStayedOpen) => {
            return fact_error(format!(
                "{described} exited, but its output stayed open past {CUSTOM_FACT_TIMEOUT:?} \
                 (a background process it started still holds it)"
            ))
        }
    };
    let note = stderr_note(&finished.stderr);
    if !finished.status.success() {
        return fact_error(format!("{described} failed ({}){note}", finished.status));
    }
    if finished.stdout.truncated {
        return fact_error(format!("{described} printed more than 1 MiB; skipped"));
    }
    let output = &finished.stdout.bytes;
    serde_json::from_slice(output).unwrap_or_else(|error| {
        fact_error(format!(
            "{described} printed invalid JSON ({error}); its output began: {:?}{note}",
            excerpt(output)
        ))
    })
}

/// `; stderr: ...` with the start of what the executable wrote there, or nothing.
fn stderr_note(stderr: &Output) -> String {
    if stderr.bytes.trim_ascii().is_empty() {
        return String::new();
    }
    format!("; stderr: {}", excerpt(&stderr.bytes))
}

/// The start of a process's output: enough to recognise the problem in one message.
fn excerpt(bytes: &[u8]) -> String {
    const MAX_CHARS: usize = 300;
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    match text.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_executable(dir: &Path, name: &str, script: &str) {
        let path = dir.join(name);
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn custom_facts_come_from_json_files_and_executables() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("packages.json"), r#"{"nginx": "1.24"}"#).unwrap();
        fs::write(dir.path().join("README"), "not a fact source").unwrap();
        fs::write(dir.path().join(".hidden.json"), "not json").unwrap();
        write_executable(
            dir.path(),
            "role.sh",
            "#!/bin/sh\necho '{\"tier\": \"web\"}'\n",
        );
        write_executable(
            dir.path(),
            "garbage",
            "#!/bin/sh\necho 'this is not json'\necho 'something broke' >&2\n",
        );
        write_executable(
            dir.path(),
            "failing",
            "#!/bin/sh\necho 'no database' >&2\nexit 3\n",
        );

        let custom = gather_custom_facts(dir.path()).unwrap();
        let names: Vec<&str> = custom.keys().map(String::as_str).collect();
        assert_eq!(names, ["failing", "garbage", "packages", "role"]);
        assert_eq!(custom["packages"], json!({"nginx": "1.24"}));
        assert_eq!(custom["role"], json!({"tier": "web"}));

        let garbage = custom["garbage"]["error"].as_str().unwrap();
        let garbage_path = dir.path().join("garbage");
        assert!(
            garbage.contains(&*garbage_path.to_string_lossy()),
            "{garbage}"
        );
        assert!(garbage.contains("invalid JSON"), "{garbage}");
        assert!(garbage.contains("this is not json"), "{garbage}");
        assert!(garbage.contains("something broke"), "{garbage}");

        let failing = custom["failing"]["error"].as_str().unwrap();
        assert!(failing.contains("exit status: 3"), "{failing}");
        assert!(failing.contains("no database"), "{failing}");
    }

    #[test]
    fn broken_custom_fact_files_become_error_entries() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("bad.json"), "{ not json").unwrap();
        fs::write(
            dir.path().join("huge.json"),
            vec![b' '; MAX_CUSTOM_FACT_BYTES + 1],
        )
        .unwrap();
        fs::write(dir.path().join("twice.json"), "1").unwrap();
        write_executable(dir.path(), "twice.sh", "#!/bin/sh\necho 2\n");

        let custom = gather_custom_facts(dir.path()).unwrap();
        let error = |name: &str| custom[name]["error"].as_str().unwrap().to_string();
        assert!(
            error("bad").contains("bad.json is not valid JSON"),
            "{}",
            error("bad")
        );
        assert!(
            error("huge").contains("larger than 1 MiB"),
            "{}",
            error("huge")
        );
        assert!(
            error("twice").contains("both provide custom fact `twice`"),
            "{}",
            error("twice")
        );
    }

    #[test]
    fn an_executable_printing_more_than_1_mib_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let flood = format!(
            "#!/bin/sh\nhead -c {} /dev/zero\n",
            MAX_CUSTOM_FACT_BYTES + 1
        );
        write_executable(dir.path(), "flood", &flood);
        let custom = gather_custom_facts(dir.path()).unwrap();
        let error = custom["flood"]["error"].as_str().unwrap();
        assert!(
            error.ends_with("printed more than 1 MiB; skipped"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_custom_facts_dir_gives_no_custom_facts() {
        let dir = tempfile::tempdir().unwrap();
        let custom = gather_custom_facts(&dir.path().join("absent")).unwrap();
        assert!(custom.is_empty());
    }

    #[test]
    fn a_custom_facts_path_that_is_not_a_dir_is_fatal() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let error = gather_custom_facts(file.path()).unwrap_err();
        assert!(
            error.to_string().contains("custom facts directory"),
            "{error}"
        );
    }
}
