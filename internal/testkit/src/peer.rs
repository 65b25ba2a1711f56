//! Scripted in-process brokers for faults a real broker cannot produce.
//!
//! A [`Peer`] is the broker end of one connection, driven step by step by
//! the test: read CONNECT, send a hello with any capabilities (or none, or
//! late, or never), read requests, answer them in any order, with or without
//! labels, send unknown ids, oversized length prefixes, half frames, frames
//! dripped a few bytes at a time, or just close.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use fitz_testkit::peer::{Listener, CAP_CORRELATION};
//! let listener = Listener::bind().await?;
//! // build a client for listener.tcp_url(), call connect() in another task …
//! let mut peer = listener.accept().await?;
//! let _token = peer.handshake(CAP_CORRELATION).await?;
//! let req = peer.read_request().await?;
//! peer.reply(&req, &[0]).await?;
//! # Ok(()) }
//! ```

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use fitz_protocol::frame::FrameDecoder;
use fitz_protocol::record::{LabelledRecords, Side, encode_raw_record, put_label};
use fitz_protocol::types;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// Capability bit 0.
pub const CAP_CORRELATION: u32 = 1;
/// Capability bit 1.
pub const CAP_SESSION_METADATA: u32 = 2;
/// Every capability bit of protocol version 1.
pub const CAP_ALL: u32 = 0b1111;

/// A loopback TCP listener handing out [`Peer`]s.
pub struct Listener {
    listener: TcpListener,
}

