//! Bootstrap tokens in the store: created by `weft token create`, redeemed by Join,
//! swept when expired or used up. A redemption is a compare-and-swap on the record, so
//! two nodes racing for the last use of a token never both get in, on one master or
//! several.

use std::time::{Duration, SystemTime};

use super::record::{decode, encode, CorruptRecord};
use super::token::{BootstrapToken, TokenCredentials, TokenError, TokenRecord};
use crate::store::{Precondition, Store, StoreError};

const TOKENS_PREFIX: &str = "/tokens/";

/// How often a redemption retries after losing a race for the same record; each retry
/// means another redemption of this token succeeded meanwhile, so this bounds nothing
/// an honest cluster reaches.
const MAX_REDEEM_ATTEMPTS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum TokenRegistryError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("the token store failed: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Corrupt(#[from] CorruptRecord),
    #[error("too many nodes are joining with this token at once; try again")]
    Contended,
}

pub struct TokenRegistry<S> {
    store: S,
}

impl<S: Store> TokenRegistry<S> {
    pub fn new(store: S) -> Self {
        TokenRegistry { store }
    }

    /// Makes and stores a token; the returned token is the only copy of its secret.
    pub async fn create(
        &self,
        master_public_endpoint: &str,
        ca_cert_sha256: [u8; 32],
        ttl: Duration,
        uses: u32,
        replace_node_name: Option<String>,
        now: SystemTime,
    ) -> Result<BootstrapToken, TokenRegistryError> {
        let token = BootstrapToken::generate(master_public_endpoint, ca_cert_sha256)
            .map_err(TokenError::from)?;
        let record = TokenRecord::new(&token, now, ttl, uses, replace_node_name)?;
        // A new id never overwrites a live token, however unlikely the collision.
        self.store
            .put(
                &record_key(token.token_id()),
                encode(&record),
                Precondition::Absent,
            )
            .await?;
        Ok(token)
    }

    /// The presented token's record if it is good for a join now; spends nothing, so a
    /// join can be judged whole before the use is spent. Same answers as `redeem`.
    pub async fn check(
        &self,
        presented: &TokenCredentials,
        now: SystemTime,
    ) -> Result<TokenRecord, TokenRegistryError> {
        presented.validate().map_err(TokenError::from)?;
        let Some(entry) = self.store.get(&record_key(&presented.token_id)).await? else {
            return Err(TokenError::Invalid.into());
        };
        let record: TokenRecord = decode(&entry)?;
        record.check(presented, now)?;
        Ok(record)
    }

    /// Every stored token by id, used-up and expired ones until they are swept. Records
    /// hold no secret.
    pub async fn list(&self) -> Result<Vec<TokenRecord>, TokenRegistryError> {
        let entries = self.store.list(TOKENS_PREFIX).await?;
        Ok(entries.iter().map(decode).collect::<Result<_, _>>()?)
    }

    /// Deletes a token so it joins nothing more; `false` when there was none.
    pub async fn delete(&self, token_id: &str) -> Result<bool, TokenRegistryError> {
        if !weft_proto::bootstrap_token::is_token_id(token_id) {
            return Ok(false);
        }
        Ok(self
            .store
            .delete(&record_key(token_id), Precondition::None)
            .await?
            .is_some())
    }

