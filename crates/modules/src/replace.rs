//! `replace`: replaces every match of a regular expression in a text file, as Ansible's
//! module of the same name: `^` and `$` match at each line, `replace` takes the
//! groups as `\1` or `\g<name>`, and `after`/`before` confine the replacements to the
//! text between their matches (the text after the first match of `after`, up to the
//! first match of `before` after it).

use std::path::{Path, PathBuf};

use regex::{Regex, RegexBuilder};
use serde::Deserialize;
use weft_taskbook::yaml::Node;
use weft_taskbook::Error;

use crate::backrefs::expand_backrefs;
use crate::files::{arg_error, literal_arg, validate_mode};
use crate::module::{Module, ModuleContext, ModuleError, Outcome};
use crate::text_file::{edit_text_file, Edited, TextFile, WhenMissing};

pub struct Replace;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaceArgs {
    path: PathBuf,
    regexp: String,
    /// What each match becomes; empty removes the matches.
    #[serde(default)]
    replace: String,
    after: Option<String>,
    before: Option<String>,
    mode: Option<String>,
    owner: Option<String>,
    group: Option<String>,
    #[serde(default)]
    backup: bool,
    /// Edit the file a symbolic link at `path` points to, instead of refusing.
    #[serde(default)]
    follow: bool,
}

/// The name of the group that holds the text `after` and `before` enclose.
const SECTION: &str = "weft_section";

fn compile(key: &str, pattern: &str, builder: impl Fn(&mut RegexBuilder)) -> Result<Regex, String> {
    let mut regex = RegexBuilder::new(pattern);
    builder(&mut regex);
    regex
        .build()
        .map_err(|e| format!("`{key}` is not a valid regular expression: {e}"))
}

fn compile_regexp(pattern: &str) -> Result<Regex, String> {
    compile("regexp", pattern, |regex| {
        regex.multi_line(true);
    })
}

/// The text between `after` and `before`, as Ansible's `(after)(?P<section>.*?)(before)`
/// with `.` matching newlines; `.*` to the end (or from the start) when one is missing.
fn compile_section(after: Option<&str>, before: Option<&str>) -> Result<Option<Regex>, String> {
    let pattern = match (after, before) {
        (None, None) => return Ok(None),
        (Some(after), Some(before)) => format!("(?:{after})(?P<{SECTION}>.*?)(?:{before})"),
        (Some(after), None) => format!("(?:{after})(?P<{SECTION}>.*)"),
        (None, Some(before)) => format!("(?P<{SECTION}>.*)(?:{before})"),
    };
    compile("after` or `before", &pattern, |regex| {
        regex.dot_matches_new_line(true);
    })
    .map(Some)
}

/// Every match of `regexp` in `text` replaced; how many there were.
fn replace_all(regexp: &Regex, text: &str, replacement: &str) -> (String, usize) {
    let mut replaced = String::with_capacity(text.len());
    let mut end_of_last = 0;
    let mut count = 0;
    for captures in regexp.captures_iter(text) {
        let whole = captures.get(0).expect("group 0 is the whole match");
        replaced.push_str(&text[end_of_last..whole.start()]);
        replaced.push_str(&expand_backrefs(&captures, replacement));
        end_of_last = whole.end();
        count += 1;
    }
    replaced.push_str(&text[end_of_last..]);
    (replaced, count)
}

impl Module for Replace {
    const NAME: &'static str = "replace";
    type Args = ReplaceArgs;

    fn validate(args: &Node, _base_dir: &Path) -> Result<(), Error> {
        validate_mode(args)?;
        if let Some((node, pattern)) = literal_arg(args, "regexp") {
            compile_regexp(pattern).map_err(|message| arg_error(node, "regexp", message))?;
        }
        for key in ["after", "before"] {
            if let Some((node, pattern)) = literal_arg(args, key) {
                compile(key, pattern, |_| {}).map_err(|message| arg_error(node, key, message))?;
            }
        }
        Ok(())
    }

