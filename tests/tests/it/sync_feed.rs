//! Feeds (`fitz::sync::Feed`, feature `sync`) against embedded brokers:
//! restarted in memory mode (a rewind, also when the new broker has been
//! written past the old cursor), restarted on the same local storage (no
//! gap, no duplicate), connections cut by the disconnect proxy, and the
//! feed itself restarted on its redb file. Truncated and Withheld cannot
//! be produced by fitz-broker (no retention; a READ the token may not make
//! whole is refused, not filtered): `fitz/src/sync/feed/tests.rs` scripts
//! them on the wire. Last, an outbox and a feed on one redb file: the
//! outbox's stream records read as envelopes with its tx ids.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fitz::Client;
use fitz::stream::Filter;
use fitz::sync::{
    Envelope, Feed, FeedError, FeedEvent, FeedTx, Gap, LocalStore, MemoryStore, Mutation, Outbox,
    Publisher, RedbStore, StreamAppend, Table, app_key,
};
use fitz_broker::{AuthConfig, Broker, StorageMode};
use fitz_tests::{Brokers, BrokersExt, Proxy, Transport, connected, realm, refuse_new, within};
use futures_util::future::BoxFuture;
use rand::Rng;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// Offsets the handler saw, in order (duplicates would show).
type Seen = Arc<Mutex<Vec<u64>>>;

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fitz-it-feed-{}-{tag}", realm("f")));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A broker on `port` (0: any), retrying while the old one's port frees.
async fn start_broker(port: u16, storage: StorageMode) -> Broker {
    let mut tries = 0;
    loop {
        let started = Broker::builder()
            .bind_addr(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .tcp_port(port)
            .http_port(0)
            .auth(AuthConfig::anonymous())
            .storage(storage.clone())
            .start()
            .await;
        match started {
            Ok(b) => return b,
            Err(_) if tries < 100 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("broker starts: {e}"),
        }
    }
}

async fn publish(client: &Client, route: &str, values: std::ops::Range<u64>) {
    let p = Publisher::new(client.clone(), "writer");
    for v in values {
        p.publish(route, "n", &v).await.expect("publish");
    }
}

/// Runs `feed` (following) in a task; every record lands in the app table
/// `seen` (offset → body) and in `seen`.
fn spawn_feed(mut feed: Feed<u64>, seen: Seen) -> JoinHandle<(Result<(), FeedError>, Feed<u64>)> {
    tokio::spawn(async move {
        let r = feed
            .run(move |tx, env: Envelope<u64>| {
                let seen = seen.clone();
                Box::pin(async move {
                    let key = format!("{}#{:08}", env.route, env.offset);
                    if tx.get("seen", &key).await?.is_some() {
                        return Err(FeedError::Handler(format!("{key} applied twice")));
                    }
                    tx.put("seen", &key, env.body.to_string())?;
                    seen.lock().unwrap().push(env.offset);
                    Ok(())
                })
            })
            .await;
        (r, feed)
    })
}

/// Waits until the feed reports being caught up at `cursor` or beyond.
async fn caught_up(events: &mut broadcast::Receiver<FeedEvent>, cursor: u64) {
    within(&format!("caught up at {cursor}"), async {
        loop {
            match events.recv().await {
                Ok(FeedEvent::CaughtUp { cursor: c }) if c >= cursor => return,
                Ok(FeedEvent::Gap { gap, .. }) => panic!("unexpected gap {gap:?}"),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("feed events: {e}"),
            }
        }
    })
    .await;
}

fn seen_in_store(store: &dyn LocalStore) -> usize {
    store
        .scan_prefix(Table::App, &app_key("seen", ""))
        .expect("scan")
        .len()
}

/// A memory broker restarted under a running feed, with `rewrite` records
/// written to the new one before the feed gets back: the feed stops with
/// the rewind it found.
async fn restart_in_memory(selector: &str, route: &str, rewrite: u64) -> Gap {
    let first = start_broker(0, StorageMode::Memory).await;
    let addr = first.tcp_addr();
    let proxy = Proxy::start(addr).await.unwrap();
    let writer = connected(&first.tcp_url()).await;
    publish(&writer, route, 0..5).await;
    let client = connected(&proxy.tcp_url()).await;
    let feed = Feed::<u64>::builder(client.clone(), MemoryStore::new(), "f", selector)
        .open()
        .await
        .unwrap();
    let mut events = feed.events();
    let seen = Seen::default();
    let task = spawn_feed(feed, seen.clone());
    caught_up(&mut events, 5).await;

    // The broker goes away with its log; a new one comes up on the same
    // address and is written before the feed can reconnect.
    refuse_new(&proxy).await;
    proxy.cut_all();
    writer.close().await;
    first.shutdown().await;
    let second = start_broker(addr.port(), StorageMode::Memory).await;
    let writer = connected(&second.tcp_url()).await;
    publish(&writer, route, 100..100 + rewrite).await;
    proxy.refuse_new(false);

    let (r, feed) = within("the feed stops", task).await.unwrap();
    assert_eq!(feed.cursor(), 5, "the cursor stays where it was");
    assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    let gap = match r {
        Err(FeedError::Gap(gap)) => gap,
        other => panic!("expected a rewind, got {other:?}"),
    };
    let reported = within("the gap event", async {
        loop {
            if let Ok(FeedEvent::Gap { gap, .. }) = events.recv().await {
                return gap;
            }
        }
    })
    .await;
    assert_eq!(reported, gap);
    client.close().await;
    writer.close().await;
    second.shutdown().await;
    gap
}

#[tokio::test]
async fn a_memory_broker_restart_is_a_rewind() {
    if fitz_tests::embedded_only("the test restarts its broker").is_none() {
        return;
    }
    let route = "stream://app/feed/shorter";
    let gap = restart_in_memory(route, route, 2).await;
    assert_eq!(
        gap,
        Gap::Rewound {
            cursor: 5,
            broker_next: Some(2),
            last_applied: None,
        }
    );
}

#[tokio::test]
async fn a_memory_broker_written_past_the_old_cursor_is_still_a_rewind() {
    if fitz_tests::embedded_only("the test restarts its broker").is_none() {
        return;
    }
    // Exact resource: the cursor check passes (8 ≥ 5), the digest does not.
    let route = "stream://app/feed/past";
    let gap = restart_in_memory(route, route, 8).await;
    assert_eq!(
        gap,
        Gap::Rewound {
            cursor: 5,
            broker_next: Some(8),
            last_applied: Some(format!("{route}#4")),
        }
    );
    // A wildcard feed has only the digest to go by.
    let gap = restart_in_memory("stream://app/feed/*", route, 8).await;
    assert_eq!(
        gap,
        Gap::Rewound {
            cursor: 5,
            broker_next: None,
            last_applied: Some(format!("{route}#4")),
        }
    );
}

#[tokio::test]
async fn a_broker_restarted_on_its_local_storage_resumes_without_gap_or_duplicate() {
    if fitz_tests::embedded_only("the test restarts its broker").is_none() {
        return;
    }
    let data = temp_dir("broker");
    let storage = StorageMode::Local(data.clone());
    let first = start_broker(0, storage.clone()).await;
    let addr = first.tcp_addr();
    let route = "stream://app/feed/durable";
    let writer = connected(&first.tcp_url()).await;
    publish(&writer, route, 0..5).await;
    let client = connected(&first.tcp_url()).await;
    let store = MemoryStore::new();
    let feed = Feed::<u64>::builder(client.clone(), store.clone(), "f", "stream://app/feed/*")
        .open()
        .await
        .unwrap();
    let mut events = feed.events();
    let seen = Seen::default();
    let task = spawn_feed(feed, seen.clone());
    caught_up(&mut events, 5).await;

    writer.close().await;
    first.shutdown().await;
    let second = start_broker(addr.port(), storage).await;
    let writer = connected(&second.tcp_url()).await;
    publish(&writer, route, 5..10).await;
    // `caught_up` fails on any gap event.
    caught_up(&mut events, 10).await;
    assert_eq!(*seen.lock().unwrap(), (0..10).collect::<Vec<_>>());
    assert_eq!(seen_in_store(&store), 10);
    task.abort();
    client.close().await;
    writer.close().await;
    second.shutdown().await;
    let _ = std::fs::remove_dir_all(data);
}

#[tokio::test]
async fn cut_connections_lose_and_repeat_nothing() {
    let brokers = Brokers::start().await.unwrap();
    let (proxy, url) = brokers.anon_proxy(Transport::Tcp).await;
    let app = realm("feed");
    let route = format!("stream://{app}/cuts/r");
    let writer = connected(brokers.anon_url(Transport::Tcp)).await;
    let client = connected(&url).await;
    let store = MemoryStore::new();
    let feed = Feed::<u64>::builder(client.clone(), store.clone(), "f", route.as_str())
        .page_limit(7)
        .open()
        .await
        .unwrap();
    let mut events = feed.events();
    let seen = Seen::default();
    let task = spawn_feed(feed, seen.clone());
    const N: u64 = 300;
    let cuts = {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let mut made = 0;
            for _ in 0..30 {
                let pause = rand::rng().random_range(1..15);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                proxy.cut_all();
                made += 1;
            }
            made
        })
    };
    publish(&writer, &route, 0..N).await;
    let made = cuts.await.unwrap();
    caught_up(&mut events, N).await;
    assert!(made >= 30);
    assert_eq!(*seen.lock().unwrap(), (0..N).collect::<Vec<_>>());
    assert_eq!(seen_in_store(&store), N as usize);
    task.abort();
    client.close().await;
    writer.close().await;
    brokers.shutdown().await;
}

