//! Bootstrap tokens as a string: one string that lets a new node in, and tells it which master to
//! trust before it trusts anything (kubeadm's token and discovery hash in one).
//!
//! Format, printed by `weft token create`:
//!
//! ```text
//! weft1.<token_id>.<token_secret>.<master_public_endpoint>.<ca_cert_sha256>
//! ```
//!
//! - `weft1`: format and version; another layout gets another prefix.
//! - `token_id`: 8 of `a-z0-9`, public, the key the master stores the token under.
//! - `token_secret`: 32 of `a-z0-9` (165 bits); the master keeps only its SHA-256.
//! - `master_public_endpoint`: `HOST:PORT` (IPv6 in brackets), base64url without
//!   padding, because hosts contain `.` and `:`.
//! - `ca_cert_sha256`: 64 lowercase hex digits, the SHA-256 of the cluster CA
//!   certificate in DER, the same as `openssl x509 -in ca.pem -outform der | sha256sum`.
//!
//! Only letters, digits, `.`, `-` and `_` appear, so the token passes through shells,
//! YAML and URLs unquoted. [`BootstrapToken::parse`] ignores surrounding whitespace and
//! is otherwise strict; its errors never contain any part of the input.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::Rng;

const TOKEN_PREFIX: &str = "weft1";
const TOKEN_ID_LEN: usize = 8;
const TOKEN_SECRET_LEN: usize = 32;
const TOKEN_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// The longest endpoint (a 253-character DNS name and `:65535`) makes a 459-byte token.
pub const MAX_TOKEN_LEN: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenFormatError {
    /// The reason is static so that no part of a mistyped secret can reach a log.
    #[error("malformed bootstrap token: {0}; pass the whole line `weft token create` printed")]
    Malformed(&'static str),
    #[error(
        "invalid master public endpoint {endpoint:?}: expected HOST:PORT with IPv6 in \
         brackets, e.g. master.example.com:7443 or [2001:db8::1]:7443"
    )]
    InvalidEndpoint { endpoint: String },
}

/// What the admin hands to a joining node. The secret leaves only through [`Self::encode`].
#[derive(Clone)]
pub struct BootstrapToken {
    token_id: String,
    token_secret: String,
    master_public_endpoint: String,
    ca_cert_sha256: [u8; 32],
}

impl BootstrapToken {
    pub fn generate(
        master_public_endpoint: &str,
        ca_cert_sha256: [u8; 32],
    ) -> Result<Self, TokenFormatError> {
        // Refuse here rather than print a token no node could parse.
        if !is_endpoint(master_public_endpoint) {
            return Err(TokenFormatError::InvalidEndpoint {
                endpoint: master_public_endpoint.to_owned(),
            });
        }
        let mut rng = rand::rng();
        Ok(Self {
            token_id: random_token_chars(&mut rng, TOKEN_ID_LEN),
            token_secret: random_token_chars(&mut rng, TOKEN_SECRET_LEN),
            master_public_endpoint: master_public_endpoint.to_owned(),
            ca_cert_sha256,
        })
    }

    pub fn token_id(&self) -> &str {
        &self.token_id
    }

    pub fn master_public_endpoint(&self) -> &str {
        &self.master_public_endpoint
    }

    pub fn ca_cert_sha256(&self) -> [u8; 32] {
        self.ca_cert_sha256
    }

    pub fn credentials(&self) -> TokenCredentials {
        TokenCredentials {
            token_id: self.token_id.clone(),
            token_secret: self.token_secret.clone(),
        }
    }

    pub fn encode(&self) -> String {
        format!(
            "{TOKEN_PREFIX}.{}.{}.{}.{}",
            self.token_id,
            self.token_secret,
            URL_SAFE_NO_PAD.encode(&self.master_public_endpoint),
            to_hex(&self.ca_cert_sha256)
        )
    }

