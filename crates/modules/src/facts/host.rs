//! `hostname`, `fqdn`, `kernel`, `arch` and `uptime_seconds`: the host's names and
//! kernel, from uname(2) and the resolver, and how long it has been up.

use std::ffi::{CStr, CString};
use std::ptr;

/// uname(2)'s answer; a field it could not give is "unknown" ("localhost" for the node).
pub(super) struct SystemNames {
    pub(super) node_name: String,
    pub(super) kernel_name: String,
    pub(super) kernel_release: String,
    pub(super) kernel_version: String,
    pub(super) machine: String,
}

/// This machine's host name without its domain: the default name of a node.
pub fn host_name() -> String {
    short_host_name(&uname().node_name).to_string()
}

pub(super) fn short_host_name(node_name: &str) -> &str {
    node_name.split('.').next().unwrap_or_default()
}

pub(super) fn uname() -> SystemNames {
    let names = nix::sys::utsname::uname().ok();
    let text = |field: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        names
            .as_ref()
            .map(|n| field(n).to_string_lossy().into_owned())
            .filter(|text| !text.is_empty())
    };
    let or_unknown = |field| text(field).unwrap_or_else(|| "unknown".to_string());
    SystemNames {
        // What the kernel calls a node without a name.
        node_name: text(|n| n.nodename()).unwrap_or_else(|| "localhost".to_string()),
        kernel_name: or_unknown(|n| n.sysname()),
        kernel_release: or_unknown(|n| n.release()),
        kernel_version: or_unknown(|n| n.version()),
        machine: or_unknown(|n| n.machine()),
    }
}

/// The host's canonical name as the resolver (/etc/hosts, DNS) knows it.
pub(super) fn canonical_name(node_name: &str) -> Option<String> {
    let node = CString::new(node_name).ok()?;
    let hints = libc::addrinfo {
        ai_flags: libc::AI_CANONNAME,
        ai_family: libc::AF_UNSPEC,
        ai_socktype: libc::SOCK_STREAM,
        ai_protocol: 0,
        ai_addrlen: 0,
        ai_addr: ptr::null_mut(),
        ai_canonname: ptr::null_mut(),
        ai_next: ptr::null_mut(),
    };
    let mut found: *mut libc::addrinfo = ptr::null_mut();
    // SAFETY: the node name is NUL-terminated, the service may be null, and getaddrinfo
    // only writes the result list head through `found`.
    let status = unsafe { libc::getaddrinfo(node.as_ptr(), ptr::null(), &hints, &mut found) };
    if status != 0 || found.is_null() {
        return None;
    }
    // SAFETY: `found` is the list getaddrinfo returned, alive until freeaddrinfo below;
    // with AI_CANONNAME its first entry's ai_canonname is null or a NUL-terminated string.
    let name = unsafe {
        let canonical = (*found).ai_canonname;
        (!canonical.is_null()).then(|| CStr::from_ptr(canonical).to_string_lossy().into_owned())
    };
    // SAFETY: `found` came from getaddrinfo and nothing borrowed from it outlives this point.
    unsafe { libc::freeaddrinfo(found) };
    // Hosts files that list the node name after `localhost` on one line make that the
    // canonical name, which would tell every node apart as "localhost".
    name.filter(|name| !name.is_empty() && name != "localhost" && !name.starts_with("localhost."))
}

/// Whole seconds since boot, from /proc/uptime's first field.
pub(super) fn uptime_seconds(uptime: &str) -> Option<u64> {
    let seconds = uptime.split_whitespace().next()?;
    seconds.split('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_is_parsed() {
        assert_eq!(uptime_seconds("12345.67 54321.00\n"), Some(12345));
        assert_eq!(uptime_seconds(""), None);
    }
}
