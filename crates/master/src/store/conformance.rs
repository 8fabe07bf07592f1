//! What every [`Store`] backend must do, as one suite that sqlite's tests run and etcd's
//! will. Each case gets a fresh, empty store and must be its only writer, since it checks
//! exact revisions.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;
use tokio::time::timeout;
use tokio_stream::StreamExt;

use super::{
    Entry, EventKind, Operation, Precondition, Store, StoreError, WatchEvent, WatchStream,
    MAX_KEY_BYTES, MAX_OPERATIONS, MAX_WRITE_BYTES,
};

/// How long to wait for an expected event before calling the store stuck.
const PATIENCE: Duration = Duration::from_secs(10);
/// How long to listen for an event that must not come.
const QUIET: Duration = Duration::from_millis(100);

/// Runs every case, each on a store from `make_store`.
pub async fn run_conformance<S, Fut>(mut make_store: impl FnMut() -> Fut)
where
    S: Store,
    Fut: Future<Output = S>,
{
    put_get_list(make_store().await).await;
    preconditions(make_store().await).await;
    transactions(make_store().await).await;
    deletes(make_store().await).await;
    concurrent_updates_have_one_winner(make_store().await).await;
    watch_replays_history_then_follows(make_store().await).await;
    watch_from_now_sees_only_new_events(make_store().await).await;
    watch_started_during_writes_has_no_gap(make_store().await).await;
    unread_watcher_does_not_block_writers(make_store().await).await;
    compaction(make_store().await).await;
    bounds(make_store().await).await;
}

pub async fn put_get_list(store: impl Store) {
    assert_eq!(store.current_revision().await, Ok(0));
    assert_eq!(store.get("/a").await, Ok(None));
    assert_eq!(put(&store, "/a", "first").await, 1);
    assert_eq!(put(&store, "/ab", "sibling").await, 2);
    assert_eq!(put(&store, "/a/x", "child").await, 3);
    assert_eq!(put(&store, "/b", "other").await, 4);
    assert_eq!(put(&store, "/a", "second").await, 5);
    assert_eq!(store.current_revision().await, Ok(5));
    assert_eq!(
        store.get("/a").await,
        Ok(Some(entry("/a", "second", 1, 5))),
        "an overwrite keeps create_revision and moves mod_revision"
    );

    let all = store.list("/").await.expect("list /");
    assert_eq!(keys(&all), ["/a", "/a/x", "/ab", "/b"]);
    assert_eq!(all[1], entry("/a/x", "child", 3, 3));
    let under_a = store.list("/a").await.expect("list /a");
    assert_eq!(
        keys(&under_a),
        ["/a", "/a/x", "/ab"],
        "prefixes match bytewise"
    );
    let under_a_dir = store.list("/a/").await.expect("list /a/");
    assert_eq!(keys(&under_a_dir), ["/a/x"]);
    assert_eq!(store.list("/c").await, Ok(vec![]));

    assert_eq!(store.put("/empty", vec![], Precondition::None).await, Ok(6));
    assert_eq!(
        store.get("/empty").await,
        Ok(Some(entry("/empty", "", 6, 6)))
    );
    let binary: Vec<u8> = (0..=255).collect();
    assert_eq!(
        store
            .put("/binary", binary.clone(), Precondition::None)
            .await,
        Ok(7)
    );
    let stored = store.get("/binary").await.expect("get").expect("present");
    assert_eq!(stored.value, binary);
}

