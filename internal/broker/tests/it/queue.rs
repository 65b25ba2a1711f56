//! Queue through the wire: enqueue/reserve/extend/complete, delays,
//! visibility expiry on the manual clock, long polls, wildcard reserve,
//! byte budgets and dead letters, disconnect cleanup, availability watches,
//! errors and permissions.

use std::time::{Duration, SystemTime};

use crate::support::{Kind, RawClient, code};
use bytes::Bytes;
use fitz_broker::engines::queue::{MessageState, REASON_TOO_LARGE};
use fitz_broker::{AuthConfig, Broker, Clock};
use fitz_protocol::queue::{
    self, Counters, EnqueueOk, Notify, ReserveOk, ReservedItem, SubscribeReply,
};
use fitz_protocol::{Envelope, Message, WireError, codes, decode_reply_with, types};

both_transports!(
    enqueue_reserve_complete,
    delayed_messages_stay_invisible_until_due,
    batch_and_lease_bounds,
    visibility_expiry_counts_attempts,
    extend_moves_the_expiry,
    wrong_token_leaves_state_unchanged,
    long_poll_answered_by_a_later_enqueue,
    long_poll_times_out_empty,
    reservations_handed_to_parked_reserves_expire_too,
    parked_reserves_are_capped_per_route,
    wildcard_reserve_spans_queues_in_order,
    replies_respect_the_record_budget,
    oversize_messages_are_dead_lettered,
    reservations_and_parked_reserves_end_with_the_session,
    availability_notifications,
    watch_registration_limits,
    invalid_routes_and_patterns,
    unauthorized_requests_keep_the_session,
    route_families_are_isolated,
);

const Q: &str = "queue://realm/area/jobs";

fn manual() -> Clock {
    Clock::manual(SystemTime::now())
}

async fn broker_with(clock: &Clock) -> Broker {
    Broker::builder()
        .clock(clock.clone())
        .start()
        .await
        .unwrap()
}

fn enq(route: &str, body: &[u8], delay: Option<u64>) -> queue::Enqueue {
    queue::Enqueue {
        route: route.into(),
        body: Bytes::copy_from_slice(body),
        delay_seconds: delay,
    }
}

fn res(route: &str, lease: u64, batch: Option<u32>, wait: Option<u64>) -> queue::Reserve {
    queue::Reserve {
        route: route.into(),
        lease_seconds: lease,
        batch_size: batch,
        wait_seconds: wait,
    }
}

fn complete(route: &str, item: &ReservedItem) -> queue::Complete {
    queue::Complete {
        route: route.into(),
        message_id: item.message_id,
        lease_token: item.lease_token,
    }
}

fn extend(route: &str, item: &ReservedItem, secs: u64) -> queue::Extend {
    queue::Extend {
        route: route.into(),
        message_id: item.message_id,
        lease_token: item.lease_token,
        lease_seconds: secs,
    }
}

async fn enqueue(c: &mut RawClient, route: &str, body: &[u8]) -> u64 {
    c.ok::<_, EnqueueOk>(&enq(route, body, None))
        .await
        .message_id
}

fn items(payload: Bytes, wildcard: bool) -> Vec<ReservedItem> {
    match decode_reply_with(payload, |r| ReserveOk::decode_body(r, wildcard)).unwrap() {
        Ok(ok) => ok.items,
        Err(e) => panic!("RESERVE failed: {e:?}"),
    }
}

async fn reserve(c: &mut RawClient, r: &queue::Reserve) -> Vec<ReservedItem> {
    let wildcard = r.is_wildcard();
    items(c.call(r).await, wildcard)
}

fn bodies(items: &[ReservedItem]) -> Vec<&[u8]> {
    items.iter().map(|i| &i.body[..]).collect()
}

/// Waits until the broker handled everything sent before on this session
/// (requests of one session are handled in order).
async fn sync(c: &mut RawClient) {
    c.ok::<_, queue::UnsubscribeOk>(&queue::Unsubscribe::new("queue://sync/sync/sync"))
        .await;
}

async fn subscribe(c: &mut RawClient, pattern: &str) -> u64 {
    c.ok::<_, SubscribeReply>(&queue::Subscribe::new(pattern))
        .await
        .sub_id
}

async fn next_notify(c: &mut RawClient) -> Notify {
    let l = c.next_of_type(types::QUEUE_NOTIFY).await;
    assert_eq!(l.correlation, None, "notifications are never labelled");
    Notify::decode(l.record.payload).unwrap()
}

