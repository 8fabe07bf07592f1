//! `blockinfile`: keeps a block of lines between two marker lines in a text file, as
//! Ansible's module of the same name: the block replaces what is between the markers
//! if they are there, else goes after the last line `insertafter` matches (or before
//! the last `insertbefore` matches; at the end by default); `state: absent` or an empty
//! block removes it with its markers. The default markers are Ansible's, so blocks an
//! Ansible play wrote are taken over rather than written a second time.

use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;
use weft_taskbook::yaml::Node;
use weft_taskbook::Error;

use crate::files::{arg_error, literal_arg, validate_mode};
use crate::module::{Module, ModuleContext, ModuleError, Outcome};
use crate::text_file::{edit_text_file, Edited, TextFile, WhenMissing};

pub struct BlockInFile;

const DEFAULT_MARKER: &str = "# {mark} ANSIBLE MANAGED BLOCK";
const INSERT_EXCLUSIVE: &str = "`insertafter` and `insertbefore` exclude each other";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockInFileArgs {
    path: PathBuf,
    #[serde(default)]
    block: String,
    /// The marker lines, `{mark}` standing for `marker_begin` or `marker_end`.
    marker: Option<String>,
    marker_begin: Option<String>,
    marker_end: Option<String>,
    /// A regex, or `EOF`: where the block goes when its markers are not there.
    insertafter: Option<String>,
    /// A regex, or `BOF`.
    insertbefore: Option<String>,
    #[serde(default)]
    state: BlockState,
    #[serde(default)]
    create: bool,
    /// An empty line before the block, unless one is there or the block starts the file.
    #[serde(default)]
    prepend_newline: bool,
    /// An empty line after the block, unless one is there or the block ends the file.
    #[serde(default)]
    append_newline: bool,
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
enum BlockState {
    #[default]
    Present,
    Absent,
}

/// Where a block without markers goes.
enum InsertAt {
    End,
    Start,
    /// After the last line that matches (at the end if none does).
    After(Regex),
    /// Before the last line that matches (at the end if none does).
    Before(Regex),
}

impl InsertAt {
    fn from_args(after: Option<&str>, before: Option<&str>) -> Result<InsertAt, String> {
        let compile = |key: &str, pattern: &str| {
            Regex::new(pattern)
                .map_err(|e| format!("`{key}` is not a valid regular expression: {e}"))
        };
        Ok(match (after, before) {
            (Some(_), Some(_)) => return Err(INSERT_EXCLUSIVE.into()),
            (Some("EOF"), None) | (None, None) => InsertAt::End,
            (None, Some("BOF")) => InsertAt::Start,
            (Some(after), None) => InsertAt::After(compile("insertafter", after)?),
            (None, Some(before)) => InsertAt::Before(compile("insertbefore", before)?),
        })
    }

    /// Lines are matched without their ending, so `$` means the end of the line.
    fn index_in(&self, lines: &[String]) -> usize {
        let last_match = |regex: &Regex| {
            lines
                .iter()
                .rposition(|line| regex.is_match(line.trim_end_matches(['\r', '\n'])))
        };
        match self {
            InsertAt::End => lines.len(),
            InsertAt::Start => 0,
            InsertAt::After(regex) => last_match(regex).map_or(lines.len(), |i| i + 1),
            InsertAt::Before(regex) => last_match(regex).unwrap_or(lines.len()),
        }
    }
}

/// What the task asks for, ready to apply to a text.
struct Wanted {
    /// The marker lines and the block, each line with its `\n`; empty to remove.
    block_lines: Vec<String>,
    begin: String,
    end: String,
    insert_at: InsertAt,
    prepend_newline: bool,
    append_newline: bool,
}

impl Wanted {
    fn from_args(args: &BlockInFileArgs) -> Result<Wanted, String> {
        let marker = args.marker.as_deref().unwrap_or(DEFAULT_MARKER);
        let marker_line = |mark: &str| format!("{}\n", marker.replace("{mark}", mark));
        let begin = marker_line(args.marker_begin.as_deref().unwrap_or("BEGIN"));
        let end = marker_line(args.marker_end.as_deref().unwrap_or("END"));
        if begin.matches('\n').count() > 1 || end.matches('\n').count() > 1 {
            return Err("`marker`, `marker_begin` and `marker_end` must be single lines".into());
        }
        if begin == end {
            return Err("the begin and end markers are the same line: give `marker` a `{mark}`, or `marker_begin` and `marker_end` that differ".into());
        }
        let block_lines = match args.state {
            BlockState::Present if !args.block.is_empty() => {
                let mut block = args.block.clone();
                if !block.ends_with('\n') {
                    block.push('\n');
                }
                std::iter::once(begin.clone())
                    .chain(block.split_inclusive('\n').map(str::to_string))
                    .chain(std::iter::once(end.clone()))
                    .collect()
            }
            _ => Vec::new(),
        };
        Ok(Wanted {
            block_lines,
            begin,
            end,
            insert_at: InsertAt::from_args(
                args.insertafter.as_deref(),
                args.insertbefore.as_deref(),
            )?,
            prepend_newline: args.prepend_newline,
            append_newline: args.append_newline,
        })
    }

    /// The text with the block in its place (or gone); `None` when that is the text.
    fn apply_to(&self, text: &str) -> Option<Edited> {
        let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_string).collect();
        let last_index_of =
            |marker: &str, lines: &[String]| lines.iter().rposition(|l| l == marker);
        let mut at = match (
            last_index_of(&self.begin, &lines),
            last_index_of(&self.end, &lines),
        ) {
            (Some(begin), Some(end)) => {
                let (first, last) = (begin.min(end), begin.max(end));
                lines.drain(first..=last);
                first
            }
            _ => self.insert_at.index_in(&lines),
        };
        if at > 0 && !lines[at - 1].ends_with('\n') {
            lines[at - 1].push('\n');
        }
        let present = !self.block_lines.is_empty();
        if present && self.prepend_newline && at > 0 && lines[at - 1] != "\n" {
            lines.insert(at, "\n".into());
            at += 1;
        }
        let after_block = at + self.block_lines.len();
        lines.splice(at..at, self.block_lines.iter().cloned());
        if present && self.append_newline && after_block < lines.len() && lines[after_block] != "\n"
        {
            lines.insert(after_block, "\n".into());
        }
        let edited = lines.concat();
        if edited == text {
            return None;
        }
        let msg = if present {
            "block inserted"
        } else {
            "block removed"
        };
        Some(Edited {
            text: edited,
            msg: msg.into(),
        })
    }
}

