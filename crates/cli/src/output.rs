//! How commands print: aligned tables for people, JSON for scripts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Columns padded to their widest cell; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut text = String::new();
        for (index, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if index == last {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        text.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `12s ago`, `5m ago`, `3h ago`, `2d ago`; `-` for never.
pub fn ago(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return "-".to_string();
    }
    let then = UNIX_EPOCH + Duration::from_millis(unix_ms);
    let secs = SystemTime::now()
        .duration_since(then)
        .map_or(0, |d| d.as_secs());
    age(secs)
}

/// `42s ago`, `5m ago`, ...
pub fn age(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

/// RFC 3339 in UTC, to the second; `-` for never.
pub fn timestamp(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return "-".to_string();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(unix_ms)).to_string()
}

pub fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values always serialize")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let text = table(
            &["NAME", "ONLINE", "LABELS"],
            &[
                vec!["web-1".into(), "yes".into(), "role=web".into()],
                vec!["database-1".into(), "no".into(), "".into()],
            ],
        );
        assert_eq!(
            text,
            "NAME        ONLINE  LABELS\nweb-1       yes     role=web\ndatabase-1  no\n"
        );
    }
}
