//! `find`: registers the files under some folders that match names, an age, a size or
//! a content (Ansible's `find`: `files`, each described as `stat` describes it,
//! `matched`, `examined`, `skipped_paths`). Names are matched as shell globs (or, with
//! `use_regex`, regular expressions from the name's start) against the base name. It
//! only reads, so it runs in check mode too and never reports a change.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use regex::Regex;
use serde::Deserialize;
use serde_json::{Map, Value};
use walkdir::WalkDir;
use weft_taskbook::task::StringList;

use crate::module::{Module, ModuleContext, ModuleError, Outcome};
use crate::stat::{describe, open_regular};

pub struct Find;

/// More would make a result too large to register and send; a narrower search is
/// what the task needs then.
const MAX_MATCHES: usize = 10_000;
/// `contains` reads at most this much of each file.
const MAX_CONTENT_BYTES: u64 = 64 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindArgs {
    /// Folders to search: a list, or one string of comma-separated paths.
    paths: StringList,
    /// Base names to take (all when none).
    patterns: Option<StringList>,
    /// Base names to leave out.
    excludes: Option<StringList>,
    #[serde(default)]
    use_regex: bool,
    /// A regular expression one line of a file must match from its start.
    contains: Option<String>,
    /// `2d`: at least this old; `-2d`: at most (units s, m, h, d, w; seconds bare).
    age: Option<String>,
    #[serde(default)]
    age_stamp: AgeStamp,
    /// `10m`: at least this large; `-10m`: at most (units b, k, m, g, t; bytes bare).
    size: Option<String>,
    #[serde(default)]
    file_type: FileType,
    #[serde(default)]
    recurse: bool,
    /// How deep `recurse` goes (1: the folder's own entries).
    depth: Option<usize>,
    /// Take names starting with `.` too.
    #[serde(default)]
    hidden: bool,
    /// Follow symbolic links to folders while recursing.
    #[serde(default)]
    follow: bool,
    #[serde(default)]
    get_checksum: bool,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum AgeStamp {
    #[default]
    Mtime,
    Atime,
    Ctime,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FileType {
    #[default]
    File,
    Directory,
    Link,
    Any,
}

/// A threshold: at least `amount` when positive, at most when negative.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bound {
    amount: u64,
    at_most: bool,
}

impl Bound {
    fn parse(key: &str, text: &str, units: &[(char, u64)]) -> Result<Bound, String> {
        let text = text.trim();
        let (at_most, unsigned) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        let not_a_number = || format!("`{key}: {text}` is not a number with an optional unit");
        let (digits, unit) = match unsigned.char_indices().last() {
            Some((at, unit)) if unit.is_ascii_alphabetic() => (&unsigned[..at], Some(unit)),
            _ => (unsigned, None),
        };
        let number = digits.parse::<u64>().map_err(|_| not_a_number())?;
        let multiplier = match unit {
            None => 1,
            Some(unit) => {
                let lower = unit.to_ascii_lowercase();
                let Some((_, multiplier)) = units.iter().find(|(u, _)| *u == lower) else {
                    let known: String = units.iter().map(|(u, _)| *u).collect();
                    return Err(format!(
                        "`{key}: {text}`: unknown unit `{unit}`; expected one of {known}"
                    ));
                };
                *multiplier
            }
        };
        let amount = number.checked_mul(multiplier).ok_or_else(not_a_number)?;
        Ok(Bound { amount, at_most })
    }

    fn admits(&self, value: u64) -> bool {
        if self.at_most {
            value <= self.amount
        } else {
            value >= self.amount
        }
    }
}

const AGE_UNITS: &[(char, u64)] = &[
    ('s', 1),
    ('m', 60),
    ('h', 3600),
    ('d', 86400),
    ('w', 604800),
];
const SIZE_UNITS: &[(char, u64)] = &[
    ('b', 1),
    ('k', 1 << 10),
    ('m', 1 << 20),
    ('g', 1 << 30),
    ('t', 1 << 40),
];

/// Which base names a search takes.
enum Names {
    Globs(GlobSet),
    Regexes(Vec<Regex>),
}

impl Names {
    fn new(key: &str, patterns: &[String], use_regex: bool) -> Result<Names, String> {
        if use_regex {
            let compiled = patterns
                .iter()
                .map(|pattern| {
                    Regex::new(&format!("^(?:{pattern})")).map_err(|e| {
                        format!("`{key}`: `{pattern}` is not a valid regular expression: {e}")
                    })
                })
                .collect::<Result<_, _>>()?;
            return Ok(Names::Regexes(compiled));
        }
        let mut set = GlobSetBuilder::new();
        for pattern in patterns {
            let glob = GlobBuilder::new(pattern)
                .backslash_escape(true)
                .build()
                .map_err(|e| format!("`{key}`: `{pattern}` is not a valid glob: {e}"))?;
            set.add(glob);
        }
        set.build()
            .map(Names::Globs)
            .map_err(|e| format!("`{key}`: {e}"))
    }

    fn is_empty(&self) -> bool {
        match self {
            Names::Globs(set) => set.is_empty(),
            Names::Regexes(regexes) => regexes.is_empty(),
        }
    }

    fn take(&self, name: &str) -> bool {
        match self {
            Names::Globs(set) => set.is_match(name),
            Names::Regexes(regexes) => regexes.iter().any(|regex| regex.is_match(name)),
        }
    }
}

/// Everything an entry must satisfy.
struct Filter {
    patterns: Names,
    excludes: Names,
    contains: Option<Regex>,
    age: Option<Bound>,
    age_stamp: AgeStamp,
    size: Option<Bound>,
    file_type: FileType,
    hidden: bool,
    now: u64,
}

impl Filter {
    fn from_args(args: &FindArgs) -> Result<Filter, String> {
        let list = |list: &Option<StringList>| {
            list.as_ref()
                .map(StringList::comma_separated_items)
                .unwrap_or_default()
        };
        Ok(Filter {
            patterns: Names::new("patterns", &list(&args.patterns), args.use_regex)?,
            excludes: Names::new("excludes", &list(&args.excludes), args.use_regex)?,
            contains: args
                .contains
                .as_deref()
                .map(|pattern| {
                    Regex::new(&format!("^(?:{pattern})"))
                        .map_err(|e| format!("`contains` is not a valid regular expression: {e}"))
                })
                .transpose()?,
            age: args
                .age
                .as_deref()
                .map(|age| Bound::parse("age", age, AGE_UNITS))
                .transpose()?,
            age_stamp: args.age_stamp,
            size: args
                .size
                .as_deref()
                .map(|size| Bound::parse("size", size, SIZE_UNITS))
                .transpose()?,
            file_type: args.file_type,
            hidden: args.hidden,
            now: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        })
    }

    fn takes(&self, path: &Path, metadata: &std::fs::Metadata) -> Result<bool, ModuleError> {
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy())
            .unwrap_or_default();
        let kind = metadata.file_type();
        let type_fits = match self.file_type {
            FileType::File => kind.is_file(),
            FileType::Directory => kind.is_dir(),
            FileType::Link => kind.is_symlink(),
            FileType::Any => true,
        };
        if !type_fits
            || (!self.hidden && name.starts_with('.'))
            || !(self.patterns.is_empty() || self.patterns.take(&name))
            || self.excludes.take(&name)
        {
            return Ok(false);
        }
        if let Some(age) = self.age {
            let stamp = match self.age_stamp {
                AgeStamp::Mtime => metadata.mtime(),
                AgeStamp::Atime => metadata.atime(),
                AgeStamp::Ctime => metadata.ctime(),
            };
            if !age.admits(self.now.saturating_sub(stamp.max(0) as u64)) {
                return Ok(false);
            }
        }
        if let Some(size) = self.size {
            if kind.is_file() && !size.admits(metadata.size()) {
                return Ok(false);
            }
        }
        match &self.contains {
            Some(contains) if kind.is_file() => has_line_matching(path, contains),
            Some(_) => Ok(false),
            None => Ok(true),
        }
    }
}

