//! The worker side: the worker task, [`RpcRequest`], [`Responder`],
//! [`HandlerError`], [`RpcWorker`].
//!
//! One task per worker reads its deliveries (a pattern push handler) and the
//! broker's cancellation signals, and spawns one task per request running the
//! user's handler. A request's state lives in an `Invocation` shared by the
//! handler's [`RpcRequest`], its [`Responder`]s and the runner; when the last
//! of them is gone the call is cleaned up: a final error chunk if nobody
//! answered, then the cleanup acknowledgement that releases the broker's
//! credit (capability bit 3).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fitz_protocol::route::{self, Scheme};
use fitz_protocol::rpc::{self, Cancel, Lifecycle, Response, RpcId, SignalReason, SubscribeWorker};
use fitz_protocol::{Message, Str, WireError, codes, types};
use futures_core::Stream;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{session_capabilities, supports_cancellation};
use crate::connection::{
    Connection, Generation, Push, PushKey, PushStream, Registration, RegistrationSpec,
    Subscription, ack_only, encode_record,
};
use crate::error::{Error, Result};
use crate::options::{Overflow, SubscriptionOptions};

/// The answer a worker gives a delivery it has no room for.
const OVERLOADED: &str = "Local RPC worker is overloaded";

/// The answer a stopping worker gives a delivery.
const SHUTTING_DOWN: &str = "the RPC worker is shutting down";

/// Longest error message put on the wire (the record limit is 64 KiB).
const MAX_MESSAGE: usize = 4096;

static WORKER: RegistrationSpec = RegistrationSpec {
    name: "rpc worker",
    subscribe_type: types::RPC_SUBSCRIBE_WORKER,
    notify_type: None,
    ack: ack_only,
    // UNSUBSCRIBE_WORKER names the pattern of the original registration.
    unsubscribe: |_, payload| {
        let registration = SubscribeWorker::decode(payload.clone()).ok()?;
        encode_record(&rpc::UnsubscribeWorker::new(registration.pattern)).ok()
    },
};

// ----- handler plumbing -----

type HandlerFuture = Pin<Box<dyn Future<Output = std::result::Result<Bytes, HandlerError>> + Send>>;
pub(super) type Handler = Arc<dyn Fn(RpcRequest) -> HandlerFuture + Send + Sync>;

/// Type-erases a user handler.
pub(super) fn erase<H, Fut, T, E>(handler: H) -> Handler
where
    H: Fn(RpcRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<T, E>> + Send + 'static,
    T: IntoBody,
    E: Into<HandlerError>,
{
    Arc::new(move |request| {
        let fut = handler(request);
        Box::pin(async move { fut.await.map(IntoBody::into_body).map_err(Into::into) })
    })
}

/// A handler's success value: the body of the call's final chunk.
///
/// `()` is an empty final chunk (for handlers that streamed their answer or
/// have nothing to say).
pub trait IntoBody: Send {
    /// The bytes.
    fn into_body(self) -> Bytes;
}

impl IntoBody for () {
    fn into_body(self) -> Bytes {
        Bytes::new()
    }
}

impl IntoBody for Bytes {
    fn into_body(self) -> Bytes {
        self
    }
}

impl IntoBody for BytesMut {
    fn into_body(self) -> Bytes {
        self.freeze()
    }
}

impl IntoBody for Vec<u8> {
    fn into_body(self) -> Bytes {
        Bytes::from(self)
    }
}

impl IntoBody for String {
    fn into_body(self) -> Bytes {
        Bytes::from(self)
    }
}

impl IntoBody for &'static str {
    fn into_body(self) -> Bytes {
        Bytes::from_static(self.as_bytes())
    }
}

impl IntoBody for &'static [u8] {
    fn into_body(self) -> Bytes {
        Bytes::from_static(self)
    }
}

