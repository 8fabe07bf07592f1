//! Secrets in tasks: which ones a text reads (`secrets.db.password`,
//! `secrets["db-main"].password`), so the master sends a node only those, and masking
//! their values wherever they would otherwise show (results, diffs, registered values).

use std::collections::BTreeSet;

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
            // Debug output escapes quotes; both forms name the same secret.
            let indexed = indexed.trim_start_matches('\\');
            let Some(quote) = indexed.chars().next().filter(|c| *c == '"' || *c == '\'') else {
                continue;
            };
            indexed[1..]
                .chars()
                .take_while(|c| *c != quote && *c != '\\')
                .collect()
        } else {
            continue;
        };
        if !name.is_empty() {
            names.insert(name);
        }
    }
    names
}

/// Replaces every secret value inside `value`'s strings with [`MASK`].
pub fn mask_secrets(value: &mut Value, secrets: &[String]) {
    match value {
        Value::String(text) => {
            for secret in secrets
                .iter()
                .filter(|s| s.chars().count() >= MIN_MASKED_CHARS)
            {
                if text.contains(secret.as_str()) {
                    *text = text.replace(secret.as_str(), MASK);
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| mask_secrets(item, secrets)),
        Value::Object(map) => map
            .values_mut()
            .for_each(|item| mask_secrets(item, secrets)),
        _ => {}
    }
}

/// A task result with every secret value masked, wherever in it the value shows.
pub fn mask_result(result: TaskResult, secrets: &[String]) -> TaskResult {
    if secrets.is_empty() {
        return result;
    }
    let mut value = serde_json::to_value(&result).expect("results serialize");
    mask_secrets(&mut value, secrets);
    serde_json::from_value(value).unwrap_or(result)
}

/// The values of `{name: {key: value}}`, longest first so that a secret containing
/// another is masked whole.
pub fn secret_values(secrets: &Value) -> Vec<String> {
    let mut values: Vec<String> = secrets
        .as_object()
        .into_iter()
        .flat_map(|by_name| by_name.values())
        .filter_map(Value::as_object)
        .flat_map(|keys| keys.values())
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    values
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_in_both_forms_and_not_inside_other_words() {
        let text = r#"{{ secrets.db.password }} {{ secrets["db-main"].user }} {{ mysecrets.x }} secrets['tls'] Task { args: "{{ secrets[\"hook\"].hmac }}" }"#;
        let names: Vec<String> = secret_references(text).into_iter().collect();
        assert_eq!(names, ["db", "db-main", "hook", "tls"]);
    }

    #[test]
    fn masking_reaches_every_string_and_skips_trivial_values() {
        let secrets = secret_values(&json!({"db": {"password": "s3cr3t", "pin": "1"}}));
        let mut value = json!({"msg": "pw is s3cr3t", "diff": ["+s3cr3t"], "n": 1, "one": "1"});
        mask_secrets(&mut value, &secrets);
        assert_eq!(
            value,
            json!({"msg": "pw is ********", "diff": ["+********"], "n": 1, "one": "1"})
        );
    }
}
