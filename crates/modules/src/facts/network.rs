//! `interfaces` and `default_ipv4`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use serde_json::{json, Map, Value};

use super::read_text;

/// One network interface with its IP addresses (address, prefix length), in the order
/// the kernel lists them: the primary IPv4 address comes first.
pub(super) struct Interface {
    name: String,
    up: bool,
    addresses: Vec<(IpAddr, u32)>,
}

/// One getifaddrs entry: each interface appears once per address, plus once for its link.
struct InterfaceEntry {
    name: String,
    up: bool,
    address: Option<(IpAddr, u32)>,
}

/// This host's interfaces, sorted by name.
pub(super) fn interfaces() -> Vec<Interface> {
    let mut by_name: BTreeMap<String, Interface> = BTreeMap::new();
    for entry in interface_entries() {
        // Labelled IPv4 addresses come as `eth0:1`; a device name cannot contain `:`.
        let name = entry
            .name
            .split_once(':')
            .map_or(entry.name.as_str(), |(device, _)| device);
        let interface = by_name
            .entry(name.to_string())
            .or_insert_with(|| Interface {
                name: name.to_string(),
                up: false,
                addresses: Vec::new(),
            });
        interface.up |= entry.up;
        interface.addresses.extend(entry.address);
    }
    by_name.into_values().collect()
}

fn interface_entries() -> Vec<InterfaceEntry> {
    let Ok(addresses) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addresses
        .map(|entry| {
            let address = entry.address.as_ref().and_then(ip_address);
            let netmask = entry.netmask.as_ref().and_then(ip_address);
            InterfaceEntry {
                up: entry.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP),
                address: address.map(|address| (address, prefix_length(address, netmask))),
                name: entry.interface_name,
            }
        })
        .collect()
}

/// The IPv4 or IPv6 address in a socket address; other families (the link layer) have none.
fn ip_address(address: &nix::sys::socket::SockaddrStorage) -> Option<IpAddr> {
    if let Some(ipv4) = address.as_sockaddr_in() {
        return Some(IpAddr::V4(ipv4.ip()));
    }
    address.as_sockaddr_in6().map(|ipv6| IpAddr::V6(ipv6.ip()))
}

/// The number of netmask bits; no netmask (a point-to-point peer) means a host address.
fn prefix_length(address: IpAddr, netmask: Option<IpAddr>) -> u32 {
    match (address, netmask) {
        (IpAddr::V4(_), Some(IpAddr::V4(mask))) => mask.to_bits().count_ones(),
        (IpAddr::V6(_), Some(IpAddr::V6(mask))) => mask.to_bits().count_ones(),
        (IpAddr::V4(_), _) => 32,
        (IpAddr::V6(_), _) => 128,
    }
}

pub(super) fn interface_facts(interface: &Interface) -> Value {
    let sys_dir = Path::new("/sys/class/net").join(&interface.name);
    let mut fact = Map::new();
    fact.insert("name".into(), json!(interface.name));
    // Loopback and tunnels report an all-zero or empty address: they have no MAC.
    let mac = read_text(sys_dir.join("address")).trim().to_string();
    if mac.chars().any(|c| c.is_ascii_hexdigit() && c != '0') {
        fact.insert("mac".into(), json!(mac));
    }
    if let Ok(mtu) = read_text(sys_dir.join("mtu")).trim().parse::<u32>() {
        fact.insert("mtu".into(), json!(mtu));
    }
    fact.insert("up".into(), json!(interface.up));
    let addresses: Vec<Value> = interface
        .addresses
        .iter()
        .map(|(address, prefix)| {
            json!({
                "address": address.to_string(),
                "prefix": prefix,
                "family": if address.is_ipv4() { "ipv4" } else { "ipv6" },
            })
        })
        .collect();
    fact.insert("addresses".into(), Value::Array(addresses));
    Value::Object(fact)
}

/// The interface of the IPv4 default route with the lowest metric, from /proc/net/route
/// (hex destination, flags and mask; decimal metric).
fn default_route_interface(route_table: &str) -> Option<String> {
    route_table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [interface, destination, _gateway, flags, _refcnt, _use, metric, mask, ..] =
                fields[..]
            else {
                return None;
            };
            let flags = u16::from_str_radix(flags, 16).ok()?;
            let is_default = destination == "00000000" && mask == "00000000";
            (is_default && flags & libc::RTF_UP != 0)
                .then(|| Some((metric.parse::<u32>().ok()?, interface)))
                .flatten()
        })
        .min_by_key(|&(metric, _)| metric)
        .map(|(_, interface)| interface.to_string())
}

/// The first IPv4 address of the default route's interface.
pub(super) fn default_ipv4(interfaces: &[Interface]) -> Option<Ipv4Addr> {
    let name = default_route_interface(&read_text("/proc/net/route"))?;
    first_ipv4(interfaces, &name)
}

fn first_ipv4(interfaces: &[Interface], name: &str) -> Option<Ipv4Addr> {
    let interface = interfaces.iter().find(|interface| interface.name == name)?;
    interface
        .addresses
        .iter()
        .find_map(|(address, _)| match address {
            IpAddr::V4(ipv4) => Some(*ipv4),
            IpAddr::V6(_) => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_route_with_the_lowest_metric_wins() {
        let routes =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                      wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
                      eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                      eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                      down0\t00000000\t01010101\t0002\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(default_route_interface(routes).as_deref(), Some("eth0"));
        assert_eq!(default_route_interface(""), None);
    }
}
