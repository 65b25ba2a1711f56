//! KV against the embedded broker (or an external one, see
//! `fitz_testkit::fixture`), over TCP and WebSocket, directly and through
//! the disconnect proxy.

use std::time::Duration;

use fitz::kv::{Durability, ScanOptions, TxMode};
use fitz::{Client, ErrorKind, codes};
use fitz_tests::{
    Brokers, BrokersExt, Transport, WAIT, broker_code as code, connected, connected_with,
    next_item as next_change, realm, reconnected, wait_event,
};
use futures_util::TryStreamExt;

/// Writes `n` keys `k000…` with `value_len`-byte values and commits.
async fn seed(client: &Client, route: &str, n: usize, value_len: usize) -> Vec<Vec<u8>> {
    let mut tx = client.kv().begin(route, TxMode::ReadWrite).await.unwrap();
    let mut keys = Vec::new();
    for i in 0..n {
        let key = format!("k{i:03}").into_bytes();
        tx.put(&key, vec![b'v'; value_len]).await.unwrap();
        keys.push(key);
    }
    tx.commit(Durability::Buffered).await.unwrap();
    keys
}

async fn scan_keys(tx: &mut fitz::kv::Transaction, options: ScanOptions) -> Vec<Vec<u8>> {
    tx.scan(options)
        .map_ok(|(k, _)| k.to_vec())
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test]
async fn every_operation_over_tcp_and_websocket() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let url = brokers.anon_url(t);
        let client = connected(url).await;
        let route = format!("kv://{}/ops/r", realm("kv"));
        let mut tx = client.kv().begin(&route, TxMode::ReadWrite).await.unwrap();
        assert_eq!(tx.route(), route);
        assert_eq!(tx.mode(), TxMode::ReadWrite);
        assert!(tx.is_current());
        assert_eq!(tx.get("missing").await.unwrap(), None);
        tx.put("a", "1").await.unwrap();
        tx.put(b"b".as_slice(), b"2".to_vec()).await.unwrap();
        tx.insert("c", "3").await.unwrap();
        tx.put("d", "4").await.unwrap();
        assert_eq!(tx.get("a").await.unwrap().as_deref(), Some(&b"1"[..]));

        // INSERT on an existing key: a typed error, and the tx lives on.
        let e = tx.insert("a", "x").await.unwrap_err();
        assert_eq!(code(&e), Some(codes::KV_KEY_EXISTS));
        assert!(!e.maybe_applied());
        assert_eq!(tx.get("a").await.unwrap().as_deref(), Some(&b"1"[..]));

        tx.delete("d").await.unwrap();
        tx.delete("never-there").await.unwrap();
        tx.delete_range("b".."c").await.unwrap();
        assert_eq!(scan_keys(&mut tx, ScanOptions::all()).await, [b"a", b"c"]);
        tx.commit(Durability::Sync).await.unwrap();

        // Committed: visible to a new read-only transaction.
        let mut ro = client.kv().begin(&route, TxMode::ReadOnly).await.unwrap();
        let page = ro.scan_page(&ScanOptions::all()).await.unwrap();
        assert!(!page.has_more());
        let entries: Vec<_> = page
            .into_entries()
            .into_iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        assert_eq!(
            entries,
            [
                (b"a".to_vec(), b"1".to_vec()),
                (b"c".to_vec(), b"3".to_vec())
            ]
        );
        ro.rollback().await.unwrap();

        // Rollback discards.
        let mut tx = client.kv().begin(&route, TxMode::ReadWrite).await.unwrap();
        tx.put("z", "26").await.unwrap();
        tx.rollback().await.unwrap();
        let mut ro = client.kv().begin(&route, TxMode::ReadOnly).await.unwrap();
        assert_eq!(ro.get("z").await.unwrap(), None);
        ro.commit(Durability::Buffered).await.unwrap();
        client.close().await;
    }
    brokers.shutdown().await;
}

