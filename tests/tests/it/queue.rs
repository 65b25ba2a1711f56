//! The Queue client against the embedded broker (or an external one, see
//! `fitz_testkit::fixture`), over TCP and WebSocket, directly and through the
//! disconnect proxy. Time-dependent behaviour (delays, lease expiry,
//! extension) runs against an embedded broker on a manual clock that the
//! test moves: no test sleeps to let a lease run out.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fitz::queue::{
    EnqueueOptions, QueueAvailability, QueueSubscription, Reservation, ReserveOptions,
    WorkerOptions, WorkerStats,
};
use fitz::{Client, ErrorKind, Event};
use fitz_broker::Broker;
use fitz_tests::{
    Brokers, BrokersExt, Timed, Transport, WAIT, connected, connected_with, realm, reconnected,
    wait_event,
};
use tokio::sync::{Semaphore, mpsc, watch};

/// Why the time-dependent tests need a [`Timed`] broker.
const TIMED: &str = "queue delays and lease expiry run on broker time";

fn opts(batch: u32) -> ReserveOptions {
    ReserveOptions {
        batch,
        ..ReserveOptions::default()
    }
}

fn lease(seconds: u64) -> ReserveOptions {
    ReserveOptions {
        lease: Duration::from_secs(seconds),
        ..ReserveOptions::default()
    }
}

async fn next_hint(sub: &mut QueueSubscription) -> QueueAvailability {
    fitz_tests::next_item(sub).await
}

async fn stats_until(
    stats: &mut watch::Receiver<WorkerStats>,
    pred: impl FnMut(&WorkerStats) -> bool,
) -> WorkerStats {
    *tokio::time::timeout(WAIT, stats.wait_for(pred))
        .await
        .expect("the worker never got there")
        .expect("the worker stopped")
}

/// Nothing left to reserve on `pattern` right now.
async fn assert_empty(client: &Client, pattern: &str) {
    let left = client.queue().reserve(pattern, opts(16)).await.unwrap();
    assert!(left.is_empty(), "{left:?}");
}

/// Until the broker has a RESERVE parked (embedded broker only).
async fn until_parked(broker: Option<&Broker>, n: usize) {
    let Some(broker) = broker else { return };
    fitz_tests::until("the RESERVE parks", || async {
        broker.engines().queue.stats().parked >= n
    })
    .await;
}

// ----- operations -----

