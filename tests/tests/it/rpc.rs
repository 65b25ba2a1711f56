//! RPC: against scripted brokers (exact bytes, both capability regimes,
//! faults) and against the embedded broker over TCP and WebSocket.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fitz::rpc::{CallOptions, CancelOutcome, CancelReason, HandlerError, RpcRequest};
use fitz::{Client, ErrorKind, StaticToken};
use fitz_protocol::rpc::{
    self as wire, Cancel, CancelStatus, Lifecycle, Response, RpcId, SignalReason, SubscribeWorker,
};
use fitz_protocol::{Message, WireError, types};
use fitz_testkit::peer::{CAP_CORRELATION, Peer, Request, payloads};
use fitz_tests::{fast_reconnect, within};
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

/// Correlation and RPC cancellation (bits 0 and 3).
const CANCEL_CAPS: u32 = CAP_CORRELATION | 8;

// ===================================================================
// Scripted broker
// ===================================================================

struct Scripted {
    client: Client,
    peer: Peer,
    listener: fitz::transport::MemoryListener,
}

async fn scripted(caps: u32) -> Scripted {
    let (connector, mut listener) = fitz::transport::memory(1 << 20);
    let client = Client::builder("memory://rpc", StaticToken::anonymous())
        .connector(connector)
        .reconnect(fast_reconnect())
        .request_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let c = client.clone();
    let connecting = tokio::spawn(async move { c.connect().await });
    let mut peer = Peer::new(listener.accept().await.unwrap());
    peer.handshake(caps).await.unwrap();
    connecting.await.unwrap().unwrap();
    Scripted {
        client,
        peer,
        listener,
    }
}

impl Scripted {
    async fn next(&mut self, ty: u16) -> Request {
        let r = within("a record from the client", self.peer.read_request())
            .await
            .unwrap();
        assert_eq!(r.ty, ty, "{r:?}");
        r
    }

    /// Proves nothing else was written before: a notice goes out and is the
    /// next record the broker reads.
    async fn expect_quiet(&mut self) {
        self.client
            .notice()
            .publish("notice://rpc/test/marker", "m")
            .await
            .unwrap();
        self.next(types::NOTICE_PUBLISH).await;
    }

    /// Reads a SUBSCRIBE_WORKER, acknowledges it, returns its payload.
    async fn accept_worker(&mut self) -> SubscribeWorker {
        let r = self.next(types::RPC_SUBSCRIBE_WORKER).await;
        self.peer.reply(&r, &[0, 0, 0, 0, 0]).await.unwrap();
        SubscribeWorker::decode(r.payload).unwrap()
    }

    async fn push(&mut self, ty: u16, msg: &impl Message) {
        self.peer.send_record(ty, &msg.to_payload()).await.unwrap();
    }

    async fn deliver(
        &mut self,
        id: [u8; 16],
        route: &str,
        body: &'static [u8],
        budget: Option<u32>,
    ) {
        let d = wire::Request {
            id: RpcId(id),
            route: route.into(),
            body: Bytes::from_static(body),
            budget_ms: budget,
        };
        self.push(types::RPC_REQUEST, &d).await;
    }

    async fn respond(&mut self, id: RpcId, sequence: u64, end: bool, body: impl Into<Bytes>) {
        let r = Response {
            id,
            sequence,
            end,
            body: body.into(),
        };
        self.push(types::RPC_RESPONSE, &r).await;
    }

    async fn read_response(&mut self) -> Response {
        Response::decode(self.next(types::RPC_RESPONSE).await.payload).unwrap()
    }

    async fn read_cancel(&mut self) -> Cancel {
        Cancel::decode(self.next(types::RPC_CANCEL).await.payload).unwrap()
    }

    /// The session drops; the client reconnects to a fresh peer.
    async fn reconnect(&mut self, caps: u32) {
        let old = std::mem::replace(&mut self.peer, Peer::new(tokio::io::duplex(1).0));
        old.close().await;
        self.peer = Peer::new(within("a reconnect", self.listener.accept()).await.unwrap());
        self.peer.handshake(caps).await.unwrap();
    }
}

fn error_body(code: u32, message: &str) -> Bytes {
    Bytes::from(payloads::error(code, message))
}

fn coded(body: &Bytes) -> (u32, String) {
    let e = WireError::decode(body.clone()).unwrap();
    (e.code, e.message.to_string())
}

