//! Connection loss and recovery, against the embedded broker (or an
//! external one), the connection cut by the disconnect proxy — never by
//! closing the client.
//!
//! * **Same handle keeps receiving**: for each registration the client
//!   restores (Notice, Stream, Lease, Queue and Schedule subscriptions, a KV
//!   watch, an RPC worker), over TCP and WebSocket, through two cuts: the
//!   restore covers exactly that registration and what happens on the
//!   broker afterwards reaches the handle created before the first cut.
//! * **In flight during a cut**: one request per domain, written but
//!   unanswered when the connection goes, fails as a retryable
//!   [`ErrorKind::Connection`] with `maybe_applied()`; one that never left
//!   the client fails the same way without it, and is not replayed.
//! * **Close during reconnect**: `close()` returns at once while the client
//!   waits out a long backoff or hangs in a handshake, and ends everything
//!   with [`ErrorKind::Closed`].

use std::time::Duration;

use fitz::kv::{Durability, TxMode};
use fitz::queue::ReserveOptions;
use fitz::rpc::{HandlerError, RpcRequest};
use fitz::schedule::DeliveryMode;
use fitz::stream::CommitEvent;
use fitz::{Client, ErrorKind, Event, ReconnectPolicy, State};
use fitz_tests::{
    Brokers, BrokersExt, Proxy, ProxyHandle, Timed, Transport, WAIT, anon_builder, connected,
    next_item, realm, restored, wait_event, within,
};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;

const TTL: Duration = Duration::from_secs(30);
/// Cuts per test: the second proves the restored registration restores again.
const CUTS: usize = 2;