    fn check_apply(
        &self,
        args: ReplaceArgs,
        context: &mut ModuleContext,
        apply: bool,
    ) -> Result<Outcome, ModuleError> {
        let regexp = compile_regexp(&args.regexp).map_err(ModuleError::Failed)?;
        let section = compile_section(args.after.as_deref(), args.before.as_deref())
            .map_err(ModuleError::Failed)?;
        let file = TextFile {
            path: &args.path,
            mode: args.mode.as_deref(),
            owner: args.owner.as_deref(),
            group: args.group.as_deref(),
            backup: args.backup,
            follow: args.follow,
        };
        let when_missing = WhenMissing::Fail {
            hint: "`replace` edits files that exist (`copy` or `lineinfile` with `create: true` make one)",
        };
        edit_text_file(Self::NAME, &file, when_missing, context, apply, |text| {
            let range = match &section {
                None => 0..text.len(),
                Some(section) => match section.captures(text).and_then(|c| c.name(SECTION)) {
                    Some(found) => found.range(),
                    None => {
                        return Ok(Some(Edited {
                            text: text.to_string(),
                            msg: "`after`/`before` matched nothing: nothing replaced".into(),
                        }))
                    }
                },
            };
            let section_text = &text[range.clone()];
            let (replaced, count) = replace_all(&regexp, section_text, &args.replace);
            if replaced == section_text {
                return Ok(None);
            }
            let edited = [&text[..range.start], &replaced, &text[range.end..]].concat();
            Ok(Some(Edited {
                text: edited,
                msg: format!("{count} replacements made"),
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::files::test_support::{assert_converges, run, snapshot, validate};

    fn replaced(text: &str, rest: &str) -> (String, Outcome) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, text).unwrap();
        let task = format!("path: {}\n{rest}", path.display());
        let outcome = assert_converges(&Replace, &task, dir.path());
        (fs::read_to_string(&path).unwrap(), outcome)
    }

    #[test]
    fn every_match_is_replaced_with_its_groups() {
        let (text, outcome) = replaced(
            "host old.example.com\nhost old.example.org\nother old.x\n",
            "regexp: '^host old\\.(\\w+)\\.(?P<tld>\\w+)$'\nreplace: 'host new.\\1.\\g<tld>'",
        );
        assert_eq!(
            text,
            "host new.example.com\nhost new.example.org\nother old.x\n"
        );
        assert_eq!(outcome.msg.as_deref(), Some("2 replacements made"));
        assert!(outcome.diff.unwrap().contains("+host new.example.org"));
    }

    #[test]
    fn an_empty_replace_removes_the_matches() {
        let (text, _) = replaced("a # x\nb # y\n", "regexp: ' # .*$'");
        assert_eq!(text, "a\nb\n");
    }

    #[test]
    fn after_and_before_confine_the_replacements() {
        let text = "x=1\n[main]\nx=1\nx=1\n[other]\nx=1\n";
        let rest = "regexp: '^x=1$'\nreplace: x=2";
        assert_eq!(
            replaced(
                text,
                &format!("{rest}\nafter: '\\[main\\]'\nbefore: '\\[other\\]'")
            )
            .0,
            "x=1\n[main]\nx=2\nx=2\n[other]\nx=1\n"
        );
        assert_eq!(
            replaced(text, &format!("{rest}\nafter: '\\[other\\]'")).0,
            "x=1\n[main]\nx=1\nx=1\n[other]\nx=2\n"
        );
        assert_eq!(
            replaced(text, &format!("{rest}\nbefore: '\\[main\\]'")).0,
            "x=2\n[main]\nx=1\nx=1\n[other]\nx=1\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, text).unwrap();
        let task = format!("path: {}\n{rest}\nafter: nowhere", path.display());
        let outcome = run(&Replace, &task, dir.path(), true).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
        assert!(!outcome.changed);
        assert!(outcome.msg.unwrap().contains("matched nothing"));
    }

    #[test]
    fn a_missing_file_or_a_bad_pattern_fails_and_touches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let before = snapshot(dir.path());
        let missing = format!("path: {}\nregexp: a", dir.path().join("none").display());
        let err = run(&Replace, &missing, dir.path(), true).unwrap_err();
        assert!(err
            .to_string()
            .contains("does not exist; `replace` edits files that exist"));
        let bad = format!("path: {}\nregexp: '('", dir.path().join("none").display());
        let err = run(&Replace, &bad, dir.path(), true).unwrap_err();
        assert!(err
            .to_string()
            .contains("`regexp` is not a valid regular expression"));
        assert_eq!(snapshot(dir.path()), before);
        let err =
            validate(&Replace, "path: /x\nregexp: a\nafter: '['", Path::new(".")).unwrap_err();
        assert_eq!(err.field_path(), "after");
        assert_eq!(err.span.unwrap().line, 3);
    }
}
