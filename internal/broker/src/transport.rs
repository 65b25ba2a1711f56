//! Listeners and frame I/O: raw TCP with 4-byte length prefixes, and HTTP
//! with the `/ws` WebSocket upgrade and the probes.
//!
//! The HTTP side parses the request head itself (`httparse`) and completes
//! the RFC 6455 handshake with tungstenite's accept-key helper: the broker
//! serves four fixed paths and never a request body, so a full HTTP stack
//! (hyper) would add a large dependency for nothing.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use fitz_protocol::frame::FrameDecoder;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::PollSemaphore;

use crate::broker::Shared;
use crate::connection;
use crate::input::{FREE_READ, Meter, Metered};
use crate::session::{CloseReason, Transport};

/// Largest HTTP request head accepted.
const MAX_HTTP_HEAD: usize = 8 * 1024;
/// Close reason sent when the broker stops.
pub(crate) const SHUTDOWN: CloseReason = CloseReason::new("broker shutting down");

type Ws = WebSocketStream<Metered<TcpStream>>;

/// What reading the next frame produced.
pub(crate) enum ReadEvent {
    /// One whole transport frame.
    Frame(Bytes),
    /// The peer closed the connection.
    Closed,
    /// The peer broke the transport rules; close with this reason.
    Violation(CloseReason),
}

/// Close reason of a connection whose frame did not complete in time.
pub(crate) const FRAME_TIMEOUT: CloseReason = CloseReason::new("frame timeout");

/// The reading half of a connection. Unfinished input is charged to the
/// broker's [`crate::input`] budget and bounded by the frame deadline.
pub(crate) enum FrameReader {
    Tcp {
        rd: OwnedReadHalf,
        buf: BytesMut,
        decoder: FrameDecoder,
        meter: Arc<Meter>,
        permits: PollSemaphore,
    },
    Ws {
        stream: SplitStream<Ws>,
        meter: Arc<Meter>,
    },
}

impl FrameReader {
    /// A TCP reader for `rd`.
    pub(crate) fn tcp(rd: OwnedReadHalf, max_frame: usize, meter: Arc<Meter>) -> Self {
        FrameReader::Tcp {
            rd,
            buf: BytesMut::with_capacity(FREE_READ),
            decoder: FrameDecoder::new(max_frame),
            permits: meter.permits(),
            meter,
        }
    }

    /// Whether a whole TCP frame is already buffered, so [`FrameReader::next`]
    /// returns without reading (always false on WebSocket).
    pub(crate) fn has_buffered_frame(&self) -> bool {
        match self {
            FrameReader::Tcp { buf, .. } => match buf.first_chunk::<4>() {
                Some(head) => {
                    let len = u32::from_be_bytes(*head) as usize;
                    len > 0 && buf.len() - 4 >= len
                }
                None => false,
            },
            FrameReader::Ws { .. } => false,
        }
    }

