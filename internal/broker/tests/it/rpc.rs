//! RPC through the wire: registration, dispatch and credit, streamed
//! responses, every failure code, deadlines on the manual clock, invocation
//! UUIDs, budgets, cancellation and session cleanup.

use std::time::{Duration, SystemTime};

use crate::support::{ALL, Kind, RawClient, code, token};
use bytes::{Bytes, BytesMut};
use fitz_broker::engines::rpc::ROUTE_QUEUE_CAPACITY;
use fitz_broker::{Broker, Clock, Config};
use fitz_protocol::record::encode_raw_record;
use fitz_protocol::rpc::{
    Cancel, CancelReason, CancelStatus, Lifecycle, Request, Response, RpcId, SignalReason,
    SubscribeWorker, SubscribeWorkerOk, UnsubscribeWorker, UnsubscribeWorkerOk,
};
use fitz_protocol::{Message, codes, types};

both_transports!(
    round_trip_streams_chunks_in_order,
    no_worker_is_6004,
    bad_routes_patterns_and_registrations,
    full_wait_queue_is_6003,
    duplicate_live_uuid_is_6007,
    timeouts_are_6001_on_the_manual_clock,
    worker_disconnect_is_6002,
    bad_worker_responses,
    calls_spread_evenly_across_workers,
    credit_is_respected_and_queued_calls_follow,
    exact_and_wildcard_workers_compete,
    unsubscribe_stops_dispatch_and_fails_running_calls,
    queued_calls_survive_their_workers,
    invocation_uuids_and_budgets,
    cancel_statuses,
    cleanup_ack_releases_credit,
    caller_disconnect_signals_supporting_workers,
    grace_expiry_closes_the_worker,
    broker_deadline_signals_supporting_workers,
    malformed_cancel_is_discarded,
    unauthorized_is_6009,
    families_are_isolated,
    registration_limits,
);

const ROUTE: &str = "rpc://prod/app/worker";

fn uuid(n: u32) -> RpcId {
    let mut id = [0xAB; 16];
    id[12..].copy_from_slice(&n.to_be_bytes());
    RpcId(id)
}

fn request(id: RpcId, route: &str, body: &[u8]) -> Request {
    Request {
        id,
        route: route.into(),
        body: Bytes::copy_from_slice(body),
        budget_ms: None,
    }
}

fn chunk(id: RpcId, sequence: u64, end: bool, body: &[u8]) -> Response {
    Response {
        id,
        sequence,
        end,
        body: Bytes::copy_from_slice(body),
    }
}

async fn register(c: &mut RawClient, pattern: &str, max: u32, supports: bool) {
    let _: SubscribeWorkerOk = c
        .ok(&SubscribeWorker {
            pattern: pattern.into(),
            max_concurrent: max,
            extension_flags: supports.then_some(1),
        })
        .await;
}

/// A round trip on `c`'s connection: everything sent before was handled.
async fn sync(c: &mut RawClient) {
    let _: UnsubscribeWorkerOk = c.ok(&UnsubscribeWorker::new("rpc://sync/none")).await;
}

async fn next_request(c: &mut RawClient) -> Request {
    let l = c.next_of_type(types::RPC_REQUEST).await;
    assert_eq!(l.correlation, None, "deliveries are never labelled");
    Request::decode(l.record.payload).unwrap()
}

async fn next_response(c: &mut RawClient) -> Response {
    let l = c.next_of_type(types::RPC_RESPONSE).await;
    assert_eq!(l.correlation, None, "RPC responses are never labelled");
    Response::decode(l.record.payload).unwrap()
}

async fn next_lifecycle(c: &mut RawClient) -> Lifecycle {
    let l = c.next_of_type(types::RPC_LIFECYCLE).await;
    assert_eq!(l.correlation, None);
    Lifecycle::decode(l.record.payload).unwrap()
}

/// The next RESPONSE must be a terminal error for `id` with `code`.
async fn expect_error(c: &mut RawClient, id: RpcId, want: u32) {
    let r = next_response(c).await;
    assert_eq!((r.id, r.sequence, r.end), (id, 0, true));
    let e = r.as_error().expect("coded terminal error");
    assert_eq!(code(&e), want, "{e:?}");
}

async fn cancel(c: &mut RawClient, id: RpcId) -> CancelStatus {
    c.send(
        None,
        &Cancel::Caller {
            id,
            reason: CancelReason::Explicit,
        },
    )
    .await;
    match next_lifecycle(c).await {
        Lifecycle::CallerResult { id: got, status } => {
            assert_eq!(got, id);
            status
        }
        other => panic!("unexpected {other:?}"),
    }
}

async fn manual() -> Broker {
    Broker::builder()
        .clock(Clock::manual(SystemTime::now()))
        .start()
        .await
        .unwrap()
}

async fn manual_with(config: Config) -> Broker {
    Broker::builder()
        .config(config)
        .clock(Clock::manual(SystemTime::now()))
        .start()
        .await
        .unwrap()
}