/// A handler's failure: the code and message the caller receives as a
/// [`Broker`](crate::ErrorKind::Broker) error.
///
/// The code must be an RPC code (6001–6013) — anything else would reach the
/// caller as ordinary data — so [`HandlerError::new`] turns other codes into
/// `6010` (backend failure: outcome unknown, not retryable). Any
/// `std::error::Error` converts with `?`: a [`crate::Error`] carrying an RPC
/// code (a failed downstream call) keeps that code, everything else becomes
/// `6010` with the error's text (a downstream timeout becomes `6001`).
///
/// ```
/// use fitz::rpc::HandlerError;
/// let busy = HandlerError::overloaded("try again in a second");
/// assert_eq!(busy.code(), fitz::codes::RPC_BACKPRESSURE);
/// let parse: HandlerError = "x".parse::<u32>().unwrap_err().into();
/// assert_eq!(parse.code(), fitz::codes::RPC_UNAVAILABLE);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct HandlerError {
    code: u32,
    message: String,
}

impl HandlerError {
    /// A failure with `code` (6001–6013; others become 6010).
    pub fn new(code: u32, message: impl Into<String>) -> Self {
        let code = if codes::is_rpc(code) {
            code
        } else {
            codes::RPC_UNAVAILABLE
        };
        let mut message = message.into();
        if message.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Self { code, message }
    }

    /// `6010`: the handler failed; whether it did anything is unknown.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(codes::RPC_UNAVAILABLE, message)
    }

    /// `6003`: the worker is too busy; the caller may retry (nothing was done).
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(codes::RPC_BACKPRESSURE, message)
    }

    /// `6009`: the caller may not do this.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(codes::RPC_UNAUTHORIZED, message)
    }

    /// `6001`: the work did not finish in time.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(codes::RPC_TIMEOUT, message)
    }

    /// The code the caller sees.
    pub fn code(&self) -> u32 {
        self.code
    }

    /// The message the caller sees.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The terminal body: `[1][u32 code][str message]`.
    fn to_body(&self) -> Bytes {
        error_body(self.code, &self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(error: E) -> Self {
        let any: &dyn std::any::Any = &error;
        if let Some(e) = any.downcast_ref::<Error>() {
            if let Some(code) = e.code().filter(|c| codes::is_rpc(*c)) {
                return Self::new(code, e.message());
            }
            // A downstream call that ran out of (inherited) budget.
            if e.kind() == crate::ErrorKind::Timeout {
                return Self::timeout(e.message());
            }
        }
        Self::failed(error.to_string())
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("code", &self.code)
            .field("message", &self.message)
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code,
            codes::name(self.code),
            self.message
        )
    }
}

fn error_body(code: u32, message: &str) -> Bytes {
    let mut body = BytesMut::with_capacity(9 + message.len());
    WireError::coded(code, Str::from(message)).encode(&mut body);
    body.freeze()
}

// ----- cancellation -----

/// Why a request's cancellation signal fired ([`RpcRequest::cancel_reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CancelReason {
    /// The caller cancelled the call (explicitly, by dropping it, or because
    /// its own parent was cancelled).
    CallerCancelled,
    /// The call's time ran out: the caller's deadline (the broker said so),
    /// the broker's own deadline, or the budget counted here (receipt time +
    /// the remaining budget the caller sent) — whichever was noticed first;
    /// they describe the same moment.
    Deadline,
    /// The caller's connection ended.
    CallerDisconnected,
    /// The session that delivered the call ended; the broker dropped the
    /// call, and nothing sent for it can arrive any more.
    ConnectionLost,
    /// The worker was dropped without a graceful shutdown.
    Shutdown,
}

impl CancelReason {
    fn from_signal(reason: SignalReason) -> Self {
        match reason {
            SignalReason::Explicit => Self::CallerCancelled,
            SignalReason::CallerDeadline | SignalReason::BrokerDeadline => Self::Deadline,
            SignalReason::CallerDisconnected => Self::CallerDisconnected,
        }
    }
}

/// A request's cancellation: shared with the worker task, which fires it.
struct Cancellation {
    token: CancellationToken,
    /// The first reason wins.
    reason: OnceLock<CancelReason>,
    /// The broker cancelled the call (RPC_LIFECYCLE kind 2), whatever was
    /// noticed first: it ignores anything sent for the call from now on.
    by_broker: AtomicBool,
}

impl Cancellation {
    fn new() -> Self {
        Self {
            token: CancellationToken::new(),
            reason: OnceLock::new(),
            by_broker: AtomicBool::new(false),
        }
    }