fn counters(ready: u64, delayed: u64, inflight: u64) -> Counters {
    Counters {
        ready,
        delayed,
        inflight,
    }
}

async fn enqueue_reserve_complete(kind: Kind) {
    let clock = manual();
    let broker = broker_with(&clock).await;
    let mut c = RawClient::anon(&broker, kind).await;
    let raw = c.call(&enq(Q, b"body", None)).await;
    assert_eq!((raw.len(), raw[0]), (9, 0), "[0][u64 message_id]");
    let first = u64::from_be_bytes(raw[1..].try_into().unwrap());
    let second = enqueue(&mut c, Q, b"second").await;
    assert!(second > first);
    // An exact RESERVE answers route-less items: [0][u32 n][id][token][body].
    let raw = c.call(&res(Q, 30, Some(1), None)).await;
    assert_eq!(&raw[..5], &[0, 0, 0, 0, 1]);
    assert_eq!(raw.len(), 5 + 8 + 8 + 4 + 4);
    let got = items(raw, false);
    assert_eq!(
        (got[0].route.as_ref(), got[0].message_id, &got[0].body[..]),
        (None, first, &b"body"[..])
    );
    assert_eq!(broker.engines().queue.counters(1, Q), counters(1, 0, 1));
    let ack = c.call(&complete(Q, &got[0])).await;
    assert_eq!(&ack[..], &[0], "COMPLETE answers exactly [0]");
    // A completed message never comes back, even after its lease would end.
    clock.advance(Duration::from_secs(31));
    let next = reserve(&mut c, &res(Q, 30, Some(10), None)).await;
    assert_eq!(bodies(&next), [&b"second"[..]]);
    assert_ne!(next[0].lease_token, got[0].lease_token);
    c.ok::<_, queue::CompleteOk>(&complete(Q, &next[0])).await;
    assert!(reserve(&mut c, &res(Q, 30, None, None)).await.is_empty());
    // The empty reply is [0][u32 0].
    assert_eq!(&c.call(&res(Q, 30, None, None)).await[..], &[0, 0, 0, 0, 0]);
    assert_eq!(broker.engines().queue.stats().messages, 0);
    assert_eq!(broker.engines().queue.stats().queues, 0);
}

async fn delayed_messages_stay_invisible_until_due(kind: Kind) {
    let clock = manual();
    let broker = broker_with(&clock).await;
    let mut c = RawClient::anon(&broker, kind).await;
    c.ok::<_, EnqueueOk>(&enq(Q, b"later", Some(10))).await;
    c.ok::<_, EnqueueOk>(&enq(Q, b"now", Some(0))).await;
    assert_eq!(
        bodies(&reserve(&mut c, &res(Q, 30, Some(5), None)).await),
        [&b"now"[..]]
    );
    assert_eq!(broker.engines().queue.counters(1, Q), counters(0, 1, 1));
    clock.advance(Duration::from_secs(9));
    assert!(reserve(&mut c, &res(Q, 30, Some(5), None)).await.is_empty());
    clock.advance(Duration::from_secs(1));
    assert_eq!(broker.engines().queue.counters(1, Q), counters(1, 0, 1));
    assert_eq!(
        bodies(&reserve(&mut c, &res(Q, 30, Some(5), None)).await),
        [&b"later"[..]]
    );
    let e = c.fails(&enq(Q, b"x", Some(u64::MAX))).await;
    assert_eq!(code(&e), codes::QUEUE_BAD_REQUEST);
}

async fn batch_and_lease_bounds(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    for i in 0..5u8 {
        enqueue(&mut c, Q, &[i]).await;
    }
    for bad in [
        res(Q, 30, Some(0), None),
        res(Q, 30, Some(1025), None),
        res(Q, 0, Some(1), None),
        res(Q, u64::MAX, Some(1), None),
    ] {
        let e = c.fails(&bad).await;
        assert_eq!(
            (e.envelope, code(&e)),
            (Envelope::Coded, codes::QUEUE_BAD_REQUEST),
            "{bad:?}"
        );
    }
    // No batch size means one; FIFO within and across replies.
    assert_eq!(
        bodies(&reserve(&mut c, &res(Q, 30, None, None)).await),
        [&[0u8][..]]
    );
    assert_eq!(
        bodies(&reserve(&mut c, &res(Q, 30, Some(3), None)).await),
        [&[1u8][..], &[2], &[3]]
    );
    assert_eq!(
        bodies(&reserve(&mut c, &res(Q, 30, Some(1024), None)).await),
        [&[4u8][..]]
    );
}