pub async fn preconditions(store: impl Store) {
    assert_eq!(
        store.put("/p", bytes("v1"), Precondition::Absent).await,
        Ok(1)
    );
    assert_eq!(
        store.put("/p", bytes("v2"), Precondition::Absent).await,
        Err(conflict("/p"))
    );
    assert_eq!(
        store.current_revision().await,
        Ok(1),
        "a conflict writes nothing"
    );
    assert_eq!(store.get("/p").await, Ok(Some(entry("/p", "v1", 1, 1))));

    assert_eq!(
        store
            .put("/p", bytes("v2"), Precondition::ModRevision(1))
            .await,
        Ok(2)
    );
    assert_eq!(
        store
            .put("/p", bytes("v3"), Precondition::ModRevision(1))
            .await,
        Err(conflict("/p")),
        "a stale mod_revision"
    );
    assert_eq!(
        store
            .put("/q", bytes("v"), Precondition::ModRevision(1))
            .await,
        Err(conflict("/q")),
        "an absent key has no mod_revision"
    );
    assert_eq!(store.current_revision().await, Ok(2));
    assert_eq!(store.get("/p").await, Ok(Some(entry("/p", "v2", 1, 2))));

    assert_eq!(
        store.delete("/p", Precondition::Absent).await,
        Err(conflict("/p"))
    );
    assert_eq!(
        store.delete("/p", Precondition::ModRevision(1)).await,
        Err(conflict("/p"))
    );
    assert_eq!(store.get("/p").await, Ok(Some(entry("/p", "v2", 1, 2))));
    assert_eq!(
        store.delete("/p", Precondition::ModRevision(2)).await,
        Ok(Some(3))
    );
    assert_eq!(store.delete("/p", Precondition::Absent).await, Ok(None));
    assert_eq!(
        store.put("/p", bytes("v4"), Precondition::Absent).await,
        Ok(4)
    );
    assert_eq!(
        store.get("/p").await,
        Ok(Some(entry("/p", "v4", 4, 4))),
        "a recreated key starts a new life"
    );
}

pub async fn transactions(store: impl Store) {
    assert_eq!(put(&store, "/t/a", "old").await, 1);
    let applied = store
        .transaction(vec![
            put_op("/t/a", "new", Precondition::ModRevision(1)),
            put_op("/t/b", "b", Precondition::Absent),
            delete_op("/t/none", Precondition::None),
        ])
        .await;
    assert_eq!(applied, Ok(2), "one revision for the whole transaction");
    assert_eq!(
        store.get("/t/a").await,
        Ok(Some(entry("/t/a", "new", 1, 2)))
    );
    assert_eq!(store.get("/t/b").await, Ok(Some(entry("/t/b", "b", 2, 2))));

    let failed = store
        .transaction(vec![
            put_op("/t/c", "c", Precondition::Absent),
            put_op("/t/b", "again", Precondition::Absent),
            delete_op("/t/a", Precondition::ModRevision(1)),
        ])
        .await;
    assert_eq!(failed, Err(conflict("/t/b")), "the first failing key");
    assert_eq!(store.current_revision().await, Ok(2));
    assert_eq!(store.get("/t/c").await, Ok(None), "all or nothing");
    assert_eq!(
        store.get("/t/a").await,
        Ok(Some(entry("/t/a", "new", 1, 2)))
    );

    let nothing_changed = store
        .transaction(vec![delete_op("/t/none", Precondition::None)])
        .await;
    assert_eq!(
        nothing_changed,
        Ok(2),
        "a write that changes nothing uses no revision"
    );
    assert_eq!(store.transaction(vec![]).await, Ok(2));

    let mixed = store
        .transaction(vec![
            delete_op("/t/a", Precondition::ModRevision(2)),
            put_op("/t/c", "c", Precondition::Absent),
        ])
        .await;
    assert_eq!(mixed, Ok(3));
    assert_eq!(
        keys(&store.list("/t/").await.expect("list")),
        ["/t/b", "/t/c"]
    );
}

pub async fn deletes(store: impl Store) {
    for key in ["/d/1", "/d/2", "/d/3", "/dx"] {
        put(&store, key, "v").await;
    }
    assert_eq!(store.delete("/d/1", Precondition::None).await, Ok(Some(5)));
    assert_eq!(store.get("/d/1").await, Ok(None));
    assert_eq!(store.delete("/d/1", Precondition::None).await, Ok(None));
    assert_eq!(store.current_revision().await, Ok(5));

    assert_eq!(store.delete_prefix("/d/").await, Ok(2));
    assert_eq!(
        store.current_revision().await,
        Ok(6),
        "one revision for all"
    );
    assert_eq!(keys(&store.list("/").await.expect("list")), ["/dx"]);
    assert_eq!(store.delete_prefix("/d/").await, Ok(0));
    assert_eq!(store.current_revision().await, Ok(6));
    assert_eq!(store.delete_prefix("/d").await, Ok(1));
    assert_eq!(store.list("/").await, Ok(vec![]));
}

