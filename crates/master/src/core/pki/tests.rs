use super::*;

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

fn ca() -> ClusterCa {
    ClusterCa::generate("prod", now()).unwrap()
}

fn master_hosts() -> Vec<String> {
    [
        "master.example.com",
        "203.0.113.7",
        "2001:db8::7",
        "10.77.0.1",
    ]
    .map(String::from)
    .to_vec()
}

fn parsed(cert_der: &[u8]) -> X509Certificate<'_> {
    parse_der(cert_der).unwrap()
}

/// A node's key and its certificate request asking for more than it may have.
fn node_request() -> (KeyPair, Vec<u8>) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(vec!["evil.example.com".to_string()]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let csr = params.serialize_request(&key).unwrap();
    (key, csr.der().to_vec())
}

#[test]
fn node_certificates_from_requests_carry_the_nodes_key_and_the_masters_terms() {
    let ca = ca();
    let (key, csr_der) = node_request();
    let signed = ca.sign_node_csr("web-1", &csr_der, now()).unwrap();
    assert!(ca.has_issued(&signed.cert_der));
    assert_eq!(
        peer_identity(&signed.cert_der).unwrap(),
        PeerIdentity::Node {
            name: "web-1".into()
        }
    );
    let cert = parsed(&signed.cert_der);
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
    // What the request asked for (a CA, a DNS name) is not granted.
    assert!(!cert.is_ca());
    let sans = cert.subject_alternative_name().unwrap().unwrap();
    assert!(sans
        .value
        .general_names
        .iter()
        .all(|name| matches!(name, GeneralName::URI(_))));
}

#[test]
fn admin_requests_get_admin_certificates_and_terms_read_back() {
    let ca = ca();
    let (key, csr_der) = node_request();
    let signed = ca.sign_admin_csr("alice", &csr_der, now()).unwrap();
    assert_eq!(
        peer_identity(&signed.cert_der).unwrap(),
        PeerIdentity::Admin {
            name: "alice".into()
        }
    );
    let cert = parsed(&signed.cert_der);
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
    assert_eq!(cert_terms(&signed.cert_der).unwrap(), signed.terms());
    let expected_end = now().duration_since(UNIX_EPOCH).unwrap() + LEAF_VALIDITY;
    assert_eq!(signed.not_after_unix_ms, expected_end.as_millis() as u64);
    assert_eq!(
        leaf_der_from_pem(&signed.cert_pem).unwrap(),
        signed.cert_der
    );
    assert!(leaf_der_from_pem(&ca.key_pem()).is_err());
}

#[test]
fn tampered_or_garbage_requests_are_refused() {
    let ca = ca();
    let (_, mut csr_der) = node_request();
    let last = csr_der.len() - 1;
    csr_der[last] ^= 0x01;
    assert!(matches!(
        ca.sign_node_csr("web-1", &csr_der, now()),
        Err(PkiError::Parse {
            what: "certificate request",
            ..
        })
    ));
    assert!(ca.sign_node_csr("web-1", b"not a csr", now()).is_err());
    let (_, csr_der) = node_request();
    assert!(matches!(
        ca.sign_node_csr("Bad Name", &csr_der, now()),
        Err(PkiError::InvalidName { .. })
    ));
}

#[test]
fn ca_is_a_ten_year_p256_ca_and_its_hash_is_of_the_der() {
    let ca = ca();
    assert_eq!(
        ca.ca_cert_sha256(),
        <[u8; 32]>::from(Sha256::digest(ca.cert_der()))
    );
    let cert = parsed(ca.cert_der());
    assert!(cert.is_ca());
    assert!(cert.key_usage().unwrap().unwrap().value.key_cert_sign());
    assert_eq!(cert.subject().to_string(), "CN=weft CA prod");
    let validity = cert.validity();
    let lifetime = validity.not_after.timestamp() - validity.not_before.timestamp();
    assert_eq!(
        lifetime,
        (CA_VALIDITY + CLOCK_SKEW_ALLOWANCE).as_secs() as i64
    );
    assert!(ca.has_issued(ca.cert_der()));
    let key = KeyPair::from_pem(&ca.key_pem()).unwrap();
    assert_eq!(key.algorithm(), &PKCS_ECDSA_P256_SHA256);
}

#[test]
fn ca_round_trips_through_pem() {
    let ca = ca();
    let loaded = ClusterCa::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
    assert_eq!(loaded.cert_der(), ca.cert_der());
    assert_eq!(loaded.ca_cert_sha256(), ca.ca_cert_sha256());
    let node = loaded.issue_node_cert("edge-1", now()).unwrap();
    assert!(ca.has_issued(&node.cert_der));
    let issuer = parsed(&node.cert_der).issuer().as_raw().to_vec();
    assert_eq!(issuer, parsed(ca.cert_der()).subject().as_raw());
}

