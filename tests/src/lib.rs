//! Helpers shared by the integration tests (`tests/tests/*.rs`) and the
//! conformance runner (`tests/conformance/`).
//!
//! Every test runs against the brokers of [`Brokers::start`]: two embedded
//! brokers (anonymous, and HS256 JWT) by default, or the external pair named
//! by the `FITZ_BROKER_*` variables (see `docs/TESTING.md`). Against an
//! external broker every test shares one broker with the others, so routes
//! come from [`realm`] (unique per run) and tests that read family-wide state
//! hold [`BrokersExt::exclusive`]. Tests that need the broker's internals (a
//! manual clock, engine statistics, broker options) get them from
//! [`Timed`] / [`embedded_only`], which report a visible skip when the target
//! cannot provide them.
#![forbid(unsafe_code)]

use std::future::Future;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fitz::{Client, ClientBuilder, ErrorKind, Event, ReconnectPolicy, StaticToken};
use fitz_broker::{AuthConfig, Broker, Clock};
use futures_util::{Stream, StreamExt};

pub mod chaos;

pub use fitz_testkit::jwt::{self, Jwt};
pub use fitz_testkit::{Brokers, Proxy, ProxyHandle};

/// How long any single expected thing (a reply, an event, a notification)
/// may take before a test fails. Generous: a failure is a hang, not a slow run.
pub const WAIT: Duration = Duration::from_secs(10);

/// One minute, the Schedule domain's resolution.
pub const MINUTE: Duration = Duration::from_secs(60);

// ----- transports -----

/// The two plain transports every domain is tested over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// `tcp://`
    Tcp,
    /// `ws://…/ws`
    Ws,
}

impl Transport {
    /// Both, TCP first.
    pub const BOTH: [Transport; 2] = [Transport::Tcp, Transport::Ws];

    /// `"tcp"` or `"ws"`.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Ws => "ws",
        }
    }
}

/// Endpoint helpers on the fixture.
pub trait BrokersExt {
    /// The anonymous broker's URL over `t`.
    fn anon_url(&self, t: Transport) -> &str;
    /// The authenticated broker's URL over `t`.
    fn auth_url(&self, t: Transport) -> &str;
    /// A disconnect proxy in front of the anonymous broker's `t` port, and
    /// the URL to reach the broker through it.
    fn anon_proxy(&self, t: Transport) -> impl Future<Output = (ProxyHandle, String)>;
    /// The same in front of the authenticated broker.
    fn auth_proxy(&self, t: Transport) -> impl Future<Output = (ProxyHandle, String)>;
    /// The full-permission token of the authenticated broker (signed with
    /// its secret, which an external broker may set differently).
    fn token(&self) -> String;
    /// A valid token carrying only `permissions`.
    fn scoped_token(&self, permissions: &[&str]) -> String;
    /// Against an external broker, serialises the tests that read
    /// family-wide state (`stream://**`, schedule totals) within this test
    /// binary; a no-op (`None`) for embedded brokers, which every test owns.
    fn exclusive(&self) -> impl Future<Output = Option<tokio::sync::MutexGuard<'static, ()>>>;
}

static EXCLUSIVE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl BrokersExt for Brokers {
    fn anon_url(&self, t: Transport) -> &str {
        match t {
            Transport::Tcp => &self.anon_tcp,
            Transport::Ws => &self.anon_ws,
        }
    }

    fn auth_url(&self, t: Transport) -> &str {
        match t {
            Transport::Tcp => &self.auth_tcp,
            Transport::Ws => &self.auth_ws,
        }
    }

    async fn anon_proxy(&self, t: Transport) -> (ProxyHandle, String) {
        let upstream = match t {
            Transport::Tcp => self.anon_tcp_addr(),
            Transport::Ws => self.anon_ws_addr(),
        };
        proxy_to(upstream.expect("broker address"), t).await
    }

    async fn auth_proxy(&self, t: Transport) -> (ProxyHandle, String) {
        let upstream = match t {
            Transport::Tcp => self.auth_tcp_addr(),
            Transport::Ws => self.auth_ws_addr(),
        };
        proxy_to(upstream.expect("broker address"), t).await
    }

    fn token(&self) -> String {
        Jwt::dev().secret(&self.secret).mint()
    }

    fn scoped_token(&self, permissions: &[&str]) -> String {
        Jwt::dev()
            .secret(&self.secret)
            .permissions(permissions)
            .mint()
    }

    async fn exclusive(&self) -> Option<tokio::sync::MutexGuard<'static, ()>> {
        exclusive().await
    }
}

/// See [`BrokersExt::exclusive`]: a guard when `FITZ_BROKER_*` is set.
pub async fn exclusive() -> Option<tokio::sync::MutexGuard<'static, ()>> {
    if Brokers::external_configured() {
        Some(EXCLUSIVE.lock().await)
    } else {
        None
    }
}