async fn visibility_expiry_counts_attempts(kind: Kind) {
    let clock = manual();
    let broker = broker_with(&clock).await;
    let mut c = RawClient::anon(&broker, kind).await;
    let mut other = RawClient::anon(&broker, kind).await;
    let id = enqueue(&mut c, Q, b"job").await;
    let first = reserve(&mut c, &res(Q, 30, None, None)).await;
    let info = broker.engines().queue.message(1, Q, id).unwrap();
    assert_eq!(info.attempts, 0);
    assert!(matches!(info.state, MessageState::Inflight(_)));
    // Invisible to everyone while reserved.
    clock.advance(Duration::from_secs(29));
    assert!(
        reserve(&mut other, &res(Q, 30, None, None))
            .await
            .is_empty()
    );
    clock.advance(Duration::from_secs(1));
    let info = broker.engines().queue.message(1, Q, id).unwrap();
    assert_eq!((info.state, info.attempts), (MessageState::Ready, 1));
    let second = reserve(&mut other, &res(Q, 30, None, None)).await;
    assert_eq!(second[0].message_id, id);
    assert_ne!(second[0].lease_token, first[0].lease_token);
    // The expired token is dead (the message is another session's now).
    let e = c.fails(&complete(Q, &first[0])).await;
    assert_eq!(
        (e.envelope, &*e.message),
        (Envelope::Uncoded, "message not found")
    );
    clock.advance(Duration::from_secs(30));
    assert_eq!(
        broker.engines().queue.message(1, Q, id).unwrap().attempts,
        2
    );
    let third = reserve(&mut c, &res(Q, 30, None, None)).await;
    c.ok::<_, queue::CompleteOk>(&complete(Q, &third[0])).await;
    assert!(broker.engines().queue.message(1, Q, id).is_none());
    clock.advance(Duration::from_secs(60));
    assert!(reserve(&mut c, &res(Q, 30, None, None)).await.is_empty());
}

async fn extend_moves_the_expiry(kind: Kind) {
    let clock = manual();
    let broker = broker_with(&clock).await;
    let mut c = RawClient::anon(&broker, kind).await;
    enqueue(&mut c, Q, b"job").await;
    let it = reserve(&mut c, &res(Q, 30, None, None)).await.remove(0);
    clock.advance(Duration::from_secs(20));
    let ack = c.call(&extend(Q, &it, 30)).await;
    assert_eq!(&ack[..], &[0], "EXTEND answers exactly [0]");
    // 30 s from the EXTEND, not from the RESERVE.
    clock.advance(Duration::from_secs(29));
    assert_eq!(broker.engines().queue.counters(1, Q), counters(0, 0, 1));
    clock.advance(Duration::from_secs(1));
    assert_eq!(broker.engines().queue.counters(1, Q), counters(1, 0, 0));
    let e = c.fails(&extend(Q, &it, 30)).await;
    assert_eq!(&*e.message, "invalid token");
    let it = reserve(&mut c, &res(Q, 30, None, None)).await.remove(0);
    for bad in [0, u64::MAX] {
        let e = c.fails(&extend(Q, &it, bad)).await;
        assert_eq!(e.envelope, Envelope::Uncoded);
    }
}

