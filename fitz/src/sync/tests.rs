//! Unit tests of the local stores (both implementations), reopening, the
//! format version, and the reserved-range split. The flush itself is proven
//! against the embedded broker in `tests/tests/it/sync.rs`.

use std::sync::Arc;

use super::*;
use crate::Client;

fn put(table: Table, k: &[u8], v: &[u8]) -> StoreOp {
    StoreOp::Put {
        table,
        key: k.to_vec(),
        value: v.to_vec(),
    }
}

/// Reads, prefix scans, atomic batches and deletes, for any implementation.
fn exercise(store: &dyn LocalStore) {
    assert_eq!(store.get(Table::Outbox, b"a").unwrap(), None);
    store
        .apply(&[
            put(Table::Outbox, b"lane1\0\x01", b"one"),
            put(Table::Outbox, b"lane1\0\x02", b"two"),
            put(Table::Outbox, b"lane2\0\x01", b"other"),
            put(Table::Meta, b"lane1\0\x03", b"not the outbox"),
        ])
        .unwrap();
    let lane1 = store.scan_prefix(Table::Outbox, b"lane1\0").unwrap();
    assert_eq!(
        lane1,
        vec![
            (b"lane1\0\x01".to_vec(), b"one".to_vec()),
            (b"lane1\0\x02".to_vec(), b"two".to_vec()),
        ]
    );
    assert_eq!(store.scan_prefix(Table::Outbox, b"").unwrap().len(), 3);
    store
        .apply(&[
            StoreOp::Delete {
                table: Table::Outbox,
                key: b"lane1\0\x01".to_vec(),
            },
            put(Table::DeadLetter, b"\x01", b"dead"),
            // Deleting a missing key is not an error.
            StoreOp::Delete {
                table: Table::DeadLetter,
                key: b"missing".to_vec(),
            },
        ])
        .unwrap();
    assert_eq!(store.get(Table::Outbox, b"lane1\0\x01").unwrap(), None);
    assert_eq!(
        store.get(Table::DeadLetter, b"\x01").unwrap().as_deref(),
        Some(&b"dead"[..])
    );
    // Later ops of a batch see earlier ones: the last write wins.
    store
        .apply(&[put(Table::Meta, b"k", b"1"), put(Table::Meta, b"k", b"2")])
        .unwrap();
    assert_eq!(
        store.get(Table::Meta, b"k").unwrap().as_deref(),
        Some(&b"2"[..])
    );
}

#[test]
fn memory_store_reads_scans_and_applies_batches() {
    exercise(&MemoryStore::new());
}

#[test]
fn redb_store_reads_scans_and_applies_batches() {
    let dir = tempdir();
    exercise(&RedbStore::open(dir.join("s.redb")).unwrap());
}

#[test]
fn redb_store_keeps_its_data_across_reopen() {
    let dir = tempdir();
    let path = dir.join("s.redb");
    {
        let s = RedbStore::open(&path).unwrap();
        s.apply(&[put(Table::Outbox, b"x", b"y")]).unwrap();
    }
    let s = RedbStore::open(&path).unwrap();
    assert_eq!(
        s.get(Table::Outbox, b"x").unwrap().as_deref(),
        Some(&b"y"[..])
    );
}

#[test]
fn a_file_that_is_not_a_store_fails_clearly_and_is_not_changed() {
    let dir = tempdir();
    let path = dir.join("junk.redb");
    let junk = vec![0x5a_u8; 8192];
    std::fs::write(&path, &junk).unwrap();
    let e = RedbStore::open(&path).unwrap_err();
    assert!(matches!(e, SyncError::Store(_)), "{e}");
    assert!(e.to_string().contains("junk.redb"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), junk);
}

/// A client that is never connected: the outbox stores without it.
fn offline_client() -> Client {
    Client::anonymous("tcp://127.0.0.1:1").unwrap()
}

