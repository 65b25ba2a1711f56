//! The connection actor and the internal API the domain clients build on.
//!
//! One task per [`crate::Client`] (see `actor.rs`) owns the transport, the
//! read and write buffers, the pending-request book, the registration
//! registry and the state `watch`. Everything else holds a [`Connection`]: a
//! cheap clone with two bounded channels into the actor and a few atomics
//! (generation, capabilities, id counter). No lock sits on the request or
//! notification path.
//!
//! # Internal API for domain clients
//!
//! A domain (`fitz/src/kv/`, `queue/`, …, `notice.rs`) is a thin typed view
//! holding a `Connection`. It validates routes locally, encodes with `fitz-protocol`,
//! and uses these calls; it never touches wire ids, correlation or framing.
//!
//! | call | for |
//! |---|---|
//! | [`Connection::call`]`::<M, R>(&msg)` | one request, one reply decoded as `R: ReplyBody`; broker errors become [`ErrorKind::Broker`](crate::ErrorKind::Broker) |
//! | [`Connection::request`] / [`Connection::request_with`] | the raw reply payload, for replies whose layout depends on the request (`decode_reply_with`) |
//! | [`Connection::request_frames`] | a request answered by several frames (Lease ACQUIRE: `Queued`, later the grant, same correlation) |
//! | [`Connection::send`] | fire-and-forget (Notice PUBLISH); never labelled |
//! | [`Connection::send_committed`] / [`Connection::send_detached`] | fire-and-forget pinned to a session that is never half-sent: built at the moment it is queued, written even if the caller stops waiting (RPC REQUEST/RESPONSE/CANCEL); the detached form is for `Drop` |
//! | [`Connection::request_detached`] | a best-effort request from `Drop` (KV ROLLBACK, Lease RELEASE): never blocks or spawns, answer swallowed |
//! | [`Connection::register`] | a restorable subscription or worker registration → [`Subscription<T>`] |
//! | [`Connection::push_handler`] | raw pushes of one type (RPC 302/303/305) by UUID, route pattern, or all |
//! | [`Connection::end_registrations`] | end every local registration of a subscribe type (Notice UNSUBSCRIBE_ALL) |
//! | [`Connection::capabilities`] / [`Connection::generation`] / [`Connection::check_generation`] | capability gating and stale-handle fencing |
//!
//! ## A request
//!
//! ```text
//! let ok: kv::BeginOk = self.conn.call(&kv::Begin { route: route.into(), mode }).await?;
//! let tx = Transaction { conn: self.conn.clone(), id: ok.tx_id, generation: self.conn.generation() };
//! // later, in Transaction::get: a request pinned to the session that owns tx_id
//! let payload = self.conn.request_with(&kv::Get { .. }, RequestOptions::pinned(self.generation)).await?;
//! let reply = fitz_protocol::decode_reply::<kv::GetOk>(payload).map_err(Error::malformed_reply)?;
//! ```
//!
//! ## A multi-frame request
//!
//! ```text
//! fn lease_final(p: &Bytes) -> bool { !is_queued_kind(p) }   // a cheap peek, runs in the actor
//! let mut frames = self.conn.request_frames(&acquire, lease_final, RequestOptions::timeout(wait + grace)).await?;
//! while let Some(frame) = frames.next().await { let frame = frame?; /* Queued, then the grant */ }
//! ```
//!
//! The pending entry lives until `is_final` returns true for a frame, so a
//! deferred grant arrives on the same correlation. A *labelled* reply whose id
//! is no longer pending (its caller gave up) is not garbage: it is routed like
//! an unlabelled push of its type, i.e. to a [`PushKey::Any`] handler of that
//! type if one is installed, else dropped with a `trace!` record.
//!
//! ## A subscription, restored after reconnect
//!
//! ```text
//! static WATCH: RegistrationSpec = RegistrationSpec {
//!     name: "kv watch",
//!     subscribe_type: types::KV_SUBSCRIBE,
//!     notify_type: Some(types::KV_NOTIFY),
//!     ack: |p| decode_ack::<kv::SubscribeOk>(p, |ok| ok.sub_id),
//!     // KV unsubscribes by the original pattern: reuse the SUBSCRIBE payload.
//!     unsubscribe: |_wire_id, payload| record_with_payload(types::KV_UNSUBSCRIBE, payload),
//! };
//! let reg = Registration::new(&WATCH, &kv::Subscribe::new(pattern), decode_change, options)?;
//! let sub: Subscription<KvChange> = self.conn.register(reg).await?;
//! // Subscription<T>: Stream<Item = Result<T>>, id(), dropped(), unsubscribe().await
//! ```
//!
//! Identical SUBSCRIBE records share one wire registration, reference-counted
//! per client: a second `register` sends nothing, and the wire UNSUBSCRIBE
//! goes out when the last handle unsubscribes or is dropped. After a
//! reconnect the actor re-sends every live SUBSCRIBE record verbatim
//! (pipelined; labelled when the broker correlates), swaps in the new wire id,
//! and only then reports `Authenticated`. A failed restore ends the affected
//! subscriptions with the error and emits [`crate::Event::RestoreFailed`].
//!
//! ## An RPC push handler
//!
//! ```text
//! // worker deliveries: every 302 whose route matches the worker's pattern
//! let deliveries = conn.push_handler(types::RPC_REQUEST, PushKey::Pattern(pattern.into()), opts).await?;
//! // a caller's responses and lifecycle: by its 16-byte UUID (ended when the session drops)
//! let responses = conn.push_handler(types::RPC_RESPONSE, PushKey::Uuid(caller_id), opts).await?;
//! ```
//!
//! A handler yields [`Push`] items: record payloads, and for worker
//! deliveries a [`Push::SessionEnded`] between the last delivery of a lost
//! session and the first of the next. Pair the worker handler with a
//! `register` of the 300 SUBSCRIBE_WORKER record (`notify_type: None`, `ack` returning `Ok(None)`) so the worker is
//! restored after a reconnect.
//!
//! # Policies
//!
//! * **In-flight limit**: every request and send takes a permit of a
//!   semaphore of `max_in_flight` permits, released when the reply arrives
//!   (or the send is written, or the request fails). When none is free the
//!   caller **waits**, up to its request timeout, then fails with a retryable
//!   [`ErrorKind::Backpressure`](crate::ErrorKind::Backpressure) error;
//!   nothing was sent. A request abandoned after it was written keeps its
//!   permit until the broker answers it: it is still on the wire.
//! * **Timeouts** are enforced by the actor (it knows whether the request was
//!   written, hence `maybe_applied()`). In the uncorrelated regime a timed-out
//!   request that was written stays as a tombstone until its late answer
//!   arrives and is swallowed.
//! * **Generations**: every connection loss and `close()` advances the
//!   generation. A request issued for an earlier generation and not yet
//!   written fails instead of being replayed; with
//!   [`RequestOptions::pinned`] it fails [`ErrorKind::Stale`](crate::ErrorKind::Stale).