async fn wrong_token_leaves_state_unchanged(kind: Kind) {
    let clock = manual();
    let broker = broker_with(&clock).await;
    let mut c = RawClient::anon(&broker, kind).await;
    let mut other = RawClient::anon(&broker, kind).await;
    let id = enqueue(&mut c, Q, b"job").await;
    let it = reserve(&mut c, &res(Q, 30, None, None)).await.remove(0);
    let before = broker.engines().queue.message(1, Q, id).unwrap();
    let mut wrong = it.clone();
    wrong.lease_token = it.lease_token.wrapping_add(1);
    // The uncoded envelope of V42, byte for byte.
    let raw = c.call(&complete(Q, &wrong)).await;
    assert_eq!(&raw[..], b"\x01\x00\x00\x00\x0dinvalid token");
    let e = c.fails(&extend(Q, &wrong, 60)).await;
    assert_eq!(
        (e.envelope, &*e.message),
        (Envelope::Uncoded, "invalid token")
    );
    // Another session presenting the right token is refused too.
    let e = other.fails(&complete(Q, &it)).await;
    assert_eq!(&*e.message, "message not found");
    let mut unknown = it.clone();
    unknown.message_id = 9_999;
    assert_eq!(
        &*c.fails(&complete(Q, &unknown)).await.message,
        "message not found"
    );
    assert_eq!(
        &*c.fails(&complete("queue://realm/area/else", &it))
            .await
            .message,
        "message not found"
    );
    assert_eq!(broker.engines().queue.message(1, Q, id), Some(before));
    assert_eq!(broker.engines().queue.counters(1, Q), counters(0, 0, 1));
    // The right token still works.
    c.ok::<_, queue::ExtendOk>(&extend(Q, &it, 60)).await;
    c.ok::<_, queue::CompleteOk>(&complete(Q, &it)).await;
    assert_eq!(broker.engines().queue.counters(1, Q), counters(0, 0, 0));
}

async fn long_poll_answered_by_a_later_enqueue(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut consumer = RawClient::anon(&broker, kind).await;
    let mut producer = RawClient::anon(&broker, kind).await;
    consumer
        .send(Some(1041), &res(Q, 30, Some(5), Some(10)))
        .await;
    consumer
        .send(
            Some(1042),
            &res("queue://realm/*/other", 30, Some(5), Some(10)),
        )
        .await;
    sync(&mut consumer).await;
    assert_eq!(broker.engines().queue.stats().parked, 2);
    consumer.expect_quiet().await;
    enqueue(&mut producer, Q, b"wake").await;
    let got = items(consumer.reply_to(1041).await, false);
    assert_eq!(bodies(&got), [&b"wake"[..]]);
    enqueue(&mut producer, "queue://realm/x/other", b"routed").await;
    let got = items(consumer.reply_to(1042).await, true);
    assert_eq!(
        (got[0].route.as_deref(), &got[0].body[..]),
        (Some("queue://realm/x/other"), &b"routed"[..])
    );
    assert_eq!(broker.engines().queue.stats().parked, 0);
    // Uncorrelated parked RESERVEs are answered too (type order per session).
    consumer.send(None, &res(Q, 30, None, Some(10))).await;
    sync(&mut consumer).await;
    enqueue(&mut producer, Q, b"plain").await;
    let l = consumer.next_of_type(types::QUEUE_RESERVE).await;
    assert_eq!(l.correlation, None);
    assert_eq!(bodies(&items(l.record.payload, false)), [&b"plain"[..]]);
}

async fn long_poll_times_out_empty(kind: Kind) {
    let clock = manual();
    let broker = broker_with(&clock).await;
    let mut c = RawClient::anon(&broker, kind).await;
    c.send(Some(1007), &res(Q, 30, None, Some(5))).await;
    // A wait over 30 s is capped at 30.
    c.send(Some(1008), &res(Q, 30, None, Some(3_600))).await;
    sync(&mut c).await;
    clock.advance(Duration::from_secs(4));
    c.expect_quiet().await;
    clock.advance(Duration::from_secs(1));
    assert_eq!(&c.reply_to(1007).await[..], &[0, 0, 0, 0, 0]);
    clock.advance(Duration::from_secs(24));
    c.expect_quiet().await;
    clock.advance(Duration::from_secs(1));
    assert_eq!(&c.reply_to(1008).await[..], &[0, 0, 0, 0, 0]);
    assert_eq!(broker.engines().queue.stats().parked, 0);
    // A message that arrives after the timeout waits for the next RESERVE.
    enqueue(&mut c, Q, b"late").await;
    assert_eq!(broker.engines().queue.counters(1, Q), counters(1, 0, 0));
}

async fn reservations_handed_to_parked_reserves_expire_too(kind: Kind) {
    let clock = manual();
    let broker = broker_with(&clock).await;
    let mut c = RawClient::anon(&broker, kind).await;
    let mut p = RawClient::anon(&broker, kind).await;
    c.send(Some(1001), &res(Q, 10, None, Some(30))).await;
    sync(&mut c).await;
    let id = enqueue(&mut p, Q, b"job").await;
    assert_eq!(items(c.reply_to(1001).await, false)[0].message_id, id);
    clock.advance(Duration::from_secs(9));
    assert_eq!(broker.engines().queue.counters(1, Q), counters(0, 0, 1));
    clock.advance(Duration::from_secs(1));
    assert_eq!(broker.engines().queue.counters(1, Q), counters(1, 0, 0));
    assert_eq!(
        broker.engines().queue.message(1, Q, id).unwrap().attempts,
        1
    );
}