/// Marks `env` seen in the app table and in `seen`.
fn mark<'a>(
    seen: &Seen,
    tx: &'a mut FeedTx,
    env: Envelope<u64>,
) -> BoxFuture<'a, Result<(), FeedError>> {
    let seen = seen.clone();
    Box::pin(async move {
        tx.put("seen", env.offset.to_be_bytes(), [1])?;
        seen.lock().unwrap().push(env.offset);
        Ok(())
    })
}

#[tokio::test]
async fn a_feed_restarted_on_its_store_file_resumes_from_its_cursor() {
    let brokers = Brokers::start().await.unwrap();
    let client = connected(brokers.anon_url(Transport::Tcp)).await;
    let app = realm("feed");
    let route = format!("stream://{app}/restart/r");
    publish(&client, &route, 0..5).await;
    let path = temp_dir("store").join("feed.redb");
    let seen = Seen::default();
    {
        let mut feed = Feed::<u64>::builder(
            client.clone(),
            RedbStore::open(&path).unwrap(),
            "f",
            route.as_str(),
        )
        .open()
        .await
        .unwrap();
        let s = seen.clone();
        feed.catch_up(move |tx, env| mark(&s, tx, env))
            .await
            .unwrap();
        assert_eq!(feed.cursor(), 5);
    }
    publish(&client, &route, 5..8).await;
    let store = Arc::new(RedbStore::open(&path).unwrap());
    let mut feed = Feed::<u64>::builder_shared(client.clone(), store.clone(), "f", route.as_str())
        .open()
        .await
        .unwrap();
    assert_eq!(feed.cursor(), 5, "the stored cursor");
    let s = seen.clone();
    feed.catch_up(move |tx, env| mark(&s, tx, env))
        .await
        .unwrap();
    assert_eq!(feed.cursor(), 8);
    assert_eq!(*seen.lock().unwrap(), (0..8).collect::<Vec<_>>());
    assert_eq!(seen_in_store(store.as_ref()), 8);
    client.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn envelopes_carry_aspect_producer_causation_and_history_pages() {
    let brokers = Brokers::start().await.unwrap();
    let client = connected(brokers.anon_url(Transport::Tcp)).await;
    let app = realm("feed");
    let (orders, audit) = (
        format!("stream://{app}/env/orders"),
        format!("stream://{app}/env/audit"),
    );
    let p = Publisher::new(client.clone(), "shop");
    for n in 0..4u64 {
        p.publish(&orders, if n % 2 == 0 { "even" } else { "odd" }, &n)
            .await
            .unwrap();
    }
    let mut feed = Feed::<u64>::builder(
        client.clone(),
        MemoryStore::new(),
        "evens",
        format!("stream://{app}/env/*"),
    )
    .filter(Filter::new().equals("even"))
    .open()
    .await
    .unwrap();
    let got: Arc<Mutex<Vec<Envelope<u64>>>> = Arc::default();
    let sink = got.clone();
    feed.catch_up(move |_, env| {
        let sink = sink.clone();
        Box::pin(async move {
            sink.lock().unwrap().push(env);
            Ok(())
        })
    })
    .await
    .unwrap();
    let evens = got.lock().unwrap().clone();
    assert_eq!(evens.iter().map(|e| e.body).collect::<Vec<_>>(), vec![0, 2]);
    assert_eq!(feed.cursor(), 4, "filtered records advance the cursor");
    let first = &evens[0];
    assert_eq!(first.meta.aspect.as_deref(), Some("even"));
    assert_eq!(first.meta.producer.as_deref(), Some("shop"));
    assert!(
        first
            .meta
            .tx
            .as_deref()
            .is_some_and(|t| t.starts_with("shop/"))
    );
    assert_eq!(first.meta.causation, None);

    p.publish_derived(&audit, "even", &100u64, first)
        .await
        .unwrap();
    let history = feed.history(0, 100, 10).await.unwrap();
    assert_eq!(
        history.iter().map(|e| e.body).collect::<Vec<_>>(),
        vec![0, 2, 100]
    );
    assert_eq!(
        history[2].meta.causation.as_deref(),
        Some(format!("{orders}#0").as_str())
    );
    let page = feed.history(0, 100, 2).await.unwrap();
    assert_eq!(page.len(), 2, "limit");
    let until = feed.history(0, 2, 10).await.unwrap();
    assert_eq!(
        until.iter().map(|e| e.body).collect::<Vec<_>>(),
        vec![0],
        "until is exclusive"
    );
    assert_eq!(feed.cursor(), 4, "history does not move the cursor");
    client.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn an_outbox_and_a_feed_share_one_store_file_and_outbox_records_read_as_envelopes() {
    let brokers = Brokers::start().await.unwrap();
    let client = connected(brokers.anon_url(Transport::Tcp)).await;
    let app = realm("feed");
    let route = format!("stream://{app}/shared/r");
    let path = temp_dir("shared").join("app.redb");
    let store: Arc<dyn LocalStore> = Arc::new(RedbStore::open(&path).unwrap());
    let outbox = Outbox::builder(client.clone(), store.clone())
        .open()
        .await
        .unwrap();
    for n in 0..3u64 {
        outbox
            .push(
                &route,
                Mutation::Append(vec![StreamAppend::new(n.to_string()).aspect("n")]),
            )
            .await
            .unwrap();
    }
    within("the outbox drains", outbox.wait_idle()).await;
    let mut feed = Feed::<u64>::builder_shared(client.clone(), store.clone(), "f", route.as_str())
        .open()
        .await
        .unwrap();
    assert_eq!(
        feed.client_id(),
        outbox.client_id(),
        "one client id per store"
    );
    let txs: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = txs.clone();
    feed.catch_up(move |tx, env| {
        let sink = sink.clone();
        Box::pin(async move {
            assert_eq!(env.meta.aspect.as_deref(), Some("n"));
            sink.lock()
                .unwrap()
                .push(env.meta.tx.clone().unwrap_or_default());
            tx.put("seen", env.offset.to_be_bytes(), [1])?;
            Ok(())
        })
    })
    .await
    .unwrap();
    let txs = txs.lock().unwrap().clone();
    assert_eq!(txs.len(), 3);
    assert!(
        txs.iter().all(|t| t.starts_with(outbox.client_id())),
        "{txs:?}"
    );
    assert_eq!(seen_in_store(store.as_ref()), 3);
    outbox.close().await;
    client.close().await;
    brokers.shutdown().await;
}
