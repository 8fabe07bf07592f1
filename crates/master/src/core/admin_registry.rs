//! The admins of the cluster, under `/admins/<name>`: each admin's certificates that
//! are still good, or the time it was revoked. Every adminapi call is judged against
//! this list, so an admin certificate the CA signed is refused unless its serial is
//! listed under its name: revoking is removing the admin's serials, on every master at
//! once since they share the store.
//!
//! The check runs on every call and must not cost a store read each time: each master
//! keeps a copy ([`AdminRegistry::check`]) that its own writes update at once and that
//! [`AdminRegistry::follow`] reloads every [`RELOAD_INTERVAL`], so another master's
//! revocation lands within that. A copy older than [`STALE_AFTER`] (the store is
//! unreachable) refuses every admin rather than trust what may have been revoked since.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::pki::CertTerms;
use super::record::{decode, encode, CorruptRecord};
use crate::store::{Precondition, Store, StoreError};

const ADMINS_PREFIX: &str = "/admins/";
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);
pub const STALE_AFTER: Duration = Duration::from_secs(30);
/// Certificates kept per admin: a renewal adds one, and the oldest beyond this go, so
/// a credential renewed over and over cannot grow its record without bound.
const MAX_CERTS_PER_ADMIN: usize = 8;
/// Admins the cluster keeps, revoked ones included.
pub const MAX_ADMINS: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminRecord {
    pub admin_name: String,
    /// Oldest first. Empty once revoked.
    pub certs: Vec<AdminCert>,
    pub created_unix_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_unix_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminCert {
    pub serial: String,
    pub not_after_unix_ms: u64,
}

impl From<&CertTerms> for AdminCert {
    fn from(terms: &CertTerms) -> Self {
        AdminCert {
            serial: terms.serial.clone(),
            not_after_unix_ms: terms.not_after_unix_ms,
        }
    }
}

impl AdminRecord {
    /// The end of the admin's newest certificate.
    pub fn not_after_unix_ms(&self) -> Option<u64> {
        self.certs.iter().map(|cert| cert.not_after_unix_ms).max()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminRegistryError {
    #[error("the admin store failed: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Corrupt(#[from] CorruptRecord),
    #[error(
        "admin `{0}` exists; revoke it first (`weft admin revoke {0}`) or choose another name"
    )]
    Exists(String),
    #[error("there is no admin `{0}`; `weft admin list` shows them")]
    Unknown(String),
    #[error("admin `{0}` was revoked")]
    Revoked(String),
    #[error("the cluster has {MAX_ADMINS} admins already; revoke unused ones first")]
    TooMany,
    #[error("admin `{0}` changed while this was written; try again")]
    Conflict(String),
}

/// Why an admin certificate is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminRefusal {
    #[error(
        "admin `{0}` was revoked; ask another admin for new credentials (`weft admin create`)"
    )]
    Revoked(String),
    #[error("this certificate of admin `{0}` is not (or no longer) one of the cluster's admin credentials; use the newest credentials file, or ask another admin for new ones")]
    NotListed(String),
    #[error(
        "the master cannot read the list of admins from its store right now; try again shortly"
    )]
    ListUnavailable,
}

#[derive(Default)]
struct Copy {
    admins: BTreeMap<String, AdminRecord>,
    loaded: Option<Instant>,
}

#[derive(Clone)]
pub struct AdminRegistry<S> {
    store: S,
    copy: Arc<RwLock<Copy>>,
}

impl<S: Store> AdminRegistry<S> {
    pub fn new(store: S) -> Self {
        AdminRegistry {
            store,
            copy: Arc::default(),
        }
    }

    /// Sorted by name.
    pub async fn list(&self) -> Result<Vec<AdminRecord>, AdminRegistryError> {
        let entries = self.store.list(ADMINS_PREFIX).await?;
        Ok(entries.iter().map(decode).collect::<Result<_, _>>()?)
    }

