//! KV through the wire: every operation and error code, isolation, locks,
//! idle expiry, watches.

use std::time::{Duration, SystemTime};

use crate::support::{Kind, RawClient, code};
use bytes::Bytes;
use fitz_broker::{Broker, Clock};
use fitz_protocol::kv::{self, BeginOk, Durability, GetOk, ScanOk, SubscribeReply, TxMode};
use fitz_protocol::{Message, codes, types};

both_transports!(
    read_after_write_and_not_found,
    insert_delete_and_delete_range,
    scan_directions_limits_and_continuation,
    scan_pages_are_capped,
    transaction_errors,
    read_only_snapshot_isolation,
    writes_kept_aside_or_flattened_commit_whole,
    rollback_discards,
    lock_conflicts_and_release,
    lock_released_when_the_owner_disconnects,
    watches_notify_committed_changes,
    watch_registration_limits_and_patterns,
);

const R: &str = "kv://realm/area/res";

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn begin(c: &mut RawClient, route: &str, mode: TxMode) -> u64 {
    c.ok::<_, BeginOk>(&kv::Begin {
        route: route.into(),
        mode,
    })
    .await
    .tx_id
}

async fn put(c: &mut RawClient, tx: u64, route: &str, k: &str, v: &str) {
    c.ok::<_, kv::PutOk>(&kv::Put {
        tx_id: tx,
        route: route.into(),
        key: b(k),
        value: b(v),
    })
    .await;
}

async fn get(c: &mut RawClient, tx: u64, route: &str, k: &str) -> Option<Bytes> {
    c.ok::<_, GetOk>(&kv::Get {
        tx_id: tx,
        route: route.into(),
        key: b(k),
    })
    .await
    .value
}

async fn commit(c: &mut RawClient, tx: u64, route: &str) {
    c.ok::<_, kv::CommitOk>(&kv::Commit {
        tx_id: tx,
        route: route.into(),
        durability: Durability::Buffered,
    })
    .await;
}

async fn write(c: &mut RawClient, route: &str, pairs: &[(&str, &str)]) {
    let tx = begin(c, route, TxMode::ReadWrite).await;
    for (k, v) in pairs {
        put(c, tx, route, k, v).await;
    }
    commit(c, tx, route).await;
}

fn scan(
    tx: u64,
    start: Option<&str>,
    end: Option<&str>,
    limit: Option<u32>,
    reverse: bool,
) -> kv::Scan {
    kv::Scan {
        tx_id: tx,
        route: R.into(),
        start: start.map(b),
        end: end.map(b),
        limit,
        reverse,
        start_exclusive: None,
    }
}

fn keys(p: &ScanOk) -> Vec<String> {
    p.items
        .iter()
        .map(|(k, _)| String::from_utf8(k.to_vec()).unwrap())
        .collect()
}

async fn read_after_write_and_not_found(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    let tx = begin(&mut c, R, TxMode::ReadWrite).await;
    put(&mut c, tx, R, "k", "v1").await;
    assert_eq!(
        get(&mut c, tx, R, "k").await,
        Some(b("v1")),
        "read your writes"
    );
    c.ok::<_, kv::CommitOk>(&kv::Commit {
        tx_id: tx,
        route: R.into(),
        durability: Durability::Sync,
    })
    .await;
    let tx = begin(&mut c, R, TxMode::ReadOnly).await;
    assert_eq!(get(&mut c, tx, R, "k").await, Some(b("v1")));
    // Not found is `[0][0][u32 0]`.
    let raw = c
        .call(&kv::Get {
            tx_id: tx,
            route: R.into(),
            key: b("missing"),
        })
        .await;
    assert_eq!(&raw[..], &[0, 0, 0, 0, 0, 0]);
    commit(&mut c, tx, R).await;
}

