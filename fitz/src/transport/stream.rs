//! Length-prefixed frames over a byte stream (TCP, TLS, in-memory).

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use fitz_protocol::frame::FrameDecoder;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;

use super::{BoxedStream, Failure};
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};

/// Read-buffer growth step: large enough for many small frames per syscall.
const READ_CHUNK: usize = 16 * 1024;

/// A second handle on a freshly connected TCP socket, kept only for the
/// handshake.
///
/// A broker that refuses a token reads CONNECT and closes: the client sees a
/// FIN and nothing else. A peer that closes *without reading* what was sent
/// (an L4 proxy or load balancer whose broker is down, a listener that is
/// going away) answers the unread CONNECT with a reset, which may arrive just
/// after its FIN. After an orderly close, [`ResetProbe::reset_follows`] waits
/// about a round trip and reports whether such a reset came.
pub(crate) struct ResetProbe {
    socket: socket2::Socket,
    /// How long the TCP connect took: one round trip.
    rtt: Duration,
}

impl ResetProbe {
    /// True when the connection was also reset (the socket holds an error),
    /// i.e. the peer did not read what the client sent.
    pub async fn reset_follows(&self) -> bool {
        let grace = (self.rtt * 2 + Duration::from_millis(5)).min(Duration::from_millis(500));
        tokio::time::sleep(grace).await;
        matches!(self.socket.take_error(), Ok(Some(_)))
    }
}

pub(crate) async fn connect_tcp(
    endpoint: &Endpoint,
    keepalive: Option<Duration>,
) -> Result<(BoxedStream, Option<ResetProbe>)> {
    let started = std::time::Instant::now();
    let tcp = TcpStream::connect(endpoint.socket_addr())
        .await
        .map_err(|e| Error::io("TCP connect failed", e))?;
    let rtt = started.elapsed();
    // Requests are small and latency-bound; batching happens in the actor.
    tcp.set_nodelay(true)
        .map_err(|e| Error::io("TCP_NODELAY failed", e))?;
    if let Some(idle) = keepalive {
        // The OS probes an idle connection and resets it when the peer is
        // gone: dead-peer detection on TCP without an application ping.
        // Kernels count in whole seconds.
        let idle = std::time::Duration::from_secs(idle.as_secs().max(1));
        let ka = socket2::TcpKeepalive::new()
            .with_time(idle)
            .with_interval(idle);
        #[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
        let ka = ka.with_retries(3);
        if let Err(e) = socket2::SockRef::from(&tcp).set_tcp_keepalive(&ka) {
            // Liveness is a bonus, not a reason to fail the connection.
            tracing::debug!(error = %e, "TCP keepalive not set");
        }
    }
    // Without a second handle a close stays ambiguous; not a reason to fail.
    let probe = socket2::SockRef::from(&tcp)
        .try_clone()
        .ok()
        .map(|socket| ResetProbe { socket, rtt });
    Ok((Box::new(tcp), probe))
}

pub(crate) struct StreamIo {
    stream: BoxedStream,
    read: BytesMut,
    decoder: FrameDecoder,
    /// Bytes were written since the last flush (TLS buffers internally).
    needs_flush: bool,
}

impl StreamIo {
    pub fn new(stream: BoxedStream, max_frame: usize) -> Self {
        Self {
            stream,
            read: BytesMut::with_capacity(READ_CHUNK),
            decoder: FrameDecoder::new(max_frame),
            needs_flush: false,
        }
    }

    /// Writes as much of `out` as the socket takes; `Ready(Ok)` once all of
    /// it is written and flushed.
    pub fn poll_write_out(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut BytesMut,
    ) -> Poll<std::result::Result<(), Failure>> {
        while !out.is_empty() {
            let n = ready!(Pin::new(&mut self.stream).poll_write(cx, out))
                .map_err(|e| Failure::io("write failed", e))?;
            if n == 0 {
                return Poll::Ready(Err(Failure::reset("connection closed while writing")));
            }
            out.advance(n);
            self.needs_flush = true;
        }
        if self.needs_flush {
            ready!(Pin::new(&mut self.stream).poll_flush(cx))
                .map_err(|e| Failure::io("flush failed", e))?;
            self.needs_flush = false;
        }
        Poll::Ready(Ok(()))
    }

    pub fn next_buffered(&mut self) -> std::result::Result<Option<Bytes>, Failure> {
        self.decoder
            .decode(&mut self.read)
            .map_err(|e| Failure::error(Error::protocol(format!("inbound frame rejected: {e}"))))
    }

    pub fn poll_read_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<std::result::Result<Bytes, Failure>> {
        loop {
            if let Some(frame) = self.next_buffered()? {
                return Poll::Ready(Ok(frame));
            }
            if self.read.capacity() - self.read.len() < READ_CHUNK / 4 {
                self.read.reserve(READ_CHUNK);
            }
            let n = ready!(poll_read_buf(
                Pin::new(&mut self.stream),
                cx,
                &mut self.read
            ))
            .map_err(|e| Failure::io("read failed", e))?;
            if n == 0 {
                return Poll::Ready(Err(if self.read.is_empty() {
                    Failure::clean("connection closed by the broker")
                } else {
                    Failure::reset("connection closed by the broker mid-frame")
                }));
            }
        }
    }

    pub async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}
