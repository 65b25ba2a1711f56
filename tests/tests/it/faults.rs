//! Regression tests for faults found by attacking the client through the
//! disconnect proxy. Each failed before its fix.
//!
//! * **A handshake cut is not a token refusal.** A connection lost while the
//!   client waits for SERVER_HELLO — cut right after CONNECT, or accepted
//!   and dropped by a proxy whose broker is down — used to be reported as
//!   `AuthRejected` and closed the client for good, even against an
//!   anonymous broker. Now the client retries with a fresh token; only a
//!   refusal that repeats `auth_attempts` times in a row (or one a WebSocket
//!   Close states) ends it.
//! * **Writability admits held-back work.** Once 256 KiB of output was
//!   pending, new commands waited in a backlog that only an inbound frame
//!   released: a broker that stopped reading for a moment stalled every
//!   publish and request on the client until their deadlines.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fitz::{Client, ErrorKind, Event, State};
use fitz_testkit::Direction;
use fitz_tests::{
    Brokers, BrokersExt, Transport, anon_builder, fast_reconnect, next_item, realm, until,
    wait_event, within,
};

/// The client chunk after which a handshake cut lands on CONNECT: the first
/// on raw TCP, the second on WebSocket (after the HTTP upgrade).
fn connect_chunk(t: Transport) -> u32 {
    match t {
        Transport::Tcp => 1,
        Transport::Ws => 2,
    }
}

#[tokio::test]
async fn a_cut_right_after_connect_is_retried_not_taken_for_a_refusal() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let (proxy, url) = brokers.anon_proxy(t).await;
        let client = anon_builder(&url).build().unwrap();
        // The very first handshake is cut. On TCP it may be a refusal, so
        // `connect()` retries with a fresh token and succeeds; on WebSocket
        // the missing Close frame says it was the network, and the one-shot
        // `connect()` reports a retryable failure. Never `Auth`, never closed.
        proxy.cut_handshakes(1, connect_chunk(t));
        if let Err(e) = within("connect", client.connect()).await {
            assert!(t == Transport::Ws && e.is_retryable(), "{t:?}: {e}");
            assert_eq!(client.state(), State::Disconnected);
            within("connect", client.connect()).await.unwrap();
        }
        let route = format!("notice://{}/a/b", realm("hs"));
        let mut sub = client.notice().subscribe(&route).await.unwrap();
        let mut events = client.events();
        // Then a live session is cut and the next two handshakes with it
        // (one fewer than the refusal limit): the client comes back and
        // the subscription keeps receiving.
        proxy.cut_handshakes(2, connect_chunk(t));
        proxy.cut_all();
        wait_event(&mut events, fitz_tests::reconnected).await;
        assert_eq!(client.state(), State::Authenticated, "{t:?}");
        client.notice().publish(&route, "after").await.unwrap();
        let msg = next_item(&mut sub).await;
        assert_eq!(&msg.payload()[..], b"after");
        client.close().await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn many_cuts_during_handshakes_never_close_the_client() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let (proxy, url) = brokers.anon_proxy(t).await;
        let client = anon_builder(&url).build().unwrap();
        client.connect().await.unwrap();
        let mut events = client.events();
        for round in 0..10 {
            // Two handshakes in a row cut, every round.
            proxy.cut_handshakes(2, connect_chunk(t));
            proxy.cut_all();
            wait_event(&mut events, fitz_tests::reconnected).await;
            assert_eq!(client.state(), State::Authenticated, "{t:?} round {round}");
        }
        client.close().await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn connect_when_ready_waits_out_a_proxy_whose_broker_is_down() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let (proxy, url) = brokers.anon_proxy(t).await;
        proxy.upstream_down(true);
        let tokens = Arc::new(AtomicUsize::new(0));
        let counted = tokens.clone();
        let client = Client::builder(url.as_str(), move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, std::io::Error>(String::new()) }
        })
        .reconnect(fast_reconnect())
        .build()
        .unwrap();
        let c = client.clone();
        let connecting =
            tokio::spawn(async move { c.connect_when_ready(Duration::from_secs(30)).await });
        // More attempts than the refusal limit, each accepted and dropped.
        until("attempts through the proxy", || {
            let n = tokens.load(Ordering::SeqCst);
            async move { n > 4 }
        })
        .await;
        assert_ne!(client.state(), State::Closed, "{t:?}");
        proxy.upstream_down(false);
        within("connect_when_ready", connecting)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(client.state(), State::Authenticated, "{t:?}");
        client.close().await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_broker_that_stops_reading_for_a_moment_does_not_stall_the_client() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let (proxy, url) = brokers.anon_proxy(t).await;
        // Deadlines far beyond the test's patience: a stall shows as a hang.
        let client = anon_builder(&url)
            .request_timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        client.connect().await.unwrap();
        let route = format!("notice://{}/a/bulk", realm("stall"));
        // Bodies near the 64 KiB record limit.
        let body = Bytes::from(vec![7u8; 32 * 1024]);
        proxy.stall(Direction::Up, true);
        let publisher = {
            let (client, route, body) = (client.clone(), route.clone(), body.clone());
            tokio::spawn(async move {
                // Far more than the kernel buffers plus the client's 256 KiB
                // high-water mark hold while the broker does not read.
                for _ in 0..1024 {
                    client.notice().publish(&route, body.clone()).await?;
                }
                Ok::<(), fitz::Error>(())
            })
        };
        // Until the publisher is held back (its backlog is not empty).
        until("publishes held back", || {
            let c = client.clone();
            let done = publisher.is_finished();
            async move { done || c.debug_snapshot().await.is_ok_and(|s| s.backlog > 0) }
        })
        .await;
        assert!(
            !publisher.is_finished(),
            "{t:?}: the publisher was never held back"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.stall(Direction::Up, false);
        within("the held-back publishes", publisher)
            .await
            .unwrap()
            .unwrap();
        // And a request after it is answered promptly too.
        let e = within(
            "a request",
            client.kv().begin("kv://x/y/z", fitz::kv::TxMode::ReadOnly),
        )
        .await;
        assert!(e.is_ok(), "{t:?}: {:?}", e.err());
        client.close().await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_refusal_the_websocket_states_is_final_with_the_same_token() {
    let brokers = Brokers::start().await.unwrap();
    let tokens = Arc::new(AtomicUsize::new(0));
    let counted = tokens.clone();
    let client = Client::builder(brokers.auth_url(Transport::Ws), move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, std::io::Error>("not-a-jwt".to_owned()) }
    })
    .build()
    .unwrap();
    let mut events = client.events();
    let e = client.connect().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    assert_eq!(client.state(), State::Closed);
    wait_event(&mut events, |e| matches!(e, Event::AuthRejected { .. })).await;
    // Asked twice: the second token was the refused one and never sent.
    assert_eq!(tokens.load(Ordering::SeqCst), 2);
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_refreshed_token_after_a_refusal_is_accepted() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let tokens = Arc::new(AtomicUsize::new(0));
        let (counted, good) = (tokens.clone(), brokers.token());
        let client = Client::builder(brokers.auth_url(t), move || {
            // A provider whose first token is stale, as after a rotation.
            let token = if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                fitz_tests::jwt::wrong_secret_token()
            } else {
                good.clone()
            };
            async move { Ok::<_, std::io::Error>(token) }
        })
        .build()
        .unwrap();
        client.connect().await.unwrap();
        assert_eq!(client.state(), State::Authenticated, "{t:?}");
        assert_eq!(tokens.load(Ordering::SeqCst), 2, "{t:?}");
        client.close().await;
    }
    brokers.shutdown().await;
}
