//! The embedded default store: one sqlite file in WAL mode.
//!
//! `kv` holds the keys, `events` the history that watches replay, `meta` the current and
//! compacted revisions and the schema version. Every write is one sqlite transaction that
//! changes `kv`, appends to `events` and bumps the revision together, synced to disk before
//! it returns (`synchronous=FULL`): after a crash or power loss the file holds all of a
//! write or none of it.
//!
//! Watchers read their events from the `events` table only, and wait for the next commit
//! on a `tokio::sync::watch` of the revision. With one source there is no gap or duplicate
//! between replay and live events, and a slow watcher costs writers nothing: it falls
//! behind on disk, not in memory, until compaction passes it and ends it with `Compacted`.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::{
    validate_key, validate_write, Entry, EventKind, Operation, Precondition, Store, StoreError,
    WatchEvent, WatchStream,
};

/// Marks the file as weft's in the sqlite header ("weft" in ASCII), so a foreign database
/// is refused instead of being migrated.
const APPLICATION_ID: i32 = 0x7765_6674;

/// Schema version N is reached by running the first N scripts in order.
const MIGRATIONS: &[&str] = &["
    CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO meta (name, value)
        VALUES ('schema_version', 0), ('revision', 0), ('compacted_revision', 0);
    CREATE TABLE kv (
        key TEXT PRIMARY KEY,
        value BLOB NOT NULL,
        create_revision INTEGER NOT NULL,
        mod_revision INTEGER NOT NULL
    );
    CREATE TABLE events (
        revision INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('put', 'delete')),
        key TEXT NOT NULL,
        value BLOB,
        PRIMARY KEY (revision, seq)
    );
"];

/// Waits for another process holding the file (an operator's `sqlite3`, a second master).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Events a watcher reads from disk at once; a page ends on a revision boundary.
const WATCH_PAGE: u64 = 256;
/// Events waiting for a watcher's consumer before the watcher stops reading.
const WATCH_BUFFER: usize = 64;

#[derive(Clone)]
pub struct SqliteStore {
    shared: Arc<Shared>,
}

/// What the store's handle and its watchers share; a watch keeps the store open.
struct Shared {
    location: String,
    writer: Mutex<Connection>,
    /// A second connection on file stores, so reads go on while a write syncs to disk.
    reader: Option<Mutex<Connection>>,
    /// The latest committed revision: watchers wake when it moves.
    committed: watch::Sender<u64>,
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        StoreError::Backend(error.to_string())
    }
}

impl SqliteStore {
    /// Opens the store at `path`, creating or migrating it, and makes the file private.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let location = path.display().to_string();
        let open = || {
            make_private(path)?;
            let mut writer = Connection::open(path)?;
            configure(&writer)?;
            let journal_mode: String =
                writer.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
            if !journal_mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::Backend(format!(
                    "cannot switch to WAL journaling (still {journal_mode})"
                )));
            }
            migrate(&mut writer)?;
            let reader = Connection::open(path)?;
            configure(&reader)?;
            reader.pragma_update(None, "query_only", true)?;
            Self::new(location.clone(), writer, Some(reader))
        };
        open().map_err(|error| locate(&location, error))
    }

    /// A store that lives as long as the value, for tests.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let mut connection = Connection::open_in_memory()?;
        configure(&connection)?;
        migrate(&mut connection)?;
        Self::new(":memory:".to_owned(), connection, None)
    }

    fn new(
        location: String,
        writer: Connection,
        reader: Option<Connection>,
    ) -> Result<Self, StoreError> {
        let revision = meta(&writer, "revision")?;
        let shared = Shared {
            location,
            writer: Mutex::new(writer),
            reader: reader.map(Mutex::new),
            committed: watch::Sender::new(revision),
        };
        Ok(SqliteStore {
            shared: Arc::new(shared),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Shared) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        blocking(Arc::clone(&self.shared), work).await
    }
}