    /// Spends one use of the presented token. An unknown id reads the same as a wrong
    /// secret, so a caller learns nothing about which tokens exist.
    pub async fn redeem(
        &self,
        presented: &TokenCredentials,
        now: SystemTime,
    ) -> Result<(), TokenRegistryError> {
        presented.validate().map_err(TokenError::from)?;
        let key = record_key(&presented.token_id);
        for _ in 0..MAX_REDEEM_ATTEMPTS {
            let Some(entry) = self.store.get(&key).await? else {
                return Err(TokenError::Invalid.into());
            };
            let mut record: TokenRecord = decode(&entry)?;
            record.redeem(presented, now)?;
            let written = self
                .store
                .put(
                    &key,
                    encode(&record),
                    Precondition::ModRevision(entry.mod_revision),
                )
                .await;
            match written {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict { .. }) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(TokenRegistryError::Contended)
    }

    /// Deletes expired and used-up tokens; returns how many. A record redeemed while
    /// the sweep runs is left for the next sweep.
    pub async fn sweep(&self, now: SystemTime) -> Result<usize, TokenRegistryError> {
        let mut swept = 0;
        for entry in self.store.list(TOKENS_PREFIX).await? {
            let record: TokenRecord = decode(&entry)?;
            if !record.is_sweepable(now) {
                continue;
            }
            let deleted = self
                .store
                .delete(&entry.key, Precondition::ModRevision(entry.mod_revision))
                .await;
            match deleted {
                Ok(Some(_)) => swept += 1,
                Ok(None) | Err(StoreError::Conflict { .. }) => {}
                Err(other) => return Err(other.into()),
            }
        }
        Ok(swept)
    }
}

fn record_key(token_id: &str) -> String {
    format!("{TOKENS_PREFIX}{token_id}")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::core::token::TOKEN_SWEEP_GRACE;
    use crate::store::sqlite::SqliteStore;

    const ENDPOINT: &str = "master.example.com:7443";

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_750_000_000)
    }

    fn registry() -> TokenRegistry<SqliteStore> {
        TokenRegistry::new(SqliteStore::open_in_memory().unwrap())
    }

    async fn create(registry: &TokenRegistry<SqliteStore>, uses: u32) -> BootstrapToken {
        registry
            .create(
                ENDPOINT,
                [7; 32],
                Duration::from_secs(600),
                uses,
                None,
                now(),
            )
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn uses_are_counted_down_and_then_refused() {
        let registry = registry();
        let token = create(&registry, 2).await;
        registry.redeem(&token.credentials(), now()).await.unwrap();
        registry.redeem(&token.credentials(), now()).await.unwrap();
        assert!(matches!(
            registry.redeem(&token.credentials(), now()).await,
            Err(TokenRegistryError::Token(TokenError::UsedUp))
        ));
    }

    #[tokio::test]
    async fn expired_forged_and_unknown_tokens_are_refused_and_change_nothing() {
        let registry = registry();
        let token = create(&registry, 1).await;
        let before = registry.store.current_revision().await.unwrap();

        let later = now() + Duration::from_secs(601);
        assert!(matches!(
            registry.redeem(&token.credentials(), later).await,
            Err(TokenRegistryError::Token(TokenError::Expired { .. }))
        ));
        // Same id, another secret: a forgery.
        let encoded = token.encode();
        let mut fields: Vec<&str> = encoded.split('.').collect();
        let forged_secret = "a".repeat(32);
        fields[2] = &forged_secret;
        let forged = BootstrapToken::parse(&fields.join(".")).unwrap();
        assert!(matches!(
            registry.redeem(&forged.credentials(), now()).await,
            Err(TokenRegistryError::Token(TokenError::Invalid))
        ));
        let unknown = BootstrapToken::generate(ENDPOINT, [7; 32]).unwrap();
        assert!(matches!(
            registry.redeem(&unknown.credentials(), now()).await,
            Err(TokenRegistryError::Token(TokenError::Invalid))
        ));
        assert_eq!(registry.store.current_revision().await.unwrap(), before);
        // The real token still works: the failures spent nothing.
        registry.redeem(&token.credentials(), now()).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_nodes_never_both_spend_the_last_use() {
        let registry = Arc::new(registry());
        let token = create(&registry, 1).await;
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let registry = Arc::clone(&registry);
                let token = token.clone();
                tokio::spawn(async move { registry.redeem(&token.credentials(), now()).await })
            })
            .collect();
        let mut admitted = 0;
        for racer in racers {
            match racer.await.unwrap() {
                Ok(()) => admitted += 1,
                Err(TokenRegistryError::Token(TokenError::UsedUp)) => {}
                Err(other) => panic!("unexpected: {other}"),
            }
        }
        assert_eq!(admitted, 1);
    }

    #[tokio::test]
    async fn sweep_deletes_expired_and_used_up_tokens_only() {
        let registry = registry();
        let used_up = create(&registry, 1).await;
        registry
            .redeem(&used_up.credentials(), now())
            .await
            .unwrap();
        let short = registry
            .create(ENDPOINT, [7; 32], Duration::from_secs(60), 1, None, now())
            .await
            .unwrap();
        let live = create(&registry, 1).await;

        // Within the grace period both still say why they are refused.
        let soon = now() + Duration::from_secs(120);
        assert_eq!(registry.sweep(soon).await.unwrap(), 0);
        assert!(matches!(
            registry.redeem(&short.credentials(), soon).await,
            Err(TokenRegistryError::Token(TokenError::Expired { .. }))
        ));
        let later = now() + Duration::from_secs(120) + TOKEN_SWEEP_GRACE;
        let swept = registry.sweep(later).await.unwrap();
        assert_eq!(swept, 2);
        let left = registry.store.list(TOKENS_PREFIX).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].key, record_key(live.token_id()));
        assert!(matches!(
            registry.redeem(&short.credentials(), now()).await,
            Err(TokenRegistryError::Token(TokenError::Invalid))
        ));
    }
}
