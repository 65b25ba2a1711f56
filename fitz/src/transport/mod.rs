//! Byte transports under the connection actor.
//!
//! Every transport carries the same Fitz frames: TCP, TLS and in-memory
//! streams prefix each frame with a `u32` length; WebSocket sends one binary
//! message per frame. The actor only ever sees the private `Transport`, which
//!
//! * reads **whole frames only** (bytes accumulate in a read buffer, so a
//!   cancelled read loses nothing), rejecting an oversized length prefix
//!   before allocating for it;
//! * writes from one outbound buffer the actor fills with length-prefixed
//!   frames, so a batch of commands costs one `write` call on a stream (on
//!   WebSocket each frame becomes its own message, flushed once per batch).
//!
//! The public part of this module lets callers plug in their own byte stream
//! ([`Connector`]) and build an in-memory client/broker pair ([`memory`]).

mod stream;
pub(crate) mod tls;
mod ws;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::sync::mpsc;

use crate::endpoint::{Endpoint, Scheme};
use crate::error::{Error, Result};

pub(crate) use stream::{ResetProbe, StreamIo};
pub(crate) use ws::WsIo;

/// A bidirectional byte stream a [`Connector`] may return.
pub trait AsyncStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> AsyncStream for T {}

/// A boxed [`AsyncStream`].
pub type BoxedStream = Box<dyn AsyncStream>;

/// The future a [`Connector`] returns.
pub type ConnectFuture<'a> = Pin<Box<dyn Future<Output = io::Result<BoxedStream>> + Send + 'a>>;

/// Opens the raw byte stream to the broker in place of a TCP connection.
///
/// TLS (`tls://`, `wss://`) and the WebSocket handshake (`ws://`, `wss://`)
/// still run on top of the returned stream as the URL says; a `memory://` URL
/// uses the stream as-is with TCP framing. See [`memory`] for an in-process
/// pair, and [`crate::ClientBuilder::connector`].
pub trait Connector: Send + Sync + 'static {
    /// Opens one connection. Called on every connection attempt.
    fn connect(&self) -> ConnectFuture<'_>;
}

/// Creates an in-memory connector and the listener its connections arrive on.
///
/// Each [`Connector::connect`] creates a fresh `tokio::io::duplex` pair with
/// `buffer` bytes in each direction and hands the far end to the listener
/// (at most 16 unaccepted connections queue; a further connect fails with
/// `ConnectionRefused`, as does any connect once the listener is dropped:
/// the client sees a retryable [`crate::ErrorKind::Connection`] error and
/// reconnects per its policy). A writer facing a full `buffer` waits for the
/// reader, as on a socket.
///
/// The listener is a `Stream` of server ends: an embedded
/// `fitz_broker::Broker` serves it with `serve_incoming` (the
/// `embedded-broker` feature's `fitz::embedded` does exactly that), a
/// scripted peer `accept`s by hand.
///
/// ```
/// # async fn demo() -> fitz::Result<()> {
/// let (connector, mut listener) = fitz::transport::memory(64 * 1024);
/// let client = fitz::Client::builder("memory://test", fitz::StaticToken::anonymous())
///     .connector(connector)
///     .build()?;
/// // A scripted broker would now `listener.accept().await` and speak Fitz.
/// # drop((client, listener)); Ok(()) }
/// ```
pub fn memory(buffer: usize) -> (MemoryConnector, MemoryListener) {
    let (tx, rx) = mpsc::channel(16);
    (
        MemoryConnector {
            tx,
            buffer: buffer.max(1),
        },
        MemoryListener { rx },
    )
}

/// The client half of [`memory`].
#[derive(Debug, Clone)]
pub struct MemoryConnector {
    tx: mpsc::Sender<DuplexStream>,
    buffer: usize,
}

impl Connector for MemoryConnector {
    fn connect(&self) -> ConnectFuture<'_> {
        Box::pin(async move {
            let (client, server) = tokio::io::duplex(self.buffer);
            self.tx
                .try_send(server)
                .map_err(|_| io::Error::from(io::ErrorKind::ConnectionRefused))?;
            Ok(Box::new(client) as BoxedStream)
        })
    }
}

/// The broker half of [`memory`].
#[derive(Debug)]
pub struct MemoryListener {
    rx: mpsc::Receiver<DuplexStream>,
}

impl MemoryListener {
    /// Waits for the next connection; `None` once every connector is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a connection is only taken when the future resolves.
    pub async fn accept(&mut self) -> Option<DuplexStream> {
        self.rx.recv().await
    }
}

