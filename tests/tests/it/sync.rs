//! The offline-first outbox (`fitz::sync`, feature `sync`) against the
//! embedded broker, the connection refused, cut and black-holed by the
//! disconnect proxy.
//!
//! * **Exactly once**: 1,000 increments (a named read-modify-write
//!   mutation) pushed while the proxy refuses connections, then flushed
//!   through ≥ 50 random faults (cut, black hole then cut, replies stalled
//!   then cut: answers lost after the broker committed): the counter ends at
//!   exactly 1,000. With `FITZ_SYNC_UNCHECKED_MARKER=1` the outbox skips its
//!   marker check and the same test fails (applied twice), which shows the
//!   test can fail.
//! * **Streams exactly once**: batches of 1–3 records on two stream lanes,
//!   pushed offline and flushed through the same faults: each entry's tx id
//!   appears in exactly one contiguous batch, in push order per lane.
//! * **Abrupt stops**: the outbox stopped 25 times at random points of
//!   its flush (between a broker commit and the local dequeue included) and
//!   reopened on the same redb file: every increment applied once (fails
//!   every run with `FITZ_SYNC_UNCHECKED_MARKER=1`). The SIGKILL crash
//!   test of a child process is `sync_crash.rs`; the model test
//!   `sync_model.rs`.
//! * **Dead letter**: a write the broker refuses for good (INSERT of an
//!   existing key, 1006) goes to the dead letter with its code, the lane
//!   moves on; `retry_dead_letter` and `discard` work; a queued range delete
//!   over the whole resource leaves the marker alone. An unauthorized write
//!   (1011, scoped token) is dead-lettered with its code while another lane
//!   flows.

use std::time::Duration;

use bytes::Bytes;
use fitz::kv::TxMode;
use fitz::sync::{
    KvWrite, Mutation, Outbox, OutboxBuilder, RedbStore, StreamAppend, SyncEvent, marker_key,
};
use fitz::{Client, State};
use fitz_testkit::Direction;
use fitz_tests::{
    Brokers, BrokersExt, ProxyHandle, Transport, anon_builder, connected, realm, refuse_new, within,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const INCREMENTS: usize = 1000;
const MIN_FAULTS: usize = 50;

fn number(v: Option<Bytes>) -> u64 {
    v.and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok())
        .unwrap_or(0)
}

/// `incr`: counter += 1, read and written in the flush's transaction.
fn with_incr(b: OutboxBuilder) -> OutboxBuilder {
    b.handler("incr", |tx, _args| {
        Box::pin(async move {
            let n = number(tx.get("counter").await?);
            tx.put("counter", (n + 1).to_string()).await?;
            Ok(())
        })
    })
}

fn store_path(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fitz-it-sync-{}-{tag}", realm("s")));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join("outbox.redb")
}

async fn read(client: &Client, route: &str, key: &[u8]) -> Option<Bytes> {
    let mut tx = client
        .kv()
        .begin(route, TxMode::ReadOnly)
        .await
        .expect("begin");
    let v = tx.get(key).await.expect("get");
    tx.rollback().await.expect("rollback");
    v
}

/// Faults the connection through `proxy` after every few applied entries
/// until `outbox` is empty; returns how many faults it made.
async fn flush_through_faults(proxy: &ProxyHandle, outbox: &Outbox) -> usize {
    // A fault after every few applied entries: ~1000/4.5 of them, so that
    // dozens land between a COMMIT reaching the broker and its answer (what
    // the marker check exists for).
    flush_through_faults_paced(proxy, outbox, "sync", 9, 6000, 15).await
}

