//! Ansible's modules take a regular expression's groups in Python's syntax (`\1`,
//! `\g<name>`) where Rust's regex crate writes `$1`: users' `line` and `replace`
//! arguments carry over as they are.

use regex::Captures;

/// `template` with Python's group references (`\1`, `\g<1>`, `\g<name>`, `\\` for a
/// backslash) filled from `captures`; a group that took part in no match is empty.
pub(crate) fn expand_backrefs(captures: &Captures, template: &str) -> String {
    let group = |name: &str| {
        let found = match name.parse::<usize>() {
            Ok(index) => captures.get(index),
            Err(_) => captures.name(name),
        };
        found.map_or("", |m| m.as_str())
    };
    let mut expanded = String::new();
    let mut rest = template;
    while let Some(at) = rest.find('\\') {
        expanded.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let digits = after.bytes().take(2).take_while(u8::is_ascii_digit).count();
        if digits > 0 {
            expanded.push_str(group(&after[..digits]));
            rest = &after[digits..];
        } else if let Some(named) = after.strip_prefix("g<") {
            match named.split_once('>') {
                Some((name, tail)) => {
                    expanded.push_str(group(name));
                    rest = tail;
                }
                None => {
                    expanded.push('\\');
                    rest = after;
                }
            }
        } else if let Some(tail) = after.strip_prefix('\\') {
            expanded.push('\\');
            rest = tail;
        } else {
            expanded.push('\\');
            rest = after;
        }
    }
    expanded.push_str(rest);
    expanded
}