/// The store holds bootstrap tokens, node records and sealed secrets: only its owner
/// reads it, even where the umask or an older weft made it readable to all. SQLite gives
/// the `-wal` and `-shm` files it creates the database file's mode; ones left by a crash
/// are changed here too.
fn make_private(path: &Path) -> Result<(), StoreError> {
    let private = || std::fs::Permissions::from_mode(0o600);
    let denied =
        |error: std::io::Error| StoreError::Backend(format!("cannot make it private: {error}"));
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(denied)?;
    file.set_permissions(private()).map_err(denied)?;
    for suffix in ["-wal", "-shm"] {
        let mut journal = path.as_os_str().to_owned();
        journal.push(suffix);
        match std::fs::set_permissions(&journal, private()) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(denied(error))
            }
            _ => {}
        }
    }
    Ok(())
}

fn configure(connection: &Connection) -> Result<(), StoreError> {
    connection.busy_timeout(BUSY_TIMEOUT)?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "foreign_keys", true)?;
    Ok(())
}

/// Brings an empty or older weft database to the current schema in one transaction.
fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let application_id: i32 =
        transaction.pragma_query_value(None, "application_id", |row| row.get(0))?;
    let version = if application_id == APPLICATION_ID {
        meta(&transaction, "schema_version")?
    } else {
        let objects: u64 =
            transaction.query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))?;
        if application_id != 0 || objects > 0 {
            return Err(StoreError::Backend(
                "an sqlite database of another application, not a weft store".to_owned(),
            ));
        }
        transaction.pragma_update(None, "application_id", APPLICATION_ID)?;
        0
    };
    let latest = MIGRATIONS.len() as u64;
    if version > latest {
        return Err(StoreError::Backend(format!(
            "store schema version {version} is newer than this weft understands ({latest}): \
             upgrade weft"
        )));
    }
    if version < latest {
        for migration in MIGRATIONS.iter().skip(version as usize) {
            transaction.execute_batch(migration)?;
        }
        set_meta(&transaction, "schema_version", latest)?;
    }
    transaction.commit()?;
    Ok(())
}

fn meta(connection: &Connection, name: &str) -> Result<u64, StoreError> {
    let value = connection
        .prepare_cached("SELECT value FROM meta WHERE name = ?1")?
        .query_row([name], |row| row.get(0))?;
    Ok(value)
}

fn set_meta(connection: &Connection, name: &str, value: u64) -> Result<(), StoreError> {
    connection
        .prepare_cached("UPDATE meta SET value = ?2 WHERE name = ?1")?
        .execute(params![name, value])?;
    Ok(())
}

/// Operators read store errors without context, so each names its file.
fn locate(location: &str, error: StoreError) -> StoreError {
    match error {
        StoreError::Backend(message) => StoreError::Backend(format!("store {location}: {message}")),
        other => other,
    }
}

/// The first key after every key under `prefix`: `/a` → `/b`.
fn prefix_end(prefix: &str) -> String {
    let mut end = prefix.to_owned();
    // Keys are visible ASCII, so the last byte is at most `~` and one up is still ASCII.
    if let Some(last) = end.pop() {
        end.push(char::from(last as u8 + 1));
    }
    end
}

/// Runs sqlite's blocking calls off the async workers.
async fn blocking<T: Send + 'static>(
    shared: Arc<Shared>,
    work: impl FnOnce(&Shared) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(move || {
        work(&shared).map_err(|error| locate(&shared.location, error))
    })
    .await
    .map_err(|error| StoreError::Backend(format!("store task failed: {error}")))?
}

