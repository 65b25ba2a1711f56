//! Listeners: raw TCP, HTTP with the `/ws` WebSocket upgrade and the
//! probes, and byte streams handed over by the embedder (one at a time, or
//! a stream of them: an in-memory listener). Each accepted connection gets a
//! slot (`FITZ_MAX_CONNECTIONS`), its frame I/O ([`crate::io`]) and a
//! connection task ([`crate::connection::serve`]); a handed-over stream
//! takes exactly the TCP path from there on.
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

use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::connection;
use crate::input::Metered;
use crate::io::{BoxedStream, FrameReader, FrameWriter, StreamRead, StreamWrite};
use crate::session::Transport;
use crate::shared::Shared;

/// Largest HTTP request head accepted.
const MAX_HTTP_HEAD: usize = 8 * 1024;

/// Most bytes one WebSocket read asks for (tungstenite's
/// `read_buffer_size`; a larger frame still gets room for itself). Also the
/// buffer each WebSocket session allocates up front.
const WS_READ_BUFFER: usize = 16 * 1024;

/// A connection slot, or `None` (and the accepted socket is dropped, which
/// closes it) when `FITZ_MAX_CONNECTIONS` are already served.
fn admit(shared: &Shared, peer: Option<SocketAddr>) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let slot = shared.connections.clone().try_acquire_owned().ok();
    if slot.is_none() {
        shared
            .stats
            .refused_connections
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(?peer, "connection limit reached: closing a new connection");
    }
    slot
}

/// Accepts connections on `listener` until shutdown, giving each admitted
/// one (see [`admit`]) to `serve` in a task of its own that holds the slot.
async fn accept_loop<F, Fut>(listener: TcpListener, shared: Arc<Shared>, what: &str, serve: F)
where
    F: Fn(TcpStream, SocketAddr, Arc<Shared>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(slot) = admit(&shared, Some(peer)) else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let connection = serve(stream, peer, shared.clone());
                shared.tasks.spawn(async move {
                    connection.await;
                    drop(slot);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "{what} accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Accepts raw TCP connections until shutdown.
pub(crate) async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    accept_loop(listener, shared, "TCP", |stream, peer, shared| {
        let (rd, wr) = crate::io::split_tcp(stream);
        serve_framed(shared, rd, wr, Transport::Tcp, Some(peer))
    })
    .await;
}

/// The connection task of a length-prefixed stream: TCP's and a
/// handed-over stream's are the same from here on.
fn serve_framed(
    shared: Arc<Shared>,
    rd: StreamRead,
    wr: StreamWrite,
    transport: Transport,
    peer: Option<SocketAddr>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let reader = FrameReader::stream(rd, shared.config.max_frame, shared.input.meter());
    connection::serve(shared, reader, FrameWriter::Stream(wr), transport, peer)
}

/// Serves one handed-over byte stream as a connection (a task of the
/// broker's task set). Like an accepted TCP socket it needs a slot, and is
/// dropped (closed) at once without one or after shutdown. Must run inside
/// the broker's runtime.
pub(crate) fn serve_stream(shared: &Arc<Shared>, stream: BoxedStream) {
    if shared.shutdown.is_cancelled() {
        return;
    }
    let Some(slot) = admit(shared, None) else {
        return;
    };
    let (rd, wr) = crate::io::split_stream(stream);
    let connection = serve_framed(shared.clone(), rd, wr, Transport::Stream, None);
    shared.tasks.spawn(async move {
        connection.await;
        drop(slot);
    });
}

/// Serves every byte stream `incoming` yields (see [`serve_stream`]) until
/// it ends or the broker shuts down; then drops `incoming`.
pub(crate) async fn serve_incoming<I>(mut incoming: I, shared: Arc<Shared>)
where
    I: Stream<Item = BoxedStream> + Send + Unpin,
{
    loop {
        let next = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            s = incoming.next() => s,
        };
        match next {
            Some(stream) => serve_stream(&shared, stream),
            None => return,
        }
    }
}

/// Accepts HTTP connections until shutdown.
pub(crate) async fn serve_http(listener: TcpListener, shared: Arc<Shared>) {
    accept_loop(
        listener,
        shared,
        "HTTP",
        |stream, peer, shared| async move {
            if let Err(e) = http_connection(stream, peer, shared).await {
                tracing::debug!(%peer, error = %e, "HTTP connection ended");
            }
        },
    )
    .await;
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
            // tungstenite zero-fills its whole read buffer before every
            // read: 16 KiB (as the TCP reader), not its 128 KiB default.
            let config = WebSocketConfig::default()
                .read_buffer_size(WS_READ_BUFFER)
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
                FrameReader::Ws {
                    stream,
                    meter,
                    ready: None,
                },
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
