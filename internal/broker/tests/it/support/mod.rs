//! A minimal raw protocol client on top of `fitz-protocol`, JWT minting and
//! broker helpers shared by the integration tests.
#![allow(dead_code)]

pub mod binary;

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use fitz_broker::{AuthConfig, Broker, Clock};
use fitz_protocol::control::{Connect, ServerHello};
use fitz_protocol::frame::FrameDecoder;
use fitz_protocol::record::{self, Labelled, LabelledRecords, Side};
use fitz_protocol::{Message, WireError, decode_reply, types};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Upper bound for any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long "nothing arrives" is observed.
pub const QUIET: Duration = Duration::from_millis(150);
/// The HS256 secret of JWT brokers in tests.
pub const SECRET: &str = "dev-test-secret";

/// Which listener a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Ws,
}

/// Generates `name::tcp` and `name::ws` tests from `async fn name(kind: Kind)`.
#[macro_export]
macro_rules! both_transports {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn tcp() {
                    super::$name($crate::support::Kind::Tcp).await
                }
                #[tokio::test]
                async fn ws() {
                    super::$name($crate::support::Kind::Ws).await
                }
            }
        )*
    };
}

/// Starts an anonymous broker.
pub async fn anon() -> Broker {
    Broker::builder().start().await.expect("broker starts")
}

/// Starts a JWT broker with `SECRET`, audience `fitz`, families dev=1, acme=2.
pub async fn jwt() -> Broker {
    jwt_with_clock(Clock::system()).await
}