mod actor;
#[doc(hidden)]
#[cfg(feature = "unstable-bench")]
pub mod bench;
mod call;
mod command;
mod drain;
mod handshake;
mod mailbox;
mod pair;
mod registry;
mod requests;
mod shared;
mod subscription;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fitz_protocol::{Capabilities, Message, ReplyBody};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::Span;

use crate::error::{Error, Result};
use crate::events::{Event, State, SubscriptionId};
use crate::options::SubscriptionOptions;
use crate::telemetry;

use command::{Command, Confirm, Control, Outbound, PushCmd, RegisterCmd, Reply};
pub(crate) use command::{RecordBuf, encode_record, encode_record_sized, encode_request};
pub(crate) use mailbox::{MailboxRx, mailbox};
#[cfg(test)]
pub(crate) use shared::domain_bit;
pub(crate) use shared::{Config, Shared};
pub(crate) use subscription::{PushStream, ReplyFrames, Subscription, domain_subscription};

/// A session generation captured by a stateful handle (KV transaction, stream
/// append session, queue reservation, lease). Compare with
/// [`Connection::check_generation`] or pin requests with
/// [`RequestOptions::pinned`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Generation(pub(crate) u64);

/// What a push handler receives.
#[derive(Debug, Clone)]
pub(crate) enum Push {
    /// A record's payload.
    Record(Bytes),
    /// The session ended. Only RPC worker deliveries carry it, in their own
    /// order: what follows belongs to the session of generation `next`,
    /// and invocations of the ended one are void.
    SessionEnded {
        /// The generation of the next session.
        next: Generation,
    },
}

