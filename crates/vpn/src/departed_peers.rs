//! Nodes that left, kept a moment on the master's interface after they leave the
//! registry. A node that leaves asks over its own tunnel; were its peer dropped at
//! once, the master's reply would be lost and the node could not tell that it left.
//! Other nodes drop it at once, and the master refuses its certificate from the first
//! moment, so the tunnel that lingers leads to nothing that would still serve it. A
//! node removed by the admin is not kept at all.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::peer_registry::Peer;

/// Long enough for a reply and the connection's close to cross the tunnel.
pub const DEPARTED_PEER_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct DepartedPeers {
    /// What the registry held last time.
    registry: Vec<Peer>,
    /// Gone from the registry, kept until the instant.
    departed: Vec<(Peer, Instant)>,
}

impl DepartedPeers {
    /// The peers the interface should hold now for the registry's `peers`, given the
    /// nodes that `left` since the last call, and when to ask again (the next departed
    /// peer's grace ends).
    pub fn interface_peers(
        &mut self,
        peers: Vec<Peer>,
        left: &BTreeSet<String>,
        now: Instant,
    ) -> (Vec<Peer>, Option<Instant>) {
        let gone = std::mem::take(&mut self.registry)
            .into_iter()
            .filter(|old| {
                left.contains(&old.node_name) && !peers.iter().any(|p| p.node_name == old.node_name)
            });
        self.departed
            .extend(gone.map(|old| (old, now + DEPARTED_PEER_GRACE)));
        // A node that comes back, or a newcomer given the freed address, wins at once.
        self.departed.retain(|(old, until)| {
            *until > now
                && !peers.iter().any(|p| {
                    p.node_name == old.node_name
                        || p.node_vpn_pub_key == old.node_vpn_pub_key
                        || p.node_vpn_ip == old.node_vpn_ip
                })
        });
        self.registry = peers.clone();
        let mut on_interface = peers;
        on_interface.extend(self.departed.iter().map(|(old, _)| old.clone()));
        let next_check = self.departed.iter().map(|(_, until)| *until).min();
        (on_interface, next_check)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, ip: &str) -> Peer {
        Peer {
            node_name: name.to_string(),
            node_vpn_pub_key: format!("key-of-{name}"),
            node_vpn_ip: ip.to_string(),
            node_public_endpoint: String::new(),
            persistent_keepalive: 0,
        }
    }

    fn left(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn names(peers: &[Peer]) -> Vec<&str> {
        peers.iter().map(|p| p.node_name.as_str()).collect()
    }

    #[test]
    fn a_peer_that_left_stays_for_the_grace_and_then_goes() {
        let mut departed = DepartedPeers::default();
        let start = Instant::now();
        let both = vec![peer("n1", "10.0.0.2"), peer("n2", "10.0.0.3")];
        let (now, next) = departed.interface_peers(both, &left(&[]), start);
        assert_eq!((names(&now), next), (vec!["n1", "n2"], None));

        let (now, next) =
            departed.interface_peers(vec![peer("n1", "10.0.0.2")], &left(&["n2"]), start);
        assert_eq!(names(&now), vec!["n1", "n2"]);
        assert_eq!(next, Some(start + DEPARTED_PEER_GRACE));

        let later = start + DEPARTED_PEER_GRACE / 2;
        let (now, _) = departed.interface_peers(vec![peer("n1", "10.0.0.2")], &left(&[]), later);
        assert_eq!(
            names(&now),
            vec!["n1", "n2"],
            "the grace starts when it left"
        );

        let after = start + DEPARTED_PEER_GRACE;
        let (now, next) = departed.interface_peers(vec![peer("n1", "10.0.0.2")], &left(&[]), after);
        assert_eq!((names(&now), next), (vec!["n1"], None));
    }

    #[test]
    fn a_removed_node_goes_at_once() {
        let mut departed = DepartedPeers::default();
        let start = Instant::now();
        departed.interface_peers(vec![peer("n2", "10.0.0.3")], &left(&[]), start);
        let (now, next) = departed.interface_peers(vec![], &left(&[]), start);
        assert_eq!((now, next), (vec![], None));
    }

    #[test]
    fn a_newcomer_on_the_freed_address_replaces_the_departed_peer_at_once() {
        let mut departed = DepartedPeers::default();
        let start = Instant::now();
        departed.interface_peers(vec![peer("n2", "10.0.0.3")], &left(&[]), start);
        departed.interface_peers(vec![], &left(&["n2"]), start);
        let (now, next) = departed.interface_peers(vec![peer("n9", "10.0.0.3")], &left(&[]), start);
        assert_eq!((names(&now), next), (vec!["n9"], None));
    }

    #[test]
    fn a_node_that_rejoins_is_not_listed_twice() {
        let mut departed = DepartedPeers::default();
        let start = Instant::now();
        departed.interface_peers(vec![peer("n2", "10.0.0.3")], &left(&[]), start);
        departed.interface_peers(vec![], &left(&["n2"]), start);
        let (now, _) = departed.interface_peers(vec![peer("n2", "10.0.0.7")], &left(&[]), start);
        assert_eq!(names(&now), vec!["n2"]);
    }
}
