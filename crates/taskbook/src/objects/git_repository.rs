use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::objects::SecretKeyRef;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitRepositorySpec {
    /// `file://`, `https://`, or `ssh://` / `user@host:path` (with `ssh_key`); see
    /// [`validate_git_url`].
    pub url: String,
    #[serde(default = "default_branch")]
    pub branch: String,
    #[serde(default = "default_interval")]
    pub interval: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key: Option<SecretKeyRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<SecretKeyRef>,
    /// TaskBooks in the repository to run when a new commit lands.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_push: Vec<OnPush>,
}

fn default_branch() -> String {
    "main".to_string()
}

fn default_interval() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnPush {
    pub path: String,
}

const GIT_URL_EXPECTED: &str = "expected file:///absolute/path, https://host/path, \
     ssh://[user@]host[:port]/path or user@host:path";

/// The repository URLs weft reads from, for GitRepository objects and the `git` module.
/// `http://` and `git://` are refused because they travel unauthenticated: anyone on
/// the way could change what runs as root on the nodes. `ext::` and the other
/// `transport::address` forms run a program of the URL's choosing. A bare path is
/// refused for being ambiguous: git reads `host:path` in it as ssh, and a leading
/// `-` as an option.
pub fn validate_git_url(url: &str) -> Result<(), String> {
    let refuse = |why: &str| Err(format!("git URL `{url}` {why}; {GIT_URL_EXPECTED}"));
    if url.chars().any(char::is_control) {
        return refuse("holds a control character");
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        return match scheme {
            "file" if rest.starts_with('/') => Ok(()),
            "file" => refuse("names no absolute path"),
            "https" | "ssh" if host.is_empty() || host.starts_with(['/', '-']) => {
                refuse("names no usable host")
            }
            "https" | "ssh" => Ok(()),
            "http" | "git" => refuse(&format!(
                "uses {scheme}://, which is unauthenticated: anyone on the network path could \
                 change what the nodes run"
            )),
            _ => refuse(&format!("uses the unsupported transport {scheme}://")),
        };
    }
    match url.split_once(':') {
        // `ext::sh -c ...`, `fd::...`: git's `transport::address` form.
        Some((transport, rest)) if rest.starts_with(':') => refuse(&format!(
            "uses git's `{transport}::` transport, which runs a program"
        )),
        Some((user_host, path)) if !user_host.contains('/') => {
            let host = user_host
                .rsplit_once('@')
                .map_or(user_host, |(_, host)| host);
            if host.is_empty() || user_host.starts_with('-') || path.is_empty() {
                refuse("is not user@host:path")
            } else {
                Ok(())
            }
        }
        _ if url.starts_with('/') => refuse(&format!("is a local path; write it as file://{url}")),
        _ => refuse("is neither a URL nor user@host:path"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_authenticated_transports_and_file_urls_are_read() {
        for url in [
            "file:///srv/git/infra.git",
            "https://git.example.com/ops/infra.git",
            "ssh://git@git.example.com:2222/ops/infra.git",
            "ssh://host/infra.git",
            "git@github.com:ops/infra.git",
            "host.example.com:infra.git",
            "git@[2001:db8::1]:infra.git",
        ] {
            assert_eq!(validate_git_url(url), Ok(()), "{url}");
        }
        for (url, why) in [
            (
                "http://git.example.com/infra.git",
                "http://, which is unauthenticated",
            ),
            (
                "git://git.example.com/infra.git",
                "git://, which is unauthenticated",
            ),
            (
                "ext::sh -c touch% /tmp/pwned",
                "`ext::` transport, which runs a program",
            ),
            ("fd::3", "`fd::` transport"),
            (
                "ftp://example.com/infra.git",
                "unsupported transport ftp://",
            ),
            (
                "/srv/git/infra.git",
                "is a local path; write it as file:///srv/git/infra.git",
            ),
            ("infra.git", "neither a URL nor user@host:path"),
            ("./a:b", "neither a URL nor user@host:path"),
            ("-oProxyCommand=x:y", "is not user@host:path"),
            ("git@:infra.git", "is not user@host:path"),
            ("host:", "is not user@host:path"),
            ("file://relative/infra.git", "names no absolute path"),
            ("https://", "names no usable host"),
            ("ssh://-oProxyCommand=x/y", "names no usable host"),
            ("https://example.com/a\nb", "control character"),
            ("", "neither a URL nor user@host:path"),
        ] {
            let error = validate_git_url(url).expect_err(url);
            assert!(error.contains(why), "{url}: {error}");
            assert!(error.ends_with(GIT_URL_EXPECTED), "{url}: {error}");
        }
    }
}
