//! Bootstrap tokens: one string that lets a new node in, and tells it which master to
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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::pki::is_dns_name;

const TOKEN_PREFIX: &str = "weft1";
const TOKEN_ID_LEN: usize = 8;
const TOKEN_SECRET_LEN: usize = 32;
const TOKEN_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// The longest endpoint (a 253-character DNS name and `:65535`) makes a 459-byte token.
pub const MAX_TOKEN_LEN: usize = 512;

pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(10 * 60);
pub const MIN_TOKEN_TTL: Duration = Duration::from_secs(60);
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);
pub const MAX_TOKEN_USES: u32 = 1000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The reason is static so that no part of a mistyped secret can reach a log.
    #[error("malformed bootstrap token: {0}; pass the whole line `weft token create` printed")]
    Malformed(&'static str),
    #[error(
        "invalid master public endpoint {endpoint:?}: expected HOST:PORT with IPv6 in \
         brackets, e.g. master.example.com:7443 or [2001:db8::1]:7443"
    )]
    InvalidEndpoint { endpoint: String },
    #[error("invalid token TTL {ttl:?}: it must be between 1m and 7d")]
    InvalidTtl { ttl: Duration },
    #[error("invalid token uses {uses}: it must be between 1 and {MAX_TOKEN_USES}")]
    InvalidUses { uses: u32 },
    #[error(
        "the bootstrap token is not valid for this cluster (unknown id or wrong secret); \
         check it was copied whole, or create a new one with `weft token create`"
    )]
    Invalid,
    #[error(
        "the bootstrap token expired at {}; create a new one with `weft token create`",
        utc_timestamp(*expires_at)
    )]
    Expired { expires_at: u64 },
    #[error(
        "the bootstrap token has no uses left; create a new one with `weft token create --uses N`"
    )]
    UsedUp,
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
    ) -> Result<Self, TokenError> {
        // Refuse here rather than print a token no node could parse.
        if !is_endpoint(master_public_endpoint) {
            return Err(TokenError::InvalidEndpoint {
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

    pub fn encode(&self) -> String {
        format!(
            "{TOKEN_PREFIX}.{}.{}.{}.{}",
            self.token_id,
            self.token_secret,
            URL_SAFE_NO_PAD.encode(&self.master_public_endpoint),
            to_hex(&self.ca_cert_sha256)
        )
    }

    pub fn parse(token: &str) -> Result<Self, TokenError> {
        use TokenError::Malformed;
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
        if !is_token_chars(token_id, TOKEN_ID_LEN) {
            return Err(Malformed("the id must be 8 characters of a-z and 0-9"));
        }
        if !is_token_chars(token_secret, TOKEN_SECRET_LEN) {
            return Err(Malformed("the secret must be 32 characters of a-z and 0-9"));
        }
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

/// What the master stores for a token, under `token_id`. Times are unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub token_id: String,
    pub secret_sha256: [u8; 32],
    pub created_at: u64,
    pub expires_at: u64,
    pub uses_left: u32,
}

impl TokenRecord {
    pub fn new(
        token: &BootstrapToken,
        now: SystemTime,
        ttl: Duration,
        uses: u32,
    ) -> Result<Self, TokenError> {
        if !(MIN_TOKEN_TTL..=MAX_TOKEN_TTL).contains(&ttl) {
            return Err(TokenError::InvalidTtl { ttl });
        }
        if !(1..=MAX_TOKEN_USES).contains(&uses) {
            return Err(TokenError::InvalidUses { uses });
        }
        let created_at = unix_secs(now);
        Ok(Self {
            token_id: token.token_id.clone(),
            secret_sha256: Sha256::digest(&token.token_secret).into(),
            created_at,
            expires_at: created_at + ttl.as_secs(),
            uses_left: uses,
        })
    }

    /// Spends one use of the token if `presented` is this token and it is still good.
    pub fn redeem(
        &mut self,
        presented: &BootstrapToken,
        now: SystemTime,
    ) -> Result<(), TokenError> {
        // Authenticate first: only the secret's holder may learn that a token expired
        // or is used up.
        let presented_sha256: [u8; 32] = Sha256::digest(&presented.token_secret).into();
        let secret_matches: bool = presented_sha256.ct_eq(&self.secret_sha256).into();
        if presented.token_id != self.token_id || !secret_matches {
            return Err(TokenError::Invalid);
        }
        if self.is_expired(now) {
            return Err(TokenError::Expired {
                expires_at: self.expires_at,
            });
        }
        if self.uses_left == 0 {
            return Err(TokenError::UsedUp);
        }
        self.uses_left -= 1;
        Ok(())
    }

    pub fn is_expired(&self, now: SystemTime) -> bool {
        unix_secs(now) >= self.expires_at
    }

    /// The sweeper deletes the records for which this holds.
    pub fn is_sweepable(&self, now: SystemTime) -> bool {
        self.is_expired(now) || self.uses_left == 0
    }
}

fn random_token_chars(rng: &mut impl Rng, len: usize) -> String {
    (0..len)
        .map(|_| char::from(TOKEN_ALPHABET[rng.random_range(0..TOKEN_ALPHABET.len())]))
        .collect()
}

fn is_token_chars(field: &str, len: usize) -> bool {
    field.len() == len && field.bytes().all(|b| TOKEN_ALPHABET.contains(&b))
}

fn is_endpoint(endpoint: &str) -> bool {
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

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since_epoch| since_epoch.as_secs())
}

/// RFC 3339 in UTC, via Howard Hinnant's `civil_from_days`, to keep a date library out
/// of the one error message that needs a date.
fn utc_timestamp(unix_secs: u64) -> String {
    let (days, secs_of_day) = ((unix_secs / 86_400) as i64, unix_secs % 86_400);
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA_HASH: [u8; 32] = [0xab; 32];

    fn at(unix_secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(unix_secs)
    }

    fn new_token() -> BootstrapToken {
        BootstrapToken::generate("master.example.com:7443", CA_HASH).unwrap()
    }

    fn malformed(token: &str) -> &'static str {
        match BootstrapToken::parse(token) {
            Err(TokenError::Malformed(reason)) => reason,
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
                TokenError::InvalidEndpoint {
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

    #[test]
    fn record_bounds() {
        let now = at(1_000);
        let token = new_token();
        for ttl in [
            Duration::from_secs(59),
            MAX_TOKEN_TTL + Duration::from_secs(1),
        ] {
            assert_eq!(
                TokenRecord::new(&token, now, ttl, 1),
                Err(TokenError::InvalidTtl { ttl })
            );
        }
        for uses in [0, MAX_TOKEN_USES + 1] {
            assert_eq!(
                TokenRecord::new(&token, now, DEFAULT_TOKEN_TTL, uses),
                Err(TokenError::InvalidUses { uses })
            );
        }
        TokenRecord::new(&token, now, MIN_TOKEN_TTL, MAX_TOKEN_USES).unwrap();
        TokenRecord::new(&token, now, MAX_TOKEN_TTL, 1).unwrap();
    }

    #[test]
    fn record_stores_only_the_secret_hash() {
        let token = new_token();
        let record = TokenRecord::new(&token, at(1_000), DEFAULT_TOKEN_TTL, 2).unwrap();
        assert_eq!(record.token_id, token.token_id());
        assert_eq!((record.created_at, record.expires_at), (1_000, 1_600));
        let json = serde_json::to_string(&record).unwrap();
        assert!(!json.contains(&token.token_secret));
        assert_eq!(serde_json::from_str::<TokenRecord>(&json).unwrap(), record);
    }

    #[test]
    fn redeem_spends_uses_until_none_are_left() {
        let token = new_token();
        let mut record = TokenRecord::new(&token, at(1_000), DEFAULT_TOKEN_TTL, 2).unwrap();
        let presented = BootstrapToken::parse(&token.encode()).unwrap();
        record.redeem(&presented, at(1_001)).unwrap();
        assert_eq!(record.uses_left, 1);
        assert!(!record.is_sweepable(at(1_001)));
        record.redeem(&presented, at(1_002)).unwrap();
        assert_eq!(record.uses_left, 0);
        assert_eq!(
            record.redeem(&presented, at(1_003)),
            Err(TokenError::UsedUp)
        );
        assert!(record.is_sweepable(at(1_003)));
        assert!(!record.is_expired(at(1_003)));
    }

    #[test]
    fn redeem_refuses_an_expired_token() {
        let token = new_token();
        let mut record = TokenRecord::new(&token, at(1_000), DEFAULT_TOKEN_TTL, 1).unwrap();
        assert!(!record.is_expired(at(1_599)));
        assert!(record.is_expired(at(1_600)));
        let error = record.redeem(&token, at(1_600)).unwrap_err();
        assert_eq!(error, TokenError::Expired { expires_at: 1_600 });
        assert!(error
            .to_string()
            .contains("expired at 1970-01-01T00:26:40Z"));
        assert_eq!(record.uses_left, 1);
        assert!(record.is_sweepable(at(1_600)));
    }

    #[test]
    fn redeem_refuses_a_wrong_secret_or_id_before_saying_anything_else() {
        let token = new_token();
        let mut record = TokenRecord::new(&token, at(1_000), DEFAULT_TOKEN_TTL, 1).unwrap();
        let other_secret = new_token().encode();
        let wrong_secret =
            BootstrapToken::parse(&with_field(&other_secret, 1, token.token_id())).unwrap();
        let wrong_id =
            BootstrapToken::parse(&token.encode().replacen(token.token_id(), "zzzzzzzz", 1))
                .unwrap();
        for presented in [&wrong_secret, &wrong_id] {
            assert_eq!(
                record.redeem(presented, at(1_001)),
                Err(TokenError::Invalid)
            );
            assert_eq!(
                record.redeem(presented, at(9_999)),
                Err(TokenError::Invalid)
            );
        }
        assert_eq!(record.uses_left, 1);
        record.redeem(&token, at(1_001)).unwrap();
    }

    #[test]
    fn utc_timestamps() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_735_689_599), "2024-12-31T23:59:59Z");
    }
}
