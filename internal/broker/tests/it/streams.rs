//! Byte streams handed to the broker (`Broker::serve_stream`,
//! `serve_incoming`): no socket, the TCP connection path.

use bytes::{BufMut, Bytes, BytesMut};
use fitz_broker::{Broker, Transport};
use fitz_protocol::control::{Connect, ServerHello};
use fitz_protocol::frame::FrameDecoder;
use fitz_protocol::{Message, record, types};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::support::{self, WAIT};

/// Writes CONNECT with `token` as one length-prefixed frame.
async fn send_connect(pipe: &mut DuplexStream, token: &str) {
    let mut rec = BytesMut::new();
    Connect {
        token: Bytes::copy_from_slice(token.as_bytes()),
    }
    .encode_record(&mut rec)
    .unwrap();
    let mut frame = BytesMut::new();
    frame.put_u32(rec.len() as u32);
    frame.put_slice(&rec);
    pipe.write_all(&frame).await.unwrap();
}

/// The next frame, or `None` once the broker closed the pipe.
async fn next_frame(pipe: &mut DuplexStream) -> Option<Bytes> {
    let mut buf = BytesMut::new();
    let decoder = FrameDecoder::new(1 << 20);
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(frame) = decoder.decode(&mut buf).unwrap() {
                return Some(frame);
            }
            if pipe.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                return None;
            }
        }
    })
    .await
    .expect("a frame or the end within WAIT")
}

#[tokio::test]
async fn a_served_stream_is_a_session_like_tcp() {
    let broker = support::anon().await;
    let (mut pipe, server) = tokio::io::duplex(64 * 1024);
    broker.serve_stream(server);
    send_connect(&mut pipe, "").await;
    let hello =
        record::decode_single_record(next_frame(&mut pipe).await.expect("a hello")).unwrap();
    assert_eq!(hello.ty, types::SERVER_HELLO);
    ServerHello::decode(hello.payload).unwrap();
    let sessions = broker.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].transport, Transport::Stream);
    assert_eq!(sessions[0].peer, None);
    // The client hanging up ends the session.
    drop(pipe);
    tokio::time::timeout(WAIT, broker.wait_for_session_count(0))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_served_stream_has_its_token_checked() {
    let broker = support::jwt().await;
    let (mut pipe, server) = tokio::io::duplex(64 * 1024);
    broker.serve_stream(server);
    send_connect(&mut pipe, "not-a-jwt").await;
    assert!(next_frame(&mut pipe).await.is_none(), "closed, as on TCP");
    assert_eq!(broker.session_count(), 0);
}

#[tokio::test]
async fn served_streams_end_with_the_broker() {
    let broker = support::anon().await;
    let (tx, rx) = tokio::sync::mpsc::channel::<DuplexStream>(4);
    broker.serve_incoming(futures_util::stream::unfold(rx, |mut rx| async {
        rx.recv().await.map(|s| (s, rx))
    }));
    let (mut live, server) = tokio::io::duplex(64 * 1024);
    tx.send(server).await.unwrap();
    send_connect(&mut live, "").await;
    assert!(next_frame(&mut live).await.is_some(), "a hello");
    broker.shutdown().await;
    // The live session is closed, the incoming stream dropped, and a stream
    // handed over after shutdown is closed at once.
    assert!(next_frame(&mut live).await.is_none());
    tokio::time::timeout(WAIT, tx.closed()).await.unwrap();
    let (mut late, server) = tokio::io::duplex(1024);
    broker.serve_stream(server);
    assert!(next_frame(&mut late).await.is_none());
}

#[tokio::test]
async fn serve_stream_works_from_outside_the_runtime() {
    let broker: Broker = support::anon().await;
    let (mut pipe, server) = tokio::io::duplex(64 * 1024);
    // A plain thread without a tokio context: the broker's runtime runs it.
    std::thread::scope(|s| {
        s.spawn(|| broker.serve_stream(server));
    });
    send_connect(&mut pipe, "").await;
    assert!(next_frame(&mut pipe).await.is_some(), "a hello");
}
