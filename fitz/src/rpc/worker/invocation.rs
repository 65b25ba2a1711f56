//! One delivered request's state: its cancellation, its reply state, the
//! cleanup when the last handle of it is gone, and the task that runs its
//! handler.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use bytes::Bytes;
use fitz_protocol::rpc::{Cancel, Response, RpcId, SignalReason};
use fitz_protocol::{codes, types};
use futures_util::FutureExt;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::Handler;
use super::handler::*;
use super::request::*;
use crate::connection::{Connection, Generation, encode_record, encode_record_sized};
use crate::error::{Error, Result};

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
    pub(super) fn from_signal(reason: SignalReason) -> Self {
        match reason {
            SignalReason::Explicit => Self::CallerCancelled,
            SignalReason::CallerDeadline | SignalReason::BrokerDeadline => Self::Deadline,
            SignalReason::CallerDisconnected => Self::CallerDisconnected,
        }
    }
}

/// A request's cancellation: shared with the worker task, which fires it.
pub(super) struct Cancellation {
    /// Made when first asked for ([`Cancellation::token`]) or fired: most
    /// calls never look at it, and a token is an allocation per call.
    token: OnceLock<CancellationToken>,
    /// The first reason wins.
    pub(super) reason: OnceLock<CancelReason>,
    /// The broker cancelled the call (RPC_LIFECYCLE kind 2), whatever was
    /// noticed first: it ignores anything sent for the call from now on.
    pub(super) by_broker: AtomicBool,
}

impl Cancellation {
    pub(super) fn new() -> Self {
        Self {
            token: OnceLock::new(),
            reason: OnceLock::new(),
            by_broker: AtomicBool::new(false),
        }
    }

    /// The call's token, cancelled once the call is. (`fire` sets the
    /// reason before it makes or cancels the token, so a token made
    /// concurrently is cancelled by `fire` if not already born cancelled.)
    pub(super) fn token(&self) -> &CancellationToken {
        self.token.get_or_init(|| {
            let token = CancellationToken::new();
            if self.reason.get().is_some() {
                token.cancel();
            }
            token
        })
    }

    pub(super) fn fire(&self, reason: CancelReason) {
        let _ = self.reason.set(reason);
        self.token().cancel();
    }

    /// Marks the call cancelled by the broker. Called with the worker's
    /// `Active` map locked: the invocation's drop reads the mark under the
    /// same lock (see [`Invocation`]'s `Drop`).
    pub(super) fn mark_by_broker(&self) {
        self.by_broker.store(true, Ordering::Release);
    }

    pub(super) fn signalled(&self, reason: SignalReason) {
        self.fire(CancelReason::from_signal(reason));
    }

    pub(super) fn by_broker(&self) -> bool {
        self.by_broker.load(Ordering::Acquire)
    }
}

/// The worker's requests in progress, by the id the broker delivered.
pub(super) type Active = Mutex<HashMap<RpcId, Arc<Cancellation>>>;

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave these maps half-updated.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ----- one request -----

pub(super) struct ReplyState {
    pub(super) next_seq: u64,
    pub(super) finished: bool,
    /// The local capacity this request holds until its final chunk.
    pub(super) slot: Option<OwnedSemaphorePermit>,
}

/// Everything one delivered request needs to answer and clean up.
pub(super) struct Invocation {
    /// The id the broker delivered (the invocation UUID when it supports
    /// cancellation, else the caller's): every RESPONSE and ack echoes it.
    pub(super) id: RpcId,
    pub(super) conn: Connection,
    pub(super) generation: Generation,
    /// The broker supports cancellation: send the cleanup acknowledgement
    /// when the last handle is gone, if the broker cancelled the call.
    pub(super) cleanup_ack: bool,
    pub(super) cancellation: Arc<Cancellation>,
    pub(super) reply: Mutex<ReplyState>,
    pub(super) active: Arc<Active>,
}