async fn version_and_identity(
    store: Arc<dyn LocalStore>,
    reopen: impl Fn() -> Arc<dyn LocalStore>,
) {
    let first = Outbox::builder_shared(offline_client(), store.clone())
        .open()
        .await
        .unwrap();
    let id = first.client_id().to_owned();
    assert_eq!(id.len(), 32);
    let seq = first
        .push(
            "kv://app/area/res",
            Mutation::Writes(vec![KvWrite::put("k", "v")]),
        )
        .await
        .unwrap();
    assert_eq!(first.status().pending(), 1);
    first.close().await;
    drop(store);

    // Reopened: same id, the entry still pending, the next seq after it.
    let store = reopen();
    let again = Outbox::builder_shared(offline_client(), store.clone())
        .open()
        .await
        .unwrap();
    assert_eq!(again.client_id(), id);
    let status = again.status();
    assert_eq!(status.pending(), 1);
    assert_eq!(status.lanes[0].lane, "kv://app/area/res");
    let next = again
        .push("kv://app/area/res", Mutation::Writes(vec![]))
        .await
        .unwrap();
    assert!(next > seq);
    again.close().await;

    // Another layout version: refused, and the record is left as it was.
    store
        .apply(&[put(Table::Meta, b"format", &99u32.to_be_bytes())])
        .unwrap();
    let e = Outbox::builder_shared(offline_client(), store.clone())
        .open()
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            SyncError::Version {
                found: 99,
                supported: FORMAT_VERSION
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("not supported"), "{e}");
    assert_eq!(
        store.get(Table::Meta, b"format").unwrap(),
        Some(99u32.to_be_bytes().to_vec())
    );
}

#[tokio::test]
async fn memory_outbox_keeps_id_and_entries_across_reopen_and_refuses_other_versions() {
    let store = MemoryStore::new();
    let shared = store.clone();
    version_and_identity(Arc::new(store), move || Arc::new(shared.clone())).await;
}

#[tokio::test]
async fn redb_outbox_keeps_id_and_entries_across_reopen_and_refuses_other_versions() {
    let dir = tempdir();
    let path = dir.join("o.redb");
    let store: Arc<dyn LocalStore> = Arc::new(RedbStore::open(&path).unwrap());
    version_and_identity(store, move || Arc::new(RedbStore::open(&path).unwrap())).await;
}

#[tokio::test]
async fn push_rejects_bad_routes_reserved_keys_and_unknown_handlers() {
    let outbox = Outbox::builder(offline_client(), MemoryStore::new())
        .open()
        .await
        .unwrap();
    let bad = [
        outbox
            .push("kv://app/area", Mutation::Writes(vec![]))
            .await
            .unwrap_err(),
        outbox
            .push(
                "kv://app/area/res",
                Mutation::Writes(vec![KvWrite::put(marker_key("x"), "v")]),
            )
            .await
            .unwrap_err(),
        outbox
            .mutate("kv://app/area/res", "nobody", b"")
            .await
            .unwrap_err(),
    ];
    for e in bad {
        assert!(matches!(e, SyncError::InvalidArgument(_)), "{e}");
    }
    assert_eq!(outbox.status().pending(), 0);
    // A range delete across the prefix is accepted: it is split when flushed.
    outbox
        .push(
            "kv://app/area/res",
            Mutation::Writes(vec![KvWrite::delete_range("", "\u{7f}")]),
        )
        .await
        .unwrap();
    assert_eq!(outbox.status().pending(), 1);
}

