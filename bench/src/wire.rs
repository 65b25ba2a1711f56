//! A raw protocol connection for the broker-only benches: length-prefixed
//! frames over TCP, built with `fitz-protocol` alone, so what they measure
//! is the broker and the wire, not a client library.

use bytes::{BufMut, Bytes, BytesMut};
use fitz_protocol::control::Connect;
use fitz_protocol::frame::FrameDecoder;
use fitz_protocol::record::{self, LabelledRecords, Side};
use fitz_protocol::{Message, types};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One raw connection: a write buffer of queued frames, a read buffer, and
/// the last correlation id used. Panics on any failure: it is a bench tool.
pub struct Raw {
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    next_id: u64,
}

impl Raw {
    /// Connects to `addr`, sends CONNECT with an empty token and waits for
    /// SERVER_HELLO.
    pub async fn connect(addr: std::net::SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut c = Raw {
            stream,
            rbuf: BytesMut::with_capacity(1 << 17),
            wbuf: BytesMut::with_capacity(1 << 16),
            next_id: 0,
        };
        c.queue(None, &Connect::default());
        c.flush().await;
        let hello = c.frame().await;
        assert_eq!(u16::from(hello[0]), types::SERVER_HELLO);
        c
    }

    /// Appends one frame, labelled with `correlation` when given.
    pub fn queue<M: Message>(&mut self, correlation: Option<u64>, m: &M) {
        let start = self.wbuf.len();
        self.wbuf.put_u32(0);
        if let Some(id) = correlation {
            record::put_label(&mut self.wbuf, types::CORRELATE, id);
        }
        m.encode_record(&mut self.wbuf).expect("encode");
        let len = u32::try_from(self.wbuf.len() - start - 4).expect("frame size");
        self.wbuf[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// Appends one frame labelled with the next correlation id; returns it.
    pub fn queue_correlated<M: Message>(&mut self, m: &M) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.queue(Some(id), m);
        id
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) {
        self.stream.write_all(&self.wbuf).await.expect("write");
        self.wbuf.clear();
    }

    /// The next whole frame.
    pub async fn frame(&mut self) -> Bytes {
        let dec = FrameDecoder::default();
        loop {
            if let Some(f) = dec.decode(&mut self.rbuf).expect("frame") {
                return f;
            }
            self.fill().await;
        }
    }

    /// A whole frame already in the read buffer, without reading.
    pub fn buffered_frame(&mut self) -> Option<Bytes> {
        FrameDecoder::default()
            .decode(&mut self.rbuf)
            .expect("frame")
    }

    /// Whether frames are queued but not written yet.
    pub fn has_queued(&self) -> bool {
        !self.wbuf.is_empty()
    }

    /// The socket's two halves and what was read but not consumed, for
    /// benches that write from one task and read from another.
    pub fn into_split(
        self,
    ) -> (
        tokio::net::tcp::OwnedReadHalf,
        tokio::net::tcp::OwnedWriteHalf,
        BytesMut,
    ) {
        let (reader, writer) = self.stream.into_split();
        (reader, writer, self.rbuf)
    }

    /// Reads once more into the read buffer.
    pub async fn fill(&mut self) {
        self.rbuf.reserve(1 << 17);
        let n = self.stream.read_buf(&mut self.rbuf).await.expect("read");
        assert!(n > 0, "broker closed");
    }

    /// The reply payload of the next frame, which must answer `id`.
    pub async fn reply(&mut self, id: u64) -> Bytes {
        let frame = self.frame().await;
        let l = LabelledRecords::new(frame, Side::Client)
            .next()
            .expect("a record")
            .expect("a well-formed record");
        assert_eq!(l.correlation, Some(id));
        l.record.payload
    }

    /// One correlated request; returns the reply payload.
    pub async fn call<M: Message>(&mut self, m: &M) -> Bytes {
        let id = self.queue_correlated(m);
        self.flush().await;
        self.reply(id).await
    }
}
