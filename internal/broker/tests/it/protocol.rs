//! Handshake, correlation, framing rules and protocol violations, on TCP and
//! WebSocket.

use std::time::Duration;

use crate::support::{Event, Kind, RawClient};
use bytes::{BufMut, Bytes, BytesMut};
use fitz_broker::{Broker, CAPABILITIES};
use fitz_protocol::control::{Connect, SessionMetadata};
use fitz_protocol::kv::{self, BeginOk, TxMode};
use fitz_protocol::record::{self, encode_raw_record};
use fitz_protocol::{Capabilities, Message, WireError, codes, decode_reply, notice, types};
use tokio_tungstenite::tungstenite::Message as WsMessage;

both_transports!(
    hello_is_alone_in_its_frame_with_the_capabilities,
    replies_carry_the_request_correlation,
    same_type_requests_are_matched_by_correlation,
    domain_record_before_connect_closes,
    connect_with_other_records_in_the_frame,
    second_connect_closes,
    malformed_correlate_closes,
    unknown_reserved_and_server_only_types_close,
    repeated_type_in_one_frame_closes,
    malformed_payloads_get_domain_errors,
    kv_begin_that_cannot_be_parsed_closes,
    session_metadata_is_recorded,
    rpc_cancel_is_accepted_with_the_capability,
    disconnect_all_sessions_is_seen_by_clients,
    shutdown_closes_sessions,
);

fn begin(route: &str) -> kv::Begin {
    kv::Begin {
        route: route.into(),
        mode: TxMode::ReadOnly,
    }
}

async fn hello_is_alone_in_its_frame_with_the_capabilities(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::open(&broker, kind).await;
    c.send(None, &Connect::default()).await;
    let Event::Frame(frame) = c.next_event().await else {
        panic!("closed")
    };
    assert_eq!(&frame[..], &[4, 0, 6, 0, 1, 0, 0, 0, 0b1111]);
    assert_eq!(
        CAPABILITIES,
        Capabilities::CORRELATION
            | Capabilities::SESSION_METADATA
            | Capabilities::KV_SCAN_EXCLUSIVE
            | Capabilities::RPC_CANCELLATION
    );
    broker.wait_for_session_count(1).await;
    assert_eq!(
        broker.sessions()[0].transport == fitz_broker::Transport::Tcp,
        kind == Kind::Tcp
    );
}

