//! Cancel safety: every kind of call is dropped inside `tokio::select!` at
//! random points — after a random number of yields, or when a random short
//! timer fires — many times with a seeded generator, against the embedded
//! broker. Afterwards nothing may be lost or misrouted: the client stays
//! usable, later replies reach their own callers (correlation ids are not
//! mixed up), no subscription or pending request leaks (the client's
//! `debug_snapshot`), and a dropped write happened whole or not at all.
//!
//! A failing iteration names its seed and iteration; `FITZ_CANCEL_SEED`
//! replays another seed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use fitz::kv::{Durability, TxMode};
use fitz::queue::ReserveOptions;
use fitz::rpc::{HandlerError, RpcRequest};
use fitz::stream::{ReadOptions, StreamItem};
use fitz::{Client, codes};
use fitz_tests::{Brokers, Timed, connected, next_item, realm};
use futures_util::TryStreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Dropped calls per test.
const ROUNDS: usize = 60;
/// The client's in-flight limit (the builder's default).
const PERMITS: usize = 1024;

fn rng(test: u64) -> (StdRng, u64) {
    let base = std::env::var("FITZ_CANCEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let seed = base ^ test;
    (StdRng::seed_from_u64(seed), seed)
}

/// Runs `fut` until a random cancel point: a few yields (most calls need a
/// few to be written, and a few more for their reply), or a timer of up to
/// 300 µs. `None` when the call was dropped unfinished.
async fn race<F: Future>(rng: &mut StdRng, fut: F) -> Option<F::Output> {
    let timer = rng.random_bool(0.3);
    let yields = rng.random_range(0..10u32);
    let micros = rng.random_range(0..300u64);
    let cancel = async move {
        if timer {
            tokio::time::sleep(Duration::from_micros(micros)).await;
        } else {
            for _ in 0..yields {
                tokio::task::yield_now().await;
            }
        }
    };
    tokio::select! {
        biased;
        out = fut => Some(out),
        () = cancel => None,
    }
}

/// Waits until the client owes nothing: no pending request, every in-flight
/// permit back, `registrations` wire subscriptions and `sinks` local ones.
async fn settled(client: &Client, registrations: usize, sinks: usize) {
    let mut last = None;
    let done = tokio::time::timeout(fitz_tests::WAIT, async {
        loop {
            let s = client.debug_snapshot().await.expect("open client");
            if s.pending == 0
                && s.backlog == 0
                && s.free_permits == PERMITS
                && s.registrations == registrations
                && s.sinks == sinks
                && s.push_handlers == 0
            {
                return;
            }
            last = Some(s);
            // Nothing to await: the books are the connection task's.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(
        done.is_ok(),
        "the client's books never settled to {registrations} registrations and {sinks} sinks: {last:?}"
    );
}

/// Waits until the client holds exactly `n` wire registrations.
async fn registrations(client: &Client, n: usize) {
    let mut last = None;
    let done = tokio::time::timeout(fitz_tests::WAIT, async {
        loop {
            let s = client.debug_snapshot().await.expect("open client");
            if s.registrations == n && s.pending == 0 {
                return;
            }
            last = Some(s);
            // Nothing to await: the books are the connection task's.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    assert!(done.is_ok(), "not {n} registrations: {last:?}");
}

#[tokio::test]
async fn dropped_reads_never_take_another_callers_reply() {
    let brokers = Brokers::start().await.unwrap();
    let client = connected(&brokers.anon_tcp).await;
    let (mut rng, seed) = rng(1);
    let route = &format!("kv://{}/cancel/reads", realm("cancel"));
    let mut tx = client.kv().begin(route, TxMode::ReadWrite).await.unwrap();
    for k in 0..20 {
        tx.put(format!("k{k}"), format!("v{k}")).await.unwrap();
    }
    tx.commit(Durability::Buffered).await.unwrap();

    let mut tx = client.kv().begin(route, TxMode::ReadOnly).await.unwrap();
    let mut finished = 0;
    for round in 0..ROUNDS {
        let k = rng.random_range(0..20);
        if let Some(r) = race(&mut rng, tx.get(format!("k{k}"))).await {
            let v = r.unwrap();
            assert_eq!(
                v.as_deref(),
                Some(format!("v{k}").as_bytes()),
                "seed {seed} round {round}"
            );
            finished += 1;
        }
        // The next read gets its own reply, not the dropped one's.
        let k = rng.random_range(0..20);
        let v = tx.get(format!("k{k}")).await.unwrap();
        assert_eq!(
            v.as_deref(),
            Some(format!("v{k}").as_bytes()),
            "seed {seed} round {round}"
        );
        // A stream metadata read on the same connection, dropped too.
        let _ = race(&mut rng, client.stream().metadata("stream://c/a/r")).await;
    }
    tx.rollback().await.unwrap();
    settled(&client, 0, 0).await;
    eprintln!("reads: {finished}/{ROUNDS} finished before their cancel point");
    client.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_dropped_enqueue_is_stored_whole_or_not_at_all() {
    let brokers = Brokers::start().await.unwrap();
    let client = connected(&brokers.anon_tcp).await;
    let (mut rng, seed) = rng(2);
    let route = &format!("queue://{}/cancel/writes", realm("cancel"));
    let q = client.queue();
    let mut confirmed = HashMap::new();
    for i in 0..ROUNDS {
        let body = format!("m{i}-{}", "x".repeat(i * 97));
        if let Some(r) = race(&mut rng, q.enqueue(route, body)).await {
            confirmed.insert(r.unwrap(), i);
        }
    }
    // One connection, answered in order: every written ENQUEUE was handled
    // before this RESERVE. A reply holds at most 64 KiB: page.
    let mut got = Vec::new();
    loop {
        let page = q
            .reserve(
                route,
                ReserveOptions {
                    batch: 1024,
                    ..ReserveOptions::default()
                },
            )
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        got.extend(page);
    }
    let mut seen = BTreeSet::new();
    for r in &got {
        let body = std::str::from_utf8(r.body()).unwrap();
        let (tag, pad) = body.split_once('-').unwrap();
        let i: usize = tag[1..].parse().unwrap();
        assert_eq!(pad, "x".repeat(i * 97), "seed {seed}: a torn body");
        assert!(seen.insert(i), "seed {seed}: message {i} stored twice");
        if let Some(&j) = confirmed.get(&r.id()) {
            assert_eq!(i, j, "seed {seed}: an id went to another caller");
        }
    }
    let ids: HashSet<_> = got.iter().map(|r| r.id()).collect();
    for id in confirmed.keys() {
        assert!(ids.contains(id), "seed {seed}: confirmed {id:?} lost");
    }
    settled(&client, 0, 0).await;
    eprintln!(
        "enqueue: {} confirmed, {} stored of {ROUNDS}",
        confirmed.len(),
        got.len()
    );
    client.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn dropped_subscribes_and_unsubscribes_leak_no_registration() {
    let brokers = Brokers::start().await.unwrap();
    let client = connected(&brokers.anon_tcp).await;
    let (mut rng, seed) = rng(3);
    let area = realm("cancel");
    let patterns: Vec<String> = (0..3).map(|p| format!("notice://{area}/p{p}/*")).collect();
    let mut kept = Vec::new();
    for round in 0..ROUNDS {
        let p = &patterns[rng.random_range(0..patterns.len())];
        if let Some(sub) = race(&mut rng, client.notice().subscribe(p)).await {
            let sub = sub.unwrap();
            if rng.random_bool(0.5) {
                kept.push((p.clone(), sub));
            } else if let Some(r) = race(&mut rng, sub.unsubscribe()).await {
                r.unwrap();
            }
        }
        if round % 10 == 9 {
            // No wire registration outlives its handles.
            let wire = kept.iter().map(|(p, _)| p).collect::<BTreeSet<_>>().len();
            registrations(&client, wire).await;
        }
    }
    // The kept ones still work, and each delivery prunes the local handles
    // of its registration whose consumer is gone.
    for (p, sub) in &mut kept {
        let route = p.replace('*', "r");
        client.notice().publish(&route, p.clone()).await.unwrap();
        let msg = next_item(sub).await;
        assert_eq!(msg.route(), route, "seed {seed}");
    }
    let wire = kept.iter().map(|(p, _)| p).collect::<BTreeSet<_>>().len();
    settled(&client, wire, kept.len()).await;
    // Dropping some and unsubscribing the rest, each maybe cancelled.
    for (_, sub) in kept.drain(..) {
        if rng.random_bool(0.5) {
            drop(sub);
        } else if let Some(r) = race(&mut rng, sub.unsubscribe()).await {
            r.unwrap();
        }
    }
    settled(&client, 0, 0).await;
    client.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn dropped_reserves_lose_no_message() {
    let Some(broker) = Timed::start("reserved messages come back when their lease expires").await
    else {
        return;
    };
    let client = connected(&broker.tcp).await;
    let (mut rng, seed) = rng(4);
    let route = &format!("queue://{}/cancel/reserve", realm("cancel"));
    let q = client.queue();
    let mut all = HashSet::new();
    for i in 0..ROUNDS {
        all.insert(q.enqueue(route, format!("m{i}")).await.unwrap());
    }
    let lease = ReserveOptions {
        lease: Duration::from_secs(5),
        batch: 2,
        ..ReserveOptions::default()
    };
    let mut completed = HashSet::new();
    for _ in 0..ROUNDS {
        if let Some(r) = race(&mut rng, q.reserve(route, lease)).await {
            for m in r.unwrap() {
                assert!(all.contains(&m.id()), "seed {seed}: a foreign message");
                let id = m.id();
                m.complete().await.unwrap();
                assert!(completed.insert(id), "seed {seed}: {id:?} delivered twice");
            }
        }
    }
    settled(&client, 0, 0).await;
    eprintln!(
        "reserve: {} completed before the leases expire",
        completed.len()
    );
    // What dropped reserves took comes back after the lease.
    broker.clock.advance(Duration::from_secs(6)).await;
    let mut rest = HashSet::new();
    fitz_tests::within("every message is reserved again", async {
        while completed.len() + rest.len() < all.len() {
            for m in q.reserve(route, lease).await.unwrap() {
                assert!(
                    !completed.contains(&m.id()),
                    "seed {seed}: a completed message came back"
                );
                assert!(rest.insert(m.id()), "seed {seed}: delivered twice");
                m.complete().await.unwrap();
            }
            // Nothing to await: the expiry runs on the broker's timer task.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    client.close().await;
}

#[tokio::test]
async fn dropped_rpc_calls_never_receive_another_calls_response() {
    let brokers = Brokers::start().await.unwrap();
    let client = connected(&brokers.anon_tcp).await;
    let worker_client = connected(&brokers.anon_tcp).await;
    let (mut rng, seed) = rng(5);
    let area = realm("cancel");
    let worker = worker_client
        .rpc()
        .serve(
            &format!("rpc://{area}/echo/*"),
            64,
            |req: RpcRequest| async move { Ok::<_, HandlerError>(req.body().clone()) },
        )
        .await
        .unwrap();
    let route = &format!("rpc://{area}/echo/x");
    let rpc = client.rpc();
    let mut finished = 0;
    for round in 0..ROUNDS {
        let body = format!("call {round}");
        if let Some(r) = race(&mut rng, rpc.request(route, body.clone())).await {
            assert_eq!(r.unwrap(), body.as_bytes(), "seed {seed} round {round}");
            finished += 1;
        }
        let body = format!("check {round}");
        let r = rpc.request(route, body.clone()).await.unwrap();
        assert_eq!(r, body.as_bytes(), "seed {seed} round {round}");
    }
    // No response handler of a dropped call stays installed.
    settled(&client, 0, 0).await;
    eprintln!("rpc: {finished}/{ROUNDS} finished before their cancel point");
    worker.shutdown().await.unwrap();
    client.close().await;
    worker_client.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn dropped_lease_acquires_leave_the_client_usable_and_expire() {
    let Some(broker) = Timed::start("a lease granted to a dropped acquire expires").await else {
        return;
    };
    let client = connected(&broker.tcp).await;
    let other = connected(&broker.tcp).await;
    let (mut rng, seed) = rng(6);
    let area = realm("cancel");
    let ttl = Duration::from_secs(5);
    for round in 0..ROUNDS {
        let route = format!("lease://{area}/l/{round}");
        if let Some(r) = race(&mut rng, client.lease().acquire(&route, "me", ttl)).await {
            let lease = r.unwrap();
            assert_eq!(lease.route(), route, "seed {seed} round {round}");
            if rng.random_bool(0.5) {
                lease.release().await.unwrap();
            }
        }
        // The next acquire gets its own grant.
        let check = format!("lease://{area}/check/{round}");
        let lease = client.lease().acquire(&check, "me", ttl).await.unwrap();
        assert_eq!(lease.route(), check, "seed {seed} round {round}");
        lease.release().await.unwrap();
    }
    settled(&client, 0, 0).await;
    // Whatever a dropped acquire was granted is released or expires.
    broker.clock.advance(ttl + Duration::from_secs(1)).await;
    for round in 0..ROUNDS {
        let route = format!("lease://{area}/l/{round}");
        let lease = other.lease().acquire(&route, "other", ttl).await;
        assert!(lease.is_ok(), "seed {seed} round {round}: {lease:?}");
    }
    client.close().await;
    other.close().await;
}

#[tokio::test]
async fn a_dropped_append_or_commit_never_commits_half_a_batch() {
    let brokers = Brokers::start().await.unwrap();
    let client = connected(&brokers.anon_tcp).await;
    let (mut rng, seed) = rng(7);
    let route = &format!("stream://{}/cancel/append", realm("cancel"));
    let streams = client.stream();
    // Per round: the records its batch must hold if it was committed.
    let mut batches: Vec<(Vec<String>, Option<bool>)> = Vec::new();
    for round in 0..ROUNDS {
        let mut s = streams.begin(route).await.unwrap();
        let mut records = vec![format!("{round}:0")];
        s.append(records[0].clone()).await.unwrap();
        let raced = format!("{round}:1");
        let appended = race(&mut rng, s.append(raced.clone())).await;
        let dropped = appended.is_none();
        if let Some(r) = appended {
            r.unwrap();
            records.push(raced);
        }
        let last = format!("{round}:2");
        match s.append(last.clone()).await {
            Ok(_) => records.push(last),
            Err(e) => {
                // The dropped append reached the batch: the next one does
                // not duplicate it but conflicts. Start over.
                assert!(dropped, "seed {seed} round {round}: {e}");
                assert_eq!(e.code(), Some(codes::STREAM_CONCURRENCY_CONFLICT), "{e}");
                s.rollback().await.unwrap();
                batches.push((records, Some(false)));
                continue;
            }
        }
        // `None`: dropped, so committed whole or rolled back whole.
        let committed = race(&mut rng, s.commit(Durability::Buffered))
            .await
            .map(|r| r.is_ok());
        batches.push((records, committed));
    }
    let items: Vec<StreamItem> = streams
        .read(route, 0, ReadOptions::new())
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let read: Vec<String> = items
        .iter()
        .filter_map(StreamItem::as_record)
        .map(|r| String::from_utf8(r.body().to_vec()).unwrap())
        .collect();
    let mut by_round: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for body in &read {
        let round: usize = body.split(':').next().unwrap().parse().unwrap();
        by_round.entry(round).or_default().push(body.clone());
    }
    for (round, (records, committed)) in batches.iter().enumerate() {
        let got = by_round.remove(&round);
        match committed {
            Some(true) => assert_eq!(got.as_ref(), Some(records), "seed {seed} round {round}"),
            Some(false) => assert_eq!(got, None, "seed {seed} round {round}"),
            None => assert!(
                got.is_none() || got.as_ref() == Some(records),
                "seed {seed} round {round}: half a batch {got:?} of {records:?}"
            ),
        }
    }
    assert!(
        by_round.is_empty(),
        "seed {seed}: foreign records {by_round:?}"
    );
    let outcomes = |o: Option<bool>| batches.iter().filter(|(_, c)| *c == o).count();
    eprintln!(
        "append: {} committed, {} rolled back, {} commits dropped",
        outcomes(Some(true)),
        outcomes(Some(false)),
        outcomes(None)
    );
    settled(&client, 0, 0).await;
    client.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_dropped_publish_is_delivered_whole_or_not_at_all() {
    let brokers = Brokers::start().await.unwrap();
    let publisher = connected(&brokers.anon_tcp).await;
    let subscriber = connected(&brokers.anon_tcp).await;
    let (mut rng, seed) = rng(8);
    let area = realm("cancel");
    let mut sub = subscriber
        .notice()
        .subscribe(&format!("notice://{area}/n/*"))
        .await
        .unwrap();
    let route = &format!("notice://{area}/n/r");
    let notice = publisher.notice();
    let mut confirmed = BTreeSet::new();
    for i in 0..ROUNDS {
        let body = format!("{i}-{}", "y".repeat(i * 31));
        if let Some(r) = race(&mut rng, notice.publish(route, body)).await {
            r.unwrap();
            confirmed.insert(i);
        }
    }
    notice.publish(route, "end").await.unwrap();
    let mut received = Vec::new();
    loop {
        let msg = next_item(&mut sub).await;
        let body = std::str::from_utf8(msg.payload()).unwrap().to_owned();
        if body == "end" {
            break;
        }
        let (tag, pad) = body.split_once('-').unwrap();
        let i: usize = tag.parse().unwrap();
        assert_eq!(pad, "y".repeat(i * 31), "seed {seed}: a torn payload");
        received.push(i);
    }
    let mut sorted = received.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, received, "seed {seed}: duplicated or reordered");
    let received: BTreeSet<_> = received.into_iter().collect();
    assert!(
        confirmed.is_subset(&received),
        "seed {seed}: confirmed {:?} missing",
        confirmed.difference(&received).collect::<Vec<_>>()
    );
    eprintln!(
        "publish: {} confirmed, {} delivered of {ROUNDS}",
        confirmed.len(),
        received.len()
    );
    settled(&publisher, 0, 0).await;
    drop(sub);
    settled(&subscriber, 0, 0).await;
    publisher.close().await;
    subscriber.close().await;
    brokers.shutdown().await;
}