    fn fire(&self, reason: CancelReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    fn signalled(&self, reason: SignalReason) {
        self.by_broker.store(true, Ordering::Release);
        self.fire(CancelReason::from_signal(reason));
    }

    fn by_broker(&self) -> bool {
        self.by_broker.load(Ordering::Acquire)
    }
}

/// The worker's requests in progress, by the id the broker delivered.
type Active = Mutex<HashMap<RpcId, Arc<Cancellation>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave these maps half-updated.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ----- one request -----

struct ReplyState {
    next_seq: u64,
    finished: bool,
    /// The local capacity this request holds until its final chunk.
    slot: Option<OwnedSemaphorePermit>,
}

/// Everything one delivered request needs to answer and clean up.
struct Invocation {
    /// The id the broker delivered (the invocation UUID when it supports
    /// cancellation, else the caller's): every RESPONSE and ack echoes it.
    id: RpcId,
    conn: Connection,
    generation: Generation,
    /// Send the cleanup acknowledgement when the last handle is gone.
    cleanup_ack: bool,
    cancellation: Arc<Cancellation>,
    reply: Mutex<ReplyState>,
    active: Arc<Active>,
}

impl Invocation {
    /// Sends one chunk. `if_open`: a finished response is not an error.
    async fn send(&self, body: Bytes, end: bool, if_open: bool) -> Result<()> {
        let already = || {
            if if_open {
                Ok(())
            } else {
                Err(Error::invalid("the response was already finished"))
            }
        };
        if lock(&self.reply).finished {
            return already();
        }
        let mut closed = false;
        let sent = self
            .conn
            .send_committed(types::RPC_RESPONSE, self.generation, || {
                let mut state = lock(&self.reply);
                if state.finished {
                    closed = true;
                    return Err(Error::invalid("the response was already finished"));
                }
                let record = encode_record(&Response {
                    id: self.id,
                    sequence: state.next_seq,
                    end,
                    body,
                })?;
                state.next_seq += 1;
                if end {
                    state.finished = true;
                    // The broker frees its credit on this frame; so do we.
                    state.slot = None;
                }
                // Held until the chunk is queued: chunks keep their order.
                Ok((record, state))
            })
            .await;
        match sent {
            Err(_) if closed => already(),
            other => other,
        }
    }

    /// The handler returned: its value ends the response unless it ended.
    async fn conclude(&self, outcome: std::result::Result<Bytes, HandlerError>) {
        if self.cancellation.by_broker() {
            // The broker ignores it now; the cleanup ack is what counts.
            lock(&self.reply).finished = true;
            return;
        }
        let (body, what) = match outcome {
            Ok(body) => (body, "response"),
            Err(e) => (e.to_body(), "error"),
        };
        match self.send(body, true, true).await {
            Ok(()) => {}
            // Too large for one record: tell the caller why, not just that
            // the worker dropped the call.
            Err(e) if e.kind() == crate::ErrorKind::InvalidArgument => {
                let error = HandlerError::failed(format!(
                    "the worker's final {what} cannot be sent ({}): stream large answers",
                    e.message()
                ));
                let _ = self.send(error.to_body(), true, true).await;
            }
            Err(e) => {
                tracing::debug!(id = %self.id, error = %e, "the handler's final {what} was not sent");
            }
        }
    }
}

impl Drop for Invocation {
    fn drop(&mut self) {
        let reason = self.cancellation.reason.get().copied();
        let state = self.reply.get_mut().unwrap_or_else(PoisonError::into_inner);
        // Nobody answered: end the call rather than let it hang until the
        // broker's timeout. (Not when the broker cancelled it: it would
        // ignore the frame.)
        if !state.finished && !self.cancellation.by_broker() {
            let (code, message) = match reason {
                Some(CancelReason::Deadline) => (
                    codes::RPC_TIMEOUT,
                    "the worker's deadline for the call passed",
                ),
                Some(CancelReason::Shutdown) => (
                    codes::RPC_WORKER_NOT_FOUND,
                    "the worker stopped before finishing the call",
                ),
                _ => (
                    codes::RPC_UNAVAILABLE,
                    "the worker dropped the call without a final response",
                ),
            };
            let last = Response {
                id: self.id,
                sequence: state.next_seq,
                end: true,
                body: error_body(code, message),
            };
            if let Ok(record) = encode_record(&last) {
                let _ = self
                    .conn
                    .send_detached(types::RPC_RESPONSE, self.generation, record);
            }
        }
        // Sent after every request, cancelled or not: a cancellation may be
        // on its way, and the broker holds the credit of a cancelled call
        // until this arrives (or closes the session after its grace period).
        if self.cleanup_ack
            && let Ok(record) = encode_record(&Cancel::CleanupDone { id: self.id })
        {
            let _ = self
                .conn
                .send_detached(types::RPC_CANCEL, self.generation, record);
        }
        lock(&self.active).remove(&self.id);
    }
}

/// One request delivered to a worker.
///
/// Answer it once: [`RpcRequest::respond`] (one final chunk),
/// [`RpcRequest::stream`] (chunks, then [`Responder::finish`]), or the
/// handler's return value. When the request and every [`Responder`] of it
/// are dropped without a final chunk, the worker ends the call itself with
/// error `6010` — `6001` once its deadline passed, `6002` when the worker was
/// dropped — unless the broker already cancelled it. Dropping them is also
/// what tells a broker that supports cancellation that the request's cleanup
/// is done, which releases its credit: keep the request while work for it
/// still runs.
pub struct RpcRequest {
    route: Str,
    body: Bytes,
    deadline: Option<Instant>,
    inv: Arc<Invocation>,
}

impl RpcRequest {
    /// The concrete route the caller called.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// The request body (shares the received frame's memory).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The body parsed as JSON. A body that is not JSON of type `T` is an
    /// [`ErrorKind::Decode`](crate::ErrorKind::Decode) error; returned from a
    /// handler with `?` it answers the caller with `6010` (see
    /// [`HandlerError`]).
    #[cfg(feature = "serde")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        let what = format_args!("the request body for {}", &*self.route);
        crate::json::decode(&self.body, what)
    }