/// Reads `key` of `route` in a read-only transaction.
async fn read_one(client: &Client, route: &str, key: &str) -> Option<Vec<u8>> {
    let mut tx = client.kv().begin(route, TxMode::ReadOnly).await.unwrap();
    let v = tx.get(key).await.unwrap().map(|b| b.to_vec());
    tx.rollback().await.unwrap();
    v
}

#[tokio::test]
async fn one_key_writes_commit_alone_and_leave_the_resource_free() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let client = connected(brokers.anon_url(t)).await;
        let kv = client.kv();
        let route = format!("kv://{}/one/r", realm("kv"));
        kv.put(&route, "a", "1", Durability::Sync).await.unwrap();
        kv.insert(&route, "b", "2", Durability::Buffered)
            .await
            .unwrap();
        assert_eq!(
            read_one(&client, &route, "a").await.as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(
            read_one(&client, &route, "b").await.as_deref(),
            Some(&b"2"[..])
        );

        // A failed write: its own error, nothing written, nothing left open.
        let e = kv
            .insert(&route, "a", "x", Durability::Sync)
            .await
            .unwrap_err();
        assert_eq!(code(&e), Some(codes::KV_KEY_EXISTS));
        assert!(!e.maybe_applied());
        assert_eq!(
            read_one(&client, &route, "a").await.as_deref(),
            Some(&b"1"[..])
        );
        let tx = kv.begin(&route, TxMode::ReadWrite).await.unwrap();
        // While a read-write transaction holds the resource: BEGIN's 1004.
        let e = kv
            .put(&route, "a", "y", Durability::Sync)
            .await
            .unwrap_err();
        assert_eq!(code(&e), Some(codes::KV_ISOLATION_CONFLICT));
        tx.rollback().await.unwrap();

        kv.delete(&route, "a", Durability::Sync).await.unwrap();
        assert_eq!(read_one(&client, &route, "a").await, None);
        kv.put(&route, "a", "3", Durability::Buffered)
            .await
            .unwrap();
        assert_eq!(
            read_one(&client, &route, "a").await.as_deref(),
            Some(&b"3"[..])
        );
        client.close().await;
    }
}

/// One-key writes set two in-flight slots aside for the write and the
/// COMMIT that follow their BEGIN; with a limit below three they take the
/// begin-then-pair path. Either way, many at once under a small limit all
/// complete (none waits for a slot another one holds idle). TCP and WS.
#[tokio::test]
async fn one_key_writes_complete_under_a_small_in_flight_limit() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        for limit in [1, 2, 3, 4] {
            let client = fitz_tests::anon_builder(brokers.anon_url(t))
                .max_in_flight(limit)
                .build()
                .unwrap();
            client.connect().await.unwrap();
            let kv = client.kv();
            let test = realm("kv");
            let routes: Vec<String> = (0..12).map(|i| format!("kv://{test}/lim/r{i}")).collect();
            let writes = routes
                .iter()
                .map(|route| kv.put(route, "k", "v", Durability::Buffered));
            let done = tokio::time::timeout(
                Duration::from_secs(20),
                futures_util::future::join_all(writes),
            )
            .await
            .unwrap_or_else(|_| panic!("{t:?}, limit {limit}: writes stalled"));
            assert!(
                done.iter().all(Result::is_ok),
                "{t:?}, limit {limit}: {done:?}"
            );
            for route in &routes {
                assert_eq!(
                    read_one(&client, route, "k").await.as_deref(),
                    Some(&b"v"[..])
                );
            }
            client.close().await;
        }
    }
}

/// A one-key write too large for one record fails with the encoding error
/// (invalid argument, nothing written) and leaves its resource free: the
/// transaction its BEGIN opened is rolled back. TCP and WS.
#[tokio::test]
async fn a_one_key_write_too_large_for_a_record_fails_as_invalid_and_frees_the_resource() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let client = connected(brokers.anon_url(t)).await;
        let kv = client.kv();
        let route = format!("kv://{}/big/r", realm("kv"));
        let e = kv
            .put(&route, "k", vec![7u8; 70_000], Durability::Sync)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{t:?}: {e}");
        assert!(!e.maybe_applied());
        // Free again: the ROLLBACK was queued before the failed write
        // returned, so it reaches the broker before the next BEGIN.
        kv.put(&route, "k", "small", Durability::Sync)
            .await
            .unwrap_or_else(|e| panic!("{t:?}: {e}"));
        assert_eq!(
            read_one(&client, &route, "k").await.as_deref(),
            Some(&b"small"[..])
        );
        client.close().await;
    }
}

