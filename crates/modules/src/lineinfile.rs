//! `lineinfile`: makes sure one line is in a text file (replacing the line a `regexp`
//! finds, or adding it), or that no line matches. Lines it does not touch stay
//! byte-identical, line endings included. Where a line goes follows Ansible's module
//! of the same name: the last match of `regexp`, `insertafter` or `insertbefore`
//! unless `firstmatch`, and a line added at the end ends with a newline.

use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;
use weft_taskbook::yaml::Node;
use weft_taskbook::Error;

use crate::backrefs::expand_backrefs;
use crate::files::{arg_error, literal_arg, validate_mode};
use crate::module::{Module, ModuleContext, ModuleError, Outcome};
use crate::text_file::{edit_text_file, Edited, TextFile, WhenMissing};

pub struct LineInFile;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineInFileArgs {
    path: PathBuf,
    line: Option<String>,
    regexp: Option<String>,
    #[serde(default)]
    state: LineState,
    /// A regex, or `EOF`: where a new line goes when `regexp` matches nothing.
    insertafter: Option<String>,
    /// A regex, or `BOF`.
    insertbefore: Option<String>,
    /// `regexp`, `insertafter` and `insertbefore` take their first match, not their last.
    #[serde(default)]
    firstmatch: bool,
    /// `line` refers to `regexp`'s groups (`\1`, `\g<name>`); when `regexp` matches
    /// nothing, the file is left as it is.
    #[serde(default)]
    backrefs: bool,
    #[serde(default)]
    create: bool,
    mode: Option<String>,
    owner: Option<String>,
    group: Option<String>,
    #[serde(default)]
    backup: bool,
    /// Edit the file a symbolic link at `path` points to, instead of refusing.
    #[serde(default)]
    follow: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum LineState {
    #[default]
    Present,
    Absent,
}

const PATTERN_KEYS: [&str; 3] = ["regexp", "insertafter", "insertbefore"];
const INSERT_EXCLUSIVE: &str = "`insertafter` and `insertbefore` exclude each other";

/// Compiles a regular-expression argument; `None` for the keyword it takes instead
/// (`insertafter: EOF`, `insertbefore: BOF`).
fn compile_pattern(key: &str, pattern: &str) -> Result<Option<Regex>, String> {
    match (key, pattern) {
        ("insertafter", "EOF") | ("insertbefore", "BOF") => Ok(None),
        _ => Regex::new(pattern)
            .map(Some)
            .map_err(|e| format!("`{key}` is not a valid regular expression: {e}")),
    }
}

/// Where a line goes when it is added; a pattern that matches nothing puts it at the end.
enum InsertAt {
    End,
    Start,
    AfterMatch(Regex),
    BeforeMatch(Regex),
}

impl InsertAt {
    fn from_args(after: Option<&str>, before: Option<&str>) -> Result<InsertAt, String> {
        Ok(match (after, before) {
            (Some(_), Some(_)) => return Err(INSERT_EXCLUSIVE.into()),
            (Some(after), None) => {
                compile_pattern("insertafter", after)?.map_or(InsertAt::End, InsertAt::AfterMatch)
            }
            (None, Some(before)) => compile_pattern("insertbefore", before)?
                .map_or(InsertAt::Start, InsertAt::BeforeMatch),
            (None, None) => InsertAt::End,
        })
    }