/// Optimistic concurrency: of many writers that read the same revision, one wins.
pub async fn concurrent_updates_have_one_winner(store: impl Store) {
    const CONTENDERS: usize = 16;
    let store = Arc::new(store);
    put(&*store, "/counter", "start").await;
    let everyone_has_read = Arc::new(Barrier::new(CONTENDERS));
    let contenders: Vec<_> = (0..CONTENDERS)
        .map(|contender| {
            let store = Arc::clone(&store);
            let everyone_has_read = Arc::clone(&everyone_has_read);
            tokio::spawn(async move {
                let seen = store.get("/counter").await.expect("get").expect("present");
                everyone_has_read.wait().await;
                let value = bytes(&format!("contender {contender}"));
                let precondition = Precondition::ModRevision(seen.mod_revision);
                (
                    seen.mod_revision,
                    store.put("/counter", value, precondition).await,
                )
            })
        })
        .collect();
    let mut winners = Vec::new();
    for (contender, task) in contenders.into_iter().enumerate() {
        let (seen, result) = task.await.expect("contender task");
        assert_eq!(seen, 1);
        match result {
            Ok(revision) => winners.push((contender, revision)),
            Err(error) => assert_eq!(error, conflict("/counter")),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let (winner, revision) = winners[0];
    assert_eq!(revision, 2);
    assert_eq!(store.current_revision().await, Ok(2));
    let stored = store.get("/counter").await.expect("get").expect("present");
    assert_eq!(stored.value, bytes(&format!("contender {winner}")));
}

pub async fn watch_replays_history_then_follows(store: impl Store) {
    put(&store, "/w/a", "1").await;
    put(&store, "/other", "x").await;
    let pair = vec![
        put_op("/w/b", "2", Precondition::None),
        put_op("/w/c", "3", Precondition::None),
    ];
    assert_eq!(store.transaction(pair).await, Ok(3));
    store
        .delete("/w/a", Precondition::None)
        .await
        .expect("delete");

    let mut events = store.watch("/w/", 0).await.expect("watch");
    put(&store, "/w/a", "4").await;
    put(&store, "/wx", "outside the prefix").await;
    assert_eq!(store.delete_prefix("/w/").await, Ok(3));

    let expected = [
        event(1, "/w/a", Some("1")),
        event(3, "/w/b", Some("2")),
        event(3, "/w/c", Some("3")),
        event(4, "/w/a", None),
        event(5, "/w/a", Some("4")),
        event(7, "/w/a", None),
        event(7, "/w/b", None),
        event(7, "/w/c", None),
    ];
    for expected in expected {
        assert_eq!(next_event(&mut events).await, Ok(expected));
    }
    assert_quiet(&mut events).await;
}

pub async fn watch_from_now_sees_only_new_events(store: impl Store) {
    put(&store, "/n/a", "1").await;
    put(&store, "/n/a", "2").await;
    let now = store.current_revision().await.expect("revision");
    let mut events = store.watch("/n/", now).await.expect("watch");
    let mut from_future = store.watch("/n/", now + 1).await.expect("watch");
    assert_quiet(&mut events).await;
    put(&store, "/n/b", "3").await;
    put(&store, "/n/c", "4").await;
    assert_eq!(
        next_event(&mut events).await,
        Ok(event(3, "/n/b", Some("3")))
    );
    assert_eq!(
        next_event(&mut events).await,
        Ok(event(4, "/n/c", Some("4")))
    );
    assert_eq!(
        next_event(&mut from_future).await,
        Ok(event(4, "/n/c", Some("4")))
    );
    assert_quiet(&mut events).await;
    assert_quiet(&mut from_future).await;
}

/// The switch from replayed history to live events loses and repeats nothing.
pub async fn watch_started_during_writes_has_no_gap(store: impl Store) {
    const WRITES: u64 = 400;
    let store = Arc::new(store);
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for write in 0..WRITES {
                put(&*store, &format!("/g/{}", write % 7), &write.to_string()).await;
            }
        })
    };
    while store.current_revision().await.expect("revision") < 10 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut from_start = store.watch("/g/", 0).await.expect("watch");
    let midway = store.current_revision().await.expect("revision");
    let mut from_midway = store.watch("/g/", midway).await.expect("watch");
    writer.await.expect("writer task");
    for revision in 1..=WRITES {
        let event = next_event(&mut from_start).await.expect("event");
        assert_eq!(event.revision, revision);
        assert_eq!(event.value, Some(bytes(&(revision - 1).to_string())));
    }
    for revision in midway + 1..=WRITES {
        let event = next_event(&mut from_midway).await.expect("event");
        assert_eq!(event.revision, revision);
    }
    assert_quiet(&mut from_start).await;
    assert_quiet(&mut from_midway).await;
}

