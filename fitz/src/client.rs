//! [`Client`] and its builder.

use std::sync::Arc;
use std::time::Duration;

use fitz_protocol::Capabilities;
use fitz_protocol::control::normalize_service_name;
use fitz_protocol::frame::DEFAULT_MAX_FRAME;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::connection::{Config, Connection, DebugSnapshot};
use crate::endpoint::{Endpoint, Scheme};
use crate::error::{Error, ErrorKind, Result};
use crate::events::{Events, State};
use crate::notice::Notice;
use crate::options::{Overflow, ReconnectPolicy, SubscriptionOptions, TlsConfig};
use crate::retry::RetryPolicy;
use crate::token::{StaticToken, TokenProvider};
use crate::transport::{Connector, tls};

/// The backoff ceilings of [`Client::connect_when_ready`]: 250 ms doubling
/// to 2 s, with full jitter.
const CONNECT_BACKOFF: ReconnectPolicy = ReconnectPolicy {
    enabled: true,
    base_delay: Duration::from_millis(250),
    max_delay: Duration::from_secs(2),
    max_attempts: 0,
};

/// A connection to a Fitz broker, shared by every domain client.
///
/// Cheap to clone: clones share one connection task. Build one with
/// [`Client::builder`] (or [`Client::anonymous`]), call [`Client::connect`],
/// then use the domain views such as [`Client::notice`].
///
/// ```no_run
/// # async fn demo() -> fitz::Result<()> {
/// use futures_util::StreamExt;
///
/// let client = fitz::Client::anonymous("tcp://127.0.0.1:4191")?;
/// client.connect().await?;
/// let mut sub = client.notice().subscribe("notice://prod/app/*").await?;
/// client.notice().publish("notice://prod/app/deploys", "v42").await?;
/// if let Some(msg) = sub.next().await {
///     let msg = msg?;
///     println!("{} → {:?}", msg.route(), msg.payload());
/// }
/// client.close().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    conn: Connection,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.conn.shared().config.endpoint.to_string())
            .field("state", &self.state())
            .finish()
    }
}

impl Client {
    /// Starts configuring a client for `url` (`tcp://`, `tls://`, `ws://`,
    /// `wss://`) whose CONNECT tokens come from `tokens`.
    pub fn builder(url: impl Into<String>, tokens: impl TokenProvider) -> ClientBuilder {
        ClientBuilder::new(url.into(), Arc::new(tokens))
    }

    /// A client with default options and the empty (anonymous) token.
    pub fn anonymous(url: impl Into<String>) -> Result<Self> {
        Self::builder(url, StaticToken::anonymous()).build()
    }

    /// Connects once: opens the transport, sends CONNECT with a fresh token
    /// and waits for SERVER_HELLO, all within the connect timeout.
    ///
    /// * `Ok(())` once the session is ready (immediately if it already is;
    ///   after the restore if a reconnect is under way).
    /// * [`ErrorKind::Auth`]: the broker refused the token — it said so, or
    ///   it closed the connection right after CONNECT on
    ///   [`ClientBuilder::auth_attempts`] attempts in a row, each with a fresh
    ///   token. The client is now closed for good (its state already reads
    ///   [`crate::State::Closed`]); not retryable.
    /// * [`ErrorKind::Connection`] / [`ErrorKind::Timeout`] /
    ///   [`ErrorKind::Protocol`]: this attempt failed, the client stays
    ///   `Disconnected`; call again or use [`Client::connect_when_ready`].
    /// * [`ErrorKind::Closed`]: the client was closed.
    ///
    /// Once connected, a lost session is re-established automatically per
    /// the [`ReconnectPolicy`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future stops waiting, not the attempt under
    /// way; the client may still become connected.
    pub async fn connect(&self) -> Result<()> {
        self.conn.connect().await
    }

    /// Connects, retrying failed attempts until `timeout` has passed. Stops
    /// at once on an authentication rejection or when the client is closed;
    /// otherwise the last attempt's error (or [`ErrorKind::Timeout`]) is
    /// returned.
    ///
    /// The pause after failed attempt `n` is drawn uniformly from
    /// `[0, min(2 s, 250 ms × 2^(n−1))]` ("full jitter", the backoff of
    /// [`ReconnectPolicy`]), so a fleet of clients restarting together does
    /// not hit the broker in lockstep.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: as [`Client::connect`]; no further attempt is started after
    /// the future is dropped.
    pub async fn connect_when_ready(&self, timeout: Duration) -> Result<()> {
        // A `Send` generator seeded from the thread's: the future may move
        // between threads.
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_rng(&mut rand::rng());
        self.connect_when_ready_with(timeout, &mut rng).await
    }

