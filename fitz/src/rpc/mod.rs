//! RPC: calls with streamed responses, workers, cancellation (types 300–305).
//!
//! A **caller** sends a request to a concrete route (`rpc://billing/invoices/create`,
//! any depth) and reads the answer as a stream of chunks ([`RpcCall`]); the
//! broker hands the request to one **worker** whose pattern matches the route
//! ([`Rpc::serve`]), which answers with one chunk or many.
//!
//! ```no_run
//! # async fn demo(client: fitz::Client) -> fitz::Result<()> {
//! use futures_util::StreamExt;
//! use fitz::rpc::{HandlerError, RpcRequest};
//!
//! // A worker: the handler's Ok value is the response, an Err a typed failure.
//! let worker = client
//!     .rpc()
//!     .serve("rpc://shop/cart/*", 16, |req: RpcRequest| async move {
//!         let mut reply = b"echo: ".to_vec();
//!         reply.extend_from_slice(req.body());
//!         Ok::<_, HandlerError>(reply)
//!     })
//!     .await?;
//!
//! // A caller: the whole answer at once …
//! let answer = client.rpc().request("rpc://shop/cart/add", "sku-42").await?;
//! assert_eq!(&answer[..], b"echo: sku-42");
//! // … or chunk by chunk.
//! let mut call = client.rpc().call("rpc://shop/cart/add", "sku-43").await?;
//! while let Some(chunk) = call.next().await {
//!     println!("{:?}", chunk?);
//! }
//! worker.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! # Deadlines and cancellation
//!
//! Brokers that advertise [`Capabilities::RPC_CANCELLATION`] (bit 3) carry a
//! call's remaining budget to the worker and let either side stop a call:
//!
//! * a call with a timeout or deadline ([`CallOptions`]) tells the broker its
//!   remaining budget; when the deadline passes locally the call yields a
//!   [`Timeout`](crate::ErrorKind::Timeout) error and the broker is told
//!   (RPC_CANCEL, reason "caller deadline");
//! * [`RpcCall::cancel`] cancels explicitly and reports what the broker did
//!   ([`CancelOutcome`]); dropping an unfinished call cancels it in the
//!   background; at most one cancellation is ever sent per call;
//! * the worker's [`RpcRequest`] carries a deadline (receipt time + budget)
//!   and a cancellation signal ([`RpcRequest::cancelled`]) fired by the
//!   broker or the local deadline;
//! * [`Rpc::call_from_request`] makes a downstream call that inherits the
//!   remaining budget and is cancelled with its parent, so a chain A → B → C
//!   stops as a whole.
//!
//! Without the capability nothing of this goes on the wire (the bytes are
//! those of a legacy client): local deadlines still end the call locally, and
//! [`RpcCall::cancel`] answers [`CancelOutcome::Unsupported`].
//!
//! # Workers
//!
//! Each request runs in its own task; at most `max_concurrent` are taken and
//! unanswered at once (a request counts until its final chunk). The broker
//! respects that credit; a delivery beyond it anyway is answered at once with
//! `6003` ("Local RPC worker is overloaded") and never runs. A request whose
//! route matches the patterns of several workers of one client goes to the
//! most specific one only (see [`RpcWorker`]). A handler's `Err` becomes
//! a terminal error with the code of its [`HandlerError`]; a request dropped
//! without a final chunk is ended by the worker (`6010`, or `6001` past its
//! deadline), so a caller never waits for the broker's timeout because of a
//! forgotten answer or a panic.
//!
//! # Failures
//!
//! A broker-side failure arrives as a typed [`Broker`](crate::ErrorKind::Broker)
//! error with its 6001–6013 code (`6004` no worker, `6003` overloaded, `6009`
//! unauthorized, …); [`Error::is_retryable`](crate::Error::is_retryable) and
//! [`Error::maybe_applied`](crate::Error::maybe_applied) follow the code
//! registry. A connection lost while a call is outstanding fails it with a
//! [`Connection`](crate::ErrorKind::Connection) error whose `maybe_applied()`
//! is true once the request was written. Routes are validated locally: a call
//! route must be concrete, a worker pattern may use whole-segment `*`/`**`.