    /// The next frame. Cancel-safe: partial TCP input stays buffered.
    pub(crate) async fn next(&mut self) -> ReadEvent {
        match self {
            FrameReader::Tcp {
                rd,
                buf,
                decoder,
                meter,
                permits,
            } => loop {
                match decoder.decode(buf) {
                    Ok(Some(frame)) => {
                        meter.settle(buf.len());
                        return ReadEvent::Frame(frame);
                    }
                    Ok(None) => {}
                    Err(e) => return ReadEvent::Violation(format!("frame error: {e}").into()),
                }
                let deadline = meter.deadline();
                let room = tokio::select! {
                    room = meter.room(permits) => room,
                    () = sleep_until_some(deadline) => return ReadEvent::Violation(FRAME_TIMEOUT),
                };
                if buf.capacity() - buf.len() < room {
                    buf.reserve(room);
                }
                let mut limited = (&mut *buf).limit(room);
                let read = tokio::select! {
                    r = rd.read_buf(&mut limited) => r,
                    () = sleep_until_some(deadline) => return ReadEvent::Violation(FRAME_TIMEOUT),
                };
                match read {
                    Ok(0) | Err(_) => return ReadEvent::Closed,
                    Ok(n) => meter.read(n),
                }
            },
            FrameReader::Ws { stream, meter } => loop {
                // Bytes may start arriving during the wait: with no frame
                // under way yet, look again after one timeout's length.
                let check = meter
                    .deadline()
                    .unwrap_or_else(|| Instant::now() + meter.frame_timeout());
                let next = tokio::select! {
                    m = stream.next() => m,
                    () = tokio::time::sleep_until(check) => {
                        if meter.overdue() {
                            return ReadEvent::Violation(FRAME_TIMEOUT);
                        }
                        continue;
                    }
                };
                if next.is_some() {
                    // A whole message (or control frame) came out: whatever
                    // tungstenite holds beyond it is at most one read ahead.
                    meter.settle(0);
                }
                match next {
                    Some(Ok(Message::Binary(b))) => {
                        if b.is_empty() {
                            return ReadEvent::Violation("frame error: zero-length frame".into());
                        }
                        return ReadEvent::Frame(b);
                    }
                    Some(Ok(Message::Text(_))) => {
                        return ReadEvent::Violation(
                            "text frames are not supported: send binary frames".into(),
                        );
                    }
                    // Pings are answered by tungstenite itself.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(_))) | None => return ReadEvent::Closed,
                    Some(Err(e)) => {
                        return ReadEvent::Violation(format!("websocket error: {e}").into());
                    }
                }
            },
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The writing half of a connection.
pub(crate) enum FrameWriter {
    Tcp(OwnedWriteHalf),
    Ws(SplitSink<Ws, Message>),
}

impl FrameWriter {
    /// Writes a batch of prefixed frames: as-is on TCP (one write), one
    /// binary message per frame on WebSocket (one flush).
    pub(crate) async fn write_batch(&mut self, batch: Bytes) -> io::Result<()> {
        match self {
            FrameWriter::Tcp(w) => w.write_all(&batch).await,
            FrameWriter::Ws(sink) => {
                for frame in crate::session::frames(&batch) {
                    sink.feed(Message::Binary(frame))
                        .await
                        .map_err(io::Error::other)?;
                }
                sink.flush().await.map_err(io::Error::other)
            }
        }
    }

    /// Closes the transport: a Close frame carrying `reason` on WebSocket
    /// (cut to the 123 bytes a close reason may hold), a write shutdown on TCP.
    pub(crate) async fn close(&mut self, reason: &CloseReason) {
        match self {
            FrameWriter::Tcp(w) => {
                let _ = w.shutdown().await;
            }
            FrameWriter::Ws(sink) => {
                let code = if *reason == SHUTDOWN {
                    CloseCode::Away
                } else {
                    CloseCode::Policy
                };
                let mut text = reason.as_str();
                let mut cut = text.len().min(123);
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text = &text[..cut];
                let frame = CloseFrame {
                    code,
                    reason: text.into(),
                };
                let _ = sink.send(Message::Close(Some(frame))).await;
                let _ = sink.close().await;
            }
        }
    }
}

/// A connection slot, or `None` (and the accepted socket is dropped, which
/// closes it) when `FITZ_MAX_CONNECTIONS` are already served.
fn admit(shared: &Shared, peer: SocketAddr) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let slot = shared.connections.clone().try_acquire_owned().ok();
    if slot.is_none() {
        shared
            .stats
            .refused_connections
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer, "connection limit reached: closing a new connection");
    }
    slot
}

/// Accepts raw TCP connections until shutdown.
pub(crate) async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(slot) = admit(&shared, peer) else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (rd, wr) = stream.into_split();
                let reader = FrameReader::tcp(rd, shared.config.max_frame, shared.input.meter());
                let sh = shared.clone();
                shared.tasks.spawn(async move {
                    connection::serve(sh, reader, FrameWriter::Tcp(wr), Transport::Tcp, Some(peer))
                        .await;
                    drop(slot);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Accepts HTTP connections until shutdown.
pub(crate) async fn serve_http(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(slot) = admit(&shared, peer) else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let sh = shared.clone();
                shared.tasks.spawn(async move {
                    if let Err(e) = http_connection(stream, peer, sh).await {
                        tracing::debug!(%peer, error = %e, "HTTP connection ended");
                    }
                    drop(slot);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A parsed request head.
struct Head {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.header(name)
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }
}

/// Reads the request head; returns it with any bytes that followed it.
async fn read_head(stream: &mut TcpStream) -> io::Result<Option<(Head, Vec<u8>)>> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let head = Head {
                    method: req.method.unwrap_or("").to_owned(),
                    path: req.path.unwrap_or("").to_owned(),
                    headers: req
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_owned(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect(),
                };
                return Ok(Some((head, buf[len..].to_vec())));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HTTP_HEAD => {}
            Ok(httparse::Status::Partial) => {
                return Err(io::Error::other("request head too large"));
            }
            Err(e) => return Err(io::Error::other(e)),
        }
    }
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> io::Result<()> {
    let resp = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(resp.as_bytes()).await?;
    stream.shutdown().await
}

async fn http_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
) -> io::Result<()> {
    let head = tokio::select! {
        () = shared.shutdown.cancelled() => return Ok(()),
        // The head comes before CONNECT: the connect timeout bounds it too.
        h = tokio::time::timeout(shared.config.connect_timeout, read_head(&mut stream)) => h,
    };
    let Ok(head) = head else {
        return respond(
            &mut stream,
            "408 Request Timeout",
            r#"{"status":"timeout"}"#,
        )
        .await;
    };
    let Some((head, rest)) = head? else {
        return Ok(());
    };
    let path = head.path.split('?').next().unwrap_or("");
    let get = head.method == "GET" || head.method == "HEAD";
    match path {
        "/healthz" | "/readyz" | "/livez" if get => {
            respond(&mut stream, "200 OK", r#"{"status":"ok"}"#).await
        }
        "/ws" if head.method == "GET" => {
            let key = head.header("sec-websocket-key").map(str::to_owned);
            let upgrade = head.header_has_token("upgrade", "websocket")
                && head.header_has_token("connection", "upgrade")
                && head.header("sec-websocket-version") == Some("13");
            let Some(key) = key.filter(|_| upgrade) else {
                return respond(
                    &mut stream,
                    "400 Bad Request",
                    r#"{"status":"error","error":"websocket upgrade required"}"#,
                )
                .await;
            };
            let accept = derive_accept_key(key.trim().as_bytes());
            let resp = format!(
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
                 sec-websocket-accept: {accept}\r\n\r\n"
            );
            stream.write_all(resp.as_bytes()).await?;
            let max = shared.config.max_frame;
            let config = WebSocketConfig::default()
                .max_message_size(Some(max))
                .max_frame_size(Some(max));
            let meter = shared.input.meter();
            // The head's leftover bytes are buffered already: count them.
            meter.read(rest.len());
            let metered = Metered::new(stream, meter.clone());
            let ws =
                WebSocketStream::from_partially_read(metered, rest, Role::Server, Some(config))
                    .await;
            let (sink, stream) = ws.split();
            connection::serve(
                shared,
                FrameReader::Ws { stream, meter },
                FrameWriter::Ws(sink),
                Transport::WebSocket,
                Some(peer),
            )
            .await;
            Ok(())
        }
        _ => respond(&mut stream, "404 Not Found", r#"{"status":"not found"}"#).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Frames that arrive together are seen as buffered until the last one,
    /// so the reader flushes their replies in one write.
    #[tokio::test]
    async fn buffered_frames_are_reported_until_the_last() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (rd, _wr) = server.into_split();
        let budget = crate::input::InputBudget::new(1 << 20, Duration::from_secs(10));
        let mut reader = FrameReader::tcp(rd, 1024, budget.meter());
        assert!(!reader.has_buffered_frame());
        // Two whole frames and the first two bytes of a third, in one write.
        client
            .write_all(&[0, 0, 0, 1, 7, 0, 0, 0, 2, 8, 9, 0, 0])
            .await
            .unwrap();
        let ReadEvent::Frame(first) = reader.next().await else {
            panic!("a frame");
        };
        assert_eq!(&first[..], &[7]);
        assert!(reader.has_buffered_frame());
        let ReadEvent::Frame(second) = reader.next().await else {
            panic!("a frame");
        };
        assert_eq!(&second[..], &[8, 9]);
        assert!(!reader.has_buffered_frame(), "half a prefix is not a frame");
    }
}