    /// [`Client::connect_when_ready`] drawing its pauses from `rng` (a
    /// seeded one in tests).
    async fn connect_when_ready_with(
        &self,
        timeout: Duration,
        rng: &mut (impl rand::Rng + Send),
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut attempt = 1;
        loop {
            let err = match tokio::time::timeout_at(deadline, self.connect()).await {
                Err(_) => {
                    return Err(Error::timed_out(format!(
                        "not connected within {timeout:?}"
                    )));
                }
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => e,
            };
            let delay = CONNECT_BACKOFF.delay_with(attempt, rng);
            if matches!(
                err.kind(),
                ErrorKind::Auth | ErrorKind::Closed | ErrorKind::InvalidArgument
            ) || Instant::now() + delay >= deadline
            {
                return Err(err);
            }
            tracing::debug!(error = %err, ?delay, "connect_when_ready: retrying");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// Closes the client for good. Idempotent and prompt, even during a
    /// reconnect backoff: outstanding requests fail with
    /// [`ErrorKind::Closed`], subscriptions end with that error, the
    /// transport is closed (after a short best-effort flush), and every
    /// stateful handle becomes stale.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: closing starts on the first poll and completes without the
    /// future; dropping it only stops waiting for the connection task to finish.
    pub async fn close(&self) {
        self.conn.close().await;
    }

    /// Returns once everything this client sent before the call, including
    /// fire-and-forget Notice publishes and RPC frames, has been processed
    /// by the broker.
    ///
    /// One cheap request that changes nothing (a *barrier*) goes through
    /// each domain that carried a record since the previous flush, and the
    /// flush waits for all of their answers. The spec lets a broker process
    /// each domain's frames in order per connection (`fitz-broker` processes
    /// a session's frames strictly in order), so a barrier's answer follows
    /// everything sent before it in its domain. "Processed" means what the
    /// domain does on receipt: a publish was fanned out to the subscribers'
    /// connections (not that they read it), a request was handled or parked
    /// (a long-poll RESERVE, a queued lease ACQUIRE). With nothing sent since
    /// the last flush it returns at once, sending nothing.
    ///
    /// Errors: the request timeout passed, or the connection was lost before
    /// every barrier was answered (retryable [`ErrorKind::Connection`]: what
    /// was sent on the lost session may or may not have been processed);
    /// [`ErrorKind::Closed`]. The domains not confirmed stay marked, so the
    /// next flush covers them again.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future leaves the barriers to be answered
    /// and swallowed; the domains they covered count as flushed only once
    /// every barrier was answered, so a later flush may send fewer barriers
    /// than needed only if this one completed.
    pub async fn flush(&self) -> Result<()> {
        let deadline = Instant::now() + self.conn.shared().config.request_timeout;
        crate::drain::flush(&self.conn, deadline).await
    }

    /// Shuts the client down gracefully within `timeout`, then closes it:
    ///
    /// 1. No new work is taken: starting a subscription or a worker fails
    ///    with [`ErrorKind::Closed`] ("the client is draining"). Plain
    ///    requests still work, so running handlers can finish their job.
    /// 2. Every RPC and queue worker stops taking deliveries and waits for
    ///    its running handlers; their results are still sent (RPC responses,
    ///    queue COMPLETEs), and an RPC worker unregisters only after that.
    /// 3. Every other subscription is unsubscribed; its stream ends (`None`).
    /// 4. [`Client::flush`]: everything sent was processed by the broker.
    /// 5. [`Client::close`].
    ///
    /// The report says what could not finish in time; the client is closed
    /// in every case. Calling it again, or concurrently, is harmless.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped midway, the client stays draining (no new
    /// subscriptions or workers) but is not closed; call `drain` or
    /// [`Client::close`] again.
    pub async fn drain(&self, timeout: Duration) -> crate::DrainReport {
        crate::drain::drain(&self.conn, timeout).await
    }

    /// The current state (never blocks).
    pub fn state(&self) -> State {
        *self.conn.state().borrow()
    }

    /// A receiver that observes state changes. A `watch` keeps only the
    /// latest value: a slow observer may skip intermediate states.
    pub fn watch_state(&self) -> watch::Receiver<State> {
        self.conn.state()
    }

    /// What the broker advertised in the current session's SERVER_HELLO;
    /// `None` while no session is up.
    pub fn server_capabilities(&self) -> Option<Capabilities> {
        self.conn.capabilities()
    }

    /// Lifecycle events (connected, disconnected, reconnect scheduled,
    /// restored, restore failed, slow consumer, auth rejected, closed). Each
    /// call returns an independent receiver that sees events from now on.
    pub fn events(&self) -> Events {
        Events::new(self.conn.events(), self.state() == State::Closed)
    }

    /// The Notice domain: fire-and-forget fan-out.
    pub fn notice(&self) -> Notice {
        Notice::new(self.conn.clone())
    }

    /// The KV domain: transactions and change watches.
    pub fn kv(&self) -> crate::kv::Kv {
        crate::kv::Kv::new(self.conn.clone())
    }

    /// The Queue domain: enqueue, reserve, complete, availability watches, workers.
    pub fn queue(&self) -> crate::queue::Queue {
        crate::queue::Queue::new(self.conn.clone())
    }

    /// The RPC domain: calls and workers.
    pub fn rpc(&self) -> crate::rpc::Rpc {
        crate::rpc::Rpc::new(self.conn.clone())
    }

    /// The Lease domain: exclusive ownership with fencing tokens.
    pub fn lease(&self) -> crate::lease::Leases {
        crate::lease::Leases::new(self.conn.clone())
    }

    /// The Stream domain: append sessions, reads and commit watches.
    pub fn stream(&self) -> crate::stream::Streams {
        crate::stream::Streams::new(self.conn.clone())
    }

    /// The Schedule domain: cron schedules and their fires.
    pub fn schedule(&self) -> crate::schedule::Schedule {
        crate::schedule::Schedule::new(self.conn.clone())
    }

    /// Counters of the connection task's internal books, for tests and
    /// debugging (leak checks). Not a stable API.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: read-only.
    #[doc(hidden)]
    pub async fn debug_snapshot(&self) -> Result<DebugSnapshot> {
        self.conn.debug_snapshot().await
    }

    /// The connection under the domain views (the actor's tests, the
    /// benchmark harnesses and the sync layer's feeds, which compare session
    /// generations, reach it from a client).
    #[cfg(any(test, feature = "unstable-bench", feature = "sync"))]
    pub(crate) fn connection(&self) -> &Connection {
        &self.conn
    }
}

/// Options for a [`Client`]. Every option has a sensible default.
#[must_use]
pub struct ClientBuilder {
    url: String,
    tokens: Arc<dyn TokenProvider>,
    connector: Option<Arc<dyn Connector>>,
    tls: TlsConfig,
    connect_timeout: Duration,
    auth_attempts: u32,
    request_timeout: Duration,
    reconnect: ReconnectPolicy,
    max_frame: usize,
    max_in_flight: usize,
    subscription: SubscriptionOptions,
    service_name: Option<String>,
    ping_interval: Duration,
    dead_peer_timeout: Duration,
    retry: RetryPolicy,
    enqueue_retry: RetryPolicy,
    slow_request_threshold: Duration,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("url", &self.url)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("reconnect", &self.reconnect)
            .field("max_frame", &self.max_frame)
            .field("max_in_flight", &self.max_in_flight)
            .field("subscription", &self.subscription)
            .field("retry", &self.retry)
            .field("enqueue_retry", &self.enqueue_retry)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    fn new(url: String, tokens: Arc<dyn TokenProvider>) -> Self {
        Self {
            url,
            tokens,
            connector: None,
            tls: TlsConfig::default(),
            connect_timeout: Duration::from_secs(10),
            auth_attempts: 3,
            request_timeout: Duration::from_secs(30),
            reconnect: ReconnectPolicy::default(),
            max_frame: DEFAULT_MAX_FRAME,
            max_in_flight: 1024,
            subscription: SubscriptionOptions::default(),
            service_name: None,
            ping_interval: Duration::from_secs(10),
            dead_peer_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            enqueue_retry: RetryPolicy::none(),
            slow_request_threshold: Duration::from_secs(1),
        }
    }

    /// Bounds one connection attempt end to end: token, transport (TCP, TLS,
    /// WebSocket upgrade), CONNECT and the wait for SERVER_HELLO. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How many handshakes in a row may end the way a token refusal does
    /// before the client gives up with [`ErrorKind::Auth`] and closes for
    /// good (default 3, at least 1). Each attempt asks the token provider for
    /// a fresh token.
    ///
    /// Over WebSocket a refusing broker says so in its Close frame
    /// (`connect failed: …`); the client then never sends that same token
    /// again, so a provider that keeps returning it ends the client at the
    /// next attempt. Over TCP a broker refuses a token by closing without a
    /// word, which is also how a connection cut at that instant looks: a
    /// close counts only when CONNECT was completely written, nothing came
    /// back, the close was orderly (a FIN, not a reset or a refusal) and no
    /// reset followed within about a round trip (a peer that closes without
    /// reading CONNECT — a proxy or load balancer whose broker is down —
    /// resets it). Every other failure is a network failure and is retried
    /// as the [`ReconnectPolicy`] says; it also restarts the count.
    pub fn auth_attempts(mut self, attempts: u32) -> Self {
        self.auth_attempts = attempts;
        self
    }

    /// Default timeout of each request, from the call to the reply (waiting
    /// for an in-flight slot included). Default 30 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Reconnection after an established session drops.
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// Largest transport frame sent or accepted, in bytes (default 1 MiB, the
    /// broker's default; not negotiated). An inbound frame announcing more
    /// drops the connection before anything is allocated for it.
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// Requests and sends admitted at once (default 1024). When all slots
    /// are taken a caller waits for one, up to its request timeout, and then
    /// fails with a retryable [`ErrorKind::Backpressure`] error (nothing was
    /// sent).
    pub fn max_in_flight(mut self, requests: usize) -> Self {
        self.max_in_flight = requests;
        self
    }

    /// Notifications buffered per subscription (default 256).
    pub fn subscription_buffer(mut self, notifications: usize) -> Self {
        self.subscription.buffer = notifications;
        self
    }

    /// What a subscription does when its buffer is full (default
    /// [`Overflow::Error`]).
    pub fn overflow(mut self, policy: Overflow) -> Self {
        self.subscription.overflow = policy;
        self
    }

    /// A service name reported with SESSION_METADATA when the broker
    /// advertises support (display metadata, not identity). Trimmed; must be
    /// 1–128 bytes without control characters.
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// Trust anchors for `tls://` and `wss://` (default: the system roots).
    pub fn tls(mut self, config: TlsConfig) -> Self {
        self.tls = config;
        self
    }

    /// Opens the raw byte stream with `connector` instead of a TCP
    /// connection (custom transports, in-memory tests); see
    /// [`crate::transport::memory`].
    pub fn connector(mut self, connector: impl Connector) -> Self {
        self.connector = Some(Arc::new(connector));
        self
    }

    /// WebSocket only: after this much inbound silence a ping is sent (and on
    /// TCP the OS keepalive probes at this interval). Default 10 s.
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval;
        self
    }

    /// WebSocket only: inbound silence after which the broker is presumed
    /// dead and the connection dropped (then reconnected). Default 30 s.
    pub fn dead_peer_timeout(mut self, timeout: Duration) -> Self {
        self.dead_peer_timeout = timeout;
        self
    }

    /// How replay-safe reads (KV GET/SCAN, Lease QUERY/LIST, Stream
    /// READ/LAST/GET_METADATA, Schedule LIST) are retried after a failure
    /// that certainly was not applied. Default [`RetryPolicy::default`]
    /// (3 attempts, 100 ms doubling to 1 s, no jitter);
    /// [`RetryPolicy::none`] turns retries off. A view can override it
    /// (e.g. `client.kv().with_retry(policy)`).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// How a Queue ENQUEUE is retried. Off by default
    /// ([`RetryPolicy::none`]). Even when enabled, an ENQUEUE is sent again
    /// only after a confirmed negative answer — a coded broker error that
    /// means it was not stored (4005 queue full) — never after a timeout or
    /// a connection lost once it was written (it may have been stored).
    /// `client.queue().with_retry(policy)` overrides it for one view.
    pub fn enqueue_retry(mut self, policy: RetryPolicy) -> Self {
        self.enqueue_retry = policy;
        self
    }

    /// A request that takes this long or longer (from the call to its
    /// answer) is logged with `tracing::warn!` (target `fitz::slow`: domain,
    /// operation, route, duration). Default 1 s; `Duration::MAX` turns the
    /// log off. See [`crate::telemetry`].
    pub fn slow_request_threshold(mut self, threshold: Duration) -> Self {
        self.slow_request_threshold = threshold;
        self
    }

    /// Validates the options and starts the connection task (in the current
    /// tokio runtime; it does not connect yet).
    pub fn build(self) -> Result<Client> {
        let endpoint = Endpoint::parse(&self.url)?;
        if endpoint.scheme == Scheme::Memory && self.connector.is_none() {
            return Err(Error::invalid("memory:// URLs need a connector"));
        }
        if self.auth_attempts == 0 {
            return Err(Error::invalid("auth_attempts must be at least 1"));
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return Err(Error::invalid("timeouts must be positive"));
        }
        // Room for the largest record plus a correlation label.
        if self.max_frame < 4096 || self.max_frame > u32::MAX as usize {
            return Err(Error::invalid("max_frame must be between 4 KiB and 4 GiB"));
        }
        if self.max_in_flight == 0 || self.max_in_flight > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(Error::invalid("max_in_flight must be at least 1"));
        }
        if self.subscription.buffer == 0 {
            return Err(Error::invalid("subscription_buffer must be at least 1"));
        }
        if self.ping_interval.is_zero() || self.dead_peer_timeout <= self.ping_interval {
            return Err(Error::invalid(
                "dead_peer_timeout must be longer than a positive ping_interval",
            ));
        }
        let service_name = match &self.service_name {
            None => None,
            Some(name) => Some(
                normalize_service_name(name)
                    .ok_or_else(|| {
                        Error::invalid(
                            "service name must be 1–128 bytes without control characters",
                        )
                    })?
                    .to_owned(),
            ),
        };
        let tls = if endpoint.is_tls() {
            Some(tls::client_config(&self.tls)?)
        } else {
            None
        };
        let conn = Connection::spawn(Config {
            endpoint,
            tokens: self.tokens,
            connector: self.connector,
            tls,
            connect_timeout: self.connect_timeout,
            auth_attempts: self.auth_attempts,
            request_timeout: self.request_timeout,
            reconnect: self.reconnect,
            max_frame: self.max_frame,
            max_in_flight: self.max_in_flight,
            subscription: self.subscription,
            service_name,
            ping_interval: self.ping_interval,
            dead_peer_timeout: self.dead_peer_timeout,
            retry: self.retry,
            enqueue_retry: self.enqueue_retry,
            slow_request_threshold: self.slow_request_threshold,
        })?;
        Ok(Client { conn })
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Mutex;

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::transport::{ConnectFuture, Connector};

    /// Refuses every connection and records when each attempt was made.
    struct Refusing(Arc<Mutex<Vec<Instant>>>);

    impl Connector for Refusing {
        fn connect(&self) -> ConnectFuture<'_> {
            if let Ok(mut times) = self.0.lock() {
                times.push(Instant::now());
            }
            Box::pin(async { Err(io::Error::from(io::ErrorKind::ConnectionRefused)) })
        }
    }