#[test]
fn a_rotating_ca_trusts_both_and_masters_stay_under_the_previous_one() {
    let (previous, next) = (ca(), ca());
    let (previous_der, next_der) = (previous.cert_der().to_vec(), next.cert_der().to_vec());
    assert_eq!(next.master_issuer().cert_der(), next_der);
    assert_eq!(next.trust_bundle_pem(), next.cert_pem());
    let rotating = next.rotating_from(previous);
    assert_eq!(rotating.cert_der(), next_der);
    assert_eq!(rotating.master_issuer().cert_der(), previous_der);
    let bundle = rotating.trust_bundle_pem();
    assert!(bundle.starts_with(rotating.cert_pem()));
    assert!(bundle.ends_with(rotating.master_issuer().cert_pem()));
    let (_, csr_der) = node_request();
    let node = rotating.sign_node_csr("web-1", &csr_der, now()).unwrap();
    assert!(rotating.has_issued(&node.cert_der));
    assert!(!rotating.master_issuer().has_issued(&node.cert_der));
}

#[test]
fn from_pem_refuses_mixed_up_or_wrong_files() {
    let (ca, other) = (ca(), ca());
    let leaf = ca.issue_node_cert("edge-1", now()).unwrap();
    let refusal = |cert_pem: &str, key_pem: &str| ClusterCa::from_pem(cert_pem, key_pem).err();
    assert!(matches!(
        refusal(ca.cert_pem(), &other.key_pem()),
        Some(PkiError::KeyMismatch)
    ));
    assert!(matches!(
        refusal(&leaf.cert_pem, &leaf.key_pem),
        Some(PkiError::NotACa)
    ));
    assert!(matches!(
        refusal(&ca.key_pem(), &ca.key_pem()),
        Some(PkiError::Parse { .. })
    ));
    assert!(matches!(
        refusal(ca.cert_pem(), ca.cert_pem()),
        Some(PkiError::Parse { what: "CA key", .. })
    ));
    let two_certs = format!("{}{}", ca.cert_pem(), other.cert_pem());
    assert!(matches!(
        refusal(&two_certs, &ca.key_pem()),
        Some(PkiError::Parse { .. })
    ));
}

#[test]
fn each_kind_carries_its_identity_and_usages() {
    let ca = ca();
    let master = ca
        .issue_master_cert("master-1", &master_hosts(), now())
        .unwrap();
    let admin = ca.issue_admin_cert("alice", now()).unwrap();
    let node = ca.issue_node_cert("edge-1.web_a", now()).unwrap();
    let expectations = [
        (
            &master,
            PeerIdentity::Master {
                name: "master-1".into(),
            },
            true,
        ),
        (
            &admin,
            PeerIdentity::Admin {
                name: "alice".into(),
            },
            false,
        ),
        (
            &node,
            PeerIdentity::Node {
                name: "edge-1.web_a".into(),
            },
            false,
        ),
    ];
    for (issued, identity, server_auth) in expectations {
        assert_eq!(peer_identity(&issued.cert_der).unwrap(), identity);
        assert!(ca.has_issued(&issued.cert_der));
        let cert = parsed(&issued.cert_der);
        assert!(!cert.is_ca());
        let usages = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(usages.client_auth);
        assert_eq!(usages.server_auth, server_auth);
        assert_eq!(
            cert.subject().to_string(),
            format!("CN={}", identity.name())
        );
        assert_eq!(cert.raw_serial().len(), 16);
        assert_eq!(issued.serial, cert.raw_serial_as_string().replace(':', ""));
        let lifetime =
            cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(
            lifetime,
            (LEAF_VALIDITY + CLOCK_SKEW_ALLOWANCE).as_secs() as i64
        );
        let key = KeyPair::from_pem(&issued.key_pem).unwrap();
        assert_eq!(key.algorithm(), &PKCS_ECDSA_P256_SHA256);
    }
    assert_eq!(
        peer_identity(&admin.cert_der).unwrap().to_string(),
        "weft://admin/alice"
    );
}

#[test]
fn master_cert_names_its_hosts() {
    let master = ca()
        .issue_master_cert("master-1", &master_hosts(), now())
        .unwrap();
    let cert = parsed(&master.cert_der);
    let names = &cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names;
    let shown: Vec<String> = names.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "DNSName(master.example.com)",
            "IPAddress(cb:00:71:07)",
            "IPAddress(20:01:0d:b8:00:00:00:00:00:00:00:00:00:00:00:07)",
            "IPAddress(0a:4d:00:01)",
            "URI(weft://master/master-1)",
        ]
    );
}