#[tokio::test]
async fn schedule_and_queue_entries_need_routes_of_their_kind_and_a_valid_cron() {
    use crate::schedule::DeliveryMode;
    let outbox = Outbox::builder(offline_client(), MemoryStore::new())
        .open()
        .await
        .unwrap();
    let create = || Mutation::schedule_create("0 6 * * *", DeliveryMode::Single, "{}");
    let bad = [
        // A schedule mutation on a KV route, a queue message on a schedule
        // route, a KV write on a queue route.
        outbox.push("kv://app/area/res", create()).await,
        outbox
            .push("schedule://app/a/r/op", Mutation::enqueue("x"))
            .await,
        outbox
            .push("queue://app/a/q", Mutation::Writes(vec![]))
            .await,
        // Incomplete routes, a bad cron expression.
        outbox
            .push("schedule://app/a/r", Mutation::ScheduleCancel)
            .await,
        outbox.push("queue://app/*/q", Mutation::enqueue("x")).await,
        outbox
            .push(
                "schedule://app/a/r/op",
                Mutation::schedule_create("61 * * * *", DeliveryMode::Single, ""),
            )
            .await,
        // Too large for one record (the broker could never take them).
        outbox
            .push("queue://app/a/q", Mutation::enqueue(vec![0; 70_000]))
            .await,
        outbox
            .push(
                "schedule://app/a/r/op",
                Mutation::schedule_create("* * * * *", DeliveryMode::Single, vec![0; 70_000]),
            )
            .await,
    ];
    for r in bad {
        let e = r.unwrap_err();
        assert!(matches!(e, SyncError::InvalidArgument(_)), "{e}");
    }
    assert_eq!(outbox.status().pending(), 0);
    let a = outbox
        .push("schedule://app/a/r/op", create())
        .await
        .unwrap();
    let b = outbox
        .push("schedule://app/a/r/op", Mutation::ScheduleCancel)
        .await
        .unwrap();
    let c = outbox
        .push("queue://app/a/q", Mutation::enqueue_plain("x"))
        .await
        .unwrap();
    assert!(a < b && b < c);
    let status = outbox.status();
    let lanes: Vec<_> = status
        .lanes
        .iter()
        .map(|l| (l.lane.as_str(), l.pending))
        .collect();
    assert_eq!(
        lanes,
        [("queue://app/a/q", 1), ("schedule://app/a/r/op", 2)]
    );
}

#[tokio::test]
async fn overlay_applies_the_lanes_pending_writes_in_order() {
    let outbox = Outbox::builder(offline_client(), MemoryStore::new())
        .handler("noop", |_tx, _args| Box::pin(async { Ok(()) }))
        .open()
        .await
        .unwrap();
    let (r, other) = ("kv://app/area/res", "kv://app/area/other");
    let committed = Some(bytes::Bytes::from_static(b"broker"));
    let view = |key: &'static str| {
        let outbox = outbox.clone();
        let committed = committed.clone();
        async move { outbox.overlay(r, key, committed).await.unwrap() }
    };
    assert_eq!(
        view("k").await,
        committed,
        "nothing pending: the broker's value"
    );
    let w = |writes| Mutation::Writes(writes);
    outbox
        .push(r, w(vec![KvWrite::put("k", "1")]))
        .await
        .unwrap();
    outbox
        .push(other, w(vec![KvWrite::delete("k")]))
        .await
        .unwrap();
    outbox.mutate(r, "noop", b"").await.unwrap();
    assert_eq!(view("k").await.as_deref(), Some(&b"1"[..]));
    assert_eq!(view("j").await, committed, "another key is untouched");
    outbox
        .push(r, w(vec![KvWrite::put("k", "2"), KvWrite::delete("k")]))
        .await
        .unwrap();
    assert_eq!(view("k").await, None, "later writes win, in order");
    outbox
        .push(
            r,
            w(vec![
                KvWrite::insert("k", "3"),
                KvWrite::delete_range("a", "z"),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(view("k").await, None);
    assert_eq!(view("j").await, None, "the range delete covers j");
    assert_eq!(view("zz").await, committed);
    outbox.close().await;
}

#[tokio::test]
async fn a_full_outbox_refuses_pushes_and_keeps_what_it_has() {
    let store = MemoryStore::new();
    let outbox = Outbox::builder(offline_client(), store.clone())
        .max_pending(2)
        .open()
        .await
        .unwrap();
    let put = || Mutation::Writes(vec![KvWrite::put("k", "v")]);
    outbox.push("kv://app/area/a", put()).await.unwrap();
    outbox.push("kv://app/area/b", put()).await.unwrap();
    let e = outbox.push("kv://app/area/a", put()).await.unwrap_err();
    assert!(matches!(e, SyncError::Full(2)), "{e}");
    assert_eq!(outbox.status().pending(), 2);
    outbox.close().await;
    // Reopened with a smaller bound: opens, keeps both, refuses more.
    let outbox = Outbox::builder(offline_client(), store)
        .max_pending(1)
        .open()
        .await
        .unwrap();
    assert_eq!(outbox.status().pending(), 2);
    assert!(matches!(
        outbox.push("kv://app/area/c", put()).await,
        Err(SyncError::Full(1))
    ));
    outbox.close().await;
}

/// A fresh directory under the system temp dir, unique per call.
fn tempdir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "fitz-sync-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
