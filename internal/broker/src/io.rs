//! Frame I/O of one connection: a byte stream with 4-byte length prefixes
//! (a TCP socket, or any stream given to `Broker::serve_stream`), or
//! WebSocket binary messages. Unfinished input is charged to the broker's
//! [`crate::input`] budget and bounded by the frame deadline.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use fitz_protocol::frame::FrameDecoder;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::PollSemaphore;

use crate::input::{FREE_READ, Meter, Metered};
use crate::session::{CloseReason, SHUTDOWN};

/// A server-side WebSocket over a metered TCP stream.
pub(crate) type Ws = WebSocketStream<Metered<TcpStream>>;

/// Any byte stream the broker can serve with TCP framing.
pub(crate) trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> ByteStream for T {}

/// A boxed [`ByteStream`] (what `Broker::serve_stream` was given).
pub(crate) type BoxedStream = Box<dyn ByteStream>;

/// The reading half of a length-prefixed byte stream: a TCP socket's own
/// half (no lock), or a half of any other stream (`tokio::io::split`).
pub(crate) enum StreamRead {
    Tcp(OwnedReadHalf),
    Other(tokio::io::ReadHalf<BoxedStream>),
}

/// The writing half matching [`StreamRead`].
pub(crate) enum StreamWrite {
    Tcp(OwnedWriteHalf),
    Other(tokio::io::WriteHalf<BoxedStream>),
}

/// Splits a TCP socket into its halves.
pub(crate) fn split_tcp(stream: TcpStream) -> (StreamRead, StreamWrite) {
    let (rd, wr) = stream.into_split();
    (StreamRead::Tcp(rd), StreamWrite::Tcp(wr))
}

/// Splits any other byte stream into its halves.
pub(crate) fn split_stream(stream: BoxedStream) -> (StreamRead, StreamWrite) {
    let (rd, wr) = tokio::io::split(stream);
    (StreamRead::Other(rd), StreamWrite::Other(wr))
}

impl AsyncRead for StreamRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            StreamRead::Tcp(rd) => Pin::new(rd).poll_read(cx, buf),
            StreamRead::Other(rd) => Pin::new(rd).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for StreamWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            StreamWrite::Tcp(wr) => Pin::new(wr).poll_write(cx, buf),
            StreamWrite::Other(wr) => Pin::new(wr).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            StreamWrite::Tcp(wr) => Pin::new(wr).poll_flush(cx),
            StreamWrite::Other(wr) => Pin::new(wr).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            StreamWrite::Tcp(wr) => Pin::new(wr).poll_shutdown(cx),
            StreamWrite::Other(wr) => Pin::new(wr).poll_shutdown(cx),
        }
    }
}

impl StreamWrite {
    /// Writes what the stream takes right now without waiting;
    /// `WouldBlock` when it takes nothing. On TCP this is the socket's own
    /// `try_write`; another stream is polled once with a no-op waker (the
    /// caller hands any remainder to the writer task, which waits properly).
    pub(crate) fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            StreamWrite::Tcp(wr) => wr.try_write(buf),
            StreamWrite::Other(wr) => {
                let mut cx = Context::from_waker(std::task::Waker::noop());
                match Pin::new(wr).poll_write(&mut cx, buf) {
                    Poll::Ready(r) => r,
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            }
        }
    }
}

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
    /// Length-prefixed frames on a byte stream (TCP or served stream).
    Stream {
        rd: StreamRead,
        buf: BytesMut,
        decoder: FrameDecoder,
        meter: Arc<Meter>,
        permits: PollSemaphore,
    },
    Ws {
        stream: SplitStream<Ws>,
        meter: Arc<Meter>,
        /// What [`FrameReader::has_buffered_frame`] found already there.
        ready: Option<ReadEvent>,
    },
}

impl FrameReader {
    /// A length-prefixed reader for `rd`.
    pub(crate) fn stream(rd: StreamRead, max_frame: usize, meter: Arc<Meter>) -> Self {
        FrameReader::Stream {
            rd,
            buf: BytesMut::with_capacity(FREE_READ),
            decoder: FrameDecoder::new(max_frame),
            permits: meter.permits(),
            meter,
        }
    }

    /// Whether a whole frame is already there, so [`FrameReader::next`]
    /// returns without waiting: on a stream, a whole length-prefixed frame
    /// in the buffer; on WebSocket, a message the socket yields at once
    /// (polled once without a waker and kept for `next`). The reader
    /// handles such frames as one batch: their replies share a flush and
    /// their held commits a storage write.
    pub(crate) fn has_buffered_frame(&mut self) -> bool {
        match self {
            FrameReader::Stream { buf, .. } => match buf.first_chunk::<4>() {
                Some(head) => {
                    let len = u32::from_be_bytes(*head) as usize;
                    len > 0 && buf.len() - 4 >= len
                }
                None => false,
            },
            FrameReader::Ws {
                stream,
                meter,
                ready,
            } => {
                let mut cx = Context::from_waker(std::task::Waker::noop());
                while ready.is_none() {
                    match stream.poll_next_unpin(&mut cx) {
                        Poll::Pending => return false,
                        Poll::Ready(next) => {
                            if next.is_some() {
                                meter.settle(0);
                            }
                            *ready = ws_event(next);
                        }
                    }
                }
                true
            }
        }
    }