async fn parked_reserves_are_capped_per_route(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut a = RawClient::anon(&broker, kind).await;
    let mut b = RawClient::anon(&broker, kind).await;
    for id in 1001..=1060 {
        a.send(Some(id), &res(Q, 30, None, Some(30))).await;
    }
    for id in 1001..=1040 {
        b.send(Some(id), &res(Q, 30, None, Some(30))).await;
    }
    sync(&mut a).await;
    sync(&mut b).await;
    assert_eq!(broker.engines().queue.stats().parked, 100);
    let e = b.fails(&res(Q, 30, None, Some(30))).await;
    assert_eq!((e.envelope, code(&e)), (Envelope::Coded, codes::QUEUE_FULL));
    // The cap is per route: another queue and a pattern still park.
    b.send(
        Some(1500),
        &res("queue://realm/area/other", 30, None, Some(30)),
    )
    .await;
    b.send(Some(1501), &res("queue://realm/area/*", 30, None, Some(30)))
        .await;
    sync(&mut b).await;
    assert_eq!(broker.engines().queue.stats().parked, 102);
    // Work is handed out oldest parked first.
    let mut p = RawClient::anon(&broker, kind).await;
    enqueue(&mut p, Q, b"first").await;
    assert_eq!(
        bodies(&items(a.reply_to(1001).await, false)),
        [&b"first"[..]]
    );
    drop(a);
    drop(b);
    broker.wait_for_session_count(1).await;
    assert_eq!(broker.engines().queue.stats().parked, 0);
}

async fn wildcard_reserve_spans_queues_in_order(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    let sends = [
        ("queue://w/a/one", "1"),
        ("queue://w/b/two", "2"),
        ("queue://x/a/one", "elsewhere"),
        ("queue://w/a/one", "3"),
        ("queue://w/a/three", "4"),
        ("queue://w/b/two", "5"),
    ];
    for (route, body) in sends {
        enqueue(&mut c, route, body.as_bytes()).await;
    }
    // Routed items: [0][u32 n] then [str route][id][token][body] each.
    let raw = c.call(&res("queue://w/**", 30, Some(3), None)).await;
    assert_eq!(&raw[..9], &[0, 0, 0, 0, 3, 0, 0, 0, 15]);
    assert_eq!(&raw[9..24], b"queue://w/a/one");
    let got = items(raw, true);
    let seen: Vec<(&str, &[u8])> = got
        .iter()
        .map(|i| (i.route.as_deref().unwrap(), &i.body[..]))
        .collect();
    assert_eq!(
        seen,
        [
            ("queue://w/a/one", &b"1"[..]),
            ("queue://w/b/two", b"2"),
            ("queue://w/a/one", b"3"),
        ]
    );
    // EXTEND and COMPLETE use the item's concrete route.
    let it = &got[1];
    c.ok::<_, queue::ExtendOk>(&extend("queue://w/b/two", it, 60))
        .await;
    c.ok::<_, queue::CompleteOk>(&complete("queue://w/b/two", it))
        .await;
    let rest = reserve(&mut c, &res("queue://*/*/*", 30, Some(10), None)).await;
    let seen: Vec<&[u8]> = bodies(&rest);
    assert_eq!(seen, [&b"elsewhere"[..], b"4", b"5"]);
    assert!(
        reserve(&mut c, &res("queue://w/**", 30, Some(10), None))
            .await
            .is_empty()
    );
}

async fn replies_respect_the_record_budget(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    let big = vec![7u8; 30_000];
    for _ in 0..3 {
        enqueue(&mut c, Q, &big).await;
    }
    // Two 30 kB items fit one record, three do not.
    assert_eq!(reserve(&mut c, &res(Q, 30, Some(3), None)).await.len(), 2);
    assert_eq!(reserve(&mut c, &res(Q, 30, Some(3), None)).await.len(), 1);
}