/// Cuts every connection through `proxy` and waits until `client` has
/// restored exactly `count` registrations on a new session.
async fn cut_and_restore(proxy: &ProxyHandle, client: &Client, count: usize) {
    let mut events = client.events();
    proxy.cut_all();
    wait_event(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    assert_eq!(restored(&mut events).await, count);
    assert_eq!(client.state(), State::Authenticated);
}

#[tokio::test]
async fn refused_connections_are_retried_until_ready() {
    let brokers = Brokers::start().await.unwrap();
    let proxy = Proxy::start(brokers.anon_tcp_addr().unwrap())
        .await
        .unwrap();
    proxy.refuse_new_for(Duration::from_millis(300));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let client = Client::anonymous(proxy.tcp_url()).unwrap();
    let e = client.connect().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    assert!(e.is_retryable() && !e.maybe_applied());
    assert_eq!(client.state(), State::Disconnected);
    client
        .connect_when_ready(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(client.state(), State::Authenticated);
    client.close().await;
    brokers.shutdown().await;
}

// ----- the same handle keeps receiving -----

#[tokio::test]
async fn a_notice_subscription_keeps_receiving_across_cuts() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let (proxy, url) = brokers.anon_proxy(t).await;
        let receiver = connected(&url).await;
        let sender = connected(brokers.anon_url(t)).await;
        let app = realm("notice");
        let mut sub = receiver
            .notice()
            .subscribe(&format!("notice://{app}/a/*"))
            .await
            .unwrap();
        for round in 0..=CUTS {
            if round > 0 {
                cut_and_restore(&proxy, &receiver, 1).await;
            }
            // The SUBSCRIBE (or its restore) was acknowledged: the broker
            // delivers everything published from now on.
            let route = format!("notice://{app}/a/r{round}");
            sender.notice().publish(&route, "n").await.unwrap();
            assert_eq!(next_item(&mut sub).await.route(), route, "{t:?}");
        }
        receiver.close().await;
        sender.close().await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_stream_subscription_keeps_receiving_across_cuts() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let (proxy, url) = brokers.anon_proxy(t).await;
        let receiver = connected(&url).await;
        let writer = connected(brokers.anon_url(t)).await;
        let area = realm("stream");
        let mut sub = receiver
            .stream()
            .subscribe(&format!("stream://{area}/orders/*"))
            .await
            .unwrap();
        for round in 0..=CUTS {
            if round > 0 {
                cut_and_restore(&proxy, &receiver, 1).await;
            }
            let route = format!("stream://{area}/orders/o{round}");
            let mut s = writer.stream().begin(&route).await.unwrap();
            s.append("x").await.unwrap();
            s.commit(fitz::stream::Durability::Sync).await.unwrap();
            match next_item(&mut sub).await {
                CommitEvent::Committed(c) => assert_eq!(c.route(), route, "{t:?}"),
                other => panic!("{other:?}"),
            }
        }
        receiver.close().await;
        writer.close().await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_lease_subscription_keeps_receiving_across_cuts() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let (proxy, url) = brokers.anon_proxy(t).await;
        let receiver = connected(&url).await;
        let holder = connected(brokers.anon_url(t)).await;
        let area = realm("lease");
        let mut sub = receiver
            .lease()
            .subscribe(&format!("lease://{area}/locks/*"))
            .await
            .unwrap();
        for round in 0..=CUTS {
            if round > 0 {
                cut_and_restore(&proxy, &receiver, 1).await;
            }
            let route = format!("lease://{area}/locks/l{round}");
            let lease = holder.lease().acquire(&route, "h", TTL).await.unwrap();
            assert_eq!(next_item(&mut sub).await.route(), route, "{t:?}");
            lease.release().await.unwrap();
            assert_eq!(next_item(&mut sub).await.route(), route, "{t:?}");
        }
        receiver.close().await;
        holder.close().await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_queue_availability_watch_keeps_receiving_across_cuts() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let (proxy, url) = brokers.anon_proxy(t).await;
        let receiver = connected(&url).await;
        let producer = connected(brokers.anon_url(t)).await;
        let area = realm("queue");
        let mut sub = receiver
            .queue()
            .subscribe(&format!("queue://{area}/*/jobs"))
            .await
            .unwrap();
        for round in 0..=CUTS {
            if round > 0 {
                cut_and_restore(&proxy, &receiver, 1).await;
            }
            let route = format!("queue://{area}/q{round}/jobs");
            producer.queue().enqueue(&route, "x").await.unwrap();
            assert_eq!(next_item(&mut sub).await.route(), route, "{t:?}");
            // Drained again, so the restored watch has nothing to re-report.
            for r in producer
                .queue()
                .reserve(&route, ReserveOptions::default())
                .await
                .unwrap()
            {
                r.complete().await.unwrap();
            }
        }
        receiver.close().await;
        producer.close().await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_schedule_subscription_keeps_receiving_across_cuts() {
    let Some(broker) = Timed::start("schedule fires happen on broker minute boundaries").await
    else {
        return;
    };
    let _serial = fitz_tests::exclusive().await;
    for t in Transport::BOTH {
        let proxy = Proxy::start(broker.addr(t)).await.unwrap();
        let url = match t {
            Transport::Tcp => proxy.tcp_url(),
            Transport::Ws => proxy.ws_url(),
        };
        let receiver = connected(&url).await;
        let admin = connected(broker.url(t)).await;
        let area = realm("schedule");
        let mut sub = receiver
            .schedule()
            .subscribe(&format!("schedule://{area}/**"))
            .await
            .unwrap();
        let route = format!("schedule://{area}/jobs/j/run");
        admin
            .schedule()
            .create(&route, "* * * * *", DeliveryMode::Single, "tick")
            .await
            .unwrap();
        for round in 0..=CUTS {
            if round > 0 {
                cut_and_restore(&proxy, &receiver, 1).await;
            }
            broker.clock.next_minute().await;
            let fire = next_item(&mut sub).await;
            assert_eq!(
                (fire.route(), &fire.payload()[..]),
                (route.as_str(), &b"tick"[..])
            );
        }
        admin.schedule().cancel(&route).await.unwrap();
        receiver.close().await;
        admin.close().await;
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn a_kv_watch_keeps_receiving_across_cuts() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let (proxy, url) = brokers.anon_proxy(t).await;
        let receiver = connected(&url).await;
        let writer = connected(brokers.anon_url(t)).await;
        let area = realm("kv");
        let mut watch = receiver
            .kv()
            .subscribe(&format!("kv://{area}/cfg/*"))
            .await
            .unwrap();
        for round in 0..=CUTS {
            if round > 0 {
                cut_and_restore(&proxy, &receiver, 1).await;
            }
            let route = format!("kv://{area}/cfg/r{round}");
            let mut tx = writer.kv().begin(&route, TxMode::ReadWrite).await.unwrap();
            tx.put("k", "v").await.unwrap();
            tx.commit(Durability::Sync).await.unwrap();
            let change = next_item(&mut watch).await;
            assert_eq!(
                (change.route(), change.mutation_count()),
                (route.as_str(), 1)
            );
        }
        receiver.close().await;
        writer.close().await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn an_rpc_worker_keeps_serving_across_cuts() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let (proxy, url) = brokers.anon_proxy(t).await;
        let server = connected(&url).await;
        let caller = connected(brokers.anon_url(t)).await;
        let area = realm("rpc");
        let worker = server
            .rpc()
            .serve(
                &format!("rpc://{area}/*"),
                4,
                |req: RpcRequest| async move {
                    let mut answer = b"served:".to_vec();
                    answer.extend_from_slice(req.body());
                    Ok::<_, HandlerError>(answer)
                },
            )
            .await
            .unwrap();
        for round in 0..=CUTS {
            if round > 0 {
                cut_and_restore(&proxy, &server, 1).await;
            }
            let answer = caller
                .rpc()
                .request(&format!("rpc://{area}/op"), format!("{round}"))
                .await
                .unwrap();
            assert_eq!(answer, format!("served:{round}").as_bytes(), "{t:?}");
        }
        assert!(worker.is_running());
        worker.shutdown().await.unwrap();
        server.close().await;
        caller.close().await;
    }
    brokers.shutdown().await;
}

// ----- a request in flight during a cut -----

/// The request a test sends into the blackhole.
type Request = BoxFuture<'static, fitz::Result<()>>;
/// Makes the request (called once the proxy swallows every byte).
type Send = Box<dyn FnOnce() -> Request + std::marker::Send>;
/// Sets up what the request needs while bytes still move.
type Op = fn(Client, String) -> BoxFuture<'static, Send>;

fn send(request: impl Future<Output = fitz::Result<()>> + std::marker::Send + 'static) -> Send {
    Box::new(move || Box::pin(request) as Request)
}

/// One request per domain that changes something on the broker (or
/// registers something there), so its outcome after a lost reply is unknown.
fn in_flight_ops() -> [(&'static str, Op); 7] {
    [
        ("kv commit", |c, area| {
            Box::pin(async move {
                let mut tx = c
                    .kv()
                    .begin(&format!("kv://{area}/a/r"), TxMode::ReadWrite)
                    .await
                    .unwrap();
                tx.put("k", "v").await.unwrap();
                send(tx.commit(Durability::Sync))
            })
        }),
        ("queue enqueue", |c, area| {
            Box::pin(async move {
                send(async move {
                    let q = c.queue();
                    q.enqueue(&format!("queue://{area}/a/jobs"), "x")
                        .await
                        .map(drop)
                })
            })
        }),
        ("lease acquire", |c, area| {
            Box::pin(async move {
                send(async move {
                    let leases = c.lease();
                    leases
                        .acquire(&format!("lease://{area}/a/r"), "me", TTL)
                        .await
                        .map(drop)
                })
            })
        }),
        ("notice subscribe", |c, area| {
            Box::pin(async move {
                send(async move {
                    let notice = c.notice();
                    notice
                        .subscribe(&format!("notice://{area}/**"))
                        .await
                        .map(drop)
                })
            })
        }),
        ("stream commit", |c, area| {
            Box::pin(async move {
                let mut s = c
                    .stream()
                    .begin(&format!("stream://{area}/a/x"))
                    .await
                    .unwrap();
                s.append("x").await.unwrap();
                send(async move { s.commit(fitz::stream::Durability::Sync).await.map(drop) })
            })
        }),
        ("schedule create", |c, area| {
            Box::pin(async move {
                send(async move {
                    let schedule = c.schedule();
                    schedule
                        .create(
                            &format!("schedule://{area}/a/b/run"),
                            "0 0 1 1 *",
                            DeliveryMode::Single,
                            "",
                        )
                        .await
                })
            })
        }),
        ("rpc call", |c, area| {
            Box::pin(async move {
                send(async move {
                    // Nobody serves the route; the cut comes first anyway.
                    let mut call = c.rpc().call(&format!("rpc://{area}/op"), "").await?;
                    match call.next().await {
                        Some(Err(e)) => Err(e),
                        other => panic!("the call ended with {other:?}"),
                    }
                })
            })
        }),
    ]
}

#[tokio::test]
async fn a_request_in_flight_during_a_cut_fails_typed_per_domain() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        for (what, op) in in_flight_ops() {
            let (proxy, url) = brokers.anon_proxy(t).await;
            let client = connected(&url).await;
            let request = op(client.clone(), realm("inflight")).await;
            // From here the proxy swallows every byte: the request is
            // written (the connection task writes a correlated request as it
            // admits it) and never answered.
            proxy.blackhole(true);
            let running = tokio::spawn(request());
            fitz_tests::until(what, || async {
                let books = client.debug_snapshot().await.unwrap();
                // An RPC REQUEST is a send whose answer comes as pushes: it
                // has left once the call's response handler is installed
                // (both happen in one step of the connection task).
                books.pending >= 1 || (what == "rpc call" && books.push_handlers >= 1)
            })
            .await;
            let mut events = client.events();
            proxy.cut_all();
            proxy.blackhole(false);
            let e = within(what, running).await.unwrap().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Connection, "{t:?} {what}: {e}");
            assert!(e.maybe_applied(), "{t:?} {what}: written before the cut");
            assert!(e.is_retryable(), "{t:?} {what}");
            // The client recovers on its own.
            wait_event(&mut events, fitz_tests::reconnected).await;
            client.close().await;
        }
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_request_that_never_left_fails_unapplied_and_is_not_replayed() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let (proxy, url) = brokers.anon_proxy(t).await;
        // One request at a time: the second waits for the first's slot.
        let client = anon_builder(&url).max_in_flight(1).build().unwrap();
        client.connect().await.unwrap();
        let area = realm("unsent");
        let (first_q, second_q) = (
            format!("queue://{area}/first/jobs"),
            format!("queue://{area}/second/jobs"),
        );
        proxy.blackhole(true);
        let (q1, q2) = (client.queue(), client.queue());
        let r1 = first_q.clone();
        let first = tokio::spawn(async move { q1.enqueue(&r1, "1").await });
        fitz_tests::until_pending(&client, 1).await;
        let r2 = second_q.clone();
        let second = tokio::spawn(async move { q2.enqueue(&r2, "2").await });
        fitz_tests::until("the second request waits for a slot", || async {
            client.debug_snapshot().await.unwrap().free_permits == 0 && !second.is_finished()
        })
        .await;
        let mut events = client.events();
        proxy.cut_all();
        proxy.blackhole(false);
        let e = within("the written request", first)
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
        assert!(e.maybe_applied());
        let e = within("the waiting request", second)
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connection, "{t:?}: {e}");
        assert!(!e.maybe_applied(), "{t:?}: it never left the client");
        assert!(e.is_retryable());
        wait_event(&mut events, fitz_tests::reconnected).await;
        // Not replayed on the new session: its queue is empty (the first
        // one may or may not have been stored).
        let left = client
            .queue()
            .reserve(&second_q, ReserveOptions::default())
            .await
            .unwrap();
        assert!(left.is_empty(), "{left:?}");
        client.close().await;
    }
    brokers.shutdown().await;
}

