//! `os`: the distribution, from os-release(5).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

/// The `os` object of the os-release file this host has; none gives `unknown`.
pub(super) fn os_facts_of_this_host() -> Value {
    let os_release = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    os_facts(&parse_os_release(&os_release))
}

/// `KEY=value` pairs of an os-release(5) file, values unquoted as a shell would.
fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (key, raw_value) = line.trim().split_once('=')?;
            let is_variable_name =
                key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !key.is_empty();
            is_variable_name.then(|| (key.to_string(), unquote_shell_value(raw_value)))
        })
        .collect()
}

/// Undoes the shell quoting os-release(5) allows: '…' is literal, "…" honours `\$`, `\"`,
/// `` \` `` and `\\`, a bare backslash escapes the next character, and adjacent pieces
/// join. An unquoted blank ends the value: what follows could only be a comment.
fn unquote_shell_value(raw: &str) -> String {
    let mut value = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => value.extend(chars.by_ref().take_while(|&c| c != '\'')),
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some(escaped @ ('$' | '"' | '\\' | '`')) => value.push(escaped),
                            Some(other) => {
                                value.push('\\');
                                value.push(other);
                            }
                            None => value.push('\\'),
                        },
                        other => value.push(other),
                    }
                }
            }
            '\\' => value.extend(chars.next()),
            blank if blank.is_whitespace() => break,
            other => value.push(other),
        }
    }
    value
}

/// The `os` object; `id` and `family` are always there so `when:` conditions on them
/// work on any host, the rest only when the release file says.
fn os_facts(release: &BTreeMap<String, String>) -> Value {
    let field = |key: &str| {
        release
            .get(key)
            .map(|value| value.trim())
            .filter(|value| !value.is_empty())
    };
    let id = field("ID").unwrap_or("unknown").to_ascii_lowercase();
    let id_like = field("ID_LIKE").unwrap_or_default().to_ascii_lowercase();
    let family = os_family(&id, &id_like);
    let mut os = Map::new();
    os.insert("id".into(), json!(id));
    os.insert("family".into(), json!(family));
    let optional = [
        ("version", field("VERSION_ID")),
        ("name", field("PRETTY_NAME").or_else(|| field("NAME"))),
        ("codename", field("VERSION_CODENAME")),
    ];
    for (fact, value) in optional {
        if let Some(value) = value {
            os.insert(fact.into(), json!(value));
        }
    }
    Value::Object(os)
}

/// The distribution family TaskBooks branch on: the first of ID, then ID_LIKE's entries
/// (most specific first), that belongs to a known family; else the ID itself.
fn os_family(id: &str, id_like: &str) -> String {
    std::iter::once(id)
        .chain(id_like.split_whitespace())
        .find_map(known_family)
        .unwrap_or(id)
        .to_string()
}

fn known_family(id: &str) -> Option<&'static str> {
    Some(match id {
        "debian" | "ubuntu" | "raspbian" | "linuxmint" | "pop" | "kali" | "devuan"
        | "elementary" => "debian",
        "rhel" | "centos" | "fedora" | "rocky" | "almalinux" | "ol" | "amzn" | "scientific" => {
            "redhat"
        }
        "arch" | "archarm" | "manjaro" | "endeavouros" => "arch",
        "suse" | "sles" | "sled" => "suse",
        opensuse if opensuse.starts_with("opensuse") => "suse",
        "alpine" => "alpine",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(text: &str) -> Value {
        os_facts(&parse_os_release(text))
    }

    #[test]
    fn os_release_values_are_unquoted_like_a_shell_would() {
        let release = parse_os_release(
            "# a comment\n\
             PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n\
             ID=debian\n\
             VERSION_ID='12'\n\
             QUOTED=\"a \\\"b\\\" \\$HOME \\\\ \\n\"\n\
             JOINED=one\"two\"'three'\n\
             ESCAPED=with\\ space\n\
             TRAILING=value # comment\n\
             not a variable line\n",
        );
        assert_eq!(release["PRETTY_NAME"], "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(release["ID"], "debian");
        assert_eq!(release["VERSION_ID"], "12");
        assert_eq!(release["QUOTED"], "a \"b\" $HOME \\ \\n");
        assert_eq!(release["JOINED"], "onetwothree");
        assert_eq!(release["ESCAPED"], "with space");
        assert_eq!(release["TRAILING"], "value");
        assert_eq!(release.len(), 7);
    }

    #[test]
    fn os_facts_map_distributions_to_families() {
        let debian = os(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_ID=\"12\"\n\
                         VERSION_CODENAME=bookworm\nID=debian\n",
        );
        assert_eq!(
            debian,
            json!({
                "id": "debian",
                "family": "debian",
                "version": "12",
                "name": "Debian GNU/Linux 12 (bookworm)",
                "codename": "bookworm",
            })
        );
        let family = |text: &str| os(text)["family"].as_str().map(str::to_string);
        assert_eq!(
            family("ID=ubuntu\nID_LIKE=debian").as_deref(),
            Some("debian")
        );
        assert_eq!(
            family("ID=linuxmint\nID_LIKE=\"ubuntu debian\"").as_deref(),
            Some("debian")
        );
        assert_eq!(family("ID=raspbian\n").as_deref(), Some("debian"));
        assert_eq!(
            family("ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"").as_deref(),
            Some("redhat")
        );
        assert_eq!(
            family("ID=\"almalinux\"\nID_LIKE=\"rhel centos fedora\"").as_deref(),
            Some("redhat")
        );
        assert_eq!(family("ID=fedora\n").as_deref(), Some("redhat"));
        assert_eq!(
            family("ID=\"opensuse-leap\"\nID_LIKE=\"suse opensuse\"").as_deref(),
            Some("suse")
        );
        assert_eq!(family("ID=\"sles\"\n").as_deref(), Some("suse"));
        assert_eq!(
            family("ID=manjaro\nID_LIKE=arch\n").as_deref(),
            Some("arch")
        );
        assert_eq!(
            family("ID=alpine\nVERSION_ID=3.19.1\n").as_deref(),
            Some("alpine")
        );
        assert_eq!(family("ID=gentoo\n").as_deref(), Some("gentoo"));
        assert_eq!(family("ID=NixOS\n").as_deref(), Some("nixos"));
    }

    #[test]
    fn a_missing_os_release_gives_unknown_id_and_family_only() {
        assert_eq!(os(""), json!({"id": "unknown", "family": "unknown"}));
        assert_eq!(os("NAME=Linux\n")["name"], "Linux");
    }
}