mod call;
#[cfg(feature = "serde")]
mod json;
mod worker;

use std::fmt;
use std::future::Future;

use bytes::Bytes;
use fitz_protocol::Capabilities;
use tokio::time::Instant;

use crate::connection::Connection;
use crate::error::Result;
use crate::events::State;

pub use call::{CallOptions, CancelOutcome, RpcCall};
pub use worker::{CancelReason, HandlerError, IntoBody, Responder, RpcRequest, RpcWorker};

/// The RPC domain of a [`crate::Client`] (see [`crate::Client::rpc`]).
#[derive(Clone)]
pub struct Rpc {
    conn: Connection,
}

impl fmt::Debug for Rpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Rpc")
    }
}

impl Rpc {
    pub(crate) fn new(conn: Connection) -> Self {
        Self { conn }
    }

    /// Calls `route` (concrete, `rpc://…`, any depth) and returns the
    /// response stream once the request is queued for the broker (a write
    /// that fails after that ends the stream with the error). No
    /// local deadline: the broker's own timeout (30 s by default, code
    /// `6001`) bounds the call.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped after the REQUEST was written, the call is
    /// cancelled in the background (RPC CANCEL when the broker supports it), but a
    /// worker may already have run it. Its responses are routed by the call's
    /// UUID, so they never reach another call, and its response handler is
    /// removed. Dropped before it was written, nothing is sent.
    pub async fn call(&self, route: &str, body: impl Into<Bytes>) -> Result<RpcCall> {
        call::start(&self.conn, route, body.into(), CallOptions::default()).await
    }

    /// [`Rpc::call`] with a timeout or deadline and buffering.
    ///
    /// ```no_run
    /// # async fn demo(rpc: fitz::Rpc) -> fitz::Result<()> {
    /// use std::time::Duration;
    /// use fitz::rpc::CallOptions;
    /// let call = rpc
    ///     .call_with("rpc://shop/cart/add", "sku-42", CallOptions::timeout(Duration::from_secs(2)))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped after the REQUEST was written, the call is
    /// cancelled in the background (RPC CANCEL when the broker supports it), but a
    /// worker may already have run it. Its responses are routed by the call's
    /// UUID, so they never reach another call, and its response handler is
    /// removed. Dropped before it was written, nothing is sent.
    pub async fn call_with(
        &self,
        route: &str,
        body: impl Into<Bytes>,
        options: CallOptions,
    ) -> Result<RpcCall> {
        call::start(&self.conn, route, body.into(), options).await
    }

    /// Calls `route` and collects the whole response: the single chunk as
    /// is (no copy), several chunks concatenated.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped after the REQUEST was written, the call is
    /// cancelled in the background (RPC CANCEL when the broker supports it), but a
    /// worker may already have run it. Its responses are routed by the call's
    /// UUID, so they never reach another call, and its response handler is
    /// removed. Dropped before it was written, nothing is sent.
    pub async fn request(&self, route: &str, body: impl Into<Bytes>) -> Result<Bytes> {
        self.request_with(route, body, CallOptions::default()).await
    }

    /// [`Rpc::request`] with options.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped after the REQUEST was written, the call is
    /// cancelled in the background (RPC CANCEL when the broker supports it), but a
    /// worker may already have run it. Its responses are routed by the call's
    /// UUID, so they never reach another call, and its response handler is
    /// removed. Dropped before it was written, nothing is sent.
    pub async fn request_with(
        &self,
        route: &str,
        body: impl Into<Bytes>,
        options: CallOptions,
    ) -> Result<Bytes> {
        self.call_with(route, body, options).await?.collect().await
    }