    /// Attempt times of one `connect_when_ready` against a refusing broker,
    /// relative to the call.
    async fn attempts(seed: u64) -> Vec<Duration> {
        let times = Arc::new(Mutex::new(Vec::new()));
        let client = Client::builder("memory://fleet", StaticToken::anonymous())
            .connector(Refusing(times.clone()))
            .reconnect(ReconnectPolicy::disabled())
            .build()
            .unwrap();
        let start = Instant::now();
        let r = client
            .connect_when_ready_with(Duration::from_secs(5), &mut StdRng::seed_from_u64(seed))
            .await;
        assert!(r.is_err());
        client.close().await;
        let times = times.lock().unwrap();
        times.iter().map(|t| *t - start).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn connect_when_ready_spreads_a_fleet_with_full_jitter() {
        let mut seconds = Vec::new();
        for seed in 0..32 {
            let a = attempts(seed).await;
            assert!(a.len() >= 3, "seed {seed}: {a:?}");
            // Each pause stays under its ceiling: 250 ms, 500 ms, 1 s, 2 s …
            for (n, pair) in a.windows(2).enumerate() {
                let ceiling = CONNECT_BACKOFF.ceiling(n as u32 + 1);
                assert!(pair[1] - pair[0] <= ceiling, "seed {seed}: {a:?}");
            }
            seconds.push(a[1]);
        }
        // Without jitter all 32 second attempts would be at exactly 250 ms.
        seconds.sort();
        seconds.dedup();
        assert!(seconds.len() >= 24, "second attempts bunch up: {seconds:?}");
        let early = seconds
            .iter()
            .filter(|d| **d < Duration::from_millis(125))
            .count();
        assert!(
            (4..seconds.len() - 4).contains(&early),
            "not spread over [0, 250 ms]: {seconds:?}"
        );
    }

    #[test]
    fn connect_backoff_is_seeded_full_jitter_under_the_ceilings() {
        let mut a = StdRng::seed_from_u64(7);
        let mut b = StdRng::seed_from_u64(7);
        for attempt in 1..8 {
            let d = CONNECT_BACKOFF.delay_with(attempt, &mut a);
            assert_eq!(d, CONNECT_BACKOFF.delay_with(attempt, &mut b));
            assert!(d <= CONNECT_BACKOFF.ceiling(attempt));
        }
        assert_eq!(CONNECT_BACKOFF.ceiling(1), Duration::from_millis(250));
        assert_eq!(CONNECT_BACKOFF.ceiling(4), Duration::from_secs(2));
        assert_eq!(CONNECT_BACKOFF.ceiling(9), Duration::from_secs(2));
    }
}
