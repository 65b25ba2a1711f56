//! The outbox's schedule and queue lanes, and the reserved key prefix,
//! against the embedded broker (feature `sync`).
//!
//! * **Schedule and queue lanes through faults**: schedule creates and
//!   cancels on 12 routes and enveloped messages on two queues, pushed while
//!   the proxy refuses connections, then flushed through ≥ 20 random cuts,
//!   black holes and lost answers: every route ends as its last entry says
//!   (created once with the last definition, or cancelled); every message
//!   arrives at least once and [`TxDedup`] yields each tx id exactly once,
//!   with its body.
//! * **Dead letter**: a schedule create and a queue message on routes the
//!   token may not write go to the dead letter with 7009 and 4009, while
//!   the allowed lanes flow.
//! * **Reserved prefix**: `Transaction::scan` and `scan_page` never return
//!   keys under `\0sync/` (the outbox's marker among them), with pages
//!   that are full across the prefix, forward and reverse, through a run of
//!   reserved keys longer than a broker page; `delete_range` over
//!   everything leaves them.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use fitz::kv::{Durability, RESERVED_PREFIX, ScanOptions, ScanPage, TxMode};
use fitz::queue::ReserveOptions;
use fitz::schedule::DeliveryMode;
use fitz::sync::{KvWrite, MemoryStore, Mutation, Outbox, QueueEnvelope, TxDedup, marker_key};
use fitz::{Client, State};
use fitz_tests::{
    Brokers, BrokersExt, ProxyHandle, Transport, anon_builder, connected, realm, refuse_new, within,
};
use futures_util::{StreamExt, TryStreamExt};

const MIN_FAULTS: usize = 20;

/// Faults the connection through `proxy` every few applied entries until
/// `outbox` is empty; returns how many faults it made.
async fn flush_through_faults(proxy: &ProxyHandle, outbox: &Outbox) -> usize {
    crate::sync::flush_through_faults_paced(proxy, outbox, "sync lanes", 4, 3000, 10).await
}

