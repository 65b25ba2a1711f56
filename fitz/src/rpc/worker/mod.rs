//! The worker side: the worker task, [`RpcRequest`], [`Responder`],
//! [`HandlerError`], [`RpcWorker`].
//!
//! One task per worker reads its deliveries (a pattern push handler) and the
//! broker's cancellation signals, and spawns one task per request running the
//! user's handler. A request's state lives in an `Invocation` shared by the
//! handler's [`RpcRequest`], its [`Responder`]s and the runner; when the last
//! of them is gone the call is cleaned up: a final error chunk if nobody
//! answered, then, if the broker cancelled the call, the cleanup
//! acknowledgement that releases the broker's credit (capability bit 3).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use fitz_protocol::route::{self, Scheme};
use fitz_protocol::rpc::{self, SubscribeWorker};
use fitz_protocol::{Message, Str, types};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{session_capabilities, supports_cancellation};
use crate::connection::{
    Connection, PushKey, Registration, RegistrationSpec, ack_only, encode_record,
};
use crate::error::{Error, Result};
use crate::options::{Overflow, SubscriptionOptions};

mod handler;
mod invocation;
mod request;
mod task;

pub use handler::{HandlerError, IntoBody};
pub use invocation::CancelReason;
pub use request::{Responder, RpcRequest};
use task::{Streams, Worker};

/// The answer a worker gives a delivery it has no room for.
pub(super) const OVERLOADED: &str = "Local RPC worker is overloaded";

/// The answer a stopping worker gives a delivery.
pub(super) const SHUTTING_DOWN: &str = "the RPC worker is shutting down";

/// Longest error message put on the wire (the record limit is 64 KiB).
pub(super) const MAX_MESSAGE: usize = 4096;

pub(super) static WORKER: RegistrationSpec = RegistrationSpec {
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

pub(super) type HandlerFuture =
    Pin<Box<dyn Future<Output = std::result::Result<Bytes, HandlerError>> + Send>>;
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
///
/// Cleanup acknowledgements (with a broker that supports cancellation): the
/// worker sends RPC_CANCEL kind 3 only for a call the broker cancelled
/// (RPC_LIFECYCLE kind 2), once the request and its [`Responder`]s are
/// dropped, or at once when the signal names a call no longer running here
/// (it was answered or refused before the signal arrived). The broker
/// discards an acknowledgement for any other call, so none is sent after an
/// ordinary call. This deliberately differs from cntryl-fitz, whose worker
/// sends one after every invocation.
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
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: the registration is removed on the first poll; dropping the
    /// future only stops waiting for the broker's acknowledgement and the running
    /// handlers.
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
    // Cancelled by `Client::drain` too.
    let stop = conn.worker_stop_token();
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
    conn.spawn_worker(worker.run(
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