/// Per-request options.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RequestOptions {
    /// Overrides the client's request timeout; covers the whole exchange
    /// (waiting for an in-flight slot, the write, every reply frame).
    pub timeout: Option<Duration>,
    /// Fails with `Stale` instead of being written on another session.
    pub generation: Option<Generation>,
    /// A flush barrier: not itself counted as traffic a later flush must
    /// cover.
    pub barrier: bool,
}
impl RequestOptions {
    pub fn timeout(timeout: Duration) -> Self {
        Self {
            timeout: Some(timeout),
            ..Self::default()
        }
    }

    pub fn pinned(generation: Generation) -> Self {
        Self {
            generation: Some(generation),
            ..Self::default()
        }
    }

    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// How a domain's registrations behave on the wire. One `static` per kind.
pub(crate) struct RegistrationSpec {
    /// For logs and debugging.
    pub name: &'static str,
    /// The SUBSCRIBE record type (109, 207, 300, 407, 501, 607, 703).
    pub subscribe_type: u16,
    /// NOTIFY type routed by its leading `u64 sub_id` (111, 209, 409, 504,
    /// 609, 705); `None` when deliveries come through a push handler (RPC).
    pub notify_type: Option<u16>,
    /// Decodes the SUBSCRIBE reply payload: `Ok(Some(wire_id))`, `Ok(None)`
    /// for an acknowledgement without id, or the failure.
    pub ack: fn(Bytes) -> Result<Option<u64>>,
    /// Builds the whole UNSUBSCRIBE record from the current wire id and the
    /// original SUBSCRIBE payload; `None` when there is nothing to send.
    pub unsubscribe: fn(Option<u64>, &Bytes) -> Option<Bytes>,
}

/// A registration request: spec, SUBSCRIBE record, item decoder, buffering.
pub(crate) struct Registration<T> {
    pub spec: &'static RegistrationSpec,
    pub record: Bytes,
    /// Turns one NOTIFY payload into an item; runs in the consumer's task.
    pub decode: fn(Bytes) -> Result<T>,
    pub options: SubscriptionOptions,
}

impl<T> Registration<T> {
    pub fn new<M: Message>(
        spec: &'static RegistrationSpec,
        subscribe: &M,
        decode: fn(Bytes) -> Result<T>,
        options: SubscriptionOptions,
    ) -> Result<Self> {
        Ok(Self {
            spec,
            record: encode_record(subscribe)?,
            decode,
            options,
        })
    }
}

/// Which pushes of a type a push handler receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PushKey {
    /// Pushes carrying this 16-byte UUID: the leading field of 302 and 303,
    /// the field after the kind byte of 305. Session-scoped: the handler ends
    /// with a connection error when the session drops.
    Uuid([u8; 16]),
    /// 302 deliveries whose route (after the UUID) matches this pattern.
    /// Survives reconnects. A delivery goes to exactly one handler: when the
    /// patterns of several match, the most specific one (most literal
    /// segments, then fewest `**`, then fewest `*`; the earliest installed on
    /// a tie) — the broker charged one registration, so one worker must
    /// answer. One handler per pattern and type: installing a second one
    /// fails. When a session ends, each RPC_REQUEST pattern handler receives
    /// an 8-byte item (never a valid delivery): the generation of the next
    /// session, big-endian. It marks the boundary in order, so deliveries of
    /// the lost session can be told apart.
    Pattern(String),
    /// Every push of the type nobody else claimed, including late labelled
    /// replies. Survives reconnects.
    Any,
}

/// Debug counters of the actor's books (tests assert leaks with these).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[doc(hidden)]
pub struct DebugSnapshot {
    /// Outstanding requests and sends, written or not (tombstones included).
    pub pending: usize,
    /// Written uncorrelated requests nobody waits for any more.
    pub tombstones: usize,
    /// Items waiting for the session to become ready or the buffer to drain.
    pub backlog: usize,
    /// Live registrations (wire subscriptions).
    pub registrations: usize,
    /// Local subscription handles across all registrations.
    pub sinks: usize,
    /// Installed push handlers.
    pub push_handlers: usize,
    /// Free in-flight permits.
    pub free_permits: usize,
}

