//! Which master does the cluster's work. Several masters may serve one store (etcd):
//! all of them answer reads, applies, tokens and joins, but only the elected leader
//! holds sessions with the nodes and runs TaskBooks, so a task is never dispatched by
//! two masters. A master alone on its store (sqlite) always leads.
//!
//! The election itself belongs to the store (etcd's); this is what the rest of the
//! master sees of it: whether it leads now, and who does.

use std::future::Future;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::record::{decode, encode, CorruptRecord};
use crate::store::{Precondition, Store, StoreError};

const MASTERS_PREFIX: &str = "/masters/";

/// The master this process is, as the others and the nodes see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterRecord {
    pub master_name: String,
    pub master_public_endpoint: String,
    /// Where nodes hold their session with it.
    pub master_vpnapi_endpoint: String,
}

/// Who leads, as this master knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderState {
    /// This master leads now.
    pub leading: bool,
    /// The leader's name, when there is one.
    pub leader: Option<String>,
}

#[derive(Clone)]
pub struct Leadership {
    state: watch::Receiver<LeaderState>,
}

impl Leadership {
    /// A master alone on its store.
    pub fn solo(master_name: &str) -> (Self, watch::Sender<LeaderState>) {
        Self::starting_as(LeaderState {
            leading: true,
            leader: Some(master_name.to_string()),
        })
    }

    /// Follows an election that reports through the returned sender.
    pub fn elected() -> (Self, watch::Sender<LeaderState>) {
        Self::starting_as(LeaderState::default())
    }

    fn starting_as(state: LeaderState) -> (Self, watch::Sender<LeaderState>) {
        let (sender, receiver) = watch::channel(state);
        (Leadership { state: receiver }, sender)
    }

    pub fn is_leader(&self) -> bool {
        self.state.borrow().leading
    }

    pub fn state(&self) -> LeaderState {
        self.state.borrow().clone()
    }

    /// Changes of leadership, starting with the current state.
    pub fn changes(&self) -> watch::Receiver<LeaderState> {
        self.state.clone()
    }

    /// Runs `work` whenever this master leads, and drops it the moment it stops: the
    /// leader's own duties (schedules, triggers, polls) never run on two masters.
    /// `work` is started afresh on each new term, so it reads its state from the store.
    pub fn spawn_while_leading<F, Fut>(&self, duty: &'static str, work: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut changes = self.changes();
        tokio::spawn(async move {
            loop {
                if changes.wait_for(|state| state.leading).await.is_err() {
                    return;
                }
                tracing::debug!(duty, "starts on this master, the leader");
                let lost = async {
                    if changes.wait_for(|state| !state.leading).await.is_err() {
                        // Nobody can take the lead away any more (a master alone).
                        std::future::pending::<()>().await;
                    }
                };
                tokio::select! {
                    () = work() => return,
                    () = lost => tracing::info!(duty, "stopped: this master no longer leads"),
                }
            }
        });
    }
}

/// The masters that ever served this store, so joining nodes learn them all.
#[derive(Clone)]
pub struct MasterRegistry<S> {
    store: S,
}

impl<S: Store> MasterRegistry<S> {
    pub fn new(store: S) -> Self {
        MasterRegistry { store }
    }

    pub async fn register(&self, master: &MasterRecord) -> Result<(), StoreError> {
        let key = format!("{MASTERS_PREFIX}{}", master.master_name);
        self.store
            .put(&key, encode(master), Precondition::None)
            .await
            .map(|_| ())
    }

    pub async fn list(&self) -> Result<Vec<MasterRecord>, MastersError> {
        let entries = self.store.list(MASTERS_PREFIX).await?;
        Ok(entries
            .iter()
            .map(decode)
            .collect::<Result<Vec<MasterRecord>, _>>()?)
    }

    /// Every master's vpnapi endpoint, the leader's first: the order nodes try them in.
    pub async fn vpnapi_endpoints(
        &self,
        leader: Option<&str>,
    ) -> Result<Vec<String>, MastersError> {
        let mut masters = self.list().await?;
        masters.sort_by_key(|master| Some(master.master_name.as_str()) != leader);
        Ok(masters
            .into_iter()
            .map(|master| master.master_vpnapi_endpoint)
            .collect())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MastersError {
    #[error("the master registry failed: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Corrupt(#[from] CorruptRecord),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    #[tokio::test]
    async fn a_solo_master_keeps_its_duties_though_nobody_reports_leadership() {
        let leadership = Leadership::solo("m1").0;
        let (done, mut ran) = tokio::sync::mpsc::unbounded_channel();
        leadership.spawn_while_leading("test", move || {
            let done = done.clone();
            async move {
                tokio::task::yield_now().await;
                let _ = done.send(());
                std::future::pending::<()>().await
            }
        });
        assert_eq!(ran.recv().await, Some(()));
    }

    #[tokio::test]
    async fn nodes_learn_every_master_with_the_leader_first() {
        let registry = MasterRegistry::new(SqliteStore::open_in_memory().unwrap());
        for name in ["m1", "m2", "m3"] {
            registry
                .register(&MasterRecord {
                    master_name: name.into(),
                    master_public_endpoint: format!("{name}:7443"),
                    master_vpnapi_endpoint: format!("{name}:7444"),
                })
                .await
                .unwrap();
        }
        assert_eq!(
            registry.vpnapi_endpoints(Some("m2")).await.unwrap(),
            ["m2:7444", "m1:7444", "m3:7444"]
        );
        let (leadership, sender) = Leadership::elected();
        assert!(!leadership.is_leader());
        sender.send_replace(LeaderState {
            leading: true,
            leader: Some("m1".into()),
        });
        assert!(leadership.is_leader());
    }
}
