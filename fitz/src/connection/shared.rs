//! What every handle and the actor share: the fixed configuration and the
//! atomics beside it (generation, capabilities, ids, the flush and drain
//! bookkeeping).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use fitz_protocol::Capabilities;
use tokio::sync::{Semaphore, broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::endpoint::Endpoint;
use crate::events::{Event, State, SubscriptionId};
use crate::options::{ReconnectPolicy, SubscriptionOptions};
use crate::token::TokenProvider;
use crate::transport::Connector;

/// Everything the actor needs to connect; fixed at `build()`.
pub(crate) struct Config {
    pub endpoint: Endpoint,
    pub tokens: Arc<dyn TokenProvider>,
    pub connector: Option<Arc<dyn Connector>>,
    pub tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    pub connect_timeout: Duration,
    /// Handshakes in a row that may be token refusals before giving up.
    pub auth_attempts: u32,
    pub request_timeout: Duration,
    pub reconnect: ReconnectPolicy,
    pub max_frame: usize,
    pub max_in_flight: usize,
    pub subscription: SubscriptionOptions,
    pub service_name: Option<String>,
    pub ping_interval: Duration,
    pub dead_peer_timeout: Duration,
    /// Retries of replay-safe reads (the domain views' default).
    pub retry: crate::retry::RetryPolicy,
    /// Retries of Queue ENQUEUE after a confirmed negative answer.
    pub enqueue_retry: crate::retry::RetryPolicy,
    /// Requests slower than this are logged (`tracing::warn!`).
    pub slow_request_threshold: Duration,
}

/// State shared by the handles and the actor: atomics only.
pub(crate) struct Shared {
    pub config: Config,
    /// Advances on every connection loss and on close.
    pub(super) generation: AtomicU64,
    /// Bit 63: a hello was seen on the current session; bits 32..48: protocol
    /// version; bits 0..32: capabilities.
    pub(super) capabilities: AtomicU64,
    /// Correlation and local ids: start at 1, never reset, never 0.
    pub(super) next_id: AtomicU64,
    pub(super) next_handle: AtomicU64,
    pub(super) closed: AtomicBool,
    pub(super) close: CancellationToken,
    pub(super) inflight: Arc<Semaphore>,
    pub(super) state: watch::Receiver<State>,
    pub(super) events: broadcast::Sender<Event>,
    /// One bit per domain (see [`domain_bit`]) that carried a record since
    /// the last flush: the domains a flush must put a barrier through.
    pub(super) domains_used: AtomicU32,
    /// Set by `drain`: no new subscription or worker is taken.
    pub(super) draining: AtomicBool,
    /// Cancelled by `drain`: every worker's stop token is a child of it.
    pub(super) drain: CancellationToken,
    /// The workers' tasks, so `drain` can wait for their handlers.
    pub(super) workers: TaskTracker,
}

const CAPS_KNOWN: u64 = 1 << 63;

impl Shared {
    /// Fresh books for a client that has not connected yet.
    pub(super) fn new(
        config: Config,
        state: watch::Receiver<State>,
        events: broadcast::Sender<Event>,
    ) -> Self {
        Self {
            inflight: Arc::new(Semaphore::new(config.max_in_flight)),
            config,
            generation: AtomicU64::new(0),
            capabilities: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            next_handle: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            close: CancellationToken::new(),
            state,
            events,
            domains_used: AtomicU32::new(0),
            draining: AtomicBool::new(false),
            drain: CancellationToken::new(),
            workers: TaskTracker::new(),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Advances the generation; returns the new one.
    pub fn advance_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    pub fn set_capabilities(&self, hello: Option<(u16, Capabilities)>) {
        let v = hello.map_or(0, |(version, caps)| {
            CAPS_KNOWN | (u64::from(version) << 32) | u64::from(caps.0)
        });
        self.capabilities.store(v, Ordering::Release);
    }

    pub fn capabilities(&self) -> Option<Capabilities> {
        let v = self.capabilities.load(Ordering::Acquire);
        (v & CAPS_KNOWN != 0).then_some(Capabilities((v & 0xFFFF_FFFF) as u32))
    }

    pub fn next_id(&self) -> u64 {
        // Wrapping past u64::MAX would take centuries; skip 0 regardless.
        loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    pub fn next_handle(&self) -> SubscriptionId {
        SubscriptionId(self.next_handle.fetch_add(1, Ordering::Relaxed))
    }

    pub fn emit(&self, event: Event) {
        crate::telemetry::event(&event);
        // No receivers is fine: events are optional to observe.
        let _ = self.events.send(event);
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Notes that a record of type `ty` is on its way (for `flush`). A load
    /// first: once the bit is set the hot path writes nothing shared.
    pub(super) fn note_domain(&self, ty: u16) {
        let bit = domain_bit(ty);
        if self.domains_used.load(Ordering::Relaxed) & bit != bit {
            self.domains_used.fetch_or(bit, Ordering::AcqRel);
        }
    }
}

/// The bit of `ty`'s domain in [`Shared::domains_used`]; 0 for control records.
pub(crate) fn domain_bit(ty: u16) -> u32 {
    match ty / 100 {
        d @ 1..=7 => 1 << d,
        _ => 0,
    }
}
