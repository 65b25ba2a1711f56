//! KV against the embedded broker (or an external one, see
//! `fitz_testkit::fixture`), over TCP and WebSocket, directly and through
//! the disconnect proxy.

use std::time::{Duration, SystemTime};

use fitz::kv::{Durability, ScanOptions, TxMode};
use fitz::{Client, ErrorKind, Event, ReconnectPolicy, StaticToken, codes};
use fitz_broker::{AuthConfig, Broker, Clock};
use fitz_testkit::{Brokers, Proxy, jwt};
use futures_util::{StreamExt, TryStreamExt};

const WAIT: Duration = Duration::from_secs(10);

fn fast_reconnect() -> ReconnectPolicy {
    ReconnectPolicy {
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        ..ReconnectPolicy::default()
    }
}

async fn connected(url: &str) -> Client {
    let c = Client::anonymous(url).unwrap();
    c.connect().await.unwrap();
    c
}

async fn via_proxy(url: String) -> Client {
    let c = Client::builder(url, StaticToken::anonymous())
        .reconnect(fast_reconnect())
        .build()
        .unwrap();
    c.connect().await.unwrap();
    c
}

async fn wait_event(events: &mut fitz::Events, pred: impl Fn(&Event) -> bool) -> Event {
    tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Some(ev) if pred(&ev) => return ev,
                Some(_) => {}
                None => panic!("events ended"),
            }
        }
    })
    .await
    .expect("event never came")
}

fn reconnected(e: &Event) -> bool {
    matches!(
        e,
        Event::Connected {
            reconnected: true,
            ..
        }
    )
}

async fn next_change(w: &mut fitz::kv::KvWatch) -> fitz::kv::KvChange {
    tokio::time::timeout(WAIT, w.next())
        .await
        .expect("no change within 10 s")
        .expect("watch ended")
        .expect("watch error")
}

