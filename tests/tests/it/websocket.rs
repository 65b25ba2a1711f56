//! WebSocket details against a scripted server: text frames are ignored,
//! pings are answered, binary messages carry one frame each, and a Close
//! frame ends the session with the broker's reason. And against the broker
//! through the disconnect proxy: a silent peer is detected by the pings.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use fitz::{Client, Event, ReconnectPolicy, State, StaticToken};
use fitz_tests::{Brokers, BrokersExt, Transport, reconnected, wait_event};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn hello() -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(4); // SERVER_HELLO
    b.put_u16(6);
    b.put_u16(1);
    b.put_u32(1);
    b.freeze()
}

#[tokio::test]
async fn websocket_text_is_ignored_pings_are_answered_and_close_carries_its_reason() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        // CONNECT arrives as one binary message: [01][00 00] for the empty token.
        match ws.next().await.unwrap().unwrap() {
            Message::Binary(b) => assert_eq!(&b[..], &[1, 0, 0]),
            other => panic!("{other:?}"),
        }
        ws.send(Message::Text("not fitz".into())).await.unwrap();
        ws.send(Message::Ping(Bytes::from_static(b"hb")))
            .await
            .unwrap();
        ws.send(Message::Binary(hello())).await.unwrap();
        // Our ping was answered.
        loop {
            match ws.next().await.unwrap().unwrap() {
                Message::Pong(p) => {
                    assert_eq!(&p[..], b"hb");
                    break;
                }
                Message::Binary(_) | Message::Ping(_) => {}
                other => panic!("{other:?}"),
            }
        }
        ws.close(Some(CloseFrame {
            code: CloseCode::Away,
            reason: "maintenance".into(),
        }))
        .await
        .unwrap();
    });
    let client = Client::builder(url, StaticToken::anonymous())
        .reconnect(ReconnectPolicy::disabled())
        .build()
        .unwrap();
    let mut events = client.events();
    client.connect().await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(Event::Disconnected { reason }) = events.recv().await {
                return reason;
            }
        }
    })
    .await
    .unwrap();
    assert!(reason.message().contains("maintenance"), "{reason}");
    server.await.unwrap();
    let mut w = client.watch_state();
    w.wait_for(|s| *s == State::Disconnected).await.unwrap();
}

#[tokio::test]
async fn a_silent_websocket_peer_is_detected_and_replaced() {
    let brokers = Brokers::start().await.unwrap();
    let (proxy, url) = brokers.anon_proxy(Transport::Ws).await;
    let client = fitz_tests::anon_builder(&url)
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
    wait_event(&mut events, reconnected).await;
    assert_eq!(client.state(), State::Authenticated);
    client.close().await;
    brokers.shutdown().await;
}

/// Both sides read WebSocket frames through a 16 KiB read buffer: frames
/// larger than it (and many small ones in one read) still arrive whole, in
/// both directions.
#[tokio::test]
async fn frames_larger_than_the_read_buffer_arrive_whole() {
    let brokers = Brokers::start().await.unwrap();
    let url = &brokers.anon_ws;
    let worker_client = fitz_tests::connected(url).await;
    let route = format!("rpc://{}/echo", fitz_tests::realm("ws-big"));
    let worker = worker_client
        .rpc()
        .serve(&route, 64, |req: fitz::rpc::RpcRequest| async move {
            Ok::<_, fitz::rpc::HandlerError>(req.body().clone())
        })
        .await
        .unwrap();
    let caller = fitz_tests::connected(url).await;
    let big: Bytes = (0..60_000u32).map(|i| (i % 251) as u8).collect();
    let echoed = caller.rpc().request(&route, big.clone()).await.unwrap();
    assert_eq!(echoed, big);
    // Many at once, small and large mixed: several frames per read.
    let calls = (0..64usize).map(|i| {
        let body = if i % 8 == 0 {
            big.slice(..20_000 + i)
        } else {
            big.slice(..i)
        };
        let rpc = caller.rpc();
        let route = route.clone();
        async move { (rpc.request(&route, body.clone()).await.unwrap(), body) }
    });
    for (got, sent) in futures_util::future::join_all(calls).await {
        assert_eq!(got, sent);
    }
    worker.shutdown().await.unwrap();
    caller.close().await;
    worker_client.close().await;
    brokers.shutdown().await;
}