    /// The next frame. Cancel-safe: partial stream input stays buffered.
    pub(crate) async fn next(&mut self) -> ReadEvent {
        match self {
            FrameReader::Stream {
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
            FrameReader::Ws {
                stream,
                meter,
                ready,
            } => loop {
                if let Some(event) = ready.take() {
                    return event;
                }
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
                if let Some(event) = ws_event(next) {
                    return event;
                }
            },
        }
    }
}

/// What one WebSocket message means to the reader; `None` for the control
/// frames tungstenite handles itself (pings are answered by it).
fn ws_event(
    next: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
) -> Option<ReadEvent> {
    Some(match next {
        Some(Ok(Message::Binary(b))) if b.is_empty() => {
            ReadEvent::Violation("frame error: zero-length frame".into())
        }
        Some(Ok(Message::Binary(b))) => ReadEvent::Frame(b),
        Some(Ok(Message::Text(_))) => {
            ReadEvent::Violation("text frames are not supported: send binary frames".into())
        }
        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => return None,
        Some(Ok(Message::Close(_))) | None => ReadEvent::Closed,
        Some(Err(e)) => ReadEvent::Violation(format!("websocket error: {e}").into()),
    })
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
    /// Length-prefixed frames on a byte stream (TCP or served stream).
    Stream(StreamWrite),
    Ws(SplitSink<Ws, Message>),
}

impl FrameWriter {
    /// Writes a batch of prefixed frames: as-is on a stream (one write), one
    /// binary message per frame on WebSocket (one flush).
    pub(crate) async fn write_batch(&mut self, batch: Bytes) -> io::Result<()> {
        match self {
            FrameWriter::Stream(w) => w.write_all(&batch).await,
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

    /// Writes what is queued below the frame layer (WebSocket messages fed
    /// but not yet flushed, e.g. by [`FrameWriter::try_write_ws`]); nothing
    /// to do on a stream.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        match self {
            FrameWriter::Stream(_) => Ok(()),
            FrameWriter::Ws(sink) => sink.flush().await.map_err(io::Error::other),
        }
    }

    /// Flushes without waiting, polled with a no-op waker; true when nothing
    /// is left to write (always on a stream). On WebSocket this also leaves
    /// the no-op waker as the sink's write waker: tokio-tungstenite wakes
    /// the write waker on every read readiness of the socket too, so the
    /// writer task's last real waker woke it once per incoming frame
    /// (futex wake-ups seen per RPC call over WS, none over TCP).
    pub(crate) fn flush_quietly(&mut self) -> bool {
        let FrameWriter::Ws(sink) = self else {
            return true;
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        matches!(sink.poll_flush_unpin(&mut cx), Poll::Ready(Ok(())))
    }

    /// The inline write on WebSocket, without waiting: feeds the frames of
    /// `batch` to the sink (tungstenite's write buffer) and flushes, each
    /// polled once with a no-op waker. Returns how many bytes of `batch`
    /// (whole frames) were fed and whether the flush completed; what was
    /// not fed, and a flush left unfinished, are the writer task's (the
    /// caller wakes it, and its poll registers a real waker). Not a
    /// WebSocket: nothing fed.
    pub(crate) fn try_write_ws(&mut self, batch: &Bytes) -> io::Result<(usize, bool)> {
        let FrameWriter::Ws(sink) = self else {
            return Ok((0, false));
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut fed = 0;
        for frame in crate::session::frames(batch) {
            match sink.poll_ready_unpin(&mut cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Err(io::Error::other(e)),
                Poll::Pending => return Ok((fed, false)),
            }
            let len = frame.len();
            sink.start_send_unpin(Message::Binary(frame))
                .map_err(io::Error::other)?;
            fed += 4 + len;
        }
        match sink.poll_flush_unpin(&mut cx) {
            Poll::Ready(Ok(())) => Ok((fed, true)),
            Poll::Ready(Err(e)) => Err(io::Error::other(e)),
            Poll::Pending => Ok((fed, false)),
        }
    }

    /// Closes the transport: a Close frame carrying `reason` on WebSocket
    /// (cut to the 123 bytes a close reason may hold), a write shutdown on a
    /// stream.
    pub(crate) async fn close(&mut self, reason: &CloseReason) {
        match self {
            FrameWriter::Stream(w) => {
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
        let (rd, _wr) = split_tcp(server);
        let budget = crate::input::InputBudget::new(1 << 20, std::time::Duration::from_secs(10));
        let mut reader = FrameReader::stream(rd, 1024, budget.meter());
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
