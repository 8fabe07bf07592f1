//! Electing the leading master through etcd's election API. Each master campaigns with
//! a short lease it keeps alive; the one whose campaign wins leads until its lease is
//! lost. A leader that cannot renew its lease in time steps down at once, before etcd
//! lets the lease expire and another master wins, so two masters never both lead for
//! longer than a renewal takes.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

use super::etcd::EtcdStore;
use crate::core::leadership::LeaderState;

/// The election's name. It does not start with `/`, so no store key or prefix of the
/// master's ever meets it.
const ELECTION: &str = "weft-master-leader";
/// How long a dead leader holds the cluster: a new leader takes over this long after.
const LEASE_TTL: Duration = Duration::from_secs(3);
/// Renewals per lease lifetime: one late renewal still leaves time for the next.
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// A master out of the election (etcd unreachable) tries again this often.
const RETRY_EVERY: Duration = Duration::from_secs(1);

impl EtcdStore {
    /// Campaigns for leadership until the process ends, reporting through `state`.
    /// `take_over` runs after winning and before this master says it leads.
    pub async fn campaign<F, Fut>(
        self,
        master_name: String,
        state: watch::Sender<LeaderState>,
        take_over: F,
    ) where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        loop {
            let outcome = self.campaign_once(&master_name, &state, &take_over).await;
            state.send_replace(LeaderState::default());
            if let Err(error) = outcome {
                tracing::warn!(%error, "out of the leader election for now");
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    /// One campaign, from a fresh lease until it is lost.
    async fn campaign_once<F, Fut>(
        &self,
        master_name: &str,
        state: &watch::Sender<LeaderState>,
        take_over: &F,
    ) -> Result<(), String>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let mut client = self.client();
        let lease = client
            .lease_grant(LEASE_TTL.as_secs() as i64, None)
            .await
            .map_err(|e| format!("no lease from etcd: {e}"))?
            .id();
        let (mut keeper, mut renewals) = client
            .lease_keep_alive(lease)
            .await
            .map_err(|e| format!("the lease cannot be kept alive: {e}"))?;
        let keep_alive = async {
            loop {
                let renewed = tokio::time::timeout(RENEW_EVERY, async {
                    keeper.keep_alive().await?;
                    renewals.message().await
                })
                .await;
                match renewed {
                    Ok(Ok(Some(renewal))) if renewal.ttl() > 0 => {}
                    Ok(Ok(_)) => return "the lease expired".to_string(),
                    Ok(Err(error)) => return format!("renewing the lease failed: {error}"),
                    Err(_) => return format!("no renewal of the lease within {RENEW_EVERY:?}"),
                }
                tokio::time::sleep(RENEW_EVERY / 2).await;
            }
        };
        tokio::pin!(keep_alive);
        let mut campaigner = client.clone();
        let campaign = campaigner.campaign(ELECTION, master_name, lease);
        tokio::pin!(campaign);
        // While another master leads, say which.
        let mut observer = client.clone();
        let mut look = tokio::time::interval(RENEW_EVERY);
        let won = loop {
            tokio::select! {
                won = &mut campaign => break won.map_err(|e| format!("the campaign failed: {e}"))?,
                lost = &mut keep_alive => return Err(lost),
                _ = look.tick() => {
                    let leader = observer
                        .leader(ELECTION)
                        .await
                        .ok()
                        .and_then(|answer| Some(answer.kv()?.value_str().ok()?.to_string()));
                    state.send_if_modified(|current| {
                        let changed = current.leader != leader;
                        current.leader = leader;
                        changed
                    });
                }
            }
        };
        tokio::select! {
            taken = take_over() => taken?,
            lost = &mut keep_alive => return Err(lost),
        }
        state.send_replace(LeaderState {
            leading: true,
            leader: Some(master_name.to_string()),
        });
        let lost = keep_alive.await;
        // Let the others elect a successor now rather than when the lease runs out.
        if let Some(leader) = won.leader() {
            let resign = etcd_client::ResignOptions::new().with_leader(leader.clone());
            let _ = tokio::time::timeout(RENEW_EVERY, client.resign(Some(resign))).await;
        }
        Err(lost)
    }
}