    /// A downstream call made while serving `parent`: it inherits the
    /// parent's remaining budget and is cancelled when the parent is (by the
    /// broker, its deadline, or a lost session). Fails with
    /// [`Cancelled`](crate::ErrorKind::Cancelled) at once, sending nothing,
    /// when the parent is already cancelled. See [`CallOptions::child_of`]
    /// to add a tighter timeout or another buffer size.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped after the REQUEST was written, the call is
    /// cancelled in the background (RPC CANCEL when the broker supports it), but a
    /// worker may already have run it. Its responses are routed by the call's
    /// UUID, so they never reach another call, and its response handler is
    /// removed. Dropped before it was written, nothing is sent.
    pub async fn call_from_request(
        &self,
        parent: &RpcRequest,
        route: &str,
        body: impl Into<Bytes>,
    ) -> Result<RpcCall> {
        self.call_with(route, body, CallOptions::child_of(parent))
            .await
    }

    /// Starts a worker for `pattern` (`rpc://…`, any depth, whole-segment
    /// `*`/`**`) running at most `max_concurrent` (1..=1024) requests at
    /// once, each in its own task.
    ///
    /// The handler receives each [`RpcRequest`]. What it returns becomes the
    /// call's final chunk unless it already finished the response itself:
    /// `Ok(body)` any [`IntoBody`] (`()` is an empty final chunk), `Err(e)` a
    /// terminal error (see [`HandlerError`] for the code a caller sees). It
    /// may also answer through [`RpcRequest::respond`] or stream chunks with
    /// [`RpcRequest::stream`].
    ///
    /// The registration survives reconnects (the same handle keeps serving);
    /// requests delivered by a session that has since ended are ignored and
    /// their handlers' cancellation signals fire
    /// ([`CancelReason::ConnectionLost`]). A request beyond `max_concurrent`
    /// unanswered ones is answered at once with the overload error `6003`.
    /// Two workers of one client whose patterns overlap do not both receive a
    /// request: the most specific pattern serves it (see [`RpcWorker`]).
    ///
    /// A handler's first step (up to its first wait) runs on the worker's
    /// own task, so one that answers without waiting costs no task of its
    /// own; one that waits continues on a task of its own. A handler that
    /// computes for long before its first `.await` therefore delays the
    /// deliveries behind it: move such work to
    /// [`spawn_blocking`](tokio::task::spawn_blocking) or a task.
    ///
    /// Call it on a connected client: whether the broker supports
    /// cancellation is read from the session (this waits up to the request
    /// timeout for a reconnect in progress).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe. Dropped before it resolves, the worker registration is
    /// removed (or never installed) and no handler runs.
    pub async fn serve<H, Fut, T, E>(
        &self,
        pattern: &str,
        max_concurrent: u32,
        handler: H,
    ) -> Result<RpcWorker>
    where
        H: Fn(RpcRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<T, E>> + Send + 'static,
        T: IntoBody,
        E: Into<HandlerError>,
    {
        worker::start(&self.conn, pattern, max_concurrent, worker::erase(handler)).await
    }
}

/// The capabilities of the session work will go out on: the current one, or
/// the next one when a reconnect is under way (waiting at most until `until`
/// or the request timeout). `None` when no session comes.
async fn session_capabilities(conn: &Connection, until: Option<Instant>) -> Option<Capabilities> {
    if let Some(caps) = conn.capabilities() {
        return Some(caps);
    }
    let wait = Instant::now() + conn.shared().config.request_timeout;
    let until = until.map_or(wait, |u| u.min(wait));
    let mut state = conn.state();
    let settled = state.wait_for(|s| {
        matches!(
            s,
            State::Authenticated | State::Disconnected | State::Closed
        )
    });
    let _ = tokio::time::timeout_at(until, settled).await;
    conn.capabilities()
}

fn supports_cancellation(caps: Option<Capabilities>) -> bool {
    caps.is_some_and(|c| c.contains(Capabilities::RPC_CANCELLATION))
}