impl Listener {
    /// Binds `127.0.0.1:0`.
    pub async fn bind() -> io::Result<Self> {
        Ok(Self {
            listener: TcpListener::bind("127.0.0.1:0").await?,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// `tcp://127.0.0.1:port`.
    pub fn tcp_url(&self) -> String {
        format!("tcp://{}", self.addr())
    }

    /// Accepts the next connection.
    pub async fn accept(&self) -> io::Result<Peer> {
        let (stream, _) = self.listener.accept().await?;
        stream.set_nodelay(true)?;
        Ok(Peer::new(stream))
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// One request as the peer read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The CORRELATE id, when the client labelled it.
    pub correlation: Option<u64>,
    /// Record type.
    pub ty: u16,
    /// Record payload.
    pub payload: Bytes,
}

/// The broker end of one connection (TCP framing).
pub struct Peer {
    io: Box<dyn Io>,
    read: BytesMut,
    decoder: FrameDecoder,
    /// Records read but not yet returned (a frame may hold several).
    queued: std::collections::VecDeque<Request>,
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl Peer {
    /// Wraps any byte stream (a TCP socket, the far end of
    /// `fitz::transport::memory`).
    pub fn new(stream: impl AsyncRead + AsyncWrite + Send + Unpin + 'static) -> Self {
        Self {
            io: Box::new(stream),
            read: BytesMut::with_capacity(64 * 1024),
            decoder: FrameDecoder::new(usize::MAX >> 1),
            queued: Default::default(),
        }
    }

    /// The next whole frame body; `None` at end of stream.
    pub async fn read_frame(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            if let Some(f) = self
                .decoder
                .decode(&mut self.read)
                .map_err(|e| bad(e.to_string()))?
            {
                return Ok(Some(f));
            }
            if self.io.read_buf(&mut self.read).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// The next record with its label; fails at end of stream.
    pub async fn read_request(&mut self) -> io::Result<Request> {
        loop {
            if let Some(r) = self.queued.pop_front() {
                return Ok(r);
            }
            let frame = self
                .read_frame()
                .await?
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
            // Side::Broker also enforces "no record type twice in a frame".
            for rec in LabelledRecords::new(frame, Side::Broker) {
                let rec = rec.map_err(|e| bad(e.to_string()))?;
                self.queued.push_back(Request {
                    correlation: rec.correlation,
                    ty: rec.record.ty,
                    payload: rec.record.payload,
                });
            }
        }
    }

    /// Reads CONNECT and returns its token.
    pub async fn read_connect(&mut self) -> io::Result<Bytes> {
        let r = self.read_request().await?;
        if r.ty != types::CONNECT || r.correlation.is_some() {
            return Err(bad(format!("expected CONNECT, got {r:?}")));
        }
        Ok(r.payload)
    }

    /// Sends SERVER_HELLO (version 1) with `caps`, alone in its frame.
    pub async fn send_hello(&mut self, caps: u32) -> io::Result<()> {
        let mut p = BytesMut::new();
        p.put_u16(1);
        p.put_u32(caps);
        self.send_record(types::SERVER_HELLO, &p).await
    }

    /// CONNECT then hello; returns the token.
    pub async fn handshake(&mut self, caps: u32) -> io::Result<Bytes> {
        let token = self.read_connect().await?;
        self.send_hello(caps).await?;
        Ok(token)
    }

    /// Answers `req` with a record of its type, labelled iff it was.
    pub async fn reply(&mut self, req: &Request, payload: &[u8]) -> io::Result<()> {
        self.send_labelled(req.correlation, req.ty, payload).await
    }

    /// Sends `[CORRELATED id]?[record]` as one frame.
    pub async fn send_labelled(
        &mut self,
        correlation: Option<u64>,
        ty: u16,
        payload: &[u8],
    ) -> io::Result<()> {
        let body = frame_body(correlation, ty, payload)?;
        self.send_frame(&body).await
    }

    /// Sends one unlabelled record as its own frame.
    pub async fn send_record(&mut self, ty: u16, payload: &[u8]) -> io::Result<()> {
        self.send_labelled(None, ty, payload).await
    }

    /// Sends a frame body with its length prefix.
    pub async fn send_frame(&mut self, body: &[u8]) -> io::Result<()> {
        let mut wire = BytesMut::with_capacity(4 + body.len());
        let len = u32::try_from(body.len()).map_err(|_| bad("frame too large"))?;
        wire.put_u32(len);
        wire.put_slice(body);
        self.send_raw(&wire).await
    }

    /// Writes bytes as they are (bogus prefixes, half frames …).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await
    }

    /// Writes `bytes` in `chunk`-sized writes, yielding between them so the
    /// reader sees many small reads.
    pub async fn send_dripped(&mut self, bytes: &[u8], chunk: usize) -> io::Result<()> {
        for part in bytes.chunks(chunk.max(1)) {
            self.io.write_all(part).await?;
            self.io.flush().await?;
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    /// Waits until the client closes its end (EOF), skipping anything it
    /// still sends; errors after `timeout`.
    pub async fn expect_eof(&mut self, timeout: Duration) -> io::Result<()> {
        tokio::time::timeout(timeout, async {
            while self.read_frame().await?.is_some() {}
            Ok(())
        })
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
    }

    /// Closes the connection (FIN).
    pub async fn close(mut self) {
        let _ = self.io.shutdown().await;
    }
}

/// Encodes `[CORRELATED id]?[record]` (no length prefix).
pub fn frame_body(correlation: Option<u64>, ty: u16, payload: &[u8]) -> io::Result<BytesMut> {
    let mut body = BytesMut::with_capacity(16 + payload.len());
    if let Some(id) = correlation {
        put_label(&mut body, types::CORRELATED, id);
    }
    encode_raw_record(&mut body, ty, payload).map_err(|e| bad(e.to_string()))?;
    Ok(body)
}

/// Encodes a whole TCP frame (prefix included) of `[CORRELATED id]?[record]`.
pub fn tcp_frame(correlation: Option<u64>, ty: u16, payload: &[u8]) -> io::Result<Bytes> {
    let body = frame_body(correlation, ty, payload)?;
    let mut wire = BytesMut::with_capacity(4 + body.len());
    wire.put_u32(u32::try_from(body.len()).map_err(|_| bad("frame too large"))?);
    wire.put_slice(&body);
    Ok(wire.freeze())
}

/// Payload helpers for common replies.
pub mod payloads {
    use bytes::{BufMut, BytesMut};

    /// `[0]`: a bare success.
    pub fn ok() -> Vec<u8> {
        vec![0]
    }

    /// `[0][1][u64 id]`: a flagged subscribe acknowledgement (Notice, Queue).
    pub fn subscribed(sub_id: u64) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_u8(0);
        b.put_u8(1);
        b.put_u64(sub_id);
        b.to_vec()
    }

    /// `[1][u32 code][str message]`: a coded error.
    pub fn error(code: u32, message: &str) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_u8(1);
        b.put_u32(code);
        b.put_u32(message.len() as u32);
        b.put_slice(message.as_bytes());
        b.to_vec()
    }

    /// `[u64 sub_id][str route][bytes payload]`: a NOTIFY body.
    pub fn notify(sub_id: u64, route: &str, payload: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_u64(sub_id);
        b.put_u32(route.len() as u32);
        b.put_slice(route.as_bytes());
        b.put_u32(payload.len() as u32);
        b.put_slice(payload);
        b.to_vec()
    }
}
