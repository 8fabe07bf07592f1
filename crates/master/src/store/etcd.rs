//! The distributed store: an etcd cluster, which several masters can share.
//!
//! Keys, values, revisions, watches and compaction are etcd's own, and every write is one
//! etcd Txn whose compares are the preconditions, so etcd alone decides which of two
//! masters' conflicting writes wins.
//!
//! Store revisions are etcd's minus one. A fresh etcd is at revision 1 before anything is
//! written (its first write makes revision 2), while the store trait counts from 0 as
//! sqlite does; with the shift, both backends give the same writes the same revisions and
//! pass one conformance suite, and a revision read from one means the same on the other.
//!
//! weft asks more of etcd than its defaults allow: a transaction holds up to
//! [`MAX_OPERATIONS`] operations (etcd's `--max-txn-ops` defaults to 128) and a write up
//! to [`MAX_WRITE_BYTES`] of keys and values, which is exactly etcd's default
//! `--max-request-bytes` and leaves no room for the request's own framing. Run etcd with
//! the flags in [`ETCD_FLAGS`]; connecting checks the first limit, a write that meets the
//! second names the flag.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, KeyValue,
    KvClient, ResponseHeader, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchClient, WatchOptions,
};
use futures_util::stream;

use super::etcd_settings::{EtcdSettings, PLAIN_HTTP_WARNING};
use super::{
    validate_key, validate_write, Entry, EventKind, Operation, Precondition, Store, StoreError,
    WatchEvent, WatchStream, MAX_OPERATIONS, MAX_WRITE_BYTES,
};

/// What etcd must be started with for weft's limits to fit: room for [`MAX_OPERATIONS`]
/// operations, and for [`MAX_WRITE_BYTES`] with the request's framing around it.
pub const ETCD_FLAGS: &str = "--max-txn-ops=1024 --max-request-bytes=2097152";

/// How long connecting may take before the master gives up: long enough for a cluster
/// that is electing a leader, short enough that a wrong address fails the start quickly.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may wait for an answer. etcd-client waits for a reachable member
/// without end; a master with a lost etcd should fail requests, not hang them.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// HTTP/2 pings, so a watch over a connection that died silently ends with an error
/// instead of waiting forever for events.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Cheap to clone: every registry of the master holds one.
#[derive(Clone)]
pub struct EtcdStore {
    shared: Arc<Shared>,
}

struct Shared {
    /// For leases and the leader election.
    client: Client,
    kv: KvClient,
    watch: WatchClient,
    /// For error messages: operators read them without knowing which cluster is meant.
    endpoints: String,
}