#[tokio::test]
async fn a_call_streams_chunks_in_order_and_carries_its_budget() {
    let mut s = scripted(CANCEL_CAPS).await;
    let rpc = s.client.rpc();
    let mut call = rpc
        .call_with(
            "rpc://shop/cart/items/list",
            "q",
            CallOptions::timeout(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    let r = s.next(types::RPC_REQUEST).await;
    assert_eq!(r.correlation, None, "REQUEST is never labelled");
    let req = wire::Request::decode(r.payload).unwrap();
    assert_eq!(&*req.route, "rpc://shop/cart/items/list");
    assert_eq!(&req.body[..], b"q");
    let budget = req.budget_ms.expect("the budget extension");
    assert!((29_000..=30_000).contains(&budget), "{budget}");
    assert_eq!(req.id.0[6] >> 4, 4, "a v4 UUID");

    s.respond(req.id, 0, false, "a").await;
    s.respond(req.id, 1, false, "b").await;
    s.respond(req.id, 2, true, "").await;
    assert_eq!(&call.next().await.unwrap().unwrap()[..], b"a");
    assert_eq!(&call.next().await.unwrap().unwrap()[..], b"b");
    assert!(
        call.next().await.is_none(),
        "the empty final chunk only ends it"
    );
    assert!(call.is_finished());
    // Finished: nothing to cancel, and nothing goes out.
    assert_eq!(call.cancel().await, CancelOutcome::Finished);
    drop(call);

    // `request` collects; a single chunk comes back as is.
    let collect = tokio::spawn(async move { rpc.request("rpc://shop/cart/get", "").await });
    let req = wire::Request::decode(s.next(types::RPC_REQUEST).await.payload).unwrap();
    assert_eq!(req.budget_ms, None, "no timeout, no budget");
    s.respond(req.id, 0, true, "whole").await;
    assert_eq!(&collect.await.unwrap().unwrap()[..], b"whole");
    s.expect_quiet().await;
}

/// Calls whose requests wait behind a full outbound buffer (the broker
/// reads nothing): each call is returned as soon as it is queued, and a
/// request the session never wrote fails its call through the response
/// stream with the error the write met: connection lost, not applied (a
/// written one: maybe applied), or closed when the client closes.
#[tokio::test]
async fn calls_queued_behind_a_full_buffer_fail_with_their_write_error() {
    let body = Bytes::from(vec![7u8; 60 * 1024]);
    for close in [false, true] {
        let mut s = scripted(CANCEL_CAPS).await;
        let rpc = s.client.rpc();
        let mut calls = Vec::new();
        // 4.7 MiB: past the transport's 1 MiB and the client's high-water
        // mark, so the later requests stay queued in the client.
        for _ in 0..80 {
            let call = within("a call that does not wait for its write", async {
                rpc.call("rpc://a/b", body.clone()).await
            })
            .await
            .unwrap();
            calls.push(call);
        }
        // The client is writing: the first request reaches the broker.
        s.next(types::RPC_REQUEST).await;
        if close {
            s.client.close().await;
        } else {
            s.reconnect(CANCEL_CAPS).await;
        }
        let (mut applied, mut not_applied) = (0, 0);
        for mut call in calls {
            let e = within("the call's failure", call.next())
                .await
                .expect("an error item")
                .unwrap_err();
            if close {
                assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
                continue;
            }
            assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
            assert!(e.is_retryable(), "{e}");
            if e.maybe_applied() {
                applied += 1;
            } else {
                not_applied += 1;
            }
            assert!(call.next().await.is_none(), "the error is the last item");
        }
        if !close {
            assert!(applied > 0, "the first requests were written");
            assert!(not_applied > 0, "the later ones never left");
        }
    }
}

#[tokio::test]
async fn a_legacy_broker_sees_legacy_bytes_and_cancel_is_unsupported() {
    let mut s = scripted(CAP_CORRELATION).await;
    let rpc = s.client.rpc();
    let mut call = rpc
        .call_with(
            "rpc://prod/app/work",
            "work",
            CallOptions::timeout(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    let r = s.next(types::RPC_REQUEST).await;
    assert_eq!(r.payload.len(), 16 + 4 + 19 + 4 + 4, "no budget extension");
    assert_eq!(call.cancel().await, CancelOutcome::Unsupported);
    assert!(call.next().await.is_none());
    drop(call);

    let worker = {
        let rpc = rpc.clone();
        tokio::spawn(async move {
            rpc.serve("rpc://prod/app/*", 4, |_req: RpcRequest| async {
                Ok::<_, HandlerError>("ok")
            })
            .await
        })
    };
    let r = s.next(types::RPC_SUBSCRIBE_WORKER).await;
    assert_eq!(r.payload.len(), 4 + 16 + 4, "no registration extension");
    s.peer.reply(&r, &[0, 0, 0, 0, 0]).await.unwrap();
    let worker = worker.await.unwrap().unwrap();
    assert!(!worker.supports_cancellation());
    let id = [3u8; 16];
    s.deliver(id, "rpc://prod/app/x", b"", None).await;
    let resp = s.read_response().await;
    assert_eq!((resp.id, resp.sequence, resp.end), (RpcId(id), 0, true));
    assert_eq!(&resp.body[..], b"ok");
    // No cleanup acknowledgement without the capability.
    s.expect_quiet().await;
    drop(worker);
}

#[tokio::test]
async fn rpc_works_on_an_uncorrelated_broker_with_cancellation() {
    // Capability bit 3 without bit 0, as the official client's tests use.
    let mut s = scripted(8).await;
    let (worker, registration, mut orders) = spawn_worker(&mut s, "rpc://u/v", 1).await;
    assert_eq!(registration.extension_flags, Some(1));
    s.deliver([1; 16], "rpc://u/v", b"in", Some(1_000)).await;
    let (req, answer) = orders.recv().await.unwrap();
    answer.send(Ok(Bytes::from_static(b"out"))).unwrap();
    drop(req);
    assert_eq!(&s.read_response().await.body[..], b"out");
    // An ordinary call gets no cleanup ack: the next record is the call's.

    let mut call = s.client.rpc().call("rpc://u/w", "").await.unwrap();
    let id = wire::Request::decode(s.next(types::RPC_REQUEST).await.payload)
        .unwrap()
        .id;
    let cancelling = tokio::spawn(async move { call.cancel().await });
    assert!(matches!(s.read_cancel().await, Cancel::Caller { id: i, .. } if i == id));
    let result = Lifecycle::CallerResult {
        id,
        status: CancelStatus::QueuedRemoved,
    };
    s.push(types::RPC_LIFECYCLE, &result).await;
    assert_eq!(cancelling.await.unwrap(), CancelOutcome::QueuedRemoved);
    shut_down(worker, &mut s).await;
}

#[tokio::test]
async fn an_explicit_cancel_reports_what_the_broker_did() {
    let mut s = scripted(CANCEL_CAPS).await;
    let mut call = s.client.rpc().call("rpc://a/b", "").await.unwrap();
    let id = wire::Request::decode(s.next(types::RPC_REQUEST).await.payload)
        .unwrap()
        .id;
    let cancelling = tokio::spawn(async move {
        let first = call.cancel().await;
        let again = call.cancel().await;
        (first, again, call.next().await.is_none())
    });
    assert_eq!(
        s.read_cancel().await,
        Cancel::Caller {
            id,
            reason: wire::CancelReason::Explicit
        }
    );
    // Someone else's outcome first: ignored.
    let other = Lifecycle::CallerResult {
        id: RpcId([9; 16]),
        status: CancelStatus::Unknown,
    };
    s.push(types::RPC_LIFECYCLE, &other).await;
    let ours = Lifecycle::CallerResult {
        id,
        status: CancelStatus::Forwarded,
    };
    s.push(types::RPC_LIFECYCLE, &ours).await;
    let (first, again, ended) = within("the cancel outcome", cancelling).await.unwrap();
    assert_eq!(first, CancelOutcome::Forwarded);
    assert_eq!(again, CancelOutcome::Forwarded, "remembered, not re-sent");
    assert!(ended);
    s.expect_quiet().await;
}

#[tokio::test(start_paused = true)]
async fn a_local_deadline_times_out_and_tells_the_broker_once() {
    let mut s = scripted(CANCEL_CAPS).await;
    let mut call = s
        .client
        .rpc()
        .call_with(
            "rpc://a/b",
            "",
            CallOptions::timeout(Duration::from_secs(2)),
        )
        .await
        .unwrap();
    let id = wire::Request::decode(s.next(types::RPC_REQUEST).await.payload)
        .unwrap()
        .id;
    let e = call.next().await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.maybe_applied());
    assert_eq!(
        s.read_cancel().await,
        Cancel::Caller {
            id,
            reason: wire::CancelReason::CallerDeadline
        }
    );
    assert!(call.next().await.is_none());
    assert_eq!(call.cancel().await, CancelOutcome::Unconfirmed);
    drop(call);
    s.expect_quiet().await;

    // A deadline already passed sends nothing; more than a day is refused.
    let rpc = s.client.rpc();
    let past = tokio::time::Instant::now() - Duration::from_millis(1);
    let e = rpc
        .call_with("rpc://a/b", "", CallOptions::deadline(past))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    let e = rpc
        .call_with(
            "rpc://a/b",
            "",
            CallOptions::timeout(Duration::from_secs(86_401)),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    s.expect_quiet().await;
}

#[tokio::test(start_paused = true)]
async fn the_brokers_timeout_at_the_end_of_the_budget_is_the_deadline() {
    let mut s = scripted(CANCEL_CAPS).await;
    let rpc = s.client.rpc();
    let timeout = CallOptions::timeout(Duration::from_secs(10));
    // Early: the broker's own limit, a broker error.
    let mut call = rpc
        .call_with("rpc://a/b", "", timeout.clone())
        .await
        .unwrap();
    let id = wire::Request::decode(s.next(types::RPC_REQUEST).await.payload)
        .unwrap()
        .id;
    s.respond(id, 0, true, error_body(6001, "broker timeout"))
        .await;
    let e = call.next().await.unwrap().unwrap_err();
    assert_eq!((e.kind(), e.code()), (ErrorKind::Broker, Some(6001)));
    // At the end of the budget it sent: this call's deadline, whoever
    // noticed first, and no cancellation follows.
    let mut call = rpc.call_with("rpc://a/b", "", timeout).await.unwrap();
    let id = wire::Request::decode(s.next(types::RPC_REQUEST).await.payload)
        .unwrap()
        .id;
    tokio::time::advance(Duration::from_secs(10)).await;
    s.respond(id, 0, true, error_body(6001, "broker timeout"))
        .await;
    // A round trip answered after it: the frame is in the call's buffer
    // before the call is polled (else the local timer may notice first).
    let notice = s.client.notice();
    let round_trip = tokio::spawn(async move { notice.unsubscribe_all().await });
    let r = s.next(types::NOTICE_UNSUBSCRIBE_ALL).await;
    s.peer.reply(&r, &[0]).await.unwrap();
    round_trip.await.unwrap().unwrap();
    let e = call.next().await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    drop(call);
    s.expect_quiet().await;
}

#[tokio::test]
async fn dropping_an_unfinished_call_cancels_it_and_a_finished_one_does_not() {
    let mut s = scripted(CANCEL_CAPS).await;
    let rpc = s.client.rpc();
    let call = rpc.call("rpc://a/b", "").await.unwrap();
    let id = wire::Request::decode(s.next(types::RPC_REQUEST).await.payload)
        .unwrap()
        .id;
    drop(call);
    assert_eq!(
        s.read_cancel().await,
        Cancel::Caller {
            id,
            reason: wire::CancelReason::Explicit
        }
    );

    let mut call = rpc.call("rpc://a/b", "").await.unwrap();
    let id = wire::Request::decode(s.next(types::RPC_REQUEST).await.payload)
        .unwrap()
        .id;
    s.respond(id, 0, true, "done").await;
    assert_eq!(&call.next().await.unwrap().unwrap()[..], b"done");
    drop(call);
    s.expect_quiet().await;
    assert_eq!(s.client.debug_snapshot().await.unwrap().push_handlers, 0);
}

#[tokio::test]
async fn broker_failures_are_typed_and_gaps_are_protocol_errors() {
    let mut s = scripted(CANCEL_CAPS).await;
    let rpc = s.client.rpc();
    let mut call = rpc.call("rpc://a/b", "").await.unwrap();
    let id = wire::Request::decode(s.next(types::RPC_REQUEST).await.payload)
        .unwrap()
        .id;
    s.respond(
        id,
        0,
        true,
        error_body(6004, "No workers registered for route"),
    )
    .await;
    let e = call.next().await.unwrap().unwrap_err();
    assert_eq!((e.kind(), e.code()), (ErrorKind::Broker, Some(6004)));
    assert!(e.is_retryable() && !e.maybe_applied());
    assert!(call.next().await.is_none());

    // A coded body outside 6001–6013 is data; a broker failure after
    // streamed chunks is still a failure.
    let mut call = rpc.call("rpc://a/b", "").await.unwrap();
    let id = wire::Request::decode(s.next(types::RPC_REQUEST).await.payload)
        .unwrap()
        .id;
    s.respond(id, 0, false, error_body(4001, "not ours")).await;
    s.respond(id, 0, true, error_body(6002, "worker gone"))
        .await;
    assert_eq!(
        call.next().await.unwrap().unwrap(),
        error_body(4001, "not ours")
    );
    let e = call.next().await.unwrap().unwrap_err();
    assert_eq!(e.code(), Some(6002));
    assert!(e.maybe_applied(), "6002: the worker may have run");

    // Out of order: a protocol error, and the call is cancelled.
    let mut call = rpc.call("rpc://a/b", "").await.unwrap();
    let id = wire::Request::decode(s.next(types::RPC_REQUEST).await.payload)
        .unwrap()
        .id;
    s.respond(id, 1, true, "late").await;
    let e = call.next().await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
    assert!(matches!(s.read_cancel().await, Cancel::Caller { id: i, .. } if i == id));

    // Wildcards and other schemes never leave the client.
    for bad in ["rpc://a/*", "rpc://a/**", "kv://a/b/c", "rpc://a//b"] {
        let e = rpc.call(bad, "").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}");
    }
    s.expect_quiet().await;
}

#[tokio::test]
async fn a_full_response_buffer_fails_the_call_and_cancels_it() {
    let mut s = scripted(CANCEL_CAPS).await;
    let mut call = s
        .client
        .rpc()
        .call_with("rpc://a/b", "", CallOptions::new().with_buffer(2))
        .await
        .unwrap();
    let id = wire::Request::decode(s.next(types::RPC_REQUEST).await.payload)
        .unwrap()
        .id;
    for seq in 0..3 {
        s.respond(id, seq, false, "x").await;
    }
    // What was buffered first, then the failure; the call is cancelled.
    assert!(call.next().await.unwrap().is_ok());
    assert!(call.next().await.unwrap().is_ok());
    let e = call.next().await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Backpressure, "{e}");
    assert!(e.maybe_applied());
    assert!(call.next().await.is_none());
    assert!(matches!(s.read_cancel().await, Cancel::Caller { id: i, .. } if i == id));
}

#[tokio::test]
async fn a_call_in_flight_when_the_session_drops_may_have_been_applied() {
    let mut s = scripted(CANCEL_CAPS).await;
    let mut call = s.client.rpc().call("rpc://a/b", "").await.unwrap();
    s.next(types::RPC_REQUEST).await;
    s.reconnect(CANCEL_CAPS).await;
    let e = call.next().await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    assert!(e.maybe_applied() && e.is_retryable());
    // Its session is gone: no cancellation is sent for it.
    assert_eq!(call.cancel().await, CancelOutcome::Finished);
    drop(call);
    s.expect_quiet().await;
}

// ----- workers against the scripted broker -----

/// A handler that reports each request and waits for the test to say how
/// to answer.
type Orders = mpsc::UnboundedReceiver<(RpcRequest, oneshot::Sender<Result<Bytes, HandlerError>>)>;

async fn spawn_worker(
    s: &mut Scripted,
    pattern: &'static str,
    max: u32,
) -> (fitz::rpc::RpcWorker, SubscribeWorker, Orders) {
    let (tx, rx) = mpsc::unbounded_channel();
    let rpc = s.client.rpc();
    let serving = tokio::spawn(async move {
        rpc.serve(pattern, max, move |req: RpcRequest| {
            let tx = tx.clone();
            async move {
                let (answer, wait) = oneshot::channel();
                let _ = tx.send((req, answer));
                wait.await
                    .unwrap_or_else(|_| Err(HandlerError::failed("the test went away")))
            }
        })
        .await
    });
    let registration = s.accept_worker().await;
    (serving.await.unwrap().unwrap(), registration, rx)
}

#[tokio::test]
async fn a_worker_answers_and_sends_no_cleanup_ack_for_an_ordinary_call() {
    let mut s = scripted(CANCEL_CAPS).await;
    let (worker, registration, mut orders) = spawn_worker(&mut s, "rpc://shop/*/add", 2).await;
    assert_eq!(&*registration.pattern, "rpc://shop/*/add");
    assert_eq!(registration.max_concurrent, 2);
    assert_eq!(registration.extension_flags, Some(1), "[1][1] appended");
    assert!(worker.supports_cancellation());

    let id = [1u8; 16];
    s.deliver(id, "rpc://shop/cart/add", b"sku", Some(60_000))
        .await;
    let (req, answer) = orders.recv().await.unwrap();
    assert_eq!(req.route(), "rpc://shop/cart/add");
    assert_eq!(&req.body()[..], b"sku");
    let left = req.remaining().unwrap();
    assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(50));
    assert_eq!(worker.in_flight(), 1);
    answer.send(Ok(Bytes::from_static(b"added"))).unwrap();
    let resp = s.read_response().await;
    assert_eq!((resp.id, resp.sequence, resp.end), (RpcId(id), 0, true));
    assert_eq!(&resp.body[..], b"added");
    drop(req);
    // The broker discards a cleanup ack for a call it did not cancel
    // (spec §4.3): none is sent.
    s.expect_quiet().await;
    assert_eq!(worker.in_flight(), 0);
    shut_down(worker, &mut s).await;
}

#[tokio::test]
async fn a_cancellation_arriving_after_the_answer_is_acknowledged_at_once() {
    let mut s = scripted(CANCEL_CAPS).await;
    let (worker, _, mut orders) = spawn_worker(&mut s, "rpc://a/b", 1).await;
    // The broker's deadline (or the caller's cancel) fired while the answer
    // was on its way: it ignores the answer and waits for the cleanup ack.
    let id = [7u8; 16];
    s.deliver(id, "rpc://a/b", b"", Some(5_000)).await;
    let (req, answer) = orders.recv().await.unwrap();
    answer.send(Ok(Bytes::from_static(b"done"))).unwrap();
    drop(req);
    assert_eq!(s.read_response().await.id, RpcId(id));
    s.expect_quiet().await;
    let signal = Lifecycle::WorkerSignal {
        id: RpcId(id),
        reason: SignalReason::BrokerDeadline,
    };
    s.push(types::RPC_LIFECYCLE, &signal).await;
    assert_eq!(s.read_cancel().await, Cancel::CleanupDone { id: RpcId(id) });
    s.expect_quiet().await;

    // The same for a delivery refused for want of room.
    s.deliver([8; 16], "rpc://a/b", b"", None).await;
    let (held, held_answer) = orders.recv().await.unwrap();
    s.deliver([9; 16], "rpc://a/b", b"", None).await;
    assert_eq!(s.read_response().await.id, RpcId([9; 16]));
    s.expect_quiet().await;
    let signal = Lifecycle::WorkerSignal {
        id: RpcId([9; 16]),
        reason: SignalReason::Explicit,
    };
    s.push(types::RPC_LIFECYCLE, &signal).await;
    assert_eq!(
        s.read_cancel().await,
        Cancel::CleanupDone { id: RpcId([9; 16]) }
    );
    // A call still running is acknowledged only once it is released.
    let signal = Lifecycle::WorkerSignal {
        id: RpcId([8; 16]),
        reason: SignalReason::Explicit,
    };
    s.push(types::RPC_LIFECYCLE, &signal).await;
    within("the cancellation", held.cancelled()).await;
    s.expect_quiet().await;
    held_answer.send(Ok(Bytes::new())).unwrap();
    drop(held);
    assert_eq!(
        s.read_cancel().await,
        Cancel::CleanupDone { id: RpcId([8; 16]) }
    );
    s.expect_quiet().await;
    shut_down(worker, &mut s).await;
}

/// Graceful shutdown against the scripted broker: UNSUBSCRIBE_WORKER
/// carries the pattern and is acknowledged.
async fn shut_down(worker: fitz::rpc::RpcWorker, s: &mut Scripted) {
    let pattern = worker.pattern().to_owned();
    let stopping = tokio::spawn(worker.shutdown());
    let r = s.next(types::RPC_UNSUBSCRIBE_WORKER).await;
    assert_eq!(
        wire::UnsubscribeWorker::decode(r.payload.clone())
            .unwrap()
            .route,
        pattern
    );
    s.peer.reply(&r, &[0]).await.unwrap();
    within("shutdown", stopping).await.unwrap().unwrap();
}

#[tokio::test]
async fn the_broker_can_cancel_a_running_request() {
    let mut s = scripted(CANCEL_CAPS).await;
    let (worker, _, mut orders) = spawn_worker(&mut s, "rpc://a/**", 1).await;
    let id = [2u8; 16];
    s.deliver(id, "rpc://a/b/c", b"", Some(30_000)).await;
    let (req, answer) = orders.recv().await.unwrap();
    assert!(!req.is_cancelled());
    let signal = Lifecycle::WorkerSignal {
        id: RpcId(id),
        reason: SignalReason::Explicit,
    };
    s.push(types::RPC_LIFECYCLE, &signal).await;
    within("the cancellation", req.cancelled()).await;
    assert_eq!(req.cancel_reason(), Some(CancelReason::CallerCancelled));
    // The broker ignores answers to a call it cancelled: none is sent, only
    // the cleanup acknowledgement once the request is released.
    answer.send(Ok(Bytes::from_static(b"ignored"))).unwrap();
    drop(req);
    assert_eq!(s.read_cancel().await, Cancel::CleanupDone { id: RpcId(id) });
    s.expect_quiet().await;
    shut_down(worker, &mut s).await;
}

#[tokio::test]
async fn an_expired_budget_fires_the_token_and_ends_the_call() {
    let mut s = scripted(CANCEL_CAPS).await;
    let rpc = s.client.rpc();
    let serving = tokio::spawn(async move {
        rpc.serve("rpc://a/b", 1, |req: RpcRequest| async move {
            req.cancelled().await;
            assert_eq!(req.cancel_reason(), Some(CancelReason::Deadline));
            // Drops without answering: the worker ends the call itself.
            Ok::<_, HandlerError>(())
        })
        .await
    });
    s.accept_worker().await;
    let worker = serving.await.unwrap().unwrap();
    s.deliver([4; 16], "rpc://a/b", b"", Some(50)).await;
    let resp = s.read_response().await;
    assert!(resp.end);
    assert_eq!(
        resp.body,
        Bytes::new(),
        "the handler's Ok(()) is an empty final chunk"
    );
    // The local deadline is not the broker's cancellation: no cleanup ack.
    s.expect_quiet().await;
    drop(worker);
}

#[tokio::test]
async fn deliveries_beyond_capacity_are_answered_overloaded() {
    let mut s = scripted(CANCEL_CAPS).await;
    let (worker, _, mut orders) = spawn_worker(&mut s, "rpc://a/b", 1).await;
    s.deliver([1; 16], "rpc://a/b", b"", None).await;
    let (req, answer) = orders.recv().await.unwrap();
    s.deliver([2; 16], "rpc://a/b", b"", None).await;
    let resp = s.read_response().await;
    assert_eq!(
        (resp.id, resp.sequence, resp.end),
        (RpcId([2; 16]), 0, true)
    );
    assert_eq!(
        coded(&resp.body),
        (6003, "Local RPC worker is overloaded".to_owned())
    );
    // The first one's final chunk frees the slot (before its cleanup).
    answer.send(Ok(Bytes::new())).unwrap();
    assert_eq!(s.read_response().await.id, RpcId([1; 16]));
    s.deliver([3; 16], "rpc://a/b", b"", None).await;
    let (third, answer3) = orders.recv().await.unwrap();
    drop(req);
    answer3.send(Ok(Bytes::new())).unwrap();
    drop(third);
    assert_eq!(s.read_response().await.id, RpcId([3; 16]));
    // No cleanup acks: the broker cancelled none of them.
    s.expect_quiet().await;
    shut_down(worker, &mut s).await;
}

#[tokio::test]
async fn handler_failures_and_abandoned_requests_end_the_call() {
    let mut s = scripted(CAP_CORRELATION).await;
    let rpc = s.client.rpc();
    let serving = tokio::spawn(async move {
        rpc.serve("rpc://h/*", 8, |req: RpcRequest| async move {
            match req.route() {
                "rpc://h/denied" => Err(HandlerError::unauthorized("no")),
                "rpc://h/parse" => {
                    let n: u32 = std::str::from_utf8(req.body())
                        .map_err(|e| HandlerError::failed(e.to_string()))?
                        .parse()?;
                    Ok(Bytes::from(n.to_string()))
                }
                "rpc://h/stream" => {
                    let out = req.stream();
                    out.send("1").await?;
                    out.send("2").await?;
                    // The Ok(()) ends it with an empty final chunk.
                    Ok(Bytes::new())
                }
                "rpc://h/twice" => {
                    req.respond("first").await?;
                    let e = req.respond("second").await.unwrap_err();
                    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
                    Ok(Bytes::from_static(b"ignored"))
                }
                "rpc://h/panic" => panic!("boom"),
                "rpc://h/huge" => Ok(Bytes::from(vec![b'x'; 70_000])),
                _ => Ok(Bytes::new()),
            }
        })
        .await
    });
    s.accept_worker().await;
    let worker = serving.await.unwrap().unwrap();

    s.deliver([1; 16], "rpc://h/denied", b"", None).await;
    assert_eq!(
        coded(&s.read_response().await.body),
        (6009, "no".to_owned())
    );
    s.deliver([2; 16], "rpc://h/parse", b"x", None).await;
    assert_eq!(coded(&s.read_response().await.body).0, 6010);
    s.deliver([3; 16], "rpc://h/parse", b"7", None).await;
    assert_eq!(&s.read_response().await.body[..], b"7");
    s.deliver([4; 16], "rpc://h/stream", b"", None).await;
    let chunks: Vec<_> = [
        s.read_response().await,
        s.read_response().await,
        s.read_response().await,
    ]
    .into_iter()
    .map(|r| (r.sequence, r.end, r.body))
    .collect();
    assert_eq!(
        chunks,
        [
            (0, false, Bytes::from_static(b"1")),
            (1, false, Bytes::from_static(b"2")),
            (2, true, Bytes::new())
        ]
    );
    s.deliver([5; 16], "rpc://h/twice", b"", None).await;
    let r = s.read_response().await;
    assert_eq!((&r.body[..], r.end), (&b"first"[..], true));
    s.expect_quiet().await;
    s.deliver([6; 16], "rpc://h/panic", b"", None).await;
    let r = s.read_response().await;
    assert_eq!(
        coded(&r.body),
        (6010, "the worker's handler panicked".to_owned())
    );
    assert!(
        worker.is_running(),
        "a panicking handler does not stop the worker"
    );
    s.deliver([7; 16], "rpc://h/huge", b"", None).await;
    let (code, message) = coded(&s.read_response().await.body);
    assert_eq!(code, 6010);
    assert!(message.contains("stream large answers"), "{message}");
    drop(worker);
}

/// The worker runs a handler's first step on its own task: a panic there,
/// before the handler's future even exists, is answered like any panic and
/// the worker goes on; a handler that waits moves to a task and finishes.
#[tokio::test]
async fn a_handler_panicking_in_its_first_step_is_answered_and_the_worker_goes_on() {
    let mut s = scripted(CAP_CORRELATION).await;
    let rpc = s.client.rpc();
    let serving = tokio::spawn(async move {
        rpc.serve("rpc://h/*", 8, |req: RpcRequest| {
            assert_ne!(req.route(), "rpc://h/now", "boom before the future");
            async move {
                if req.route() == "rpc://h/wait" {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Ok::<_, HandlerError>(req.body().clone())
            }
        })
        .await
    });
    s.accept_worker().await;
    let worker = serving.await.unwrap().unwrap();
    s.deliver([1; 16], "rpc://h/now", b"", None).await;
    let r = s.read_response().await;
    assert_eq!(
        coded(&r.body),
        (6010, "the worker's handler panicked".to_owned())
    );
    assert!(worker.is_running());
    s.deliver([2; 16], "rpc://h/wait", b"late", None).await;
    s.deliver([3; 16], "rpc://h/at-once", b"quick", None).await;
    let (a, b) = (s.read_response().await, s.read_response().await);
    // The quick one overtakes the one that waits.
    assert_eq!((a.id, &a.body[..]), (RpcId([3; 16]), &b"quick"[..]));
    assert_eq!((b.id, &b.body[..]), (RpcId([2; 16]), &b"late"[..]));
    drop(worker);
}

#[tokio::test]
async fn overlapping_workers_share_no_delivery_and_patterns_are_unique() {
    let mut s = scripted(CAP_CORRELATION).await;
    let (wide, _, mut wide_orders) = spawn_worker(&mut s, "rpc://a/**", 4).await;
    let (narrow, _, mut narrow_orders) = spawn_worker(&mut s, "rpc://a/b", 4).await;
    let rpc = s.client.rpc();
    let e = rpc
        .serve("rpc://a/b", 1, |_r: RpcRequest| async {
            Ok::<_, HandlerError>(())
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    for bad in ["rpc://a/b*", "notice://a/b/c"] {
        let e = rpc
            .serve(bad, 1, |_r: RpcRequest| async { Ok::<_, HandlerError>(()) })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}");
    }
    for max in [0, 1025] {
        let e = rpc
            .serve("rpc://z", max, |_r: RpcRequest| async {
                Ok::<_, HandlerError>(())
            })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{max}");
    }

    s.deliver([1; 16], "rpc://a/b", b"", None).await;
    s.deliver([2; 16], "rpc://a/c", b"", None).await;
    let (to_narrow, a1) = narrow_orders.recv().await.unwrap();
    let (to_wide, a2) = wide_orders.recv().await.unwrap();
    assert_eq!(to_narrow.route(), "rpc://a/b");
    assert_eq!(to_wide.route(), "rpc://a/c");
    a1.send(Ok(Bytes::new())).unwrap();
    a2.send(Ok(Bytes::new())).unwrap();
    let mut ids = [s.read_response().await.id, s.read_response().await.id];
    ids.sort();
    assert_eq!(ids, [RpcId([1; 16]), RpcId([2; 16])], "one answer each");
    s.expect_quiet().await;
    assert!(narrow_orders.try_recv().is_err() && wide_orders.try_recv().is_err());
    drop((to_narrow, to_wide));
    shut_down(narrow, &mut s).await;
    // The narrow pattern is free again; the wide worker now gets it all.
    s.deliver([3; 16], "rpc://a/b", b"", None).await;
    let (req, _answer) = wide_orders.recv().await.unwrap();
    assert_eq!(req.route(), "rpc://a/b");
    drop(wide);
}

#[tokio::test]
async fn a_worker_is_restored_verbatim_and_forgets_the_old_session() {
    let mut s = scripted(CANCEL_CAPS).await;
    let (worker, registration, mut orders) = spawn_worker(&mut s, "rpc://a/*", 2).await;
    s.deliver([1; 16], "rpc://a/b", b"", Some(60_000)).await;
    let (old, old_answer) = orders.recv().await.unwrap();
    s.reconnect(CANCEL_CAPS).await;
    let restored = s.accept_worker().await;
    assert_eq!(restored, registration, "the same bytes");
    within("the old request's cancellation", old.cancelled()).await;
    assert_eq!(old.cancel_reason(), Some(CancelReason::ConnectionLost));
    let e = old.respond("too late").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Stale);
    // Its handler ends; its answer goes nowhere.
    old_answer.send(Ok(Bytes::from_static(b"lost"))).unwrap();
    drop(old);

    // The same handle serves the new session; nothing from the old one
    // (answer, cleanup ack) reaches it.
    s.deliver([2; 16], "rpc://a/b", b"", None).await;
    let (fresh, answer) = orders.recv().await.unwrap();
    answer.send(Ok(Bytes::from_static(b"again"))).unwrap();
    let resp = s.read_response().await;
    assert_eq!((resp.id, &resp.body[..]), (RpcId([2; 16]), &b"again"[..]));
    drop(fresh);
    s.expect_quiet().await;
    assert!(worker.is_running());
    shut_down(worker, &mut s).await;
}

#[tokio::test]
async fn a_downstream_call_inherits_budget_and_cancellation() {
    let mut s = scripted(CANCEL_CAPS).await;
    let rpc = s.client.rpc();
    let (done_tx, done_rx) = oneshot::channel();
    let done_tx = Arc::new(std::sync::Mutex::new(Some(done_tx)));
    let serving = tokio::spawn(async move {
        let inner = rpc.clone();
        rpc.serve("rpc://chain/b", 1, move |req: RpcRequest| {
            let rpc = inner.clone();
            let done_tx = done_tx.clone();
            async move {
                let mut child = rpc
                    .call_from_request(&req, "rpc://chain/c", "child")
                    .await?;
                let outcome = child.next().await;
                if let Some(tx) = done_tx.lock().unwrap().take() {
                    let _ = tx.send(outcome.map(|r| r.map_err(|e| e.kind())));
                }
                // A parent already cancelled makes no further calls.
                let e = rpc
                    .call_from_request(&req, "rpc://chain/c", "")
                    .await
                    .unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Cancelled);
                Ok::<_, HandlerError>(())
            }
        })
        .await
    });
    s.accept_worker().await;
    let worker = serving.await.unwrap().unwrap();
    s.deliver([1; 16], "rpc://chain/b", b"", Some(20_000)).await;
    let child = wire::Request::decode(s.next(types::RPC_REQUEST).await.payload).unwrap();
    assert_eq!(&*child.route, "rpc://chain/c");
    let budget = child.budget_ms.unwrap();
    assert!((15_000..=20_000).contains(&budget), "inherited: {budget}");
    let signal = Lifecycle::WorkerSignal {
        id: RpcId([1; 16]),
        reason: SignalReason::Explicit,
    };
    s.push(types::RPC_LIFECYCLE, &signal).await;
    assert_eq!(
        s.read_cancel().await,
        Cancel::Caller {
            id: child.id,
            reason: wire::CancelReason::Explicit
        },
        "the child is cancelled with its parent"
    );
    let outcome = within("the child's end", done_rx).await.unwrap();
    assert_eq!(outcome, Some(Err(ErrorKind::Cancelled)));
    assert_eq!(
        s.read_cancel().await,
        Cancel::CleanupDone { id: RpcId([1; 16]) }
    );
    drop(worker);
}

#[tokio::test]
async fn a_graceful_shutdown_drains_before_it_unregisters() {
    let mut s = scripted(CANCEL_CAPS).await;
    let (worker, _, mut orders) = spawn_worker(&mut s, "rpc://a/b", 4).await;
    s.deliver([1; 16], "rpc://a/b", b"", None).await;
    let (req, answer) = orders.recv().await.unwrap();
    let mut stopping = Box::pin(worker.shutdown());
    // Polled once: the stop is requested before anything else happens.
    assert!(futures_util::FutureExt::now_or_never(stopping.as_mut()).is_none());
    // Taken no more: refused at once, retryable, never run.
    s.deliver([2; 16], "rpc://a/b", b"", None).await;
    let refused = s.read_response().await;
    assert_eq!(refused.id, RpcId([2; 16]));
    assert_eq!(
        coded(&refused.body),
        (6003, "the RPC worker is shutting down".to_owned())
    );
    assert!(orders.try_recv().is_err());
    // The running one finishes normally, then the worker unregisters.
    assert!(!req.is_cancelled());
    answer.send(Ok(Bytes::from_static(b"finished"))).unwrap();
    drop(req);
    assert_eq!(&s.read_response().await.body[..], b"finished");
    // No cleanup ack for either: the next record unregisters.
    let r = s.next(types::RPC_UNSUBSCRIBE_WORKER).await;
    s.peer.reply(&r, &[0]).await.unwrap();
    within("shutdown", stopping).await.unwrap();
}

#[tokio::test]
async fn dropping_a_worker_unregisters_in_the_background() {
    let mut s = scripted(CANCEL_CAPS).await;
    let (worker, _, mut orders) = spawn_worker(&mut s, "rpc://a/b", 1).await;
    s.deliver([1; 16], "rpc://a/b", b"", None).await;
    let (req, answer) = orders.recv().await.unwrap();
    drop(worker);
    within("shutdown cancellation", req.cancelled()).await;
    assert_eq!(req.cancel_reason(), Some(CancelReason::Shutdown));
    let r = s.next(types::RPC_UNSUBSCRIBE_WORKER).await;
    s.peer.reply(&r, &[0]).await.unwrap();
    // Running handlers are left to finish.
    answer.send(Ok(Bytes::from_static(b"late"))).unwrap();
    assert_eq!(&s.read_response().await.body[..], b"late");
    drop(req);
    // A local shutdown is not the broker's cancellation: no cleanup ack.
    s.expect_quiet().await;
}

#[tokio::test]
async fn json_calls_and_workers() {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Add {
        a: i64,
        b: i64,
    }
    let mut s = scripted(CAP_CORRELATION).await;
    let rpc = s.client.rpc();
    let serving = tokio::spawn(async move {
        rpc.serve_json(
            "rpc://math/add",
            2,
            |add: Add, _req: RpcRequest| async move { Ok::<_, HandlerError>(add.a + add.b) },
        )
        .await
    });
    s.accept_worker().await;
    let worker = serving.await.unwrap().unwrap();
    s.deliver([1; 16], "rpc://math/add", br#"{"a":2,"b":3}"#, None)
        .await;
    assert_eq!(&s.read_response().await.body[..], b"5");
    s.deliver([2; 16], "rpc://math/add", b"nope", None).await;
    assert_eq!(coded(&s.read_response().await.body).0, 6010);

    let rpc = s.client.rpc();
    let calling = tokio::spawn(async move {
        rpc.request_json::<_, i64>("rpc://math/add", &Add { a: 1, b: 1 })
            .await
    });
    let req = wire::Request::decode(s.next(types::RPC_REQUEST).await.payload).unwrap();
    assert_eq!(&req.body[..], br#"{"a":1,"b":1}"#);
    s.respond(req.id, 0, true, "2").await;
    assert_eq!(calling.await.unwrap().unwrap(), 2);
    drop(worker);
}

// ===================================================================
// The embedded broker (or the one named by FITZ_BROKER_*), TCP and WS
// ===================================================================

mod broker {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use bytes::Bytes;
    use fitz::rpc::{CallOptions, CancelOutcome, CancelReason, HandlerError, RpcRequest};
    use fitz::{Client, ErrorKind, Event, codes};
    use fitz_tests::{
        Brokers, BrokersExt, Proxy, connected as client, connected_with, wait_event, within,
    };
    use futures_util::StreamExt;
    use tokio::sync::{mpsc, watch};

    /// A unique route prefix per scenario and transport: tests share the
    /// brokers' state (and, against an external broker, other runs').
    fn routes(name: &str, url: &str) -> String {
        let transport = if url.starts_with("ws") { "ws" } else { "tcp" };
        format!("rpc://{}/{transport}", fitz_tests::realm(name))
    }

    /// Requests that report themselves and wait until told how to answer.
    type Held = mpsc::UnboundedReceiver<(RpcRequest, tokio::sync::oneshot::Sender<Bytes>)>;

    async fn holding_worker(
        client: &Client,
        pattern: &str,
        max: u32,
    ) -> (fitz::rpc::RpcWorker, Held) {
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = client
            .rpc()
            .serve(pattern, max, move |req: RpcRequest| {
                let tx = tx.clone();
                async move {
                    let (answer, wait) = tokio::sync::oneshot::channel();
                    let _ = tx.send((req, answer));
                    Ok::<_, HandlerError>(wait.await.unwrap_or_default())
                }
            })
            .await
            .unwrap();
        (worker, rx)
    }

    #[tokio::test]
    async fn round_trips_streams_and_typed_failures() {
        let brokers = Brokers::start().await.unwrap();
        for url in [&brokers.anon_tcp, &brokers.anon_ws] {
            let base = routes("basics", url);
            let server = client(url).await;
            let caller = client(url).await;
            assert!(
                caller
                    .server_capabilities()
                    .unwrap()
                    .contains(fitz::Capabilities::RPC_CANCELLATION)
            );
            let worker = server
                .rpc()
                .serve(&format!("{base}/*"), 8, |req: RpcRequest| async move {
                    if req.route().ends_with("/stream") {
                        let out = req.stream();
                        for chunk in ["one", "two", "three"] {
                            out.send(chunk).await?;
                        }
                        out.finish().await?;
                        return Ok(Bytes::new());
                    }
                    let mut echo = b"echo:".to_vec();
                    echo.extend_from_slice(req.body());
                    Ok::<_, HandlerError>(Bytes::from(echo))
                })
                .await
                .unwrap();
            assert!(worker.supports_cancellation());
            let rpc = caller.rpc();

            let answer = rpc.request(&format!("{base}/echo"), "hi").await.unwrap();
            assert_eq!(&answer[..], b"echo:hi", "{url}");

            let mut call = rpc.call(&format!("{base}/stream"), "").await.unwrap();
            let mut chunks = Vec::new();
            while let Some(chunk) = call.next().await {
                chunks.push(chunk.unwrap());
            }
            assert_eq!(chunks, ["one", "two", "three"], "{url}");

            let e = rpc
                .request(&format!("{base}-nobody/x"), "")
                .await
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Broker, "{url}: {e}");
            assert_eq!(e.code(), Some(codes::RPC_NO_WORKER));
            assert!(e.is_retryable() && !e.maybe_applied());

            let e = rpc.call(&format!("{base}/*"), "").await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "wildcards stay local");

            worker.shutdown().await.unwrap();
            let e = rpc.request(&format!("{base}/echo"), "").await.unwrap_err();
            assert_eq!(e.code(), Some(codes::RPC_NO_WORKER), "unregistered");
            server.close().await;
            caller.close().await;
        }
        brokers.shutdown().await;
    }

    #[tokio::test]
    async fn the_concurrency_limit_holds() {
        let brokers = Brokers::start().await.unwrap();
        for url in [&brokers.anon_tcp, &brokers.anon_ws] {
            let route = format!("{}/limit", routes("limit", url));
            let server = client(url).await;
            let caller = client(url).await;
            let running = Arc::new(AtomicUsize::new(0));
            let peak = Arc::new(AtomicUsize::new(0));
            let (gate_tx, gate) = watch::channel(false);
            let (seen_tx, mut seen) = watch::channel(0usize);
            let seen_tx = Arc::new(seen_tx);
            let (r, p) = (running.clone(), peak.clone());
            let worker = server
                .rpc()
                .serve(&route, 2, move |_req: RpcRequest| {
                    let (running, peak, mut gate, seen) =
                        (r.clone(), p.clone(), gate.clone(), seen_tx.clone());
                    async move {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        seen.send_modify(|n| *n += 1);
                        let _ = gate.wait_for(|open| *open).await;
                        running.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, HandlerError>("done")
                    }
                })
                .await
                .unwrap();
            let calls: Vec<_> = (0..5)
                .map(|_| {
                    let rpc = caller.rpc();
                    let route = route.clone();
                    tokio::spawn(async move { rpc.request(&route, "").await })
                })
                .collect();
            within("two running", seen.wait_for(|n| *n == 2))
                .await
                .unwrap();
            assert_eq!(worker.in_flight(), 2);
            gate_tx.send_replace(true);
            for call in calls {
                assert_eq!(&within("a call", call).await.unwrap().unwrap()[..], b"done");
            }
            assert_eq!(
                peak.load(Ordering::SeqCst),
                2,
                "never more than max_concurrent"
            );
            worker.shutdown().await.unwrap();
        }
        brokers.shutdown().await;
    }

    #[tokio::test]
    async fn a_worker_keeps_serving_after_the_connection_is_cut() {
        let brokers = Brokers::start().await.unwrap();
        for (url, addr) in [
            (&brokers.anon_tcp, brokers.anon_tcp_addr().unwrap()),
            (&brokers.anon_ws, brokers.anon_ws_addr().unwrap()),
        ] {
            let proxy = Proxy::start(addr).await.unwrap();
            let proxied = if url.starts_with("ws") {
                proxy.ws_url()
            } else {
                proxy.tcp_url()
            };
            let route = format!("{}/svc", routes("restore", url));
            let server = client(&proxied).await;
            let mut events = server.events();
            let worker = server
                .rpc()
                .serve(&route, 4, |_req: RpcRequest| async {
                    Ok::<_, HandlerError>("served")
                })
                .await
                .unwrap();
            let caller = client(url).await;
            assert_eq!(
                &caller.rpc().request(&route, "").await.unwrap()[..],
                b"served"
            );

            proxy.cut_all();
            wait_event(&mut events, |e| matches!(e, Event::Restored { count: 1 })).await;
            // The same handle serves again.
            assert_eq!(
                &caller.rpc().request(&route, "").await.unwrap()[..],
                b"served",
                "{url}"
            );
            assert!(worker.is_running());
            worker.shutdown().await.unwrap();
            server.close().await;
            caller.close().await;
        }
        brokers.shutdown().await;
    }

    #[tokio::test]
    async fn a_call_in_flight_during_a_cut_fails_maybe_applied() {
        let brokers = Brokers::start().await.unwrap();
        for (url, addr) in [
            (&brokers.anon_tcp, brokers.anon_tcp_addr().unwrap()),
            (&brokers.anon_ws, brokers.anon_ws_addr().unwrap()),
        ] {
            let proxy = Proxy::start(addr).await.unwrap();
            let proxied = if url.starts_with("ws") {
                proxy.ws_url()
            } else {
                proxy.tcp_url()
            };
            let route = format!("{}/svc", routes("inflight", url));
            let server = client(url).await;
            let (worker, mut held) = holding_worker(&server, &route, 1).await;
            let caller = client(&proxied).await;
            let mut call = caller.rpc().call(&route, "").await.unwrap();
            let (req, _answer) = within("the delivery", held.recv()).await.unwrap();
            proxy.cut_all();
            let e = within("the failure", call.next())
                .await
                .unwrap()
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Connection, "{url}: {e}");
            assert!(e.maybe_applied(), "the request was written");
            // The broker tells the worker its caller is gone.
            within("the worker's signal", req.cancelled()).await;
            assert_eq!(req.cancel_reason(), Some(CancelReason::CallerDisconnected));
            drop(req);
            drop(worker);
            server.close().await;
            caller.close().await;
        }
        brokers.shutdown().await;
    }

    #[tokio::test]
    async fn a_deadline_times_out_the_caller_and_cancels_the_worker() {
        let brokers = Brokers::start().await.unwrap();
        for url in [&brokers.anon_tcp, &brokers.anon_ws] {
            let route = format!("{}/slow", routes("deadline", url));
            let server = client(url).await;
            let (reasons_tx, mut reasons) = mpsc::unbounded_channel();
            let worker = server
                .rpc()
                .serve(&route, 1, move |req: RpcRequest| {
                    let reasons = reasons_tx.clone();
                    async move {
                        let budget = req.remaining();
                        req.cancelled().await;
                        // The handler answers only once the test has seen the
                        // caller's timeout: when the worker's own copy of the
                        // budget runs out first (it may, by a fraction of a
                        // millisecond, on a fast broker), an answer sent at
                        // once would race the caller's deadline and could
                        // arrive as the call's result.
                        let (release, released) = tokio::sync::oneshot::channel::<()>();
                        let _ = reasons.send((budget, req.cancel_reason(), release));
                        let _ = released.await;
                        Ok::<_, HandlerError>(())
                    }
                })
                .await
                .unwrap();
            let caller = client(url).await;
            let started = tokio::time::Instant::now();
            let mut call = caller
                .rpc()
                .call_with(&route, "", CallOptions::timeout(Duration::from_millis(300)))
                .await
                .unwrap();
            let e = within("the timeout", call.next())
                .await
                .unwrap()
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Timeout, "{url}: {e}");
            assert!(started.elapsed() < Duration::from_secs(2));
            let (budget, reason, release) =
                within("the worker's signal", reasons.recv()).await.unwrap();
            let budget = budget.expect("the budget reached the worker");
            assert!(budget <= Duration::from_millis(300), "{budget:?}");
            assert_eq!(reason, Some(CancelReason::Deadline));
            drop(release);
            // The credit comes back: the next call is served.
            let mut next = caller
                .rpc()
                .call_with(&route, "", CallOptions::timeout(Duration::from_millis(300)))
                .await
                .unwrap();
            assert_eq!(
                within("the next call", next.next())
                    .await
                    .unwrap()
                    .unwrap_err()
                    .kind(),
                ErrorKind::Timeout
            );
            let (_, reason, release) = within("the second signal", reasons.recv()).await.unwrap();
            assert_eq!(reason, Some(CancelReason::Deadline));
            drop(release);
            worker.shutdown().await.unwrap();
            server.close().await;
            caller.close().await;
        }
        brokers.shutdown().await;
    }

    #[tokio::test]
    async fn cancel_is_forwarded_and_the_cleanup_frees_the_credit() {
        let brokers = Brokers::start().await.unwrap();
        for url in [&brokers.anon_tcp, &brokers.anon_ws] {
            let route = format!("{}/job", routes("cancel", url));
            let server = client(url).await;
            let (worker, mut held) = holding_worker(&server, &route, 1).await;
            let caller = client(url).await;
            let rpc = caller.rpc();

            let mut call = rpc.call(&route, "first").await.unwrap();
            let (req, _answer) = within("the delivery", held.recv()).await.unwrap();
            assert_eq!(
                within("cancel", call.cancel()).await,
                CancelOutcome::Forwarded
            );
            assert!(call.next().await.is_none());
            within("the worker's signal", req.cancelled()).await;
            assert_eq!(req.cancel_reason(), Some(CancelReason::CallerCancelled));
            // Releasing the request acknowledges the cleanup; with
            // max_concurrent 1 the next call is served only then.
            drop((req, _answer));
            let again = route.clone();
            let next = tokio::spawn(async move { rpc.request(&again, "second").await });
            let (req, answer) = within("the next delivery", held.recv()).await.unwrap();
            assert_eq!(&req.body()[..], b"second");
            answer.send(Bytes::from_static(b"ok")).unwrap();
            assert_eq!(
                &within("the answer", next).await.unwrap().unwrap()[..],
                b"ok"
            );

            // Dropping an unfinished call cancels it too.
            let call = caller.rpc().call(&route, "x").await.unwrap();
            let (req, _answer) = within("the delivery", held.recv()).await.unwrap();
            drop(call);
            within("the drop's signal", req.cancelled()).await;
            assert_eq!(req.cancel_reason(), Some(CancelReason::CallerCancelled));
            drop(req);
            drop(worker);
            server.close().await;
            caller.close().await;
        }
        brokers.shutdown().await;
    }

    /// The worker sends a cleanup ack only for a call the broker cancelled.
    /// A caller that cancels right after its request races the worker's
    /// answer: the broker forwards the cancel, ignores the answer that
    /// arrives after it and holds the worker's one credit until the ack. The
    /// worker, done already, acknowledges when the signal arrives; a missing
    /// ack would hold the credit for the broker's grace period (5 s), and the
    /// next call would not be served within the 2 s allowed here.
    #[tokio::test]
    async fn a_cancel_racing_the_answer_still_frees_the_credit() {
        let brokers = Brokers::start().await.unwrap();
        for url in [&brokers.anon_tcp, &brokers.anon_ws] {
            let route = format!("{}/race", routes("cleanup-race", url));
            let server = client(url).await;
            let worker = server
                .rpc()
                .serve(&route, 1, |req: RpcRequest| async move {
                    Ok::<_, HandlerError>(req.body().clone())
                })
                .await
                .unwrap();
            let caller = client(url).await;
            let mut forwarded = 0;
            for i in 0..100 {
                let mut call = caller.rpc().call(&route, "x").await.unwrap();
                if call.cancel().await == CancelOutcome::Forwarded {
                    forwarded += 1;
                }
                let served = tokio::time::timeout(
                    Duration::from_secs(2),
                    caller.rpc().request(&route, "next"),
                )
                .await;
                let answer = served
                    .unwrap_or_else(|_| panic!("{url}: call {i}'s credit was not released"))
                    .unwrap();
                assert_eq!(&answer[..], b"next");
            }
            // The race itself was exercised: the cancel reached the worker
            // (after its answer, as the worker answers without waiting).
            assert!(forwarded > 0, "{url}: no cancel was forwarded");
            worker.shutdown().await.unwrap();
            server.close().await;
            caller.close().await;
        }
        brokers.shutdown().await;
    }

    #[tokio::test]
    async fn a_delivery_beyond_local_capacity_is_answered_overloaded() {
        let brokers = Brokers::start().await.unwrap();
        for url in [&brokers.anon_tcp, &brokers.anon_ws] {
            let base = routes("overload", url);
            let server = client(url).await;
            // Two registrations (credit 1 each) whose patterns overlap: the
            // broker may charge either, but the specific worker serves the route.
            let (wide, mut wide_held) = holding_worker(&server, &format!("{base}/**"), 1).await;
            let (narrow, mut narrow_held) = holding_worker(&server, &format!("{base}/x"), 1).await;
            let caller = client(url).await;
            let route = format!("{base}/x");
            let first = {
                let rpc = caller.rpc();
                let route = route.clone();
                tokio::spawn(async move { rpc.request(&route, "").await })
            };
            let (req, answer) = within("the first delivery", narrow_held.recv())
                .await
                .unwrap();
            let e = caller.rpc().request(&route, "").await.unwrap_err();
            assert_eq!(e.code(), Some(codes::RPC_BACKPRESSURE), "{e}");
            assert_eq!(e.message(), "Local RPC worker is overloaded");
            assert!(e.is_retryable() && !e.maybe_applied());
            answer.send(Bytes::from_static(b"one")).unwrap();
            drop(req);
            assert_eq!(&first.await.unwrap().unwrap()[..], b"one");
            assert!(wide_held.try_recv().is_err(), "the wide worker saw nothing");
            narrow.shutdown().await.unwrap();
            wide.shutdown().await.unwrap();
        }
        brokers.shutdown().await;
    }

    #[tokio::test]
    async fn a_chain_inherits_the_budget_and_stops_as_a_whole() {
        let brokers = Brokers::start().await.unwrap();
        for url in [&brokers.anon_tcp, &brokers.anon_ws] {
            let base = routes("chain", url);
            let (route_b, route_c) = (format!("{base}/b"), format!("{base}/c"));
            let (b_client, c_client, a_client) =
                (client(url).await, client(url).await, client(url).await);

            // C reports its arrivals, then how each ended.
            let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
            let (c_tx, mut c_seen) = mpsc::unbounded_channel();
            let c = c_client
                .rpc()
                .serve(&route_c, 1, move |req: RpcRequest| {
                    let (arrived, c_tx) = (arrived_tx.clone(), c_tx.clone());
                    async move {
                        let budget = req.remaining();
                        let _ = arrived.send(());
                        req.cancelled().await;
                        // Answers only once the test has read the signal: an
                        // answer sent as C's own copy of the budget runs out
                        // could otherwise reach A, through B, just before A's
                        // deadline.
                        let (release, released) = tokio::sync::oneshot::channel::<()>();
                        let _ = c_tx.send((budget, req.cancel_reason(), release));
                        let _ = released.await;
                        Ok::<_, HandlerError>(())
                    }
                })
                .await
                .unwrap();
            let b_rpc = b_client.rpc();
            let b = b_client
                .rpc()
                .serve(&route_b, 1, move |req: RpcRequest| {
                    let (rpc, route_c) = (b_rpc.clone(), route_c.clone());
                    async move {
                        let mut child = rpc.call_from_request(&req, &route_c, "child").await?;
                        while let Some(chunk) = child.next().await {
                            chunk?;
                        }
                        Ok::<_, HandlerError>(())
                    }
                })
                .await
                .unwrap();

            // A cancels: B is told, B's call to C is cancelled, C is told.
            let mut call = a_client
                .rpc()
                .call_with(&route_b, "", CallOptions::timeout(Duration::from_secs(5)))
                .await
                .unwrap();
            within("C's delivery", arrived.recv()).await.unwrap();
            assert_eq!(
                within("A's cancel", call.cancel()).await,
                CancelOutcome::Forwarded
            );
            let (budget, reason, release) = within("C's signal", c_seen.recv()).await.unwrap();
            drop(release);
            let budget = budget.expect("C got a budget");
            assert!(
                budget <= Duration::from_secs(5) && budget > Duration::from_secs(3),
                "{budget:?}"
            );
            assert_eq!(reason, Some(CancelReason::CallerCancelled));

            // A's deadline passes: everyone stops within it.
            let started = tokio::time::Instant::now();
            let mut call = a_client
                .rpc()
                .call_with(
                    &route_b,
                    "",
                    CallOptions::timeout(Duration::from_millis(700)),
                )
                .await
                .unwrap();
            let e = within("A's timeout", call.next())
                .await
                .unwrap()
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Timeout);
            within("C's delivery", arrived.recv()).await.unwrap();
            let (_, reason, release) = within("C's signal", c_seen.recv()).await.unwrap();
            drop(release);
            // C's own budget runs out, or B's call to it is cancelled as B's
            // budget runs out: either way the chain stops on time.
            assert!(
                matches!(
                    reason,
                    Some(CancelReason::Deadline | CancelReason::CallerCancelled)
                ),
                "{reason:?}"
            );
            assert!(started.elapsed() < Duration::from_millis(1500));

            b.shutdown().await.unwrap();
            c.shutdown().await.unwrap();
        }
        brokers.shutdown().await;
    }

    #[tokio::test]
    async fn a_token_without_rpc_permission_gets_6009() {
        let brokers = Brokers::start().await.unwrap();
        for url in [&brokers.auth_tcp, &brokers.auth_ws] {
            let client = connected_with(url, brokers.scoped_token(&["kv://**#*"])).await;
            let e = client
                .rpc()
                .request("rpc://secure/app/op", "")
                .await
                .unwrap_err();
            assert_eq!(
                (e.kind(), e.code()),
                (ErrorKind::Broker, Some(codes::RPC_UNAUTHORIZED)),
                "{url}: {e}"
            );
            assert!(!e.is_retryable());
            let e = client
                .rpc()
                .serve("rpc://secure/app/*", 1, |_r: RpcRequest| async {
                    Ok::<_, HandlerError>(())
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), Some(codes::RPC_UNAUTHORIZED), "{url}: {e}");
            client.close().await;
        }
        brokers.shutdown().await;
    }
}