async fn insert_delete_and_delete_range(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    write(&mut c, R, &[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]).await;
    let tx = begin(&mut c, R, TxMode::ReadWrite).await;
    let e = c
        .fails(&kv::Insert {
            tx_id: tx,
            route: R.into(),
            key: b("a"),
            value: b("x"),
        })
        .await;
    assert_eq!(code(&e), codes::KV_KEY_EXISTS);
    // The transaction stays usable after 1006.
    c.ok::<_, kv::InsertOk>(&kv::Insert {
        tx_id: tx,
        route: R.into(),
        key: b("e"),
        value: b("5"),
    })
    .await;
    c.ok::<_, kv::DeleteOk>(&kv::Delete {
        tx_id: tx,
        route: R.into(),
        key: b("a"),
    })
    .await;
    let e = c
        .fails(&kv::DeleteRange {
            tx_id: tx,
            route: R.into(),
            start: b("z"),
            end: b("a"),
        })
        .await;
    assert_eq!(code(&e), codes::KV_INVALID_ROUTE, "inverted bounds");
    c.ok::<_, kv::DeleteRangeOk>(&kv::DeleteRange {
        tx_id: tx,
        route: R.into(),
        start: b("b"),
        end: b("b"),
    })
    .await;
    c.ok::<_, kv::DeleteRangeOk>(&kv::DeleteRange {
        tx_id: tx,
        route: R.into(),
        start: b("b"),
        end: b("d"),
    })
    .await;
    commit(&mut c, tx, R).await;
    let tx = begin(&mut c, R, TxMode::ReadOnly).await;
    let page = c.ok::<_, ScanOk>(&scan(tx, None, None, None, false)).await;
    assert_eq!(keys(&page), ["d", "e"]);
    assert!(!page.has_more);
}

async fn scan_directions_limits_and_continuation(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    write(
        &mut c,
        R,
        &[("user:001", "a"), ("user:002", "b"), ("user:010", "c")],
    )
    .await;
    let tx = begin(&mut c, R, TxMode::ReadOnly).await;
    // AC-KV-007 / 008.
    let p = c
        .ok::<_, ScanOk>(&scan(
            tx,
            Some("user:001"),
            Some("user:010"),
            Some(100),
            false,
        ))
        .await;
    assert_eq!(keys(&p), ["user:001", "user:002"]);
    let p = c
        .ok::<_, ScanOk>(&scan(
            tx,
            Some("user:010"),
            Some("user:001"),
            Some(100),
            true,
        ))
        .await;
    assert_eq!(keys(&p), ["user:010", "user:002"]);
    // Equal and inverted bounds: empty success.
    let p = c
        .ok::<_, ScanOk>(&scan(tx, Some("user:002"), Some("user:001"), None, false))
        .await;
    assert_eq!((p.items.len(), p.has_more), (0, false));
    // Limit and has_more, then exclusive continuation in both directions.
    let p = c
        .ok::<_, ScanOk>(&scan(tx, None, None, Some(1), false))
        .await;
    assert_eq!((keys(&p), p.has_more), (vec!["user:001".to_string()], true));
    let mut next = scan(tx, Some("user:001"), None, Some(5), false);
    next.start_exclusive = Some(true);
    let p = c.ok::<_, ScanOk>(&next).await;
    assert_eq!(
        (keys(&p), p.has_more),
        (vec!["user:002".to_string(), "user:010".to_string()], false)
    );
    let mut rev = scan(tx, Some("user:010"), None, Some(5), true);
    rev.start_exclusive = Some(true);
    let p = c.ok::<_, ScanOk>(&rev).await;
    assert_eq!(keys(&p), ["user:002", "user:001"]);
}

