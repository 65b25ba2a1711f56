//! The Queue client against scripted peers over the in-memory transport,
//! under paused time: exact bytes (the protocol digest's vectors V32–V47),
//! reply shapes, retries, staleness, restore, and the worker's scheduling.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use fitz_protocol::queue::{ReserveOk, ReservedItem};
use fitz_protocol::types;
use fitz_testkit::peer::{Request, payloads};
use futures_util::StreamExt;
use tokio::sync::{Semaphore, mpsc};

use super::*;
use crate::test_support::Scripted;
use crate::{ErrorKind, State};

type Harness = Scripted;

async fn start() -> Harness {
    Scripted::start_with("memory://test", |b| {
        b.request_timeout(Duration::from_secs(5))
    })
    .await
}

/// A vector from the digest, without the TCP prefix and 1-byte-type record
/// header: the record payload.
fn vector(hex: &str) -> Vec<u8> {
    let bytes: Vec<u8> = hex
        .split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    bytes[7..].to_vec()
}

fn reserve_reply(items: &[(Option<&'static str>, u64, u64, &'static [u8])]) -> Vec<u8> {
    let ok = ReserveOk {
        items: items
            .iter()
            .map(|&(route, id, token, body)| ReservedItem {
                route: route.map(Str::from_static),
                message_id: id,
                lease_token: token,
                body: Bytes::from_static(body),
            })
            .collect(),
    };
    let mut b = BytesMut::new();
    b.put_u8(0);
    ok.encode_body(&mut b);
    b.to_vec()
}

fn uncoded(message: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_u8(1);
    b.put_u32(message.len() as u32);
    b.put_slice(message.as_bytes());
    b.to_vec()
}

const JOBS: &str = "queue://realm/area/jobs";

#[test]
fn handles_can_cross_tasks() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Queue>();
    send_sync::<Reservation>();
    send_sync::<QueueMessage>();
    send_sync::<CompleteError>();
    send_sync::<QueueWorker>();
    send::<QueueSubscription>();
}

/// Reserves one message (id 5, token 9) from `JOBS`.
async fn reserve_one(h: &mut Harness) -> Reservation {
    let q = h.client.queue();
    let t = tokio::spawn(async move { q.reserve(JOBS, ReserveOptions::default()).await });
    let r = h.expect(types::QUEUE_RESERVE).await;
    h.peer
        .reply(&r, &reserve_reply(&[(None, 5, 9, b"body")]))
        .await
        .unwrap();
    let mut got = t.await.unwrap().unwrap();
    assert_eq!(got.len(), 1);
    got.remove(0)
}

// ----- ENQUEUE -----

#[tokio::test(start_paused = true)]
async fn enqueue_speaks_the_official_bytes() {
    let mut h = start().await;
    let q = h.client.queue();
    let t = tokio::spawn(async move {
        q.enqueue_with(JOBS, "body", EnqueueOptions::delay(Duration::from_secs(2)))
            .await
    });
    let r = h.expect(types::QUEUE_ENQUEUE).await;
    assert!(r.correlation.is_some());
    assert_eq!(
        &r.payload[..],
        vector(
            "00 00 00 2f c8 00 2c 00 00 00 17 71 75 65 75 65 3a 2f 2f 72 65 61 6c 6d 2f 61 72 65 61 2f 6a 6f 62 73 00 00 00 04 62 6f 64 79 01 00 00 00 00 00 00 00 02"
        )
    );
    h.peer
        .reply(
            &r,
            &vector("00 00 00 0c c8 00 09 00 00 00 00 00 00 00 00 4d"),
        )
        .await
        .unwrap();
    let id = t.await.unwrap().unwrap();
    assert_eq!(id.to_string(), "77");

    // No delay and a zero delay both travel as "absent" (V33); a fraction of
    // a second rounds up.
    for (delay, tail) in [
        (Duration::ZERO, vec![0u8]),
        (Duration::from_millis(1500), vec![1, 0, 0, 0, 0, 0, 0, 0, 2]),
    ] {
        let q = h.client.queue();
        let t =
            tokio::spawn(
                async move { q.enqueue_with(JOBS, "body", EnqueueOptions { delay }).await },
            );
        let r = h.expect(types::QUEUE_ENQUEUE).await;
        assert!(r.payload.ends_with(&tail), "{delay:?}: {:?}", r.payload);
        h.peer.reply(&r, &[0]).await.unwrap();
        // A bare success carries no id.
        assert_eq!(t.await.unwrap().unwrap(), MessageId(0));
    }
}

