//! What the domains' unit tests share: a client connected to a scripted peer
//! (`fitz_testkit::peer`) over the in-memory transport, and the few moves
//! every such test makes.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use fitz_protocol::{ReplyBody, WireError};
use fitz_testkit::peer::{CAP_CORRELATION, Peer, Request};

use crate::transport::{MemoryListener, memory};
use crate::{Client, ClientBuilder, ReconnectPolicy, State, StaticToken};

/// How long a test waits for a request the client must send (virtual time
/// in the paused-clock tests, so generous costs nothing).
const EXPECT_WITHIN: Duration = Duration::from_secs(120);

/// A connected client, the peer it talks to, and the listener its
/// reconnects arrive on.
pub(crate) struct Scripted {
    pub client: Client,
    pub peer: Peer,
    pub listener: MemoryListener,
}

impl Scripted {
    /// A client on `url` (a label: the memory transport ignores it) that
    /// reconnects after 10 ms, connected with CAP_CORRELATION.
    pub async fn start(url: &str) -> Self {
        Self::start_with(url, |b| b).await
    }

    /// [`Scripted::start`] with more builder options.
    pub async fn start_with(
        url: &str,
        configure: impl FnOnce(ClientBuilder) -> ClientBuilder,
    ) -> Self {
        let (connector, mut listener) = memory(1 << 20);
        let builder = Client::builder(url, StaticToken::anonymous())
            .connector(connector)
            .reconnect(ReconnectPolicy {
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(10),
                ..ReconnectPolicy::default()
            });
        let client = configure(builder).build().unwrap();
        let c = client.clone();
        let connecting = tokio::spawn(async move { c.connect().await });
        let mut peer = Peer::new(listener.accept().await.unwrap());
        peer.handshake(CAP_CORRELATION).await.unwrap();
        connecting.await.unwrap().unwrap();
        Self {
            client,
            peer,
            listener,
        }
    }

    /// The next request, which must be of type `ty`.
    pub async fn expect(&mut self, ty: u16) -> Request {
        let r = tokio::time::timeout(EXPECT_WITHIN, self.peer.read_request())
            .await
            .expect("no request")
            .unwrap();
        assert_eq!(r.ty, ty, "{r:?}");
        r
    }

    /// True when the client sends nothing within `d` (paused time).
    pub async fn silent_for(&mut self, d: Duration) -> bool {
        tokio::time::timeout(d, self.peer.read_request())
            .await
            .is_err()
    }

    /// Answers `req` with success and `body`.
    pub async fn ok<R: ReplyBody>(&mut self, req: &Request, body: &R) {
        self.peer.reply(req, &ok(body)).await.unwrap();
    }

    /// Answers `req` with `err`.
    pub async fn fail(&mut self, req: &Request, err: WireError) {
        let mut b = BytesMut::new();
        err.encode(&mut b);
        self.peer.reply(req, &b).await.unwrap();
    }

    /// Drops the connection and completes the client's reconnect.
    pub async fn reconnect(&mut self) {
        let old = std::mem::replace(&mut self.peer, Peer::new(tokio::io::duplex(1).0));
        old.close().await;
        self.peer = Peer::new(self.listener.accept().await.unwrap());
        self.peer.handshake(CAP_CORRELATION).await.unwrap();
    }

    /// Waits (at most 5 s) until the client is `Authenticated`.
    pub async fn wait_authenticated(&self) {
        let mut w = self.client.watch_state();
        tokio::time::timeout(
            Duration::from_secs(5),
            w.wait_for(|s| *s == State::Authenticated),
        )
        .await
        .unwrap()
        .unwrap();
    }
}

/// A success reply payload: status 0, then `body`.
pub(crate) fn ok(body: &impl ReplyBody) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_u8(0);
    body.encode_body(&mut b);
    b.to_vec()
}