impl EtcdStore {
    /// Connects to the etcd cluster `settings` name, over TLS with the master's client
    /// certificate or, when the operator chose it, plain http; then checks that etcd
    /// answers and takes weft's largest transactions.
    pub async fn connect(settings: &EtcdSettings) -> Result<Self, StoreError> {
        let tls = settings.tls_options().map_err(StoreError::Backend)?;
        let endpoints = &settings.etcd_endpoints;
        let joined = endpoints.join(",");
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)
            // A member cut off from the others fails requests and ends watches at once,
            // where it would otherwise hold them, silent, until it rejoins.
            .with_require_leader(true);
        match tls {
            Some(tls) => options = options.with_tls(tls),
            None => tracing::warn!(endpoints = %joined, "{PLAIN_HTTP_WARNING}"),
        }
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|error| StoreError::Backend(format!("etcd at {joined}: {error}")))?;
        // A list or a batch of watch events is as large as the values in it; tonic's
        // default of 4 MiB would refuse a few large values read together.
        let store = EtcdStore {
            shared: Arc::new(Shared {
                kv: client.kv_client().max_decoding_message_size(usize::MAX),
                watch: client.watch_client().max_decoding_message_size(usize::MAX),
                client,
                endpoints: joined,
            }),
        };
        // Read-only, so it changes no revision: as many compares as weft's largest
        // transaction has operations, which etcd checks against --max-txn-ops.
        let probe = Txn::new().when(
            (0..MAX_OPERATIONS)
                .map(|_| Compare::create_revision("/", CompareOp::NotEqual, -1))
                .collect::<Vec<_>>(),
        );
        match tokio::time::timeout(CONNECT_TIMEOUT, store.shared.kv.clone().txn(probe)).await {
            Ok(Ok(_)) => Ok(store),
            Ok(Err(error)) => Err(store.error(error)),
            Err(_) => Err(StoreError::Backend(format!(
                "etcd at {} did not answer within {CONNECT_TIMEOUT:?}: check that etcd runs, \
                 that these are its client URLs (--advertise-client-urls) and that its \
                 members have elected a leader",
                store.shared.endpoints
            ))),
        }
    }

    pub(super) fn client(&self) -> Client {
        self.shared.client.clone()
    }

    /// Runs one request with [`REQUEST_TIMEOUT`].
    async fn call<T>(
        &self,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
            Ok(answer) => answer.map_err(|error| self.error(error)),
            Err(_) => Err(self.timed_out()),
        }
    }

    fn timed_out(&self) -> StoreError {
        StoreError::Backend(format!(
            "etcd at {} did not answer within {REQUEST_TIMEOUT:?}",
            self.shared.endpoints
        ))
    }

    fn error(&self, error: etcd_client::Error) -> StoreError {
        let endpoints = &self.shared.endpoints;
        let etcd_client::Error::GRpcStatus(status) = &error else {
            return StoreError::Backend(format!("etcd at {endpoints}: {error}"));
        };
        let mut message = status.message().to_owned();
        // tonic says "tcp connect error" and keeps the why (refused, no route) at the
        // bottom of its chain of sources.
        let mut root = std::error::Error::source(status);
        while let Some(cause) = root.and_then(std::error::Error::source) {
            root = Some(cause);
        }
        if let Some(root) = root {
            message = format!("{message}: {root}");
        }
        let certificates = if endpoints.starts_with("https://") {
            "; over https, check that etcd's --trusted-ca-file signed the master's client \
             certificate (--etcd-cert), that --etcd-cacert signed etcd's server certificate \
             and that neither has expired"
        } else {
            ""
        };
        let hint = if message.contains("too many operations in txn request") {
            format!(
                "; weft's transactions hold up to {MAX_OPERATIONS} operations: \
                 start etcd with {ETCD_FLAGS}"
            )
        } else if message.contains("request is too large") {
            format!(
                "; weft's writes carry up to {MAX_WRITE_BYTES} bytes: start etcd with {ETCD_FLAGS}"
            )
        } else if status.code() == tonic::Code::Unavailable {
            format!("; check that etcd runs there and that its members have a leader{certificates}")
        } else if matches!(status.code(), tonic::Code::Cancelled | tonic::Code::Unknown) {
            // etcd refuses a client certificate by closing the connection after the
            // handshake, which tonic reports as nothing more than "connection closed".
            certificates.to_owned()
        } else {
            String::new()
        };
        StoreError::Backend(format!("etcd at {endpoints}: {message}{hint}"))
    }

    /// Applies `operations` in one etcd Txn, or reports the first whose precondition fails.
    async fn apply(&self, operations: Vec<Operation>) -> Result<TxnResponse, StoreError> {
        let checked: Vec<(String, Precondition)> = operations
            .iter()
            .filter(|operation| operation.precondition() != Precondition::None)
            .map(|operation| (operation.key().to_owned(), operation.precondition()))
            .collect();
        let compares: Vec<Compare> = checked
            .iter()
            .filter_map(|(key, precondition)| compare(key, *precondition))
            .collect();
        let writes: Vec<TxnOp> = operations
            .into_iter()
            .map(|operation| match operation {
                Operation::Put { key, value, .. } => TxnOp::put(key, value, None),
                Operation::Delete { key, .. } => TxnOp::delete(key, None),
            })
            .collect();
        // On failure the same Txn reads the checked keys, at the revision the compares
        // saw, so the failing key is known without a race against later writes.
        let reads: Vec<TxnOp> = checked
            .iter()
            .map(|(key, _)| TxnOp::get(key.as_str(), Some(GetOptions::new().with_keys_only())))
            .collect();
        let txn = Txn::new().when(compares).and_then(writes).or_else(reads);
        let response = self.call(self.shared.kv.clone().txn(txn)).await?;
        if response.succeeded() {
            return Ok(response);
        }
        for ((key, precondition), read) in checked.into_iter().zip(response.op_responses()) {
            let TxnOpResponse::Get(read) = read else {
                continue;
            };
            let mod_revision = read.kvs().first().map(KeyValue::mod_revision);
            if !holds(precondition, mod_revision) {
                return Err(StoreError::Conflict { key });
            }
        }
        Err(StoreError::Backend(format!(
            "etcd at {} refused a transaction whose preconditions all hold",
            self.shared.endpoints
        )))
    }
}