fn has_line_matching(path: &Path, regex: &Regex) -> Result<bool, ModuleError> {
    let file = open_regular(path)?;
    let mut lines = BufReader::new(file.take(MAX_CONTENT_BYTES)).split(b'\n');
    Ok(lines.any(|line| line.is_ok_and(|line| regex.is_match(&String::from_utf8_lossy(&line)))))
}

impl Module for Find {
    const NAME: &'static str = "find";
    type Args = FindArgs;

    fn check_apply(
        &self,
        args: FindArgs,
        context: &mut ModuleContext,
        _apply: bool,
    ) -> Result<Outcome, ModuleError> {
        let filter = Filter::from_args(&args).map_err(ModuleError::Failed)?;
        let max_depth = match (args.recurse, args.depth) {
            (false, _) => 1,
            (true, Some(depth)) => depth.max(1),
            (true, None) => usize::MAX,
        };
        let mut files = Vec::new();
        let mut examined = 0usize;
        let mut skipped = Map::new();
        for root in args.paths.comma_separated_items() {
            let walk = WalkDir::new(&root)
                .min_depth(1)
                .max_depth(max_depth)
                .follow_links(args.follow)
                .sort_by_file_name();
            for entry in walk {
                if context
                    .deadline
                    .is_some_and(|deadline| Instant::now() >= deadline)
                {
                    return Err(ModuleError::Failed(format!(
                        "the search took past the task's timeout after {examined} entries; narrow `paths` or `depth`"
                    )));
                }
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(error) => {
                        let path = error.path().unwrap_or(Path::new(&root));
                        skipped.insert(path.display().to_string(), error.to_string().into());
                        continue;
                    }
                };
                examined += 1;
                let metadata = match entry.metadata() {
                    Ok(metadata) => metadata,
                    Err(error) => {
                        skipped
                            .insert(entry.path().display().to_string(), error.to_string().into());
                        continue;
                    }
                };
                if !filter.takes(entry.path(), &metadata)? {
                    continue;
                }
                if files.len() == MAX_MATCHES {
                    return Err(ModuleError::Failed(format!(
                        "more than {MAX_MATCHES} matches; narrow `paths`, `patterns` or `depth`"
                    )));
                }
                let described =
                    describe(entry.path(), &metadata, args.get_checksum, context.deadline)?;
                files.push(Value::Object(described));
            }
        }
        Ok(Outcome::unchanged()
            .with_msg(format!("{} of {examined} entries matched", files.len()))
            .with_output("matched", files.len())
            .with_output("examined", examined)
            .with_output("files", files)
            .with_output("skipped_paths", Value::Object(skipped)))
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::time::Duration;