#[tokio::test(start_paused = true)]
async fn enqueue_retries_only_a_coded_queue_full() {
    let mut h = start().await;
    let full = vector("00 00 00 10 c8 00 0d 01 00 00 0f a5 00 00 00 04 66 75 6c 6c");
    let retrying = h.client.queue().with_retry(crate::RetryPolicy::default());

    // Off by default: one 4005 is the caller's answer.
    let q = h.client.queue();
    let t = tokio::spawn(async move { q.enqueue(JOBS, "x").await });
    let r = h.expect(types::QUEUE_ENQUEUE).await;
    h.peer.reply(&r, &full).await.unwrap();
    assert_eq!(t.await.unwrap().unwrap_err().code(), Some(4005));
    assert!(h.silent_for(Duration::from_secs(1)).await);

    // Opted in: 4005, 4005, success: the same bytes three times, 100 ms then
    // 200 ms apart.
    let q = retrying.clone();
    let t = tokio::spawn(async move { q.enqueue(JOBS, "x").await });
    let first = h.expect(types::QUEUE_ENQUEUE).await;
    let started = tokio::time::Instant::now();
    h.peer.reply(&first, &full).await.unwrap();
    let second = h.expect(types::QUEUE_ENQUEUE).await;
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    assert_eq!(second.payload, first.payload);
    assert_ne!(second.correlation, first.correlation);
    h.peer.reply(&second, &full).await.unwrap();
    let third = h.expect(types::QUEUE_ENQUEUE).await;
    assert_eq!(started.elapsed(), Duration::from_millis(300));
    h.peer
        .reply(&third, &[0, 0, 0, 0, 0, 0, 0, 0, 1])
        .await
        .unwrap();
    assert_eq!(t.await.unwrap().unwrap(), MessageId(1));

    // Three times full: the third answer is the caller's.
    let q = retrying.clone();
    let t = tokio::spawn(async move { q.enqueue(JOBS, "x").await });
    for _ in 0..3 {
        let r = h.expect(types::QUEUE_ENQUEUE).await;
        h.peer.reply(&r, &full).await.unwrap();
    }
    let e = t.await.unwrap().unwrap_err();
    assert_eq!(e.code(), Some(4005));
    assert!(e.is_retryable() && !e.maybe_applied());
    assert!(h.silent_for(Duration::from_secs(1)).await);

    // Uncoded (ambiguous for ENQUEUE) and 4007 (outcome unknown): sent once.
    for (reply, kind, applied) in [
        (uncoded("full"), ErrorKind::Protocol, true),
        (payloads::error(4007, "disk"), ErrorKind::Broker, true),
        (payloads::error(4009, "no"), ErrorKind::Broker, false),
    ] {
        let q = retrying.clone();
        let t = tokio::spawn(async move { q.enqueue(JOBS, "x").await });
        let r = h.expect(types::QUEUE_ENQUEUE).await;
        h.peer.reply(&r, &reply).await.unwrap();
        let e = t.await.unwrap().unwrap_err();
        assert_eq!(e.kind(), kind, "{e}");
        assert_eq!(e.maybe_applied(), applied, "{e}");
        assert!(h.silent_for(Duration::from_secs(1)).await, "{e}: retried");
    }
}

#[tokio::test(start_paused = true)]
async fn an_opted_in_enqueue_is_never_resent_after_a_timeout_or_a_lost_connection() {
    let mut h = start().await;
    let q = h.client.queue().with_retry(crate::RetryPolicy {
        attempts: 5,
        ..crate::RetryPolicy::default()
    });

    // Written, then the connection drops: maybe stored, returned as it is.
    let q2 = q.clone();
    let t = tokio::spawn(async move { q2.enqueue(JOBS, "x").await });
    h.expect(types::QUEUE_ENQUEUE).await;
    h.reconnect().await;
    let e = t.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    assert!(e.maybe_applied(), "{e}");
    assert!(
        h.silent_for(Duration::from_secs(5)).await,
        "re-sent after a loss"
    );

    // Written, never answered: the timeout is the caller's answer.
    let t = tokio::spawn(async move { q.enqueue(JOBS, "x").await });
    h.expect(types::QUEUE_ENQUEUE).await;
    let e = t.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.maybe_applied(), "{e}");
    assert!(
        h.silent_for(Duration::from_secs(5)).await,
        "re-sent after a timeout"
    );
}