pub async fn unread_watcher_does_not_block_writers(store: impl Store) {
    const WRITES: u64 = 300;
    let mut events = store.watch("/s/", 0).await.expect("watch");
    let writes = async {
        for write in 0..WRITES {
            put(&store, "/s/key", &write.to_string()).await;
        }
    };
    timeout(PATIENCE, writes)
        .await
        .expect("writers were held up by a watcher nobody reads");
    for revision in 1..=WRITES {
        let event = next_event(&mut events).await.expect("event");
        assert_eq!(event.revision, revision, "the watcher catches up in order");
    }
}

pub async fn compaction(store: impl Store) {
    for value in ["1", "2", "3", "4"] {
        put(&store, "/c/k", value).await;
    }
    store.compact(2).await.expect("compact");
    assert_eq!(
        store.get("/c/k").await,
        Ok(Some(entry("/c/k", "4", 1, 4))),
        "compaction keeps keys"
    );

    let mut too_old = store.watch("/c/", 1).await.expect("watch");
    assert_eq!(
        next_event(&mut too_old).await,
        Err(StoreError::Compacted {
            requested: 1,
            oldest: 2
        })
    );
    let end = timeout(PATIENCE, too_old.next()).await.expect("stream end");
    assert!(end.is_none(), "the stream ends after an error: {end:?}");

    let mut oldest = store.watch("/c/", 2).await.expect("watch");
    assert_eq!(
        next_event(&mut oldest).await,
        Ok(event(3, "/c/k", Some("3")))
    );
    assert_eq!(
        next_event(&mut oldest).await,
        Ok(event(4, "/c/k", Some("4")))
    );

    store
        .compact(1)
        .await
        .expect("compacting an older revision does nothing");
    assert!(store.compact(5).await.is_err(), "compacting the future");
    store
        .compact(4)
        .await
        .expect("compact to the current revision");
    let mut from_now = store.watch("/c/", 4).await.expect("watch");
    put(&store, "/c/k", "5").await;
    assert_eq!(
        next_event(&mut from_now).await,
        Ok(event(5, "/c/k", Some("5")))
    );
    assert_eq!(
        next_event(&mut oldest).await,
        Ok(event(5, "/c/k", Some("5")))
    );
}