/// [`jwt`] with a given clock.
pub async fn jwt_with_clock(clock: Clock) -> Broker {
    Broker::builder()
        .auth(
            AuthConfig::jwt_hs256(SECRET)
                .audiences(["fitz"])
                .family_map([("dev", 1), ("acme", 2)]),
        )
        .clock(clock)
        .start()
        .await
        .expect("broker starts")
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Mints an HS256 token with `claims` (a JSON object).
pub fn token_with(secret: &str, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// The official client's test token shape: tid `tid`, the given permissions.
pub fn token(tid: &str, permissions: &[&str]) -> String {
    let now = now_secs();
    token_with(
        SECRET,
        serde_json::json!({
            "iss": "", "aud": "fitz", "sub": "tests", "tid": tid,
            "exp": now + 3600, "iat": now, "permissions": permissions,
        }),
    )
}

/// Every permission of every scheme.
pub const ALL: &[&str] = &[
    "kv://**#*",
    "queue://**#*",
    "rpc://**#*",
    "notice://**#*",
    "lease://**#*",
    "stream://**#*",
    "schedule://**#*",
];

/// What the client observed next.
#[derive(Debug)]
pub enum Event {
    Frame(Bytes),
    /// The broker closed; WebSocket carries the Close reason.
    Closed(Option<String>),
}

enum Conn {
    Tcp { stream: TcpStream, buf: BytesMut },
    Ws(Box<WebSocketStream<MaybeTlsStream<TcpStream>>>),
}

/// A raw protocol client.
pub struct RawClient {
    conn: Conn,
    backlog: VecDeque<Labelled>,
    next_id: u64,
}

impl RawClient {
    /// Opens a transport without sending anything.
    pub async fn open(broker: &Broker, kind: Kind) -> RawClient {
        let conn = match kind {
            Kind::Tcp => {
                let stream = TcpStream::connect(broker.tcp_addr()).await.unwrap();
                stream.set_nodelay(true).unwrap();
                Conn::Tcp {
                    stream,
                    buf: BytesMut::new(),
                }
            }
            Kind::Ws => {
                let (ws, _) = tokio_tungstenite::connect_async(broker.ws_url())
                    .await
                    .unwrap();
                Conn::Ws(Box::new(ws))
            }
        };
        RawClient {
            conn,
            backlog: VecDeque::new(),
            next_id: 0,
        }
    }

    /// Opens, sends CONNECT with `token` and returns the hello.
    pub async fn connect(broker: &Broker, kind: Kind, token: &str) -> (RawClient, ServerHello) {
        let mut c = Self::open(broker, kind).await;
        c.send(
            None,
            &Connect {
                token: Bytes::copy_from_slice(token.as_bytes()),
            },
        )
        .await;
        let frame = match c.next_event().await {
            Event::Frame(f) => f,
            Event::Closed(r) => panic!("closed during handshake: {r:?}"),
        };
        let rec = record::decode_single_record(frame).unwrap();
        assert_eq!(rec.ty, types::SERVER_HELLO);
        (c, ServerHello::decode(rec.payload).unwrap())
    }

    /// An anonymous session.
    pub async fn anon(broker: &Broker, kind: Kind) -> RawClient {
        Self::connect(broker, kind, "").await.0
    }

    /// Sends raw records as one frame.
    pub async fn send_frame(&mut self, records: &[u8]) {
        match &mut self.conn {
            Conn::Tcp { stream, .. } => {
                let mut b = BytesMut::with_capacity(4 + records.len());
                b.put_u32(records.len() as u32);
                b.put_slice(records);
                let _ = stream.write_all(&b).await;
            }
            Conn::Ws(ws) => {
                let _ = ws
                    .send(WsMessage::Binary(Bytes::copy_from_slice(records)))
                    .await;
            }
        }
    }

    /// Sends several frames of raw records in one write (TCP) or one flush
    /// (WebSocket), so they arrive together.
    pub async fn send_frames(&mut self, frames: &[BytesMut]) {
        match &mut self.conn {
            Conn::Tcp { stream, .. } => {
                let mut b = BytesMut::new();
                for f in frames {
                    b.put_u32(f.len() as u32);
                    b.put_slice(f);
                }
                stream.write_all(&b).await.unwrap();
            }
            Conn::Ws(ws) => {
                for f in frames {
                    ws.feed(WsMessage::Binary(Bytes::copy_from_slice(f)))
                        .await
                        .unwrap();
                }
                ws.flush().await.unwrap();
            }
        }
    }

    /// Sends raw bytes on TCP (no framing added).
    pub async fn send_raw_tcp(&mut self, bytes: &[u8]) {
        match &mut self.conn {
            Conn::Tcp { stream, .. } => {
                let _ = stream.write_all(bytes).await;
            }
            Conn::Ws(_) => panic!("TCP only"),
        }
    }

    /// Sends raw bytes on the WebSocket's TCP stream, under tungstenite
    /// (hand-made WebSocket frames, e.g. a partial one).
    pub async fn send_raw_ws_bytes(&mut self, bytes: &[u8]) {
        match &mut self.conn {
            Conn::Ws(ws) => match ws.get_mut() {
                MaybeTlsStream::Plain(tcp) => {
                    let _ = tcp.write_all(bytes).await;
                }
                _ => panic!("plain WebSocket only"),
            },
            Conn::Tcp { .. } => panic!("WS only"),
        }
    }

    /// The TCP stream of a TCP client (buffered input is discarded).
    pub fn into_tcp(self) -> TcpStream {
        match self.conn {
            Conn::Tcp { stream, .. } => stream,
            Conn::Ws(_) => panic!("TCP only"),
        }
    }

    /// Sends a WebSocket message as is.
    pub async fn send_ws(&mut self, msg: WsMessage) {
        match &mut self.conn {
            Conn::Ws(ws) => ws.send(msg).await.unwrap(),
            Conn::Tcp { .. } => panic!("WS only"),
        }
    }

    /// Sends `m` as one record, labelled with `correlation` if given.
    pub async fn send<M: Message>(&mut self, correlation: Option<u64>, m: &M) {
        let mut b = BytesMut::new();
        if let Some(id) = correlation {
            record::put_label(&mut b, types::CORRELATE, id);
        }
        m.encode_record(&mut b).unwrap();
        self.send_frame(&b).await;
    }

    /// The next frame or close, failing the test after [`WAIT`].
    pub async fn next_event(&mut self) -> Event {
        tokio::time::timeout(WAIT, self.read_event())
            .await
            .expect("broker answered in time")
    }

    /// The next event within `d`, `None` if nothing arrived.
    pub async fn event_within(&mut self, d: Duration) -> Option<Event> {
        tokio::time::timeout(d, self.read_event()).await.ok()
    }

    async fn read_event(&mut self) -> Event {
        match &mut self.conn {
            Conn::Tcp { stream, buf } => loop {
                if let Some(f) = FrameDecoder::new(usize::MAX).decode(buf).unwrap() {
                    return Event::Frame(f);
                }
                buf.reserve(64 * 1024);
                match stream.read_buf(buf).await {
                    Ok(0) | Err(_) => return Event::Closed(None),
                    Ok(_) => {}
                }
            },
            Conn::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(WsMessage::Binary(b))) => return Event::Frame(b),
                    Some(Ok(WsMessage::Close(f))) => {
                        return Event::Closed(f.map(|f| f.reason.to_string()));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return Event::Closed(None),
                }
            },
        }
    }

    /// Reads until the broker closes; returns the WS close reason. Fails
    /// if a frame arrives first.
    pub async fn expect_closed(&mut self) -> Option<String> {
        match self.next_event().await {
            Event::Closed(r) => r,
            Event::Frame(f) => panic!("expected close, got frame {f:?}"),
        }
    }

    /// Asserts the close reason on WebSocket (TCP carries none).
    pub async fn expect_closed_with(&mut self, kind: Kind, reason: &str) {
        let got = self.expect_closed().await;
        if kind == Kind::Ws {
            let got = got.unwrap_or_default();
            assert!(
                got.contains(reason),
                "close reason {got:?} lacks {reason:?}"
            );
        }
    }

    /// The next record (from the backlog first).
    pub async fn next_record(&mut self) -> Labelled {
        if let Some(l) = self.backlog.pop_front() {
            return l;
        }
        match self.next_event().await {
            Event::Frame(f) => {
                let mut recs: VecDeque<Labelled> = LabelledRecords::new(f, Side::Client)
                    .collect::<Result<_, _>>()
                    .unwrap();
                let first = recs.pop_front().unwrap();
                self.backlog.extend(recs);
                first
            }
            Event::Closed(r) => panic!("closed: {r:?}"),
        }
    }

    /// The next record within `d`, if any.
    pub async fn record_within(&mut self, d: Duration) -> Option<Labelled> {
        if let Some(l) = self.backlog.pop_front() {
            return Some(l);
        }
        match self.event_within(d).await? {
            Event::Frame(f) => {
                let mut recs: VecDeque<Labelled> = LabelledRecords::new(f, Side::Client)
                    .collect::<Result<_, _>>()
                    .unwrap();
                let first = recs.pop_front();
                self.backlog.extend(recs);
                first
            }
            Event::Closed(r) => panic!("closed: {r:?}"),
        }
    }

    /// Asserts nothing arrives for [`QUIET`].
    pub async fn expect_quiet(&mut self) {
        if let Some(r) = self.record_within(QUIET).await {
            panic!("unexpected record {r:?}");
        }
    }

    /// A fresh correlation id.
    pub fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Sends `m` correlated and returns the payload of the reply with that
    /// id; other records (notifications) are kept for later.
    pub async fn call<M: Message>(&mut self, m: &M) -> Bytes {
        let id = self.id();
        self.send(Some(id), m).await;
        self.reply_to(id).await
    }

    /// Waits for the record labelled `id`, keeping others.
    pub async fn reply_to(&mut self, id: u64) -> Bytes {
        let mut kept = Vec::new();
        let found = loop {
            let l = match self.backlog.iter().position(|l| l.correlation == Some(id)) {
                Some(i) => self.backlog.remove(i).unwrap(),
                None => match self.next_event().await {
                    Event::Frame(f) => {
                        let recs: Vec<Labelled> = LabelledRecords::new(f, Side::Client)
                            .collect::<Result<_, _>>()
                            .unwrap();
                        self.backlog.extend(recs);
                        continue;
                    }
                    Event::Closed(r) => panic!("closed waiting for reply {id}: {r:?}"),
                },
            };
            if l.correlation == Some(id) {
                break l;
            }
            kept.push(l);
        };
        for k in kept.into_iter().rev() {
            self.backlog.push_front(k);
        }
        found.record.payload
    }

    /// Takes the next record of type `ty` that is not a labelled reply.
    pub async fn next_of_type(&mut self, ty: u16) -> Labelled {
        if let Some(i) = self.backlog.iter().position(|l| l.record.ty == ty) {
            return self.backlog.remove(i).unwrap();
        }
        loop {
            let l = match self.next_event().await {
                Event::Frame(f) => {
                    let recs: Vec<Labelled> = LabelledRecords::new(f, Side::Client)
                        .collect::<Result<_, _>>()
                        .unwrap();
                    recs
                }
                Event::Closed(r) => panic!("closed waiting for type {ty}: {r:?}"),
            };
            for rec in l {
                if rec.record.ty == ty {
                    return rec;
                }
                self.backlog.push_back(rec);
            }
        }
    }

    /// A typed call that must succeed.
    pub async fn ok<M: Message, R: fitz_protocol::ReplyBody>(&mut self, m: &M) -> R {
        match decode_reply::<R>(self.call(m).await).unwrap() {
            Ok(r) => r,
            Err(e) => panic!("{} failed: {e:?}", types::name(M::TYPE)),
        }
    }

    /// A call that must fail; returns the error.
    pub async fn fails<M: Message>(&mut self, m: &M) -> WireError {
        let payload = self.call(m).await;
        WireError::decode(payload).unwrap_or_else(|e| panic!("not an error reply: {e}"))
    }
}

/// Polls `cond` every 5 ms until it holds, failing the test after [`WAIT`]
/// (for state no event announces, such as broker statistics).
pub async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The code of a coded error.
pub fn code(e: &WireError) -> u32 {
    e.code().expect("coded error")
}