    /// When the call's budget runs out here: receipt time plus the budget
    /// the caller sent (`None` when it sent none, or without capability
    /// bit 3). The cancellation signal fires then.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The budget left, if there is a deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// True once the call was cancelled (see [`RpcRequest::cancel_reason`]).
    pub fn is_cancelled(&self) -> bool {
        self.inv.cancellation.token.is_cancelled()
    }

    /// Resolves when the call is cancelled: by the broker (the caller
    /// cancelled, its deadline passed, it disconnected), by the local
    /// deadline, because the session ended, or because the worker was
    /// dropped. Cancellation is a request to stop; the handler decides.
    pub async fn cancelled(&self) {
        self.inv.cancellation.token.cancelled().await;
    }

    /// Why the call was cancelled; `None` while it is not.
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        self.inv.cancellation.reason.get().copied()
    }

    /// A token cancelled with the call, for APIs that take one. Cancelling
    /// it does not cancel the call.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.inv.cancellation.token.child_token()
    }

    pub(super) fn token(&self) -> CancellationToken {
        self.inv.cancellation.token.clone()
    }

    /// Answers with one final chunk. Fails with
    /// [`InvalidArgument`](crate::ErrorKind::InvalidArgument) when the
    /// response was already finished or `body` exceeds the record limit
    /// (about 64 KiB: stream larger answers), and with
    /// [`Stale`](crate::ErrorKind::Stale) when the session that delivered the
    /// request has ended.
    pub async fn respond(&self, body: impl Into<Bytes>) -> Result<()> {
        self.inv.send(body.into(), true, false).await
    }

    /// Ends the call with an error the caller receives (see
    /// [`HandlerError`]).
    pub async fn fail(&self, error: impl Into<HandlerError>) -> Result<()> {
        self.inv.send(error.into().to_body(), true, false).await
    }

    /// A handle for answering in several chunks. It may outlive the request
    /// (move it into another task); the call's cleanup waits for both.
    pub fn stream(&self) -> Responder {
        Responder {
            inv: self.inv.clone(),
        }
    }
}

impl fmt::Debug for RpcRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcRequest")
            .field("route", &&*self.route)
            .field("body", &self.body)
            .field("deadline", &self.deadline)
            .field("cancelled", &self.cancel_reason())
            .finish()
    }
}

