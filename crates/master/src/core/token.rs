//! Bootstrap tokens as the master keeps them: the SHA-256 of the secret, an expiry and a
//! count of uses left. The token's string form is `weft_proto::bootstrap_token`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
pub use weft_proto::bootstrap_token::{BootstrapToken, TokenCredentials, TokenFormatError};

pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(10 * 60);
pub const MIN_TOKEN_TTL: Duration = Duration::from_secs(60);
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);
pub const MAX_TOKEN_USES: u32 = 1000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Format(#[from] TokenFormatError),
    #[error("invalid token TTL {ttl:?}: it must be between 1m and 7d")]
    InvalidTtl { ttl: Duration },
    #[error("invalid token uses {uses}: it must be between 1 and {MAX_TOKEN_USES}")]
    InvalidUses { uses: u32 },
    #[error("invalid --replace node name: {0}")]
    InvalidReplaceName(String),
    #[error("a --replace token replaces one node once; drop --uses {uses}")]
    ReplaceUses { uses: u32 },
    #[error(
        "the bootstrap token is not valid for this cluster (unknown id or wrong secret); \
         check it was copied whole, or create a new one with `weft token create`"
    )]
    Invalid,
    #[error(
        "the bootstrap token expired at {}; create a new one with `weft token create`",
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(*expires_at))
    )]
    Expired { expires_at: u64 },
    #[error(
        "the bootstrap token has no uses left; create a new one with `weft token create --uses N`"
    )]
    UsedUp,
}

/// What the master stores for a token, under `token_id`. Times are unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub token_id: String,
    pub secret_sha256: [u8; 32],
    pub created_at: u64,
    pub expires_at: u64,
    pub uses_left: u32,
    /// When the last use was spent; 0 while uses are left.
    #[serde(default)]
    pub used_up_at: u64,
    /// `weft token create --replace NAME`: the one node name this token joins, and the
    /// node of that name it may replace. Without it a join never takes an existing name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_node_name: Option<String>,
}

/// A useless token is kept this long before it is swept, so that a late joiner hears
/// that it expired or is used up rather than that it never existed.
pub const TOKEN_SWEEP_GRACE: Duration = Duration::from_secs(10 * 60);

impl TokenRecord {
    pub fn new(
        token: &BootstrapToken,
        now: SystemTime,
        ttl: Duration,
        uses: u32,
        replace_node_name: Option<String>,
    ) -> Result<Self, TokenError> {
        if !(MIN_TOKEN_TTL..=MAX_TOKEN_TTL).contains(&ttl) {
            return Err(TokenError::InvalidTtl { ttl });
        }
        if !(1..=MAX_TOKEN_USES).contains(&uses) {
            return Err(TokenError::InvalidUses { uses });
        }
        if let Some(name) = &replace_node_name {
            weft_taskbook::objects::validate_name(name).map_err(TokenError::InvalidReplaceName)?;
            if uses != 1 {
                return Err(TokenError::ReplaceUses { uses });
            }
        }
        let created_at = unix_secs(now);
        Ok(Self {
            token_id: token.token_id().to_owned(),
            secret_sha256: Sha256::digest(&token.credentials().token_secret).into(),
            created_at,
            expires_at: created_at + ttl.as_secs(),
            uses_left: uses,
            used_up_at: 0,
            replace_node_name,
        })
    }

    /// Spends one use of the token if `presented` is this token and it is still good.
    pub fn redeem(
        &mut self,
        presented: &TokenCredentials,
        now: SystemTime,
    ) -> Result<(), TokenError> {
        self.check(presented, now)?;
        self.uses_left -= 1;
        if self.uses_left == 0 {
            self.used_up_at = unix_secs(now);
        }
        Ok(())
    }

    /// Whether `presented` is this token and it has a use left, spending nothing.
    pub fn check(&self, presented: &TokenCredentials, now: SystemTime) -> Result<(), TokenError> {
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
        Ok(())
    }

    pub fn is_expired(&self, now: SystemTime) -> bool {
        unix_secs(now) >= self.expires_at
    }

