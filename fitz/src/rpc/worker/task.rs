//! The worker task: reads deliveries and cancellation signals, runs each
//! request's handler (its first step inline, the rest, if it waits, on a
//! task of its own), follows session boundaries, stops gracefully.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use fitz_protocol::rpc::{self, Lifecycle, Response, RpcId};
use fitz_protocol::{Message, codes, types};
use futures_core::Stream;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::handler::*;
use super::invocation::*;
use super::request::*;
use super::{Handler, OVERLOADED, SHUTTING_DOWN};
use crate::connection::{Connection, Generation, Push, PushStream, Subscription, encode_record};
use crate::error::{Error, Result};

pub(super) struct Streams {
    pub(super) deliveries: PushStream,
    pub(super) lifecycle: Option<PushStream>,
    /// `None` once unregistering.
    pub(super) registration: Option<Subscription<()>>,
}

/// The worker task's state.
pub(super) struct Worker {
    pub(super) conn: Connection,
    pub(super) handler: Handler,
    pub(super) slots: Arc<Semaphore>,
    pub(super) cleanup_ack: bool,
    /// The session whose deliveries are being read: starts as the one the
    /// delivery handler was installed in, then set by each boundary marker.
    pub(super) generation: Generation,
    pub(super) active: Arc<Active>,
    pub(super) tasks: JoinSet<()>,
    /// Deliveries the full buffer discarded, as last reported.
    pub(super) dropped: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Serving,
    /// Stopping: running handlers finish, new deliveries are refused.
    Draining,
    /// Handlers done: UNSUBSCRIBE_WORKER sent, waiting for the broker.
    Unregistering,
}

/// Deliveries handled per pass of the worker loop at most.
pub(super) const DELIVERY_BATCH: usize = 64;

pub(super) type Unsubscribing = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

impl Worker {
    pub(super) async fn run(
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
    pub(super) fn finish_all(&self, reason: CancelReason) {
        let active: Vec<_> = lock(&self.active).values().cloned().collect();
        for c in active {
            c.fire(reason);
        }
    }

    /// Reports deliveries the full buffer discarded (their callers wait for
    /// the broker's timeout).
    pub(super) fn note_dropped(&mut self, dropped: u64) {
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

    pub(super) fn on_delivery(&mut self, payload: Bytes, serve: bool) {
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
        let span = crate::telemetry::delivery_span("rpc", &request.route);
        let mut handling = Box::pin(run(self.handler.clone(), request, inv).instrument(span));
        // The first step runs here: a handler that answers without waiting
        // is done in it, with no task to allocate, schedule and reap. One
        // that waits moves to its own task, which polls it again at once
        // (so the no-op waker of this poll is never relied on; the future
        // is boxed first, so what it registered stays where it was).
        let mut cx = Context::from_waker(Waker::noop());
        let first = std::panic::catch_unwind(AssertUnwindSafe(|| handling.as_mut().poll(&mut cx)));
        match first {
            Ok(Poll::Ready(())) => {}
            Ok(Poll::Pending) => {
                self.tasks.spawn(handling);
            }
            // `run` catches the handler's panics; this is a panic in
            // dropping it. The invocation's drop answers the call.
            Err(_) => tracing::error!("an RPC handler panicked"),
        }
    }

    /// Answers a delivery it will not run with a terminal error. (No cleanup
    /// ack: should the broker have cancelled the call meanwhile, its signal
    /// finds the id unknown and `on_signal` acknowledges it.)
    pub(super) fn reject(&self, id: RpcId, code: u32, message: &str) {
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
    }

    /// A 305: kind 2 cancels one of this worker's requests. For an id no
    /// longer running here (answered, rejected or discarded before the
    /// signal arrived: the broker cancelled it first and ignored the
    /// answer) the cleanup ack goes out at once; a running one sends it when
    /// its last handle is dropped.
    ///
    /// A signal never overtakes its delivery: both arrive on the one
    /// session in order, and the loop takes every buffered delivery before
    /// it looks at a signal (the branches are polled in order).
    pub(super) fn on_signal(&self, payload: Bytes) {
        if let Ok(Lifecycle::WorkerSignal { id, reason }) = Lifecycle::decode(payload) {
            let found = {
                let active = lock(&self.active);
                let found = active.get(&id).cloned();
                if let Some(c) = &found {
                    c.mark_by_broker();
                }
                found
            };
            match found {
                Some(c) => c.signalled(reason),
                None if self.cleanup_ack => send_cleanup_ack(&self.conn, self.generation, id),
                None => {}
            }
        }
    }
}

/// Polls an optional future; pending forever when absent.
pub(super) async fn poll_opt<T>(fut: &mut Option<Pin<Box<dyn Future<Output = T> + Send>>>) -> T {
    match fut {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// The next item of an optional stream; pending forever when absent.
pub(super) async fn next_opt<S: Stream + Unpin>(stream: &mut Option<S>) -> Option<S::Item> {
    match stream {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}