impl Invocation {
    /// Sends one chunk. `if_open`: a finished response is not an error.
    pub(super) async fn send(&self, body: Bytes, end: bool, if_open: bool) -> Result<()> {
        self.send_with(body, end, if_open, true).await
    }

    /// `confirm`: wait to learn that the record was written (a handler's
    /// `Responder` reports it); without, return once it is queued.
    async fn send_with(&self, body: Bytes, end: bool, if_open: bool, confirm: bool) -> Result<()> {
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
        let build = || {
            let mut state = lock(&self.reply);
            if state.finished {
                closed = true;
                return Err(Error::invalid("the response was already finished"));
            }
            let variable = body.len();
            let record = encode_record_sized(
                &Response {
                    id: self.id,
                    sequence: state.next_seq,
                    end,
                    body,
                },
                variable,
            )?;
            state.next_seq += 1;
            if end {
                state.finished = true;
                // The broker frees its credit on this frame; so do we.
                state.slot = None;
            }
            // Held until the chunk is queued: chunks keep their order.
            Ok((record, state))
        };
        let (conn, ty, generation) = (&self.conn, types::RPC_RESPONSE, self.generation);
        let sent = if confirm {
            conn.send_committed(ty, generation, build).await
        } else {
            conn.send_committed_unconfirmed(ty, generation, build).await
        };
        match sent {
            Err(_) if closed => already(),
            other => other,
        }
    }

    /// The handler returned: its value ends the response unless it ended.
    pub(super) async fn conclude(&self, outcome: std::result::Result<Bytes, HandlerError>) {
        if self.cancellation.by_broker() {
            // The broker ignores it now; the cleanup ack is what counts.
            lock(&self.reply).finished = true;
            return;
        }
        let (body, what) = match outcome {
            Ok(body) => (body, "response"),
            Err(e) => (e.to_body(), "error"),
        };
        // Nobody acts on whether the final record was written: a session
        // that ends first takes the call with it. Not waiting spares a
        // oneshot and a wake-up, and a quick handler's task ends in the
        // poll that ran it.
        match self.send_with(body, true, true, false).await {
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
        // The cleanup acknowledgement only for a call the broker cancelled:
        // it discards one for any other call (spec §4.3), so sending it after
        // every call (as cntryl-fitz does) costs a record per call for
        // nothing. The removal and the check share the lock `on_signal`
        // takes: a signal either found the call here (and marked it, seen
        // now) or finds it gone and acknowledges it itself.
        let cancelled = {
            let mut active = lock(&self.active);
            active.remove(&self.id);
            self.cancellation.by_broker()
        };
        if self.cleanup_ack && cancelled {
            send_cleanup_ack(&self.conn, self.generation, self.id);
        }
    }
}

/// Tells the broker the cancelled call `id` is cleaned up (RPC_CANCEL kind
/// 3), which releases the worker's credit for it.
pub(super) fn send_cleanup_ack(conn: &Connection, generation: Generation, id: RpcId) {
    if let Ok(record) = encode_record(&Cancel::CleanupDone { id }) {
        let _ = conn.send_detached(types::RPC_CANCEL, generation, record);
    }
}

/// Runs one handler to its end, firing its deadline on time. A panic ends
/// the call with `6010` instead of leaving it to the broker's timeout.
pub(super) async fn run(handler: Handler, request: RpcRequest, inv: Arc<Invocation>) {
    let deadline = request.deadline;
    // The handler is called inside `catch_unwind` too: a panic before its
    // future exists is caught like one while it runs (the worker runs the
    // first step of this inline, on its own task).
    let mut fut = std::pin::pin!(
        std::panic::AssertUnwindSafe(async move { handler(request).await })
            .catch_unwind()
            .map(|caught| {
                caught.unwrap_or_else(|_| {
                    tracing::error!("an RPC handler panicked");
                    Err(HandlerError::failed("the worker's handler panicked"))
                })
            })
    );
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
