//! The actor against scripted peers over the in-memory transport, mostly
//! under paused time: state machine, handshake faults, both correlation
//! regimes, cancellation, timeouts, framing limits, restore.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use fitz_protocol::record::encode_raw_record;
use fitz_protocol::types;
use fitz_testkit::peer::{
    CAP_CORRELATION, CAP_SESSION_METADATA, Peer, Request, payloads, tcp_frame,
};
use futures_util::StreamExt;
use rand::Rng;
use rand::seq::SliceRandom;

use super::{Push, PushKey, RequestOptions};
use crate::transport::{MemoryListener, memory};
use crate::{
    Client, ClientBuilder, ErrorKind, Event, Overflow, ReconnectPolicy, State, SubscriptionOptions,
};

const GET: u16 = types::KV_GET;
const PUT: u16 = types::KV_PUT;

struct Harness {
    client: Client,
    peer: Peer,
    listener: MemoryListener,
    tokens: Arc<AtomicUsize>,
}

fn builder(tokens: &Arc<AtomicUsize>) -> (ClientBuilder, MemoryListener) {
    let (connector, listener) = memory(1 << 20);
    let t = tokens.clone();
    let b = Client::builder("memory://test", move || {
        let n = t.fetch_add(1, Ordering::SeqCst) + 1;
        async move { Ok::<_, std::io::Error>(format!("token-{n}")) }
    })
    .connector(connector)
    .reconnect(ReconnectPolicy {
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
        ..ReconnectPolicy::default()
    });
    (b, listener)
}

async fn start_with(caps: u32, configure: impl FnOnce(ClientBuilder) -> ClientBuilder) -> Harness {
    let tokens = Arc::new(AtomicUsize::new(0));
    let (b, mut listener) = builder(&tokens);
    let client = configure(b).build().unwrap();
    let c = client.clone();
    let connecting = tokio::spawn(async move { c.connect().await });
    let mut peer = Peer::new(listener.accept().await.unwrap());
    peer.handshake(caps).await.unwrap();
    connecting.await.unwrap().unwrap();
    Harness {
        client,
        peer,
        listener,
        tokens,
    }
}

async fn start(caps: u32) -> Harness {
    start_with(caps, |b| b).await
}

fn record(ty: u16, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    encode_raw_record(&mut b, ty, payload).unwrap();
    b.freeze()
}

fn request(
    client: &Client,
    ty: u16,
    payload: &[u8],
    opts: RequestOptions,
) -> tokio::task::JoinHandle<crate::Result<Bytes>> {
    let conn = client.connection().clone();
    let rec = record(ty, payload);
    tokio::spawn(async move { conn.request_record(ty, None, rec, opts).await })
}

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

async fn wait_state(client: &Client, want: State) {
    let mut w = client.watch_state();
    tokio::time::timeout(Duration::from_secs(60), w.wait_for(|s| *s == want))
        .await
        .unwrap_or_else(|_| panic!("state {want:?} never reached (at {:?})", client.state()))
        .unwrap();
}

/// Reconnect on `listener` and complete the handshake.
async fn reaccept(h: &mut Harness, caps: u32) {
    h.peer = Peer::new(h.listener.accept().await.unwrap());
    h.peer.handshake(caps).await.unwrap();
}

// ----- state machine and handshake -----

