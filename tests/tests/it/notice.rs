//! Notice against the embedded broker (or an external one, see
//! `fitz_testkit::fixture`), directly and through the disconnect proxy.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fitz::{Client, ErrorKind, Event, State};
use fitz_tests::{Brokers, BrokersExt, Proxy, Transport, WAIT, connected, realm, wait_event};
use futures_util::StreamExt;

/// Publishes until the subscriber sees one (a notice published before the
/// broker installed the subscription is simply not delivered).
async fn publish_until_seen(
    publisher: &Client,
    route: &str,
    sub: &mut fitz::notice::NoticeSubscription,
) -> fitz::notice::NoticeMessage {
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
    for t in Transport::BOTH {
        let url = brokers.anon_url(t);
        let app = realm("app");
        let subscriber = connected(url).await;
        let publisher = connected(url).await;
        let caps = subscriber.server_capabilities().unwrap();
        assert!(
            caps.contains(fitz::Capabilities::CORRELATION),
            "{url}: {caps:?}"
        );
        let mut sub = subscriber
            .notice()
            .subscribe(&format!("notice://prod/{app}/*"))
            .await
            .unwrap();
        let route = format!("notice://prod/{app}/deploys");
        publisher.notice().publish(&route, "v1").await.unwrap();
        let msg = fitz_tests::next_item(&mut sub).await;
        assert_eq!(msg.route(), route);
        assert_eq!(&msg.payload()[..], b"v1");
        // Malformed routes never leave the client.
        let e = publisher
            .notice()
            .publish(&format!("notice://prod/{app}/*"), "x")
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
    .reconnect(fitz_tests::fast_reconnect())
    .build()
    .unwrap();
    client.connect().await.unwrap();
    let publisher = connected(&brokers.anon_tcp).await;
    let mut events = client.events();
    let app = realm("app");
    let mut sub = client
        .notice()
        .subscribe(&format!("notice://prod/{app}/*"))
        .await
        .unwrap();
    publish_until_seen(&publisher, &format!("notice://prod/{app}/a"), &mut sub).await;

    proxy.cut_all();
    wait_event(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    assert_eq!(fitz_tests::restored(&mut events).await, 1);
    assert_eq!(client.state(), State::Authenticated);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "a fresh token for the new session"
    );
    // The same handle keeps receiving.
    let b = format!("notice://prod/{app}/b");
    let msg = publish_until_seen(&publisher, &b, &mut sub).await;
    assert_eq!(msg.route(), b);
    client.close().await;
    publisher.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn a_request_in_flight_during_a_cut_fails_with_maybe_applied() {
    let brokers = Brokers::start().await.unwrap();
    let (proxy, url) = brokers.anon_proxy(Transport::Tcp).await;
    let client = connected(&url).await;
    proxy.blackhole(true);
    let notice = client.notice();
    let pattern = format!("notice://prod/{}/*", realm("app"));
    let pending = tokio::spawn(async move { notice.subscribe(&pattern).await });
    // Wait until the actor has written it (correlated: written on admission).
    fitz_tests::until_pending(&client, 1).await;
    proxy.cut_all();
    proxy.blackhole(false);
    let e = pending.await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    assert!(e.maybe_applied(), "it was written before the cut");
    assert!(e.is_retryable());
    client.close().await;
    brokers.shutdown().await;
}
