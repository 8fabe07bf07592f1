//! The cluster's VPN addresses (seed 002): the master takes the first host address of
//! the CIDR, each node keeps its address across reconnects and restarts, and when the
//! pool is full the address of the offline node idle the longest is reclaimed, never
//! an online node's. Plain data: the master stores it and says who is online.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// The default cluster network.
pub const DEFAULT_VPN_CIDR: &str = "10.77.0.0/16";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub node_name: String,
    pub last_seen_unix_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpPoolError {
    #[error("invalid VPN CIDR `{0}`: expected an IPv4 network such as 10.77.0.0/16")]
    InvalidCidr(String),
    #[error("the VPN CIDR {0} is too small: it needs room for the master and at least one node")]
    TooSmall(Ipv4Net),
    #[error(
        "every address of {cidr} is taken by an online node ({nodes} nodes); widen the \
         cluster network (--vpn-cidr) or remove nodes with `weft node remove`"
    )]
    Exhausted { cidr: Ipv4Net, nodes: usize },
}

/// What `assign` did, so the caller can tell the node that lost its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    pub node_vpn_ip: Ipv4Addr,
    /// The offline node whose address this was.
    pub reclaimed_from: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpPool {
    cidr: Ipv4Net,
    bindings: BTreeMap<Ipv4Addr, Binding>,
}

impl IpPool {
    pub fn new(cidr: &str) -> Result<IpPool, IpPoolError> {
        let cidr: Ipv4Net = cidr
            .parse()
            .map_err(|_| IpPoolError::InvalidCidr(cidr.to_string()))?;
        let cidr = cidr.trunc();
        if cidr.hosts().nth(1).is_none() {
            return Err(IpPoolError::TooSmall(cidr));
        }
        Ok(IpPool {
            cidr,
            bindings: BTreeMap::new(),
        })
    }

    pub fn cidr(&self) -> Ipv4Net {
        self.cidr
    }

    pub fn master_vpn_ip(&self) -> Ipv4Addr {
        self.cidr.hosts().next().expect("checked in new")
    }

    pub fn address_of(&self, node_name: &str) -> Option<Ipv4Addr> {
        self.bindings
            .iter()
            .find(|(_, binding)| binding.node_name == node_name)
            .map(|(address, _)| *address)
    }

    /// The node's address: the one it had, else a free one, else the one of the offline
    /// node idle the longest (`is_online` says who is online now).
    pub fn assign(
        &mut self,
        node_name: &str,
        now_unix_ms: u64,
        is_online: impl Fn(&str) -> bool,
    ) -> Result<Assigned, IpPoolError> {
        if let Some(address) = self.address_of(node_name) {
            self.touch(node_name, now_unix_ms);
            return Ok(Assigned {
                node_vpn_ip: address,
                reclaimed_from: None,
            });
        }
        let binding = Binding {
            node_name: node_name.to_string(),
            last_seen_unix_ms: now_unix_ms,
        };
        let master = self.master_vpn_ip();
        let free = self
            .cidr
            .hosts()
            .find(|address| *address != master && !self.bindings.contains_key(address));
        if let Some(address) = free {
            self.bindings.insert(address, binding);
            return Ok(Assigned {
                node_vpn_ip: address,
                reclaimed_from: None,
            });
        }
        let idlest = self
            .bindings
            .iter()
            .filter(|(_, bound)| !is_online(&bound.node_name))
            .min_by_key(|(address, bound)| (bound.last_seen_unix_ms, **address))
            .map(|(address, _)| *address);
        let Some(address) = idlest else {
            return Err(IpPoolError::Exhausted {
                cidr: self.cidr,
                nodes: self.bindings.len(),
            });
        };
        let previous = self.bindings.insert(address, binding).map(|b| b.node_name);
        Ok(Assigned {
            node_vpn_ip: address,
            reclaimed_from: previous,
        })
    }

    /// The node was heard from: it is not idle.
    pub fn touch(&mut self, node_name: &str, now_unix_ms: u64) {
        if let Some(binding) = self
            .bindings
            .values_mut()
            .find(|binding| binding.node_name == node_name)
        {
            binding.last_seen_unix_ms = binding.last_seen_unix_ms.max(now_unix_ms);
        }
    }

    /// The node left or was removed: its address is free again.
    pub fn release(&mut self, node_name: &str) -> Option<Ipv4Addr> {
        let address = self.address_of(node_name)?;
        self.bindings.remove(&address);
        Some(address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    #[test]
    fn the_master_takes_the_first_address_and_nodes_keep_theirs() {
        let mut pool = IpPool::new(DEFAULT_VPN_CIDR).unwrap();
        assert_eq!(pool.master_vpn_ip(), addr("10.77.0.1"));
        let a = pool.assign("a", 1, |_| false).unwrap();
        let b = pool.assign("b", 1, |_| false).unwrap();
        assert_eq!(
            (a.node_vpn_ip, b.node_vpn_ip),
            (addr("10.77.0.2"), addr("10.77.0.3"))
        );
        // A reconnect, or a restart from the stored pool, gives the same address.
        let stored = serde_json::to_string(&pool).unwrap();
        let mut restored: IpPool = serde_json::from_str(&stored).unwrap();
        assert_eq!(
            restored.assign("a", 9, |_| false).unwrap().node_vpn_ip,
            addr("10.77.0.2")
        );
        assert_eq!(restored.release("b"), Some(addr("10.77.0.3")));
        assert_eq!(
            restored.assign("c", 9, |_| false).unwrap().node_vpn_ip,
            addr("10.77.0.3")
        );
    }

    #[test]
    fn a_full_pool_reclaims_the_longest_idle_offline_node_never_an_online_one() {
        // /29: .1 master, .2-.6 nodes.
        let mut pool = IpPool::new("10.9.0.0/29").unwrap();
        for (index, node) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            pool.assign(node, 100 + index as u64, |_| false).unwrap();
        }
        pool.touch("a", 500);
        // b is the idlest, but online: c goes.
        let assigned = pool.assign("f", 600, |name| name == "b").unwrap();
        assert_eq!(assigned.reclaimed_from.as_deref(), Some("c"));
        assert_eq!(assigned.node_vpn_ip, addr("10.9.0.4"));
        assert_eq!(pool.address_of("c"), None);

        let everyone_online = pool.assign("g", 700, |_| true).unwrap_err();
        assert!(matches!(
            everyone_online,
            IpPoolError::Exhausted { nodes: 5, .. }
        ));
        assert!(everyone_online.to_string().contains("--vpn-cidr"));
    }

    #[test]
    fn bad_networks_are_refused() {
        assert!(matches!(
            IpPool::new("10.77.0.0"),
            Err(IpPoolError::InvalidCidr(_))
        ));
        assert!(matches!(
            IpPool::new("fd00::/64"),
            Err(IpPoolError::InvalidCidr(_))
        ));
        assert!(matches!(
            IpPool::new("10.0.0.1/32"),
            Err(IpPoolError::TooSmall(_))
        ));
        assert_eq!(
            IpPool::new("10.77.3.9/16").unwrap().cidr().to_string(),
            "10.77.0.0/16"
        );
    }
}