/// The listener as a stream of server ends (what `accept` returns), e.g.
/// for `fitz_broker::Broker::serve_incoming`; it ends once every connector
/// is gone.
impl futures_core::Stream for MemoryListener {
    type Item = DuplexStream;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<DuplexStream>> {
        self.rx.poll_recv(cx)
    }
}

/// What one poll of the transport produced.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A whole frame body.
    Frame(Bytes),
    /// Proof of life without a frame (WebSocket ping, pong or text).
    Activity,
    /// Output drained below the level the caller asked to be told about.
    Room,
}

/// How the peer ended a connection, as far as the client can tell.
///
/// During the handshake this decides whether a close may be the broker
/// refusing the token (see `connection::actor`): only a [`Close::Refused`]
/// says so for certain; a [`Close::Clean`] right after CONNECT may be a
/// refusal on TCP (the broker closes without a word) or a network cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Close {
    /// Not a close by the peer: a local, protocol or timeout failure.
    Other,
    /// An orderly end of stream with nothing left unread (a TCP FIN, a TLS
    /// stream ending, a WebSocket Close frame without a refusal).
    Clean,
    /// A reset, an abort, a broken pipe, or an end in the middle of a frame.
    Reset,
    /// A WebSocket Close frame whose reason is a CONNECT refusal
    /// (`connect failed: …`).
    Refused,
}

/// Why a transport stopped.
#[derive(Debug)]
pub(crate) struct Failure {
    pub close: Close,
    pub error: Error,
}

impl Failure {
    /// The peer closed the connection in an orderly way.
    pub fn clean(reason: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        Self {
            close: Close::Clean,
            error: Error::connection(reason),
        }
    }

    /// The connection broke (reset, or cut in the middle of a frame).
    pub fn reset(reason: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        Self {
            close: Close::Reset,
            error: Error::connection(reason),
        }
    }

    pub fn error(error: Error) -> Self {
        Self {
            close: Close::Other,
            error,
        }
    }

    fn io(context: &'static str, err: io::Error) -> Self {
        use io::ErrorKind::*;
        let close = match err.kind() {
            // A TLS stream that ends without close_notify is how a broker
            // behind TLS closes: orderly as far as the socket goes.
            UnexpectedEof => Close::Clean,
            ConnectionReset | ConnectionAborted | BrokenPipe => Close::Reset,
            _ => Close::Other,
        };
        Self {
            close,
            error: Error::io(context, err),
        }
    }
}

enum Io {
    Stream(StreamIo),
    Ws(Box<WsIo>),
}

/// One open connection: framed reads, batched writes.
pub(crate) struct Transport {
    io: Io,
    /// Outbound frames, each `[u32 BE length][records]`.
    out: BytesMut,
    max_frame: usize,
    probe: Option<ResetProbe>,
}

impl Transport {
    /// Opens the byte stream, TLS and WebSocket layers the endpoint asks for.
    pub async fn open(endpoint: &Endpoint, settings: &OpenSettings<'_>) -> Result<Self> {
        let (raw, probe): (BoxedStream, _) = match settings.connector {
            Some(c) => (
                c.connect()
                    .await
                    .map_err(|e| Error::io("connect failed", e))?,
                None,
            ),
            None if endpoint.scheme == Scheme::Memory => {
                return Err(Error::invalid("memory:// URLs need a connector"));
            }
            None => stream::connect_tcp(endpoint, settings.keepalive).await?,
        };
        let raw = if endpoint.is_tls() {
            let config = settings
                .tls
                .ok_or_else(|| Error::invalid("TLS is not configured"))?;
            tls::handshake(config, &endpoint.host, raw).await?
        } else {
            raw
        };
        let io = match endpoint.scheme {
            Scheme::Ws | Scheme::Wss => Io::Ws(Box::new(
                WsIo::handshake(endpoint, raw, settings.max_frame).await?,
            )),
            _ => Io::Stream(StreamIo::new(raw, settings.max_frame)),
        };
        Ok(Self {
            io,
            out: BytesMut::with_capacity(8 * 1024),
            max_frame: settings.max_frame,
            probe,
        })
    }

    /// The handshake's reset probe (plain TCP connections only); taking it
    /// releases the second socket handle.
    pub fn take_probe(&mut self) -> Option<ResetProbe> {
        self.probe.take()
    }