impl Module for BlockInFile {
    const NAME: &'static str = "blockinfile";
    type Args = BlockInFileArgs;

    fn validate(args: &Node, _base_dir: &Path) -> Result<(), Error> {
        validate_mode(args)?;
        let literal = |key| literal_arg(args, key).map(|(_, value)| value);
        if let Err(message) = InsertAt::from_args(literal("insertafter"), literal("insertbefore")) {
            let key = if args.get("insertbefore").is_some() {
                "insertbefore"
            } else {
                "insertafter"
            };
            let node = args.get(key).unwrap_or(args);
            return Err(arg_error(node, key, message));
        }
        Ok(())
    }

    fn check_apply(
        &self,
        args: BlockInFileArgs,
        context: &mut ModuleContext,
        apply: bool,
    ) -> Result<Outcome, ModuleError> {
        let wanted = Wanted::from_args(&args).map_err(ModuleError::Failed)?;
        let when_missing = match args.state {
            BlockState::Absent => WhenMissing::NothingToDo,
            BlockState::Present if args.create => WhenMissing::Create,
            BlockState::Present => WhenMissing::Fail {
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
            Ok(wanted.apply_to(text))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::files::test_support::{assert_converges, run, snapshot, validate};

    fn file_with(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn converged(text: &str, rest: &str) -> (String, Outcome) {
        let (dir, path) = file_with(text);
        let task = format!("path: {}\n{rest}", path.display());
        let outcome = assert_converges(&BlockInFile, &task, dir.path());
        (fs::read_to_string(&path).unwrap(), outcome)
    }

    fn unchanged(text: &str, rest: &str) {
        let (dir, path) = file_with(text);
        let task = format!("path: {}\n{rest}", path.display());
        let outcome = run(&BlockInFile, &task, dir.path(), true).unwrap();
        assert!(!outcome.changed, "{rest}: {:?}", outcome.diff);
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
    }

    const BLOCK: &str = "# BEGIN ANSIBLE MANAGED BLOCK\nx\ny\n# END ANSIBLE MANAGED BLOCK\n";

    #[test]
    fn a_block_goes_at_the_end_with_its_markers_and_stays_there() {
        let (text, outcome) = converged("a\n", "block: \"x\\ny\"");
        assert_eq!(text, format!("a\n{BLOCK}"));
        assert_eq!(outcome.msg.as_deref(), Some("block inserted"));
        unchanged(&text, "block: \"x\\ny\\n\"");
        let (text, _) = converged("a", "block: \"x\\ny\"");
        assert_eq!(
            text,
            format!("a\n{BLOCK}"),
            "the last line gets its newline"
        );
    }

    #[test]
    fn the_block_between_the_markers_is_replaced_in_place() {
        let old = "a\n# BEGIN ANSIBLE MANAGED BLOCK\nold\n# END ANSIBLE MANAGED BLOCK\nb\n";
        let (text, _) = converged(old, "block: \"x\\ny\"\ninsertbefore: BOF");
        assert_eq!(
            text,
            format!("a\n{BLOCK}b\n"),
            "markers found: insert* is ignored"
        );
    }

    #[test]
    fn insertafter_and_insertbefore_take_the_last_match() {
        let text = "[a]\n[b]\n[a]\nz\n";
        assert_eq!(
            converged(text, "block: x\ninsertafter: '^\\[a\\]$'").0,
            "[a]\n[b]\n[a]\n# BEGIN ANSIBLE MANAGED BLOCK\nx\n# END ANSIBLE MANAGED BLOCK\nz\n"
        );
        assert_eq!(
            converged(text, "block: x\ninsertbefore: '^\\[a\\]'").0,
            "[a]\n[b]\n# BEGIN ANSIBLE MANAGED BLOCK\nx\n# END ANSIBLE MANAGED BLOCK\n[a]\nz\n"
        );
        assert_eq!(
            converged(text, "block: x\ninsertbefore: BOF").0,
            format!("# BEGIN ANSIBLE MANAGED BLOCK\nx\n# END ANSIBLE MANAGED BLOCK\n{text}")
        );
        assert_eq!(
            converged(text, "block: x\ninsertafter: nomatch").0,
            format!("{text}# BEGIN ANSIBLE MANAGED BLOCK\nx\n# END ANSIBLE MANAGED BLOCK\n")
        );
    }

    #[test]
    fn absent_or_an_empty_block_removes_it_with_its_markers() {
        let with_block = format!("a\n{BLOCK}b\n");
        let (text, outcome) = converged(&with_block, "state: absent");
        assert_eq!(text, "a\nb\n");
        assert_eq!(outcome.msg.as_deref(), Some("block removed"));
        assert_eq!(converged(&with_block, "block: ''").0, "a\nb\n");
        unchanged("a\n", "state: absent");
    }

    #[test]
    fn custom_markers_and_newlines_around_the_block() {
        let (text, _) = converged(
            "a\nb\n",
            "block: x\nmarker: '// {mark} app'\nmarker_begin: start\nmarker_end: stop\ninsertafter: ^a\nprepend_newline: true\nappend_newline: true",
        );
        assert_eq!(text, "a\n\n// start app\nx\n// stop app\n\nb\n");
    }

    #[test]
    fn missing_files_need_create_and_mistakes_touch_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new");
        let task = format!("path: {}\nblock: x", path.display());
        let err = run(&BlockInFile, &task, dir.path(), true).unwrap_err();
        assert!(
            err.to_string().ends_with("set `create: true` to create it"),
            "{err}"
        );
        let before = snapshot(dir.path());
        for (rest, message) in [
            (
                "marker: same",
                "the begin and end markers are the same line",
            ),
            ("marker: \"a\\n{mark}\"", "must be single lines"),
            ("insertafter: a\ninsertbefore: b", INSERT_EXCLUSIVE),
        ] {
            let err = run(&BlockInFile, &format!("{task}\n{rest}"), dir.path(), true).unwrap_err();
            assert!(err.to_string().contains(message), "{rest}: {err}");
        }
        assert_eq!(snapshot(dir.path()), before);
        assert_converges(&BlockInFile, &format!("{task}\ncreate: true"), dir.path());
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "# BEGIN ANSIBLE MANAGED BLOCK\nx\n# END ANSIBLE MANAGED BLOCK\n"
        );
        let err = validate(&BlockInFile, "path: /x\ninsertafter: '['", Path::new(".")).unwrap_err();
        assert_eq!(err.field_path(), "insertafter");
    }
}