    pub fn parse(token: &str) -> Result<Self, TokenFormatError> {
        use TokenFormatError::Malformed;
        let token = token.trim_ascii();
        if token.len() > MAX_TOKEN_LEN {
            return Err(Malformed("it is longer than 512 bytes"));
        }
        if !token.is_ascii() {
            return Err(Malformed("it contains non-ASCII characters"));
        }
        let mut fields = token.split('.');
        match fields.next() {
            Some(TOKEN_PREFIX) => {}
            Some(prefix) if prefix.starts_with("weft") => {
                return Err(Malformed(
                    "it was made by another weft version; this one reads `weft1.` tokens",
                ))
            }
            _ => return Err(Malformed("it does not start with `weft1.`")),
        }
        let [token_id, token_secret, endpoint, ca_hash] =
            <[&str; 4]>::try_from(fields.collect::<Vec<_>>())
                .map_err(|_| Malformed("expected 5 fields separated by `.`"))?;
        check_credential_chars(token_id, token_secret)?;
        let master_public_endpoint = URL_SAFE_NO_PAD
            .decode(endpoint)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .filter(|endpoint| is_endpoint(endpoint))
            .ok_or(Malformed(
                "the master endpoint is not a base64url HOST:PORT",
            ))?;
        let ca_cert_sha256 = from_hex(ca_hash).ok_or(Malformed(
            "the CA hash must be 64 lowercase hex digits (a SHA-256)",
        ))?;
        Ok(Self {
            token_id: token_id.to_owned(),
            token_secret: token_secret.to_owned(),
            master_public_endpoint,
            ca_cert_sha256,
        })
    }
}

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootstrapToken")
            .field("token_id", &self.token_id)
            .field("token_secret", &"<redacted>")
            .field("master_public_endpoint", &self.master_public_endpoint)
            .field("ca_cert_sha256", &to_hex(&self.ca_cert_sha256))
            .finish()
    }
}

/// What a joining node presents: the token's id and secret, without the parts that only
/// tell the node where the master is.
pub struct TokenCredentials {
    pub token_id: String,
    pub token_secret: String,
}

impl TokenCredentials {
    /// What arrives over the wire is checked before it names a stored record.
    pub fn validate(&self) -> Result<(), TokenFormatError> {
        check_credential_chars(&self.token_id, &self.token_secret)
    }
}

fn check_credential_chars(token_id: &str, token_secret: &str) -> Result<(), TokenFormatError> {
    use TokenFormatError::Malformed;
    if !is_token_chars(token_id, TOKEN_ID_LEN) {
        return Err(Malformed("the id must be 8 characters of a-z and 0-9"));
    }
    if !is_token_chars(token_secret, TOKEN_SECRET_LEN) {
        return Err(Malformed("the secret must be 32 characters of a-z and 0-9"));
    }
    Ok(())
}

impl fmt::Debug for TokenCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCredentials")
            .field("token_id", &self.token_id)
            .finish_non_exhaustive()
    }
}

fn random_token_chars(rng: &mut impl Rng, len: usize) -> String {
    (0..len)
        .map(|_| char::from(TOKEN_ALPHABET[rng.random_range(0..TOKEN_ALPHABET.len())]))
        .collect()
}

/// A standby master refuses a join and names the leader's public endpoint in this
/// response header; the node joins there, checking it against the token's CA hash.
pub const LEADER_PUBLIC_ENDPOINT_HEADER: &str = "weft-leader-public-endpoint";

/// Whether `token_id` is shaped like a token's id (`weft token delete` takes one).
pub fn is_token_id(token_id: &str) -> bool {
    is_token_chars(token_id, TOKEN_ID_LEN)
}

fn is_token_chars(field: &str, len: usize) -> bool {
    field.len() == len && field.bytes().all(|b| TOKEN_ALPHABET.contains(&b))
}

pub fn is_endpoint(endpoint: &str) -> bool {
    let Some((host, port)) = endpoint.rsplit_once(':') else {
        return false;
    };
    let port_ok = (1..=5).contains(&port.len())
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|port| port != 0);
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(ipv6) => ipv6.parse::<Ipv6Addr>().is_ok(),
        None => host.parse::<Ipv4Addr>().is_ok() || is_dns_name(host),
    };
    port_ok && host_ok
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(hex: &str) -> Option<[u8; 32]> {
    let nibble = |digit: u8| match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    };
    if hex.len() != 64 {
        return None;
    }
    let mut bytes = [0; 32];
    for (byte, pair) in bytes.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(bytes)
}