#[tokio::test]
async fn every_operation_round_trips_over_tcp_and_websocket() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let url = brokers.anon_url(t);
        let client = connected(url).await;
        let q = client.queue();
        let route = format!("queue://{}/area/jobs", realm("ops"));
        let first = q.enqueue(&route, "one").await.unwrap();
        let second = q.enqueue(&route, &b"two"[..]).await.unwrap();
        assert_ne!(first, second);

        let got = q.reserve(&route, opts(10)).await.unwrap();
        let ids: Vec<_> = got.iter().map(Reservation::id).collect();
        assert_eq!(ids, [first, second], "{url}: FIFO, ids as enqueued");
        assert_eq!(got[0].route(), route);
        assert_eq!(&got[0].body()[..], b"one");
        assert_eq!(&got[1].message().body()[..], b"two");

        got[0].extend(Duration::from_secs(60)).await.unwrap();
        for r in got {
            r.complete().await.unwrap();
        }
        assert_empty(&client, &route).await;

        // Typed bodies.
        {
            #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
            struct Job {
                n: u32,
                tag: String,
            }
            let job = Job {
                n: 7,
                tag: "x".into(),
            };
            q.enqueue_json(&route, &job).await.unwrap();
            let r = q.reserve(&route, opts(1)).await.unwrap().pop().unwrap();
            assert_eq!(r.json::<Job>().unwrap(), job);
            let e = r.json::<Vec<u8>>().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Decode);
            r.complete().await.unwrap();
        }
        client.close().await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_wildcard_reserve_names_the_concrete_queues() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let url = brokers.anon_url(t);
        let client = connected(url).await;
        let q = client.queue();
        let realm = realm("wild");
        let a = format!("queue://{realm}/a/jobs");
        let b = format!("queue://{realm}/b/jobs");
        let other = format!("queue://{realm}/a/other");
        let id_a = q.enqueue(&a, "a").await.unwrap();
        let id_b = q.enqueue(&b, "b").await.unwrap();
        let id_other = q.enqueue(&other, "o").await.unwrap();

        let got = q
            .reserve(&format!("queue://{realm}/*/jobs"), opts(10))
            .await
            .unwrap();
        let seen: Vec<_> = got.iter().map(|r| (r.route().to_owned(), r.id())).collect();
        assert_eq!(seen, [(a.clone(), id_a), (b.clone(), id_b)], "{url}");
        let rest = q
            .reserve(&format!("queue://{realm}/**"), opts(10))
            .await
            .unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!((rest[0].route(), rest[0].id()), (other.as_str(), id_other));
        // EXTEND and COMPLETE go to each item's own queue.
        for r in got.into_iter().chain(rest) {
            r.extend(Duration::from_secs(5)).await.unwrap();
            r.complete().await.unwrap();
        }
        assert_empty(&client, &format!("queue://{realm}/**")).await;
        client.close().await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn batches_take_the_oldest_first_and_never_more_than_asked() {
    let brokers = Brokers::start().await.unwrap();
    let client = connected(&brokers.anon_tcp).await;
    let q = client.queue();
    let route = &format!("queue://{}/area/jobs", realm("batch"));
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(q.enqueue(route, format!("m{n}")).await.unwrap());
    }
    let first = q.reserve(route, opts(3)).await.unwrap();
    let second = q.reserve(route, opts(10)).await.unwrap();
    let got: Vec<_> = first.iter().chain(&second).map(Reservation::id).collect();
    assert_eq!((first.len(), second.len()), (3, 2));
    assert_eq!(got, ids);
    for r in first.into_iter().chain(second) {
        r.complete().await.unwrap();
    }
    client.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_long_poll_is_answered_by_the_next_enqueue() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let url = brokers.anon_url(t);
        let consumer = connected(url).await;
        let producer = connected(url).await;
        let route = format!("queue://{}/area/jobs", realm("poll"));
        let q = consumer.queue();
        let r2 = route.clone();
        let polling = tokio::spawn(async move {
            q.reserve(
                &r2,
                ReserveOptions {
                    wait: Duration::from_secs(30),
                    ..ReserveOptions::default()
                },
            )
            .await
        });
        until_parked(brokers.anon(), 1).await;
        let id = producer.queue().enqueue(&route, "wake").await.unwrap();
        let got = tokio::time::timeout(WAIT, polling)
            .await
            .expect("the long poll was not woken")
            .unwrap()
            .unwrap();
        assert_eq!(got.len(), 1, "{url}");
        assert_eq!(got[0].id(), id);
        got.into_iter().next().unwrap().complete().await.unwrap();
        consumer.close().await;
        producer.close().await;
    }
    brokers.shutdown().await;
}

// ----- errors -----

#[tokio::test]
async fn bad_input_fails_locally_or_with_the_brokers_code() {
    let brokers = Brokers::start().await.unwrap();
    let client = connected(&brokers.anon_tcp).await;
    let q = client.queue();
    let route = &format!("queue://{}/area/jobs", realm("errors"));

    // Checked locally: nothing is sent.
    let errors = route.split('/').nth(2).unwrap();
    for bad in [
        format!("queue://{errors}/area"),
        format!("queue://{errors}/*/jobs"),
        format!("kv://{errors}/area/jobs"),
    ] {
        let e = q.enqueue(&bad, "x").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}");
    }
    let e = q
        .reserve(&format!("queue://{errors}/area/*/*"), opts(1))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let e = q.reserve(route, opts(2000)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);

    // Accepted locally, refused by the broker: a lease beyond its limit.
    let e = q.reserve(route, lease(8 * 86_400)).await.unwrap_err();
    assert_eq!((e.kind(), e.code()), (ErrorKind::Broker, Some(4006)), "{e}");
    assert!(!e.maybe_applied() && !e.is_retryable());
    q.enqueue(route, "x").await.unwrap();
    let r = q.reserve(route, opts(1)).await.unwrap().pop().unwrap();
    let e = r.extend(Duration::from_secs(8 * 86_400)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Broker, "{e}");
    // The reservation is untouched by the refused EXTEND.
    r.complete().await.unwrap();
    client.close().await;

    // 4009: a token that may only read the queue domain.
    let reader = connected_with(
        &brokers.auth_tcp,
        brokers.scoped_token(&["queue://**#read"]),
    )
    .await;
    let e = reader.queue().enqueue(route, "x").await.unwrap_err();
    assert_eq!((e.kind(), e.code()), (ErrorKind::Broker, Some(4009)), "{e}");
    assert!(!e.is_retryable() && !e.maybe_applied());
    let e = reader.queue().reserve(route, opts(1)).await.unwrap_err();
    assert_eq!(e.code(), Some(4009), "{e}");
    // Watching is reading.
    let sub = reader
        .queue()
        .subscribe(&format!("queue://{errors}/**"))
        .await
        .unwrap();
    sub.unsubscribe().await.unwrap();
    reader.close().await;
    brokers.shutdown().await;
}