#[tokio::test]
async fn broker_errors_are_typed_and_bad_routes_never_leave() {
    let brokers = Brokers::start().await.unwrap();
    let client = connected(&brokers.anon_tcp).await;
    let kv = client.kv();
    let test = realm("kv");
    for bad in [
        format!("kv://{test}/errs"),
        format!("kv://{test}/errs/r/extra"),
        format!("kv://{test}/*/r"),
        format!("queue://{test}/errs/r"),
        format!("kv://{test}//r"),
        format!("kv:/{test}/errs/r"),
    ] {
        let e = kv.begin(&bad, TxMode::ReadOnly).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}: {e}");
    }
    for bad in [
        format!("kv://{test}/*/r/x"),
        format!("kv://{test}/ab*"),
        format!("notice://{test}/**"),
    ] {
        let e = kv.subscribe(&bad).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}: {e}");
    }

    let route = &format!("kv://{test}/errs/r");
    // 1005: writes in a read-only transaction.
    let mut ro = kv.begin(route, TxMode::ReadOnly).await.unwrap();
    let e = ro.put("k", "v").await.unwrap_err();
    assert_eq!(code(&e), Some(codes::KV_READ_ONLY));
    ro.rollback().await.unwrap();

    // 1004: a second read-write transaction on a locked resource, from this
    // client or another; retryable, and fine once the first ends.
    let tx = kv.begin(route, TxMode::ReadWrite).await.unwrap();
    let other = connected(&brokers.anon_ws).await;
    for c in [&client, &other] {
        let e = c.kv().begin(route, TxMode::ReadWrite).await.unwrap_err();
        assert_eq!(code(&e), Some(codes::KV_ISOLATION_CONFLICT));
        assert!(e.is_retryable());
    }
    // Readers are not blocked by the writer.
    kv.begin(route, TxMode::ReadOnly)
        .await
        .unwrap()
        .rollback()
        .await
        .unwrap();
    tx.commit(Durability::Buffered).await.unwrap();
    other
        .kv()
        .begin(route, TxMode::ReadWrite)
        .await
        .unwrap()
        .rollback()
        .await
        .unwrap();

    // An inverted DELETE_RANGE is the broker's to reject (1007 here).
    let mut tx = kv.begin(route, TxMode::ReadWrite).await.unwrap();
    let e = tx.delete_range("z".."a").await.unwrap_err();
    assert_eq!(code(&e), Some(codes::KV_INVALID_ROUTE));
    // An empty range is fine.
    tx.delete_range("a".."a").await.unwrap();
    tx.rollback().await.unwrap();
    other.close().await;
    client.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn an_idle_transaction_expires_on_the_broker_with_1001() {
    let clock = fitz_broker::Clock::manual(std::time::SystemTime::now());
    let Some(broker) = fitz_tests::embedded_with(
        "a 5 s idle-transaction TTL on a manual clock (external brokers use 300 s)",
        |b| {
            b.clock(clock.clone())
                .kv_idle_transaction_ttl(Duration::from_secs(5))
        },
    )
    .await
    else {
        return;
    };
    let client = connected(&broker.tcp_url()).await;
    let route = "kv://test/idle/r";
    let mut tx = client.kv().begin(route, TxMode::ReadWrite).await.unwrap();
    tx.put("k", "v").await.unwrap();
    clock.advance(Duration::from_secs(6));
    // The broker's timer rolls it back: the lock is free again.
    let next = tokio::time::timeout(WAIT, async {
        loop {
            match client.kv().begin(route, TxMode::ReadWrite).await {
                Ok(tx) => return tx,
                Err(e) if e.code() == Some(codes::KV_ISOLATION_CONFLICT) => {
                    tokio::task::yield_now().await;
                }
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("the idle transaction was never expired");
    let e = tx.get("k").await.unwrap_err();
    assert_eq!(code(&e), Some(codes::KV_TX_NOT_FOUND));
    let e = tx.commit(Durability::Sync).await.unwrap_err();
    assert_eq!(code(&e), Some(codes::KV_TX_NOT_FOUND));
    next.rollback().await.unwrap();
    client.close().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn scans_page_in_both_directions_with_limits_and_ranges() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let client = connected(brokers.anon_url(t)).await;
        assert!(
            client
                .server_capabilities()
                .unwrap()
                .contains(fitz::Capabilities::KV_SCAN_EXCLUSIVE)
        );
        let route = format!("kv://{}/scan/r", realm("kv"));
        let keys = seed(&client, &route, 45, 16).await;
        let mut rev = keys.clone();
        rev.reverse();
        let mut tx = client.kv().begin(&route, TxMode::ReadOnly).await.unwrap();

        for page in [1, 7, 45, 100] {
            let fwd = scan_keys(&mut tx, ScanOptions::all().page_size(page)).await;
            assert_eq!(fwd, keys, "forward, page {page}");
            let back = scan_keys(&mut tx, ScanOptions::all().reverse().page_size(page)).await;
            assert_eq!(back, rev, "reverse, page {page}");
        }
        // Limits across pages.
        let first = scan_keys(&mut tx, ScanOptions::all().limit(10).page_size(4)).await;
        assert_eq!(first, keys[..10]);
        let last = scan_keys(&mut tx, ScanOptions::all().reverse().limit(3).page_size(2)).await;
        assert_eq!(last, rev[..3]);
        // Ranges, each bound kind, both directions.
        let r = scan_keys(&mut tx, ScanOptions::range("k010".."k013").page_size(1)).await;
        assert_eq!(r, keys[10..13]);
        let r = scan_keys(
            &mut tx,
            ScanOptions::range("k010"..="k013").reverse().page_size(1),
        )
        .await;
        assert_eq!(r, rev[31..35]);
        let r = scan_keys(&mut tx, ScanOptions::range("k040"..).reverse().page_size(2)).await;
        assert_eq!(r, rev[..5]);
        let r = scan_keys(&mut tx, ScanOptions::range(.."k002")).await;
        assert_eq!(r, keys[..2]);
        let r = scan_keys(&mut tx, ScanOptions::prefix("k01").reverse().page_size(3)).await;
        assert_eq!(r, rev[25..35]);
        assert!(
            scan_keys(&mut tx, ScanOptions::range("k9".."k0"))
                .await
                .is_empty()
        );

        // Single pages, resumed by hand.
        let mut options = ScanOptions::all().reverse().page_size(20);
        let mut seen = Vec::new();
        loop {
            let page = tx.scan_page(&options).await.unwrap();
            seen.extend(page.entries().iter().map(|(k, _)| k.to_vec()));
            if !page.has_more() {
                break;
            }
            options = options.resume_after(page.last_key().unwrap());
        }
        assert_eq!(seen, rev);
        tx.rollback().await.unwrap();
        client.close().await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn byte_bounded_pages_are_followed_without_a_limit() {
    let brokers = Brokers::start().await.unwrap();
    let client = connected(&brokers.anon_tcp).await;
    let route = &format!("kv://{}/scan/big", realm("kv"));
    // 20 KiB values: about three per 64 KiB page.
    let keys = seed(&client, route, 12, 20 * 1024).await;
    let mut tx = client.kv().begin(route, TxMode::ReadOnly).await.unwrap();
    let page = tx.scan_page(&ScanOptions::all()).await.unwrap();
    assert!(page.has_more() && page.len() < keys.len(), "{}", page.len());
    assert_eq!(scan_keys(&mut tx, ScanOptions::all()).await, keys);
    let mut rev = keys.clone();
    rev.reverse();
    assert_eq!(scan_keys(&mut tx, ScanOptions::all().reverse()).await, rev);
    tx.rollback().await.unwrap();
    client.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_dropped_transaction_rolls_back_and_frees_the_lock() {
    let brokers = Brokers::start().await.unwrap();
    let client = connected(&brokers.anon_tcp).await;
    let route = &format!("kv://{}/drop/r", realm("kv"));
    {
        let mut tx = client.kv().begin(route, TxMode::ReadWrite).await.unwrap();
        tx.put("k", "uncommitted").await.unwrap();
        // Dropped here, e.g. by an early `?`.
    }
    // The background ROLLBACK is ahead of this BEGIN on the same connection.
    let mut tx = client.kv().begin(route, TxMode::ReadWrite).await.unwrap();
    assert_eq!(tx.get("k").await.unwrap(), None);
    tx.commit(Durability::Buffered).await.unwrap();
    let snap = client.debug_snapshot().await.unwrap();
    assert_eq!(snap.pending, 0, "{snap:?}");
    if let Some(broker) = brokers.anon() {
        assert_eq!(broker.engines().kv.stats().transactions, 0);
    }
    client.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_transaction_is_stale_after_a_reconnect() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let (proxy, url) = brokers.anon_proxy(t).await;
        let client = connected(&url).await;
        let route = &format!("kv://{}/stale/r", realm("kv"));
        let mut tx = client.kv().begin(route, TxMode::ReadWrite).await.unwrap();
        tx.put("k", "v").await.unwrap();
        let mut events = client.events();
        proxy.cut_all();
        wait_event(&mut events, reconnected).await;
        assert!(!tx.is_current());
        let e = tx.get("k").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Stale);
        assert!(!e.maybe_applied());
        let e = tx.commit(Durability::Sync).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Stale);
        // The broker ended it with the session: the resource is free.
        let mut tx = client.kv().begin(route, TxMode::ReadWrite).await.unwrap();
        assert_eq!(tx.get("k").await.unwrap(), None);
        tx.rollback().await.unwrap();
        client.close().await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_commit_in_flight_during_a_cut_may_have_been_applied() {
    let brokers = Brokers::start().await.unwrap();
    let (proxy, url) = brokers.anon_proxy(Transport::Tcp).await;
    let client = connected(&url).await;
    let mut tx = client
        .kv()
        .begin(&format!("kv://{}/cut/r", realm("kv")), TxMode::ReadWrite)
        .await
        .unwrap();
    tx.put("k", "v").await.unwrap();
    proxy.blackhole(true);
    let committing = tokio::spawn(tx.commit(Durability::Sync));
    // Correlated requests are written as soon as the actor admits them.
    fitz_tests::until_pending(&client, 1).await;
    proxy.cut_all();
    proxy.blackhole(false);
    let e = committing.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    assert!(e.maybe_applied(), "written before the cut: outcome unknown");
    assert!(e.is_retryable());
    client.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_watch_is_restored_on_the_same_handle_after_a_cut() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let (proxy, url) = brokers.anon_proxy(t).await;
        let watcher = connected(&url).await;
        let writer = connected(&brokers.anon_tcp).await;
        let test = realm("kv");
        let (a, b) = (
            format!("kv://{test}/watch/a"),
            format!("kv://{test}/watch/b"),
        );
        let pattern = format!("kv://{test}/watch/*");
        let mut watch = watcher.kv().subscribe(&pattern).await.unwrap();
        assert_eq!(watch.pattern(), pattern);

        let mut tx = writer.kv().begin(&a, TxMode::ReadWrite).await.unwrap();
        tx.put("x", "1").await.unwrap();
        tx.put("y", "2").await.unwrap();
        tx.commit(Durability::Buffered).await.unwrap();
        let change = next_change(&mut watch).await;
        assert_eq!(change.route(), a);
        assert_eq!(change.mutation_count(), 2);

        // A commit that changes nothing is not reported; a rollback neither.
        let tx = writer.kv().begin(&a, TxMode::ReadWrite).await.unwrap();
        tx.commit(Durability::Buffered).await.unwrap();

        let mut events = watcher.events();
        proxy.cut_all();
        assert_eq!(fitz_tests::restored(&mut events).await, 1);
        let mut tx = writer.kv().begin(&b, TxMode::ReadWrite).await.unwrap();
        tx.delete_range("a".."z").await.unwrap();
        tx.put("z", "1").await.unwrap();
        tx.commit(Durability::Sync).await.unwrap();
        let change = next_change(&mut watch).await;
        assert_eq!((change.route(), change.mutation_count()), (b.as_str(), 1));
        watch.unsubscribe().await.unwrap();
        writer.close().await;
        watcher.close().await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn watches_of_one_pattern_share_a_registration() {
    let brokers = Brokers::start().await.unwrap();
    let client = connected(&brokers.anon_tcp).await;
    let test = realm("kv");
    let pattern = format!("kv://{test}/shared/**");
    let route = format!("kv://{test}/shared/r");
    let mut a = client.kv().subscribe(&pattern).await.unwrap();
    let mut b = client.kv().subscribe(&pattern).await.unwrap();
    assert_ne!(a.id(), b.id());
    assert_eq!(client.debug_snapshot().await.unwrap().registrations, 1);
    let mut tx = client.kv().begin(&route, TxMode::ReadWrite).await.unwrap();
    tx.put("k", "v").await.unwrap();
    tx.commit(Durability::Buffered).await.unwrap();
    next_change(&mut a).await;
    next_change(&mut b).await;
    // Unsubscribing one leaves the other working.
    a.unsubscribe().await.unwrap();
    let mut tx = client.kv().begin(&route, TxMode::ReadWrite).await.unwrap();
    tx.put("k", "w").await.unwrap();
    tx.commit(Durability::Buffered).await.unwrap();
    next_change(&mut b).await;
    drop(b);
    fitz_tests::until("the last watch's drop unsubscribes", || async {
        client.debug_snapshot().await.unwrap().registrations == 0
    })
    .await;
    client.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_scoped_token_is_refused_with_1011() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let (scoped, other) = (realm("scoped"), realm("other"));
        let token = brokers.scoped_token(&[&format!("kv://{scoped}/**#read")]);
        let client = connected_with(brokers.auth_url(t), token).await;
        let kv = client.kv();
        let mut ro = kv
            .begin(&format!("kv://{scoped}/a/r"), TxMode::ReadOnly)
            .await
            .unwrap();
        assert_eq!(ro.get("k").await.unwrap(), None);
        ro.rollback().await.unwrap();
        for (route, mode) in [
            (format!("kv://{scoped}/a/r"), TxMode::ReadWrite),
            (format!("kv://{other}/a/r"), TxMode::ReadOnly),
        ] {
            let e = kv.begin(&route, mode).await.unwrap_err();
            assert_eq!(code(&e), Some(codes::KV_UNAUTHORIZED), "{route}");
        }
        let e = kv.subscribe(&format!("kv://{other}/**")).await.unwrap_err();
        assert_eq!(code(&e), Some(codes::KV_UNAUTHORIZED));
        client.close().await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn json_helpers_round_trip() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Cart {
        items: Vec<String>,
    }
    let brokers = Brokers::start().await.unwrap();
    let client = connected(&brokers.anon_tcp).await;
    let mut tx = client
        .kv()
        .begin(&format!("kv://{}/json/r", realm("kv")), TxMode::ReadWrite)
        .await
        .unwrap();
    let cart = Cart {
        items: vec!["apple".into()],
    };
    tx.put_json("cart", &cart).await.unwrap();
    assert_eq!(tx.get_json::<Cart>("cart").await.unwrap(), Some(cart));
    assert_eq!(tx.get_json::<Cart>("none").await.unwrap(), None);
    let e = tx.insert_json("cart", &1).await.unwrap_err();
    assert_eq!(code(&e), Some(codes::KV_KEY_EXISTS));
    tx.put("raw", "not json").await.unwrap();
    let e = tx.get_json::<Cart>("raw").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decode);
    tx.rollback().await.unwrap();
    client.close().await;
    brokers.shutdown().await;
}