// ----- RESERVE -----

#[tokio::test(start_paused = true)]
async fn reserve_speaks_the_official_bytes() {
    let mut h = start().await;
    // V36: batch always present, no wait → absent.
    let q = h.client.queue();
    let t = tokio::spawn(async move { q.reserve(JOBS, ReserveOptions::default()).await });
    let r = h.expect(types::QUEUE_RESERVE).await;
    assert_eq!(
        &r.payload[..],
        vector(
            "00 00 00 2c ca 00 29 00 00 00 17 71 75 65 75 65 3a 2f 2f 72 65 61 6c 6d 2f 61 72 65 61 2f 6a 6f 62 73 00 00 00 00 00 00 00 1e 01 00 00 00 01 00"
        )
    );
    // V37: route-less items take the request's route.
    h.peer
        .reply(
            &r,
            &vector(
                "00 00 00 20 ca 00 1d 00 00 00 00 01 00 00 00 00 00 00 00 05 00 00 00 00 00 00 00 09 00 00 00 04 62 6f 64 79",
            ),
        )
        .await
        .unwrap();
    let got = t.await.unwrap().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].route(), JOBS);
    assert_eq!(got[0].id(), MessageId(5));
    assert_eq!(&got[0].body()[..], b"body");
    assert!(got[0].is_current());

    // V38: wildcard, batch 10, wait 5; V39: items carry their concrete route.
    let q = h.client.queue();
    let t = tokio::spawn(async move {
        q.reserve(
            "queue://realm/area/*",
            ReserveOptions {
                lease: Duration::from_secs(30),
                batch: 10,
                wait: Duration::from_secs(5),
            },
        )
        .await
    });
    let r = h.expect(types::QUEUE_RESERVE).await;
    assert_eq!(
        &r.payload[..],
        vector(
            "00 00 00 31 ca 00 2e 00 00 00 14 71 75 65 75 65 3a 2f 2f 72 65 61 6c 6d 2f 61 72 65 61 2f 2a 00 00 00 00 00 00 00 1e 01 00 00 00 0a 01 00 00 00 00 00 00 00 05"
        )
    );
    h.peer
        .reply(
            &r,
            &vector(
                "00 00 00 38 ca 00 35 00 00 00 00 01 00 00 00 17 71 75 65 75 65 3a 2f 2f 72 65 61 6c 6d 2f 61 72 65 61 2f 6a 6f 62 73 00 00 00 00 00 00 00 06 00 00 00 00 00 00 00 0a 00 00 00 01 78",
            ),
        )
        .await
        .unwrap();
    let got = t.await.unwrap().unwrap();
    assert_eq!(got[0].route(), JOBS);
    assert_eq!(got[0].id(), MessageId(6));
    assert_eq!(&got[0].body()[..], b"x");

    // A bare [0] is an empty batch.
    let q = h.client.queue();
    let t = tokio::spawn(async move { q.reserve(JOBS, ReserveOptions::default()).await });
    let r = h.expect(types::QUEUE_RESERVE).await;
    h.peer.reply(&r, &[0]).await.unwrap();
    assert!(t.await.unwrap().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn one_bad_route_fails_the_whole_wildcard_reply() {
    let mut h = start().await;
    for bad in [
        "queue://realm/area",
        "queue://realm/area/*",
        "kv://realm/area/jobs",
    ] {
        let q = h.client.queue();
        let t = tokio::spawn(async move {
            q.reserve(
                "queue://realm/**",
                ReserveOptions {
                    batch: 2,
                    ..ReserveOptions::default()
                },
            )
            .await
        });
        let r = h.expect(types::QUEUE_RESERVE).await;
        h.peer
            .reply(
                &r,
                &reserve_reply(&[(Some(JOBS), 1, 1, b"a"), (Some(bad), 2, 2, b"b")]),
            )
            .await
            .unwrap();
        let e = t.await.unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol, "{bad}: {e}");
        assert!(e.maybe_applied(), "the broker did reserve them");
    }
    // A concrete request decodes route-less items: a routed reply is malformed.
    let q = h.client.queue();
    let t = tokio::spawn(async move { q.reserve(JOBS, ReserveOptions::default()).await });
    let r = h.expect(types::QUEUE_RESERVE).await;
    h.peer
        .reply(&r, &reserve_reply(&[(Some(JOBS), 1, 1, b"a")]))
        .await
        .unwrap();
    assert_eq!(t.await.unwrap().unwrap_err().kind(), ErrorKind::Protocol);
}

