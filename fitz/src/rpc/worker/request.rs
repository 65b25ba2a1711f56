//! The handler's side of a request: [`RpcRequest`] and its [`Responder`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fitz_protocol::Str;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::handler::*;
use super::invocation::*;
use crate::error::Result;

/// One request delivered to a worker.
///
/// Answer it once: [`RpcRequest::respond`] (one final chunk),
/// [`RpcRequest::stream`] (chunks, then [`Responder::finish`]), or the
/// handler's return value. When the request and every [`Responder`] of it
/// are dropped without a final chunk, the worker ends the call itself with
/// error `6010` — `6001` once its deadline passed, `6002` when the worker was
/// dropped — unless the broker already cancelled it. For a call the broker
/// cancelled, dropping them is also what tells it that the request's cleanup
/// is done, which releases its credit: keep the request while work for it
/// still runs.
pub struct RpcRequest {
    pub(super) route: Str,
    pub(super) body: Bytes,
    pub(super) deadline: Option<Instant>,
    pub(super) inv: Arc<Invocation>,
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
        self.inv.cancellation.token().is_cancelled()
    }

    /// Resolves when the call is cancelled: by the broker (the caller
    /// cancelled, its deadline passed, it disconnected), by the local
    /// deadline, because the session ended, or because the worker was
    /// dropped. Cancellation is a request to stop; the handler decides.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only waits for a signal.
    pub async fn cancelled(&self) {
        self.inv.cancellation.token().cancelled().await;
    }

    /// Why the call was cancelled; `None` while it is not.
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        self.inv.cancellation.reason.get().copied()
    }

    /// A token cancelled with the call, for APIs that take one. Cancelling
    /// it does not cancel the call.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.inv.cancellation.token().child_token()
    }

    pub(crate) fn token(&self) -> CancellationToken {
        self.inv.cancellation.token().clone()
    }

    /// Answers with one final chunk. Fails with
    /// [`InvalidArgument`](crate::ErrorKind::InvalidArgument) when the
    /// response was already finished or `body` exceeds the record limit
    /// (about 64 KiB: stream larger answers), and with
    /// [`Stale`](crate::ErrorKind::Stale) when the session that delivered the
    /// request has ended.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe in the sense that a chunk is never half-sent: dropped before
    /// it was queued, nothing was sent and the request can still be answered;
    /// once queued it is written even if the future is dropped.
    pub async fn respond(&self, body: impl Into<Bytes>) -> Result<()> {
        self.inv.send(body.into(), true, false).await
    }

    /// Ends the call with an error the caller receives (see
    /// [`HandlerError`]).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe in the sense that a chunk is never half-sent: dropped before
    /// it was queued, nothing was sent and the request can still be answered;
    /// once queued it is written even if the future is dropped.
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
    pub(super) inv: Arc<Invocation>,
}

impl Responder {
    /// Sends one chunk (not the last). Chunks arrive in the order sent, also
    /// from several responders of one request. Each is limited by the
    /// record size (about 64 KiB).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe in the sense that a chunk is never half-sent: dropped before
    /// it was queued, nothing was sent and the request can still be answered;
    /// once queued it is written even if the future is dropped.
    pub async fn send(&self, chunk: impl Into<Bytes>) -> Result<()> {
        self.inv.send(chunk.into(), false, false).await
    }

    /// Sends `chunk` as the final one.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe in the sense that a chunk is never half-sent: dropped before
    /// it was queued, nothing was sent and the request can still be answered;
    /// once queued it is written even if the future is dropped.
    pub async fn send_last(self, chunk: impl Into<Bytes>) -> Result<()> {
        self.inv.send(chunk.into(), true, false).await
    }

    /// Ends the response with an empty final chunk (nothing when it already
    /// ended).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe in the sense that a chunk is never half-sent: dropped before
    /// it was queued, nothing was sent and the request can still be answered;
    /// once queued it is written even if the future is dropped.
    pub async fn finish(self) -> Result<()> {
        self.inv.send(Bytes::new(), true, true).await
    }

    /// Ends the response with an error the caller receives.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe in the sense that a chunk is never half-sent: dropped before
    /// it was queued, nothing was sent and the request can still be answered;
    /// once queued it is written even if the future is dropped.
    pub async fn fail(self, error: impl Into<HandlerError>) -> Result<()> {
        self.inv.send(error.into().to_body(), true, false).await
    }

    /// True once the call was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.inv.cancellation.token().is_cancelled()
    }

    /// Resolves when the call is cancelled.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only waits for a signal.
    pub async fn cancelled(&self) {
        self.inv.cancellation.token().cancelled().await;
    }
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}