#[tokio::test(start_paused = true)]
async fn connect_walks_the_states_in_order() {
    let tokens = Arc::new(AtomicUsize::new(0));
    let (b, mut listener) = builder(&tokens);
    let client = b.build().unwrap();
    assert_eq!(client.state(), State::Disconnected);
    let mut seen = vec![State::Disconnected];
    let mut w = client.watch_state();
    let c = client.clone();
    let connecting = tokio::spawn(async move { c.connect().await });
    let mut peer = Peer::new(listener.accept().await.unwrap());
    let token = peer.read_connect().await.unwrap();
    assert_eq!(&token[..], b"token-1");
    // CONNECT is on the wire: Authenticating, and nothing is ready yet.
    assert_eq!(client.state(), State::Authenticating);
    assert!(client.server_capabilities().is_none());
    peer.send_hello(CAP_CORRELATION).await.unwrap();
    connecting.await.unwrap().unwrap();
    assert_eq!(client.state(), State::Authenticated);
    while w.has_changed().unwrap_or(false) {
        seen.push(*w.borrow_and_update());
    }
    // The watch may coalesce, but never reorders.
    let order = [
        State::Disconnected,
        State::Connecting,
        State::Connected,
        State::Authenticating,
        State::Authenticated,
    ];
    let pos: Vec<usize> = seen
        .iter()
        .map(|s| order.iter().position(|o| o == s).unwrap())
        .collect();
    assert!(pos.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(client.server_capabilities().unwrap().0, CAP_CORRELATION);
    // connect() on a ready client is a no-op.
    client.connect().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_lost_session_reconnects_with_a_fresh_token() {
    let mut h = start(CAP_CORRELATION).await;
    let mut events = h.client.events();
    let mut w = h.client.watch_state();
    let old = std::mem::replace(&mut h.peer, Peer::new(tokio::io::duplex(1).0));
    old.close().await;
    w.wait_for(|s| *s == State::Reconnecting).await.unwrap();
    h.peer = Peer::new(h.listener.accept().await.unwrap());
    let token = h.peer.read_connect().await.unwrap();
    assert_eq!(&token[..], b"token-2", "the provider is asked again");
    assert_eq!(h.tokens.load(Ordering::SeqCst), 2);
    assert_eq!(h.client.state(), State::Authenticating);
    h.peer.send_hello(CAP_CORRELATION).await.unwrap();
    wait_state(&h.client, State::Authenticated).await;
    let mut kinds = Vec::new();
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(1), events.recv()).await {
        kinds.push(
            format!("{ev:?}")
                .split([' ', '{', '('])
                .next()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(
        kinds,
        [
            "Disconnected",
            "ReconnectScheduled",
            "Restored",
            "Connected"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn close_during_backoff_returns_promptly() {
    let mut h = start_with(CAP_CORRELATION, |b| {
        b.reconnect(ReconnectPolicy {
            base_delay: Duration::from_secs(3600),
            max_delay: Duration::from_secs(3600),
            ..ReconnectPolicy::default()
        })
    })
    .await;
    let old = std::mem::replace(&mut h.peer, Peer::new(tokio::io::duplex(1).0));
    old.close().await;
    // Wait for the backoff to be scheduled.
    let mut events = h.client.events();
    loop {
        if let Some(Event::ReconnectScheduled { .. }) = events.recv().await {
            break;
        }
    }
    let before = tokio::time::Instant::now();
    h.client.close().await;
    assert!(
        before.elapsed() < Duration::from_secs(1),
        "close waited out the backoff"
    );
    assert_eq!(h.client.state(), State::Closed);
    h.client.close().await; // idempotent
    let e = h.client.connect().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed);
}

/// Accepts the next connection and closes it right after CONNECT, as a
/// broker refusing the token over TCP does (or a cut at that instant).
async fn close_after_connect(listener: &mut MemoryListener) {
    let mut peer = Peer::new(listener.accept().await.unwrap());
    peer.read_connect().await.unwrap();
    peer.close().await;
}

#[tokio::test(start_paused = true)]
async fn auth_rejection_is_terminal_and_typed_after_the_configured_streak() {
    let tokens = Arc::new(AtomicUsize::new(0));
    let (b, mut listener) = builder(&tokens);
    let client = b.build().unwrap();
    let mut events = client.events();
    let c = client.clone();
    let connecting = tokio::spawn(async move { c.connect().await });
    // The default three handshakes in a row, each with a fresh token.
    for _ in 0..3 {
        close_after_connect(&mut listener).await;
    }
    let e = connecting.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    assert!(!e.is_retryable());
    // Final when the call returns.
    assert_eq!(client.state(), State::Closed);
    assert_eq!(
        tokens.load(Ordering::SeqCst),
        3,
        "a fresh token per attempt"
    );
    let mut rejected = false;
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(1), events.recv()).await {
        rejected |= matches!(ev, Event::AuthRejected { .. });
        assert!(
            !matches!(ev, Event::ReconnectScheduled { .. }),
            "a first connect is not a reconnect"
        );
    }
    assert!(rejected);
    assert_eq!(
        client.connect().await.unwrap_err().kind(),
        ErrorKind::Closed
    );
    assert_eq!(
        client
            .connect_when_ready(Duration::from_secs(5))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Closed
    );
}

#[tokio::test(start_paused = true)]
async fn one_attempt_is_enough_when_configured() {
    let tokens = Arc::new(AtomicUsize::new(0));
    let (b, mut listener) = builder(&tokens);
    let client = b.auth_attempts(1).build().unwrap();
    let c = client.clone();
    let connecting = tokio::spawn(async move { c.connect().await });
    close_after_connect(&mut listener).await;
    let e = connecting.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    assert_eq!(client.state(), State::Closed);
    assert_eq!(tokens.load(Ordering::SeqCst), 1);
    assert!(
        Client::builder("memory://x", crate::StaticToken::anonymous())
            .connector(memory(16).0)
            .auth_attempts(0)
            .build()
            .is_err()
    );
}

/// The fault this guards against: one connection lost while the client
/// waits for SERVER_HELLO (a cut, a broker restarting behind a proxy) ended
/// the client for good as an authentication rejection.
#[tokio::test(start_paused = true)]
async fn a_close_during_the_handshake_is_retried_and_the_client_connects() {
    let tokens = Arc::new(AtomicUsize::new(0));
    let (b, mut listener) = builder(&tokens);
    let client = b.build().unwrap();
    let c = client.clone();
    let connecting = tokio::spawn(async move { c.connect().await });
    close_after_connect(&mut listener).await;
    close_after_connect(&mut listener).await;
    let mut peer = Peer::new(listener.accept().await.unwrap());
    let token = peer.handshake(CAP_CORRELATION).await.unwrap();
    connecting.await.unwrap().unwrap();
    assert_eq!(client.state(), State::Authenticated);
    assert_eq!(
        &token[..],
        b"token-3",
        "each attempt asked for a fresh token"
    );
}

#[tokio::test(start_paused = true)]
async fn a_network_failure_restarts_the_refusal_count() {
    let mut h = start(CAP_CORRELATION).await;
    // Two ambiguous closes, a handshake that times out (a network failure),
    // two more ambiguous closes, then a broker that answers: four closes in
    // all, never three in a row, so the client lives.
    let old = std::mem::replace(&mut h.peer, Peer::new(tokio::io::duplex(1).0));
    old.close().await;
    close_after_connect(&mut h.listener).await;
    close_after_connect(&mut h.listener).await;
    let mut silent = Peer::new(h.listener.accept().await.unwrap());
    silent.read_connect().await.unwrap();
    // The connect timeout passes (paused time) without a hello.
    close_after_connect(&mut h.listener).await;
    close_after_connect(&mut h.listener).await;
    reaccept(&mut h, CAP_CORRELATION).await;
    wait_state(&h.client, State::Authenticated).await;
    drop(silent);
}

#[tokio::test(start_paused = true)]
async fn auth_rejection_during_reconnect_closes_for_good() {
    let mut h = start(CAP_CORRELATION).await;
    let mut events = h.client.events();
    let mut sub = subscribe(&mut h, "notice://a/b/*", 1, SubscriptionOptions::default()).await;
    let old = std::mem::replace(&mut h.peer, Peer::new(tokio::io::duplex(1).0));
    old.close().await;
    for _ in 0..3 {
        close_after_connect(&mut h.listener).await;
    }
    wait_state(&h.client, State::Closed).await;
    let mut rejected = false;
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(1), events.recv()).await {
        rejected |= matches!(ev, Event::AuthRejected { .. });
    }
    assert!(rejected);
    let last = sub.next().await.unwrap().unwrap_err();
    assert_eq!(last.kind(), ErrorKind::Auth);
    assert!(sub.next().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn connect_fails_retryably_without_a_hello() {
    let tokens = Arc::new(AtomicUsize::new(0));
    let (b, mut listener) = builder(&tokens);
    let client = b.connect_timeout(Duration::from_secs(2)).build().unwrap();
    let c = client.clone();
    let connecting = tokio::spawn(async move { c.connect().await });
    let mut peer = Peer::new(listener.accept().await.unwrap());
    peer.read_connect().await.unwrap();
    let e = connecting.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.is_retryable());
    assert_eq!(client.state(), State::Disconnected);
    // A late hello on a new attempt works (the crate's tests delay it).
    let c = client.clone();
    let connecting = tokio::spawn(async move { c.connect().await });
    let mut peer = Peer::new(listener.accept().await.unwrap());
    peer.read_connect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    peer.send_hello(0).await.unwrap();
    connecting.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_hello_sharing_its_frame_is_a_protocol_error() {
    let tokens = Arc::new(AtomicUsize::new(0));
    let (b, mut listener) = builder(&tokens);
    let client = b.build().unwrap();
    let c = client.clone();
    let connecting = tokio::spawn(async move { c.connect().await });
    let mut peer = Peer::new(listener.accept().await.unwrap());
    peer.read_connect().await.unwrap();
    let mut body = BytesMut::new();
    encode_raw_record(&mut body, types::SERVER_HELLO, &[0, 1, 0, 0, 0, 1]).unwrap();
    encode_raw_record(
        &mut body,
        types::NOTICE_NOTIFY,
        &payloads::notify(1, "notice://a/b/c", b""),
    )
    .unwrap();
    peer.send_frame(&body).await.unwrap();
    let e = connecting.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Protocol);
    assert_eq!(client.state(), State::Disconnected);
}

#[tokio::test(start_paused = true)]
async fn session_metadata_only_when_advertised() {
    let mut h = start_with(CAP_CORRELATION | CAP_SESSION_METADATA, |b| {
        b.service_name("  orders  ")
    })
    .await;
    let r = h.peer.read_request().await.unwrap();
    assert_eq!(r.ty, types::SESSION_METADATA);
    assert_eq!(&r.payload[..], b"\0\0\0\x06orders");

    let mut h = start_with(CAP_CORRELATION, |b| b.service_name("orders")).await;
    let t = request(&h.client, GET, b"x", RequestOptions::default());
    let r = h.peer.read_request().await.unwrap();
    assert_eq!(r.ty, GET, "no SESSION_METADATA without bit 1");
    h.peer.reply(&r, b"\0").await.unwrap();
    t.await.unwrap().unwrap();
}

// ----- correlated regime -----

#[tokio::test(start_paused = true)]
async fn correlation_survives_1000_concurrent_requests_with_random_cancellation() {
    let mut h = start_with(CAP_CORRELATION, |b| b.max_in_flight(2048)).await;
    let n = 1000u32;
    let mut tasks = Vec::new();
    let mut rng = rand::rng();
    for i in 0..n {
        let conn = h.client.connection().clone();
        let rec = record(GET, &i.to_be_bytes());
        // About a third give up: some before their request is written, some after.
        let cancel_after = rng
            .random_bool(0.33)
            .then(|| Duration::from_millis(rng.random_range(0..20)));
        tasks.push(tokio::spawn(async move {
            let fut = conn.request_record(GET, None, rec, RequestOptions::default());
            match cancel_after {
                None => Some((i, fut.await)),
                Some(d) => tokio::time::timeout(d, fut).await.ok().map(|r| (i, r)),
            }
        }));
    }
    // The peer reads what was written and answers in a random order,
    // echoing each request's number.
    let mut reqs: Vec<Request> = Vec::new();
    while let Ok(r) = tokio::time::timeout(Duration::from_millis(50), h.peer.read_request()).await {
        reqs.push(r.unwrap());
    }
    assert!(reqs.iter().all(|r| r.correlation.is_some() && r.ty == GET));
    let mut ids: Vec<u64> = reqs.iter().map(|r| r.correlation.unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), reqs.len(), "correlation ids are never reused");
    reqs.shuffle(&mut rng);
    for r in &reqs {
        let mut p = vec![0u8];
        p.extend_from_slice(&r.payload);
        h.peer.reply(r, &p).await.unwrap();
    }
    let mut answered = 0;
    for t in tasks {
        if let Some((i, result)) = t.await.unwrap() {
            let reply = result.unwrap();
            assert_eq!(&reply[1..], &i.to_be_bytes(), "reply misrouted");
            answered += 1;
        }
    }
    assert!(answered > 500);
    settle().await;
    let snap = h.client.debug_snapshot().await.unwrap();
    assert_eq!(snap.pending, 0, "{snap:?}");
    assert_eq!(snap.backlog, 0);
    assert_eq!(snap.free_permits, 2048, "every in-flight permit came back");
}

#[tokio::test(start_paused = true)]
async fn same_type_replies_may_arrive_in_any_order() {
    let mut h = start(CAP_CORRELATION).await;
    let a = request(&h.client, GET, b"a", RequestOptions::default());
    let b = request(&h.client, GET, b"b", RequestOptions::default());
    let ra = h.peer.read_request().await.unwrap();
    let rb = h.peer.read_request().await.unwrap();
    h.peer.reply(&rb, b"\0B").await.unwrap();
    // An answer for an id nobody asked about is dropped, not fatal.
    h.peer
        .send_labelled(Some(999_999), GET, b"\0?")
        .await
        .unwrap();
    h.peer.reply(&ra, b"\0A").await.unwrap();
    assert_eq!(&a.await.unwrap().unwrap()[..], b"\0A");
    assert_eq!(&b.await.unwrap().unwrap()[..], b"\0B");
    assert_eq!(h.client.state(), State::Authenticated);
}

#[tokio::test(start_paused = true)]
async fn a_malformed_label_drops_the_connection() {
    let mut h = start(CAP_CORRELATION).await;
    let t = request(&h.client, GET, b"a", RequestOptions::default());
    let r = h.peer.read_request().await.unwrap();
    // CORRELATED with nothing after it.
    let mut body = BytesMut::new();
    fitz_protocol::record::put_label(&mut body, types::CORRELATED, r.correlation.unwrap());
    h.peer.send_frame(&body).await.unwrap();
    let e = t.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection);
    assert!(e.maybe_applied(), "the request was written");
    wait_state(&h.client, State::Reconnecting).await;
}

#[tokio::test(start_paused = true)]
async fn timeouts_know_whether_the_request_was_written() {
    let mut h = start(CAP_CORRELATION).await;
    let t = request(
        &h.client,
        GET,
        b"a",
        RequestOptions::timeout(Duration::from_secs(1)),
    );
    let r = h.peer.read_request().await.unwrap();
    let e = t.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(e.maybe_applied());
    // The late answer is harmless.
    h.peer.reply(&r, b"\0").await.unwrap();
    settle().await;
    assert_eq!(h.client.debug_snapshot().await.unwrap().pending, 0);
}

// ----- uncorrelated (legacy) regime -----

#[tokio::test(start_paused = true)]
async fn legacy_broker_gets_one_request_per_type_on_the_wire() {
    let mut h = start(0).await;
    let a = request(&h.client, GET, b"a", RequestOptions::default());
    settle().await;
    let b = request(&h.client, GET, b"b", RequestOptions::default());
    settle().await;
    let p = request(&h.client, PUT, b"p", RequestOptions::default());
    let first = h.peer.read_request().await.unwrap();
    assert_eq!(
        (first.ty, first.correlation, &first.payload[..]),
        (GET, None, &b"a"[..])
    );
    // Another type interleaves freely; the second GET waits for the first's reply.
    let second = h.peer.read_request().await.unwrap();
    assert_eq!((second.ty, &second.payload[..]), (PUT, &b"p"[..]));
    assert!(
        tokio::time::timeout(Duration::from_millis(100), h.peer.read_request())
            .await
            .is_err(),
        "a second GET went out while one was in flight"
    );
    h.peer.reply(&first, b"\0A").await.unwrap();
    let third = h.peer.read_request().await.unwrap();
    assert_eq!(&third.payload[..], b"b");
    h.peer.reply(&third, b"\0B").await.unwrap();
    h.peer.reply(&second, b"\0P").await.unwrap();
    assert_eq!(&a.await.unwrap().unwrap()[..], b"\0A");
    assert_eq!(&b.await.unwrap().unwrap()[..], b"\0B");
    assert_eq!(&p.await.unwrap().unwrap()[..], b"\0P");
}

#[tokio::test(start_paused = true)]
async fn legacy_tombstones_swallow_late_replies() {
    let mut h = start(0).await;
    // A gives up after it was written: its lane keeps a tombstone.
    let a = request(
        &h.client,
        GET,
        b"a",
        RequestOptions::timeout(Duration::from_secs(1)),
    );
    let ra = h.peer.read_request().await.unwrap();
    assert_eq!(a.await.unwrap().unwrap_err().kind(), ErrorKind::Timeout);
    let snap = h.client.debug_snapshot().await.unwrap();
    assert_eq!(snap.tombstones, 1);
    // B (same type) must wait behind the tombstone; C is dropped before it is written.
    let b = request(&h.client, GET, b"b", RequestOptions::default());
    let c = request(&h.client, GET, b"c", RequestOptions::default());
    settle().await;
    c.abort();
    assert!(
        tokio::time::timeout(Duration::from_millis(100), h.peer.read_request())
            .await
            .is_err()
    );
    // A's late answer is swallowed, not given to B.
    h.peer.reply(&ra, b"\0late").await.unwrap();
    let rb = h.peer.read_request().await.unwrap();
    assert_eq!(&rb.payload[..], b"b");
    h.peer.reply(&rb, b"\0B").await.unwrap();
    assert_eq!(&b.await.unwrap().unwrap()[..], b"\0B");
    assert!(
        tokio::time::timeout(Duration::from_millis(100), h.peer.read_request())
            .await
            .is_err(),
        "the abandoned, unwritten request must not be sent"
    );
    settle().await;
    let snap = h.client.debug_snapshot().await.unwrap();
    assert_eq!((snap.pending, snap.tombstones), (0, 0), "{snap:?}");
}

// ----- framing -----

#[tokio::test(start_paused = true)]
async fn a_near_limit_frame_dripped_in_small_reads_loses_nothing() {
    let mut h = start_with(CAP_CORRELATION, |b| b.max_in_flight(256)).await;
    let big = request(&h.client, GET, b"big", RequestOptions::default());
    let rbig = h.peer.read_request().await.unwrap();
    let mut payload = vec![0u8];
    payload.extend((0..60 * 1024).map(|i| (i % 251) as u8));
    let frame = tcp_frame(rbig.correlation, GET, &payload).unwrap();
    let half = frame.len() / 2;
    // Half the big frame trickles in; meanwhile the client keeps writing.
    h.peer.send_dripped(&frame[..half], 7).await.unwrap();
    let others: Vec<_> = (0..50u32)
        .map(|i| request(&h.client, PUT, &i.to_be_bytes(), RequestOptions::default()))
        .collect();
    let mut small = Vec::new();
    for _ in 0..50 {
        small.push(h.peer.read_request().await.unwrap());
    }
    h.peer.send_dripped(&frame[half..], 13).await.unwrap();
    for r in &small {
        let mut p = vec![0u8];
        p.extend_from_slice(&r.payload);
        h.peer.reply(r, &p).await.unwrap();
    }
    let reply = big.await.unwrap().unwrap();
    assert_eq!(&reply[..], &payload[..]);
    for (i, t) in others.into_iter().enumerate() {
        assert_eq!(&t.await.unwrap().unwrap()[1..], &(i as u32).to_be_bytes());
    }
}

#[tokio::test(start_paused = true)]
async fn an_oversized_length_prefix_fails_the_connection_cleanly() {
    let mut h = start(CAP_CORRELATION).await;
    let mut events = h.client.events();
    let t = request(&h.client, GET, b"a", RequestOptions::default());
    h.peer.read_request().await.unwrap();
    h.peer
        .send_raw(&[0x7F, 0xFF, 0xFF, 0xF0, 1, 2, 3])
        .await
        .unwrap();
    let e = t.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection);
    assert!(e.maybe_applied());
    match events.recv().await.unwrap() {
        Event::Disconnected { reason } => {
            assert_eq!(reason.kind(), ErrorKind::Protocol, "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_frame_cut_mid_way_is_a_lost_connection() {
    let mut h = start(CAP_CORRELATION).await;
    let t = request(&h.client, GET, b"a", RequestOptions::default());
    let r = h.peer.read_request().await.unwrap();
    let frame = tcp_frame(r.correlation, GET, b"\0hello").unwrap();
    h.peer.send_raw(&frame[..frame.len() - 2]).await.unwrap();
    let peer = std::mem::replace(&mut h.peer, Peer::new(tokio::io::duplex(1).0));
    peer.close().await;
    assert_eq!(t.await.unwrap().unwrap_err().kind(), ErrorKind::Connection);
}

// ----- generations, backlog, limits -----

#[tokio::test(start_paused = true)]
async fn requests_fail_fast_while_disconnected() {
    let tokens = Arc::new(AtomicUsize::new(0));
    let (b, _listener) = builder(&tokens);
    let client = b.build().unwrap();
    let e = request(&client, GET, b"a", RequestOptions::default())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection);
    assert!(e.is_retryable() && !e.maybe_applied());
}

#[tokio::test(start_paused = true)]
async fn requests_time_out_while_reconnecting_without_being_sent() {
    let mut h = start_with(CAP_CORRELATION, |b| {
        b.reconnect(ReconnectPolicy {
            base_delay: Duration::from_secs(600),
            max_delay: Duration::from_secs(600),
            ..ReconnectPolicy::default()
        })
    })
    .await;
    let peer = std::mem::replace(&mut h.peer, Peer::new(tokio::io::duplex(1).0));
    peer.close().await;
    wait_state(&h.client, State::Reconnecting).await;
    let e = request(
        &h.client,
        GET,
        b"a",
        RequestOptions::timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(!e.maybe_applied(), "never written");
    assert_eq!(h.client.state(), State::Reconnecting);
    let snap = h.client.debug_snapshot().await.unwrap();
    assert_eq!((snap.pending, snap.backlog), (0, 0), "{snap:?}");
    // One Closed event, even though every layer of the actor unwinds.
    let mut events = h.client.events();
    h.client.close().await;
    let mut closed = 0;
    while let Some(ev) = events.recv().await {
        closed += usize::from(matches!(ev, Event::Closed));
    }
    assert_eq!(closed, 1);
}

#[tokio::test(start_paused = true)]
async fn pinned_requests_from_an_old_session_are_stale() {
    let mut h = start(CAP_CORRELATION).await;
    let generation = h.client.connection().generation();
    let peer = std::mem::replace(&mut h.peer, Peer::new(tokio::io::duplex(1).0));
    peer.close().await;
    wait_state(&h.client, State::Reconnecting).await;
    assert_eq!(
        h.client
            .connection()
            .check_generation(generation)
            .unwrap_err()
            .kind(),
        ErrorKind::Stale
    );
    let e = request(&h.client, GET, b"a", RequestOptions::pinned(generation))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Stale);
    // An unpinned request issued while reconnecting waits and goes out on the new session.
    let t = request(&h.client, GET, b"b", RequestOptions::default());
    reaccept(&mut h, CAP_CORRELATION).await;
    let r = h.peer.read_request().await.unwrap();
    assert_eq!(&r.payload[..], b"b");
    h.peer.reply(&r, b"\0").await.unwrap();
    t.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_full_in_flight_limit_waits_then_reports_backpressure() {
    let mut h = start_with(CAP_CORRELATION, |b| b.max_in_flight(1)).await;
    let a = request(&h.client, GET, b"a", RequestOptions::default());
    let ra = h.peer.read_request().await.unwrap();
    let b = request(
        &h.client,
        GET,
        b"b",
        RequestOptions::timeout(Duration::from_secs(1)),
    );
    let e = b.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Backpressure);
    assert!(e.is_retryable() && !e.maybe_applied());
    let c = request(&h.client, GET, b"c", RequestOptions::default());
    h.peer.reply(&ra, b"\0").await.unwrap();
    a.await.unwrap().unwrap();
    let rc = h.peer.read_request().await.unwrap();
    assert_eq!(&rc.payload[..], b"c");
    h.peer.reply(&rc, b"\0").await.unwrap();
    c.await.unwrap().unwrap();
}

// ----- multi-frame replies and push handlers -----

#[tokio::test(start_paused = true)]
async fn a_correlation_can_carry_several_frames() {
    let mut h = start(CAP_CORRELATION).await;
    let conn = h.client.connection().clone();
    let frames = tokio::spawn(async move {
        let msg = fitz_protocol::notice::Unsubscribe { sub_id: 1 };
        // "final" when the payload's second byte is 1.
        let mut f = conn
            .request_frames(&msg, |p| p.get(1) == Some(&1), RequestOptions::default())
            .await
            .unwrap();
        let mut got = Vec::new();
        while let Some(frame) = f.next().await {
            got.push(frame.unwrap());
        }
        got
    });
    let r = h.peer.read_request().await.unwrap();
    h.peer.reply(&r, &[0, 0]).await.unwrap(); // queued
    h.peer.reply(&r, &[0, 1]).await.unwrap(); // granted, same id
    let got = frames.await.unwrap();
    assert_eq!(got.len(), 2);
    settle().await;
    assert_eq!(h.client.debug_snapshot().await.unwrap().pending, 0);
}

#[tokio::test(start_paused = true)]
async fn push_handlers_match_by_uuid_pattern_or_any() {
    let mut h = start(CAP_CORRELATION).await;
    let conn = h.client.connection().clone();
    let opts = SubscriptionOptions::default();
    let uuid = [7u8; 16];
    let mut by_uuid = conn
        .push_handler(types::RPC_RESPONSE, PushKey::Uuid(uuid), opts)
        .await
        .unwrap();
    let mut by_pattern = conn
        .push_handler(
            types::RPC_REQUEST,
            PushKey::Pattern("rpc://a/*/run".into()),
            opts,
        )
        .await
        .unwrap();
    let mut any = conn.push_handler(GET, PushKey::Any, opts).await.unwrap();

    // Not the last chunk (flags 0): the handler stays.
    let mut resp = uuid.to_vec();
    resp.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    h.peer
        .send_record(types::RPC_RESPONSE, &resp)
        .await
        .unwrap();
    let mut delivery = [1u8; 16].to_vec();
    delivery.put_u32(13);
    delivery.put_slice(b"rpc://a/b/run");
    delivery.put_u32(0);
    h.peer
        .send_record(types::RPC_REQUEST, &delivery)
        .await
        .unwrap();
    // A late labelled answer falls through to the type's Any handler.
    h.peer
        .send_labelled(Some(424_242), GET, b"\0late")
        .await
        .unwrap();

    assert_eq!(
        by_uuid.next_record().await.unwrap().unwrap(),
        Bytes::from(resp)
    );
    assert_eq!(
        by_pattern.next_record().await.unwrap().unwrap(),
        Bytes::from(delivery)
    );
    assert_eq!(&any.next_record().await.unwrap().unwrap()[..], b"\0late");

    // UUID handlers belong to the session.
    let peer = std::mem::replace(&mut h.peer, Peer::new(tokio::io::duplex(1).0));
    peer.close().await;
    assert_eq!(
        by_uuid.next().await.unwrap().unwrap_err().kind(),
        ErrorKind::Connection
    );
    assert!(by_uuid.next().await.is_none());
    drop(by_pattern);
    drop(any);
    reaccept(&mut h, CAP_CORRELATION).await;
    settle().await;
    assert_eq!(h.client.debug_snapshot().await.unwrap().push_handlers, 0);
}

#[tokio::test(start_paused = true)]
async fn a_calls_last_response_releases_its_handler_in_the_actor() {
    let mut h = start(CAP_CORRELATION).await;
    let conn = h.client.connection().clone();
    let opts = SubscriptionOptions::default();
    let uuid = [9u8; 16];
    let mut handler = conn
        .push_handler(types::RPC_RESPONSE, PushKey::Uuid(uuid), opts)
        .await
        .unwrap();
    let mut frames = Vec::new();
    for (seq, end) in [(0u8, 0u8), (1, 1)] {
        let mut resp = uuid.to_vec();
        resp.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, seq, end, 0, 0, 0, 0]);
        h.peer
            .send_record(types::RPC_RESPONSE, &resp)
            .await
            .unwrap();
        frames.push(Bytes::from(resp));
    }
    // Both frames arrive, then the stream ends: the actor let go of it at
    // the last one, without being asked.
    assert_eq!(handler.next_record().await.unwrap().unwrap(), frames[0]);
    assert_eq!(handler.next_record().await.unwrap().unwrap(), frames[1]);
    assert!(handler.next().await.is_none());
    assert_eq!(h.client.debug_snapshot().await.unwrap().push_handlers, 0);
    drop(handler);
}

#[tokio::test(start_paused = true)]
async fn uuid_handlers_are_found_among_many_and_leave_when_dropped() {
    let mut h = start(CAP_CORRELATION).await;
    let conn = h.client.connection().clone();
    let opts = SubscriptionOptions::default();
    let mut handlers = Vec::new();
    for i in 0..300u16 {
        let mut uuid = [0u8; 16];
        uuid[..2].copy_from_slice(&i.to_be_bytes());
        let handler = conn
            .push_handler(types::RPC_RESPONSE, PushKey::Uuid(uuid), opts)
            .await
            .unwrap();
        handlers.push((uuid, handler));
    }
    // A second handler for a taken UUID gets the pushes too.
    let (uuid, _) = handlers[7];
    let mut twin = conn
        .push_handler(types::RPC_RESPONSE, PushKey::Uuid(uuid), opts)
        .await
        .unwrap();
    for i in [7usize, 299, 0] {
        let mut resp = handlers[i].0.to_vec();
        resp.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        h.peer
            .send_record(types::RPC_RESPONSE, &resp)
            .await
            .unwrap();
        let got = handlers[i].1.next_record().await.unwrap().unwrap();
        assert_eq!(got, Bytes::from(resp.clone()));
        if i == 7 {
            assert_eq!(
                twin.next_record().await.unwrap().unwrap(),
                Bytes::from(resp)
            );
        }
    }
    assert_eq!(h.client.debug_snapshot().await.unwrap().push_handlers, 301);
    handlers.truncate(100);
    drop(twin);
    settle().await;
    assert_eq!(h.client.debug_snapshot().await.unwrap().push_handlers, 100);
}

#[tokio::test(start_paused = true)]
async fn a_delivery_goes_to_the_most_specific_pattern_and_sessions_are_marked() {
    let mut h = start(CAP_CORRELATION).await;
    let conn = h.client.connection().clone();
    let opts = SubscriptionOptions::default();
    let handler = |p: &str| conn.push_handler(types::RPC_REQUEST, PushKey::Pattern(p.into()), opts);
    let mut wide = handler("rpc://a/**").await.unwrap();
    let mut narrow = handler("rpc://a/*/run").await.unwrap();
    match handler("rpc://a/**").await {
        Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidArgument),
        Ok(_) => panic!("a second handler for one pattern was installed"),
    }

    let delivery = |route: &str| {
        let mut d = [1u8; 16].to_vec();
        d.put_u32(route.len() as u32);
        d.put_slice(route.as_bytes());
        d.put_u32(0);
        d
    };
    for route in ["rpc://a/b/run", "rpc://a/b/stop"] {
        h.peer
            .send_record(types::RPC_REQUEST, &delivery(route))
            .await
            .unwrap();
    }
    assert_eq!(
        narrow.next_record().await.unwrap().unwrap(),
        Bytes::from(delivery("rpc://a/b/run"))
    );
    assert_eq!(
        wide.next_record().await.unwrap().unwrap(),
        Bytes::from(delivery("rpc://a/b/stop"))
    );

    // The session ends: both get the boundary item (the next generation),
    // in order.
    let peer = std::mem::replace(&mut h.peer, Peer::new(tokio::io::duplex(1).0));
    peer.close().await;
    for handler in [&mut narrow, &mut wide] {
        match handler.next().await.unwrap().unwrap() {
            Push::SessionEnded { next } => assert_eq!(next.0, 1),
            other => panic!("{other:?}"),
        }
    }
    reaccept(&mut h, CAP_CORRELATION).await;
    h.peer
        .send_record(types::RPC_REQUEST, &delivery("rpc://a/c/run"))
        .await
        .unwrap();
    assert_eq!(
        narrow.next_record().await.unwrap().unwrap(),
        Bytes::from(delivery("rpc://a/c/run"))
    );
}

