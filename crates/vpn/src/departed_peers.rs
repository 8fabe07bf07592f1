//! Nodes that left, kept a moment on the master's interface after they leave the
//! registry. A node that leaves asks over its own tunnel; were its peer dropped at
//! once, the master's reply would be lost and the node could not tell that it left.
//! Other nodes drop it at once, and the master refuses its certificate from the first
//! moment, so the tunnel that lingers leads to nothing that would still serve it. A
//! node removed by the admin is not kept at all.

use std::time::{Duration, Instant};

use crate::peer_registry::Peer;

/// Long enough for a reply and the connection's close to cross the tunnel.
pub const DEPARTED_PEER_GRACE: Duration = Duration::from_secs(5);

/// Departed peers, each kept until its instant.
#[derive(Debug, Default)]
pub struct DepartedPeers(Vec<(Peer, Instant)>);

impl DepartedPeers {
    /// The peers the interface should hold now for the registry's `peers`, given the
    /// peers of the nodes that `left` since the last call, and when to ask again (the
    /// next departed peer's grace ends).
    pub fn interface_peers(
        &mut self,
        peers: Vec<Peer>,
        left: Vec<Peer>,
        now: Instant,
    ) -> (Vec<Peer>, Option<Instant>) {
        let departed = &mut self.0;
        departed.extend(
            left.into_iter()
                .map(|peer| (peer, now + DEPARTED_PEER_GRACE)),
        );
        // A node that comes back, or a newcomer given the freed address, wins at once.
        departed.retain(|(old, until)| {
            *until > now
                && !peers.iter().any(|p| {
                    p.node_name == old.node_name
                        || p.node_vpn_pub_key == old.node_vpn_pub_key
                        || p.node_vpn_ip == old.node_vpn_ip
                })
        });
        let next_check = departed.iter().map(|(_, until)| *until).min();
        let mut on_interface = peers;
        on_interface.extend(departed.iter().map(|(old, _)| old.clone()));
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

    fn names(peers: &[Peer]) -> Vec<&str> {
        peers.iter().map(|p| p.node_name.as_str()).collect()
    }

    #[test]
    fn a_peer_that_left_stays_for_the_grace_and_then_goes() {
        let mut departed = DepartedPeers::default();
        let start = Instant::now();
        let n1 = || vec![peer("n1", "10.0.0.2")];
        let (now, next) = departed.interface_peers(n1(), vec![peer("n2", "10.0.0.3")], start);
        assert_eq!(names(&now), vec!["n1", "n2"]);
        assert_eq!(next, Some(start + DEPARTED_PEER_GRACE));

        let later = start + DEPARTED_PEER_GRACE / 2;
        let (now, _) = departed.interface_peers(n1(), vec![], later);
        assert_eq!(
            names(&now),
            vec!["n1", "n2"],
            "the grace starts when it left"
        );

        let after = start + DEPARTED_PEER_GRACE;
        let (now, next) = departed.interface_peers(n1(), vec![], after);
        assert_eq!((names(&now), next), (vec!["n1"], None));
    }

    #[test]
    fn a_newcomer_on_the_freed_address_replaces_the_departed_peer_at_once() {
        let mut departed = DepartedPeers::default();
        let start = Instant::now();
        departed.interface_peers(vec![], vec![peer("n2", "10.0.0.3")], start);
        let (now, next) = departed.interface_peers(vec![peer("n9", "10.0.0.3")], vec![], start);
        assert_eq!((names(&now), next), (vec!["n9"], None));
    }

    #[test]
    fn a_node_that_rejoins_is_not_listed_twice() {
        let mut departed = DepartedPeers::default();
        let start = Instant::now();
        departed.interface_peers(vec![], vec![peer("n2", "10.0.0.3")], start);
        let (now, _) = departed.interface_peers(vec![peer("n2", "10.0.0.7")], vec![], start);
        assert_eq!(names(&now), vec!["n2"]);
    }
}