async fn scan_pages_are_capped(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    let tx = begin(&mut c, R, TxMode::ReadWrite).await;
    for i in 0..1100 {
        put(&mut c, tx, R, &format!("k{i:05}"), "v").await;
    }
    commit(&mut c, tx, R).await;
    let big = "x".repeat(40_000);
    let tx = begin(&mut c, R, TxMode::ReadOnly).await;
    let p = c.ok::<_, ScanOk>(&scan(tx, None, None, None, false)).await;
    assert_eq!((p.items.len(), p.has_more), (1024, true));
    // Byte budget: two 40 KB values cannot share one record.
    let route = "kv://realm/area/big";
    let tx = begin(&mut c, route, TxMode::ReadWrite).await;
    put(&mut c, tx, route, "a", &big).await;
    put(&mut c, tx, route, "b", &big).await;
    commit(&mut c, tx, route).await;
    let tx = begin(&mut c, route, TxMode::ReadOnly).await;
    let mut q = scan(tx, None, None, None, false);
    q.route = route.into();
    let p = c.ok::<_, ScanOk>(&q).await;
    assert_eq!((keys(&p), p.has_more), (vec!["a".to_string()], true));
}

async fn transaction_errors(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    let mut other = RawClient::anon(&broker, kind).await;
    let tx = begin(&mut c, R, TxMode::ReadWrite).await;
    // Unknown tx, and another session's tx.
    let e = c
        .fails(&kv::Get {
            tx_id: 999_999,
            route: R.into(),
            key: b("k"),
        })
        .await;
    assert_eq!(code(&e), codes::KV_TX_NOT_FOUND);
    let e = other
        .fails(&kv::Get {
            tx_id: tx,
            route: R.into(),
            key: b("k"),
        })
        .await;
    assert_eq!(code(&e), codes::KV_TX_NOT_FOUND);
    // The route must repeat BEGIN's (AC-KV-009).
    let e = c
        .fails(&kv::Put {
            tx_id: tx,
            route: "kv://realm/area/posts".into(),
            key: b("k"),
            value: b("v"),
        })
        .await;
    assert_eq!(code(&e), codes::KV_INVALID_ROUTE);
    // A malformed route is a 1007 too (shape checked before dispatch).
    let e = c
        .fails(&kv::Get {
            tx_id: tx,
            route: "kv://realm/area".into(),
            key: b("k"),
        })
        .await;
    assert_eq!(code(&e), codes::KV_INVALID_ROUTE);
    // COMMIT persistence must be 0 or 1.
    let mut p = kv::Commit {
        tx_id: tx,
        route: R.into(),
        durability: Durability::Sync,
    }
    .to_payload()
    .to_vec();
    *p.last_mut().unwrap() = 2;
    let id = c.id();
    let mut f = bytes::BytesMut::new();
    fitz_protocol::record::put_label(&mut f, types::CORRELATE, id);
    fitz_protocol::record::encode_raw_record(&mut f, types::KV_COMMIT, &p).unwrap();
    c.send_frame(&f).await;
    let e = fitz_protocol::WireError::decode(c.reply_to(id).await).unwrap();
    assert_eq!(e.code(), Some(codes::KV_INVALID_ROUTE));
    // Read-only writes: 1005.
    let ro = begin(&mut c, R, TxMode::ReadOnly).await;
    let e = c
        .fails(&kv::Put {
            tx_id: ro,
            route: R.into(),
            key: b("k"),
            value: b("v"),
        })
        .await;
    assert_eq!(code(&e), codes::KV_READ_ONLY);
    let e = c
        .fails(&kv::Delete {
            tx_id: ro,
            route: R.into(),
            key: b("k"),
        })
        .await;
    assert_eq!(code(&e), codes::KV_READ_ONLY);
    // Committed or rolled-back transactions are gone.
    commit(&mut c, tx, R).await;
    let e = c
        .fails(&kv::Commit {
            tx_id: tx,
            route: R.into(),
            durability: Durability::Buffered,
        })
        .await;
    assert_eq!(code(&e), codes::KV_TX_NOT_FOUND);
    c.ok::<_, kv::RollbackOk>(&kv::Rollback {
        tx_id: ro,
        route: R.into(),
    })
    .await;
    let e = c
        .fails(&kv::Rollback {
            tx_id: ro,
            route: R.into(),
        })
        .await;
    assert_eq!(code(&e), codes::KV_TX_NOT_FOUND);
}

