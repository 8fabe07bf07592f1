//! The one error type of this crate: every user-facing problem names where it is
//! (file, line, column), which field, what was expected and what to do about it.

use std::fmt;
use std::path::{Path, PathBuf};

/// A position in a source file, 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Span {
    pub line: usize,
    pub col: usize,
}

/// One segment of the path from a document's root to the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSegment {
    Key(String),
    Index(usize),
}

/// Renders a field path the way users write it: `spec.steps[0].tasks[2].file.mode`.
pub fn format_field_path(path: &[PathSegment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            PathSegment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            PathSegment::Index(index) => {
                out.push_str(&format!("[{index}]"));
            }
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The file the problem is in; `None` for input that came from no file (`-e K=V`).
    pub file: Option<PathBuf>,
    /// `None` when the problem is with the file as a whole (unreadable, too large).
    pub span: Option<Span>,
    pub path: Vec<PathSegment>,
    pub message: String,
    pub hint: Option<String>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(message: impl Into<String>) -> Self {
        Error {
            file: None,
            span: None,
            path: Vec::new(),
            message: message.into(),
            hint: None,
        }
    }

    pub fn at(mut self, span: Span) -> Self {
        self.span.get_or_insert(span);
        self
    }

    pub fn in_file(mut self, file: &Path) -> Self {
        self.file.get_or_insert_with(|| file.to_path_buf());
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Prefixes the field path (errors bubble up from the innermost field).
    pub fn under(mut self, segment: PathSegment) -> Self {
        self.path.insert(0, segment);
        self
    }

    pub fn under_path(mut self, prefix: &[PathSegment]) -> Self {
        let mut path = prefix.to_vec();
        path.append(&mut self.path);
        self.path = path;
        self
    }

    pub fn field_path(&self) -> String {
        format_field_path(&self.path)
    }

    /// The `file:line:col` prefix, as compilers print it.
    pub fn location(&self) -> String {
        let file = self
            .file
            .as_deref()
            .map(|f| f.display().to_string())
            .unwrap_or_else(|| "<input>".to_string());
        match self.span {
            Some(span) => format!("{file}:{}:{}", span.line, span.col),
            None => file,
        }
    }

    /// The error with its source line when the file can be read again, for terminals.
    pub fn render_for_terminal(&self) -> String {
        let source = self
            .span
            .and(self.file.as_deref())
            .and_then(|file| std::fs::metadata(file).ok().map(|m| (file, m)))
            .filter(|(_, m)| m.is_file() && m.len() <= crate::yaml::MAX_SOURCE_BYTES as u64)
            .and_then(|(file, _)| std::fs::read_to_string(file).ok());
        match source {
            Some(source) => self.render_with_source(&source),
            None => self.to_string(),
        }
    }

    /// The error with the offending source line and a caret under the column, for terminals.
    pub fn render_with_source(&self, source: &str) -> String {
        let mut out = self.to_string();
        if let Some(span) = self.span {
            if let Some(line) = source.lines().nth(span.line.saturating_sub(1)) {
                let gutter = span.line.to_string();
                let pad = " ".repeat(gutter.len());
                let caret_pad: String = line
                    .chars()
                    .take(span.col.saturating_sub(1))
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                out.push_str(&format!(
                    "\n{pad} |\n{gutter} | {line}\n{pad} | {caret_pad}^"
                ));
            }
        }
        out
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.file.is_some() || self.span.is_some() {
            write!(f, "{}: ", self.location())?;
        }
        if !self.path.is_empty() {
            write!(f, "`{}`: ", self.field_path())?;
        }
        write!(f, "{}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// "did you mean" for a misspelled name, when one candidate is close enough to be a likely typo.
pub fn closest_match<'a>(
    wanted: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::jaro_winkler(wanted, candidate), candidate))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

/// The hint for an unknown name: the likely typo if there is one, otherwise the choices.
pub fn unknown_name_hint(wanted: &str, candidates: &[&str]) -> String {
    match closest_match(wanted, candidates.iter().copied()) {
        Some(candidate) => format!("did you mean `{candidate}`?"),
        None if candidates.is_empty() => "nothing is accepted here".to_string(),
        None => format!(
            "expected one of: {}",
            candidates
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_match_finds_typos_only() {
        assert_eq!(
            closest_match("tempalte", ["template", "copy"]),
            Some("template")
        );
        assert_eq!(closest_match("zzz", ["template", "copy"]), None);
    }

    #[test]
    fn render_points_at_the_column() {
        let err = Error::new("bad")
            .at(Span { line: 2, col: 5 })
            .in_file(Path::new("a.yml"));
        let text = err.render_with_source("x: 1\ny: [oops\n");
        assert!(text.starts_with("a.yml:2:5: bad"), "{text}");
        assert!(text.ends_with("2 | y: [oops\n  |     ^"), "{text}");
    }
}