// ----- close during reconnect -----

/// Backoff so long that waiting it out would blow any test timeout.
fn glacial() -> ReconnectPolicy {
    ReconnectPolicy {
        base_delay: Duration::from_secs(3600),
        max_delay: Duration::from_secs(3600),
        ..ReconnectPolicy::default()
    }
}

#[tokio::test]
async fn close_during_the_reconnect_backoff_returns_at_once() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let (proxy, url) = brokers.anon_proxy(t).await;
        let client = anon_builder(&url).reconnect(glacial()).build().unwrap();
        client.connect().await.unwrap();
        let mut sub = client
            .notice()
            .subscribe(&format!("notice://{}/a/*", realm("close")))
            .await
            .unwrap();
        let mut events = client.events();
        fitz_tests::refuse_new(&proxy).await;
        proxy.cut_all();
        // Full jitter may draw a short first delay: wait for a long one.
        wait_event(
            &mut events,
            |e| matches!(e, Event::ReconnectScheduled { delay, .. } if *delay > 2 * WAIT),
        )
        .await;
        assert_eq!(client.state(), State::Reconnecting);
        // A request made meanwhile waits for the next session.
        let notice = client.notice();
        let waiting = tokio::spawn(async move {
            notice
                .subscribe(&format!("notice://{}/b/*", realm("close")))
                .await
        });
        fitz_tests::until("the request is queued", || async {
            client.debug_snapshot().await.unwrap().backlog >= 1
        })
        .await;
        // Bounded by WAIT: far less than the backoff it interrupts.
        within("close() during the backoff", client.close()).await;
        wait_event(&mut events, |e| matches!(e, Event::Closed)).await;
        assert_eq!(client.state(), State::Closed);
        let e = within("the queued request", waiting)
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
        let e = within("the subscription's end", sub.next())
            .await
            .expect("an error before the end")
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
        assert!(sub.next().await.is_none());
        // Double close is fine.
        within("a second close()", client.close()).await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn close_during_a_hanging_reconnect_handshake_returns_at_once() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let (proxy, url) = brokers.anon_proxy(t).await;
        let client = anon_builder(&url)
            .reconnect(ReconnectPolicy {
                base_delay: Duration::ZERO,
                ..fitz_tests::fast_reconnect()
            })
            .connect_timeout(Duration::from_secs(3600))
            .ping_interval(Duration::from_secs(1800))
            .dead_peer_timeout(Duration::from_secs(3600))
            .build()
            .unwrap();
        client.connect().await.unwrap();
        let mut events = client.events();
        let mut states = client.watch_state();
        // New connections open but nothing moves: the handshake hangs.
        proxy.blackhole(true);
        proxy.cut_all();
        wait_event(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
        within(
            "a new attempt",
            states.wait_for(|s| {
                matches!(
                    s,
                    State::Connecting | State::Connected | State::Authenticating
                )
            }),
        )
        .await
        .unwrap();
        assert!(proxy.wait_for_connections(1, WAIT).await);
        within("close() during the handshake", client.close()).await;
        wait_event(&mut events, |e| matches!(e, Event::Closed)).await;
        assert_eq!(client.state(), State::Closed);
        proxy.blackhole(false);
    }
    brokers.shutdown().await;
}
