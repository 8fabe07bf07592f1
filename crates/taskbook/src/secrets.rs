//! Secrets in tasks: which ones a text reads (`secrets.db.password`,
//! `secrets["db-main"].password`), so the master sends a node only those, and masking
//! their values wherever they would otherwise show (results, diffs, registered values).

use std::collections::BTreeSet;

use aho_corasick::{AhoCorasick, MatchKind};
use serde_json::Value;

use crate::report::TaskResult;

/// What every secret value is replaced with.
pub const MASK: &str = "********";

/// Values shorter than this are not masked: replacing every `1` or `a` in a report
/// would hide everything and protect nothing.
const MIN_MASKED_CHARS: usize = 3;

/// The names of the Secrets `text` reads.
pub fn secret_references(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("secrets") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "secrets".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let name: String = if let Some(dotted) = rest.strip_prefix('.') {
            dotted
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        } else if let Some(indexed) = rest.strip_prefix('[') {
            let Some(quote) = indexed.chars().next().filter(|c| *c == '"' || *c == '\'') else {
                continue;
            };
            indexed[1..].chars().take_while(|c| *c != quote).collect()
        } else {
            continue;
        };
        if !name.is_empty() {
            names.insert(name);
        }
    }
    names
}

/// What a diff becomes when it would show a secret: its lines are the secret's lines.
pub const HIDDEN_CONTENT: &str = "(content hidden: it holds a secret)";

/// Finds every secret value, and every line of 3+ characters of a multi-line one, in
/// the text weft shows or stores, and masks it. A diff splits a private key into
/// `+line`s: each line is masked on its own, so none of it shows.
#[derive(Debug, Clone, Default)]
pub struct SecretMask {
    matcher: Option<AhoCorasick>,
}

impl SecretMask {
    /// The mask for `{name: {key: value}}`, as a step's secrets arrive.
    pub fn new(secrets: &Value) -> Self {
        let values = secrets
            .as_object()
            .into_iter()
            .flat_map(|by_name| by_name.values())
            .filter_map(Value::as_object)
            .flat_map(|keys| keys.values())
            .filter_map(Value::as_str);
        Self::of_values(values)
    }

    /// The mask for these values.
    pub fn of_values<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut patterns = BTreeSet::new();
        for value in values {
            patterns.insert(value);
            if value.contains('\n') {
                patterns.extend(value.lines().map(str::trim));
            }
        }
        patterns.retain(|pattern| pattern.chars().count() >= MIN_MASKED_CHARS);
        if patterns.is_empty() {
            return SecretMask::default();
        }
        // Leftmost-longest: a value that contains another is masked whole.
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(patterns)
            .expect("literal patterns of bounded size build");
        SecretMask {
            matcher: Some(matcher),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// True when `text` shows a secret value or a line of one.
    pub fn reveals(&self, text: &str) -> bool {
        self.matcher
            .as_ref()
            .is_some_and(|matcher| matcher.is_match(text))
    }

    /// `text` with every secret value and line replaced by [`MASK`].
    pub fn mask_text(&self, text: &str) -> String {
        match &self.matcher {
            Some(matcher) if matcher.is_match(text) => {
                let replacements = vec![MASK; matcher.patterns_len()];
                matcher.replace_all(text, &replacements)
            }
            _ => text.to_string(),
        }
    }

    /// Masks every string inside `value`, keys included.
    pub fn mask_value(&self, value: &mut Value) {
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(text) if self.reveals(text) => *text = self.mask_text(text),
            Value::Array(items) => items.iter_mut().for_each(|item| self.mask_value(item)),
            Value::Object(map) => {
                let masked = std::mem::take(map)
                    .into_iter()
                    .map(|(key, mut item)| {
                        self.mask_value(&mut item);
                        (self.mask_text(&key), item)
                    })
                    .collect();
                *map = masked;
            }
            _ => {}
        }
    }

    /// A task result with every secret masked wherever it shows; a diff that shows
    /// one is replaced whole by [`HIDDEN_CONTENT`].
    pub fn mask_result(&self, mut result: TaskResult) -> TaskResult {
        if self.is_empty() {
            return result;
        }
        let diffs = std::iter::once(&mut result.diff)
            .chain(result.items.iter_mut().map(|item| &mut item.diff));
        for diff in diffs.flatten() {
            if self.reveals(diff) {
                *diff = HIDDEN_CONTENT.to_string();
            }
        }
        let mut value = serde_json::to_value(&result).expect("results serialize");
        self.mask_value(&mut value);
        serde_json::from_value(value).unwrap_or(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_in_both_forms_and_not_inside_other_words() {
        let text = r#"{{ secrets.db.password }} {{ secrets["db-main"].user }} {{ mysecrets.x }} secrets['tls']"#;
        let names: Vec<String> = secret_references(text).into_iter().collect();
        assert_eq!(names, ["db", "db-main", "tls"]);
    }

    #[test]
    fn masking_reaches_every_string_and_skips_trivial_values() {
        let mask = SecretMask::new(&json!({"db": {"password": "s3cr3t", "pin": "1"}}));
        let mut value =
            json!({"msg": "pw is s3cr3t", "diff": ["+s3cr3t"], "n": 1, "one": "1", "s3cr3t": 2});
        mask.mask_value(&mut value);
        assert_eq!(
            value,
            json!({"msg": "pw is ********", "diff": ["+********"], "n": 1, "one": "1", "********": 2})
        );
    }

    const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n-----END PRIVATE KEY-----\n";

    #[test]
    fn every_line_of_a_multi_line_secret_is_masked_on_its_own() {
        let mask = SecretMask::new(&json!({"tls": {"key": PEM}}));
        // As a diff shows it: each line with a prefix, in another order.
        let shown = "+BKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n-MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\r\n";
        let masked = mask.mask_text(shown);
        assert_eq!(masked, "+********\n-********\r\n");
        // Whole, it is masked once.
        assert_eq!(mask.mask_text(&format!("key: {PEM}")), "key: ********");
        for line in PEM.lines() {
            assert!(
                !mask.mask_text(&format!("x{line}y")).contains(line),
                "{line}"
            );
        }
    }

    #[test]
    fn a_diff_that_shows_a_secret_is_hidden_whole() {
        let mask = SecretMask::new(&json!({"tls": {"key": PEM}}));
        let mut result: TaskResult = serde_json::from_value(json!({
            "node": "n", "step": "s", "task": "t", "module": "copy", "location": "l",
            "status": "changed", "attempts": 1, "started_unix_ms": 0, "duration_ms": 0.0,
            "diff": "--- /etc/k\n+++ /etc/k\n+MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n",
            "output": {"content": PEM},
        }))
        .unwrap();
        result = mask.mask_result(result);
        assert_eq!(result.diff.as_deref(), Some(HIDDEN_CONTENT));
        assert_eq!(result.output, json!({"content": "********"}));
        assert!(SecretMask::default().is_empty());
        assert!(SecretMask::of_values(["ab"]).is_empty());
    }
}