async fn read_only_snapshot_isolation(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    write(&mut c, R, &[("k", "old")]).await;
    let snap = begin(&mut c, R, TxMode::ReadOnly).await;
    let tx = begin(&mut c, R, TxMode::ReadWrite).await;
    put(&mut c, tx, R, "k", "new").await;
    put(&mut c, tx, R, "k2", "x").await;
    assert_eq!(
        get(&mut c, snap, R, "k").await,
        Some(b("old")),
        "uncommitted writes invisible"
    );
    commit(&mut c, tx, R).await;
    assert_eq!(
        get(&mut c, snap, R, "k").await,
        Some(b("old")),
        "snapshot taken at BEGIN"
    );
    assert_eq!(get(&mut c, snap, R, "k2").await, None);
    let fresh = begin(&mut c, R, TxMode::ReadOnly).await;
    assert_eq!(get(&mut c, fresh, R, "k").await, Some(b("new")));
    // A read-only transaction takes no lock: a writer can begin meanwhile.
    let w = begin(&mut c, R, TxMode::ReadWrite).await;
    commit(&mut c, w, R).await;
}

/// A transaction's first writes are kept aside and applied at COMMIT (3
/// writes); more than 16 flatten them into its view (40 writes, then a
/// SCAN). Either way reads inside see them, a snapshot taken before does
/// not, and the commit installs all of them.
async fn writes_kept_aside_or_flattened_commit_whole(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    write(&mut c, R, &[("a", "0"), ("gone", "x")]).await;
    for writes in [3usize, 40] {
        let snap = begin(&mut c, R, TxMode::ReadOnly).await;
        let before = c
            .ok::<_, ScanOk>(&scan(snap, None, None, None, false))
            .await;
        let tx = begin(&mut c, R, TxMode::ReadWrite).await;
        for i in 0..writes {
            put(&mut c, tx, R, &format!("k{i:02}"), &format!("{writes}")).await;
        }
        put(&mut c, tx, R, "a", &format!("{writes}")).await;
        c.ok::<_, kv::DeleteOk>(&kv::Delete {
            tx_id: tx,
            route: R.into(),
            key: b("gone"),
        })
        .await;
        assert_eq!(get(&mut c, tx, R, "a").await, Some(b(&format!("{writes}"))));
        assert_eq!(get(&mut c, tx, R, "gone").await, None);
        if writes > 16 {
            // Flattened by then; a SCAN sees the same.
            let inside = c.ok::<_, ScanOk>(&scan(tx, None, None, None, false)).await;
            // a, k00.. and (from the first round's commit) z; not "gone".
            assert_eq!(inside.items.len(), writes + 2);
            assert!(!keys(&inside).contains(&"gone".to_string()));
        }
        put(&mut c, tx, R, "z", "last").await;
        commit(&mut c, tx, R).await;
        let after = c
            .ok::<_, ScanOk>(&scan(snap, None, None, None, false))
            .await;
        assert_eq!(
            after, before,
            "a snapshot from before the commit is unchanged"
        );
        let fresh = begin(&mut c, R, TxMode::ReadOnly).await;
        assert_eq!(
            get(&mut c, fresh, R, "a").await,
            Some(b(&format!("{writes}")))
        );
        assert_eq!(get(&mut c, fresh, R, "gone").await, None);
        assert_eq!(get(&mut c, fresh, R, "z").await, Some(b("last")));
        let last = format!("k{:02}", writes - 1);
        assert_eq!(
            get(&mut c, fresh, R, &last).await,
            Some(b(&format!("{writes}")))
        );
        // Put "gone" back for the next round.
        write(&mut c, R, &[("gone", "x")]).await;
    }
}