    use super::*;
    use crate::files::test_support::run;

    /// a.log (5 bytes), b.txt (2000 bytes, says "error: disk"), .hidden.log, sub/c.log,
    /// sub/deeper/d.log, and a link l.log to a.log.
    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("sub/deeper")).unwrap();
        fs::write(root.join("a.log"), "hello").unwrap();
        fs::write(
            root.join("b.txt"),
            format!("ok\nerror: disk\n{}", "x".repeat(1985)),
        )
        .unwrap();
        fs::write(root.join(".hidden.log"), "").unwrap();
        fs::write(root.join("sub/c.log"), "").unwrap();
        fs::write(root.join("sub/deeper/d.log"), "").unwrap();
        std::os::unix::fs::symlink(root.join("a.log"), root.join("l.log")).unwrap();
        dir
    }

    /// The found paths relative to the tree, and the whole result.
    fn found(dir: &Path, rest: &str) -> (Vec<String>, Map<String, Value>) {
        let task = format!("paths: {}\n{rest}", dir.display());
        let outcome = run(&Find, &task, dir, false).unwrap();
        assert!(!outcome.changed);
        let paths = outcome.output["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|file| {
                let path = file["path"].as_str().unwrap();
                path.strip_prefix(&format!("{}/", dir.display()))
                    .unwrap()
                    .to_string()
            })
            .collect();
        (paths, outcome.output)
    }

    #[test]
    fn globs_match_base_names_of_files_without_hidden_ones_by_default() {
        let dir = tree();
        let (paths, output) = found(dir.path(), "patterns: '*.log'");
        assert_eq!(
            paths,
            ["a.log"],
            "a link is not a file, a folder's files need recurse"
        );
        assert_eq!(output["matched"], 1);
        assert_eq!(
            found(dir.path(), "patterns: '*.log'\nhidden: true").0,
            [".hidden.log", "a.log"]
        );
        assert_eq!(
            found(dir.path(), "patterns: '*.log'\nrecurse: true").0,
            ["a.log", "sub/c.log", "sub/deeper/d.log"]
        );
        assert_eq!(
            found(dir.path(), "patterns: '*.log'\nrecurse: true\ndepth: 2").0,
            ["a.log", "sub/c.log"]
        );
        assert_eq!(
            found(dir.path(), "patterns: '*.log,*.txt'\nexcludes: 'a*'").0,
            ["b.txt"]
        );
        assert_eq!(
            found(dir.path(), "patterns: '^[ab]\\.'\nuse_regex: true").0,
            ["a.log", "b.txt"]
        );
    }

    #[test]
    fn file_types_sizes_ages_and_contents_filter() {
        let dir = tree();
        assert_eq!(found(dir.path(), "file_type: directory").0, ["sub"]);
        assert_eq!(found(dir.path(), "file_type: link").0, ["l.log"]);
        assert_eq!(found(dir.path(), "size: 1k").0, ["b.txt"]);
        assert_eq!(
            found(dir.path(), "size: -1k\npatterns: '[ab]*'").0,
            ["a.log"]
        );
        assert_eq!(found(dir.path(), "contains: 'error:'").0, ["b.txt"]);
        assert!(
            found(dir.path(), "contains: 'disk'").0.is_empty(),
            "from the line's start"
        );
        assert!(
            found(dir.path(), "age: 1h").0.is_empty(),
            "everything is new"
        );
        let old = SystemTime::now() - Duration::from_secs(3 * 86400);
        fs::File::options()
            .write(true)
            .open(dir.path().join("a.log"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(found(dir.path(), "age: 2d").0, ["a.log"]);
        assert_eq!(
            found(dir.path(), "age: -2d\npatterns: '*.log'").0,
            Vec::<String>::new()
        );
    }

    #[test]
    fn checksums_on_request_and_missing_folders_are_skipped_not_fatal() {
        let dir = tree();
        let (_, output) = found(dir.path(), "patterns: a.log\nget_checksum: true");
        assert_eq!(
            output["files"][0]["checksum"],
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        let missing = dir.path().join("none");
        let task = format!("paths: [{}, {}]", missing.display(), dir.path().display());
        let outcome = run(&Find, &task, dir.path(), false).unwrap();
        assert_eq!(outcome.output["matched"], 2);
        assert!(outcome.output["skipped_paths"]
            .as_object()
            .unwrap()
            .contains_key(&missing.display().to_string()));
    }

    #[test]
    fn bad_bounds_and_patterns_say_what_was_expected() {
        let dir = tree();
        for (rest, message) in [
            ("age: 2y", "unknown unit `y`; expected one of smhdw"),
            ("size: lots", "is not a number with an optional unit"),
            (
                "patterns: '['\nuse_regex: true",
                "is not a valid regular expression",
            ),
            ("patterns: 'a[' ", "is not a valid glob"),
        ] {
            let task = format!("paths: {}\n{rest}", dir.path().display());
            let err = run(&Find, &task, dir.path(), false).unwrap_err();
            assert!(err.to_string().contains(message), "{rest}: {err}");
        }
    }
}