    fn index_in(&self, lines: &TextLines, firstmatch: bool) -> usize {
        let end = lines.lines.len();
        match self {
            InsertAt::End => end,
            InsertAt::Start => 0,
            InsertAt::AfterMatch(regex) => {
                lines.find_match(regex, firstmatch).map_or(end, |i| i + 1)
            }
            InsertAt::BeforeMatch(regex) => lines.find_match(regex, firstmatch).unwrap_or(end),
        }
    }
}

struct Line {
    text: String,
    /// `"\n"`, `"\r\n"`, or empty for a last line without one and for added lines.
    ending: &'static str,
}

/// A text file as lines that remember their own endings, so that joining them again
/// gives back the same bytes.
struct TextLines {
    lines: Vec<Line>,
    /// Whether the file ends with a line ending; a new or empty file will.
    ends_with_newline: bool,
    /// For added lines: the file's first line ending.
    newline: &'static str,
}

impl TextLines {
    fn split(text: &str) -> TextLines {
        let lines: Vec<Line> = text
            .split_inclusive('\n')
            .map(|raw| {
                let (text, ending) = if let Some(text) = raw.strip_suffix("\r\n") {
                    (text, "\r\n")
                } else if let Some(text) = raw.strip_suffix('\n') {
                    (text, "\n")
                } else {
                    (raw, "")
                };
                Line {
                    text: text.to_string(),
                    ending,
                }
            })
            .collect();
        let newline = lines
            .first()
            .map(|line| line.ending)
            .filter(|ending| !ending.is_empty())
            .unwrap_or("\n");
        TextLines {
            lines,
            ends_with_newline: text.is_empty() || text.ends_with('\n'),
            newline,
        }
    }

    fn join(&self) -> String {
        let last = self.lines.len().saturating_sub(1);
        let mut text = String::new();
        for (index, line) in self.lines.iter().enumerate() {
            text.push_str(&line.text);
            if index < last || self.ends_with_newline {
                text.push_str(if line.ending.is_empty() {
                    self.newline
                } else {
                    line.ending
                });
            }
        }
        text
    }

    fn find_match(&self, regex: &Regex, first: bool) -> Option<usize> {
        let mut lines = self.lines.iter();
        let matches = |line: &Line| regex.is_match(&line.text);
        if first {
            lines.position(matches)
        } else {
            lines.rposition(matches)
        }
    }

    /// `state: present`; returns what was done, if anything.
    fn ensure_present(&mut self, wanted: &str, placement: &Placement) -> Option<String> {
        if let Some(regexp) = &placement.regexp {
            if let Some(index) = self.find_match(regexp, placement.firstmatch) {
                let line = &mut self.lines[index];
                let new_text = if placement.backrefs {
                    let captures = regexp.captures(&line.text).expect("the line matched");
                    expand_backrefs(&captures, wanted)
                } else {
                    wanted.to_string()
                };
                if line.text == new_text {
                    return None;
                }
                line.text = new_text;
                return Some("line replaced".into());
            }
            if placement.backrefs {
                return None;
            }
        }
        if self.lines.iter().any(|line| line.text == wanted) {
            return None;
        }
        let index = placement.insert_at.index_in(self, placement.firstmatch);
        if index == self.lines.len() {
            // As Ansible: a line added at the end is a whole line, so the file then
            // ends with a newline even if it did not before.
            self.ends_with_newline = true;
        }
        let line = Line {
            text: wanted.to_string(),
            ending: "",
        };
        self.lines.insert(index, line);
        Some("line added".into())
    }

    /// `state: absent`: removes every line `regexp` matches, else every copy of `line`.
    fn ensure_absent(&mut self, line: Option<&str>, regexp: Option<&Regex>) -> Option<String> {
        let before = self.lines.len();
        self.lines.retain(|candidate| match regexp {
            Some(regexp) => !regexp.is_match(&candidate.text),
            None => Some(candidate.text.as_str()) != line,
        });
        match before - self.lines.len() {
            0 => None,
            1 => Some("1 line removed".into()),
            removed => Some(format!("{removed} lines removed")),
        }
    }
}

/// Which line `state: present` replaces, or where it adds one.
struct Placement {
    regexp: Option<Regex>,
    insert_at: InsertAt,
    firstmatch: bool,
    backrefs: bool,
}

impl Module for LineInFile {
    const NAME: &'static str = "lineinfile";
    type Args = LineInFileArgs;