#[tokio::test(start_paused = true)]
async fn a_long_poll_gets_the_wait_on_top_of_the_request_timeout() {
    let mut h = start().await; // request timeout 5 s
    let q = h.client.queue();
    let t = tokio::spawn(async move {
        q.reserve(
            JOBS,
            ReserveOptions {
                wait: Duration::from_secs(30),
                ..ReserveOptions::default()
            },
        )
        .await
    });
    let r = h.expect(types::QUEUE_RESERVE).await;
    tokio::time::sleep(Duration::from_secs(34)).await;
    assert!(!t.is_finished());
    h.peer.reply(&r, &reserve_reply(&[])).await.unwrap();
    assert!(t.await.unwrap().unwrap().is_empty());

    let q = h.client.queue();
    let t = tokio::spawn(async move {
        q.reserve(
            JOBS,
            ReserveOptions {
                wait: Duration::from_secs(1),
                ..ReserveOptions::default()
            },
        )
        .await
    });
    let _ignored = h.expect(types::QUEUE_RESERVE).await;
    let e = t.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(e.maybe_applied());
}

// ----- EXTEND / COMPLETE -----

#[tokio::test(start_paused = true)]
async fn extend_and_complete_speak_the_official_bytes() {
    let mut h = start().await;
    let res = reserve_one(&mut h).await;
    let res = Arc::new(res);
    let r2 = res.clone();
    let t = tokio::spawn(async move { r2.extend(Duration::from_secs(60)).await });
    let r = h.expect(types::QUEUE_EXTEND).await;
    assert_eq!(
        &r.payload[..],
        vector(
            "00 00 00 36 cb 00 33 00 00 00 17 71 75 65 75 65 3a 2f 2f 72 65 61 6c 6d 2f 61 72 65 61 2f 6a 6f 62 73 00 00 00 00 00 00 00 05 00 00 00 00 00 00 00 09 00 00 00 00 00 00 00 3c"
        )
    );
    h.peer.reply(&r, &[0]).await.unwrap();
    t.await.unwrap().unwrap();

    let res = Arc::try_unwrap(res).unwrap();
    let t = tokio::spawn(async move { res.complete().await });
    let r = h.expect(types::QUEUE_COMPLETE).await;
    assert_eq!(
        &r.payload[..],
        vector(
            "00 00 00 2e cc 00 2b 00 00 00 17 71 75 65 75 65 3a 2f 2f 72 65 61 6c 6d 2f 61 72 65 61 2f 6a 6f 62 73 00 00 00 00 00 00 00 05 00 00 00 00 00 00 00 09"
        )
    );
    h.peer.reply(&r, &[0]).await.unwrap();
    t.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_rejected_complete_hands_the_reservation_back() {
    let mut h = start().await;
    let res = reserve_one(&mut h).await;

    // V42 (uncoded) and V43 (coded) invalid token; 4005 busy; trailing bytes.
    let cases: [(Vec<u8>, ErrorKind, Option<u32>); 4] = [
        (
            vector("00 00 00 15 cc 00 12 01 00 00 00 0d 69 6e 76 61 6c 69 64 20 74 6f 6b 65 6e"),
            ErrorKind::Broker,
            None,
        ),
        (
            vector(
                "00 00 00 19 cc 00 16 01 00 00 0f a1 00 00 00 0d 69 6e 76 61 6c 69 64 20 74 6f 6b 65 6e",
            ),
            ErrorKind::Broker,
            Some(4001),
        ),
        (payloads::error(4005, "busy"), ErrorKind::Broker, Some(4005)),
        (vec![0, 0], ErrorKind::Protocol, None),
    ];
    let mut res = res;
    for (reply, kind, code) in cases {
        let t = tokio::spawn(async move { res.complete().await });
        let r = h.expect(types::QUEUE_COMPLETE).await;
        h.peer.reply(&r, &reply).await.unwrap();
        let failed = t.await.unwrap().unwrap_err();
        assert_eq!(failed.error().kind(), kind, "{failed}");
        assert_eq!(failed.error().code(), code, "{failed}");
        res = failed.into_reservation();
        assert_eq!(res.id(), MessageId(5));
    }
    // Still usable: the next try goes out with the same token.
    let t = tokio::spawn(async move { res.complete().await });
    let r = h.expect(types::QUEUE_COMPLETE).await;
    assert!(r.payload.ends_with(&[0, 0, 0, 0, 0, 0, 0, 9]));
    h.peer.reply(&r, &[0]).await.unwrap();
    t.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn reservations_of_a_lost_session_are_stale() {
    let mut h = start().await;
    let res = reserve_one(&mut h).await;
    h.reconnect().await;
    let mut state = h.client.watch_state();
    state
        .wait_for(|s| *s == State::Authenticated)
        .await
        .unwrap();
    assert!(!res.is_current());
    let e = res.extend(Duration::from_secs(5)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Stale);
    let failed = res.complete().await.unwrap_err();
    assert_eq!(failed.error().kind(), ErrorKind::Stale);
    let e: Error = failed.into();
    assert!(!e.maybe_applied());
    assert!(h.silent_for(Duration::from_secs(1)).await, "nothing sent");
}

// ----- local validation -----

#[tokio::test(start_paused = true)]
async fn invalid_input_never_leaves_the_client() {
    let mut h = start().await;
    let q = h.client.queue();
    for bad in [
        "queue://realm/area",
        "queue://realm/area/jobs/extra",
        "queue://realm/area/*",
        "queue://realm/area/jo*",
        "kv://realm/area/jobs",
        "queue://realm//jobs",
    ] {
        let e = q.enqueue(bad, "x").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}");
    }
    let e = q.enqueue(JOBS, vec![0u8; 70_000]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    let ok = ReserveOptions::default();
    for (pattern, options) in [
        ("queue://realm/area", ok),
        ("queue://realm/*/*/*", ok),
        ("queue://realm/**/**", ok),
        ("queue://realm/a*/jobs", ok),
        ("notice://realm/area/jobs", ok),
        (JOBS, ReserveOptions { batch: 0, ..ok }),
        (JOBS, ReserveOptions { batch: 1025, ..ok }),
        (
            JOBS,
            ReserveOptions {
                lease: Duration::ZERO,
                ..ok
            },
        ),
        (
            JOBS,
            ReserveOptions {
                wait: Duration::from_millis(30_001),
                ..ok
            },
        ),
    ] {
        let e = q.reserve(pattern, options).await.unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::InvalidArgument,
            "{pattern} {options:?}"
        );
    }
    for bad in ["queue://realm", "queue://a/b/c/d", "rpc://a/b/c"] {
        let e = q.subscribe(bad).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}");
    }
    let e = q
        .worker("queue://realm/*", 1, |_m| async { Ok::<_, Error>(()) })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    for options in [
        WorkerOptions {
            concurrency: 0,
            ..WorkerOptions::default()
        },
        WorkerOptions {
            poll_wait: Duration::ZERO,
            ..WorkerOptions::default()
        },
        WorkerOptions {
            poll_wait: Duration::from_secs(31),
            ..WorkerOptions::default()
        },
    ] {
        let e = q
            .worker_with(JOBS, options, |_m| async { Ok::<_, Error>(()) })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{options:?}");
    }
    // A lease rounds up: 1.2 s is 2 s on the wire; wildcard forms pass.
    let t = tokio::spawn(async move {
        q.reserve(
            "queue://*/**",
            ReserveOptions {
                lease: Duration::from_millis(1200),
                ..ReserveOptions::default()
            },
        )
        .await
    });
    let r = h.expect(types::QUEUE_RESERVE).await;
    assert_eq!(&r.payload[16..24], &2u64.to_be_bytes());
    h.peer.reply(&r, &[0]).await.unwrap();
    t.await.unwrap().unwrap();
}