#[test]
fn master_hosts_are_validated() {
    let ca = ca();
    assert!(matches!(
        ca.issue_master_cert("master-1", &[], now()).err(),
        Some(PkiError::NoHosts)
    ));
    for host in [
        "master.example.com:7443",
        "[2001:db8::1]",
        "",
        "-x.example.com",
        "mäster",
    ] {
        assert!(
            matches!(
                ca.issue_master_cert("master-1", &[host.to_owned()], now()).err(),
                Some(PkiError::InvalidHost(h)) if h == host
            ),
            "{host:?}"
        );
    }
}

#[test]
fn a_certificate_from_another_ca_is_told_apart() {
    let (ca, other) = (ca(), ca());
    let foreign = other.issue_node_cert("edge-1", now()).unwrap();
    assert!(!ca.has_issued(&foreign.cert_der));
    assert!(!ca.has_issued(other.cert_der()));
    assert!(other.has_issued(&foreign.cert_der));
    assert!(!ca.has_issued(b"not a certificate"));
}

#[test]
fn names_are_validated() {
    let ca = ca();
    let too_long = "a".repeat(64);
    for name in [
        "", "Edge", "edge 1", "edge/1", "-edge", ".edge", "..", "édge", &too_long,
    ] {
        let refusals = [
            ca.issue_node_cert(name, now()).err(),
            ca.issue_admin_cert(name, now()).err(),
            ca.issue_master_cert(name, &master_hosts(), now()).err(),
            ClusterCa::generate(name, now()).err(),
        ];
        for refusal in refusals {
            assert!(
                matches!(&refusal, Some(PkiError::InvalidName { name: n, .. }) if n == name),
                "{name:?}: {refusal:?}"
            );
        }
    }
    ca.issue_node_cert(&"a".repeat(63), now()).unwrap();
    ca.issue_node_cert("0", now()).unwrap();
}

#[test]
fn serials_differ() {
    let ca = ca();
    let serials: std::collections::HashSet<String> = (0..20)
        .map(|_| ca.issue_node_cert("edge-1", now()).unwrap().serial)
        .collect();
    assert_eq!(serials.len(), 20);
}

#[test]
fn a_certificate_without_a_weft_identity_has_none() {
    let ca = ca();
    assert!(matches!(
        peer_identity(ca.cert_der()),
        Err(PkiError::NoIdentity)
    ));
    assert!(matches!(
        peer_identity(b"junk"),
        Err(PkiError::Parse { .. })
    ));
    let mut trailing = ca.issue_node_cert("edge-1", now()).unwrap().cert_der;
    trailing.push(0);
    assert!(matches!(
        peer_identity(&trailing),
        Err(PkiError::Parse { .. })
    ));
}

#[test]
fn odd_identities_are_refused() {
    let ca = ca();
    let with_uris = |uris: &[&str]| {
        let mut params = CertificateParams::default();
        params.subject_alt_names = uris
            .iter()
            .map(|uri| SanType::URI((*uri).try_into().unwrap()))
            .collect();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        params.signed_by(&key, &ca.issuer).unwrap().der().to_vec()
    };
    for uris in [
        &["weft://root/alice"][..],
        &["weft://node"],
        &["https://example.com/node/edge-1"],
        &["weft://node/edge-1", "weft://admin/alice"],
    ] {
        let refusal = peer_identity(&with_uris(uris));
        assert!(
            matches!(refusal, Err(PkiError::NoIdentity)),
            "{uris:?}: {refusal:?}"
        );
    }
    let refusal = peer_identity(&with_uris(&["weft://admin/../alice"]));
    assert!(matches!(
        refusal,
        Err(PkiError::InvalidName { kind: "admin", .. })
    ));
    let identity = peer_identity(&with_uris(&["https://example.com", "weft://node/edge-1"]));
    assert_eq!(
        identity.unwrap(),
        PeerIdentity::Node {
            name: "edge-1".into()
        }
    );
}

#[test]
fn dns_names() {
    for host in ["a", "master.example.com", "x-1.y2", &"a".repeat(63)] {
        assert!(is_dns_name(host), "{host:?}");
    }
    for host in [
        "",
        ".",
        "a..b",
        "a.",
        "-a",
        "a-",
        "a_b",
        "a:1",
        &"a".repeat(64),
    ] {
        assert!(!is_dns_name(host), "{host:?}");
    }
}
