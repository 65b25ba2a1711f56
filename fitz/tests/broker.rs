//! The client against the embedded broker (or an external one, see
//! `fitz_testkit::fixture`), directly and through the disconnect proxy.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fitz::{Client, ErrorKind, Event, ReconnectPolicy, State, StaticToken};
use fitz_testkit::jwt;
use fitz_testkit::{Brokers, Proxy};
use futures_util::StreamExt;

const WAIT: Duration = Duration::from_secs(10);

async fn next_msg(sub: &mut fitz::NoticeSubscription) -> fitz::NoticeMessage {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("no notice within 10 s")
        .expect("stream ended")
        .expect("stream error")
}

async fn wait_event(events: &mut fitz::Events, pred: impl Fn(&Event) -> bool) -> Event {
    tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Some(ev) if pred(&ev) => return ev,
                Some(_) => {}
                None => panic!("events ended"),
            }
        }
    })
    .await
    .expect("event never came")
}

fn fast_reconnect() -> ReconnectPolicy {
    ReconnectPolicy {
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        ..ReconnectPolicy::default()
    }
}

async fn connected(url: &str) -> Client {
    let c = Client::anonymous(url).unwrap();
    c.connect().await.unwrap();
    c
}

/// Publishes until the subscriber sees one (a notice published before the
/// broker installed the subscription is simply not delivered).
async fn publish_until_seen(
    publisher: &Client,
    route: &str,
    sub: &mut fitz::NoticeSubscription,
) -> fitz::NoticeMessage {
    tokio::time::timeout(WAIT, async {
        loop {
            publisher.notice().publish(route, "ping").await.unwrap();
            if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(50), sub.next()).await {
                return m.unwrap();
            }
        }
    })
    .await
    .expect("never delivered")
}