// ----- availability -----

fn notify_bare_counters(sub_id: u64, route: &str, c: [u64; 3]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_u64(sub_id);
    b.put_u32(route.len() as u32);
    b.put_slice(route.as_bytes());
    for n in c {
        b.put_u64(n);
    }
    b.to_vec()
}

async fn next(sub: &mut QueueSubscription) -> QueueAvailability {
    tokio::time::timeout(Duration::from_secs(60), sub.next())
        .await
        .expect("no notification")
        .expect("stream ended")
        .expect("stream error")
}

#[tokio::test(start_paused = true)]
async fn availability_reads_counters_and_survives_a_reconnect() {
    let mut h = start().await;
    let q = h.client.queue();
    let t = tokio::spawn(async move { q.subscribe("queue://realm/**").await });
    let r = h.expect(types::QUEUE_SUBSCRIBE).await;
    let v44 =
        vector("00 00 00 17 cf 00 14 00 00 00 10 71 75 65 75 65 3a 2f 2f 72 65 61 6c 6d 2f 2a 2a");
    assert_eq!(&r.payload[..], v44);
    h.peer
        .reply(
            &r,
            &vector("00 00 00 0d cf 00 0a 00 01 00 00 00 00 00 00 00 15"),
        )
        .await
        .unwrap();
    let mut sub = t.await.unwrap().unwrap();
    assert_eq!(sub.pattern(), "queue://realm/**");

    // V46: counters wrapped as bytes.
    h.peer
        .send_record(
            types::QUEUE_NOTIFY,
            &vector(
                "00 00 00 42 d1 00 3f 00 00 00 00 00 00 00 15 00 00 00 17 71 75 65 75 65 3a 2f 2f 72 65 61 6c 6d 2f 61 72 65 61 2f 6a 6f 62 73 00 00 00 18 00 00 00 00 00 00 00 03 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01",
            ),
        )
        .await
        .unwrap();
    let a = next(&mut sub).await;
    assert_eq!(a.route(), JOBS);
    assert_eq!(
        a.counters(),
        Some(QueueCounters {
            ready: 3,
            delayed: 0,
            inflight: 1
        })
    );
    // The contract's bare counters.
    h.peer
        .send_record(
            types::QUEUE_NOTIFY,
            &notify_bare_counters(21, JOBS, [7, 2, 0]),
        )
        .await
        .unwrap();
    let a = next(&mut sub).await;
    assert_eq!(a.counters().map(|c| (c.ready, c.delayed)), Some((7, 2)));
    // An opaque payload: a hint without counters.
    h.peer
        .send_record(types::QUEUE_NOTIFY, &payloads::notify(21, JOBS, b"hi"))
        .await
        .unwrap();
    assert_eq!(next(&mut sub).await.counters(), None);

    // Restored with the same record; the new id feeds the same stream.
    h.reconnect().await;
    let restore = h.expect(types::QUEUE_SUBSCRIBE).await;
    assert_eq!(&restore.payload[..], v44);
    h.peer
        .reply(&restore, &payloads::subscribed(22))
        .await
        .unwrap();
    h.peer
        .send_record(
            types::QUEUE_NOTIFY,
            &notify_bare_counters(22, JOBS, [1, 0, 0]),
        )
        .await
        .unwrap();
    assert_eq!(next(&mut sub).await.counters().unwrap().ready, 1);

    // V47: unsubscribe by the original pattern.
    let t = tokio::spawn(async move { sub.unsubscribe().await });
    let r = h.expect(types::QUEUE_UNSUBSCRIBE).await;
    assert_eq!(&r.payload[..], &v44[..]);
    h.peer.reply(&r, &[0]).await.unwrap();
    t.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn subscribe_errors_are_typed() {
    let mut h = start().await;
    for (reply, code) in [
        (payloads::error(4010, "bad pattern"), Some(4010)),
        (uncoded("limit"), None),
    ] {
        let q = h.client.queue();
        let t = tokio::spawn(async move { q.subscribe("queue://realm/*/jobs").await });
        let r = h.expect(types::QUEUE_SUBSCRIBE).await;
        h.peer.reply(&r, &reply).await.unwrap();
        let e = t.await.unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Broker);
        assert_eq!(e.code(), code);
    }
}