#[tokio::test(start_paused = true)]
async fn committed_and_detached_sends_survive_their_caller() {
    let mut h = start(CAP_CORRELATION).await;
    let conn = h.client.connection().clone();
    let generation = conn.generation();
    let body = |n: u8| Bytes::from(vec![5, 0, 1, n]); // a SESSION_METADATA record
    // Dropped right after being polled once: it was committed, so it goes out.
    let mut committed = Box::pin(conn.send_committed(5, generation, || Ok((body(1), ()))));
    assert!(
        futures_util::FutureExt::now_or_never(committed.as_mut()).is_none(),
        "waits for the write"
    );
    drop(committed);
    assert!(conn.send_detached(5, generation, body(2)));
    conn.send_committed(5, generation, || Ok((body(3), ())))
        .await
        .unwrap();
    for n in 1..=3 {
        let r = h.peer.read_request().await.unwrap();
        assert_eq!((r.ty, r.correlation, &r.payload[..]), (5, None, &[n][..]));
    }
    // Built lazily: an error from `build` sends nothing.
    let e = conn
        .send_committed(5, generation, || {
            Err::<(Bytes, ()), _>(crate::Error::invalid("no"))
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    // Pinned to the session.
    let peer = std::mem::replace(&mut h.peer, Peer::new(tokio::io::duplex(1).0));
    peer.close().await;
    reaccept(&mut h, CAP_CORRELATION).await;
    assert!(!conn.send_detached(5, generation, body(4)));
    let e = conn
        .send_committed(5, generation, || Ok((body(5), ())))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Stale);
    settle().await;
    assert_eq!(h.client.debug_snapshot().await.unwrap().pending, 0);
}

// ----- subscriptions -----

async fn subscribe(
    h: &mut Harness,
    pattern: &str,
    sub_id: u64,
    opts: SubscriptionOptions,
) -> crate::notice::NoticeSubscription {
    let notice = h.client.notice();
    let pattern2 = pattern.to_owned();
    let t = tokio::spawn(async move { notice.subscribe_with(&pattern2, opts).await });
    let r = h.peer.read_request().await.unwrap();
    assert_eq!(r.ty, types::NOTICE_SUBSCRIBE);
    assert_eq!(&r.payload[4..], pattern.as_bytes());
    h.peer
        .reply(&r, &payloads::subscribed(sub_id))
        .await
        .unwrap();
    t.await.unwrap().unwrap()
}

async fn notify(h: &mut Harness, sub_id: u64, route: &str, body: &[u8]) {
    h.peer
        .send_record(types::NOTICE_NOTIFY, &payloads::notify(sub_id, route, body))
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn subscriptions_are_restored_before_authenticated() {
    let mut h = start(CAP_CORRELATION).await;
    let mut sub = subscribe(&mut h, "notice://a/b/*", 11, SubscriptionOptions::default()).await;
    notify(&mut h, 11, "notice://a/b/c", b"one").await;
    assert_eq!(&sub.next().await.unwrap().unwrap().payload()[..], b"one");

    let peer = std::mem::replace(&mut h.peer, Peer::new(tokio::io::duplex(1).0));
    peer.close().await;
    // A request issued during the outage must wait for the restore.
    wait_state(&h.client, State::Reconnecting).await;
    let queued = request(&h.client, GET, b"q", RequestOptions::default());
    reaccept(&mut h, CAP_CORRELATION).await;
    let restore = h.peer.read_request().await.unwrap();
    assert_eq!(restore.ty, types::NOTICE_SUBSCRIBE, "restore comes first");
    assert_eq!(&restore.payload[4..], b"notice://a/b/*");
    assert_eq!(h.client.state(), State::Authenticating);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), h.peer.read_request())
            .await
            .is_err()
    );
    h.peer
        .reply(&restore, &payloads::subscribed(99))
        .await
        .unwrap();
    let r = h.peer.read_request().await.unwrap();
    assert_eq!(&r.payload[..], b"q");
    assert_eq!(h.client.state(), State::Authenticated);
    h.peer.reply(&r, b"\0").await.unwrap();
    queued.await.unwrap().unwrap();
    // Same handle, new wire id; the old id is dead.
    notify(&mut h, 11, "notice://a/b/c", b"stale").await;
    notify(&mut h, 99, "notice://a/b/c", b"two").await;
    let msg = sub.next().await.unwrap().unwrap();
    assert_eq!(&msg.payload()[..], b"two");
}