/// Sends a response in chunks ([`RpcRequest::stream`]).
///
/// ```no_run
/// # async fn demo(req: fitz::rpc::RpcRequest) -> fitz::Result<()> {
/// let out = req.stream();
/// for page in ["a", "b", "c"] {
///     out.send(page).await?;
/// }
/// out.finish().await
/// # }
/// ```
pub struct Responder {
    inv: Arc<Invocation>,
}

impl Responder {
    /// Sends one chunk (not the last). Chunks arrive in the order sent, also
    /// from several responders of one request. Each is limited by the
    /// record size (about 64 KiB).
    pub async fn send(&self, chunk: impl Into<Bytes>) -> Result<()> {
        self.inv.send(chunk.into(), false, false).await
    }

    /// Sends `chunk` as the final one.
    pub async fn send_last(self, chunk: impl Into<Bytes>) -> Result<()> {
        self.inv.send(chunk.into(), true, false).await
    }

    /// Ends the response with an empty final chunk (nothing when it already
    /// ended).
    pub async fn finish(self) -> Result<()> {
        self.inv.send(Bytes::new(), true, true).await
    }

    /// Ends the response with an error the caller receives.
    pub async fn fail(self, error: impl Into<HandlerError>) -> Result<()> {
        self.inv.send(error.into().to_body(), true, false).await
    }

    /// True once the call was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.inv.cancellation.token.is_cancelled()
    }

    /// Resolves when the call is cancelled.
    pub async fn cancelled(&self) {
        self.inv.cancellation.token.cancelled().await;
    }
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// Runs one handler to its end, firing its deadline on time. A panic ends
/// the call with `6010` instead of leaving it to the broker's timeout.
async fn run(handler: Handler, request: RpcRequest, inv: Arc<Invocation>) {
    let deadline = request.deadline;
    let mut fut = std::panic::AssertUnwindSafe(handler(request))
        .catch_unwind()
        .map(|caught| {
            caught.unwrap_or_else(|_| {
                tracing::error!("an RPC handler panicked");
                Err(HandlerError::failed("the worker's handler panicked"))
            })
        });
    let outcome = match deadline {
        None => fut.await,
        Some(at) => {
            tokio::select! {
                biased;
                out = &mut fut => out,
                () = tokio::time::sleep_until(at) => {
                    inv.cancellation.fire(CancelReason::Deadline);
                    fut.await
                }
            }
        }
    };
    inv.conclude(outcome).await;
}

// ----- the worker -----

/// A running worker ([`crate::Rpc::serve`]).
///
/// It keeps serving across reconnects (the registration is restored with the
/// same bytes). [`RpcWorker::shutdown`] stops it gracefully; dropping it
/// stops it at once: the registration is removed in the background, running
/// handlers see [`CancelReason::Shutdown`] and are left to finish.
///
/// Dispatch among the workers of one client: the broker charges one
/// registration per request but does not say which, so a request whose route
/// matches several workers' patterns goes to exactly one of them — the most
/// specific pattern (most literal segments, then fewest `**`, then fewest
/// `*`; the older worker on a tie) — never to all of them. Serving a pattern
/// this client already serves fails with
/// [`InvalidArgument`](crate::ErrorKind::InvalidArgument).
pub struct RpcWorker {
    pattern: String,
    max_concurrent: u32,
    cancellation: bool,
    slots: Arc<Semaphore>,
    stop: CancellationToken,
    abort: CancellationToken,
    done: watch::Receiver<Option<Result<()>>>,
}

impl RpcWorker {
    /// The pattern served.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The concurrency limit.
    pub fn max_concurrent(&self) -> u32 {
        self.max_concurrent
    }

    /// True when the registration told the broker this worker supports
    /// cancellation and budgets (the broker advertised capability bit 3).
    pub fn supports_cancellation(&self) -> bool {
        self.cancellation
    }

    /// Requests taken and not yet answered (at most `max_concurrent`).
    pub fn in_flight(&self) -> usize {
        let free = self.slots.available_permits();
        usize::try_from(self.max_concurrent).map_or(0, |max| max.saturating_sub(free))
    }