/// [`flush_through_faults`] with its pace: a fault after 1..`max_step`
/// applied entries, landed up to `max_phase_us` later, a black hole or
/// stall held up to `max_hold_ms` (also used by `sync_lanes.rs`).
pub(crate) async fn flush_through_faults_paced(
    proxy: &ProxyHandle,
    outbox: &Outbox,
    label: &str,
    max_step: usize,
    max_phase_us: u64,
    max_hold_ms: u64,
) -> usize {
    let seed: u64 = rand::random();
    eprintln!("{label} chaos seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut pending = outbox.watch_pending();
    let mut faults = 0;
    loop {
        let last = *pending.borrow_and_update();
        if last == 0 {
            break;
        }
        let step = rng.random_range(1..max_step);
        within(
            "flush progress",
            pending.wait_for(|n| *n == 0 || n + step <= last),
        )
        .await
        .unwrap();
        if *pending.borrow() == 0 {
            break;
        }
        // Land the fault at a random point of the next entry's transaction
        // (BEGIN … COMMIT), not always right after a commit was answered:
        // a short busy wait, finer than the timer wheel's millisecond.
        let phase =
            std::time::Instant::now() + Duration::from_micros(rng.random_range(0..max_phase_us));
        while std::time::Instant::now() < phase {
            tokio::task::yield_now().await;
        }
        let hold = Duration::from_millis(rng.random_range(0..max_hold_ms));
        match rng.random_range(0..3) {
            0 => proxy.cut_all(),
            1 => {
                proxy.blackhole(true);
                tokio::time::sleep(hold).await;
                proxy.cut_all();
                proxy.blackhole(false);
            }
            _ => {
                // Requests reach the broker, answers never come back.
                proxy.stall(Direction::Down, true);
                tokio::time::sleep(hold).await;
                proxy.cut_all();
                proxy.stall(Direction::Down, false);
            }
        }
        faults += 1;
    }
    faults
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_apply_exactly_once_through_cuts_and_lost_answers() {
    let brokers = Brokers::start().await.unwrap();
    let (proxy, url) = brokers.anon_proxy(Transport::Tcp).await;
    refuse_new(&proxy).await;
    let client = anon_builder(&url)
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let store = RedbStore::open(store_path("incr")).unwrap();
    let mut builder = with_incr(Outbox::builder(client.clone(), store));
    let unchecked = std::env::var_os("FITZ_SYNC_UNCHECKED_MARKER").is_some();
    if unchecked {
        builder = builder.unchecked_marker_for_tests();
    }
    let outbox = builder.open().await.unwrap();
    let route = format!("kv://{}/sync/counter", realm("sync"));

    // Offline: every push is stored, nothing is sent.
    assert!(client.connect().await.is_err());
    for _ in 0..INCREMENTS {
        outbox.mutate(&route, "incr", b"").await.unwrap();
    }
    assert_eq!(outbox.status().pending(), INCREMENTS);
    assert_eq!(client.state(), State::Disconnected);

    proxy.refuse_new(false);
    client.connect_when_ready(fitz_tests::WAIT).await.unwrap();

    let faults = flush_through_faults(&proxy, &outbox).await;
    outbox.wait_idle().await;

    let direct = connected(brokers.anon_url(Transport::Tcp)).await;
    let counter = number(read(&direct, &route, b"counter").await);
    eprintln!("faults {faults}, counter {counter}, unchecked marker {unchecked}");
    assert!(faults >= MIN_FAULTS, "only {faults} faults");
    let dead = outbox.dead_letters().await.unwrap();
    assert!(dead.is_empty(), "dead letters: {:?}", dead.first());
    assert_eq!(
        counter, INCREMENTS as u64,
        "each increment applied exactly once"
    );
    let marker = number(read(&direct, &route, &marker_key(outbox.client_id())).await);
    assert_eq!(marker, INCREMENTS as u64, "the marker is the last seq");
    outbox.close().await;
    client.close().await;
    direct.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_refused_write_goes_to_the_dead_letter_and_the_lane_moves_on() {
    let brokers = Brokers::start().await.unwrap();
    let client = connected(brokers.anon_url(Transport::Tcp)).await;
    let outbox = Outbox::builder(client.clone(), RedbStore::open(store_path("dead")).unwrap())
        .open()
        .await
        .unwrap();
    let mut events = outbox.events();
    let route = format!("kv://{}/sync/dead", realm("sync"));
    let w = |writes| Mutation::Writes(writes);

    outbox
        .push(&route, w(vec![KvWrite::insert("k", "1")]))
        .await
        .unwrap();
    let refused = outbox
        .push(&route, w(vec![KvWrite::insert("k", "2")]))
        .await
        .unwrap();
    outbox
        .push(&route, w(vec![KvWrite::put("after", "yes")]))
        .await
        .unwrap();
    outbox.sync_now();
    within("idle", outbox.wait_idle()).await;

    // The lane moved on past the refused entry.
    assert_eq!(
        read(&client, &route, b"k").await.as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(
        read(&client, &route, b"after").await.as_deref(),
        Some(&b"yes"[..])
    );
    // Applied and dead-lettered entries overlay nothing any more.
    assert_eq!(outbox.overlay(&route, "k", None).await.unwrap(), None);
    let mut failed = None;
    for _ in 0..3 {
        match within("event", events.recv()).await.unwrap() {
            SyncEvent::Failed { seq, code, .. } => failed = Some((seq, code)),
            SyncEvent::Synced { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(failed, Some((refused, Some(fitz::codes::KV_KEY_EXISTS))));
    let dead = outbox.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].seq, refused);
    assert_eq!(dead[0].code, Some(fitz::codes::KV_KEY_EXISTS));
    let status = outbox.status();
    assert_eq!(status.dead_letters, 1);
    assert_eq!(status.pending(), 0);

    // Make room, then retry it: applied under a new seq.
    outbox
        .push(&route, w(vec![KvWrite::delete("k")]))
        .await
        .unwrap();
    within("idle", outbox.wait_idle()).await;
    let again = outbox.retry_dead_letter(refused).await.unwrap();
    assert!(again > refused);
    within("idle", outbox.wait_idle()).await;
    assert_eq!(
        read(&client, &route, b"k").await.as_deref(),
        Some(&b"2"[..])
    );
    assert!(outbox.dead_letters().await.unwrap().is_empty());

    // A range delete over every key leaves the marker.
    outbox
        .push(&route, w(vec![KvWrite::delete_range(b"", [0xff_u8; 4])]))
        .await
        .unwrap();
    within("idle", outbox.wait_idle()).await;
    assert_eq!(read(&client, &route, b"after").await, None);
    let marker = read(&client, &route, &marker_key(outbox.client_id())).await;
    assert!(marker.is_some(), "the marker survived the range delete");

    // Discard: a second refusal is dropped on request, and only then.
    outbox
        .push(
            &route,
            w(vec![KvWrite::insert("x", "1"), KvWrite::insert("x", "2")]),
        )
        .await
        .unwrap();
    within("idle", outbox.wait_idle()).await;
    let dead = outbox.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    // The whole entry was one transaction: nothing of it applied.
    assert_eq!(read(&client, &route, b"x").await, None);
    outbox.discard(dead[0].seq).await.unwrap();
    assert!(outbox.dead_letters().await.unwrap().is_empty());
    assert!(outbox.discard(dead[0].seq).await.is_err());

    outbox.close().await;
    client.close().await;
    brokers.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_appends_apply_exactly_once_in_push_order_through_faults() {
    const ENTRIES: usize = 200;
    let brokers = Brokers::start().await.unwrap();
    let (proxy, url) = brokers.anon_proxy(Transport::Tcp).await;
    refuse_new(&proxy).await;
    let client = anon_builder(&url)
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut builder = Outbox::builder(
        client.clone(),
        RedbStore::open(store_path("stream")).unwrap(),
    );
    if std::env::var_os("FITZ_SYNC_UNCHECKED_MARKER").is_some() {
        builder = builder.unchecked_marker_for_tests();
    }
    let outbox = builder.open().await.unwrap();
    let app = realm("sync");
    let lanes = [
        format!("stream://{app}/sync/a"),
        format!("stream://{app}/sync/b"),
    ];
    // Per lane, in push order: (tx id, number of records).
    let mut pushed: Vec<Vec<(String, usize)>> = vec![Vec::new(), Vec::new()];
    for i in 0..ENTRIES {
        for (l, lane) in lanes.iter().enumerate() {
            let n = 1 + (i + l) % 3;
            let records = (0..n)
                .map(|j| StreamAppend::new(format!("{l}:{i}:{j}")).aspect("counted"))
                .collect();
            let seq = outbox.push(lane, Mutation::Append(records)).await.unwrap();
            pushed[l].push((format!("{}/{seq}", outbox.client_id()), n));
        }
    }
    assert!(client.connect().await.is_err());
    proxy.refuse_new(false);
    client.connect_when_ready(fitz_tests::WAIT).await.unwrap();
    let faults = flush_through_faults(&proxy, &outbox).await;
    outbox.wait_idle().await;
    let dead = outbox.dead_letters().await.unwrap();
    assert!(dead.is_empty(), "dead letters: {:?}", dead.first());

    let direct = connected(brokers.anon_url(Transport::Tcp)).await;
    for (l, lane) in lanes.iter().enumerate() {
        let mut found: Vec<(String, usize)> = Vec::new();
        let mut from = fitz::stream::ReadPosition::from(0);
        loop {
            let page = direct
                .stream()
                .read_page(lane, from, &fitz::stream::ReadOptions::new())
                .await
                .unwrap();
            for rec in page.records() {
                let meta: serde_json::Value =
                    serde_json::from_slice(rec.metadata().expect("metadata")).unwrap();
                assert_eq!(meta["aspect"], "counted");
                let tx = meta["sync_tx"].as_str().expect("tx id").to_owned();
                match found.last_mut() {
                    Some((last, n)) if *last == tx => *n += 1,
                    _ => found.push((tx, 1)),
                }
            }
            if page.caught_up() {
                break;
            }
            from = page.next_position();
        }
        eprintln!("lane {l}: {} batches, faults {faults}", found.len());
        assert_eq!(found, pushed[l], "lane {l}: each entry once, in push order");
    }
    assert!(faults >= MIN_FAULTS, "only {faults} faults");
    outbox.close().await;
    client.close().await;
    direct.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn an_unauthorized_write_is_dead_lettered_with_its_code_and_other_lanes_flow() {
    let brokers = Brokers::start().await.unwrap();
    let app = realm("sync");
    let token = brokers.scoped_token(&[
        &format!("kv://{app}/open/**#*"),
        &format!("kv://{app}/closed/**#read"),
    ]);
    let client = fitz_tests::connected_with(brokers.auth_url(Transport::Tcp), token).await;
    let outbox = Outbox::builder(client.clone(), RedbStore::open(store_path("auth")).unwrap())
        .open()
        .await
        .unwrap();
    let closed = format!("kv://{app}/closed/r");
    let open = format!("kv://{app}/open/r");
    let put = |k: &str| Mutation::Writes(vec![KvWrite::put(k, "v")]);
    let first = outbox.push(&closed, put("a")).await.unwrap();
    let second = outbox.push(&closed, put("b")).await.unwrap();
    outbox.push(&open, put("a")).await.unwrap();
    within("idle", outbox.wait_idle()).await;

    let dead = outbox.dead_letters().await.unwrap();
    assert_eq!(
        dead.iter().map(|d| (d.seq, d.code)).collect::<Vec<_>>(),
        vec![
            (first, Some(fitz::codes::KV_UNAUTHORIZED)),
            (second, Some(fitz::codes::KV_UNAUTHORIZED)),
        ],
        "each refused entry is kept with its code; the lane moved past the first"
    );
    assert_eq!(dead[0].lane, closed);
    let status = outbox.status();
    assert_eq!((status.pending(), status.dead_letters), (0, 2));
    let lane = status.lanes.iter().find(|l| l.lane == closed).unwrap();
    assert!(
        lane.last_error.is_some(),
        "the lane's last error is the refusal"
    );
    assert_eq!(read(&client, &open, b"a").await.as_deref(), Some(&b"v"[..]));
    outbox.close().await;
    client.close().await;
    brokers.shutdown().await;
}

/// Not a process kill (that is `sync_crash.rs`): the outbox
/// is stopped abruptly at random points of its flush — its tasks end at
/// whatever await they are in, between a broker commit and the local
/// dequeue included — and reopened on the same file, 25 times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abrupt_stops_and_reopens_on_the_same_file_apply_each_entry_once() {
    const TOTAL: usize = 300;
    const STOPS: usize = 25;
    let brokers = Brokers::start().await.unwrap();
    let client = connected(brokers.anon_url(Transport::Tcp)).await;
    let path = store_path("reopen");
    let route = format!("kv://{}/sync/counter", realm("sync"));
    let unchecked = std::env::var_os("FITZ_SYNC_UNCHECKED_MARKER").is_some();
    let open = || async {
        let mut b = with_incr(Outbox::builder(
            client.clone(),
            RedbStore::open(&path).expect("the store reopens"),
        ));
        if unchecked {
            b = b.unchecked_marker_for_tests();
        }
        b.open().await.unwrap()
    };
    let outbox = open().await;
    let id = outbox.client_id().to_owned();
    for _ in 0..TOTAL {
        outbox.mutate(&route, "incr", b"").await.unwrap();
    }
    outbox.close().await;

    let seed: u64 = rand::random();
    eprintln!("sync reopen seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    // The client is connected: some entries were applied while pushing.
    let mut left = open_count(&path).await;
    for _ in 0..STOPS {
        let outbox = open().await;
        assert_eq!(outbox.client_id(), id);
        // It may have applied one already: it flushes from the moment it opens.
        assert!(outbox.status().pending() <= left);
        let mut pending = outbox.watch_pending();
        // Let a few entries through, then stop at a random moment.
        let step = rng.random_range(1..8).min(left);
        within(
            "progress",
            pending.wait_for(|n| *n == 0 || n + step <= left),
        )
        .await
        .unwrap();
        let phase = std::time::Instant::now() + Duration::from_micros(rng.random_range(0..4000));
        while std::time::Instant::now() < phase {
            tokio::task::yield_now().await;
        }
        outbox.close().await;
        // What the store says is pending, after the stop.
        left = open_count(&path).await;
    }
    let outbox = open().await;
    within("idle", outbox.wait_idle()).await;
    assert_eq!(
        number(read(&client, &route, b"counter").await),
        TOTAL as u64,
        "each increment applied exactly once across {STOPS} stops"
    );
    outbox.close().await;
    client.close().await;
    brokers.shutdown().await;
}

/// The pending count of the store at `path`, read by an outbox that never
/// connects.
async fn open_count(path: &std::path::Path) -> usize {
    let offline = Client::anonymous("tcp://127.0.0.1:1").unwrap();
    let outbox = with_incr(Outbox::builder(offline, RedbStore::open(path).unwrap()))
        .open()
        .await
        .unwrap();
    let n = outbox.status().pending();
    outbox.close().await;
    n
}