async fn rollback_discards(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    let tx = begin(&mut c, R, TxMode::ReadWrite).await;
    put(&mut c, tx, R, "k", "v").await;
    c.ok::<_, kv::RollbackOk>(&kv::Rollback {
        tx_id: tx,
        route: R.into(),
    })
    .await;
    let tx = begin(&mut c, R, TxMode::ReadWrite).await;
    assert_eq!(get(&mut c, tx, R, "k").await, None);
}

async fn lock_conflicts_and_release(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut a = RawClient::anon(&broker, kind).await;
    let mut b2 = RawClient::anon(&broker, kind).await;
    let tx = begin(&mut a, R, TxMode::ReadWrite).await;
    let rw = kv::Begin {
        route: R.into(),
        mode: TxMode::ReadWrite,
    };
    assert_eq!(code(&b2.fails(&rw).await), codes::KV_ISOLATION_CONFLICT);
    assert_eq!(
        code(&a.fails(&rw).await),
        codes::KV_ISOLATION_CONFLICT,
        "same session too"
    );
    // Other resources are independent.
    begin(&mut b2, "kv://realm/area/other", TxMode::ReadWrite).await;
    assert_eq!(broker.engines().kv.stats().locked_resources, 2);
    commit(&mut a, tx, R).await;
    let tx = begin(&mut b2, R, TxMode::ReadWrite).await;
    b2.ok::<_, kv::RollbackOk>(&kv::Rollback {
        tx_id: tx,
        route: R.into(),
    })
    .await;
    begin(&mut a, R, TxMode::ReadWrite).await;
}

async fn lock_released_when_the_owner_disconnects(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut a = RawClient::anon(&broker, kind).await;
    let mut b2 = RawClient::anon(&broker, kind).await;
    let tx = begin(&mut a, R, TxMode::ReadWrite).await;
    put(&mut a, tx, R, "k", "uncommitted").await;
    drop(a);
    broker.wait_for_session_count(1).await;
    let tx = begin(&mut b2, R, TxMode::ReadWrite).await;
    assert_eq!(get(&mut b2, tx, R, "k").await, None, "rolled back");
    assert_eq!(broker.engines().kv.stats().transactions, 1);
}

async fn watches_notify_committed_changes(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut w = RawClient::anon(&broker, kind).await;
    let mut c = RawClient::anon(&broker, kind).await;
    let exact = w
        .ok::<_, SubscribeReply>(&kv::Subscribe::new(R))
        .await
        .sub_id;
    let wild = w
        .ok::<_, SubscribeReply>(&kv::Subscribe::new("kv://realm/*/*"))
        .await
        .sub_id;
    let again = w
        .ok::<_, SubscribeReply>(&kv::Subscribe::new(R))
        .await
        .sub_id;
    assert_eq!(exact, again);
    assert_ne!(exact, wild);
    write(&mut c, R, &[("a", "1"), ("b", "2")]).await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let n = w.next_of_type(types::KV_NOTIFY).await;
        assert_eq!(n.correlation, None);
        let n = kv::Notify::decode(n.record.payload).unwrap();
        assert_eq!((&*n.route, n.mutation_count), (R, 2));
        got.push(n.sub_id);
    }
    got.sort_unstable();
    assert_eq!(got, [exact, wild]);
    // No change → no notify; a read-only commit → no notify; other realm → no notify.
    let tx = begin(&mut c, R, TxMode::ReadWrite).await;
    c.ok::<_, kv::DeleteOk>(&kv::Delete {
        tx_id: tx,
        route: R.into(),
        key: b("zz"),
    })
    .await;
    commit(&mut c, tx, R).await;
    write(&mut c, "kv://other/area/res", &[("a", "1")]).await;
    w.expect_quiet().await;
    // Unsubscribe by the original pattern string (idempotent).
    w.ok::<_, kv::UnsubscribeOk>(&kv::Unsubscribe::new("kv://realm/*/*"))
        .await;
    w.ok::<_, kv::UnsubscribeOk>(&kv::Unsubscribe::new("kv://realm/*/*"))
        .await;
    write(&mut c, R, &[("a", "3")]).await;
    let n = kv::Notify::decode(w.next_of_type(types::KV_NOTIFY).await.record.payload).unwrap();
    assert_eq!((n.sub_id, n.mutation_count), (exact, 1));
    w.expect_quiet().await;
}

