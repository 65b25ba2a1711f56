//! The embeddable broker: start, addresses, inspection, shutdown.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::runtime::Handle;

use crate::auth::{AuthConfig, Family};
use crate::clock::Clock;
use crate::config::Config;
use crate::engines::Engines;
use crate::listener;
use crate::session::{self, OutboundLimits, Session, SessionId, Transport};
use crate::shared::Shared;
use crate::storage::{StorageError, StorageMode};

/// Time [`Broker::shutdown`] waits for connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running broker. Runs on the tokio runtime that started it; dropping it
/// stops the listeners and closes every session (use [`Broker::shutdown`] to
/// also wait for that).
pub struct Broker {
    shared: Arc<Shared>,
    tcp_addr: SocketAddr,
    http_addr: SocketAddr,
    /// The runtime that started the broker: handed-over streams are served
    /// there whoever calls [`Broker::serve_stream`].
    runtime: Handle,
}

/// Why a broker could not start.
#[derive(Debug)]
pub enum StartError {
    /// The configuration is unusable.
    Config(String),
    /// A listener could not bind.
    Io(std::io::Error),
    /// Storage could not be opened or recovered.
    Storage(StorageError),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "invalid configuration: {e}"),
            StartError::Io(e) => write!(f, "cannot bind: {e}"),
            StartError::Storage(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Io(e) => Some(e),
            StartError::Storage(e) => Some(e),
            StartError::Config(_) => None,
        }
    }
}

impl From<std::io::Error> for StartError {
    fn from(e: std::io::Error) -> Self {
        StartError::Io(e)
    }
}

impl From<StorageError> for StartError {
    fn from(e: StorageError) -> Self {
        StartError::Storage(e)
    }
}

/// Builds a [`Broker`]; see [`Broker::builder`].
#[derive(Debug, Clone, Default)]
pub struct BrokerBuilder {
    config: Config,
    clock: Clock,
}

impl BrokerBuilder {
    /// Starts from `config` (replacing every setting made so far).
    #[must_use]
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Address both listeners bind (default 127.0.0.1).
    #[must_use]
    pub fn bind_addr(mut self, addr: impl Into<IpAddr>) -> Self {
        self.config.bind_addr = addr.into();
        self
    }

    /// Raw TCP port (default 0 = ephemeral).
    #[must_use]
    pub fn tcp_port(mut self, port: u16) -> Self {
        self.config.tcp_port = port;
        self
    }

    /// HTTP/WebSocket port (default 0 = ephemeral).
    #[must_use]
    pub fn http_port(mut self, port: u16) -> Self {
        self.config.http_port = port;
        self
    }

    /// CONNECT token checking (default anonymous).
    #[must_use]
    pub fn auth(mut self, auth: AuthConfig) -> Self {
        self.config.auth = auth;
        self
    }

    /// The clock (default [`Clock::system`]).
    #[must_use]
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Largest transport frame accepted (default 1 MiB).
    #[must_use]
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.config.max_frame = bytes;
        self
    }

    /// Time a connection has to send CONNECT (default 10 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Idle TTL of ReadWrite KV transactions (default 300 s).
    #[must_use]
    pub fn kv_idle_transaction_ttl(mut self, ttl: Duration) -> Self {
        self.config.kv_idle_transaction_ttl = ttl;
        self
    }

    /// Storage mode (default memory).
    #[must_use]
    pub fn storage(mut self, mode: StorageMode) -> Self {
        self.config.storage = mode;
        self
    }

    /// Bounds on connections, unfinished input and KV transactions.
    #[must_use]
    pub fn limits(mut self, limits: crate::config::Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// Bounds of each session's outbound backlog.
    #[must_use]
    pub fn outbound_limits(mut self, limits: OutboundLimits) -> Self {
        self.config.outbound = limits;
        self
    }

    /// Binds the listeners and starts serving on the current tokio runtime.
    pub async fn start(self) -> Result<Broker, StartError> {
        Broker::start(self.config, self.clock).await
    }
}

/// One live session, for inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Session id.
    pub id: SessionId,
    /// Route family.
    pub family: Family,
    /// Listener.
    pub transport: Transport,
    /// Peer address.
    pub peer: Option<SocketAddr>,
    /// SESSION_METADATA service name.
    pub service_name: Option<String>,
    /// The token's subject.
    pub subject: Option<String>,
    /// Notifications dropped because its backlog was full.
    pub dropped_notifications: u64,
}