    /// False once the worker stopped: shut down, or ended by an error (its
    /// registration could not be restored after a reconnect, or the client
    /// closed; [`RpcWorker::shutdown`] returns that error).
    pub fn is_running(&self) -> bool {
        self.done.borrow().is_none()
    }

    /// Stops gracefully: takes no new request (one delivered meanwhile is
    /// answered with the retryable `6003`, it never runs), waits for every
    /// running handler, then unregisters (UNSUBSCRIBE_WORKER) and waits for
    /// the broker. In that order because the broker fails the calls still
    /// running on a registration it removes. Returns the unregistration's
    /// error, or the error that had already ended the worker.
    pub async fn shutdown(self) -> Result<()> {
        self.stop.cancel();
        let mut done = self.done.clone();
        let result = match done.wait_for(Option::is_some).await {
            Ok(result) => (*result).clone(),
            Err(_) => Some(Err(Error::closed())),
        };
        result.unwrap_or(Ok(()))
    }
}

impl Drop for RpcWorker {
    fn drop(&mut self) {
        // Harmless after a completed shutdown: the task is gone.
        self.abort.cancel();
    }
}

impl fmt::Debug for RpcWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcWorker")
            .field("pattern", &self.pattern)
            .field("max_concurrent", &self.max_concurrent)
            .field("in_flight", &self.in_flight())
            .field("supports_cancellation", &self.cancellation)
            .field("running", &self.is_running())
            .finish()
    }
}

/// Validates, listens, registers, spawns the worker task.
pub(super) async fn start(
    conn: &Connection,
    pattern: &str,
    max_concurrent: u32,
    handler: Handler,
) -> Result<RpcWorker> {
    route::validate_pattern(pattern, Scheme::Rpc).map_err(Error::route)?;
    if !(1..=rpc::MAX_CONCURRENT).contains(&max_concurrent) {
        return Err(Error::invalid(format!(
            "max_concurrent must be 1..={}, not {max_concurrent}",
            rpc::MAX_CONCURRENT
        )));
    }
    let cancellation = supports_cancellation(session_capabilities(conn, None).await);
    let slots = usize::try_from(max_concurrent).map_err(|_| Error::invalid("max_concurrent"))?;

    // Deliveries first, so none can arrive before anyone listens. The
    // generation they belong to must be the one current when the handler
    // was installed: retry in the rare case a session ended meanwhile.
    let delivery_options = SubscriptionOptions {
        buffer: 2 * slots + 32,
        overflow: Overflow::DropOldest,
    };
    let (deliveries, generation) = loop {
        let before = conn.generation();
        let handler = conn
            .push_handler(
                types::RPC_REQUEST,
                PushKey::Pattern(pattern.to_owned()),
                delivery_options,
            )
            .await?;
        if conn.generation() == before {
            break (handler, before);
        }
    };
    // Kind-2 signals name invocation ids nobody else claims.
    let lifecycle = if cancellation {
        let options = SubscriptionOptions {
            buffer: slots + 64,
            overflow: Overflow::DropOldest,
        };
        Some(
            conn.push_handler(types::RPC_LIFECYCLE, PushKey::Any, options)
                .await?,
        )
    } else {
        None
    };
    let subscribe = SubscribeWorker {
        pattern: Str::from(pattern),
        max_concurrent,
        extension_flags: cancellation.then_some(rpc::FLAG_SUPPORTS_CANCELLATION),
    };
    let registration = Registration::new(
        &WORKER,
        &subscribe,
        |_| Ok(()),
        SubscriptionOptions {
            buffer: 1,
            overflow: Overflow::DropOldest,
        },
    )?;
    let registration = conn.register(registration).await?;

    let slots = Arc::new(Semaphore::new(slots));
    let stop = CancellationToken::new();
    let abort = CancellationToken::new();
    let (done_tx, done) = watch::channel(None);
    let worker = Worker {
        conn: conn.clone(),
        handler,
        slots: slots.clone(),
        cleanup_ack: cancellation,
        generation,
        active: Arc::new(Mutex::new(HashMap::new())),
        tasks: JoinSet::new(),
        dropped: 0,
    };
    tokio::spawn(worker.run(
        Streams {
            deliveries,
            lifecycle,
            registration: Some(registration),
        },
        stop.clone(),
        abort.clone(),
        done_tx,
    ));
    Ok(RpcWorker {
        pattern: pattern.to_owned(),
        max_concurrent,
        cancellation,
        slots,
        stop,
        abort,
        done,
    })
}