/// Every message of `route`, reserved and completed until none is left.
async fn drain_queue(client: &Client, route: &str) -> Vec<Bytes> {
    let queue = client.queue();
    let mut bodies = Vec::new();
    let options = ReserveOptions {
        batch: 100,
        lease: Duration::from_secs(60),
        wait: Duration::ZERO,
    };
    loop {
        let batch = queue.reserve(route, options).await.unwrap();
        if batch.is_empty() {
            return bodies;
        }
        for r in batch {
            bodies.push(r.body().clone());
            r.complete().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_and_queue_lanes_flush_through_faults() {
    const ROUTES: usize = 12;
    const MESSAGES: usize = 240;
    let brokers = Brokers::start().await.unwrap();
    let (proxy, url) = brokers.anon_proxy(Transport::Tcp).await;
    refuse_new(&proxy).await;
    let client = anon_builder(&url)
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let outbox = Outbox::builder(client.clone(), MemoryStore::new())
        .open()
        .await
        .unwrap();
    let app = realm("lanes");
    assert!(client.connect().await.is_err());

    // Schedules: per route a run of creates and cancels; what the last one
    // says is what must hold at the end.
    let mut want: BTreeMap<String, Option<(String, Vec<u8>)>> = BTreeMap::new();
    for round in 0..3 {
        for i in 0..ROUTES {
            let route = format!("schedule://{app}/jobs/r{i}/run");
            let cancel = (i + round) % 4 == 0;
            let m = if cancel {
                want.insert(route.clone(), None);
                Mutation::ScheduleCancel
            } else {
                let cron = format!("{} {} 1 1 *", round * 7, i % 24);
                let payload = format!("r{i} round {round}").into_bytes();
                want.insert(route.clone(), Some((cron.clone(), payload.clone())));
                Mutation::schedule_create(cron, DeliveryMode::Single, payload)
            };
            outbox.push(&route, m).await.unwrap();
        }
    }
    // Messages on two queues, enveloped.
    let queues = [
        format!("queue://{app}/lanes/a"),
        format!("queue://{app}/lanes/b"),
    ];
    let mut sent: HashMap<String, (usize, Vec<u8>)> = HashMap::new();
    for i in 0..MESSAGES {
        let q = i % 2;
        let body = format!("message {i}").into_bytes();
        let seq = outbox
            .push(&queues[q], Mutation::enqueue(&body))
            .await
            .unwrap();
        sent.insert(format!("{}/{seq}", outbox.client_id()), (q, body));
    }
    assert_eq!(outbox.status().pending(), 3 * ROUTES + MESSAGES);
    assert_eq!(client.state(), State::Disconnected);

    proxy.refuse_new(false);
    client.connect_when_ready(fitz_tests::WAIT).await.unwrap();
    let faults = flush_through_faults(&proxy, &outbox).await;
    within("idle", outbox.wait_idle()).await;
    let dead = outbox.dead_letters().await.unwrap();
    assert!(dead.is_empty(), "dead letters: {:?}", dead.first());

    let direct = connected(brokers.anon_url(Transport::Tcp)).await;
    // Each route once, as its last entry left it.
    let listed: Vec<_> = direct
        .schedule()
        .list_matching(&format!("schedule://{app}/**"))
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut got: BTreeMap<String, Option<(String, Vec<u8>)>> =
        want.keys().map(|r| (r.clone(), None)).collect();
    for e in &listed {
        let slot = got.get_mut(e.route()).expect("a route we pushed");
        assert!(slot.is_none(), "{} listed twice", e.route());
        *slot = Some((e.cron().to_owned(), e.payload().to_vec()));
        assert_eq!(e.mode(), DeliveryMode::Single);
    }
    assert_eq!(got, want, "every schedule as its last entry says");
    assert!(want.values().any(Option::is_none) && want.values().any(Option::is_some));

    // Each message at least once; deduplicated, each tx id exactly once.
    let mut dedup = TxDedup::new(4 * MESSAGES);
    let mut once: HashMap<String, usize> = HashMap::new();
    let mut deliveries = 0;
    for (q, route) in queues.iter().enumerate() {
        for body in drain_queue(&direct, route).await {
            deliveries += 1;
            let Some(msg) = dedup.open(body) else {
                continue;
            };
            let id = msg.tx_id().expect("an enveloped message").to_owned();
            let (lane, body) = sent.get(&id).expect("a tx id we pushed");
            assert_eq!((*lane, &msg.body()[..]), (q, &body[..]));
            assert!(dedup.record(&id));
            *once.entry(id).or_default() += 1;
        }
    }
    eprintln!(
        "faults {faults}, {deliveries} deliveries of {MESSAGES} messages, {} schedules",
        listed.len()
    );
    assert_eq!(once.len(), MESSAGES, "every message arrived");
    assert!(
        once.values().all(|n| *n == 1),
        "dedup yields each tx id once"
    );
    assert!(faults >= MIN_FAULTS, "only {faults} faults");

    outbox.close().await;
    client.close().await;
    direct.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn unauthorized_schedule_and_queue_entries_are_dead_lettered_with_their_codes() {
    let brokers = Brokers::start().await.unwrap();
    let app = realm("lanes");
    let token = brokers.scoped_token(&[
        &format!("schedule://{app}/open/**#*"),
        &format!("queue://{app}/open/**#*"),
    ]);
    let client = fitz_tests::connected_with(brokers.auth_url(Transport::Tcp), token).await;
    let outbox = Outbox::builder(client.clone(), MemoryStore::new())
        .open()
        .await
        .unwrap();
    let create = || Mutation::schedule_create("0 0 1 1 *", DeliveryMode::Broadcast, "p");
    let closed_s = format!("schedule://{app}/closed/r/run");
    let closed_q = format!("queue://{app}/closed/q");
    let open_s = format!("schedule://{app}/open/r/run");
    let open_q = format!("queue://{app}/open/q");
    let s = outbox.push(&closed_s, create()).await.unwrap();
    let q = outbox
        .push(&closed_q, Mutation::enqueue("m"))
        .await
        .unwrap();
    outbox.push(&open_s, create()).await.unwrap();
    outbox
        .push(&open_q, Mutation::enqueue_plain("plain"))
        .await
        .unwrap();
    within("idle", outbox.wait_idle()).await;

    let mut dead: Vec<_> = outbox
        .dead_letters()
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.seq, d.lane, d.code))
        .collect();
    dead.sort();
    assert_eq!(
        dead,
        vec![
            (s, closed_s, Some(fitz::codes::SCHEDULE_UNAUTHORIZED)),
            (q, closed_q, Some(fitz::codes::QUEUE_UNAUTHORIZED)),
        ]
    );
    assert_eq!(outbox.status().dead_letters, 2);
    // Listing is not scoped to routes: a full-permission client looks.
    let full = fitz_tests::connected_with(brokers.auth_url(Transport::Tcp), brokers.token()).await;
    let listed: Vec<_> = full
        .schedule()
        .list_matching(&format!("schedule://{app}/**"))
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|e| e.route()).collect::<Vec<_>>(),
        [open_s.as_str()]
    );
    // Sent without an envelope: the body as it was pushed.
    let bodies = drain_queue(&client, &open_q).await;
    assert_eq!(bodies, [Bytes::from_static(b"plain")]);
    assert_eq!(QueueEnvelope::open(bodies[0].clone()).tx_id(), None);
    outbox.close().await;
    client.close().await;
    full.close().await;
    brokers.shutdown().await;
}