/// Makes `proxy` refuse new connections and waits until it does (the proxy
/// stops listening asynchronously): a reconnect attempt from now on fails.
pub async fn refuse_new(proxy: &ProxyHandle) {
    proxy.refuse_new(true);
    let addr = proxy.addr();
    until("the proxy refuses connections", || async move {
        // A connection that still got through is dropped at once.
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
}

/// A proxy to `upstream` and the URL of the broker through it.
pub async fn proxy_to(upstream: std::net::SocketAddr, t: Transport) -> (ProxyHandle, String) {
    let proxy = Proxy::start(upstream).await.expect("proxy starts");
    let url = match t {
        Transport::Tcp => proxy.tcp_url(),
        Transport::Ws => proxy.ws_url(),
    };
    (proxy, url)
}

// ----- clients -----

/// Reconnects within milliseconds, so tests that cut connections stay fast.
pub fn fast_reconnect() -> ReconnectPolicy {
    ReconnectPolicy {
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        ..ReconnectPolicy::default()
    }
}

/// An anonymous client builder that reconnects quickly.
pub fn anon_builder(url: &str) -> ClientBuilder {
    Client::builder(url, StaticToken::anonymous()).reconnect(fast_reconnect())
}

/// A client builder presenting `token`, reconnecting quickly.
pub fn token_builder(url: &str, token: String) -> ClientBuilder {
    Client::builder(url, StaticToken::new(token)).reconnect(fast_reconnect())
}

/// An anonymous client, connected.
pub async fn connected(url: &str) -> Client {
    let c = anon_builder(url).build().expect("valid options");
    c.connect().await.expect("connects");
    c
}

/// A client presenting `token`, connected.
pub async fn connected_with(url: &str, token: String) -> Client {
    let c = token_builder(url, token).build().expect("valid options");
    c.connect().await.expect("connects");
    c
}

// ----- waiting -----

/// `fut`, or a panic naming `what` after [`WAIT`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {WAIT:?}"))
}

/// The next item of a subscription-like stream, within [`WAIT`]; panics on
/// an error item or the end of the stream.
pub async fn next_item<T, S>(s: &mut S) -> T
where
    S: Stream<Item = fitz::Result<T>> + Unpin,
{
    within("the next item", s.next())
        .await
        .expect("the stream ended")
        .expect("a stream error")
}

/// The first event matching `pred`, within [`WAIT`].
pub async fn wait_event(events: &mut fitz::Events, pred: impl Fn(&Event) -> bool) -> Event {
    within("an event", async {
        loop {
            match events.recv().await {
                Some(ev) if pred(&ev) => return ev,
                Some(_) => {}
                None => panic!("events ended"),
            }
        }
    })
    .await
}

/// A session replaced a lost one.
pub fn reconnected(e: &Event) -> bool {
    matches!(
        e,
        Event::Connected {
            reconnected: true,
            ..
        }
    )
}

/// Waits for the restore after a reconnect and returns how many
/// registrations were restored.
pub async fn restored(events: &mut fitz::Events) -> usize {
    match wait_event(events, |e| matches!(e, Event::Restored { .. })).await {
        Event::Restored { count } => count,
        _ => unreachable!(),
    }
}

/// Polls `cond` (every 2 ms, within [`WAIT`]) where no event can be awaited,
/// e.g. the client's books or the broker's statistics.
pub async fn until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(what, async {
        while !cond().await {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
}

/// Until the client has `n` requests outstanding: with a correlating broker
/// a request is written as soon as the connection task admits it, so this
/// is "written (or about to be)". Used before cutting a connection under an
/// in-flight request.
pub async fn until_pending(client: &Client, n: usize) {
    until("requests in flight", || async {
        client.debug_snapshot().await.expect("open client").pending >= n
    })
    .await;
}

/// The broker error code of `e`, asserting it is a broker error.
pub fn broker_code(e: &fitz::Error) -> Option<u32> {
    assert_eq!(e.kind(), ErrorKind::Broker, "{e}");
    e.code()
}

// ----- names -----

/// A route segment unique to this process and call, e.g. `kv-3f2a9c1-7`:
/// tests never see each other's state on a shared (external) broker, nor a
/// previous run's.
pub fn realm(tag: &str) -> String {
    static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let run = RUN.get_or_init(|| {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        format!(
            "{:x}{:x}",
            millis & 0xff_ffff_ffff,
            std::process::id() & 0xfff
        )
    });
    format!("{tag}-{run}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

// ----- target: embedded or external -----

/// Prints `SKIPPED <test>: <reason>` straight to the process's stderr, so the
/// line shows even though the test harness captures test output.
pub fn report_skip(reason: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

/// `FITZ_REALTIME=1`: against an external broker, run the tests that need
/// broker time to pass by really waiting (seconds for queues and leases, a
/// minute boundary per schedule fire) instead of skipping them.
pub fn realtime() -> bool {
    std::env::var("FITZ_REALTIME").is_ok_and(|v| v == "1" || v == "true")
}

/// Broker time, moved by the test.
#[derive(Clone)]
pub enum TestClock {
    /// An embedded broker's manual clock: `advance` is instant.
    Manual(Clock),
    /// An external broker's real clock: `advance` sleeps.
    Real,
}

impl TestClock {
    /// Lets `by` pass on the broker.
    pub async fn advance(&self, by: Duration) {
        match self {
            TestClock::Manual(c) => c.advance(by),
            // A little more, so the broker's own timer has surely run.
            TestClock::Real => tokio::time::sleep(by + Duration::from_millis(250)).await,
        }
    }

    /// Crosses exactly one minute boundary (a manual clock stands on one).
    pub async fn next_minute(&self) {
        match self {
            TestClock::Manual(c) => c.advance(MINUTE),
            TestClock::Real => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                let into =
                    Duration::from_millis(u64::try_from(now.as_millis() % 60_000).unwrap_or(0));
                tokio::time::sleep(MINUTE - into + Duration::from_millis(1500)).await;
            }
        }
    }
}

/// An anonymous broker whose time the test controls: embedded on a manual
/// clock standing on a minute boundary, or (with [`realtime`]) the external
/// anonymous broker on real time.
pub struct Timed {
    /// `tcp://…`
    pub tcp: String,
    /// `ws://…/ws`
    pub ws: String,
    /// Moves broker time.
    pub clock: TestClock,
    broker: Option<Broker>,
}

impl Timed {
    /// The broker for `why`, or `None` after reporting a skip (external
    /// broker without `FITZ_REALTIME=1`).
    pub async fn start(why: &str) -> Option<Timed> {
        if Brokers::external_configured() {
            if !realtime() {
                report_skip(&format!(
                    "{why}; the external broker's clock cannot be moved (set FITZ_REALTIME=1 to wait in real time)"
                ));
                return None;
            }
            let brokers = Brokers::start().await.expect("external broker");
            return Some(Timed {
                tcp: brokers.anon_tcp.clone(),
                ws: brokers.anon_ws.clone(),
                clock: TestClock::Real,
                broker: None,
            });
        }
        let clock = Clock::manual(minute_boundary());
        let broker = Broker::builder()
            .bind_addr(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .tcp_port(0)
            .http_port(0)
            .auth(AuthConfig::anonymous())
            .clock(clock.clone())
            .start()
            .await
            .expect("embedded broker starts");
        Some(Timed {
            tcp: broker.tcp_url(),
            ws: broker.ws_url(),
            clock: TestClock::Manual(clock),
            broker: Some(broker),
        })
    }

    /// The URL over `t`.
    pub fn url(&self, t: Transport) -> &str {
        match t {
            Transport::Tcp => &self.tcp,
            Transport::Ws => &self.ws,
        }
    }

    /// The socket address behind [`Timed::url`] (for a [`Proxy`]).
    pub fn addr(&self, t: Transport) -> std::net::SocketAddr {
        addr_of(self.url(t))
    }

    /// The embedded broker, for its statistics (`None` when external).
    pub fn broker(&self) -> Option<&Broker> {
        self.broker.as_ref()
    }

    /// Stops the embedded broker.
    pub async fn shutdown(&self) {
        if let Some(b) = &self.broker {
            b.shutdown().await;
        }
    }
}

/// The `host:port` of a `tcp://` or `ws://…/ws` URL, resolved.
pub fn addr_of(url: &str) -> std::net::SocketAddr {
    use std::net::ToSocketAddrs;
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let hostport = rest.split('/').next().unwrap_or(rest);
    hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("no address in {url}"))
}

/// The last whole minute before now.
pub fn minute_boundary() -> SystemTime {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    UNIX_EPOCH + Duration::from_secs(now - now % 60)
}

/// `None`, after reporting a skip, when the suite targets an external
/// broker: for tests that configure the broker itself (`why` says how).
pub fn embedded_only(why: &str) -> Option<()> {
    if Brokers::external_configured() {
        report_skip(&format!("{why}: needs an embedded broker"));
        None
    } else {
        Some(())
    }
}

/// An embedded anonymous broker with options set by `configure` (e.g. a short
/// KV idle TTL), or `None` after a visible skip against an external broker.
pub async fn embedded_with(
    why: &str,
    configure: impl FnOnce(fitz_broker::BrokerBuilder) -> fitz_broker::BrokerBuilder,
) -> Option<Broker> {
    embedded_only(why)?;
    let builder = Broker::builder()
        .bind_addr(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .tcp_port(0)
        .http_port(0)
        .auth(AuthConfig::anonymous());
    Some(
        configure(builder)
            .start()
            .await
            .expect("embedded broker starts"),
    )
}