async fn wait_live_calls(broker: &Broker, n: usize) {
    for _ in 0..500 {
        if broker.engines().rpc.live_calls() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("live calls stayed at {}", broker.engines().rpc.live_calls());
}

async fn round_trip_streams_chunks_in_order(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut w = RawClient::anon(&broker, kind).await;
    let mut c = RawClient::anon(&broker, kind).await;
    let raw = w
        .call(&SubscribeWorker {
            pattern: ROUTE.into(),
            max_concurrent: 4,
            extension_flags: None,
        })
        .await;
    assert_eq!(&raw[..], &[0, 0, 0, 0, 0], "[0][u32 0]");
    // Labelled REQUEST: still no success frame, and RPC replies stay unlabelled.
    c.send(Some(77), &request(uuid(1), ROUTE, b"foo")).await;
    let got = next_request(&mut w).await;
    assert_eq!(
        got,
        request(uuid(1), ROUTE, b"foo"),
        "legacy worker: same bytes"
    );
    for (i, body) in [&b"a"[..], b"bb", b""].iter().enumerate() {
        w.send(None, &chunk(got.id, i as u64, i == 2, body)).await;
    }
    for (i, body) in [&b"a"[..], b"bb", b""].iter().enumerate() {
        let r = next_response(&mut c).await;
        assert_eq!(r, chunk(uuid(1), i as u64, i == 2, body));
    }
    c.expect_quiet().await;
    w.expect_quiet().await;
    assert_eq!(broker.engines().rpc.live_calls(), 0);
    // The UUID can be reused once the call ended.
    c.send(None, &request(uuid(1), ROUTE, b"again")).await;
    let got = next_request(&mut w).await;
    w.send(None, &chunk(got.id, 0, true, b"ok")).await;
    assert_eq!(next_response(&mut c).await.body, &b"ok"[..]);
}

async fn no_worker_is_6004(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    c.send(None, &request(uuid(1), ROUTE, b"x")).await;
    let r = next_response(&mut c).await;
    let e = r.as_error().unwrap();
    assert_eq!(
        (code(&e), &*e.message),
        (codes::RPC_NO_WORKER, "No workers registered for route")
    );
    // A worker on another route does not count.
    let mut w = RawClient::anon(&broker, kind).await;
    register(&mut w, "rpc://prod/other/*", 1, false).await;
    c.send(None, &request(uuid(2), ROUTE, b"x")).await;
    expect_error(&mut c, uuid(2), codes::RPC_NO_WORKER).await;
}

async fn bad_routes_patterns_and_registrations(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    for route in [
        "rpc://prod/*/worker",
        "rpc://prod/**",
        "kv://a/b/c",
        "rpc://a//b",
    ] {
        c.send(None, &request(uuid(1), route, b"")).await;
        expect_error(&mut c, uuid(1), codes::RPC_INVALID_ROUTE).await;
    }
    for pattern in ["rpc://a/x*", "queue://a/b/c", "rpc://a//b"] {
        let e = c
            .fails(&SubscribeWorker {
                pattern: pattern.into(),
                max_concurrent: 1,
                extension_flags: None,
            })
            .await;
        assert_eq!(code(&e), codes::RPC_INVALID_PATTERN, "{pattern}");
        let e = c.fails(&UnsubscribeWorker::new(pattern)).await;
        assert_eq!(code(&e), codes::RPC_INVALID_PATTERN, "{pattern}");
    }
    for max in [0, 1025] {
        let e = c
            .fails(&SubscribeWorker {
                pattern: ROUTE.into(),
                max_concurrent: max,
                extension_flags: None,
            })
            .await;
        assert_eq!(code(&e), codes::RPC_UNAVAILABLE);
    }
    // Registration extension: version 1, only bit 0; `01 00` is legal.
    let mut ok = BytesMut::new();
    let reg = SubscribeWorker {
        pattern: "rpc://a/*".into(),
        max_concurrent: 1,
        extension_flags: Some(0),
    };
    reg.encode_record(&mut ok).unwrap();
    let id = c.id();
    let mut framed = BytesMut::new();
    fitz_protocol::record::put_label(&mut framed, types::CORRELATE, id);
    framed.extend_from_slice(&ok);
    c.send_frame(&framed).await;
    assert_eq!(c.reply_to(id).await[0], 0);
    for ext in [&[1u8, 2][..], &[2, 1], &[1], &[1, 1, 0]] {
        let mut payload = reg.to_payload().to_vec();
        payload.truncate(payload.len() - 2);
        payload.extend_from_slice(ext);
        let mut b = BytesMut::new();
        let id = c.id();
        fitz_protocol::record::put_label(&mut b, types::CORRELATE, id);
        encode_raw_record(&mut b, types::RPC_SUBSCRIBE_WORKER, &payload).unwrap();
        c.send_frame(&b).await;
        let e = fitz_protocol::WireError::decode(c.reply_to(id).await).unwrap();
        assert_eq!(code(&e), codes::RPC_UNAVAILABLE, "{ext:?}");
    }
    // A REQUEST whose budget extension is invalid: terminal 6010.
    let mut payload = request(uuid(3), ROUTE, b"").to_payload().to_vec();
    payload.extend_from_slice(&[1, 1, 0x05, 0x26, 0x5C, 0x01]); // 86,400,001 ms
    let mut b = BytesMut::new();
    encode_raw_record(&mut b, types::RPC_REQUEST, &payload).unwrap();
    c.send_frame(&b).await;
    expect_error(&mut c, uuid(3), codes::RPC_UNAVAILABLE).await;
}

async fn full_wait_queue_is_6003(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut w = RawClient::anon(&broker, kind).await;
    let mut c = RawClient::anon(&broker, kind).await;
    register(&mut w, ROUTE, 1, false).await;
    for i in 0..=ROUTE_QUEUE_CAPACITY as u32 {
        c.send(None, &request(uuid(i), ROUTE, b"")).await;
    }
    c.send(None, &request(uuid(99_999), ROUTE, b"")).await;
    let r = next_response(&mut c).await;
    assert_eq!(r.id, uuid(99_999));
    assert_eq!(code(&r.as_error().unwrap()), codes::RPC_BACKPRESSURE);
    assert_eq!(broker.engines().rpc.queued_calls(), ROUTE_QUEUE_CAPACITY);
    // Another route has its own queue.
    let mut w2 = RawClient::anon(&broker, kind).await;
    register(&mut w2, "rpc://prod/app/other", 1, false).await;
    c.send(None, &request(uuid(100_000), "rpc://prod/app/other", b""))
        .await;
    assert_eq!(next_request(&mut w2).await.id, uuid(100_000));
}

async fn duplicate_live_uuid_is_6007(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut w = RawClient::anon(&broker, kind).await;
    let mut c = RawClient::anon(&broker, kind).await;
    let mut other = RawClient::anon(&broker, kind).await;
    register(&mut w, ROUTE, 4, false).await;
    c.send(None, &request(uuid(1), ROUTE, b"first")).await;
    let got = next_request(&mut w).await;
    c.send(None, &request(uuid(1), ROUTE, b"again")).await;
    expect_error(&mut c, uuid(1), codes::RPC_DUPLICATE_CORRELATION).await;
    // Live UUIDs are unique per family, whoever the caller is.
    other.send(None, &request(uuid(1), ROUTE, b"")).await;
    expect_error(&mut other, uuid(1), codes::RPC_DUPLICATE_CORRELATION).await;
    // The original call is untouched.
    w.send(None, &chunk(got.id, 0, true, b"done")).await;
    assert_eq!(next_response(&mut c).await.body, &b"done"[..]);
    w.expect_quiet().await;
}

async fn timeouts_are_6001_on_the_manual_clock(kind: Kind) {
    let broker = manual().await;
    let mut w = RawClient::anon(&broker, kind).await;
    let mut c = RawClient::anon(&broker, kind).await;
    register(&mut w, ROUTE, 1, false).await;
    c.send(None, &request(uuid(1), ROUTE, b"running")).await;
    let running = next_request(&mut w).await;
    c.send(None, &request(uuid(2), ROUTE, b"queued")).await;
    sync(&mut c).await;
    broker.clock().advance(Duration::from_secs(29));
    c.expect_quiet().await;
    broker.clock().advance(Duration::from_secs(1));
    let mut ids = [next_response(&mut c).await, next_response(&mut c).await];
    ids.sort_by_key(|r| r.id);
    for (r, id) in ids.iter().zip([uuid(1), uuid(2)]) {
        assert_eq!(r.id, id);
        assert_eq!(code(&r.as_error().unwrap()), codes::RPC_TIMEOUT);
    }
    assert_eq!(broker.engines().rpc.live_calls(), 0);
    // The late answer is orphaned; the credit came back.
    w.send(None, &chunk(running.id, 0, true, b"late")).await;
    expect_error(&mut w, running.id, codes::RPC_CORRELATION_NOT_FOUND).await;
    c.send(None, &request(uuid(3), ROUTE, b"")).await;
    assert_eq!(next_request(&mut w).await.id, uuid(3));
    // A caller budget shortens the deadline; a larger one is capped.
    let mut short = request(uuid(4), ROUTE, b"");
    short.budget_ms = Some(2_000);
    c.send(None, &short).await;
    sync(&mut c).await;
    broker.clock().advance(Duration::from_millis(2_000));
    expect_error(&mut c, uuid(4), codes::RPC_TIMEOUT).await;
    // A zero budget is already expired.
    let mut zero = request(uuid(5), ROUTE, b"");
    zero.budget_ms = Some(0);
    c.send(None, &zero).await;
    expect_error(&mut c, uuid(5), codes::RPC_TIMEOUT).await;
    // A configured timeout.
    let broker = manual_with(Config {
        rpc_request_timeout: Duration::from_secs(2),
        ..Config::default()
    })
    .await;
    let mut w = RawClient::anon(&broker, kind).await;
    let mut c = RawClient::anon(&broker, kind).await;
    register(&mut w, ROUTE, 1, false).await;
    let mut long = request(uuid(6), ROUTE, b"");
    long.budget_ms = Some(60_000);
    c.send(None, &long).await;
    next_request(&mut w).await;
    broker.clock().advance(Duration::from_secs(2));
    expect_error(&mut c, uuid(6), codes::RPC_TIMEOUT).await;
}

async fn worker_disconnect_is_6002(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut w = RawClient::anon(&broker, kind).await;
    let mut c = RawClient::anon(&broker, kind).await;
    register(&mut w, ROUTE, 2, false).await;
    c.send(None, &request(uuid(1), ROUTE, b"")).await;
    c.send(None, &request(uuid(2), ROUTE, b"")).await;
    let first = next_request(&mut w).await;
    next_request(&mut w).await;
    w.send(None, &chunk(first.id, 0, false, b"partial")).await;
    assert_eq!(next_response(&mut c).await.body, &b"partial"[..]);
    drop(w);
    let mut got = [next_response(&mut c).await, next_response(&mut c).await];
    got.sort_by_key(|r| r.id);
    for (r, id) in got.iter().zip([uuid(1), uuid(2)]) {
        assert_eq!((r.id, r.sequence, r.end), (id, 0, true));
        assert_eq!(code(&r.as_error().unwrap()), codes::RPC_WORKER_NOT_FOUND);
    }
    // Its registration vanished with it.
    c.send(None, &request(uuid(3), ROUTE, b"")).await;
    expect_error(&mut c, uuid(3), codes::RPC_NO_WORKER).await;
}

async fn bad_worker_responses(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut w = RawClient::anon(&broker, kind).await;
    let mut intruder = RawClient::anon(&broker, kind).await;
    let mut c = RawClient::anon(&broker, kind).await;
    register(&mut w, ROUTE, 4, false).await;
    c.send(None, &request(uuid(1), ROUTE, b"")).await;
    let got = next_request(&mut w).await;
    // Unknown UUID: 6005 to the worker, the call is untouched.
    w.send(None, &chunk(uuid(42), 0, true, b"")).await;
    expect_error(&mut w, uuid(42), codes::RPC_CORRELATION_NOT_FOUND).await;
    // Another session answering: 6008 to it.
    intruder.send(None, &chunk(got.id, 0, true, b"")).await;
    expect_error(&mut intruder, got.id, codes::RPC_WRONG_WORKER).await;
    c.expect_quiet().await;
    w.send(None, &chunk(got.id, 0, false, b"0")).await;
    assert_eq!(next_response(&mut c).await.body, &b"0"[..]);
    // A gap: 6006 to both sides; the call is over.
    w.send(None, &chunk(got.id, 2, true, b"2")).await;
    expect_error(&mut w, got.id, codes::RPC_INVALID_SEQUENCE).await;
    expect_error(&mut c, uuid(1), codes::RPC_INVALID_SEQUENCE).await;
    w.send(None, &chunk(got.id, 1, true, b"")).await;
    expect_error(&mut w, got.id, codes::RPC_CORRELATION_NOT_FOUND).await;
    // A first chunk that is not 0.
    c.send(None, &request(uuid(2), ROUTE, b"")).await;
    let got = next_request(&mut w).await;
    w.send(None, &chunk(got.id, 1, true, b"")).await;
    expect_error(&mut w, got.id, codes::RPC_INVALID_SEQUENCE).await;
    expect_error(&mut c, uuid(2), codes::RPC_INVALID_SEQUENCE).await;
    // A malformed RESPONSE with a readable UUID: 6010 to its sender.
    let mut b = BytesMut::new();
    let mut payload = chunk(uuid(7), 0, true, b"").to_payload().to_vec();
    payload[24] = 2; // flags must be 0 or 1
    encode_raw_record(&mut b, types::RPC_RESPONSE, &payload).unwrap();
    w.send_frame(&b).await;
    expect_error(&mut w, uuid(7), codes::RPC_UNAVAILABLE).await;
    assert_eq!(broker.engines().rpc.live_calls(), 0);
}

async fn calls_spread_evenly_across_workers(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut a = RawClient::anon(&broker, kind).await;
    let mut b = RawClient::anon(&broker, kind).await;
    let mut c = RawClient::anon(&broker, kind).await;
    register(&mut a, ROUTE, 1024, false).await;
    register(&mut b, ROUTE, 1024, false).await;
    // Sequential calls alternate too.
    let mut sequential = [0; 2];
    for i in 0..10 {
        c.send(None, &request(uuid(i), ROUTE, b"")).await;
        let (w, n) = tokio::select! {
            r = next_request(&mut a) => (r, 0),
            r = next_request(&mut b) => (r, 1),
        };
        sequential[n] += 1;
        let worker = if n == 0 { &mut a } else { &mut b };
        worker.send(None, &chunk(w.id, 0, true, b"")).await;
        next_response(&mut c).await;
    }
    assert_eq!(sequential, [5, 5]);
    for i in 100..200 {
        c.send(None, &request(uuid(i), ROUTE, b"")).await;
    }
    sync(&mut c).await;
    let (na, nb) = (drain_requests(&mut a).await, drain_requests(&mut b).await);
    assert_eq!(na.len() + nb.len(), 100);
    assert!((35..=65).contains(&na.len()), "{} / {}", na.len(), nb.len());
    for id in na {
        a.send(None, &chunk(id, 0, true, b"")).await;
    }
    for id in nb {
        b.send(None, &chunk(id, 0, true, b"")).await;
    }
    for _ in 0..100 {
        assert!(next_response(&mut c).await.as_error().is_none());
    }
}

async fn drain_requests(c: &mut RawClient) -> Vec<RpcId> {
    let mut ids = Vec::new();
    while let Some(l) = c.record_within(crate::support::QUIET).await {
        assert_eq!(l.record.ty, types::RPC_REQUEST);
        ids.push(Request::decode(l.record.payload).unwrap().id);
    }
    ids
}

async fn credit_is_respected_and_queued_calls_follow(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut w = RawClient::anon(&broker, kind).await;
    let mut c = RawClient::anon(&broker, kind).await;
    register(&mut w, ROUTE, 1, false).await;
    for i in 1..=3 {
        c.send(None, &request(uuid(i), ROUTE, &[i as u8])).await;
    }
    let first = next_request(&mut w).await;
    assert_eq!(first.id, uuid(1));
    w.expect_quiet().await;
    assert_eq!(broker.engines().rpc.queued_calls(), 2);
    // Progress does not release credit; the terminal chunk does.
    w.send(None, &chunk(first.id, 0, false, b"")).await;
    next_response(&mut c).await;
    w.expect_quiet().await;
    w.send(None, &chunk(first.id, 1, true, b"")).await;
    let second = next_request(&mut w).await;
    assert_eq!((second.id, &second.body[..]), (uuid(2), &[2u8][..]));
    w.send(None, &chunk(second.id, 0, true, b"")).await;
    assert_eq!(next_request(&mut w).await.id, uuid(3));
}

async fn exact_and_wildcard_workers_compete(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut exact = RawClient::anon(&broker, kind).await;
    let mut wild = RawClient::anon(&broker, kind).await;
    let mut deep = RawClient::anon(&broker, kind).await;
    let mut c = RawClient::anon(&broker, kind).await;
    register(&mut exact, ROUTE, 1, false).await;
    register(&mut wild, "rpc://*/app/*", 1, false).await;
    register(&mut deep, "rpc://prod/**", 1, false).await;
    for i in 0..3 {
        c.send(None, &request(uuid(i), ROUTE, b"")).await;
    }
    let (e, w, d) = (
        next_request(&mut exact).await,
        next_request(&mut wild).await,
        next_request(&mut deep).await,
    );
    // Credit is shared across every route a registration matches: the
    // busy wildcard worker does not take a call on another route.
    c.send(None, &request(uuid(10), "rpc://staging/app/x", b""))
        .await;
    wild.expect_quiet().await;
    w.send_to(&mut wild).await;
    assert_eq!(next_request(&mut wild).await.id, uuid(10));
    // Any depth below a `**`.
    c.send(None, &request(uuid(11), "rpc://prod/a/b/c/d", b""))
        .await;
    d.send_to(&mut deep).await;
    assert_eq!(next_request(&mut deep).await.id, uuid(11));
    e.send_to(&mut exact).await;
    // A duplicate registration keeps its original credit (1).
    register(&mut exact, ROUTE, 8, false).await;
    c.send(None, &request(uuid(12), ROUTE, b"")).await;
    c.send(None, &request(uuid(13), ROUTE, b"")).await;
    let got = next_request(&mut exact).await;
    assert_eq!(got.id, uuid(12));
    exact.expect_quiet().await;
    for _ in 0..3 {
        next_response(&mut c).await;
    }
}

trait Finish {
    async fn send_to(&self, w: &mut RawClient);
}

impl Finish for Request {
    /// The worker ends this call with one empty chunk.
    async fn send_to(&self, w: &mut RawClient) {
        w.send(None, &chunk(self.id, 0, true, b"")).await;
    }
}

async fn unsubscribe_stops_dispatch_and_fails_running_calls(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut w = RawClient::anon(&broker, kind).await;
    let mut other = RawClient::anon(&broker, kind).await;
    let mut c = RawClient::anon(&broker, kind).await;
    register(&mut w, "rpc://prod/app/*", 4, false).await;
    c.send(None, &request(uuid(1), ROUTE, b"")).await;
    let running = next_request(&mut w).await;
    let raw = w.call(&UnsubscribeWorker::new("rpc://prod/app/*")).await;
    assert_eq!(&raw[..], &[0]);
    // Idempotent.
    let _: UnsubscribeWorkerOk = w.ok(&UnsubscribeWorker::new("rpc://prod/app/*")).await;
    expect_error(&mut c, uuid(1), codes::RPC_WORKER_NOT_FOUND).await;
    w.send(None, &chunk(running.id, 0, true, b"")).await;
    expect_error(&mut w, running.id, codes::RPC_CORRELATION_NOT_FOUND).await;
    c.send(None, &request(uuid(2), ROUTE, b"")).await;
    expect_error(&mut c, uuid(2), codes::RPC_NO_WORKER).await;
    // Calls route to the remaining workers.
    register(&mut other, ROUTE, 1, false).await;
    c.send(None, &request(uuid(3), ROUTE, b"")).await;
    assert_eq!(next_request(&mut other).await.id, uuid(3));
    w.expect_quiet().await;
}

async fn queued_calls_survive_their_workers(kind: Kind) {
    let broker = manual().await;
    let mut w = RawClient::anon(&broker, kind).await;
    let mut c = RawClient::anon(&broker, kind).await;
    register(&mut w, ROUTE, 1, false).await;
    c.send(None, &request(uuid(1), ROUTE, b"")).await;
    c.send(None, &request(uuid(2), ROUTE, b"queued")).await;
    sync(&mut c).await;
    next_request(&mut w).await;
    drop(w);
    expect_error(&mut c, uuid(1), codes::RPC_WORKER_NOT_FOUND).await;
    c.expect_quiet().await;
    // A new worker takes the queued call.
    let mut w2 = RawClient::anon(&broker, kind).await;
    register(&mut w2, "rpc://prod/**", 1, false).await;
    let got = next_request(&mut w2).await;
    assert_eq!((got.id, &got.body[..]), (uuid(2), &b"queued"[..]));
    got.send_to(&mut w2).await;
    next_response(&mut c).await;
    // Without one it times out.
    c.send(None, &request(uuid(3), ROUTE, b"")).await;
    c.send(None, &request(uuid(4), ROUTE, b"")).await;
    sync(&mut c).await;
    next_request(&mut w2).await;
    drop(w2);
    expect_error(&mut c, uuid(3), codes::RPC_WORKER_NOT_FOUND).await;
    broker.clock().advance(Duration::from_secs(30));
    expect_error(&mut c, uuid(4), codes::RPC_TIMEOUT).await;
}

async fn invocation_uuids_and_budgets(kind: Kind) {
    let broker = manual().await;
    let mut legacy = RawClient::anon(&broker, kind).await;
    let mut modern = RawClient::anon(&broker, kind).await;
    let mut c = RawClient::anon(&broker, kind).await;
    register(&mut legacy, "rpc://prod/legacy", 1, false).await;
    register(&mut modern, "rpc://prod/modern", 1, true).await;
    let with_budget = |id: RpcId, route: &str| {
        let mut r = request(id, route, b"body");
        r.budget_ms = Some(10_000);
        r
    };
    // Legacy: caller UUID, original bytes without the extension.
    c.send(None, &with_budget(uuid(1), "rpc://prod/legacy"))
        .await;
    let got = next_request(&mut legacy).await;
    assert_eq!(got, request(uuid(1), "rpc://prod/legacy", b"body"));
    // Supporting: fresh invocation UUID and the remaining budget.
    c.send(None, &with_budget(uuid(2), "rpc://prod/modern"))
        .await;
    let first = next_request(&mut modern).await;
    assert_ne!(first.id, uuid(2));
    assert_eq!(first.budget_ms, Some(10_000));
    // Queued for 3.5 s: the budget shrinks by the queueing time.
    c.send(None, &with_budget(uuid(3), "rpc://prod/modern"))
        .await;
    sync(&mut c).await;
    broker.clock().advance(Duration::from_millis(3_500));
    first.send_to(&mut modern).await;
    let r = next_response(&mut c).await;
    assert_eq!(
        (r.id, r.end),
        (uuid(2), true),
        "the caller sees its own UUID"
    );
    let second = next_request(&mut modern).await;
    assert_eq!(second.budget_ms, Some(6_500));
    assert_ne!(second.id, first.id);
    assert_ne!(second.id, uuid(3));
    // Without a caller budget nothing is forwarded.
    second.send_to(&mut modern).await;
    next_response(&mut c).await;
    c.send(None, &request(uuid(4), "rpc://prod/modern", b""))
        .await;
    let third = next_request(&mut modern).await;
    assert_eq!(third.budget_ms, None);
    // The caller UUID means nothing to the worker side.
    modern.send(None, &chunk(uuid(4), 0, true, b"")).await;
    expect_error(&mut modern, uuid(4), codes::RPC_CORRELATION_NOT_FOUND).await;
    modern.send(None, &chunk(third.id, 0, true, b"x")).await;
    let r = next_response(&mut c).await;
    assert_eq!((r.id, &r.body[..]), (uuid(4), &b"x"[..]));
    // Budgets above the request timeout are capped at it.
    let mut big = request(uuid(5), "rpc://prod/modern", b"");
    big.budget_ms = Some(86_400_000);
    c.send(None, &big).await;
    assert_eq!(next_request(&mut modern).await.budget_ms, Some(30_000));
}

async fn cancel_statuses(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut legacy = RawClient::anon(&broker, kind).await;
    let mut modern = RawClient::anon(&broker, kind).await;
    let mut c = RawClient::anon(&broker, kind).await;
    let mut stranger = RawClient::anon(&broker, kind).await;
    register(&mut legacy, "rpc://prod/legacy", 1, false).await;
    register(&mut modern, "rpc://prod/modern", 1, true).await;
    // Unknown.
    assert_eq!(cancel(&mut c, uuid(9)).await, CancelStatus::Unknown);
    // Legacy worker: unsupported, the call goes on.
    c.send(None, &request(uuid(1), "rpc://prod/legacy", b""))
        .await;
    let l = next_request(&mut legacy).await;
    assert_eq!(cancel(&mut c, uuid(1)).await, CancelStatus::Unsupported);
    legacy.expect_quiet().await;
    l.send_to(&mut legacy).await;
    assert!(next_response(&mut c).await.end);
    // Finished calls are unknown (no tombstones).
    assert_eq!(cancel(&mut c, uuid(1)).await, CancelStatus::Unknown);
    // Supporting worker: forwarded, the worker gets kind 2 with its id.
    c.send(None, &request(uuid(2), "rpc://prod/modern", b""))
        .await;
    let m = next_request(&mut modern).await;
    // Only the caller's session may cancel.
    assert_eq!(cancel(&mut stranger, uuid(2)).await, CancelStatus::Unknown);
    modern.expect_quiet().await;
    assert_eq!(cancel(&mut c, uuid(2)).await, CancelStatus::Forwarded);
    assert_eq!(
        next_lifecycle(&mut modern).await,
        Lifecycle::WorkerSignal {
            id: m.id,
            reason: SignalReason::Explicit
        }
    );
    // A second cancel: already cancelled, no second signal.
    assert_eq!(
        cancel(&mut c, uuid(2)).await,
        CancelStatus::AlreadyCancelled
    );
    modern.expect_quiet().await;
    // Responses after the cancel are ignored; the caller sees nothing.
    m.send_to(&mut modern).await;
    modern.expect_quiet().await;
    // Queued call: removed.
    c.send(None, &request(uuid(3), "rpc://prod/modern", b""))
        .await;
    sync(&mut c).await;
    assert_eq!(broker.engines().rpc.queued_calls(), 1);
    assert_eq!(cancel(&mut c, uuid(3)).await, CancelStatus::QueuedRemoved);
    assert_eq!(broker.engines().rpc.queued_calls(), 0);
    c.expect_quiet().await;
    // Reason 2 (caller deadline) is passed on.
    modern.send(None, &Cancel::CleanupDone { id: m.id }).await;
    c.send(None, &request(uuid(4), "rpc://prod/modern", b""))
        .await;
    let m = next_request(&mut modern).await;
    c.send(
        None,
        &Cancel::Caller {
            id: uuid(4),
            reason: CancelReason::CallerDeadline,
        },
    )
    .await;
    assert_eq!(
        next_lifecycle(&mut c).await,
        Lifecycle::CallerResult {
            id: uuid(4),
            status: CancelStatus::Forwarded
        }
    );
    assert_eq!(
        next_lifecycle(&mut modern).await,
        Lifecycle::WorkerSignal {
            id: m.id,
            reason: SignalReason::CallerDeadline
        }
    );
}

async fn cleanup_ack_releases_credit(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut w = RawClient::anon(&broker, kind).await;
    let mut c = RawClient::anon(&broker, kind).await;
    register(&mut w, ROUTE, 1, true).await;
    c.send(None, &request(uuid(1), ROUTE, b"")).await;
    let first = next_request(&mut w).await;
    c.send(None, &request(uuid(2), ROUTE, b"")).await;
    assert_eq!(cancel(&mut c, uuid(1)).await, CancelStatus::Forwarded);
    next_lifecycle(&mut w).await;
    // The terminal response does not release a cancelled call's credit.
    first.send_to(&mut w).await;
    w.expect_quiet().await;
    // Acks for unknown calls and from other sessions are ignored.
    let mut other = RawClient::anon(&broker, kind).await;
    other
        .send(None, &Cancel::CleanupDone { id: first.id })
        .await;
    w.send(None, &Cancel::CleanupDone { id: uuid(77) }).await;
    w.expect_quiet().await;
    w.send(None, &Cancel::CleanupDone { id: first.id }).await;
    let second = next_request(&mut w).await;
    assert_ne!(second.id, uuid(2), "invocation UUID");
    second.send_to(&mut w).await;
    let r = next_response(&mut c).await;
    assert_eq!((r.id, r.end), (uuid(2), true));
    // An ack after a normal completion is ignored too (the official
    // worker sends one after every invocation).
    w.send(None, &Cancel::CleanupDone { id: second.id }).await;
    sync(&mut w).await;
    assert_eq!(broker.engines().rpc.live_calls(), 0);
    c.expect_quiet().await;
    // An ack before any cancel (the worker's own deadline fired first)
    // keeps the call; a later cancel then ends it at once, without grace.
    c.send(None, &request(uuid(3), ROUTE, b"")).await;
    let third = next_request(&mut w).await;
    w.send(None, &Cancel::CleanupDone { id: third.id }).await;
    sync(&mut w).await;
    assert_eq!(broker.engines().rpc.live_calls(), 1);
    assert_eq!(cancel(&mut c, uuid(3)).await, CancelStatus::Forwarded);
    next_lifecycle(&mut w).await;
    assert_eq!(broker.engines().rpc.live_calls(), 0);
    c.send(None, &request(uuid(4), ROUTE, b"")).await;
    next_request(&mut w).await;
}

async fn caller_disconnect_signals_supporting_workers(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut legacy = RawClient::anon(&broker, kind).await;
    let mut modern = RawClient::anon(&broker, kind).await;
    let mut c = RawClient::anon(&broker, kind).await;
    register(&mut legacy, "rpc://prod/legacy", 1, false).await;
    register(&mut modern, "rpc://prod/modern", 1, true).await;
    c.send(None, &request(uuid(1), "rpc://prod/legacy", b""))
        .await;
    c.send(None, &request(uuid(2), "rpc://prod/modern", b""))
        .await;
    c.send(None, &request(uuid(3), "rpc://prod/modern", b"queued"))
        .await;
    let l = next_request(&mut legacy).await;
    let m = next_request(&mut modern).await;
    sync(&mut c).await;
    drop(c);
    assert_eq!(
        next_lifecycle(&mut modern).await,
        Lifecycle::WorkerSignal {
            id: m.id,
            reason: SignalReason::CallerDisconnected
        }
    );
    // The queued call is gone; the legacy call finishes quietly.
    wait_live_calls(&broker, 2).await;
    l.send_to(&mut legacy).await;
    legacy.expect_quiet().await;
    modern.send(None, &Cancel::CleanupDone { id: m.id }).await;
    wait_live_calls(&broker, 0).await;
    modern.expect_quiet().await;
}

async fn grace_expiry_closes_the_worker(kind: Kind) {
    let broker = manual().await;
    let mut w = RawClient::anon(&broker, kind).await;
    let mut c = RawClient::anon(&broker, kind).await;
    register(&mut w, ROUTE, 1, true).await;
    c.send(None, &request(uuid(1), ROUTE, b"")).await;
    next_request(&mut w).await;
    assert_eq!(cancel(&mut c, uuid(1)).await, CancelStatus::Forwarded);
    next_lifecycle(&mut w).await;
    broker.clock().advance(Duration::from_millis(4_999));
    w.expect_quiet().await;
    broker.clock().advance(Duration::from_millis(1));
    w.expect_closed_with(kind, "grace").await;
    wait_live_calls(&broker, 0).await;
    c.expect_quiet().await;
    // A configured grace.
    let broker = manual_with(Config {
        rpc_cancellation_grace: Duration::from_millis(100),
        ..Config::default()
    })
    .await;
    let mut w = RawClient::anon(&broker, kind).await;
    let mut c = RawClient::anon(&broker, kind).await;
    register(&mut w, ROUTE, 1, true).await;
    c.send(None, &request(uuid(1), ROUTE, b"")).await;
    next_request(&mut w).await;
    assert_eq!(cancel(&mut c, uuid(1)).await, CancelStatus::Forwarded);
    next_lifecycle(&mut w).await;
    broker.clock().advance(Duration::from_millis(100));
    w.expect_closed_with(kind, "grace").await;
}

async fn broker_deadline_signals_supporting_workers(kind: Kind) {
    let broker = manual().await;
    let mut w = RawClient::anon(&broker, kind).await;
    let mut c = RawClient::anon(&broker, kind).await;
    register(&mut w, ROUTE, 1, true).await;
    c.send(None, &request(uuid(1), ROUTE, b"")).await;
    let got = next_request(&mut w).await;
    broker.clock().advance(Duration::from_secs(30));
    expect_error(&mut c, uuid(1), codes::RPC_TIMEOUT).await;
    assert_eq!(
        next_lifecycle(&mut w).await,
        Lifecycle::WorkerSignal {
            id: got.id,
            reason: SignalReason::BrokerDeadline
        }
    );
    // The caller has its answer: a cancel now is unknown.
    assert_eq!(cancel(&mut c, uuid(1)).await, CancelStatus::Unknown);
    // Credit is held until the ack.
    c.send(None, &request(uuid(2), ROUTE, b"")).await;
    w.expect_quiet().await;
    w.send(None, &Cancel::CleanupDone { id: got.id }).await;
    assert!(next_request(&mut w).await.id != got.id);
}

async fn malformed_cancel_is_discarded(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    for payload in [&[][..], &[1; 17], &[1; 19], &[9; 18], &[2; 18], &[1; 18]] {
        let mut b = BytesMut::new();
        let mut p = payload.to_vec();
        if payload == [1; 18] {
            p[17] = 7; // bad reason
        }
        encode_raw_record(&mut b, types::RPC_CANCEL, &p).unwrap();
        c.send_frame(&b).await;
    }
    // Labelled: still never answered.
    c.send(Some(5), &Cancel::CleanupDone { id: uuid(1) }).await;
    c.expect_quiet().await;
    sync(&mut c).await;
}

async fn unauthorized_is_6009(kind: Kind) {
    let broker = crate::support::jwt().await;
    let (mut reader, _) =
        RawClient::connect(&broker, kind, &token("dev", &["rpc://prod/tasks/**#read"])).await;
    let e = reader
        .fails(&SubscribeWorker {
            pattern: "rpc://prod/tasks/process".into(),
            max_concurrent: 1,
            extension_flags: None,
        })
        .await;
    assert_eq!(code(&e), codes::RPC_UNAUTHORIZED);
    reader
        .send(None, &request(uuid(1), "rpc://prod/tasks/process", b""))
        .await;
    expect_error(&mut reader, uuid(1), codes::RPC_UNAUTHORIZED).await;
    let (mut none, _) = RawClient::connect(&broker, kind, &token("dev", &["kv://**#*"])).await;
    none.send(None, &request(uuid(2), "rpc://prod/tasks/process", b""))
        .await;
    expect_error(&mut none, uuid(2), codes::RPC_UNAUTHORIZED).await;
    // A writer may call; a worker needs `#*` over its whole pattern.
    let (mut w, _) = RawClient::connect(&broker, kind, &token("dev", &["rpc://prod/**#*"])).await;
    let e = w
        .fails(&SubscribeWorker {
            pattern: "rpc://**".into(),
            max_concurrent: 1,
            extension_flags: None,
        })
        .await;
    assert_eq!(code(&e), codes::RPC_UNAUTHORIZED);
    register(&mut w, "rpc://prod/tasks/*", 1, false).await;
    let (mut writer, _) =
        RawClient::connect(&broker, kind, &token("dev", &["rpc://prod/tasks/**#write"])).await;
    writer
        .send(None, &request(uuid(3), "rpc://prod/tasks/process", b""))
        .await;
    assert_eq!(next_request(&mut w).await.id, uuid(3));
}

async fn families_are_isolated(kind: Kind) {
    let broker = crate::support::jwt().await;
    let (mut dev_worker, _) = RawClient::connect(&broker, kind, &token("dev", ALL)).await;
    let (mut acme_caller, _) = RawClient::connect(&broker, kind, &token("acme", ALL)).await;
    let (mut dev_caller, _) = RawClient::connect(&broker, kind, &token("dev", ALL)).await;
    register(&mut dev_worker, "rpc://**", 4, false).await;
    acme_caller.send(None, &request(uuid(1), ROUTE, b"")).await;
    expect_error(&mut acme_caller, uuid(1), codes::RPC_NO_WORKER).await;
    dev_caller
        .send(None, &request(uuid(1), ROUTE, b"dev"))
        .await;
    let got = next_request(&mut dev_worker).await;
    // The same live UUID in another family is independent (no 6007).
    let (mut acme_worker, _) = RawClient::connect(&broker, kind, &token("acme", ALL)).await;
    register(&mut acme_worker, ROUTE, 1, false).await;
    acme_caller
        .send(None, &request(uuid(1), ROUTE, b"acme"))
        .await;
    let acme_got = next_request(&mut acme_worker).await;
    assert_eq!(&acme_got.body[..], b"acme");
    dev_worker.expect_quiet().await;
    got.send_to(&mut dev_worker).await;
    assert_eq!(next_response(&mut dev_caller).await.id, uuid(1));
    acme_caller.expect_quiet().await;
    // The acme call with that UUID is not visible from family 1.
    got.send_to(&mut dev_worker).await;
    expect_error(&mut dev_worker, got.id, codes::RPC_CORRELATION_NOT_FOUND).await;
    acme_got.send_to(&mut acme_worker).await;
    assert_eq!(next_response(&mut acme_caller).await.id, uuid(1));
    dev_caller.expect_quiet().await;
}

async fn registration_limits(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut w = RawClient::anon(&broker, kind).await;
    for i in 0..128 {
        register(&mut w, &format!("rpc://w{i}/*"), 1, false).await;
    }
    let e = w
        .fails(&SubscribeWorker {
            pattern: "rpc://w999/*".into(),
            max_concurrent: 1,
            extension_flags: None,
        })
        .await;
    assert_eq!(
        (code(&e), &*e.message),
        (
            codes::RPC_SUBSCRIPTION_LIMIT,
            "wildcard subscription limit exceeded (128 per session)"
        )
    );
    // Duplicates are checked before the limit; exact routes still fit.
    register(&mut w, "rpc://w0/*", 1, false).await;
    register(&mut w, "rpc://exact/route", 1, false).await;
    assert_eq!(broker.engines().rpc.workers().len(), 129);
}