fn keys_of(entries: &[(Bytes, Bytes)]) -> Vec<Vec<u8>> {
    entries.iter().map(|(k, _)| k.to_vec()).collect()
}

/// Every page of `options`, resuming after each page's last key.
async fn pages(tx: &mut fitz::kv::Transaction, options: ScanOptions) -> Vec<ScanPage> {
    let mut out = Vec::new();
    let mut o = options;
    loop {
        let page = tx.scan_page(&o).await.unwrap();
        let more = page.has_more();
        let last = page.last_key().cloned();
        out.push(page);
        match (more, last) {
            (true, Some(k)) => o = o.resume_after(k),
            _ => return out,
        }
    }
}

fn reserved(name: &str) -> Vec<u8> {
    let mut k = RESERVED_PREFIX.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

#[tokio::test]
async fn scans_hide_the_reserved_prefix_and_range_deletes_keep_it() {
    let brokers = Brokers::start().await.unwrap();
    let client = connected(brokers.anon_url(Transport::Tcp)).await;
    let route = format!("kv://{}/lanes/reserved", realm("lanes"));
    // A real marker, written by the outbox.
    let outbox = Outbox::builder(client.clone(), MemoryStore::new())
        .open()
        .await
        .unwrap();
    outbox
        .push(&route, Mutation::Writes(vec![KvWrite::put("m", "v")]))
        .await
        .unwrap();
    within("idle", outbox.wait_idle()).await;
    let marker = marker_key(outbox.client_id());

    // Visible keys on both sides of the prefix, and more reserved keys than
    // one broker page holds (1,024).
    let below: Vec<Vec<u8>> = vec![b"\0a".to_vec(), b"\0b".to_vec(), b"\0sync".to_vec()];
    let above: Vec<Vec<u8>> = ["\0sync0", "a", "b", "c", "m"]
        .iter()
        .map(|k| k.as_bytes().to_vec())
        .collect();
    let mut tx = client.kv().begin(&route, TxMode::ReadWrite).await.unwrap();
    for k in below.iter().chain(&above) {
        tx.put(k, "v").await.unwrap();
    }
    for i in 0..1100 {
        tx.put(reserved(&format!("x{i:04}")), "r").await.unwrap();
    }
    tx.commit(Durability::Sync).await.unwrap();
    let visible: Vec<Vec<u8>> = below.iter().chain(&above).cloned().collect();
    let mut reversed = visible.clone();
    reversed.reverse();

    let mut tx = client.kv().begin(&route, TxMode::ReadOnly).await.unwrap();
    // The whole resource, as a stream, both ways and in small pages.
    for (options, expect) in [
        (ScanOptions::all(), &visible),
        (ScanOptions::all().reverse(), &reversed),
        (ScanOptions::all().page_size(2), &visible),
        (
            ScanOptions::range(&b""[..]..&b"\xff"[..])
                .reverse()
                .page_size(3),
            &reversed,
        ),
    ] {
        let got: Vec<(Bytes, Bytes)> = tx.scan(options.clone()).try_collect().await.unwrap();
        assert_eq!(&keys_of(&got), expect, "{options:?}");
    }
    // The prefix itself: nothing, and nothing needed to say so.
    let got: Vec<_> = tx
        .scan(ScanOptions::prefix(RESERVED_PREFIX))
        .try_collect()
        .await
        .unwrap();
    assert!(got.is_empty());
    let page = tx
        .scan_page(&ScanOptions::prefix(RESERVED_PREFIX))
        .await
        .unwrap();
    assert!(page.is_empty() && !page.has_more());

    // Pages of 3 are full across the prefix (none is short because 1,101
    // reserved keys were skipped), forward and reverse.
    for (options, expect) in [
        (ScanOptions::all().limit(3), &visible),
        (ScanOptions::all().reverse().limit(3), &reversed),
        (ScanOptions::all().page_size(3), &visible),
    ] {
        let ps = pages(&mut tx, options.clone()).await;
        let sizes: Vec<usize> = ps.iter().map(ScanPage::len).collect();
        let keys: Vec<Vec<u8>> = ps.iter().flat_map(|p| keys_of(p.entries())).collect();
        assert_eq!(&keys, expect, "{options:?}");
        let (last, full) = sizes.split_last().unwrap();
        assert!(full.iter().all(|n| *n == 3), "{options:?}: {sizes:?}");
        assert!(*last >= 1 && *last <= 3, "{options:?}: {sizes:?}");
    }
    // Unlimited pages: never empty while more follows.
    let ps = pages(&mut tx, ScanOptions::all()).await;
    assert!(
        ps.iter().all(|p| !p.is_empty()),
        "{:?}",
        ps.iter().map(ScanPage::len).collect::<Vec<_>>()
    );
    assert_eq!(
        ps.iter()
            .flat_map(|p| keys_of(p.entries()))
            .collect::<Vec<_>>(),
        visible
    );
    // The documented trace: a page that ends just before reserved keys with
    // nothing visible after them says has_more; the next page is empty, last.
    let o = ScanOptions::range(&b"\0"[..]..&b"\0sync0"[..]).limit(3);
    let first = tx.scan_page(&o).await.unwrap();
    assert_eq!(keys_of(first.entries()), below);
    assert!(first.has_more());
    let next = tx
        .scan_page(&o.clone().resume_after(first.last_key().unwrap()))
        .await
        .unwrap();
    assert!(next.is_empty() && !next.has_more());
    // A limit smaller than what is below the prefix is plain.
    let page = tx.scan_page(&ScanOptions::all().limit(2)).await.unwrap();
    assert_eq!(keys_of(page.entries()), below[..2].to_vec());
    assert!(page.has_more());
    // Point reads still see the reserved keys.
    assert!(tx.get(&marker).await.unwrap().is_some());
    tx.rollback().await.unwrap();

    // A range delete over everything, and one inside the prefix: the
    // reserved keys stay, every visible key goes.
    let mut tx = client.kv().begin(&route, TxMode::ReadWrite).await.unwrap();
    tx.delete_range(reserved("x0000")..reserved("x9999"))
        .await
        .unwrap();
    tx.delete_range(&b""[..]..&b"\xff\xff"[..]).await.unwrap();
    tx.commit(Durability::Sync).await.unwrap();
    let mut tx = client.kv().begin(&route, TxMode::ReadOnly).await.unwrap();
    let left: Vec<_> = tx.scan(ScanOptions::all()).collect().await;
    assert!(left.is_empty(), "{left:?}");
    assert!(tx.get(&marker).await.unwrap().is_some());
    assert!(tx.get(reserved("x0000")).await.unwrap().is_some());
    assert!(tx.get(reserved("x1099")).await.unwrap().is_some());
    // An inverted range is still the broker's to refuse.
    tx.rollback().await.unwrap();
    let mut tx = client.kv().begin(&route, TxMode::ReadWrite).await.unwrap();
    assert!(tx.delete_range(&b"b"[..]..&b"a"[..]).await.is_err());
    drop(tx);

    outbox.close().await;
    client.close().await;
    brokers.shutdown().await;
}