    fn validate(args: &Node, _base_dir: &Path) -> Result<(), Error> {
        validate_mode(args)?;
        for key in PATTERN_KEYS {
            if let Some((node, pattern)) = literal_arg(args, key) {
                compile_pattern(key, pattern).map_err(|message| arg_error(node, key, message))?;
            }
        }
        if let (Some(_), Some(before)) = (args.get("insertafter"), args.get("insertbefore")) {
            return Err(arg_error(before, "insertbefore", INSERT_EXCLUSIVE));
        }
        Ok(())
    }

    fn check_apply(
        &self,
        args: LineInFileArgs,
        context: &mut ModuleContext,
        apply: bool,
    ) -> Result<Outcome, ModuleError> {
        let regexp = args
            .regexp
            .as_deref()
            .map(|pattern| compile_pattern("regexp", pattern))
            .transpose()
            .map_err(ModuleError::Failed)?
            .flatten();
        let insert_at =
            InsertAt::from_args(args.insertafter.as_deref(), args.insertbefore.as_deref())
                .map_err(ModuleError::Failed)?;
        if args.backrefs && regexp.is_none() {
            return Err(ModuleError::Failed(
                "`backrefs` needs `regexp`: the line is made from what it captures".into(),
            ));
        }
        let line = args.line.as_deref();
        if line.is_some_and(|line| line.contains('\n')) {
            return Err(ModuleError::Failed(
                "`line` must be a single line; use `copy` or `template` for more".into(),
            ));
        }
        let when_missing = match (args.state, line, &regexp) {
            (LineState::Present, None, _) => {
                return Err(ModuleError::Failed("`state: present` needs `line`".into()))
            }
            (LineState::Absent, None, None) => {
                return Err(ModuleError::Failed(
                    "`state: absent` needs `regexp` or `line`: which lines to remove".into(),
                ))
            }
            (LineState::Absent, _, _) => WhenMissing::NothingToDo,
            (LineState::Present, _, _) if args.create => WhenMissing::Create,
            (LineState::Present, _, _) => WhenMissing::Fail {
                hint: "set `create: true` to create it",
            },
        };
        let file = TextFile {
            path: &args.path,
            mode: args.mode.as_deref(),
            owner: args.owner.as_deref(),
            group: args.group.as_deref(),
            backup: args.backup,
            follow: args.follow,
        };
        edit_text_file(Self::NAME, &file, when_missing, context, apply, |text| {
            let mut lines = TextLines::split(text);
            let msg = match (args.state, line) {
                (LineState::Present, Some(line)) => {
                    let placement = Placement {
                        regexp,
                        insert_at,
                        firstmatch: args.firstmatch,
                        backrefs: args.backrefs,
                    };
                    lines.ensure_present(line, &placement)
                }
                _ => lines.ensure_absent(line, regexp.as_ref()),
            };
            Ok(msg.map(|msg| Edited {
                text: lines.join(),
                msg,
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::files::test_support::{assert_converges, run, snapshot, validate};

    /// A new folder with a file `f` holding `text`.
    fn file_with(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn task(path: &Path, rest: &str) -> String {
        format!("path: {}\n{rest}", path.display())
    }

    fn converged(text: &str, rest: &str) -> (String, Outcome) {
        let (dir, path) = file_with(text);
        let outcome = assert_converges(&LineInFile, &task(&path, rest), dir.path());
        (fs::read_to_string(&path).unwrap(), outcome)
    }

    fn unchanged(text: &str, rest: &str) {
        let (dir, path) = file_with(text);
        let outcome = run(&LineInFile, &task(&path, rest), dir.path(), true).unwrap();
        assert!(!outcome.changed, "{rest}: {:?}", outcome.diff);
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn regexp_replaces_the_last_matching_line() {
        let (text, outcome) = converged(
            "Port 22\n#Port 23\nPort 24\nX\n",
            "regexp: '^Port '\nline: Port 2222",
        );
        assert_eq!(text, "Port 22\n#Port 23\nPort 2222\nX\n");
        assert_eq!(outcome.msg.as_deref(), Some("line replaced"));
        assert!(outcome.diff.unwrap().contains("-Port 24\n+Port 2222\n"));
        unchanged("Port 2222\n", "regexp: '^Port '\nline: Port 2222");
    }

    #[test]
    fn a_present_line_is_left_alone() {
        unchanged("a\nb\n", "line: a");
        unchanged("a\nb\n", "line: b\nregexp: '^nomatch'");
    }

    #[test]
    fn lines_are_added_at_the_end_by_default() {
        let (text, outcome) = converged("a\n", "line: b");
        assert_eq!(text, "a\nb\n");
        assert_eq!(outcome.msg.as_deref(), Some("line added"));
        let (text, _) = converged("a", "line: b");
        assert_eq!(
            text, "a\nb\n",
            "an appended line ends with a newline, as Ansible's"
        );
        let (text, _) = converged("a\nc", "line: b\ninsertbefore: ^c");
        assert_eq!(
            text, "a\nb\nc",
            "a line added inside leaves the last line as it was"
        );
        let (text, _) = converged("a\r\nc\r\n", "line: b\ninsertafter: ^a");
        assert_eq!(text, "a\r\nb\r\nc\r\n", "CRLF files get CRLF lines");
    }

    #[test]
    fn insertafter_and_insertbefore_place_new_lines() {
        let text = "[a]\nx=1\n[b]\ny=1\n[a]\n";
        assert_eq!(
            converged(text, "line: z\ninsertafter: '^\\[a\\]'").0,
            "[a]\nx=1\n[b]\ny=1\n[a]\nz\n"
        );
        assert_eq!(
            converged(text, "line: z\ninsertbefore: '^\\[a\\]'").0,
            "[a]\nx=1\n[b]\ny=1\nz\n[a]\n",
            "before the last match, as Ansible's"
        );
        assert_eq!(
            converged(text, "line: z\ninsertbefore: '^\\[a\\]'\nfirstmatch: true").0,
            "z\n[a]\nx=1\n[b]\ny=1\n[a]\n"
        );
        assert_eq!(
            converged(text, "line: z\ninsertafter: '^\\[a\\]'\nfirstmatch: true").0,
            "[a]\nz\nx=1\n[b]\ny=1\n[a]\n"
        );
        assert_eq!(
            converged(text, "line: z\ninsertafter: '^\\[b\\]'").0,
            "[a]\nx=1\n[b]\nz\ny=1\n[a]\n"
        );
        assert_eq!(
            converged(text, "line: z\ninsertbefore: BOF").0,
            format!("z\n{text}")
        );
        assert_eq!(
            converged(text, "line: z\ninsertafter: EOF").0,
            format!("{text}z\n")
        );
        assert_eq!(
            converged(text, "line: z\ninsertbefore: nomatch").0,
            format!("{text}z\n")
        );
    }

    #[test]
    fn firstmatch_replaces_the_first_matching_line() {
        let (text, _) = converged(
            "Port 22\nPort 24\n",
            "regexp: '^Port '\nline: Port 2222\nfirstmatch: yes",
        );
        assert_eq!(text, "Port 2222\nPort 24\n");
    }

    #[test]
    fn backrefs_build_the_line_from_the_match_and_add_nothing_without_one() {
        let (text, outcome) = converged(
            "listen 80;\nlisten 443 ssl;\n",
            "regexp: '^listen (?P<port>\\d+) (\\w+);'\nline: 'listen \\g<port> \\2 http2; # \\\\1'\nbackrefs: true",
        );
        assert_eq!(text, "listen 80;\nlisten 443 ssl http2; # \\1\n");
        assert_eq!(outcome.msg.as_deref(), Some("line replaced"));
        let (text, _) = converged(
            "key = old\n",
            "regexp: '^(key) = (x)?(o.*)$'\nline: '\\1 = n\\2\\4'\nbackrefs: true",
        );
        assert_eq!(
            text, "key = n\n",
            "groups that matched nothing or do not exist are empty"
        );
        unchanged("a\n", "regexp: '^(b)'\nline: '\\1c'\nbackrefs: true");
        let (dir, path) = file_with("a\n");
        let err = run(
            &LineInFile,
            &task(&path, "line: a\nbackrefs: true"),
            dir.path(),
            true,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("`backrefs` needs `regexp`"),
            "{err}"
        );
    }

    #[test]
    fn absent_removes_every_match() {
        let (text, outcome) = converged("a1\nb\na2\n", "state: absent\nregexp: ^a");
        assert_eq!(text, "b\n");
        assert_eq!(outcome.msg.as_deref(), Some("2 lines removed"));
        let (text, _) = converged("a\nb", "state: absent\nline: b");
        assert_eq!(text, "a", "no trailing newline stays so");
        unchanged("a\n", "state: absent\nline: b");
    }

    #[test]
    fn missing_files_need_create() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new");
        let err = run(&LineInFile, &task(&path, "line: a"), dir.path(), true).unwrap_err();
        assert!(err
            .to_string()
            .ends_with("does not exist; set `create: true` to create it"));
        let outcome = assert_converges(
            &LineInFile,
            &task(&path, "line: a\ncreate: yes\nmode: '0600'"),
            dir.path(),
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "a\n");
        assert!(outcome.diff.unwrap().starts_with("--- /dev/null\n"));
        let gone = dir.path().join("gone");
        let outcome = run(
            &LineInFile,
            &task(&gone, "state: absent\nline: a"),
            dir.path(),
            true,
        )
        .unwrap();
        assert!(!outcome.changed);
    }

    #[test]
    fn mode_is_converged_with_the_line() {
        let (text, outcome) = converged("a\n", "line: a\nmode: '0600'");
        assert_eq!(text, "a\n");
        assert_eq!(outcome.diff.as_deref(), Some("mode: 0644 -> 0600"));
    }

    #[test]
    fn argument_mistakes_fail_without_touching_anything() {
        let (dir, path) = file_with("a\n");
        let before = snapshot(dir.path());
        for (rest, message) in [
            ("regexp: '('", "`regexp` is not a valid regular expression"),
            ("state: present", "`state: present` needs `line`"),
            ("state: absent", "needs `regexp` or `line`"),
            ("line: b\ninsertafter: a\ninsertbefore: b", INSERT_EXCLUSIVE),
            ("line: \"b\\nc\"", "`line` must be a single line"),
        ] {
            let err = run(&LineInFile, &task(&path, rest), dir.path(), true).unwrap_err();
            assert!(err.to_string().contains(message), "{rest}: {err}");
        }
        assert_eq!(snapshot(dir.path()), before);
    }

    #[test]
    fn binary_files_are_refused() {
        let (dir, path) = file_with("");
        fs::write(&path, [0xffu8, 0xfe]).unwrap();
        let err = run(&LineInFile, &task(&path, "line: a"), dir.path(), true).unwrap_err();
        assert!(err
            .to_string()
            .ends_with("is not UTF-8 text; lineinfile edits text files"));
    }

    #[test]
    fn validation_catches_bad_patterns() {
        let base = Path::new(".");
        let err = validate(&LineInFile, "path: /x\nline: a\nregexp: '(a'", base).unwrap_err();
        assert_eq!(err.field_path(), "regexp");
        assert_eq!(err.span.unwrap().line, 3);
        let err = validate(&LineInFile, "path: /x\nline: a\ninsertbefore: '['", base).unwrap_err();
        assert_eq!(err.field_path(), "insertbefore");
        let err = validate(
            &LineInFile,
            "path: /x\nline: a\ninsertafter: a\ninsertbefore: b",
            base,
        )
        .unwrap_err();
        assert_eq!(err.message, INSERT_EXCLUSIVE);
        validate(&LineInFile, "path: /x\nline: a\ninsertafter: EOF", base).unwrap();
        validate(
            &LineInFile,
            "path: /x\nline: a\nregexp: '{{ pattern }}'",
            base,
        )
        .unwrap();
    }
}