async fn oversize_messages_are_dead_lettered(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    let route = "queue://a/b/c";
    // The largest body an ENQUEUE record can carry on this route is too
    // large for any RESERVE item: dead-lettered, never returned.
    let huge = vec![1u8; 65_513];
    let id = enqueue(&mut c, route, &huge).await;
    enqueue(&mut c, route, b"small").await;
    let got = reserve(&mut c, &res(route, 30, Some(5), None)).await;
    assert_eq!(bodies(&got), [&b"small"[..]]);
    let dead = broker.engines().queue.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (
            dead[0].message_id,
            dead[0].reason.as_str(),
            dead[0].body_len
        ),
        (id, REASON_TOO_LARGE, 65_513)
    );
    c.ok::<_, queue::CompleteOk>(&complete(route, &got[0]))
        .await;
    assert!(
        reserve(&mut c, &res(route, 30, Some(5), None))
            .await
            .is_empty()
    );
    // A body only the routed (wildcard) shape cannot carry stays ready for
    // an exact RESERVE.
    let wide = vec![2u8; 65_500];
    let id = enqueue(&mut c, route, &wide).await;
    enqueue(&mut c, "queue://a/b/d", b"next").await;
    let got = reserve(&mut c, &res("queue://a/b/*", 30, Some(5), None)).await;
    assert_eq!(bodies(&got), [&b"next"[..]]);
    let got = reserve(&mut c, &res(route, 30, Some(5), None)).await;
    assert_eq!((got[0].message_id, got[0].body.len()), (id, 65_500));
    assert_eq!(broker.engines().queue.dead_letters().len(), 1);
}

async fn reservations_and_parked_reserves_end_with_the_session(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut a = RawClient::anon(&broker, kind).await;
    let mut b = RawClient::anon(&broker, kind).await;
    let first = enqueue(&mut b, Q, b"1").await;
    enqueue(&mut b, Q, b"2").await;
    let held = reserve(&mut a, &res(Q, 300, Some(2), None)).await;
    assert_eq!(held.len(), 2);
    a.send(
        Some(1009),
        &res("queue://realm/area/idle", 30, None, Some(30)),
    )
    .await;
    sync(&mut a).await;
    assert_eq!(broker.engines().queue.stats().parked, 1);
    // B waits for work on Q; A's disconnect releases its reservations to B.
    b.send(Some(1077), &res(Q, 30, Some(5), Some(30))).await;
    sync(&mut b).await;
    drop(a);
    let got = items(b.reply_to(1077).await, false);
    assert_eq!(bodies(&got), [&b"1"[..], b"2"]);
    let info = broker.engines().queue.message(1, Q, first).unwrap();
    assert_eq!(info.attempts, 1);
    broker.wait_for_session_count(1).await;
    assert_eq!(broker.engines().queue.stats().parked, 0);
    // A's tokens are dead; B's work.
    let e = b.fails(&complete(Q, &held[0])).await;
    assert_eq!(&*e.message, "invalid token");
    for it in &got {
        b.ok::<_, queue::CompleteOk>(&complete(Q, it)).await;
    }
}

