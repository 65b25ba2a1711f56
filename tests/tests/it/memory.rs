//! Clients of the embedded broker over memory (`fitz::embedded`,
//! `Broker::serve_stream`): no socket, the broker's TCP connection path.

use std::time::Duration;

use fitz::kv::{Durability, TxMode};
use fitz::rpc::{HandlerError, RpcRequest};
use fitz::{Client, ErrorKind, Event, State, StaticToken};
use fitz_broker::{Broker, Transport};
use fitz_tests::{fast_reconnect, next_item, reconnected, wait_event, within};

async fn broker() -> Broker {
    Broker::builder().start().await.expect("the broker starts")
}

async fn memory_client(broker: &Broker) -> Client {
    let client = fitz::embedded::client(broker, StaticToken::anonymous())
        .reconnect(fast_reconnect())
        .build()
        .expect("valid options");
    client.connect().await.expect("connects over memory");
    client
}

#[tokio::test]
async fn kv_notice_and_rpc_round_trip_over_memory() {
    let broker = broker().await;
    let client = memory_client(&broker).await;
    let sessions = broker.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].transport, Transport::Stream);
    assert_eq!(sessions[0].peer, None);

    // KV: a committed write is read back by a second transaction.
    let route = "kv://mem/app/settings";
    let mut tx = client.kv().begin(route, TxMode::ReadWrite).await.unwrap();
    tx.put("mode", "fast").await.unwrap();
    tx.commit(Durability::Buffered).await.unwrap();
    let mut read = client.kv().begin(route, TxMode::ReadOnly).await.unwrap();
    assert_eq!(
        read.get("mode").await.unwrap().as_deref(),
        Some(&b"fast"[..])
    );
    read.rollback().await.unwrap();

    // Notice: the subscription is installed once its SUBSCRIBE is answered.
    let mut sub = client
        .notice()
        .subscribe("notice://mem/app/*")
        .await
        .unwrap();
    client
        .notice()
        .publish("notice://mem/app/deploys", "v2")
        .await
        .unwrap();
    let msg = next_item(&mut sub).await;
    assert_eq!(msg.route(), "notice://mem/app/deploys");
    assert_eq!(&msg.payload()[..], b"v2");

    // RPC: a worker and a caller on two memory clients.
    let server = memory_client(&broker).await;
    let worker = server
        .rpc()
        .serve("rpc://mem/app/*", 4, |req: RpcRequest| async move {
            let mut answer = b"echo:".to_vec();
            answer.extend_from_slice(req.body());
            Ok::<_, HandlerError>(answer)
        })
        .await
        .unwrap();
    let answer = client
        .rpc()
        .request("rpc://mem/app/echo", "hi")
        .await
        .unwrap();
    assert_eq!(&answer[..], b"echo:hi");
    assert_eq!(broker.session_count(), 2);

    worker.shutdown().await.unwrap();
    server.close().await;
    client.close().await;
    broker.wait_for_session_count(0).await;
    broker.shutdown().await;
}

#[tokio::test]
async fn a_memory_client_reconnects_through_a_fresh_pipe() {
    let broker = broker().await;
    let client = memory_client(&broker).await;
    let mut sub = client
        .notice()
        .subscribe("notice://mem/re/*")
        .await
        .unwrap();
    for round in 1..=3u64 {
        let mut events = client.events();
        broker.disconnect_all_sessions();
        wait_event(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
        wait_event(&mut events, reconnected).await;
        assert_eq!(client.state(), State::Authenticated);
        // A new session on a new pipe, and the subscription came along.
        assert_eq!(broker.sessions_opened(), round + 1);
        client
            .notice()
            .publish("notice://mem/re/x", format!("{round}"))
            .await
            .unwrap();
        let msg = next_item(&mut sub).await;
        assert_eq!(&msg.payload()[..], format!("{round}").as_bytes());
    }
    client.close().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn a_dropped_broker_is_a_retryable_connection_error() {
    let broker = broker().await;
    let client = fitz::embedded::client(&broker, StaticToken::anonymous())
        .reconnect(fast_reconnect())
        .request_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    client.connect().await.unwrap();
    let connector = fitz::embedded::connector(&broker);
    let mut events = client.events();
    drop(broker);
    // The live session ends like a connection the broker closed …
    let Event::Disconnected { reason } =
        wait_event(&mut events, |e| matches!(e, Event::Disconnected { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(reason.kind(), ErrorKind::Connection, "{reason}");
    assert!(reason.is_retryable());
    // … and nothing answers any more: a new connection is refused, retryably,
    // with nothing applied.
    let fresh = Client::builder("memory://embedded", StaticToken::anonymous())
        .connector(connector)
        .build()
        .unwrap();
    let e = within("a refused connect", fresh.connect())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    assert!(e.is_retryable() && !e.maybe_applied(), "{e}");
    assert_eq!(fresh.state(), State::Disconnected);
    // The old client keeps reconnecting; a request waits for a session
    // within its timeout and fails retryably, never written.
    let e = within(
        "a request without a broker",
        client.notice().publish("notice://mem/gone/x", "x"),
    )
    .await
    .unwrap_err();
    assert!(e.is_retryable() && !e.maybe_applied(), "{e}");
    assert_ne!(client.state(), State::Authenticated);
    client.close().await;
}

#[tokio::test]
async fn a_handed_over_stream_takes_a_connection_slot() {
    let limits = fitz_broker::Limits {
        max_connections: 1,
        ..fitz_broker::Limits::default()
    };
    let broker = Broker::builder().limits(limits).start().await.unwrap();
    let first = memory_client(&broker).await;
    // One attempt per connect: the pipe beyond the cap is closed unread,
    // which a pipe (unlike a TCP reset) cannot tell from an orderly close
    // right after CONNECT, so the client may judge it a refusal.
    let one_attempt = || {
        fitz::embedded::client(&broker, StaticToken::anonymous())
            .auth_attempts(1)
            .build()
            .unwrap()
    };
    let second = one_attempt();
    let e = within("a connect beyond the cap", second.connect())
        .await
        .unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Connection | ErrorKind::Auth),
        "{e}"
    );
    assert_eq!(broker.refused_connections(), 1);
    assert_eq!(broker.session_count(), 1);
    // Once the first connection ends, its slot serves the next pipe.
    first.close().await;
    fitz_tests::until("the slot serves a new pipe", || async {
        let c = one_attempt();
        let ok = c.connect().await.is_ok();
        c.close().await;
        ok
    })
    .await;
    broker.shutdown().await;
}