struct Streams {
    deliveries: PushStream,
    lifecycle: Option<PushStream>,
    /// `None` once unregistering.
    registration: Option<Subscription<()>>,
}

/// The worker task's state.
struct Worker {
    conn: Connection,
    handler: Handler,
    slots: Arc<Semaphore>,
    cleanup_ack: bool,
    /// The session whose deliveries are being read: starts as the one the
    /// delivery handler was installed in, then set by each boundary marker.
    generation: Generation,
    active: Arc<Active>,
    tasks: JoinSet<()>,
    /// Deliveries the full buffer discarded, as last reported.
    dropped: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Stopping: running handlers finish, new deliveries are refused.
    Draining,
    /// Handlers done: UNSUBSCRIBE_WORKER sent, waiting for the broker.
    Unregistering,
}

/// Deliveries handled per pass of the worker loop at most.
const DELIVERY_BATCH: usize = 64;

type Unsubscribing = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

impl Worker {
    async fn run(
        mut self,
        mut streams: Streams,
        stop: CancellationToken,
        abort: CancellationToken,
        done: watch::Sender<Option<Result<()>>>,
    ) {
        let mut phase = Phase::Serving;
        let mut unsubscribing: Option<Unsubscribing> = None;
        // Pinned once: a fresh `cancelled()` per iteration locks the token's
        // node and registers a waiter on every delivery.
        let mut aborted = std::pin::pin!(abort.clone().cancelled_owned());
        let mut stopped = std::pin::pin!(stop.cancelled_owned());
        let result = loop {
            // Unregister only once the handlers are done: the broker fails
            // the calls still running on a registration it removes.
            if phase == Phase::Draining && self.tasks.is_empty() {
                phase = Phase::Unregistering;
                match streams.registration.take() {
                    Some(registration) => {
                        unsubscribing = Some(Box::pin(registration.unsubscribe()));
                    }
                    None => break Ok(()),
                }
            }
            tokio::select! {
                biased;
                () = &mut aborted => break Ok(()),
                // Polled no more once it fired: the phase moves on.
                () = &mut stopped, if phase == Phase::Serving => phase = Phase::Draining,
                unsubscribed = poll_opt(&mut unsubscribing) => break unsubscribed,
                // Reaps finished handlers (their panics are caught in `run`).
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    // And every other finished one, in the same pass.
                    while self.tasks.try_join_next().is_some() {}
                }
                item = streams.deliveries.next() => {
                    // Deliveries already buffered are taken in the same pass:
                    // a pass polls every branch above, which costs more than
                    // a delivery. (The next pass registers the waker again.)
                    let mut item = Some(item);
                    let mut taken = 0;
                    let ended = loop {
                        match item {
                            Some(Some(Ok(Push::Record(payload)))) => {
                                self.note_dropped(streams.deliveries.dropped());
                                self.on_delivery(payload, phase == Phase::Serving);
                            }
                            Some(Some(Ok(Push::SessionEnded { next }))) => {
                                // What follows belongs to the next session,
                                // and everything running to a dead one.
                                self.generation = next;
                                self.finish_all(CancelReason::ConnectionLost);
                            }
                            // The client closed.
                            Some(Some(Err(e))) => break Some(e),
                            Some(None) => break Some(Error::closed()),
                            None => break None,
                        }
                        taken += 1;
                        if taken == DELIVERY_BATCH {
                            break None;
                        }
                        item = streams.deliveries.next().now_or_never();
                    };
                    if let Some(e) = ended {
                        break Err(e);
                    }
                }
                Some(signal) = next_opt(&mut streams.lifecycle) => {
                    if let Ok(Push::Record(payload)) = signal {
                        self.on_signal(payload);
                    }
                }
                ended = next_opt(&mut streams.registration) => {
                    // It never yields an item: this is its end. The
                    // registration could not be restored, or the client
                    // closed.
                    let error = match ended {
                        Some(Err(e)) => e,
                        _ => Error::closed(),
                    };
                    tracing::warn!(error = %error, "RPC worker stopped");
                    break Err(error);
                }
            }
        };
        if abort.is_cancelled() || result.is_err() {
            self.finish_all(if abort.is_cancelled() {
                CancelReason::Shutdown
            } else {
                CancelReason::ConnectionLost
            });
        }
        // Handlers still running finish on their own.
        self.tasks.detach_all();
        drop(streams);
        let _ = done.send(Some(result));
    }

    /// Fires every running request's signal.
    fn finish_all(&self, reason: CancelReason) {
        let active: Vec<_> = lock(&self.active).values().cloned().collect();
        for c in active {
            c.fire(reason);
        }
    }

    /// Reports deliveries the full buffer discarded (their callers wait for
    /// the broker's timeout).
    fn note_dropped(&mut self, dropped: u64) {
        if dropped > self.dropped {
            tracing::warn!(
                dropped = dropped - self.dropped,
                "RPC deliveries were discarded: the worker fell behind"
            );
            self.dropped = dropped;
            // A session boundary may have been among them: follow the
            // connection (a later boundary still sets it exactly).
            self.generation = self.conn.generation();
        }
    }

    fn on_delivery(&mut self, payload: Bytes, serve: bool) {
        if self.conn.generation() != self.generation {
            tracing::trace!("ignoring an RPC delivery of an ended session");
            return;
        }
        let request = match rpc::Request::decode(payload.clone()) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "malformed RPC delivery");
                if let Some(id) = payload.first_chunk::<16>() {
                    self.reject(
                        RpcId(*id),
                        codes::RPC_UNAVAILABLE,
                        "RPC request parse failed",
                    );
                }
                return;
            }
        };
        if !serve {
            // Never run: the caller may safely retry (another worker).
            self.reject(request.id, codes::RPC_BACKPRESSURE, SHUTTING_DOWN);
            return;
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            self.reject(request.id, codes::RPC_BACKPRESSURE, OVERLOADED);
            return;
        };
        let cancellation = Arc::new(Cancellation::new());
        let deadline = request.budget_ms.map(|ms| {
            if ms == 0 {
                cancellation.fire(CancelReason::Deadline);
            }
            Instant::now() + Duration::from_millis(u64::from(ms))
        });
        lock(&self.active).insert(request.id, cancellation.clone());
        let inv = Arc::new(Invocation {
            id: request.id,
            conn: self.conn.clone(),
            generation: self.generation,
            cleanup_ack: self.cleanup_ack,
            cancellation,
            reply: Mutex::new(ReplyState {
                next_seq: 0,
                finished: false,
                slot: Some(slot),
            }),
            active: self.active.clone(),
        });
        let request = RpcRequest {
            route: request.route,
            body: request.body,
            deadline,
            inv: inv.clone(),
        };
        self.tasks.spawn(run(self.handler.clone(), request, inv));
    }

    /// Answers a delivery it will not run with a terminal error (and the
    /// cleanup ack, in case the call was cancelled meanwhile).
    fn reject(&self, id: RpcId, code: u32, message: &str) {
        let last = Response {
            id,
            sequence: 0,
            end: true,
            body: error_body(code, message),
        };
        if let Ok(record) = encode_record(&last) {
            let _ = self
                .conn
                .send_detached(types::RPC_RESPONSE, self.generation, record);
        }
        if self.cleanup_ack
            && let Ok(record) = encode_record(&Cancel::CleanupDone { id })
        {
            let _ = self
                .conn
                .send_detached(types::RPC_CANCEL, self.generation, record);
        }
    }

    /// A 305: kind 2 cancels one of this worker's requests.
    fn on_signal(&self, payload: Bytes) {
        if let Ok(Lifecycle::WorkerSignal { id, reason }) = Lifecycle::decode(payload) {
            let found = lock(&self.active).get(&id).cloned();
            if let Some(c) = found {
                c.signalled(reason);
            }
        }
    }
}

/// Polls an optional future; pending forever when absent.
async fn poll_opt<T>(fut: &mut Option<Pin<Box<dyn Future<Output = T> + Send>>>) -> T {
    match fut {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// The next item of an optional stream; pending forever when absent.
async fn next_opt<S: Stream + Unpin>(stream: &mut Option<S>) -> Option<S::Item> {
    match stream {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}