#[tokio::test]
async fn notice_round_trip_over_tcp_and_websocket() {
    let brokers = Brokers::start().await.unwrap();
    for url in [&brokers.anon_tcp, &brokers.anon_ws] {
        let subscriber = connected(url).await;
        let publisher = connected(url).await;
        let caps = subscriber.server_capabilities().unwrap();
        assert!(
            caps.contains(fitz::Capabilities::CORRELATION),
            "{url}: {caps:?}"
        );
        let mut sub = subscriber
            .notice()
            .subscribe("notice://prod/app/*")
            .await
            .unwrap();
        publisher
            .notice()
            .publish("notice://prod/app/deploys", "v1")
            .await
            .unwrap();
        let msg = next_msg(&mut sub).await;
        assert_eq!(msg.route(), "notice://prod/app/deploys");
        assert_eq!(&msg.payload()[..], b"v1");
        // Malformed routes never leave the client.
        let e = publisher
            .notice()
            .publish("notice://prod/app/*", "x")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        sub.unsubscribe().await.unwrap();
        subscriber.close().await;
        publisher.close().await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn broker_errors_are_typed() {
    let brokers = Brokers::start().await.unwrap();
    let client = connected(&brokers.anon_tcp).await;
    // A pattern the client lets through but the broker rejects is a typed
    // broker error — or a local InvalidArgument when we can tell first.
    match client.notice().subscribe("notice://prod/ap*").await {
        Err(e) => assert!(
            matches!(e.kind(), ErrorKind::InvalidArgument | ErrorKind::Broker),
            "{e:?}"
        ),
        Ok(_) => panic!("partial wildcard accepted"),
    }
    client.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn authenticated_broker_accepts_the_test_token_and_rejects_others() {
    let brokers = Brokers::start().await.unwrap();
    for url in [&brokers.auth_tcp, &brokers.auth_ws] {
        let ok = Client::builder(url.as_str(), StaticToken::new(jwt::test_token()))
            .service_name("fitz-tests")
            .build()
            .unwrap();
        ok.connect().await.unwrap();
        assert_eq!(ok.state(), State::Authenticated);
        ok.close().await;

        for bad in [
            jwt::wrong_secret_token(),
            jwt::expired_token(),
            jwt::other_family_token("nobody"),
            String::new(),
        ] {
            let client = Client::builder(url.as_str(), StaticToken::new(bad))
                .build()
                .unwrap();
            let e = client.connect().await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Auth, "{url}: {e}");
            assert!(!e.is_retryable());
            assert_eq!(client.state(), State::Closed);
        }
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_cut_connection_restores_the_subscription_unnoticed() {
    let brokers = Brokers::start().await.unwrap();
    let proxy = Proxy::start(brokers.anon_tcp_addr().unwrap())
        .await
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let client = Client::builder(proxy.tcp_url(), move || {
        c.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, std::io::Error>(String::new()) }
    })
    .reconnect(fast_reconnect())
    .build()
    .unwrap();
    client.connect().await.unwrap();
    let publisher = connected(&brokers.anon_tcp).await;
    let mut events = client.events();
    let mut sub = client
        .notice()
        .subscribe("notice://prod/app/*")
        .await
        .unwrap();
    publish_until_seen(&publisher, "notice://prod/app/a", &mut sub).await;

    proxy.cut_all();
    wait_event(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    match wait_event(&mut events, |e| matches!(e, Event::Restored { .. })).await {
        Event::Restored { count } => assert_eq!(count, 1),
        _ => unreachable!(),
    }
    assert_eq!(client.state(), State::Authenticated);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "a fresh token for the new session"
    );
    // The same handle keeps receiving.
    let msg = publish_until_seen(&publisher, "notice://prod/app/b", &mut sub).await;
    assert_eq!(msg.route(), "notice://prod/app/b");
    client.close().await;
    publisher.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_request_in_flight_during_a_cut_fails_with_maybe_applied() {
    let brokers = Brokers::start().await.unwrap();
    let proxy = Proxy::start(brokers.anon_tcp_addr().unwrap())
        .await
        .unwrap();
    let client = Client::builder(proxy.tcp_url(), StaticToken::anonymous())
        .reconnect(fast_reconnect())
        .build()
        .unwrap();
    client.connect().await.unwrap();
    proxy.blackhole(true);
    let notice = client.notice();
    let pending = tokio::spawn(async move { notice.subscribe("notice://prod/app/*").await });
    // Wait until the actor has written it (correlated: written on admission).
    tokio::time::timeout(WAIT, async {
        while client.debug_snapshot().await.unwrap().pending == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .unwrap();
    proxy.cut_all();
    proxy.blackhole(false);
    let e = pending.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    assert!(e.maybe_applied(), "it was written before the cut");
    assert!(e.is_retryable());
    client.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_silent_websocket_peer_is_detected_and_replaced() {
    let brokers = Brokers::start().await.unwrap();
    let proxy = Proxy::start(brokers.anon_ws_addr().unwrap()).await.unwrap();
    let client = Client::builder(proxy.ws_url(), StaticToken::anonymous())
        .reconnect(fast_reconnect())
        .ping_interval(Duration::from_millis(100))
        .dead_peer_timeout(Duration::from_millis(400))
        .connect_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    client.connect().await.unwrap();
    let mut events = client.events();
    proxy.blackhole(true);
    match wait_event(&mut events, |e| matches!(e, Event::Disconnected { .. })).await {
        Event::Disconnected { reason } => {
            assert!(reason.message().contains("dead peer"), "{reason}")
        }
        _ => unreachable!(),
    }
    proxy.blackhole(false);
    proxy.cut_all(); // drop the stalled sockets the proxy still holds
    wait_event(&mut events, |e| {
        matches!(
            e,
            Event::Connected {
                reconnected: true,
                ..
            }
        )
    })
    .await;
    assert_eq!(client.state(), State::Authenticated);
    client.close().await;
    brokers.shutdown().await;
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