/// The handle every domain client holds. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Connection {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    control: mpsc::Sender<Control>,
}

impl Connection {
    /// Spawns the actor on the current tokio runtime.
    pub fn spawn(config: Config) -> Result<Self> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::invalid("a Client must be built inside a tokio runtime"))?;
        let (state_tx, state_rx) = watch::channel(State::Disconnected);
        let (events, _) = broadcast::channel(256);
        let (commands, command_rx) = mpsc::channel(config.max_in_flight + 64);
        let (control, control_rx) = mpsc::channel(1024);
        let shared = Arc::new(Shared::new(config, state_rx, events));
        runtime.spawn(actor::run(shared.clone(), state_tx, command_rx, control_rx));
        Ok(Self {
            shared,
            commands,
            control,
        })
    }

    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    #[cfg(feature = "unstable-bench")]
    pub(crate) fn shared_arc(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    pub fn capabilities(&self) -> Option<Capabilities> {
        self.shared.capabilities()
    }
    pub fn generation(&self) -> Generation {
        Generation(self.shared.generation())
    }

    /// `Err(Stale)` when `g` is not the current session's generation.
    pub fn check_generation(&self, g: Generation) -> Result<()> {
        if self.shared.is_closed() {
            Err(Error::closed())
        } else if self.shared.generation() != g.0 {
            Err(Error::stale())
        } else {
            Ok(())
        }
    }

    pub fn state(&self) -> watch::Receiver<State> {
        self.shared.state.clone()
    }

    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    // ----- lifecycle (used by Client) -----

    pub async fn connect(&self) -> Result<()> {
        if self.shared.is_closed() {
            return Err(Error::closed());
        }
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Connect(tx))
            .await
            .map_err(|_| Error::closed())?;
        rx.await.map_err(|_| Error::closed())?
    }

    pub async fn close(&self) {
        if !self.shared.closed.swap(true, Ordering::AcqRel) {
            // Stale handles fail at once, before the actor even wakes.
            self.shared.advance_generation();
            self.shared.close.cancel();
        }
        let mut state = self.shared.state.clone();
        let _ = state.wait_for(|s| *s == State::Closed).await; // Err: the actor is gone.
    }

    // ----- requests -----

    /// Sends `msg` and returns the reply payload (status byte included).
    pub async fn request<M: Message>(&self, msg: &M) -> Result<Bytes> {
        self.request_with(msg, RequestOptions::default()).await
    }

    pub async fn request_with<M: Message>(&self, msg: &M, opts: RequestOptions) -> Result<Bytes> {
        let record = encode_request(msg)?;
        self.traced_request(M::TYPE, msg.route(), record, opts)
            .await
    }

    /// A request whose record is already encoded; `route` names its
    /// destination for telemetry.
    pub async fn request_record(
        &self,
        ty: u16,
        route: Option<&str>,
        record: Bytes,
        opts: RequestOptions,
    ) -> Result<Bytes> {
        self.traced_request(ty, route, record, opts).await
    }

    /// A request inside its telemetry span, measured; see `crate::telemetry`.
    async fn traced_request(
        &self,
        ty: u16,
        route: Option<&str>,
        record: impl Into<RecordBuf>,
        opts: RequestOptions,
    ) -> Result<Bytes> {
        // The span is not entered: nothing in this task logs inside it, and
        // a wrapper would only grow (and move) every request's future.
        let t = telemetry::Request::start(ty, route);
        let result = self
            .exchange(Command::Request, ty, record, opts, Reply::Once, t.span())
            .await;
        t.finish_reply(&result, self.shared.config.slow_request_threshold);
        self.note_in_flight();
        result
    }

    /// Submits a record whose outcome comes back on a oneshot (`reply`
    /// wraps its sender) and waits for it. The actor enforces the deadline
    /// and always answers; a dropped sender means it is gone.
    async fn exchange<T>(
        &self,
        wrap: fn(Outbound) -> Command,
        ty: u16,
        record: impl Into<RecordBuf>,
        opts: RequestOptions,
        reply: fn(oneshot::Sender<Result<T>>) -> Reply,
        span: &Span,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.submit(wrap, ty, record, opts, reply(tx), span).await?;
        rx.await.unwrap_or_else(|_| Err(Error::closed()))
    }

    /// A fresh correlation id, recorded on the request's span when it is
    /// enabled.
    fn next_id_in(&self, span: &Span) -> u64 {
        let id = self.shared.next_id();
        if !span.is_disabled() {
            span.record(telemetry::CONVERSATION_ID, id);
        }
        id
    }

    /// Samples the in-flight gauge.
    #[inline]
    fn note_in_flight(&self) {
        let free = self.shared.inflight.available_permits();
        telemetry::in_flight(self.shared.config.max_in_flight.saturating_sub(free));
    }

    /// Request + `decode_reply::<R>` + error mapping.
    pub async fn call<M: Message, R: ReplyBody>(&self, msg: &M) -> Result<R> {
        self.call_with(msg, RequestOptions::default()).await
    }

    /// [`Connection::call`] with options (timeout, generation pinning).
    pub async fn call_with<M: Message, R: ReplyBody>(
        &self,
        msg: &M,
        opts: RequestOptions,
    ) -> Result<R> {
        let payload = self.request_with(msg, opts).await?;
        decode_body::<R>(payload)
    }

    /// A request answered by several frames; see the module docs.
    pub async fn request_frames<M: Message>(
        &self,
        msg: &M,
        is_final: fn(&Bytes) -> bool,
        opts: RequestOptions,
    ) -> Result<ReplyFrames> {
        let record = encode_record(msg)?;
        let (tx, rx) = mpsc::channel(4);
        // Spanned up to the moment it is queued; the frames arrive later.
        let t = telemetry::Request::start_send(M::TYPE, msg.route());
        self.submit(
            Command::Request,
            M::TYPE,
            record,
            opts,
            Reply::Frames { tx, is_final },
            t.span(),
        )
        .await?;
        Ok(ReplyFrames::new(rx))
    }

    /// Fire-and-forget: resolves once the record is in the outbound buffer of
    /// an authenticated session (or fails if that cannot happen in time).
    pub async fn send<M: Message>(&self, msg: &M, variable: usize) -> Result<()> {
        let record = encode_record_sized(msg, variable)?;
        self.traced_send(M::TYPE, msg.route(), record, RequestOptions::default())
            .await
    }

    async fn traced_send(
        &self,
        ty: u16,
        route: Option<&str>,
        record: Bytes,
        opts: RequestOptions,
    ) -> Result<()> {
        let t = telemetry::Request::start_send(ty, route);
        let result = self
            .exchange(Command::Send, ty, record, opts, Reply::Written, t.span())
            .await;
        t.finish(&result, self.shared.config.slow_request_threshold);
        result
    }

    /// A fire-and-forget record pinned to session `generation` that cannot be
    /// half-sent: `build` runs exactly when the record is committed to the
    /// connection's queue (after an in-flight slot and queue room were
    /// found), and from then on the record is written, in order, even if
    /// this future is dropped — unless the session ends first. Dropping the
    /// future earlier sends nothing and never runs `build`.
    ///
    /// Resolves once the record is in the outbound buffer. Errors: `Stale`
    /// (another session), `Closed`, `Backpressure` (no slot or queue room
    /// within the request timeout), a connection error when the session ended
    /// before the write, or whatever `build` returned.
    ///
    /// For records whose content depends on what was already sent (RPC
    /// response sequence numbers, at-most-once cancellation flags). `build`
    /// may return a lock guard with the record: it is dropped only once the
    /// record is queued, so concurrent builders reach the wire in the order
    /// they built.
    pub async fn send_committed<G>(
        &self,
        ty: u16,
        generation: Generation,
        build: impl FnOnce() -> Result<(Bytes, G)>,
    ) -> Result<()> {
        self.send_committed_traced(ty, generation, build, Command::Send, true)
            .await
    }

    /// [`Connection::send_committed`] that returns once the record is queued,
    /// without waiting to learn whether it was written (no oneshot, no
    /// wake-up): for a final record whose write outcome nobody acts on.
    pub async fn send_committed_unconfirmed<G>(
        &self,
        ty: u16,
        generation: Generation,
        build: impl FnOnce() -> Result<(Bytes, G)>,
    ) -> Result<()> {
        self.send_committed_traced(ty, generation, build, Command::Send, false)
            .await
    }

    /// [`Connection::send_committed_inner`] inside a send's telemetry span
    /// (the slow-request log included): what every committed send shares.
    async fn send_committed_traced<G>(
        &self,
        ty: u16,
        generation: Generation,
        build: impl FnOnce() -> Result<(Bytes, G)>,
        wrap: impl FnOnce(Outbound) -> Command,
        wait: bool,
    ) -> Result<()> {
        let t = telemetry::Request::start_send(ty, None);
        let result = self
            .send_committed_inner(ty, generation, build, wrap, wait, t.span())
            .await;
        t.finish(&result, self.shared.config.slow_request_threshold);
        result
    }

    async fn send_committed_inner<G>(
        &self,
        ty: u16,
        generation: Generation,
        build: impl FnOnce() -> Result<(Bytes, G)>,
        wrap: impl FnOnce(Outbound) -> Command,
        wait: bool,
        span: &Span,
    ) -> Result<()> {
        if self.shared.is_closed() {
            return Err(Error::closed());
        }
        if generation.0 != self.shared.generation() {
            return Err(Error::stale());
        }
        let deadline = Instant::now() + self.shared.config.request_timeout;
        let full =
            || Error::backpressure("the connection stayed saturated for the whole request timeout");
        // Fast paths first; the waits (and their timers) are boxed so the
        // future every call carries stays small.
        let permit = match self.shared.inflight.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::Closed) => return Err(Error::closed()),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                let acquire = self.shared.inflight.clone().acquire_owned();
                match Box::pin(tokio::time::timeout_at(deadline, acquire)).await {
                    Ok(Ok(p)) => p,
                    Ok(Err(_)) => return Err(Error::closed()),
                    Err(_) => return Err(full()),
                }
            }
        };
        let slot = match self.commands.try_reserve() {
            Ok(slot) => slot,
            Err(mpsc::error::TrySendError::Closed(())) => return Err(Error::closed()),
            Err(mpsc::error::TrySendError::Full(())) => {
                match Box::pin(tokio::time::timeout_at(deadline, self.commands.reserve())).await {
                    Ok(Ok(slot)) => slot,
                    Ok(Err(_)) => return Err(Error::closed()),
                    Err(_) => return Err(full()),
                }
            }
        };
        let (tx, rx) = wait.then(oneshot::channel).unzip();
        self.shared.note_domain(ty);
        {
            // From here on nothing awaits until the record is queued.
            let (record, guard) = build()?;
            let id = self.next_id_in(span);
            slot.send(wrap(Outbound {
                id,
                ty,
                record: record.into(),
                deadline,
                generation: generation.0,
                pinned: true,
                reply: Reply::Committed(tx.into()),
                permit,
            }));
            drop(guard);
        }
        match rx {
            Some(rx) => rx.await.map_err(|_| Error::closed())?,
            None => Ok(()),
        }
    }

    /// Best-effort fire-and-forget from synchronous code (`Drop`): never
    /// blocks, never spawns. Queues `record` for session `generation` when an
    /// in-flight slot and queue room are free right now; false when it was
    /// not queued (full, closed, or another session). Once queued it behaves
    /// like [`Connection::send_committed`].
    pub fn send_detached(&self, ty: u16, generation: Generation, record: Bytes) -> bool {
        if self.shared.is_closed() || generation.0 != self.shared.generation() {
            return false;
        }
        let Ok(permit) = self.shared.inflight.clone().try_acquire_owned() else {
            return false;
        };
        self.shared.note_domain(ty);
        let out = Outbound {
            id: self.shared.next_id(),
            ty,
            record: record.into(),
            deadline: Instant::now(),
            generation: generation.0,
            pinned: true,
            reply: Reply::Committed(Confirm::None),
            permit,
        };
        self.commands.try_send(Command::Send(out)).is_ok()
    }

    /// A best-effort request for `Drop` (KV ROLLBACK, Lease RELEASE): never
    /// blocks, never spawns. It is queued only if an in-flight slot and a
    /// command slot are free right now and the client is open (and, when
    /// pinned, still on that generation); its answer is swallowed. Returns
    /// whether it was queued. The actor writes it like any request, so a
    /// legacy broker's per-type lane stays in order.
    pub(crate) fn request_detached<M: Message>(&self, msg: &M, opts: RequestOptions) -> bool {
        if self.shared.is_closed() {
            return false;
        }
        let generation = match opts.generation {
            Some(g) if g.0 != self.shared.generation() => return false,
            Some(g) => g.0,
            None => self.shared.generation(),
        };
        let Ok(record) = encode_request(msg) else {
            return false;
        };
        let Ok(permit) = self.shared.inflight.clone().try_acquire_owned() else {
            return false;
        };
        let timeout = opts.timeout.unwrap_or(self.shared.config.request_timeout);
        self.shared.note_domain(M::TYPE);
        let out = Outbound {
            id: self.shared.next_id(),
            ty: M::TYPE,
            record,
            deadline: Instant::now() + timeout,
            generation,
            pinned: opts.generation.is_some(),
            reply: Reply::Detached,
            permit,
        };
        self.commands.try_send(Command::Request(out)).is_ok()
    }

    async fn submit(
        &self,
        wrap: fn(Outbound) -> Command,
        ty: u16,
        record: impl Into<RecordBuf>,
        opts: RequestOptions,
        reply: Reply,
        span: &Span,
    ) -> Result<()> {
        if self.shared.is_closed() {
            return Err(Error::closed());
        }
        let generation = match opts.generation {
            Some(g) if g.0 != self.shared.generation() => return Err(Error::stale()),
            Some(g) => g.0,
            None => self.shared.generation(),
        };
        let timeout = opts.timeout.unwrap_or(self.shared.config.request_timeout);
        let deadline = Instant::now() + timeout;
        // Fast paths first: a timer is only armed when we actually wait.
        let permit = match self.shared.inflight.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::Closed) => return Err(Error::closed()),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                // Boxed, as the queue wait below: slow paths, kept out of the
                // future every request carries (and is moved around in).
                let acquire = self.shared.inflight.clone().acquire_owned();
                match Box::pin(tokio::time::timeout_at(deadline, acquire)).await {
                    Ok(Ok(p)) => p,
                    Ok(Err(_)) => return Err(Error::closed()),
                    Err(_) => {
                        return Err(Error::backpressure(
                            "the in-flight request limit stayed full for the whole request timeout",
                        ));
                    }
                }
            }
        };
        if !opts.barrier {
            self.shared.note_domain(ty);
        }
        let id = self.next_id_in(span);
        let out = Outbound {
            id,
            ty,
            record: record.into(),
            deadline,
            generation,
            pinned: opts.generation.is_some(),
            reply,
            permit,
        };
        let cmd = match self.commands.try_send(wrap(out)) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Error::closed()),
            Err(mpsc::error::TrySendError::Full(cmd)) => cmd,
        };
        match Box::pin(tokio::time::timeout_at(deadline, self.commands.send(cmd))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Error::closed()),
            Err(_) => Err(Error::backpressure(
                "the connection's command queue stayed full for the whole request timeout",
            )),
        }
    }

    // ----- registrations -----

    /// Registers (or joins) a restorable subscription.
    pub async fn register<T>(&self, reg: Registration<T>) -> Result<Subscription<T>> {
        self.check_taking_work()?;
        let (mailbox_tx, mailbox_rx) = mailbox(reg.options);
        let sink = self.shared.next_handle();
        let (tx, rx) = oneshot::channel();
        // The actor applies the request timeout to the SUBSCRIBE it sends.
        let cmd = Command::Register(RegisterCmd {
            spec: reg.spec,
            record: reg.record,
            sink,
            mailbox: mailbox_tx,
            reply: tx,
        });
        self.commands.send(cmd).await.map_err(|_| Error::closed())?;
        // Build the handle first: if this future is dropped while waiting,
        // its Drop unsubscribes.
        let sub = Subscription::new(self.clone(), sink, mailbox_rx, reg.decode);
        rx.await.map_err(|_| Error::closed())??;
        Ok(sub)
    }

    /// Installs a raw push handler; see [`PushKey`].
    pub async fn push_handler(
        &self,
        ty: u16,
        key: PushKey,
        options: SubscriptionOptions,
    ) -> Result<PushStream> {
        if self.shared.is_closed() {
            return Err(Error::closed());
        }
        let (mailbox_tx, mailbox_rx) = mailbox(options);
        let sink = self.shared.next_handle();
        let (tx, rx) = oneshot::channel();
        let cmd = Command::Push(PushCmd {
            ty,
            key,
            sink,
            mailbox: mailbox_tx,
            reply: Some(tx),
        });
        self.commands.send(cmd).await.map_err(|_| Error::closed())?;
        // Built now: if the caller gives up before the acknowledgement, its
        // Drop removes the handler.
        let stream = PushStream::new(self.clone(), sink, mailbox_rx);
        rx.await.map_err(|_| Error::closed())??;
        Ok(stream)
    }

    /// Ends every local registration of `spec`'s subscribe type, without
    /// sending UNSUBSCRIBE (the caller already told the broker).
    pub async fn end_registrations(&self, spec: &'static RegistrationSpec) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::EndRegistrations {
                subscribe_type: spec.subscribe_type,
                reply: tx,
            })
            .await
            .map_err(|_| Error::closed())?;
        rx.await.map_err(|_| Error::closed())
    }

    /// Hands an explicit unsubscribe to the actor; the receiver learns the
    /// outcome (after the broker acknowledged, when it had to be asked).
    pub(crate) async fn queue_unsubscribe(
        &self,
        sink: SubscriptionId,
    ) -> Result<oneshot::Receiver<Result<()>>> {
        let (tx, rx) = oneshot::channel();
        self.control
            .send(Control::Unsubscribe {
                sink,
                reply: Some(tx),
            })
            .await
            .map_err(|_| Error::closed())?;
        Ok(rx)
    }

    /// Best-effort, from `Drop`: never blocks, never spawns.
    pub(crate) fn unsubscribe_in_background(&self, sink: SubscriptionId) {
        let _ = self
            .control
            .try_send(Control::Unsubscribe { sink, reply: None });
    }

    pub(crate) fn drop_push_handler(&self, sink: SubscriptionId) {
        let _ = self.control.try_send(Control::DropPush { sink });
    }

    /// Test and debugging inspection of the actor's books.
    pub async fn debug_snapshot(&self) -> Result<DebugSnapshot> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Inspect(tx))
            .await
            .map_err(|_| Error::closed())?;
        rx.await.map_err(|_| Error::closed())
    }
}