    /// The sweeper deletes the records for which this holds: useless for a while.
    pub fn is_sweepable(&self, now: SystemTime) -> bool {
        let grace = TOKEN_SWEEP_GRACE.as_secs();
        let now = unix_secs(now);
        now >= self.expires_at + grace || (self.uses_left == 0 && now >= self.used_up_at + grace)
    }
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since_epoch| since_epoch.as_secs())
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

    /// `encoded` with field `index` replaced.
    fn with_field(encoded: &str, index: usize, value: &str) -> String {
        let mut fields: Vec<&str> = encoded.split('.').collect();
        fields[index] = value;
        fields.join(".")
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
                TokenRecord::new(&token, now, ttl, 1, None),
                Err(TokenError::InvalidTtl { ttl })
            );
        }
        for uses in [0, MAX_TOKEN_USES + 1] {
            assert_eq!(
                TokenRecord::new(&token, now, DEFAULT_TOKEN_TTL, uses, None),
                Err(TokenError::InvalidUses { uses })
            );
        }
        TokenRecord::new(&token, now, MIN_TOKEN_TTL, MAX_TOKEN_USES, None).unwrap();
        let replace = Some("web-1".to_string());
        assert_eq!(
            TokenRecord::new(&token, now, DEFAULT_TOKEN_TTL, 2, replace.clone()),
            Err(TokenError::ReplaceUses { uses: 2 })
        );
        assert!(matches!(
            TokenRecord::new(&token, now, DEFAULT_TOKEN_TTL, 1, Some("Web 1".into())),
            Err(TokenError::InvalidReplaceName(_))
        ));
        TokenRecord::new(&token, now, DEFAULT_TOKEN_TTL, 1, replace).unwrap();
        TokenRecord::new(&token, now, MAX_TOKEN_TTL, 1, None).unwrap();
    }

    #[test]
    fn record_stores_only_the_secret_hash() {
        let token = new_token();
        let record = TokenRecord::new(&token, at(1_000), DEFAULT_TOKEN_TTL, 2, None).unwrap();
        assert_eq!(record.token_id, token.token_id());
        assert_eq!((record.created_at, record.expires_at), (1_000, 1_600));
        let json = serde_json::to_string(&record).unwrap();
        assert!(!json.contains(&token.credentials().token_secret));
        assert_eq!(serde_json::from_str::<TokenRecord>(&json).unwrap(), record);
    }

    #[test]
    fn redeem_spends_uses_until_none_are_left() {
        let token = new_token();
        let mut record = TokenRecord::new(&token, at(1_000), DEFAULT_TOKEN_TTL, 2, None).unwrap();
        let presented = BootstrapToken::parse(&token.encode()).unwrap();
        record.redeem(&presented.credentials(), at(1_001)).unwrap();
        assert_eq!(record.uses_left, 1);
        assert!(!record.is_sweepable(at(1_001)));
        record.redeem(&presented.credentials(), at(1_002)).unwrap();
        assert_eq!(record.uses_left, 0);
        assert_eq!(
            record.redeem(&presented.credentials(), at(1_003)),
            Err(TokenError::UsedUp)
        );
        assert!(
            !record.is_sweepable(at(1_003)),
            "kept a while to say it is used up"
        );
        assert!(record.is_sweepable(at(1_002 + TOKEN_SWEEP_GRACE.as_secs())));
        assert!(!record.is_expired(at(1_003)));
    }

    #[test]
    fn redeem_refuses_an_expired_token() {
        let token = new_token();
        let mut record = TokenRecord::new(&token, at(1_000), DEFAULT_TOKEN_TTL, 1, None).unwrap();
        assert!(!record.is_expired(at(1_599)));
        assert!(record.is_expired(at(1_600)));
        let error = record.redeem(&token.credentials(), at(1_600)).unwrap_err();
        assert_eq!(error, TokenError::Expired { expires_at: 1_600 });
        assert!(error
            .to_string()
            .contains("expired at 1970-01-01T00:26:40Z"));
        assert_eq!(record.uses_left, 1);
        assert!(
            !record.is_sweepable(at(1_600)),
            "kept a while to say it expired"
        );
        assert!(record.is_sweepable(at(1_600 + TOKEN_SWEEP_GRACE.as_secs())));
    }

    #[test]
    fn redeem_refuses_a_wrong_secret_or_id_before_saying_anything_else() {
        let token = new_token();
        let mut record = TokenRecord::new(&token, at(1_000), DEFAULT_TOKEN_TTL, 1, None).unwrap();
        let other_secret = new_token().encode();
        let wrong_secret =
            BootstrapToken::parse(&with_field(&other_secret, 1, token.token_id())).unwrap();
        let wrong_id =
            BootstrapToken::parse(&token.encode().replacen(token.token_id(), "zzzzzzzz", 1))
                .unwrap();
        for presented in [&wrong_secret, &wrong_id] {
            assert_eq!(
                record.redeem(&presented.credentials(), at(1_001)),
                Err(TokenError::Invalid)
            );
            assert_eq!(
                record.redeem(&presented.credentials(), at(9_999)),
                Err(TokenError::Invalid)
            );
        }
        assert_eq!(record.uses_left, 1);
        record.redeem(&token.credentials(), at(1_001)).unwrap();
    }
}