impl Broker {
    /// A builder with embedding defaults: 127.0.0.1, ephemeral ports,
    /// anonymous auth, system clock, memory storage.
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder::default()
    }

    /// Starts a broker with `config` and `clock`.
    pub async fn start(config: Config, clock: Clock) -> Result<Broker, StartError> {
        config.auth.validate().map_err(StartError::Config)?;
        if config.max_frame < 64 {
            return Err(StartError::Config(
                "max frame must be at least 64 bytes".into(),
            ));
        }
        // One connection may hold its frame's first 4 KiB freely and the rest
        // against the budget: a smaller budget could never complete a frame.
        if config.limits.max_pending_input < config.max_frame {
            return Err(StartError::Config(format!(
                "the pending input budget ({} bytes) must hold a whole frame ({} bytes)",
                config.limits.max_pending_input, config.max_frame
            )));
        }
        let bind = (config.bind_addr, config.tcp_port, config.http_port);
        let shared = Shared::new(config, clock)?;
        let tcp = TcpListener::bind((bind.0, bind.1)).await?;
        let http = TcpListener::bind((bind.0, bind.2)).await?;
        let tcp_addr = tcp.local_addr()?;
        let http_addr = http.local_addr()?;
        shared.tasks.spawn(listener::serve_tcp(tcp, shared.clone()));
        shared
            .tasks
            .spawn(listener::serve_http(http, shared.clone()));
        shared.tasks.spawn(run_timers(shared.clone()));
        tracing::info!(%tcp_addr, %http_addr, anonymous = shared.config.auth.is_anonymous(), "broker listening");
        Ok(Broker {
            shared,
            tcp_addr,
            http_addr,
            runtime: Handle::current(),
        })
    }

    /// Serves `stream` as one more connection, without a socket: an
    /// in-memory pipe (`tokio::io::duplex`, or `fitz::transport::memory`'s
    /// listener through [`Broker::serve_incoming`]), a test harness, a
    /// transport of the embedder's own.
    ///
    /// The stream carries Fitz frames with TCP's 4-byte length prefixes and
    /// takes the TCP connection path from there on: the CONNECT handshake
    /// and token check, the frame deadline and the unfinished-input budget,
    /// inline replies and the writer task. The session reports
    /// [`Transport::Stream`] and no peer address. Like an accepted socket it
    /// takes one of the `FITZ_MAX_CONNECTIONS` slots: beyond them, or after
    /// shutdown, the stream is dropped (closed) at once and counted in
    /// [`Broker::refused_connections`] (before shutdown only). The
    /// connection runs on the broker's runtime, so any thread may call this;
    /// it ends like any other session (peer close, shutdown, dropping the
    /// broker).
    pub fn serve_stream(&self, stream: impl AsyncRead + AsyncWrite + Send + Unpin + 'static) {
        let _runtime = self.runtime.enter();
        listener::serve_stream(&self.shared, Box::new(stream));
    }

    /// Serves every stream `incoming` yields as in [`Broker::serve_stream`],
    /// from a task of the broker's, until `incoming` ends or the broker
    /// shuts down (or is dropped); `incoming` is dropped then, which for an
    /// in-memory listener makes further connects fail as refused.
    ///
    /// ```no_run
    /// # async fn demo(broker: fitz_broker::Broker) {
    /// let (tx, rx) = tokio::sync::mpsc::channel::<tokio::io::DuplexStream>(4);
    /// broker.serve_incoming(futures_util::stream::unfold(rx, |mut rx| async {
    ///     rx.recv().await.map(|s| (s, rx))
    /// }));
    /// let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    /// tx.send(server_end).await.ok();
    /// // `client_end` now speaks Fitz (CONNECT first) with the broker.
    /// # drop(client_end); }
    /// ```
    pub fn serve_incoming<I, S>(&self, incoming: I)
    where
        I: Stream<Item = S> + Send + 'static,
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let incoming = Box::pin(incoming.map(|s| Box::new(s) as crate::io::BoxedStream));
        let _runtime = self.runtime.enter();
        self.shared
            .tasks
            .spawn(listener::serve_incoming(incoming, self.shared.clone()));
    }

    /// The bound TCP address.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// `tcp://host:port` (a wildcard bind is reported as loopback).
    pub fn tcp_url(&self) -> String {
        format!("tcp://{}", connectable(self.tcp_addr))
    }

    /// `ws://host:port/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", connectable(self.http_addr))
    }

    /// `http://host:port` (probes).
    pub fn http_url(&self) -> String {
        format!("http://{}", connectable(self.http_addr))
    }

    /// The broker clock (advance a manual clock through it).
    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// The configuration in effect.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The engines, for inspection (`broker.engines().kv.stats()` …).
    pub fn engines(&self) -> &Engines {
        &self.shared.engines
    }

    /// Number of live sessions (connections past CONNECT).
    pub fn session_count(&self) -> usize {
        *self.shared.sessions.count().borrow()
    }

    /// Waits until exactly `n` sessions are live.
    pub async fn wait_for_session_count(&self, n: usize) {
        let mut rx = self.shared.sessions.count();
        let _ = rx.wait_for(|c| *c == n).await;
    }

    /// The live sessions.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let g = self.shared.sessions.lock();
        let mut v: Vec<SessionInfo> = g
            .values()
            .map(|s| SessionInfo {
                id: s.id(),
                family: s.family(),
                transport: s.transport(),
                peer: s.peer(),
                service_name: s.service_name(),
                subject: s.grant().subject.clone(),
                dropped_notifications: s.dropped_notifications(),
            })
            .collect();
        v.sort_by_key(|s| s.id);
        v
    }

    /// Notifications dropped broker-wide because a subscriber's backlog was full.
    pub fn dropped_notifications(&self) -> u64 {
        self.shared
            .stats
            .dropped_notifications
            .load(Ordering::Relaxed)
    }

    /// Connections closed at accept because `FITZ_MAX_CONNECTIONS` were
    /// already served.
    pub fn refused_connections(&self) -> u64 {
        self.shared
            .stats
            .refused_connections
            .load(Ordering::Relaxed)
    }

    /// Bytes of the unfinished-input budget no connection holds right now.
    pub fn input_budget_available(&self) -> usize {
        self.shared.input.available()
    }

    /// Write transactions local storage has made since start: concurrent
    /// commits share one (group commit), so this counts fsyncs for Sync
    /// commits; 0 in memory mode.
    pub fn storage_writes(&self) -> u64 {
        self.shared.storage.writes()
    }

    /// Sessions opened since start.
    pub fn sessions_opened(&self) -> u64 {
        self.shared.stats.sessions_opened.load(Ordering::Relaxed)
    }

    /// Test hook: closes every live session (clients see a disconnect; the
    /// broker keeps listening).
    pub fn disconnect_all_sessions(&self) {
        let sessions: Vec<Session> = self.shared.sessions.lock().values().cloned().collect();
        for s in sessions {
            s.close("disconnected by broker");
        }
    }

    /// Stops the listeners, closes every session, waits (up to 5 s) for
    /// connections to finish, then closes storage (Buffered commits are made
    /// durable and a local store's path is released). Idempotent.
    pub async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        let sessions: Vec<Session> = self.shared.sessions.lock().values().cloned().collect();
        for s in sessions {
            s.close(session::SHUTDOWN);
        }
        self.shared.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown: connections still open after the grace period");
        }
        self.shared.storage.close();
    }
}

impl Drop for Broker {
    /// Stops listening and releases storage at once; sessions still open
    /// end on their own (their commits fail from here on).
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
        self.shared.storage.close();
    }
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("tcp_addr", &self.tcp_addr)
            .field("http_addr", &self.http_addr)
            .field("sessions", &self.session_count())
            .finish()
    }
}

fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// Runs engine ticks when they are due. Under a manual clock only requests
/// that are already due run here; [`Clock::advance`] runs the rest.
async fn run_timers(shared: Arc<Shared>) {
    const IDLE: Duration = Duration::from_secs(3600);
    loop {
        let now = shared.clock.now();
        for domain in shared.timers.take_due(now) {
            shared.engines.tick(domain, now);
        }
        let sleep = match shared.timers.next_deadline() {
            Some(at) if !shared.clock.is_manual() => {
                at.duration_since(now).unwrap_or(Duration::ZERO)
            }
            _ => IDLE,
        };
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            () = shared.timers.changed() => {}
            () = tokio::time::sleep(sleep) => {}
        }
    }
}
