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

pub(crate) async fn connect_tcp(
    endpoint: &Endpoint,
    keepalive: Option<Duration>,
) -> Result<BoxedStream> {
    let tcp = TcpStream::connect(endpoint.socket_addr())
        .await
        .map_err(|e| Error::io("TCP connect failed", e))?;
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
    Ok(Box::new(tcp))
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
                return Poll::Ready(Err(Failure::closed("connection closed while writing")));
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
                let why = if self.read.is_empty() {
                    "connection closed by the broker"
                } else {
                    "connection closed by the broker mid-frame"
                };
                return Poll::Ready(Err(Failure::closed(why)));
            }
        }
    }

    pub async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}