pub async fn bounds(store: impl Store) {
    let too_long = format!("/{}", "k".repeat(MAX_KEY_BYTES));
    for key in [
        "",
        "relative",
        "/with space",
        "/tab\t",
        "/caf\u{e9}",
        &too_long,
    ] {
        let invalid = |result: Result<_, StoreError>| matches!(result, Err(StoreError::InvalidKey { key: rejected, .. }) if rejected == key);
        assert!(invalid(store.get(key).await.map(drop)), "get {key:?}");
        assert!(invalid(store.list(key).await.map(drop)), "list {key:?}");
        assert!(invalid(
            store
                .put(key, bytes("v"), Precondition::None)
                .await
                .map(drop)
        ));
        assert!(invalid(
            store.delete(key, Precondition::None).await.map(drop)
        ));
        assert!(invalid(store.delete_prefix(key).await.map(drop)));
        assert!(
            invalid(store.watch(key, 0).await.map(drop)),
            "watch {key:?}"
        );
    }

    let longest_key = format!("/{}", "k".repeat(MAX_KEY_BYTES - 1));
    assert_eq!(put(&store, &longest_key, "v").await, 1);
    let largest_value = vec![7; MAX_WRITE_BYTES - "/big".len()];
    assert_eq!(
        store.put("/big", largest_value, Precondition::None).await,
        Ok(2)
    );
    let too_large = vec![7; MAX_WRITE_BYTES - "/big".len() + 1];
    assert_eq!(
        store.put("/big", too_large, Precondition::None).await,
        Err(StoreError::TooLarge {
            key: "/big".to_owned(),
            size: MAX_WRITE_BYTES + 1,
            max: MAX_WRITE_BYTES
        })
    );
    let halves = vec![
        Operation::Put {
            key: "/half/1".to_owned(),
            value: vec![1; MAX_WRITE_BYTES / 2],
            precondition: Precondition::None,
        },
        Operation::Put {
            key: "/half/2".to_owned(),
            value: vec![2; MAX_WRITE_BYTES / 2],
            precondition: Precondition::None,
        },
    ];
    assert!(
        matches!(store.transaction(halves).await, Err(StoreError::TooLarge { key, .. }) if key == "/half/2"),
        "the limit holds for a transaction as a whole"
    );

    let many = |count: usize| -> Vec<Operation> {
        (0..count)
            .map(|index| put_op(&format!("/many/{index}"), "v", Precondition::None))
            .collect()
    };
    assert_eq!(
        store.transaction(many(MAX_OPERATIONS + 1)).await,
        Err(StoreError::TooManyOperations {
            count: MAX_OPERATIONS + 1,
            max: MAX_OPERATIONS
        })
    );
    let twice = vec![
        put_op("/twice", "1", Precondition::None),
        delete_op("/twice", Precondition::None),
    ];
    assert!(matches!(
        store.transaction(twice).await,
        Err(StoreError::InvalidKey { key, .. }) if key == "/twice"
    ));
    assert_eq!(
        store.current_revision().await,
        Ok(2),
        "rejected writes write nothing"
    );
    assert_eq!(store.transaction(many(MAX_OPERATIONS)).await, Ok(3));
    assert_eq!(
        store.list("/many/").await.map(|all| all.len()),
        Ok(MAX_OPERATIONS)
    );
}

async fn put(store: &impl Store, key: &str, value: &str) -> u64 {
    store
        .put(key, bytes(value), Precondition::None)
        .await
        .unwrap_or_else(|error| panic!("put {key}: {error}"))
}

/// The next item of a watch, failing the test if none comes in time or the stream ends.
pub async fn next_event(events: &mut WatchStream) -> Result<WatchEvent, StoreError> {
    timeout(PATIENCE, events.next())
        .await
        .expect("no event in time")
        .expect("the stream ended")
}

async fn assert_quiet(events: &mut WatchStream) {
    if let Ok(unexpected) = timeout(QUIET, events.next()).await {
        panic!("expected no event, got {unexpected:?}");
    }
}

fn bytes(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

fn entry(key: &str, value: &str, create_revision: u64, mod_revision: u64) -> Entry {
    Entry {
        key: key.to_owned(),
        value: bytes(value),
        create_revision,
        mod_revision,
    }
}

fn keys(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|entry| entry.key.as_str()).collect()
}

/// A put event when `value` is given, else a delete.
fn event(revision: u64, key: &str, value: Option<&str>) -> WatchEvent {
    WatchEvent {
        revision,
        kind: if value.is_some() {
            EventKind::Put
        } else {
            EventKind::Delete
        },
        key: key.to_owned(),
        value: value.map(bytes),
    }
}

fn conflict(key: &str) -> StoreError {
    StoreError::Conflict {
        key: key.to_owned(),
    }
}

fn put_op(key: &str, value: &str, precondition: Precondition) -> Operation {
    Operation::Put {
        key: key.to_owned(),
        value: bytes(value),
        precondition,
    }
}

fn delete_op(key: &str, precondition: Precondition) -> Operation {
    Operation::Delete {
        key: key.to_owned(),
        precondition,
    }
}