fn code(e: &fitz::Error) -> Option<u32> {
    assert_eq!(e.kind(), ErrorKind::Broker, "{e}");
    e.code()
}

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
    for (i, url) in [&brokers.anon_tcp, &brokers.anon_ws]
        .into_iter()
        .enumerate()
    {
        let client = connected(url).await;
        let route = format!("kv://test/ops/r{i}");
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

#[tokio::test]
async fn broker_errors_are_typed_and_bad_routes_never_leave() {
    let brokers = Brokers::start().await.unwrap();
    let client = connected(&brokers.anon_tcp).await;
    let kv = client.kv();
    for bad in [
        "kv://test/errs",
        "kv://test/errs/r/extra",
        "kv://test/*/r",
        "queue://test/errs/r",
        "kv://test//r",
        "kv:/test/errs/r",
    ] {
        let e = kv.begin(bad, TxMode::ReadOnly).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}: {e}");
    }
    for bad in ["kv://test/*/r/x", "kv://test/ab*", "notice://test/**"] {
        let e = kv.watch(bad).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}: {e}");
    }

    let route = "kv://test/errs/r";
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
    let clock = Clock::manual(SystemTime::now());
    let broker = Broker::builder()
        .bind_addr(std::net::Ipv4Addr::LOCALHOST)
        .tcp_port(0)
        .http_port(0)
        .auth(AuthConfig::anonymous())
        .clock(clock.clone())
        .kv_idle_transaction_ttl(Duration::from_secs(5))
        .start()
        .await
        .unwrap();
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
    for (i, url) in [&brokers.anon_tcp, &brokers.anon_ws]
        .into_iter()
        .enumerate()
    {
        let client = connected(url).await;
        assert!(
            client
                .server_capabilities()
                .unwrap()
                .contains(fitz::Capabilities::KV_SCAN_EXCLUSIVE)
        );
        let route = format!("kv://test/scan/r{i}");
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
    let route = "kv://test/scan/big";
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
    let route = "kv://test/drop/r";
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
    for ws in [false, true] {
        let upstream = if ws {
            brokers.anon_ws_addr()
        } else {
            brokers.anon_tcp_addr()
        };
        let proxy = Proxy::start(upstream.unwrap()).await.unwrap();
        let url = if ws { proxy.ws_url() } else { proxy.tcp_url() };
        let client = via_proxy(url).await;
        let route = "kv://test/stale/r";
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
    let proxy = Proxy::start(brokers.anon_tcp_addr().unwrap())
        .await
        .unwrap();
    let client = via_proxy(proxy.tcp_url()).await;
    let mut tx = client
        .kv()
        .begin("kv://test/cut/r", TxMode::ReadWrite)
        .await
        .unwrap();
    tx.put("k", "v").await.unwrap();
    proxy.blackhole(true);
    let committing = tokio::spawn(tx.commit(Durability::Sync));
    // Correlated requests are written as soon as the actor admits them.
    tokio::time::timeout(WAIT, async {
        while client.debug_snapshot().await.unwrap().pending == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap();
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
    for ws in [false, true] {
        let upstream = if ws {
            brokers.anon_ws_addr()
        } else {
            brokers.anon_tcp_addr()
        };
        let proxy = Proxy::start(upstream.unwrap()).await.unwrap();
        let url = if ws { proxy.ws_url() } else { proxy.tcp_url() };
        let watcher = via_proxy(url).await;
        let writer = connected(&brokers.anon_tcp).await;
        let mut watch = watcher.kv().watch("kv://test/watch/*").await.unwrap();
        assert_eq!(watch.pattern(), "kv://test/watch/*");

        let mut tx = writer
            .kv()
            .begin("kv://test/watch/a", TxMode::ReadWrite)
            .await
            .unwrap();
        tx.put("x", "1").await.unwrap();
        tx.put("y", "2").await.unwrap();
        tx.commit(Durability::Buffered).await.unwrap();
        let change = next_change(&mut watch).await;
        assert_eq!(change.route(), "kv://test/watch/a");
        assert_eq!(change.mutation_count(), 2);

        // A commit that changes nothing is not reported; a rollback neither.
        let tx = writer
            .kv()
            .begin("kv://test/watch/a", TxMode::ReadWrite)
            .await
            .unwrap();
        tx.commit(Durability::Buffered).await.unwrap();

        let mut events = watcher.events();
        proxy.cut_all();
        match wait_event(&mut events, |e| matches!(e, Event::Restored { .. })).await {
            Event::Restored { count } => assert_eq!(count, 1),
            _ => unreachable!(),
        }
        let mut tx = writer
            .kv()
            .begin("kv://test/watch/b", TxMode::ReadWrite)
            .await
            .unwrap();
        tx.delete_range("a".."z").await.unwrap();
        tx.put("z", "1").await.unwrap();
        tx.commit(Durability::Sync).await.unwrap();
        let change = next_change(&mut watch).await;
        assert_eq!(
            (change.route(), change.mutation_count()),
            ("kv://test/watch/b", 1)
        );
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
    let mut a = client.kv().watch("kv://test/shared/**").await.unwrap();
    let mut b = client.kv().watch("kv://test/shared/**").await.unwrap();
    assert_ne!(a.id(), b.id());
    assert_eq!(client.debug_snapshot().await.unwrap().registrations, 1);
    let mut tx = client
        .kv()
        .begin("kv://test/shared/r", TxMode::ReadWrite)
        .await
        .unwrap();
    tx.put("k", "v").await.unwrap();
    tx.commit(Durability::Buffered).await.unwrap();
    next_change(&mut a).await;
    next_change(&mut b).await;
    // Unsubscribing one leaves the other working.
    a.unsubscribe().await.unwrap();
    let mut tx = client
        .kv()
        .begin("kv://test/shared/r", TxMode::ReadWrite)
        .await
        .unwrap();
    tx.put("k", "w").await.unwrap();
    tx.commit(Durability::Buffered).await.unwrap();
    next_change(&mut b).await;
    drop(b);
    tokio::time::timeout(WAIT, async {
        while client.debug_snapshot().await.unwrap().registrations != 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the last watch's drop never unsubscribed");
    client.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_scoped_token_is_refused_with_1011() {
    let brokers = Brokers::start().await.unwrap();
    for url in [&brokers.auth_tcp, &brokers.auth_ws] {
        let token = jwt::scoped_token(&["kv://scoped/**#read"]);
        let client = Client::builder(url.as_str(), StaticToken::new(token))
            .build()
            .unwrap();
        client.connect().await.unwrap();
        let kv = client.kv();
        let mut ro = kv.begin("kv://scoped/a/r", TxMode::ReadOnly).await.unwrap();
        assert_eq!(ro.get("k").await.unwrap(), None);
        ro.rollback().await.unwrap();
        for (route, mode) in [
            ("kv://scoped/a/r", TxMode::ReadWrite),
            ("kv://other/a/r", TxMode::ReadOnly),
        ] {
            let e = kv.begin(route, mode).await.unwrap_err();
            assert_eq!(code(&e), Some(codes::KV_UNAUTHORIZED), "{route}");
        }
        let e = kv.watch("kv://other/**").await.unwrap_err();
        assert_eq!(code(&e), Some(codes::KV_UNAUTHORIZED));
        client.close().await;
    }
    brokers.shutdown().await;
}

#[cfg(feature = "serde")]
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
        .begin("kv://test/json/r", TxMode::ReadWrite)
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