/// A connection stays consistent when a holder panicked: its open transaction rolls back
/// as the panic unwinds.
fn lock(connection: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    connection.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Runs `work` on one consistent snapshot.
    fn read<T>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut connection = lock(self.reader.as_ref().unwrap_or(&self.writer));
        let snapshot = connection.transaction()?;
        work(&snapshot)
    }

    /// Runs `work` in one sqlite transaction; if it changed any key, that is one new
    /// revision. Returns what `work` returned and the revision after it.
    fn write<T>(
        &self,
        work: impl FnOnce(&mut Batch) -> Result<T, StoreError>,
    ) -> Result<(T, u64), StoreError> {
        let mut connection = lock(&self.writer);
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current = meta(&transaction, "revision")?;
        let mut batch = Batch {
            transaction: &transaction,
            revision: current + 1,
            events: 0,
        };
        let result = work(&mut batch)?;
        let revision = if batch.events > 0 {
            set_meta(&transaction, "revision", current + 1)?;
            current + 1
        } else {
            current
        };
        transaction.commit()?;
        // Still under the writer lock, so watchers see revisions only move forward.
        self.committed.send_replace(revision);
        Ok((result, revision))
    }

    fn events_after(&self, prefix: &str, after: u64) -> Result<EventPage, StoreError> {
        self.read(|snapshot| {
            let compacted = meta(snapshot, "compacted_revision")?;
            if after < compacted {
                return Err(StoreError::Compacted {
                    requested: after,
                    oldest: compacted,
                });
            }
            let end = prefix_end(prefix);
            let page_last_revision: Option<u64> = snapshot
                .prepare_cached(
                    "SELECT revision FROM events WHERE revision > ?1 AND key >= ?2 AND key < ?3
                     ORDER BY revision, seq LIMIT 1 OFFSET ?4",
                )?
                .query_row(params![after, prefix, end, WATCH_PAGE - 1], |row| {
                    row.get(0)
                })
                .optional()?;
            let up_to = match page_last_revision {
                Some(revision) => revision,
                None => meta(snapshot, "revision")?.max(after),
            };
            let events = snapshot
                .prepare_cached(
                    "SELECT revision, kind, key, value FROM events
                     WHERE revision > ?1 AND revision <= ?2 AND key >= ?3 AND key < ?4
                     ORDER BY revision, seq",
                )?
                .query_map(params![after, up_to, prefix, end], |row| {
                    let kind = if row.get::<_, String>(1)? == "put" {
                        EventKind::Put
                    } else {
                        EventKind::Delete
                    };
                    Ok(WatchEvent {
                        revision: row.get(0)?,
                        kind,
                        key: row.get(2)?,
                        value: row.get(3)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(EventPage {
                events,
                up_to,
                caught_up: page_last_revision.is_none(),
            })
        })
    }
}

/// Events on a prefix in `(after, up_to]`, every one of them.
struct EventPage {
    events: Vec<WatchEvent>,
    up_to: u64,
    /// `up_to` was the current revision: wait for the next commit.
    caught_up: bool,
}

/// The changes of one revision under construction.
struct Batch<'c> {
    transaction: &'c Connection,
    revision: u64,
    events: u64,
}

impl Batch<'_> {
    fn check(&self, key: &str, precondition: Precondition) -> Result<(), StoreError> {
        let mod_revision: Option<u64> = self
            .transaction
            .prepare_cached("SELECT mod_revision FROM kv WHERE key = ?1")?
            .query_row([key], |row| row.get(0))
            .optional()?;
        let holds = match precondition {
            Precondition::None => true,
            Precondition::Absent => mod_revision.is_none(),
            Precondition::ModRevision(expected) => mod_revision == Some(expected),
        };
        if holds {
            Ok(())
        } else {
            Err(StoreError::Conflict {
                key: key.to_owned(),
            })
        }
    }

    fn put(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.transaction
            .prepare_cached(
                "INSERT INTO kv (key, value, create_revision, mod_revision) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, mod_revision = ?3",
            )?
            .execute(params![key, value, self.revision])?;
        self.record("put", key, Some(value))
    }

    /// Returns whether the key was there.
    fn delete(&mut self, key: &str) -> Result<bool, StoreError> {
        let deleted = self
            .transaction
            .prepare_cached("DELETE FROM kv WHERE key = ?1")?
            .execute([key])?;
        if deleted > 0 {
            self.record("delete", key, None)?;
        }
        Ok(deleted > 0)
    }

    fn delete_prefix(&mut self, prefix: &str) -> Result<usize, StoreError> {
        let keys = self
            .transaction
            .prepare_cached("SELECT key FROM kv WHERE key >= ?1 AND key < ?2 ORDER BY key")?
            .query_map([prefix, &prefix_end(prefix)], |row| row.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        for key in &keys {
            self.delete(key)?;
        }
        Ok(keys.len())
    }

    fn record(&mut self, kind: &str, key: &str, value: Option<&[u8]>) -> Result<(), StoreError> {
        self.transaction
            .prepare_cached(
                "INSERT INTO events (revision, seq, kind, key, value) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![self.revision, self.events, kind, key, value])?;
        self.events += 1;
        Ok(())
    }
}

fn entry(connection: &Connection, key: &str) -> Result<Option<Entry>, StoreError> {
    let entry = connection
        .prepare_cached("SELECT value, create_revision, mod_revision FROM kv WHERE key = ?1")?
        .query_row([key], |row| {
            Ok(Entry {
                key: key.to_owned(),
                value: row.get(0)?,
                create_revision: row.get(1)?,
                mod_revision: row.get(2)?,
            })
        })
        .optional()?;
    Ok(entry)
}

impl Store for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        validate_key(key)?;
        let key = key.to_owned();
        self.blocking(move |shared| shared.read(|snapshot| entry(snapshot, &key)))
            .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Entry>, StoreError> {
        validate_key(prefix)?;
        let prefix = prefix.to_owned();
        self.blocking(move |shared| {
            shared.read(|snapshot| {
                let entries = snapshot
                    .prepare_cached(
                        "SELECT key, value, create_revision, mod_revision FROM kv
                         WHERE key >= ?1 AND key < ?2 ORDER BY key",
                    )?
                    .query_map([&prefix, &prefix_end(&prefix)], |row| {
                        Ok(Entry {
                            key: row.get(0)?,
                            value: row.get(1)?,
                            create_revision: row.get(2)?,
                            mod_revision: row.get(3)?,
                        })
                    })?
                    .collect::<Result<_, _>>()?;
                Ok(entries)
            })
        })
        .await
    }

    async fn delete(
        &self,
        key: &str,
        precondition: Precondition,
    ) -> Result<Option<u64>, StoreError> {
        let key = key.to_owned();
        validate_write(&[Operation::Delete {
            key: key.clone(),
            precondition,
        }])?;
        let (deleted, revision) = self
            .blocking(move |shared| {
                shared.write(|batch| {
                    batch.check(&key, precondition)?;
                    batch.delete(&key)
                })
            })
            .await?;
        Ok(deleted.then_some(revision))
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        validate_key(prefix)?;
        let prefix = prefix.to_owned();
        let (deleted, _) = self
            .blocking(move |shared| shared.write(|batch| batch.delete_prefix(&prefix)))
            .await?;
        Ok(deleted)
    }

    async fn transaction(&self, operations: Vec<Operation>) -> Result<u64, StoreError> {
        validate_write(&operations)?;
        let ((), revision) = self
            .blocking(move |shared| {
                shared.write(|batch| {
                    for operation in &operations {
                        batch.check(operation.key(), operation.precondition())?;
                    }
                    for operation in &operations {
                        match operation {
                            Operation::Put { key, value, .. } => batch.put(key, value)?,
                            Operation::Delete { key, .. } => {
                                batch.delete(key)?;
                            }
                        }
                    }
                    Ok(())
                })
            })
            .await?;
        Ok(revision)
    }

    async fn current_revision(&self) -> Result<u64, StoreError> {
        self.blocking(|shared| shared.read(|snapshot| meta(snapshot, "revision")))
            .await
    }

    async fn watch(&self, prefix: &str, after_revision: u64) -> Result<WatchStream, StoreError> {
        validate_key(prefix)?;
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(feed_watcher(
            Arc::clone(&self.shared),
            prefix.to_owned(),
            after_revision,
            sender,
        ));
        Ok(Box::pin(ReceiverStream::new(receiver)))
    }

    async fn compact(&self, revision: u64) -> Result<(), StoreError> {
        self.blocking(move |shared| {
            shared.write(|batch| {
                let current = batch.revision - 1;
                if revision > current {
                    return Err(StoreError::Backend(format!(
                        "cannot compact to revision {revision}: the current revision is {current}"
                    )));
                }
                if revision > meta(batch.transaction, "compacted_revision")? {
                    batch
                        .transaction
                        .execute("DELETE FROM events WHERE revision <= ?1", [revision])?;
                    set_meta(batch.transaction, "compacted_revision", revision)?;
                }
                Ok(())
            })
        })
        .await?;
        Ok(())
    }
}

/// Sends one watcher its events page by page until its consumer drops the stream or an
/// error ends it.
async fn feed_watcher(
    shared: Arc<Shared>,
    prefix: String,
    mut after: u64,
    sender: mpsc::Sender<Result<WatchEvent, StoreError>>,
) {
    // Subscribing before the first read, and `changed()` remembering the revision it woke
    // at, make every commit after a read wake the next wait.
    let mut committed = shared.committed.subscribe();
    loop {
        let read = {
            let prefix = prefix.clone();
            blocking(Arc::clone(&shared), move |shared| {
                shared.events_after(&prefix, after)
            })
            .await
        };
        let page = match read {
            Ok(page) => page,
            Err(error) => {
                // The consumer may be gone already; then nobody is left to tell.
                let _ = sender.send(Err(error)).await;
                return;
            }
        };
        for event in page.events {
            if sender.send(Ok(event)).await.is_err() {
                return;
            }
        }
        after = page.up_to;
        if page.caught_up {
            tokio::select! {
                // Never fails: `shared` holds the sender.
                _ = committed.changed() => {}
                () = sender.closed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::{self, next_event};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio_stream::StreamExt;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance_in_memory() {
        conformance::run_conformance(|| async {
            SqliteStore::open_in_memory().expect("in-memory store")
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance_on_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let stores = AtomicUsize::new(0);
        conformance::run_conformance(|| {
            let number = stores.fetch_add(1, Ordering::Relaxed);
            let path = dir.path().join(format!("store-{number}.db"));
            async move { SqliteStore::open(&path).expect("file store") }
        })
        .await;
    }

    async fn write_sample(store: &SqliteStore) {
        store
            .put("/nodes/a", b"one".to_vec(), Precondition::None)
            .await
            .expect("put");
        store
            .put("/nodes/a", b"two".to_vec(), Precondition::None)
            .await
            .expect("put");
        store
            .put("/nodes/b", b"three".to_vec(), Precondition::None)
            .await
            .expect("put");
        store
            .delete("/nodes/b", Precondition::None)
            .await
            .expect("delete");
    }

    #[tokio::test]
    async fn reopened_file_keeps_keys_revisions_and_history() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("weft.db");
        write_sample(&SqliteStore::open(&path).expect("open")).await;

        let store = SqliteStore::open(&path).expect("reopen");
        assert_eq!(store.current_revision().await, Ok(4));
        assert_eq!(
            store.get("/nodes/a").await,
            Ok(Some(Entry {
                key: "/nodes/a".to_owned(),
                value: b"two".to_vec(),
                create_revision: 1,
                mod_revision: 2,
            }))
        );
        assert_eq!(store.get("/nodes/b").await, Ok(None));
        let mut events = store.watch("/nodes/", 0).await.expect("watch");
        let mut revisions = Vec::new();
        for _ in 0..4 {
            revisions.push(next_event(&mut events).await.expect("event").revision);
        }
        assert_eq!(revisions, [1, 2, 3, 4]);
        assert_eq!(
            store.put("/nodes/c", vec![], Precondition::Absent).await,
            Ok(5)
        );
    }

    #[tokio::test]
    async fn file_store_is_durable_wal() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("weft.db");
        let store = SqliteStore::open(&path).expect("open");
        let writer = lock(&store.shared.writer);
        let journal_mode: String = writer
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .expect("journal_mode");
        assert_eq!(journal_mode, "wal");
        let synchronous: i64 = writer
            .pragma_query_value(None, "synchronous", |row| row.get(0))
            .expect("synchronous");
        assert_eq!(synchronous, 2, "synchronous=FULL");
    }

    #[tokio::test]
    async fn the_database_and_its_journal_files_are_private() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mode = |name: &str| {
            std::fs::metadata(dir.path().join(name))
                .expect("the file exists")
                .permissions()
                .mode()
                & 0o777
        };
        let path = dir.path().join("weft.db");
        write_sample(&SqliteStore::open(&path).expect("new")).await;
        assert_eq!(mode("weft.db"), 0o600);

        // Readable to all, as an older weft left them (the journal files after a crash).
        for journal in ["weft.db-wal", "weft.db-shm"] {
            std::fs::write(dir.path().join(journal), []).expect("journal file");
        }
        for name in ["weft.db", "weft.db-wal", "weft.db-shm"] {
            let readable = std::fs::Permissions::from_mode(0o644);
            std::fs::set_permissions(dir.path().join(name), readable).expect("chmod");
        }
        let store = SqliteStore::open(&path).expect("reopen");
        write_sample(&store).await;
        for name in ["weft.db", "weft.db-wal", "weft.db-shm"] {
            assert_eq!(mode(name), 0o600, "{name}");
        }
        assert_eq!(store.current_revision().await, Ok(8), "the store was kept");
    }

    fn open_error(path: &Path) -> String {
        match SqliteStore::open(path) {
            Err(StoreError::Backend(message)) => message,
            Err(other) => panic!("expected a backend error, got {other:?}"),
            Ok(_) => panic!("{} opened as a store", path.display()),
        }
    }

    #[test]
    fn refuses_files_that_are_not_weft_stores() {
        let dir = tempfile::tempdir().expect("temp dir");
        let text = dir.path().join("notes.txt");
        std::fs::write(
            &text,
            "not a database, just some text that is long enough".repeat(20),
        )
        .expect("write");
        let message = open_error(&text);
        assert!(message.contains(&text.display().to_string()), "{message}");
        assert!(message.contains("not a database"), "{message}");

        let foreign = dir.path().join("other.db");
        Connection::open(&foreign)
            .and_then(|connection| connection.execute_batch("CREATE TABLE t (x)"))
            .expect("foreign database");
        let message = open_error(&foreign);
        assert!(message.contains("not a weft store"), "{message}");
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("weft.db");
        drop(SqliteStore::open(&path).expect("open"));
        Connection::open(&path)
            .and_then(|connection| {
                connection.execute(
                    "UPDATE meta SET value = 99 WHERE name = 'schema_version'",
                    [],
                )
            })
            .expect("bump schema version");
        let message = open_error(&path);
        assert!(message.contains("schema version 99"), "{message}");
        assert!(message.contains("upgrade weft"), "{message}");
    }

    #[tokio::test]
    async fn failed_transaction_leaves_the_file_unchanged() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("weft.db");
        let store = SqliteStore::open(&path).expect("open");
        store
            .put("/x", b"kept".to_vec(), Precondition::None)
            .await
            .expect("put");
        let conflict = store
            .transaction(vec![
                Operation::Put {
                    key: "/y".to_owned(),
                    value: b"lost".to_vec(),
                    precondition: Precondition::None,
                },
                Operation::Put {
                    key: "/x".to_owned(),
                    value: b"lost".to_vec(),
                    precondition: Precondition::Absent,
                },
            ])
            .await;
        assert_eq!(
            conflict,
            Err(StoreError::Conflict {
                key: "/x".to_owned()
            })
        );
        drop(store);

        let store = SqliteStore::open(&path).expect("reopen");
        assert_eq!(store.current_revision().await, Ok(1));
        assert_eq!(store.get("/y").await, Ok(None));
        let entries = store.list("/").await.expect("list");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].value, b"kept");
        let history: i64 = lock(&store.shared.writer)
            .query_row("SELECT count(*) FROM events", [], |row| row.get(0))
            .expect("count events");
        assert_eq!(history, 1);
    }

    /// Run by `killed_writer_leaves_whole_transactions` in a child process that gets
    /// SIGKILLed while it writes.
    #[tokio::test]
    #[ignore = "a child process of killed_writer_leaves_whole_transactions"]
    async fn crash_child_writes_forever() {
        let Some(path) = std::env::var_os("WEFT_STORE_CRASH_CHILD") else {
            return;
        };
        let store = SqliteStore::open(Path::new(&path)).expect("open");
        for round in 0u64.. {
            let value = round.to_string().into_bytes();
            let operations = ["/pair/left", "/pair/right"]
                .into_iter()
                .map(|key| Operation::Put {
                    key: key.to_owned(),
                    value: value.clone(),
                    precondition: Precondition::None,
                })
                .collect();
            store.transaction(operations).await.expect("write");
        }
    }

    /// Kills the child also when the test fails early.
    struct KilledOnDrop(std::process::Child);

    impl Drop for KilledOnDrop {
        fn drop(&mut self) {
            // SIGKILL: the child gets no chance to finish a write.
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[tokio::test]
    async fn killed_writer_leaves_whole_transactions() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("weft.db");
        let child = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "store::sqlite::tests::crash_child_writes_forever",
                "--exact",
                "--ignored",
            ])
            .env("WEFT_STORE_CRASH_CHILD", &path)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn child");
        let writer = KilledOnDrop(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let written =
                Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                    .and_then(|connection| {
                        connection.query_row(
                            "SELECT value FROM meta WHERE name = 'revision'",
                            [],
                            |row| row.get::<_, u64>(0),
                        )
                    })
                    .unwrap_or(0);
            if written >= 50 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the child wrote nothing"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(writer);

        let store = SqliteStore::open(&path).expect("reopen after crash");
        let revision = store.current_revision().await.expect("revision");
        let pair = store.list("/pair/").await.expect("list");
        assert_eq!(pair.len(), 2);
        for entry in &pair {
            assert_eq!(entry.mod_revision, revision, "{entry:?}");
            assert_eq!(entry.value, (revision - 1).to_string().into_bytes());
        }
        let history: u64 = lock(&store.shared.writer)
            .query_row("SELECT count(*) FROM events", [], |row| row.get(0))
            .expect("count events");
        assert_eq!(history, 2 * revision);
    }

    #[tokio::test]
    async fn lagging_watcher_ends_with_compacted_when_its_history_goes() {
        let store = SqliteStore::open_in_memory().expect("store");
        let mut events = store.watch("/", 0).await.expect("watch");
        let writes = 1000;
        for round in 0..writes {
            store
                .put("/k", vec![round as u8], Precondition::None)
                .await
                .expect("put");
        }
        store.compact(writes).await.expect("compact");
        let mut expected_revision = 1;
        loop {
            match next_event(&mut events).await {
                Ok(event) => {
                    assert_eq!(event.revision, expected_revision);
                    expected_revision += 1;
                }
                Err(error) => {
                    assert!(
                        matches!(error, StoreError::Compacted { oldest, .. } if oldest == writes),
                        "{error:?}"
                    );
                    break;
                }
            }
        }
        assert!(
            expected_revision < writes,
            "the watcher should have fallen behind"
        );
        let end = tokio::time::timeout(Duration::from_secs(10), events.next()).await;
        assert!(matches!(end, Ok(None)), "the stream ends after an error");
    }
}