// ----- worker scheduling -----

/// Starts a worker whose handler reports each message on `seen` and then
/// waits for a permit of `gate`.
async fn start_worker(
    h: &mut Harness,
    concurrency: usize,
    gate: Arc<Semaphore>,
) -> (QueueWorker, mpsc::UnboundedReceiver<QueueMessage>, Request) {
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let q = h.client.queue();
    let t = tokio::spawn(async move {
        q.worker_with(
            "queue://realm/*/jobs",
            WorkerOptions {
                concurrency,
                lease: Duration::from_secs(3),
                poll_wait: Duration::from_secs(10),
            },
            move |msg| {
                let seen = seen_tx.clone();
                let gate = gate.clone();
                async move {
                    seen.send(msg.clone()).unwrap();
                    // Each permit lets exactly one handler finish.
                    gate.acquire().await.unwrap().forget();
                    if msg.body().as_ref() == b"fail" {
                        Err("refused")
                    } else {
                        Ok(())
                    }
                }
            },
        )
        .await
    });
    let sub = h.expect(types::QUEUE_SUBSCRIBE).await;
    h.peer.reply(&sub, &payloads::subscribed(3)).await.unwrap();
    let worker = t.await.unwrap().unwrap();
    let reserve = h.expect(types::QUEUE_RESERVE).await;
    (worker, seen, reserve)
}