async fn replies_carry_the_request_correlation(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    // Labelled success: CORRELATED + reply in one frame.
    c.send(Some(0x0102_0304_0506_0708), &begin("kv://r/a/x"))
        .await;
    let Event::Frame(f) = c.next_event().await else {
        panic!()
    };
    assert_eq!(&f[..11], &[3, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(f[11], types::KV_BEGIN as u8);
    // Labelled broker-generated error.
    c.send(
        Some(42),
        &kv::Rollback {
            tx_id: 999,
            route: "kv://r/a/x".into(),
        },
    )
    .await;
    let l = c.next_record().await;
    assert_eq!(l.correlation, Some(42));
    let e = WireError::decode(l.record.payload).unwrap();
    assert_eq!(e.code(), Some(codes::KV_TX_NOT_FOUND));
    // Unlabelled request → unlabelled reply, alone in its frame.
    c.send(None, &begin("kv://r/a/x")).await;
    let Event::Frame(f) = c.next_event().await else {
        panic!()
    };
    let rec = record::decode_single_record(f).unwrap();
    assert_eq!(rec.ty, types::KV_BEGIN);
    assert!(decode_reply::<BeginOk>(rec.payload).unwrap().is_ok());
}

async fn same_type_requests_are_matched_by_correlation(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    let mut frame = BytesMut::new();
    record::put_label(&mut frame, types::CORRELATE, 7);
    begin("kv://r/a/one").encode_record(&mut frame).unwrap();
    c.send_frame(&frame).await;
    c.send(Some(8), &begin("kv://r/a/two")).await;
    let a = c.reply_to(8).await;
    let b = c.reply_to(7).await;
    let (a, b) = (
        decode_reply::<BeginOk>(a).unwrap().unwrap().tx_id,
        decode_reply::<BeginOk>(b).unwrap().unwrap().tx_id,
    );
    assert_ne!(a, b);
}

async fn domain_record_before_connect_closes(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::open(&broker, kind).await;
    c.send(None, &begin("kv://r/a/x")).await;
    c.expect_closed_with(kind, "unauthenticated: connect required")
        .await;
    assert_eq!(broker.sessions_opened(), 0);
}

async fn connect_with_other_records_in_the_frame(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::open(&broker, kind).await;
    let mut frame = BytesMut::new();
    Connect::default().encode_record(&mut frame).unwrap();
    record::put_label(&mut frame, types::CORRELATE, 5);
    begin("kv://r/a/x").encode_record(&mut frame).unwrap();
    c.send_frame(&frame).await;
    let hello = c.next_record().await;
    assert_eq!(hello.record.ty, types::SERVER_HELLO);
    assert!(
        decode_reply::<BeginOk>(c.reply_to(5).await)
            .unwrap()
            .is_ok()
    );
}

async fn second_connect_closes(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    c.send(None, &Connect::default()).await;
    c.expect_closed_with(kind, "duplicate CONNECT").await;
    broker.wait_for_session_count(0).await;
}

async fn malformed_correlate_closes(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut b = BytesMut::new();
    begin("kv://r/a/x").encode_record(&mut b).unwrap();
    let req = b.freeze();
    let cases: Vec<Vec<u8>> = vec![
        // length 7
        [&[2u8, 0, 7, 0, 0, 0, 0, 0, 0, 1][..], &req[..]].concat(),
        // id zero
        [&[2u8, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0][..], &req[..]].concat(),
        // labelling another label
        [
            &[2u8, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1][..],
            &[2u8, 0, 8, 0, 0, 0, 0, 0, 0, 0, 2][..],
            &req[..],
        ]
        .concat(),
        // last record of the frame
        vec![2u8, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1],
        // the broker's own label type from a client
        [&[3u8, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1][..], &req[..]].concat(),
    ];
    for case in cases {
        let mut c = RawClient::anon(&broker, kind).await;
        c.send_frame(&case).await;
        c.expect_closed_with(kind, "malformed frame").await;
    }
}

async fn unknown_reserved_and_server_only_types_close(kind: Kind) {
    let broker = crate::support::anon().await;
    for (ty, reason) in [
        (201u16, "reserved"),
        (900, "unknown message type 900"),
        (6, "unknown message type 6"),
        (types::KV_NOTIFY, "server-to-client only"),
        (types::NOTICE_NOTIFY, "server-to-client only"),
        (types::SERVER_HELLO, "server-to-client only"),
        (types::RPC_LIFECYCLE, "server-to-client only"),
    ] {
        let mut c = RawClient::anon(&broker, kind).await;
        let mut b = BytesMut::new();
        encode_raw_record(&mut b, ty, &[]).unwrap();
        c.send_frame(&b).await;
        c.expect_closed_with(kind, reason).await;
    }
    // A truncated record structure.
    let mut c = RawClient::anon(&broker, kind).await;
    c.send_frame(&[100, 0, 9, 1]).await;
    c.expect_closed_with(kind, "malformed frame").await;
    // An escaped small type.
    let mut c = RawClient::anon(&broker, kind).await;
    c.send_frame(&[0xFF, 0, 100, 0, 0]).await;
    c.expect_closed_with(kind, "malformed frame").await;
}

async fn repeated_type_in_one_frame_closes(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    let mut b = BytesMut::new();
    begin("kv://r/a/x").encode_record(&mut b).unwrap();
    begin("kv://r/a/y").encode_record(&mut b).unwrap();
    c.send_frame(&b).await;
    c.expect_closed_with(kind, "repeated").await;
}

async fn malformed_payloads_get_domain_errors(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    for (ty, payload, code) in [
        (types::KV_GET, &[0u8, 1][..], codes::KV_INVALID_ROUTE),
        (
            types::KV_SUBSCRIBE,
            &[0, 0, 0, 9][..],
            codes::KV_INVALID_PATTERN,
        ),
        (
            types::NOTICE_SUBSCRIBE,
            &[1][..],
            codes::NOTICE_INVALID_PATTERN,
        ),
        (types::QUEUE_ENQUEUE, &[1][..], codes::QUEUE_BAD_REQUEST),
        (types::LEASE_QUERY, &[1][..], codes::LEASE_BAD_REQUEST),
    ] {
        let id = c.id();
        let mut b = BytesMut::new();
        record::put_label(&mut b, types::CORRELATE, id);
        encode_raw_record(&mut b, ty, payload).unwrap();
        c.send_frame(&b).await;
        let e = WireError::decode(c.reply_to(id).await).unwrap();
        assert_eq!(e.code(), Some(code), "type {ty}");
    }
    // Notice PUBLISH with trailing bytes: 3001 even though PUBLISH has no success reply.
    let mut b = BytesMut::new();
    notice::Publish {
        route: "notice://a/b".into(),
        payload: Bytes::new(),
    }
    .encode_record(&mut b)
    .unwrap();
    let mut raw = b.to_vec();
    raw.push(0);
    let len = (raw.len() - 5) as u16;
    raw[3..5].copy_from_slice(&len.to_be_bytes());
    c.send_frame(&raw).await;
    let l = c.next_record().await;
    assert_eq!(l.record.ty, types::NOTICE_PUBLISH);
    assert_eq!(
        WireError::decode(l.record.payload).unwrap().code(),
        Some(codes::NOTICE_INVALID_ROUTE)
    );
    // Still usable.
    assert!(
        decode_reply::<BeginOk>(c.call(&begin("kv://r/a/x")).await)
            .unwrap()
            .is_ok()
    );
}

async fn kv_begin_that_cannot_be_parsed_closes(kind: Kind) {
    let broker = crate::support::anon().await;
    let bad: Vec<Vec<u8>> = vec![
        {
            // trailing byte after mode (the legacy durability byte)
            let mut p = begin("kv://r/a/x").to_payload().to_vec();
            p.push(1);
            p
        },
        {
            let mut p = begin("kv://r/a/x").to_payload().to_vec();
            *p.last_mut().unwrap() = 2;
            p
        },
        begin("kv://r/a").to_payload().to_vec(),
        begin("kv://r/*/x").to_payload().to_vec(),
    ];
    for payload in bad {
        let mut c = RawClient::anon(&broker, kind).await;
        let mut b = BytesMut::new();
        encode_raw_record(&mut b, types::KV_BEGIN, &payload).unwrap();
        c.send_frame(&b).await;
        c.expect_closed_with(kind, "authorization parse failed")
            .await;
    }
}

async fn session_metadata_is_recorded(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    c.send(
        None,
        &SessionMetadata {
            service_name: "  orders-worker ".into(),
        },
    )
    .await;
    // Metadata has no reply; a later call proves it was processed.
    c.call(&begin("kv://r/a/x")).await;
    assert_eq!(
        broker.sessions()[0].service_name.as_deref(),
        Some("orders-worker")
    );
    c.send(
        None,
        &SessionMetadata {
            service_name: "x".repeat(200).into(),
        },
    )
    .await;
    c.call(&begin("kv://r/a/x")).await;
    assert_eq!(
        broker.sessions()[0].service_name.as_deref(),
        Some("orders-worker")
    );
}

/// 304 is accepted now that CAP_RPC_CANCELLATION is advertised: a cancel
/// of an unknown call is answered by RPC_LIFECYCLE, never closed (the
/// rejection without the capability is the `CAPABILITIES` gate in
/// connection.rs).
async fn rpc_cancel_is_accepted_with_the_capability(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, kind).await;
    let mut b = BytesMut::new();
    encode_raw_record(&mut b, types::RPC_CANCEL, &[1; 18]).unwrap();
    c.send_frame(&b).await;
    let l = c.next_record().await;
    assert_eq!(l.record.ty, types::RPC_LIFECYCLE);
    assert_eq!(l.record.payload[0], 4);
    assert_eq!(l.record.payload[17], 5, "unknown call");
}

async fn disconnect_all_sessions_is_seen_by_clients(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut a = RawClient::anon(&broker, kind).await;
    let mut b = RawClient::anon(&broker, kind).await;
    broker.wait_for_session_count(2).await;
    broker.disconnect_all_sessions();
    a.expect_closed().await;
    b.expect_closed().await;
    broker.wait_for_session_count(0).await;
    // The broker keeps serving.
    let mut c = RawClient::anon(&broker, kind).await;
    c.call(&begin("kv://r/a/x")).await;
}

async fn shutdown_closes_sessions(kind: Kind) {
    let broker = crate::support::anon().await;
    let mut a = RawClient::anon(&broker, kind).await;
    broker.shutdown().await;
    broker.shutdown().await;
    a.expect_closed().await;
    assert!(
        tokio::net::TcpStream::connect(broker.tcp_addr())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn oversize_tcp_prefix_closes_without_reading_the_body() {
    let broker = Broker::builder().max_frame(1024).start().await.unwrap();
    let mut c = RawClient::anon(&broker, Kind::Tcp).await;
    // Announce 1 GiB and send nothing else: the broker must close at once.
    c.send_raw_tcp(&(1u32 << 30).to_be_bytes()).await;
    c.expect_closed().await;
    // A frame at the limit is fine; one byte over is not.
    let mut c = RawClient::anon(&broker, Kind::Tcp).await;
    let mut b = BytesMut::new();
    notice::Publish {
        route: "notice://a".into(),
        payload: Bytes::from(vec![b'x'; 1024 - 23]),
    }
    .encode_record(&mut b)
    .unwrap();
    assert_eq!(b.len(), 1024);
    c.send_frame(&b).await;
    c.call(&begin("kv://r/a/x")).await;
    let mut big = BytesMut::new();
    big.put_u32(1025);
    big.put_bytes(0, 1025);
    c.send_raw_tcp(&big).await;
    c.expect_closed().await;
}

#[tokio::test]
async fn oversize_ws_message_closes() {
    let broker = Broker::builder().max_frame(1024).start().await.unwrap();
    let mut c = RawClient::anon(&broker, Kind::Ws).await;
    c.send_ws(WsMessage::Binary(Bytes::from(vec![0u8; 4096])))
        .await;
    let reason = c.expect_closed().await;
    assert!(
        reason.is_some_and(|r| r.contains("websocket error")),
        "expected a close reason"
    );
}

#[tokio::test]
async fn zero_length_tcp_frame_closes() {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, Kind::Tcp).await;
    c.send_raw_tcp(&[0, 0, 0, 0]).await;
    c.expect_closed().await;
}

#[tokio::test]
async fn text_websocket_frame_closes_the_session() {
    let broker = crate::support::anon().await;
    let mut c = RawClient::anon(&broker, Kind::Ws).await;
    c.send_ws(WsMessage::Text("hello".into())).await;
    c.expect_closed_with(Kind::Ws, "text frames").await;
    broker.wait_for_session_count(0).await;
}

#[tokio::test]
async fn websocket_ping_gets_a_pong() {
    let broker = crate::support::anon().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(broker.ws_url())
        .await
        .unwrap();
    use futures_util::{SinkExt, StreamExt};
    let mut b = BytesMut::new();
    Connect::default().encode_record(&mut b).unwrap();
    ws.send(WsMessage::Binary(b.freeze())).await.unwrap();
    ws.send(WsMessage::Ping(Bytes::from_static(b"p1")))
        .await
        .unwrap();
    let mut got_hello = false;
    let pong = tokio::time::timeout(crate::support::WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Pong(p))) => return p,
                Some(Ok(WsMessage::Binary(_))) => got_hello = true,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(&pong[..], b"p1");
    assert!(got_hello);
}

#[tokio::test]
async fn connect_timeout_closes_silent_connections() {
    let broker = Broker::builder()
        .connect_timeout(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    for kind in [Kind::Tcp, Kind::Ws] {
        let mut c = RawClient::open(&broker, kind).await;
        let started = std::time::Instant::now();
        c.expect_closed_with(kind, "connect timeout").await;
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}

#[tokio::test]
async fn probes_answer_and_other_paths_are_404() {
    let broker = crate::support::anon().await;
    for (path, status) in [
        ("/healthz", "200"),
        ("/readyz", "200"),
        ("/livez", "200"),
        ("/metrics", "404"),
        ("/", "404"),
        ("/ws", "400"),
    ] {
        let resp = http_get(broker.http_addr(), path).await;
        assert!(
            resp.starts_with(&format!("HTTP/1.1 {status}")),
            "{path}: {resp}"
        );
        if status == "200" {
            assert!(resp.ends_with(r#"{"status":"ok"}"#), "{resp}");
        }
    }
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(crate::support::WAIT, s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}