async fn availability_notifications(kind: Kind) {
    let clock = manual();
    let broker = broker_with(&clock).await;
    let mut w = RawClient::anon(&broker, kind).await;
    let mut p = RawClient::anon(&broker, kind).await;
    // Ready work that exists before SUBSCRIBE is announced right after it.
    enqueue(&mut p, "queue://n/a/old", b"x").await;
    enqueue(&mut p, "queue://n/a/old", b"y").await;
    enqueue(&mut p, "queue://other/a/old", b"x").await;
    let raw = w.call(&queue::Subscribe::new("queue://n/**")).await;
    assert_eq!(
        (raw.len(), &raw[..2]),
        (10, &[0u8, 1][..]),
        "[0][1][u64 id]"
    );
    let sub = u64::from_be_bytes(raw[2..].try_into().unwrap());
    assert_eq!(subscribe(&mut w, "queue://n/**").await, sub, "duplicate");
    // V46: the counters travel wrapped as bytes.
    let l = w.next_of_type(types::QUEUE_NOTIFY).await;
    let mut want = sub.to_be_bytes().to_vec();
    want.extend_from_slice(&[0, 0, 0, 15]);
    want.extend_from_slice(b"queue://n/a/old");
    want.extend_from_slice(&[0, 0, 0, 24]);
    want.extend_from_slice(&counters(2, 0, 0).to_bytes());
    assert_eq!(&l.record.payload[..], &want[..]);
    // The duplicate SUBSCRIBE succeeded too, so it announces the same again.
    let again = w.next_of_type(types::QUEUE_NOTIFY).await;
    assert_eq!(&again.record.payload[..], &want[..]);
    w.expect_quiet().await;
    // New ready work notifies each matching registration with the counters.
    let exact = subscribe(&mut w, "queue://n/b/jobs").await;
    enqueue(&mut p, "queue://n/b/jobs", b"1").await;
    let mut got = [next_notify(&mut w).await, next_notify(&mut w).await];
    got.sort_by_key(|n| n.sub_id);
    assert_eq!((got[0].sub_id, got[1].sub_id), (sub, exact));
    assert_eq!(&*got[0].route, "queue://n/b/jobs");
    assert_eq!(got[1].counters(), Some(counters(1, 0, 0)));
    // Delayed work notifies when it becomes ready, with the delayed count before.
    w.ok::<_, queue::UnsubscribeOk>(&queue::Unsubscribe::new("queue://n/b/jobs"))
        .await;
    p.ok::<_, EnqueueOk>(&enq("queue://n/c/later", b"d", Some(5)))
        .await;
    w.expect_quiet().await;
    clock.advance(Duration::from_secs(5));
    let n = next_notify(&mut w).await;
    assert_eq!(
        (n.sub_id, &*n.route, n.counters()),
        (sub, "queue://n/c/later", Some(counters(1, 0, 0)))
    );
    // Work taken at once by a parked RESERVE never became available.
    p.send(Some(1003), &res("queue://n/d/hot", 30, None, Some(30)))
        .await;
    sync(&mut p).await;
    enqueue(&mut w, "queue://n/d/hot", b"h").await;
    assert_eq!(items(p.reply_to(1003).await, false).len(), 1);
    w.expect_quiet().await;
    // A reservation expiring makes work ready again.
    let it = reserve(&mut p, &res("queue://n/c/later", 10, None, None)).await;
    assert_eq!(it.len(), 1);
    clock.advance(Duration::from_secs(10));
    let n = next_notify(&mut w).await;
    assert_eq!(
        (&*n.route, n.counters()),
        ("queue://n/c/later", Some(counters(1, 0, 0)))
    );
    // Unsubscribe by the original pattern ends it; idempotent.
    for _ in 0..2 {
        w.ok::<_, queue::UnsubscribeOk>(&queue::Unsubscribe::new("queue://n/**"))
            .await;
    }
    enqueue(&mut p, "queue://n/a/old", b"z").await;
    w.expect_quiet().await;
    assert_eq!(broker.engines().queue.watches().len(), 0);
}

async fn watch_registration_limits(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    for i in 0..128 {
        subscribe(&mut c, &format!("queue://w{i}/**")).await;
    }
    let e = c.fails(&queue::Subscribe::new("queue://x/**")).await;
    assert_eq!(
        (e.envelope, &*e.message),
        (
            Envelope::Uncoded,
            "wildcard subscription limit exceeded (128 per session)"
        )
    );
    subscribe(&mut c, "queue://w0/**").await;
    for i in 128..1024 {
        subscribe(&mut c, &format!("queue://e/a/{i}")).await;
    }
    let e = c.fails(&queue::Subscribe::new("queue://e/a/x")).await;
    assert_eq!(
        &*e.message,
        "total subscription limit exceeded (1024 per session)"
    );
    drop(c);
    broker.wait_for_session_count(0).await;
    assert_eq!(broker.engines().queue.watches().len(), 0);
}