    /// Records an admin certificate made outside the adminapi (`weft master init`'s),
    /// unless the name is known already, revoked or not.
    pub async fn adopt(
        &self,
        admin_name: &str,
        cert: &CertTerms,
        now_unix_ms: u64,
    ) -> Result<(), AdminRegistryError> {
        let record = new_record(admin_name, cert, now_unix_ms);
        match self
            .store
            .put(
                &admin_key(admin_name),
                encode(&record),
                Precondition::Absent,
            )
            .await
        {
            Ok(_) => {
                self.remember(record);
                Ok(())
            }
            Err(StoreError::Conflict { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// A new admin; a revoked admin's name may be given out again.
    pub async fn create(
        &self,
        admin_name: &str,
        cert: &CertTerms,
        now_unix_ms: u64,
    ) -> Result<(), AdminRegistryError> {
        let key = admin_key(admin_name);
        let precondition = match self.store.get(&key).await? {
            Some(entry) => {
                let existing: AdminRecord = decode(&entry)?;
                if existing.revoked_unix_ms.is_none() {
                    return Err(AdminRegistryError::Exists(admin_name.to_string()));
                }
                Precondition::ModRevision(entry.mod_revision)
            }
            None => {
                if self.store.list(ADMINS_PREFIX).await?.len() >= MAX_ADMINS {
                    return Err(AdminRegistryError::TooMany);
                }
                Precondition::Absent
            }
        };
        let record = new_record(admin_name, cert, now_unix_ms);
        self.write(&key, &record, precondition).await
    }

    /// Adds a renewed certificate to the admin's; the older ones stay good until they
    /// expire (a copy of the credentials elsewhere keeps working until then).
    pub async fn renewed(
        &self,
        admin_name: &str,
        cert: &CertTerms,
        now_unix_ms: u64,
    ) -> Result<(), AdminRegistryError> {
        let key = admin_key(admin_name);
        let entry = self
            .store
            .get(&key)
            .await?
            .ok_or_else(|| AdminRegistryError::Unknown(admin_name.to_string()))?;
        let mut record: AdminRecord = decode(&entry)?;
        if record.revoked_unix_ms.is_some() {
            return Err(AdminRegistryError::Revoked(admin_name.to_string()));
        }
        record
            .certs
            .retain(|kept| kept.not_after_unix_ms > now_unix_ms);
        record.certs.push(cert.into());
        let excess = record.certs.len().saturating_sub(MAX_CERTS_PER_ADMIN);
        record.certs.drain(..excess);
        self.write(&key, &record, Precondition::ModRevision(entry.mod_revision))
            .await
    }

    /// Every certificate of the admin stops working; `false` when there was no such
    /// admin or it was revoked already.
    pub async fn revoke(
        &self,
        admin_name: &str,
        now_unix_ms: u64,
    ) -> Result<bool, AdminRegistryError> {
        let key = admin_key(admin_name);
        let Some(entry) = self.store.get(&key).await? else {
            return Ok(false);
        };
        let mut record: AdminRecord = decode(&entry)?;
        if record.revoked_unix_ms.is_some() {
            return Ok(false);
        }
        record.certs.clear();
        record.revoked_unix_ms = Some(now_unix_ms);
        self.write(&key, &record, Precondition::ModRevision(entry.mod_revision))
            .await?;
        Ok(true)
    }

    /// Whether the admin certificate `serial` of `admin_name` is good, by this master's
    /// copy of the list. Expiry is the TLS layer's to check.
    pub fn check(&self, admin_name: &str, serial: &str) -> Result<(), AdminRefusal> {
        let copy = self.copy.read().unwrap_or_else(PoisonError::into_inner);
        match copy.loaded {
            Some(loaded) if loaded.elapsed() < STALE_AFTER => {}
            _ => return Err(AdminRefusal::ListUnavailable),
        }
        match copy.admins.get(admin_name) {
            Some(record) if record.revoked_unix_ms.is_some() => {
                Err(AdminRefusal::Revoked(admin_name.to_string()))
            }
            Some(record) if record.certs.iter().any(|cert| cert.serial == serial) => Ok(()),
            _ => Err(AdminRefusal::NotListed(admin_name.to_string())),
        }
    }

    /// Reads the whole list into this master's copy.
    pub async fn reload(&self) -> Result<(), AdminRegistryError> {
        let admins = self
            .list()
            .await?
            .into_iter()
            .map(|record| (record.admin_name.clone(), record))
            .collect();
        let mut copy = self.copy.write().unwrap_or_else(PoisonError::into_inner);
        *copy = Copy {
            admins,
            loaded: Some(Instant::now()),
        };
        Ok(())
    }

    /// Keeps this master's copy current, for as long as the master runs.
    pub async fn follow(self) {
        let mut interval = tokio::time::interval(RELOAD_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if let Err(error) = self.reload().await {
                tracing::warn!(%error, "the list of admins could not be reloaded");
            }
        }
    }

    async fn write(
        &self,
        key: &str,
        record: &AdminRecord,
        precondition: Precondition,
    ) -> Result<(), AdminRegistryError> {
        match self.store.put(key, encode(record), precondition).await {
            Ok(_) => {
                self.remember(record.clone());
                Ok(())
            }
            Err(StoreError::Conflict { .. }) => {
                Err(AdminRegistryError::Conflict(record.admin_name.clone()))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// This master's own write counts at once, not at the next reload.
    fn remember(&self, record: AdminRecord) {
        let mut copy = self.copy.write().unwrap_or_else(PoisonError::into_inner);
        copy.admins.insert(record.admin_name.clone(), record);
    }
}

fn new_record(admin_name: &str, cert: &CertTerms, now_unix_ms: u64) -> AdminRecord {
    AdminRecord {
        admin_name: admin_name.to_string(),
        certs: vec![cert.into()],
        created_unix_ms: now_unix_ms,
        revoked_unix_ms: None,
    }
}

fn admin_key(admin_name: &str) -> String {
    format!("{ADMINS_PREFIX}{admin_name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn terms(serial: &str, not_after_unix_ms: u64) -> CertTerms {
        CertTerms {
            serial: serial.into(),
            not_after_unix_ms,
        }
    }

    #[tokio::test]
    async fn listed_serials_pass_revoked_and_unknown_ones_do_not() {
        let admins = AdminRegistry::new(SqliteStore::open_in_memory().unwrap());
        assert_eq!(
            admins.check("admin", "01"),
            Err(AdminRefusal::ListUnavailable)
        );
        admins
            .adopt("admin", &terms("01", 5_000), 1_000)
            .await
            .unwrap();
        // A second master adopting its copy of the same file changes nothing.
        admins
            .adopt("admin", &terms("09", 5_000), 1_000)
            .await
            .unwrap();
        admins.reload().await.unwrap();
        assert_eq!(admins.check("admin", "01"), Ok(()));
        assert!(matches!(
            admins.check("admin", "09"),
            Err(AdminRefusal::NotListed(_))
        ));
        assert!(matches!(
            admins.check("alice", "01"),
            Err(AdminRefusal::NotListed(_))
        ));

        admins
            .create("alice", &terms("02", 5_000), 1_000)
            .await
            .unwrap();
        assert!(matches!(
            admins.create("alice", &terms("03", 5_000), 1_000).await,
            Err(AdminRegistryError::Exists(_))
        ));
        admins
            .renewed("alice", &terms("04", 9_000), 4_000)
            .await
            .unwrap();
        assert_eq!(admins.check("alice", "02"), Ok(()));
        assert_eq!(admins.check("alice", "04"), Ok(()));
        // An expired certificate is dropped at the next renewal.
        admins
            .renewed("alice", &terms("05", 12_000), 6_000)
            .await
            .unwrap();
        assert!(admins.check("alice", "02").is_err());

        assert!(admins.revoke("alice", 7_000).await.unwrap());
        assert!(!admins.revoke("alice", 7_000).await.unwrap());
        assert!(matches!(
            admins.check("alice", "05"),
            Err(AdminRefusal::Revoked(_))
        ));
        assert!(matches!(
            admins.renewed("alice", &terms("06", 12_000), 7_000).await,
            Err(AdminRegistryError::Revoked(_))
        ));
        // The name can be given out again, with new credentials only.
        admins
            .create("alice", &terms("07", 15_000), 8_000)
            .await
            .unwrap();
        assert_eq!(admins.check("alice", "07"), Ok(()));
        assert!(admins.check("alice", "05").is_err());
        let names: Vec<_> = admins
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|record| record.admin_name)
            .collect();
        assert_eq!(names, ["admin", "alice"]);
    }

    #[tokio::test]
    async fn renewals_keep_a_bounded_number_of_certificates() {
        let admins = AdminRegistry::new(SqliteStore::open_in_memory().unwrap());
        admins
            .create("bob", &terms("00", 100_000), 0)
            .await
            .unwrap();
        for serial in 1..20 {
            admins
                .renewed("bob", &terms(&format!("{serial:02}"), 100_000), 0)
                .await
                .unwrap();
        }
        let record = admins.list().await.unwrap().remove(0);
        assert_eq!(record.certs.len(), MAX_CERTS_PER_ADMIN);
        assert_eq!(record.certs.last().unwrap().serial, "19");
    }
}