/// `(lease, batch, wait)` of a RESERVE payload for `queue://realm/*/jobs`.
fn reserve_params(r: &Request) -> (u64, u32, Option<u64>) {
    let mut rd = fitz_protocol::Reader::new(r.payload.clone());
    let msg = <queue::Reserve as fitz_protocol::Message>::decode_payload(&mut rd).unwrap();
    (msg.lease_seconds, msg.batch_size.unwrap(), msg.wait_seconds)
}

const ROUTED: &str = "queue://realm/a/jobs";

#[tokio::test(start_paused = true)]
async fn the_worker_reserves_only_for_free_slots_and_completes_on_ok() {
    let mut h = start().await;
    let gate = Arc::new(Semaphore::new(0));
    let (worker, mut seen, r) = start_worker(&mut h, 2, gate.clone()).await;
    assert_eq!(reserve_params(&r), (3, 2, Some(10)));
    h.peer
        .reply(
            &r,
            &reserve_reply(&[(Some(ROUTED), 1, 11, b"a"), (Some(ROUTED), 2, 12, b"b")]),
        )
        .await
        .unwrap();
    assert_eq!(seen.recv().await.unwrap().id(), MessageId(1));
    assert_eq!(seen.recv().await.unwrap().id(), MessageId(2));
    assert_eq!(worker.stats().running, 2);

    // Both slots busy: no RESERVE; the leases are renewed every second.
    let mut renewals = 0;
    for _ in 0..4 {
        let r = h.expect(types::QUEUE_EXTEND).await;
        h.peer.reply(&r, &[0]).await.unwrap();
        renewals += 1;
    }
    assert_eq!(renewals, 4);

    // One handler finishes: COMPLETE with its token, then a RESERVE for one.
    gate.add_permits(1);
    let mut completed = None;
    let mut next_reserve = None;
    while completed.is_none() || next_reserve.is_none() {
        let r = h.peer.read_request().await.unwrap();
        match r.ty {
            types::QUEUE_COMPLETE => {
                // Either handler may have taken the permit.
                let token =
                    u64::from_be_bytes(r.payload[r.payload.len() - 8..].try_into().unwrap());
                assert!(token == 11 || token == 12, "{token}");
                h.peer.reply(&r, &[0]).await.unwrap();
                completed = Some(r);
            }
            types::QUEUE_RESERVE => next_reserve = Some(r),
            types::QUEUE_EXTEND => h.peer.reply(&r, &[0]).await.unwrap(),
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(reserve_params(next_reserve.as_ref().unwrap()).1, 1);
    let mut stats = worker.watch_stats();
    let s = *stats
        .wait_for(|s| s.completed == 1 && s.running == 1)
        .await
        .unwrap();
    assert_eq!(s.reserved, 2);

    // Shutdown waits for the last handler, not for the parked RESERVE.
    let stopping = tokio::spawn(worker.shutdown());
    tokio::task::yield_now().await;
    assert!(!stopping.is_finished());
    gate.add_permits(1);
    loop {
        let r = h.peer.read_request().await.unwrap();
        match r.ty {
            types::QUEUE_EXTEND => h.peer.reply(&r, &[0]).await.unwrap(),
            types::QUEUE_COMPLETE => {
                h.peer.reply(&r, &[0]).await.unwrap();
                break;
            }
            other => panic!("unexpected {other}"),
        }
    }
    let unsubscribe = h.expect(types::QUEUE_UNSUBSCRIBE).await;
    h.peer.reply(&unsubscribe, &[0]).await.unwrap();
    let final_stats = stopping.await.unwrap();
    assert_eq!((final_stats.completed, final_stats.running), (2, 0));

    // The parked RESERVE still brings a message: its lease is cut to 1 s.
    h.peer
        .reply(
            next_reserve.as_ref().unwrap(),
            &reserve_reply(&[(Some(ROUTED), 3, 13, b"late")]),
        )
        .await
        .unwrap();
    let give_back = h.expect(types::QUEUE_EXTEND).await;
    let tail = &give_back.payload[give_back.payload.len() - 16..];
    assert_eq!(tail, [13u64.to_be_bytes(), 1u64.to_be_bytes()].concat());
}

#[tokio::test(start_paused = true)]
async fn a_failed_handler_leaves_the_message_and_an_empty_reply_waits_for_a_hint() {
    let mut h = start().await;
    let gate = Arc::new(Semaphore::new(100));
    let (worker, mut seen, r) = start_worker(&mut h, 1, gate).await;
    h.peer
        .reply(&r, &reserve_reply(&[(Some(ROUTED), 1, 11, b"fail")]))
        .await
        .unwrap();
    seen.recv().await.unwrap();
    // No COMPLETE for a failed handler; the next request is a RESERVE.
    let r = h.expect(types::QUEUE_RESERVE).await;
    let mut stats = worker.watch_stats();
    stats.wait_for(|s| s.failed == 1).await.unwrap();

    // An empty answer long before the wait ran out (a broker that does not
    // hold RESERVEs open): no new RESERVE until a hint …
    h.peer.reply(&r, &reserve_reply(&[])).await.unwrap();
    assert!(h.silent_for(Duration::from_secs(5)).await);
    h.peer
        .send_record(
            types::QUEUE_NOTIFY,
            &notify_bare_counters(3, ROUTED, [1, 0, 0]),
        )
        .await
        .unwrap();
    let r = h.expect(types::QUEUE_RESERVE).await;
    // … or until a poll wait after the last one was sent.
    let sent = tokio::time::Instant::now();
    h.peer.reply(&r, &reserve_reply(&[])).await.unwrap();
    let _r = h.expect(types::QUEUE_RESERVE).await;
    assert_eq!(sent.elapsed(), Duration::from_secs(10));
    drop(worker);
}

#[tokio::test(start_paused = true)]
async fn the_worker_carries_on_after_a_reconnect() {
    let mut h = start().await;
    let gate = Arc::new(Semaphore::new(0));
    let (worker, mut seen, r) = start_worker(&mut h, 1, gate.clone()).await;
    h.peer
        .reply(&r, &reserve_reply(&[(Some(ROUTED), 1, 11, b"a")]))
        .await
        .unwrap();
    seen.recv().await.unwrap();

    // The session drops while the handler runs: the watch is restored, the
    // old reservation is abandoned (no EXTEND or COMPLETE for it), and the
    // worker reserves again once the handler finished.
    h.reconnect().await;
    let restore = h.expect(types::QUEUE_SUBSCRIBE).await;
    h.peer
        .reply(&restore, &payloads::subscribed(4))
        .await
        .unwrap();
    gate.add_permits(1);
    let r = h.expect(types::QUEUE_RESERVE).await;
    let mut stats = worker.watch_stats();
    let s = *stats.wait_for(|s| s.abandoned == 1).await.unwrap();
    assert_eq!(s.completed, 0);
    h.peer
        .reply(&r, &reserve_reply(&[(Some(ROUTED), 1, 21, b"a")]))
        .await
        .unwrap();
    seen.recv().await.unwrap();
    gate.add_permits(1);
    let c = h.expect(types::QUEUE_COMPLETE).await;
    assert!(c.payload.ends_with(&21u64.to_be_bytes()));
    h.peer.reply(&c, &[0]).await.unwrap();
    stats.wait_for(|s| s.completed == 1).await.unwrap();
    drop(worker);
}

#[tokio::test(start_paused = true)]
async fn a_rejected_reserve_backs_off_and_a_closed_client_stops_the_worker() {
    let mut h = start().await;
    let gate = Arc::new(Semaphore::new(100));
    let (worker, _seen, r) = start_worker(&mut h, 1, gate).await;
    h.peer
        .reply(&r, &payloads::error(4009, "unauthorized"))
        .await
        .unwrap();
    let before = tokio::time::Instant::now();
    let r = h.expect(types::QUEUE_RESERVE).await;
    assert_eq!(before.elapsed(), Duration::from_millis(100));
    h.peer
        .reply(&r, &payloads::error(4009, "unauthorized"))
        .await
        .unwrap();
    let before = tokio::time::Instant::now();
    let _r = h.expect(types::QUEUE_RESERVE).await;
    assert_eq!(before.elapsed(), Duration::from_millis(200));
    h.client.close().await;
    let mut stats = worker.watch_stats();
    // The loop ends by itself (its end drops the counters' sender); the
    // handle only collects the final counters.
    while stats.changed().await.is_ok() {}
    assert_eq!(worker.shutdown().await.reserved, 0);
}