async fn watch_registration_limits_and_patterns(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut w = RawClient::anon(&broker, kind).await;
    for bad in [
        "queue://a/b/c",
        "kv://a//c",
        "kv://a/b*/c",
        "kv://a/*/b/c",
        "kv://a/b",
    ] {
        let e = w.fails(&kv::Subscribe::new(bad)).await;
        assert_eq!(code(&e), codes::KV_INVALID_PATTERN, "{bad}");
    }
    for i in 0..128 {
        w.ok::<_, SubscribeReply>(&kv::Subscribe::new(format!("kv://r{i}/*/*")))
            .await;
    }
    let e = w.fails(&kv::Subscribe::new("kv://x/*/*")).await;
    assert_eq!(
        (code(&e), &*e.message),
        (
            codes::KV_SUBSCRIPTION_LIMIT,
            "wildcard subscription limit exceeded (128 per session)"
        )
    );
    // Duplicates still answer; exact routes still fit.
    w.ok::<_, SubscribeReply>(&kv::Subscribe::new("kv://r0/*/*"))
        .await;
    for i in 128..1024 {
        w.ok::<_, SubscribeReply>(&kv::Subscribe::new(format!("kv://r/a/{i}")))
            .await;
    }
    let e = w.fails(&kv::Subscribe::new("kv://r/a/x")).await;
    assert_eq!(
        (code(&e), &*e.message),
        (
            codes::KV_SUBSCRIPTION_LIMIT,
            "total subscription limit exceeded (1024 per session)"
        )
    );
    assert_eq!(broker.engines().kv.watches().len(), 1024);
    drop(w);
    broker.wait_for_session_count(0).await;
    assert_eq!(broker.engines().kv.watches().len(), 0);
}

#[tokio::test]
async fn idle_read_write_transactions_expire_on_the_manual_clock() {
    let clock = Clock::manual(SystemTime::now());
    let broker = Broker::builder()
        .clock(clock.clone())
        .kv_idle_transaction_ttl(Duration::from_secs(300))
        .start()
        .await
        .unwrap();
    let mut a = RawClient::anon(&broker, Kind::Tcp).await;
    let mut b2 = RawClient::anon(&broker, Kind::Tcp).await;
    let idle = begin(&mut a, R, TxMode::ReadWrite).await;
    let busy = begin(&mut a, "kv://realm/area/busy", TxMode::ReadWrite).await;
    clock.advance(Duration::from_secs(200));
    put(&mut a, busy, "kv://realm/area/busy", "k", "v").await;
    clock.advance(Duration::from_secs(100));
    // `idle` passed 300 s without activity: rolled back, lock released.
    let e = a
        .fails(&kv::Get {
            tx_id: idle,
            route: R.into(),
            key: b("k"),
        })
        .await;
    assert_eq!(code(&e), codes::KV_TX_NOT_FOUND);
    begin(&mut b2, R, TxMode::ReadWrite).await;
    // `busy` was touched at 200 s; it lives until 500 s.
    assert_eq!(
        get(&mut a, busy, "kv://realm/area/busy", "k").await,
        Some(b("v"))
    );
    clock.advance(Duration::from_secs(299));
    commit(&mut a, busy, "kv://realm/area/busy").await;
    assert_eq!(broker.engines().kv.stats().locked_resources, 1);
    clock.advance(Duration::from_secs(301));
    assert_eq!(broker.engines().kv.stats().locked_resources, 0);
}