/// A [`RegistrationSpec::ack`] for replies whose body carries the wire id:
/// `ack: |p| decode_ack::<kv::SubscribeOk>(p, |ok| ok.sub_id)`.
pub(crate) fn decode_ack<R: ReplyBody>(payload: Bytes, id: fn(&R) -> u64) -> Result<Option<u64>> {
    decode_body::<R>(payload).map(|r| Some(id(&r)))
}

/// A [`RegistrationSpec::ack`] for acknowledgements without an id (RPC
/// SUBSCRIBE_WORKER): status 0, or the broker's error.
pub(crate) fn ack_only(payload: Bytes) -> Result<Option<u64>> {
    decode_body::<fitz_protocol::Ack<0>>(payload).map(|_| None)
}

/// A whole record of type `ty` around an existing payload (for UNSUBSCRIBE
/// records that repeat the SUBSCRIBE pattern).
pub(crate) fn record_with_payload(ty: u16, payload: &Bytes) -> Option<Bytes> {
    let mut b = BytesMut::with_capacity(payload.len() + 5);
    fitz_protocol::record::encode_raw_record(&mut b, ty, payload).ok()?;
    Some(b.freeze())
}

/// Decodes a reply payload of a [`ReplyBody`] type into a result.
pub(crate) fn decode_body<R: ReplyBody>(payload: Bytes) -> Result<R> {
    match fitz_protocol::decode_reply::<R>(payload) {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(Error::broker(&e)),
        Err(e) => Err(Error::malformed_reply(e)),
    }
}

#[cfg(test)]
mod tests;