/// A DNS name as certificates and endpoints accept it.
pub fn is_dns_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA_HASH: [u8; 32] = [0xab; 32];

    fn new_token() -> BootstrapToken {
        BootstrapToken::generate("master.example.com:7443", CA_HASH).unwrap()
    }

    fn malformed(token: &str) -> &'static str {
        match BootstrapToken::parse(token) {
            Err(TokenFormatError::Malformed(reason)) => reason,
            other => panic!("{token:?} parsed as {other:?}"),
        }
    }

    /// `encoded` with field `index` replaced.
    fn with_field(encoded: &str, index: usize, value: &str) -> String {
        let mut fields: Vec<&str> = encoded.split('.').collect();
        fields[index] = value;
        fields.join(".")
    }

    #[test]
    fn encode_parse_round_trip() {
        for endpoint in [
            "master.example.com:7443",
            "10.0.0.1:1",
            "[2001:db8::1]:65535",
        ] {
            let token = BootstrapToken::generate(endpoint, CA_HASH).unwrap();
            let encoded = token.encode();
            assert!(encoded.starts_with("weft1."), "{encoded}");
            assert!(encoded.contains(&"ab".repeat(32)));
            let parsed = BootstrapToken::parse(&format!("  {encoded}\n")).unwrap();
            assert_eq!(parsed.encode(), encoded);
            assert_eq!(parsed.token_id(), token.token_id());
            assert_eq!(parsed.master_public_endpoint(), endpoint);
            assert_eq!(parsed.ca_cert_sha256(), CA_HASH);
        }
    }

    #[test]
    fn generated_tokens_differ() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a.token_id(), b.token_id());
        assert_ne!(a.encode(), b.encode());
    }

    #[test]
    fn longest_endpoint_fits() {
        let host = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61),
        ]
        .join(".");
        let token = BootstrapToken::generate(&format!("{host}:65535"), CA_HASH).unwrap();
        assert!(token.encode().len() <= MAX_TOKEN_LEN);
        BootstrapToken::parse(&token.encode()).unwrap();
    }

    #[test]
    fn generate_refuses_bad_endpoints() {
        for endpoint in [
            "",
            "master",
            "master:",
            "master:0",
            "master:65536",
            "master:+80",
            ":7443",
            "2001:db8::1:7443",
            "[2001:db8::1]",
            "[master]:7443",
            "-master:7443",
            "mäster:7443",
            "master.example.com:7443/x",
        ] {
            assert_eq!(
                BootstrapToken::generate(endpoint, CA_HASH).unwrap_err(),
                TokenFormatError::InvalidEndpoint {
                    endpoint: endpoint.into()
                },
                "{endpoint:?}"
            );
        }
    }

    #[test]
    fn every_malformed_form_is_a_clean_error() {
        let good = new_token().encode();
        let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s);
        let cases = [
            ("".to_owned(), "does not start"),
            ("kube1.abc".to_owned(), "does not start"),
            (good.replacen("weft1", "weft2", 1), "another weft version"),
            (good.replacen("weft1", "WEFT1", 1), "does not start"),
            (good.rsplit_once('.').unwrap().0.to_owned(), "5 fields"),
            (format!("{good}.extra"), "5 fields"),
            (good.replace('.', ".."), "5 fields"),
            (with_field(&good, 1, "abc"), "id must be"),
            (with_field(&good, 1, "ABCDEFGH"), "id must be"),
            (with_field(&good, 2, &"a".repeat(31)), "secret must be"),
            (with_field(&good, 2, &"a".repeat(33)), "secret must be"),
            (with_field(&good, 2, &"a-".repeat(16)), "secret must be"),
            (with_field(&good, 3, "not base64!"), "master endpoint"),
            (
                with_field(&good, 3, &format!("{}=", b64("m:1"))),
                "master endpoint",
            ),
            (with_field(&good, 3, &b64("no-port")), "master endpoint"),
            (with_field(&good, 3, &b64("::1:7443")), "master endpoint"),
            (with_field(&good, 3, ""), "master endpoint"),
            (with_field(&good, 4, &"0".repeat(63)), "CA hash"),
            (with_field(&good, 4, &"0".repeat(66)), "CA hash"),
            (with_field(&good, 4, &"AB".repeat(32)), "CA hash"),
            (with_field(&good, 4, &"g0".repeat(32)), "CA hash"),
            (
                with_field(&good, 4, &format!("+{}", "0".repeat(63))),
                "CA hash",
            ),
            (
                format!("{good}{}", " x".repeat(MAX_TOKEN_LEN)),
                "longer than 512",
            ),
            (good.replacen('a', "ä", 1), "non-ASCII"),
        ];
        for (token, expected) in cases {
            let reason = malformed(&token);
            assert!(reason.contains(expected), "{token:?}: {reason}");
        }
    }

    #[test]
    fn errors_and_debug_never_show_the_secret() {
        let token = new_token();
        let secret = token.token_secret.clone();
        assert!(!format!("{token:?}").contains(&secret));
        assert!(format!("{token:?}").contains(token.token_id()));
        let encoded = token.encode();
        for broken in [
            with_field(&encoded, 2, &format!("{secret}x")),
            with_field(&encoded, 4, "zz"),
        ] {
            let message = BootstrapToken::parse(&broken).unwrap_err().to_string();
            assert!(!message.contains(&secret[..8]), "{message}");
        }
    }
}