    /// The outbound buffer: append whole length-prefixed frames
    /// (`fitz_protocol::frame::encode_frame_with`).
    pub fn out(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Bytes waiting to be written.
    pub fn pending_out(&self) -> usize {
        self.out.len() + self.io_pending()
    }

    fn io_pending(&self) -> usize {
        match &self.io {
            Io::Stream(_) => 0,
            Io::Ws(ws) => ws.unflushed(),
        }
    }

    /// Asks for a liveness probe (a WebSocket ping); no-op on streams.
    pub fn queue_ping(&mut self) {
        if let Io::Ws(ws) = &mut self.io {
            ws.queue_ping();
        }
    }

    pub fn is_websocket(&self) -> bool {
        matches!(self.io, Io::Ws(_))
    }

    /// Makes write progress (unless `write` is false: the caller is
    /// coalescing output and writes it later), then returns the next inbound
    /// frame or activity.
    ///
    /// With `room_below: Some(level)` it also returns [`Inbound::Room`] as
    /// soon as less than `level` bytes wait to be written: a caller holding
    /// work back until the output drains is woken by writability alone, even
    /// when nothing arrives. Cancel-safe: all state lives in `self`.
    pub fn poll_io(
        &mut self,
        cx: &mut Context<'_>,
        room_below: Option<usize>,
        write: bool,
    ) -> Poll<std::result::Result<Inbound, Failure>> {
        if write {
            let written = match &mut self.io {
                Io::Stream(s) => s.poll_write_out(cx, &mut self.out),
                Io::Ws(ws) => ws.poll_write_out(cx, &mut self.out),
            };
            if let Poll::Ready(Err(f)) = written {
                return Poll::Ready(Err(f));
            }
        }
        if room_below.is_some_and(|level| self.pending_out() < level) {
            return Poll::Ready(Ok(Inbound::Room));
        }
        match &mut self.io {
            Io::Stream(s) => s.poll_read_frame(cx).map(|r| r.map(Inbound::Frame)),
            Io::Ws(ws) => ws.poll_read(cx),
        }
    }

    /// Writes what the socket takes right now, without waiting. A `Pending`
    /// write is picked up by the next [`Self::poll_io`], which registers
    /// for writability.
    pub fn write_now(&mut self) -> std::result::Result<(), Failure> {
        if self.out.is_empty() {
            return Ok(());
        }
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        let r = match &mut self.io {
            Io::Stream(s) => s.poll_write_out(&mut cx, &mut self.out),
            Io::Ws(ws) => ws.poll_write_out(&mut cx, &mut self.out),
        };
        match r {
            Poll::Ready(Err(f)) => Err(f),
            _ => Ok(()),
        }
    }

    /// The next frame already buffered, without reading the socket.
    pub fn next_buffered(&mut self) -> std::result::Result<Option<Bytes>, Failure> {
        match &mut self.io {
            Io::Stream(s) => s.next_buffered(),
            Io::Ws(_) => Ok(None),
        }
    }

    /// Writes everything buffered.
    pub async fn flush(&mut self) -> std::result::Result<(), Failure> {
        std::future::poll_fn(|cx| {
            let r = match &mut self.io {
                Io::Stream(s) => s.poll_write_out(cx, &mut self.out),
                Io::Ws(ws) => ws.poll_write_out(cx, &mut self.out),
            };
            match r {
                Poll::Ready(Ok(())) if self.out.is_empty() && self.io_pending() == 0 => {
                    Poll::Ready(Ok(()))
                }
                Poll::Ready(Ok(())) => Poll::Pending,
                other => other,
            }
        })
        .await
    }

    /// Reads the next frame (handshake use; the actor uses [`Self::poll_io`]).
    pub async fn read_frame(&mut self) -> std::result::Result<Bytes, Failure> {
        loop {
            match std::future::poll_fn(|cx| self.poll_io(cx, None, true)).await? {
                Inbound::Frame(f) => return Ok(f),
                Inbound::Activity | Inbound::Room => continue,
            }
        }
    }

    /// Best-effort goodbye: flush, then close (WebSocket Close / TCP FIN).
    pub async fn goodbye(&mut self) {
        let _ = self.flush().await;
        match &mut self.io {
            Io::Stream(s) => s.shutdown().await,
            Io::Ws(ws) => ws.shutdown().await,
        }
    }
}

/// What [`Transport::open`] needs besides the URL.
pub(crate) struct OpenSettings<'a> {
    pub connector: Option<&'a dyn Connector>,
    pub tls: Option<&'a std::sync::Arc<tokio_rustls::rustls::ClientConfig>>,
    pub max_frame: usize,
    /// TCP keepalive idle time and probe interval (dead-peer detection on TCP).
    pub keepalive: Option<std::time::Duration>,
}