async fn invalid_routes_and_patterns(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    let bad_routes = [
        "queue://a/b",
        "queue://a/*/c",
        "queue://a//c",
        "kv://a/b/c",
        "queue://a/b/c/d",
    ];
    for bad in bad_routes {
        let e = c.fails(&enq(bad, b"", None)).await;
        assert_eq!(
            (e.envelope, code(&e)),
            (Envelope::Coded, codes::QUEUE_BAD_REQUEST),
            "{bad}"
        );
        let it = ReservedItem {
            route: None,
            message_id: 1,
            lease_token: 1,
            body: Bytes::new(),
        };
        assert_eq!(
            code(&c.fails(&complete(bad, &it)).await),
            codes::QUEUE_BAD_REQUEST
        );
        assert_eq!(
            code(&c.fails(&extend(bad, &it, 5)).await),
            codes::QUEUE_BAD_REQUEST
        );
    }
    for bad in [
        "queue://a/b",
        "queue://a/b*/c",
        "queue://a//c",
        "queue://a/**/**",
        "kv://**",
    ] {
        let e = c.fails(&res(bad, 30, None, None)).await;
        assert_eq!(code(&e), codes::QUEUE_BAD_REQUEST, "{bad}");
        let e = c.fails(&queue::Subscribe::new(bad)).await;
        assert_eq!(
            (e.envelope, code(&e)),
            (Envelope::Coded, codes::QUEUE_INVALID_PATTERN),
            "{bad}"
        );
        let e = c.fails(&queue::Unsubscribe::new(bad)).await;
        assert_eq!(code(&e), codes::QUEUE_INVALID_PATTERN, "{bad}");
    }
    // A malformed payload is a bad request; the session stays usable.
    c.send_frame(&[types::QUEUE_ENQUEUE as u8, 0, 2, 0, 0])
        .await;
    let l = c.next_record().await;
    assert_eq!(l.record.ty, types::QUEUE_ENQUEUE);
    assert_eq!(
        WireError::decode(l.record.payload).unwrap().code(),
        Some(codes::QUEUE_BAD_REQUEST)
    );
    enqueue(&mut c, Q, b"fine").await;
}

async fn unauthorized_requests_keep_the_session(kind: Kind) {
    let broker = Broker::builder()
        .auth(
            AuthConfig::jwt_hs256(crate::support::SECRET)
                .audiences(["fitz"])
                .family_map([("dev", 1)]),
        )
        .start()
        .await
        .unwrap();
    let token = crate::support::token("dev", &["queue://ok/**#*", "queue://ro/**#read"]);
    let (mut c, _) = RawClient::connect(&broker, kind, &token).await;
    let it = ReservedItem {
        route: None,
        message_id: 1,
        lease_token: 1,
        body: Bytes::new(),
    };
    for route in ["queue://no/a/b", "queue://ro/a/b"] {
        for e in [
            c.fails(&enq(route, b"x", None)).await,
            c.fails(&res(route, 30, None, None)).await,
            c.fails(&extend(route, &it, 5)).await,
            c.fails(&complete(route, &it)).await,
        ] {
            assert_eq!(
                (e.envelope, code(&e)),
                (Envelope::Coded, codes::QUEUE_UNAUTHORIZED)
            );
        }
    }
    // Watches need read on every route the pattern can match.
    for pattern in ["queue://no/**", "queue://**"] {
        let e = c.fails(&queue::Subscribe::new(pattern)).await;
        assert_eq!(code(&e), codes::QUEUE_UNAUTHORIZED);
    }
    subscribe(&mut c, "queue://ro/**").await;
    enqueue(&mut c, "queue://ok/a/b", b"fine").await;
    assert_eq!(
        reserve(&mut c, &res("queue://ok/**", 30, None, None))
            .await
            .len(),
        1
    );
    assert_eq!(broker.session_count(), 1, "still open");
}

async fn route_families_are_isolated(kind: Kind) {
    let broker = crate::support::jwt().await;
    let (mut dev, _) = RawClient::connect(
        &broker,
        kind,
        &crate::support::token("dev", crate::support::ALL),
    )
    .await;
    let (mut acme, _) = RawClient::connect(
        &broker,
        kind,
        &crate::support::token("acme", crate::support::ALL),
    )
    .await;
    subscribe(&mut acme, "queue://**").await;
    let id = enqueue(&mut dev, Q, b"dev").await;
    acme.expect_quiet().await;
    assert!(reserve(&mut acme, &res(Q, 30, None, None)).await.is_empty());
    assert!(
        reserve(&mut acme, &res("queue://**", 30, None, None))
            .await
            .is_empty()
    );
    enqueue(&mut acme, Q, b"acme").await;
    assert_eq!(
        next_notify(&mut acme).await.counters(),
        Some(counters(1, 0, 0))
    );
    let got = reserve(&mut dev, &res(Q, 30, Some(10), None)).await;
    assert_eq!((got.len(), got[0].message_id), (1, id));
    assert_eq!(
        bodies(&reserve(&mut acme, &res(Q, 30, Some(10), None)).await),
        [&b"acme"[..]]
    );
    assert_eq!(broker.engines().queue.counters(2, Q), counters(0, 0, 1));
}