fn compare(key: &str, precondition: Precondition) -> Option<Compare> {
    match precondition {
        Precondition::None => None,
        // etcd reads an absent key's create revision as 0.
        Precondition::Absent => Some(Compare::create_revision(key, CompareOp::Equal, 0)),
        Precondition::ModRevision(revision) => Some(Compare::mod_revision(
            key,
            CompareOp::Equal,
            to_etcd(revision),
        )),
    }
}

/// Whether `precondition` holds of a key last changed at etcd revision `mod_revision`.
fn holds(precondition: Precondition, mod_revision: Option<i64>) -> bool {
    match precondition {
        Precondition::None => true,
        Precondition::Absent => mod_revision.is_none(),
        Precondition::ModRevision(revision) => mod_revision == Some(to_etcd(revision)),
    }
}

/// The etcd revision of a store revision; saturated, since etcd never gets near
/// `i64::MAX`, so a precondition on it fails as it should.
fn to_etcd(revision: u64) -> i64 {
    i64::try_from(revision).map_or(i64::MAX, |revision| revision.saturating_add(1))
}

/// The store revision of an etcd revision of a write or a response, which is at least 1.
fn from_etcd(revision: i64) -> u64 {
    u64::try_from(revision - 1).unwrap_or(0)
}

fn revision(header: Option<&ResponseHeader>) -> Result<u64, StoreError> {
    header
        .map(|header| from_etcd(header.revision()))
        .ok_or_else(|| StoreError::Backend("etcd answered without a revision".to_owned()))
}

/// Keys that other etcd clients wrote under weft's prefixes may be any bytes.
fn key_of(kv: &KeyValue) -> Result<String, StoreError> {
    String::from_utf8(kv.key().to_vec()).map_err(|_| {
        StoreError::Backend(format!(
            "etcd holds a key that is not weft's: {:?}",
            String::from_utf8_lossy(kv.key())
        ))
    })
}

fn entry(kv: KeyValue) -> Result<Entry, StoreError> {
    let key = key_of(&kv)?;
    let (create_revision, mod_revision) = (kv.create_revision(), kv.mod_revision());
    let (_, value) = kv.into_key_value();
    Ok(Entry {
        key,
        value,
        create_revision: from_etcd(create_revision),
        mod_revision: from_etcd(mod_revision),
    })
}

impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        validate_key(key)?;
        let mut response = self.call(self.shared.kv.clone().get(key, None)).await?;
        response
            .take_kvs()
            .into_iter()
            .next()
            .map(entry)
            .transpose()
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Entry>, StoreError> {
        validate_key(prefix)?;
        let options = GetOptions::new().with_prefix();
        let mut response = self
            .call(self.shared.kv.clone().get(prefix, Some(options)))
            .await?;
        // etcd returns a range in key order.
        response.take_kvs().into_iter().map(entry).collect()
    }

    async fn delete(
        &self,
        key: &str,
        precondition: Precondition,
    ) -> Result<Option<u64>, StoreError> {
        let delete = vec![Operation::Delete {
            key: key.to_owned(),
            precondition,
        }];
        validate_write(&delete)?;
        let response = self.apply(delete).await?;
        let deleted = response
            .op_responses()
            .iter()
            .any(|op| matches!(op, TxnOpResponse::Delete(delete) if delete.deleted() > 0));
        if deleted {
            revision(response.header()).map(Some)
        } else {
            Ok(None)
        }
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        validate_key(prefix)?;
        let options = DeleteOptions::new().with_prefix();
        let response = self
            .call(self.shared.kv.clone().delete(prefix, Some(options)))
            .await?;
        Ok(usize::try_from(response.deleted()).unwrap_or(0))
    }

    async fn transaction(&self, operations: Vec<Operation>) -> Result<u64, StoreError> {
        validate_write(&operations)?;
        let response = self.apply(operations).await?;
        revision(response.header())
    }

    async fn current_revision(&self) -> Result<u64, StoreError> {
        let options = GetOptions::new().with_count_only();
        let response = self
            .call(self.shared.kv.clone().get("/", Some(options)))
            .await?;
        revision(response.header())
    }

    async fn watch(&self, prefix: &str, after_revision: u64) -> Result<WatchStream, StoreError> {
        validate_key(prefix)?;
        // etcd refuses a start below its compaction revision, which `compact` sets to the
        // etcd revision of the store's compacted one. Starting at the etcd revision of
        // `after_revision`, not the one after, makes etcd refuse the same starts as sqlite
        // (`after_revision` below the compacted revision); its events are skipped below.
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(to_etcd(after_revision));
        let events = self
            .call(self.shared.watch.clone().watch(prefix, Some(options)))
            .await?;
        let watching = Watching {
            store: self.clone(),
            prefix: prefix.to_owned(),
            events,
            pending: VecDeque::new(),
            seen: after_revision,
            ended: false,
        };
        Ok(Box::pin(stream::unfold(watching, |mut watching| async {
            let item = watching.next().await?;
            Some((item, watching))
        })))
    }

    async fn compact(&self, revision: u64) -> Result<(), StoreError> {
        // etcd keeps the history from its compaction revision on, so `revision`'s own
        // events stay in etcd; `watch` never hands them out.
        let mut kv = self.shared.kv.clone();
        match tokio::time::timeout(REQUEST_TIMEOUT, kv.compact(to_etcd(revision), None)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(etcd_client::Error::GRpcStatus(status)))
                if status
                    .message()
                    .contains("required revision has been compacted") =>
            {
                Ok(())
            }
            Ok(Err(etcd_client::Error::GRpcStatus(status)))
                if status
                    .message()
                    .contains("required revision is a future revision") =>
            {
                let current = self.current_revision().await?;
                Err(StoreError::Backend(format!(
                    "cannot compact to revision {revision}: the current revision is {current}"
                )))
            }
            Ok(Err(error)) => Err(self.error(error)),
            Err(_) => Err(self.timed_out()),
        }
    }
}

/// One watcher's etcd watch, turned into the store's events.
struct Watching {
    store: EtcdStore,
    prefix: String,
    events: etcd_client::WatchStream,
    /// The rest of the last response: etcd sends a transaction's events together.
    pending: VecDeque<WatchEvent>,
    /// The last revision handed out, or the one the watch started after.
    seen: u64,
    ended: bool,
}

impl Watching {
    async fn next(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.seen = event.revision;
                return Some(Ok(event));
            }
            if self.ended {
                return None;
            }
            // No timeout: a quiet prefix sends nothing, and the keep-alive pings notice
            // a dead connection.
            let read = self.events.message().await;
            if let Err(error) = self.take(read) {
                self.ended = true;
                return Some(Err(error));
            }
        }
    }

    fn take(
        &mut self,
        read: Result<Option<etcd_client::WatchResponse>, etcd_client::Error>,
    ) -> Result<(), StoreError> {
        let endpoints = &self.store.shared.endpoints;
        let response = match read {
            Ok(Some(response)) => response,
            Ok(None) => {
                return Err(StoreError::Backend(format!(
                    "etcd at {endpoints} ended the watch on {}",
                    self.prefix
                )))
            }
            Err(error) => return Err(self.store.error(error)),
        };
        if response.compact_revision() > 0 {
            return Err(StoreError::Compacted {
                requested: self.seen,
                oldest: from_etcd(response.compact_revision()),
            });
        }
        if response.canceled() {
            return Err(StoreError::Backend(format!(
                "etcd at {endpoints} ended the watch on {}: {}",
                self.prefix,
                response.cancel_reason()
            )));
        }
        for event in response.events() {
            let Some(kv) = event.kv() else {
                return Err(StoreError::Backend(format!(
                    "etcd at {endpoints} sent an event without its key"
                )));
            };
            let revision = from_etcd(kv.mod_revision());
            if revision <= self.seen {
                continue;
            }
            let (kind, value) = match event.event_type() {
                EventType::Put => (EventKind::Put, Some(kv.value().to_vec())),
                EventType::Delete => (EventKind::Delete, None),
            };
            self.pending.push_back(WatchEvent {
                revision,
                kind,
                key: key_of(kv)?,
                value,
            });
        }
        Ok(())
    }
}