#[tokio::test(start_paused = true)]
async fn a_failed_restore_reaches_the_subscription_and_the_events() {
    let mut h = start(0).await;
    let mut sub = subscribe(&mut h, "notice://a/b/*", 1, SubscriptionOptions::default()).await;
    let mut events = h.client.events();
    let peer = std::mem::replace(&mut h.peer, Peer::new(tokio::io::duplex(1).0));
    peer.close().await;
    reaccept(&mut h, 0).await;
    let restore = h.peer.read_request().await.unwrap();
    h.peer
        .reply(&restore, &payloads::error(3003, "subscription limit"))
        .await
        .unwrap();
    let e = sub.next().await.unwrap().unwrap_err();
    assert_eq!((e.kind(), e.code()), (ErrorKind::Broker, Some(3003)));
    assert!(sub.next().await.is_none());
    let mut failed = false;
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(1), events.recv()).await {
        if let Event::RestoreFailed {
            subscription,
            error,
        } = ev
        {
            assert_eq!(subscription, sub.id());
            assert_eq!(error.code(), Some(3003));
            failed = true;
        }
    }
    assert!(failed);
    assert_eq!(h.client.state(), State::Authenticated);
}

#[tokio::test(start_paused = true)]
async fn duplicate_subscriptions_share_one_registration() {
    let mut h = start(CAP_CORRELATION).await;
    let mut a = subscribe(&mut h, "notice://a/**", 5, SubscriptionOptions::default()).await;
    // The second subscribe sends nothing.
    let mut b = h.client.notice().subscribe("notice://a/**").await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(50), h.peer.read_request())
            .await
            .is_err()
    );
    notify(&mut h, 5, "notice://a/x", b"both").await;
    assert_eq!(&a.next().await.unwrap().unwrap().payload()[..], b"both");
    assert_eq!(&b.next().await.unwrap().unwrap().payload()[..], b"both");
    // Dropping one does not silence the other, and sends nothing.
    drop(a);
    settle().await;
    assert!(
        tokio::time::timeout(Duration::from_millis(50), h.peer.read_request())
            .await
            .is_err()
    );
    notify(&mut h, 5, "notice://a/y", b"still").await;
    assert_eq!(&b.next().await.unwrap().unwrap().payload()[..], b"still");
    // The last one unsubscribes by wire id and waits for the ack.
    let t = tokio::spawn(b.unsubscribe());
    let r = h.peer.read_request().await.unwrap();
    assert_eq!(
        (r.ty, &r.payload[..]),
        (types::NOTICE_UNSUBSCRIBE, &5u64.to_be_bytes()[..])
    );
    h.peer.reply(&r, &payloads::ok()).await.unwrap();
    t.await.unwrap().unwrap();
    let snap = h.client.debug_snapshot().await.unwrap();
    assert_eq!((snap.registrations, snap.sinks, snap.pending), (0, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn dropping_a_subscription_unsubscribes() {
    let mut h = start(CAP_CORRELATION).await;
    let sub = subscribe(&mut h, "notice://a/b/c", 8, SubscriptionOptions::default()).await;
    drop(sub);
    let r = h.peer.read_request().await.unwrap();
    assert_eq!(
        (r.ty, &r.payload[..]),
        (types::NOTICE_UNSUBSCRIBE, &8u64.to_be_bytes()[..])
    );
    h.peer.reply(&r, &payloads::ok()).await.unwrap();
    settle().await;
    let snap = h.client.debug_snapshot().await.unwrap();
    assert_eq!((snap.registrations, snap.pending), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn overflow_error_ends_the_stream_after_the_buffer() {
    let mut h = start(CAP_CORRELATION).await;
    let opts = SubscriptionOptions {
        buffer: 2,
        overflow: Overflow::Error,
    };
    let mut sub = subscribe(&mut h, "notice://a/b/*", 3, opts).await;
    let mut events = h.client.events();
    for i in 0..3u8 {
        notify(&mut h, 3, "notice://a/b/c", &[i]).await;
    }
    // The broker registration goes away.
    let r = h.peer.read_request().await.unwrap();
    assert_eq!(r.ty, types::NOTICE_UNSUBSCRIBE);
    h.peer.reply(&r, &payloads::ok()).await.unwrap();
    assert_eq!(&sub.next().await.unwrap().unwrap().payload()[..], &[0]);
    assert_eq!(&sub.next().await.unwrap().unwrap().payload()[..], &[1]);
    assert_eq!(
        sub.next().await.unwrap().unwrap_err().kind(),
        ErrorKind::Overflow
    );
    assert!(sub.next().await.is_none());
    assert!(matches!(
        events.recv().await,
        Some(Event::SlowConsumer { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn overflow_drop_oldest_keeps_the_newest_and_counts() {
    let mut h = start(CAP_CORRELATION).await;
    let opts = SubscriptionOptions {
        buffer: 2,
        overflow: Overflow::DropOldest,
    };
    let mut sub = subscribe(&mut h, "notice://a/b/*", 3, opts).await;
    let mut events = h.client.events();
    for i in 0..5u8 {
        notify(&mut h, 3, "notice://a/b/c", &[i]).await;
    }
    // Fence: a request round trip proves the five notifications were routed.
    let t = request(&h.client, GET, b"", RequestOptions::default());
    let r = h.peer.read_request().await.unwrap();
    h.peer.reply(&r, b"\0").await.unwrap();
    t.await.unwrap().unwrap();
    assert_eq!(sub.dropped(), 3);
    assert_eq!(&sub.next().await.unwrap().unwrap().payload()[..], &[3]);
    assert_eq!(&sub.next().await.unwrap().unwrap().payload()[..], &[4]);
    match events.recv().await {
        Some(Event::SlowConsumer {
            subscription,
            dropped,
        }) => {
            assert_eq!(subscription, sub.id());
            assert_eq!(dropped, 1, "one event per overflow episode, at its start");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn unsubscribe_all_ends_every_notice_stream() {
    let mut h = start(CAP_CORRELATION).await;
    let mut a = subscribe(&mut h, "notice://a/**", 1, SubscriptionOptions::default()).await;
    let mut b = subscribe(&mut h, "notice://b/**", 2, SubscriptionOptions::default()).await;
    let notice = h.client.notice();
    let t = tokio::spawn(async move { notice.unsubscribe_all().await });
    let r = h.peer.read_request().await.unwrap();
    assert_eq!((r.ty, r.payload.len()), (types::NOTICE_UNSUBSCRIBE_ALL, 0));
    h.peer.reply(&r, &payloads::ok()).await.unwrap();
    t.await.unwrap().unwrap();
    assert!(a.next().await.is_none());
    assert!(b.next().await.is_none());
    let snap = h.client.debug_snapshot().await.unwrap();
    assert_eq!(snap.registrations, 0);
}

#[tokio::test(start_paused = true)]
async fn close_fails_pending_calls_and_ends_streams() {
    let mut h = start(CAP_CORRELATION).await;
    let mut sub = subscribe(&mut h, "notice://a/**", 1, SubscriptionOptions::default()).await;
    let t = request(&h.client, GET, b"a", RequestOptions::default());
    h.peer.read_request().await.unwrap();
    h.client.close().await;
    assert_eq!(t.await.unwrap().unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(
        sub.next().await.unwrap().unwrap_err().kind(),
        ErrorKind::Closed
    );
    assert!(sub.next().await.is_none());
    h.peer.expect_eof(Duration::from_secs(5)).await.unwrap();
    let e = h
        .client
        .notice()
        .publish("notice://a/b/c", "x")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed);
}

#[tokio::test(start_paused = true)]
async fn the_actor_goes_quiet_after_an_answered_request_deadline_passes() {
    let mut h = start(CAP_CORRELATION).await;
    let t = request(&h.client, GET, b"a", RequestOptions::default());
    let r = h.peer.read_request().await.unwrap();
    h.peer.reply(&r, b"\0").await.unwrap();
    t.await.unwrap().unwrap();
    // The request timer fires with nothing left to expire. Paused time only
    // advances while every task is idle, so a timer left ready (the actor
    // spinning) would hang this sleep instead of completing it.
    tokio::time::sleep(Duration::from_secs(120)).await;
    let t = request(&h.client, GET, b"b", RequestOptions::default());
    let r = h.peer.read_request().await.unwrap();
    h.peer.reply(&r, b"\0").await.unwrap();
    t.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_notification_right_behind_the_subscribe_ack_is_delivered() {
    let mut h = start(CAP_CORRELATION).await;
    let notice = h.client.notice();
    let t = tokio::spawn(async move { notice.subscribe("notice://a/b/*").await });
    let r = h.peer.read_request().await.unwrap();
    // Acknowledgement and first notification in one write: the client reads
    // both frames at once and must know the new id before routing the second.
    let mut wire = tcp_frame(r.correlation, r.ty, &payloads::subscribed(5))
        .unwrap()
        .to_vec();
    wire.extend_from_slice(
        &tcp_frame(
            None,
            types::NOTICE_NOTIFY,
            &payloads::notify(5, "notice://a/b/c", b"first"),
        )
        .unwrap(),
    );
    h.peer.send_raw(&wire).await.unwrap();
    let mut sub = t.await.unwrap().unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("the first notification was dropped")
        .unwrap()
        .unwrap();
    assert_eq!(&msg.payload()[..], b"first");
}

// ----- output coalescing -----

/// Counts the client's `poll_write` calls that wrote something.
struct CountingStream {
    inner: tokio::io::DuplexStream,
    writes: Arc<AtomicUsize>,
}

impl tokio::io::AsyncRead for CountingStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CountingStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
        r
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

struct CountingConnector {
    tx: tokio::sync::mpsc::Sender<tokio::io::DuplexStream>,
    writes: Arc<AtomicUsize>,
}

impl crate::transport::Connector for CountingConnector {
    fn connect(&self) -> crate::transport::ConnectFuture<'_> {
        Box::pin(async move {
            let (client, server) = tokio::io::duplex(1 << 20);
            self.tx
                .try_send(server)
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::ConnectionRefused))?;
            Ok(Box::new(CountingStream {
                inner: client,
                writes: self.writes.clone(),
            }) as crate::transport::BoxedStream)
        })
    }
}

async fn start_counting() -> (Client, Peer, Arc<AtomicUsize>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let writes = Arc::new(AtomicUsize::new(0));
    let client = Client::builder("memory://test", crate::StaticToken::anonymous())
        .connector(CountingConnector {
            tx,
            writes: writes.clone(),
        })
        .build()
        .unwrap();
    let c = client.clone();
    let connecting = tokio::spawn(async move { c.connect().await });
    let mut peer = Peer::new(rx.recv().await.unwrap());
    peer.handshake(CAP_CORRELATION).await.unwrap();
    connecting.await.unwrap().unwrap();
    (client, peer, writes)
}

#[tokio::test(start_paused = true)]
async fn a_lone_request_is_written_in_the_same_wake_up() {
    let (client, mut peer, writes) = start_counting().await;
    settle().await;
    let before = writes.load(Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    let r = request(&client, GET, b"k", RequestOptions::default());
    // Time is paused and the request's deadline is the only timer: a write
    // held back for anything would let the clock run to it.
    let req = peer.read_request().await.unwrap();
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(writes.load(Ordering::SeqCst), before + 1);
    peer.reply(&req, b"\0v").await.unwrap();
    assert_eq!(&r.await.unwrap().unwrap()[..], b"\0v");
}

#[tokio::test(start_paused = true)]
async fn requests_ready_together_share_one_write() {
    let (client, mut peer, writes) = start_counting().await;
    settle().await;
    let before = writes.load(Ordering::SeqCst);
    let conn = client.connection().clone();
    // 64 requests made ready by one task before the actor runs.
    let all = tokio::spawn(async move {
        let calls = (0..64u8).map(|i| {
            let conn = conn.clone();
            async move {
                conn.request_record(GET, None, record(GET, &[i]), RequestOptions::default())
                    .await
            }
        });
        futures_util::future::join_all(calls).await
    });
    let mut reqs = Vec::new();
    for _ in 0..64 {
        reqs.push(peer.read_request().await.unwrap());
    }
    assert_eq!(writes.load(Ordering::SeqCst) - before, 1);
    for req in &reqs {
        peer.reply(req, b"\0").await.unwrap();
    }
    assert!(all.await.unwrap().iter().all(|r| r.is_ok()));
}

#[tokio::test(start_paused = true)]
async fn output_past_the_cap_and_the_pipe_flows_while_coalescing() {
    let (client, mut peer, writes) = start_counting().await;
    settle().await;
    let before = writes.load(Ordering::SeqCst);
    let big = vec![7u8; 8 * 1024];
    // Over 3 MiB of requests (past the 64 KiB write cap and the 1 MiB pipe):
    // partial writes and writability waits mixed with coalescing, in order.
    let n = 3 * 128 + 5;
    let calls: Vec<_> = (0..n)
        .map(|_| request(&client, PUT, &big, RequestOptions::default()))
        .collect();
    for _ in 0..n {
        let req = peer.read_request().await.unwrap();
        peer.reply(&req, b"\0").await.unwrap();
    }
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert!(writes.load(Ordering::SeqCst) - before >= 4);
}
