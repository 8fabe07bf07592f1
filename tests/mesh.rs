//! The WireGuard mesh end to end: a master and minions, each in its own network
//! namespace on a shared LAN, with real userspace WireGuard devices. Needs root and
//! /dev/net/tun (CI has both); without them it says why and does nothing.

mod common;

use std::time::Duration;

use common::mesh::{missing_capability, MeshLab};

const NODES: [&str; 4] = ["n1", "n2", "n3", "n4"];

fn lab_or_skip(test: &str) -> Option<MeshLab> {
    if let Some(reason) = missing_capability() {
        eprintln!("SKIPPED {test}: {reason}");
        return None;
    }
    Some(MeshLab::start())
}

/// Every host pings every other host's VPN address once.
fn assert_full_mesh(lab: &MeshLab, hosts: &[&str]) {
    let ips = lab.vpn_ips();
    let ip_of = |host: &str| {
        ips.iter()
            .find(|(name, _)| name == host)
            .unwrap_or_else(|| panic!("{host} has no VPN address: {ips:?}"))
            .1
            .clone()
    };
    for from in hosts {
        for to in hosts.iter().filter(|to| *to != from) {
            assert_eq!(
                lab.ping(from, &ip_of(to), 1, "0.2"),
                1,
                "{from} cannot reach {to} over the mesh\n--- {from}\n{}",
                lab.log(from)
            );
        }
    }
}

#[test]
fn the_mesh_forms_grows_shrinks_and_outlives_the_master() {
    let Some(mut lab) = lab_or_skip("the_mesh_forms_grows_shrinks_and_outlives_the_master") else {
        return;
    };
    // Four minions join with one token; a short peer timeout so liveness checks run.
    let token = lab.token(4);
    for node in NODES {
        lab.join_and_start(node, &token, &["--peer-timeout", "3s"]);
    }
    lab.wait_online(&NODES);
    let mut everyone = vec!["master"];
    everyone.extend(NODES);
    assert_full_mesh(&lab, &everyone);

    // `weft nodes` shows each node's address, a handshake, and that it is online.
    let nodes = lab.admin_json(&["nodes"]);
    for node in nodes.as_array().unwrap() {
        assert!(node["vpn_ip"].as_str().unwrap().starts_with("10.77.0."));
        assert!(node["last_handshake_age_s"].is_u64(), "{node}");
    }

    // A fifth joins later: the push reaches every existing node at once (the poll
    // alone would take up to 45 s).
    let late_token = lab.token(1);
    let n5_key_known =
        |lab: &MeshLab, host: &str, key: &str| lab.wg_peers(host).contains(&key.to_string());
    lab.join_and_start("n5", &late_token, &["--peer-timeout", "3s"]);
    let n5_key = lab.wg_public_key("n5");
    for host in everyone.iter() {
        let took = lab.wait_until(
            &format!("{host} gets n5 as a peer"),
            Duration::from_secs(2),
            || n5_key_known(&lab, host, &n5_key),
        );
        eprintln!("{host} had n5 after {took:?}");
    }
    lab.wait_online(&["n5"]);
    everyone.push("n5");
    assert_full_mesh(&lab, &everyone);

    // n4's link goes down past the peer timeout: its peers ask the master, which still
    // lists it, so they keep it; when the link is back it is reachable again.
    lab.set_link("n4", false);
    let n4_key = lab.wg_public_key("n4");
    lab.wait_until(
        "n1 asks the master about the silent n4",
        Duration::from_secs(20),
        || {
            lab.log("n1").lines().any(|line| {
                line.contains("peer=n4") && line.contains("the master still lists it: kept")
            })
        },
    );
    assert!(lab.log("master").contains("asking=n1 peer=n4 member=true"));
    assert!(lab.wg_peers("n1").contains(&n4_key), "n1 dropped n4");
    lab.set_link("n4", true);
    lab.wait_until("n1 reaches n4 again", Duration::from_secs(20), || {
        let n4_ip = lab
            .vpn_ips()
            .into_iter()
            .find(|(n, _)| n == "n4")
            .unwrap()
            .1;
        lab.ping("n1", &n4_ip, 1, "0.2") == 1
    });

    // n2 is removed: it leaves every peer's interface and its certificate is refused.
    let n2_key = lab.wg_public_key("n2");
    let removed = lab.admin(&["node", "remove", "n2"]);
    common::cluster::assert_success(&removed, "node remove n2");
    everyone.retain(|host| *host != "n2");
    for host in &everyone {
        lab.wait_until(&format!("{host} drops n2"), Duration::from_secs(2), || {
            !lab.wg_peers(host).contains(&n2_key)
        });
    }
    // From the master's host (its VPN address is local there), n2's credentials.
    let refused = lab
        .weft_in("master", &["minion", "leave", "--data-dir"])
        .arg(lab.data_dir("n2"))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("revoked"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // The master dies: the nodes keep talking to each other for 30 seconds.
    let ips_before = lab.vpn_ips();
    let version_before = lab.cached_version("n1");
    lab.kill_master();
    let ip_of = |host: &str| {
        ips_before
            .iter()
            .find(|(n, _)| n == host)
            .unwrap()
            .1
            .clone()
    };
    let (n3_ip, n5_ip) = (ip_of("n3"), ip_of("n5"));
    std::thread::scope(|scope| {
        let a = scope.spawn(|| lab.ping("n1", &n3_ip, 30, "1"));
        let b = scope.spawn(|| lab.ping("n4", &n5_ip, 30, "1"));
        assert!(
            a.join().unwrap() >= 29,
            "n1 -> n3 lost packets without the master"
        );
        assert!(
            b.join().unwrap() >= 29,
            "n4 -> n5 lost packets without the master"
        );
    });

    // Back: nobody is re-addressed, and the next change continues the versions.
    lab.start_master();
    lab.wait_online(&["n1", "n3", "n4", "n5"]);
    assert_eq!(
        lab.vpn_ips(),
        ips_before
            .into_iter()
            .filter(|(n, _)| n != "n2")
            .collect::<Vec<_>>()
    );
    let n3_key = lab.wg_public_key("n3");
    let left = lab
        .weft_in("n3", &["minion", "leave", "--data-dir"])
        .arg(lab.data_dir("n3"))
        .output()
        .unwrap();
    common::cluster::assert_success(&left, "minion leave n3");
    lab.wait_until("n1 drops n3, which left", Duration::from_secs(2), || {
        !lab.wg_peers("n1").contains(&n3_key)
    });
    // The node configures its interface first and caches the peers next: under load
    // the test can look in between.
    lab.wait_until(
        "n1 caches a version past the restart's (versions never go back)",
        Duration::from_secs(2),
        || lab.cached_version("n1") > version_before,
    );
    assert!(
        !lab.vpn_ips().iter().any(|(n, _)| n == "n3"),
        "n3's address is still bound"
    );

    // A stop request ends every daemon, interface and UAPI socket included, even with
    // open sessions and boringtun reading signals of its own.
    let hung = lab.terminate_all(Duration::from_secs(30));
    assert!(hung.is_empty(), "still running after SIGTERM: {hung:?}");
    for host in lab.hosts().to_vec() {
        assert!(!lab.has_uapi_socket(&host), "{host}'s UAPI socket was left");
    }
}