// ----- time: delays, expiry, extension (manual clock) -----

#[tokio::test]
async fn a_delayed_message_becomes_visible_when_its_delay_is_over() {
    let Some(broker) = Timed::start(TIMED).await else {
        return;
    };
    for t in Transport::BOTH {
        let url = broker.url(t);
        let client = connected(url).await;
        let q = client.queue();
        let route = format!("queue://{}/area/jobs", realm("delay"));
        let id = q
            .enqueue_with(
                &route,
                "later",
                EnqueueOptions::delay(Duration::from_secs(5)),
            )
            .await
            .unwrap();
        let mut watch = q.subscribe(&route).await.unwrap();
        assert_empty(&client, &route).await;
        broker.clock.advance(Duration::from_secs(4)).await;
        assert_empty(&client, &route).await;
        broker.clock.advance(Duration::from_secs(1)).await;
        // The queue gained ready work: the watch says so, RESERVE gets it.
        let hint = next_hint(&mut watch).await;
        assert_eq!(hint.route(), route);
        assert_eq!(hint.counters().unwrap().ready, 1);
        let r = q.reserve(&route, opts(1)).await.unwrap().pop().unwrap();
        assert_eq!(r.id(), id, "{url}");
        r.complete().await.unwrap();
        client.close().await;
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn an_expired_reservation_is_delivered_again_and_its_token_is_dead() {
    let Some(broker) = Timed::start(TIMED).await else {
        return;
    };
    let client = connected(&broker.tcp.clone()).await;
    let q = client.queue();
    let route = &format!("queue://{}/area/jobs", realm("expiry"));
    let id = q.enqueue(route, "x").await.unwrap();
    let old = q.reserve(route, lease(2)).await.unwrap().pop().unwrap();
    assert_empty(&client, route).await;

    broker.clock.advance(Duration::from_secs(3)).await;
    let again = q.reserve(route, lease(30)).await.unwrap().pop().unwrap();
    assert_eq!(again.id(), id, "the same message, delivered again");

    // The first reservation's token no longer counts (4001 "invalid token";
    // this broker answers EXTEND/COMPLETE in the uncoded envelope).
    let e = old.extend(Duration::from_secs(5)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Broker, "{e}");
    assert!(e.message().contains("invalid token"), "{e}");
    let failed = old.complete().await.unwrap_err();
    assert_eq!(failed.error().kind(), ErrorKind::Broker);
    assert!(
        matches!(failed.error().code(), None | Some(4001)),
        "{failed}"
    );
    assert!(!failed.error().maybe_applied());
    // A rejected COMPLETE hands the reservation back; the live one completes.
    assert_eq!(failed.into_reservation().id(), id);
    again.complete().await.unwrap();
    broker.clock.advance(Duration::from_secs(60)).await;
    assert_empty(&client, route).await;
    client.close().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn extending_keeps_a_reservation_past_its_first_lease() {
    let Some(broker) = Timed::start(TIMED).await else {
        return;
    };
    let client = connected(&broker.tcp.clone()).await;
    let other = connected(&broker.ws.clone()).await;
    let q = client.queue();
    let route = &format!("queue://{}/area/jobs", realm("extend"));
    q.enqueue(route, "x").await.unwrap();
    let r = q.reserve(route, lease(3)).await.unwrap().pop().unwrap();
    broker.clock.advance(Duration::from_secs(2)).await;
    r.extend(Duration::from_secs(3)).await.unwrap();
    broker.clock.advance(Duration::from_secs(2)).await; // 4 s: past the first lease
    assert_empty(&other, route).await;
    r.complete().await.unwrap();
    broker.clock.advance(Duration::from_secs(10)).await;
    assert_empty(&other, route).await;
    client.close().await;
    other.close().await;
    broker.shutdown().await;
}

// ----- reconnects -----

#[tokio::test]
async fn reservations_die_with_their_session_and_the_broker_releases_them() {
    let brokers = Brokers::start().await.unwrap();
    let (proxy, url) = brokers.anon_proxy(Transport::Tcp).await;
    let client = connected(&url).await;
    let other = connected(&brokers.anon_ws).await;
    let route = &format!("queue://{}/area/jobs", realm("stale"));
    let id = client.queue().enqueue(route, "x").await.unwrap();
    let r = client
        .queue()
        .reserve(route, lease(300))
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert!(r.is_current());

    let mut events = client.events();
    proxy.cut_all();
    wait_event(&mut events, reconnected).await;
    assert!(!r.is_current());
    let e = r.extend(Duration::from_secs(5)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Stale);
    let failed = r.complete().await.unwrap_err();
    assert_eq!(failed.error().kind(), ErrorKind::Stale);

    // The broker released it with the old session: it is up for grabs long
    // before its 300 s lease would have ended.
    let again = other
        .queue()
        .reserve(
            route,
            ReserveOptions {
                wait: Duration::from_secs(10),
                ..ReserveOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id(), id);
    client.close().await;
    other.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn the_availability_watch_reports_ready_queues_and_survives_a_cut() {
    let brokers = Brokers::start().await.unwrap();
    let (proxy, url) = brokers.anon_proxy(Transport::Tcp).await;
    let client = connected(&url).await;
    let producer = connected(&brokers.anon_tcp).await;
    let p = producer.queue();
    let avail = realm("avail");
    let (a, b, c) = (
        &format!("queue://{avail}/a/jobs"),
        &format!("queue://{avail}/b/jobs"),
        &format!("queue://{avail}/c/jobs"),
    );
    p.enqueue(a, "1").await.unwrap();

    // Right after subscribing: the queues that already have ready work.
    let mut watch = client
        .queue()
        .subscribe(&format!("queue://{avail}/**"))
        .await
        .unwrap();
    let first = next_hint(&mut watch).await;
    assert_eq!(first.route(), a);
    let counters = first.counters().expect("this broker sends counters");
    assert_eq!(
        (counters.ready, counters.delayed, counters.inflight),
        (1, 0, 0)
    );
    // Then as queues gain work.
    p.enqueue(b, "2").await.unwrap();
    assert_eq!(next_hint(&mut watch).await.route(), b);

    // Cut: the same handle is restored, and the broker reports the ready
    // queues again for the restored watch.
    let mut events = client.events();
    proxy.cut_all();
    wait_event(&mut events, |e| matches!(e, Event::Restored { count: 1 })).await;
    let mut again = HashSet::new();
    while again.len() < 2 {
        again.insert(next_hint(&mut watch).await.route().to_owned());
    }
    assert_eq!(again, HashSet::from([a.to_owned(), b.to_owned()]));
    p.enqueue(c, "3").await.unwrap();
    assert_eq!(next_hint(&mut watch).await.route(), c);
    watch.unsubscribe().await.unwrap();
    client.close().await;
    producer.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn requests_in_flight_during_a_cut_fail_with_maybe_applied() {
    let brokers = Brokers::start().await.unwrap();
    let (proxy, url) = brokers.anon_proxy(Transport::Tcp).await;
    let client = connected(&url).await;
    let route = format!("queue://{}/area/jobs", realm("cut"));

    // An ENQUEUE written but unanswered: it may have been stored.
    proxy.blackhole(true);
    let q = client.queue();
    let enqueue = tokio::spawn(async move { q.enqueue(&route, "x").await });
    tokio::time::timeout(WAIT, async {
        while client.debug_snapshot().await.unwrap().pending == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap();
    proxy.cut_all();
    proxy.blackhole(false);
    let e = enqueue.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    assert!(e.maybe_applied() && e.is_retryable());

    // A long poll parked at the broker when the connection goes.
    client.connect_when_ready(WAIT).await.unwrap();
    let q = client.queue();
    let polling = tokio::spawn(async move {
        q.reserve(
            &format!("queue://{}/other/jobs", realm("cut")),
            ReserveOptions {
                wait: Duration::from_secs(30),
                ..ReserveOptions::default()
            },
        )
        .await
    });
    until_parked(brokers.anon(), 1).await;
    proxy.cut_all();
    let e = polling.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    assert!(e.maybe_applied());
    client.close().await;
    brokers.shutdown().await;
}

// ----- the worker -----

/// Counts handlers running at once and the most seen.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Gauge {
    fn enter(&self) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn the_worker_completes_on_ok_within_its_concurrency() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let url = brokers.anon_url(t);
        let client = connected(url).await;
        let work = realm("work");
        let route = format!("queue://{work}/area/jobs");
        for n in 0..10 {
            client
                .queue()
                .enqueue(&route, format!("{n}"))
                .await
                .unwrap();
        }
        let gauge = Arc::new(Gauge::default());
        let gate = Arc::new(Semaphore::new(0));
        let (entered_tx, mut entered) = mpsc::unbounded_channel();
        let (g, s) = (gauge.clone(), gate.clone());
        let worker = client
            .queue()
            .worker(&format!("queue://{work}/*/jobs"), 3, move |_msg| {
                let (gauge, gate, entered) = (g.clone(), s.clone(), entered_tx.clone());
                async move {
                    gauge.enter();
                    let _ = entered.send(());
                    gate.acquire().await.unwrap().forget();
                    gauge.leave();
                    Ok::<_, String>(())
                }
            })
            .await
            .unwrap();
        let mut stats = worker.watch_stats();
        for _ in 0..3 {
            tokio::time::timeout(WAIT, entered.recv()).await.unwrap();
        }
        assert_eq!(gauge.max.load(Ordering::SeqCst), 3);
        assert_eq!(stats.borrow().running, 3);
        gate.add_permits(10);
        let done = stats_until(&mut stats, |s| s.completed == 10).await;
        assert_eq!((done.reserved, done.failed, done.abandoned), (10, 0, 0));
        assert_eq!(
            gauge.max.load(Ordering::SeqCst),
            3,
            "{url}: never more than 3"
        );
        assert_empty(&client, &route).await;
        let last = worker.shutdown().await;
        assert_eq!(last.running, 0);
        client.close().await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_failed_handler_gets_the_message_again_after_its_lease() {
    let Some(broker) = Timed::start(TIMED).await else {
        return;
    };
    let client = connected(&broker.tcp.clone()).await;
    let route = &format!("queue://{}/area/jobs", realm("retry"));
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let a = attempts.clone();
    let worker = client
        .queue()
        .worker_with(
            route,
            WorkerOptions {
                lease: Duration::from_secs(2),
                ..WorkerOptions::default()
            },
            move |msg| {
                let first = {
                    let mut seen = a.lock().unwrap();
                    seen.push(msg.id());
                    seen.len() == 1
                };
                async move { if first { Err("not yet") } else { Ok(()) } }
            },
        )
        .await
        .unwrap();
    let id = client.queue().enqueue(route, "x").await.unwrap();
    let mut stats = worker.watch_stats();
    stats_until(&mut stats, |s| s.failed == 1).await;
    // Left to expire: nobody gets it while its lease runs.
    assert_empty(&client, route).await;
    broker.clock.advance(Duration::from_secs(3)).await;
    let s = stats_until(&mut stats, |s| s.completed == 1).await;
    assert_eq!((s.failed, s.reserved), (1, 2));
    assert_eq!(*attempts.lock().unwrap(), [id, id]);
    broker.clock.advance(Duration::from_secs(60)).await;
    assert_empty(&client, route).await;
    worker.shutdown().await;
    client.close().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn the_worker_extends_the_lease_of_a_long_handler() {
    let Some(broker) = Timed::start(TIMED).await else {
        return;
    };
    let client = connected(&broker.tcp.clone()).await;
    let other = connected(&broker.tcp.clone()).await;
    let route = &format!("queue://{}/area/jobs", realm("long"));
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let worker = client
        .queue()
        .worker_with(
            route,
            WorkerOptions {
                lease: Duration::from_secs(3), // renewed every second
                ..WorkerOptions::default()
            },
            move |_msg| {
                let gate = g.clone();
                async move {
                    gate.acquire().await.unwrap().forget();
                    Ok::<_, String>(())
                }
            },
        )
        .await
        .unwrap();
    client.queue().enqueue(route, "x").await.unwrap();
    let mut stats = worker.watch_stats();
    stats_until(&mut stats, |s| s.running == 1).await;
    // Past the first lease twice over, renewed each time in between.
    for _ in 0..3 {
        broker.clock.advance(Duration::from_secs(2)).await;
        let before = stats.borrow().extended;
        stats_until(&mut stats, |s| s.extended > before).await;
    }
    assert_empty(&other, route).await;
    gate.add_permits(1);
    let s = stats_until(&mut stats, |s| s.completed == 1).await;
    assert_eq!(s.failed + s.abandoned, 0);
    broker.clock.advance(Duration::from_secs(60)).await;
    assert_empty(&other, route).await;
    worker.shutdown().await;
    client.close().await;
    other.close().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn the_worker_keeps_working_across_a_cut() {
    let brokers = Brokers::start().await.unwrap();
    let (proxy, url) = brokers.anon_proxy(Transport::Tcp).await;
    let client = connected(&url).await;
    let producer = connected(&brokers.anon_tcp).await;
    let route = &format!("queue://{}/area/jobs", realm("survive"));
    let gate = Arc::new(Semaphore::new(0));
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let g = gate.clone();
    let runs = Arc::new(AtomicUsize::new(0));
    let worker = client
        .queue()
        .worker(route, 2, move |msg| {
            let gate = g.clone();
            let seen = seen_tx.clone();
            let run = runs.fetch_add(1, Ordering::SeqCst);
            async move {
                let _ = seen.send(msg.id());
                // Only the very first run is slow.
                if run == 0 {
                    gate.acquire().await.unwrap().forget();
                }
                Ok::<_, String>(())
            }
        })
        .await
        .unwrap();
    let mut stats = worker.watch_stats();
    let id = producer.queue().enqueue(route, "slow").await.unwrap();
    assert_eq!(seen.recv().await, Some(id));

    // The session goes while the handler runs. Its reservation is abandoned;
    // the broker releases the message and the restored worker takes it again.
    let mut events = client.events();
    proxy.cut_all();
    wait_event(&mut events, |e| matches!(e, Event::Restored { .. })).await;
    assert_eq!(
        tokio::time::timeout(WAIT, seen.recv()).await.unwrap(),
        Some(id)
    );
    gate.add_permits(1);
    let s = stats_until(&mut stats, |s| s.completed == 1 && s.abandoned == 1).await;
    assert_eq!(s.failed, 0);

    // And it goes on serving new work.
    let next = producer.queue().enqueue(route, "after").await.unwrap();
    assert_eq!(
        tokio::time::timeout(WAIT, seen.recv()).await.unwrap(),
        Some(next)
    );
    stats_until(&mut stats, |s| s.completed == 2).await;
    assert_empty(&producer, route).await;
    worker.shutdown().await;
    client.close().await;
    producer.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn shutdown_drains_running_handlers_and_hands_late_work_back() {
    let brokers = Brokers::start().await.unwrap();
    let client = connected(&brokers.anon_tcp).await;
    let other = connected(&brokers.anon_ws).await;
    let route = &format!("queue://{}/area/jobs", realm("drain"));
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let worker = client
        .queue()
        .worker(route, 2, move |_msg| {
            let gate = g.clone();
            async move {
                gate.acquire().await.unwrap().forget();
                Ok::<_, String>(())
            }
        })
        .await
        .unwrap();
    client.queue().enqueue(route, "x").await.unwrap();
    let mut stats = worker.watch_stats();
    stats_until(&mut stats, |s| s.running == 1).await;
    // The free slot's long poll is parked at the broker.
    until_parked(brokers.anon(), 1).await;

    let mut stopping = tokio::spawn(worker.shutdown());
    assert!(
        tokio::time::timeout(Duration::from_millis(50), &mut stopping)
            .await
            .is_err(),
        "shutdown must wait for the running handler"
    );
    gate.add_permits(1);
    let last = tokio::time::timeout(WAIT, stopping).await.unwrap().unwrap();
    assert_eq!((last.completed, last.running), (1, 0));

    // The abandoned long poll still takes the next message; the stopped
    // worker cuts its lease to one second instead of sitting on it.
    let id = other.queue().enqueue(route, "late").await.unwrap();
    let again = other
        .queue()
        .reserve(
            route,
            ReserveOptions {
                wait: Duration::from_secs(10),
                ..ReserveOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id(), id);
    client.close().await;
    other.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_typed_worker_gets_parsed_bodies() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
    struct Invoice {
        number: u64,
    }
    let brokers = Brokers::start().await.unwrap();
    let client = connected(&brokers.anon_ws).await;
    let route = &format!("queue://{}/area/invoices", realm("typed"));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = client
        .queue()
        .worker_json(route, 1, move |invoice: Invoice| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(invoice);
                Ok::<_, String>(())
            }
        })
        .await
        .unwrap();
    client
        .queue()
        .enqueue_json(route, &Invoice { number: 42 })
        .await
        .unwrap();
    assert_eq!(rx.recv().await, Some(Invoice { number: 42 }));
    // A body that is not an Invoice counts as a failed handler.
    client.queue().enqueue(route, "not json").await.unwrap();
    let mut stats = worker.watch_stats();
    let s = stats_until(&mut stats, |s| s.failed == 1).await;
    assert_eq!(s.completed, 1);
    worker.shutdown().await;
    client.close().await;
    brokers.shutdown().await;
}
