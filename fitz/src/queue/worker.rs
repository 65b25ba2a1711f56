//! The managed worker: reserve when there is work, run a bounded number of
//! handlers, keep their leases alive, complete on success.
//!
//! One task per worker runs [`run`], an event loop over five sources: a stop
//! request, finished handlers, the one RESERVE it keeps in flight at most, the
//! availability watch, and a timer. Handlers run as tasks of a `JoinSet`
//! owned by that loop; each handler task also renews its own lease.

use std::convert::Infallible;
use std::fmt;
use std::future::{Future, pending, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    MAX_BATCH, MAX_WAIT, Queue, QueueAvailability, QueueMessage, QueueSubscription, Reservation,
    ReserveOptions, lease_seconds, validate_pattern,
};
use crate::error::{Error, ErrorKind, Result};
use crate::events::State;
use crate::options::{Overflow, SubscriptionOptions};

/// The availability watch only wakes the worker up, so losing old hints is
/// harmless: a small buffer that keeps the newest.
const HINTS: SubscriptionOptions = SubscriptionOptions {
    buffer: 16,
    overflow: Overflow::DropOldest,
};

/// COMPLETE after a handler succeeded: attempts in all, on confirmed
/// retryable rejections only (4005: nothing was applied).
const COMPLETE_ATTEMPTS: u32 = 3;
const COMPLETE_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Pauses after a failed RESERVE (other than a lost connection).
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Options of [`Queue::worker_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerOptions {
    /// Handlers running at once; at least 1. Default 1.
    pub concurrency: usize,
    /// Lease of each reserved message (whole seconds, at least one). While a
    /// handler runs the worker renews it every third of this. Default 30 s.
    pub lease: Duration,
    /// How long one RESERVE waits at the broker for work when the queues are
    /// empty, `1 s ..=` [`MAX_WAIT`]. Default 30 s.
    pub poll_wait: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            concurrency: 1,
            lease: Duration::from_secs(30),
            poll_wait: MAX_WAIT,
        }
    }
}

/// Validated options.
#[derive(Debug, Clone, Copy)]
struct Plan {
    concurrency: usize,
    lease: Duration,
    extend_every: Duration,
    poll_wait: Duration,
}

impl WorkerOptions {
    fn plan(self) -> Result<Plan> {
        if self.concurrency == 0 {
            return Err(Error::invalid("a worker needs a concurrency of at least 1"));
        }
        let lease = Duration::from_secs(lease_seconds(self.lease)?);
        if self.poll_wait < Duration::from_secs(1) || self.poll_wait > MAX_WAIT {
            return Err(Error::invalid(format!(
                "poll_wait must be between 1 s and {} s, got {:?}",
                MAX_WAIT.as_secs(),
                self.poll_wait
            )));
        }
        Ok(Plan {
            concurrency: self.concurrency,
            lease,
            extend_every: lease / 3,
            poll_wait: self.poll_wait,
        })
    }
}

/// What a worker has done so far (see [`QueueWorker::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Handlers running now.
    pub running: usize,
    /// Messages reserved and handed to a handler.
    pub reserved: u64,
    /// Messages whose handler succeeded and that were completed.
    pub completed: u64,
    /// Messages whose handler failed or panicked; each is delivered again
    /// once its lease ends.
    pub failed: u64,
    /// Messages whose handler succeeded but that could not be completed (the
    /// connection was lost meanwhile, or the lease was lost); each is
    /// delivered again.
    pub abandoned: u64,
    /// Lease renewals sent for running handlers and acknowledged.
    pub extended: u64,
}

/// Controls a running worker (see [`Queue::worker`]).
///
/// [`shutdown`](QueueWorker::shutdown) stops it and waits for the running
/// handlers to finish (and their messages to be completed). Dropping the
/// handle stops it too, without waiting: running handlers still finish in the
/// background.
pub struct QueueWorker {
    pattern: Arc<str>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
    stats: watch::Receiver<WorkerStats>,
}

impl QueueWorker {
    /// The pattern the worker reserves from.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// A snapshot of the worker's counters.
    pub fn stats(&self) -> WorkerStats {
        *self.stats.borrow()
    }

    /// The counters as a `watch`, to wait for progress without polling:
    ///
    /// ```no_run
    /// # async fn demo(worker: fitz::queue::QueueWorker) {
    /// let mut stats = worker.watch_stats();
    /// let _ = stats.wait_for(|s| s.completed >= 10).await;
    /// # }
    /// ```
    pub fn watch_stats(&self) -> watch::Receiver<WorkerStats> {
        self.stats.clone()
    }

    /// True once the worker stopped: after a shutdown, or because the client
    /// was closed.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops reserving, waits for the running handlers to finish and their
    /// messages to be completed, removes the availability watch, and returns
    /// the final counters.
    ///
    /// A long-poll RESERVE still parked at the broker cannot be withdrawn and
    /// is not waited for: should the broker still hand it messages, a
    /// background task shortens their lease to one second, so they are
    /// delivered again almost at once.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: the worker is told to stop on the first poll; dropping the
    /// future only stops waiting for the running handlers.
    pub async fn shutdown(mut self) -> WorkerStats {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            // A panic inside the loop itself has nothing left to clean up.
            let _ = task.await;
        }
        self.stats()
    }
}

impl Drop for QueueWorker {
    fn drop(&mut self) {
        // Non-blocking: the loop notices, drains its handlers and ends.
        self.cancel.cancel();
    }
}

impl fmt::Debug for QueueWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueWorker")
            .field("pattern", &&*self.pattern)
            .field("stats", &self.stats())
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl Queue {
    /// Starts a managed worker on `pattern` (a concrete queue route or a
    /// wildcard pattern) running up to `concurrency` handlers at once, with
    /// the default lease (30 s) and long-poll wait (30 s).
    ///
    /// For each message the worker calls `handler` and, while it runs, renews
    /// the message's lease in the background. When the handler returns `Ok`
    /// the message is completed; when it returns `Err` (or panics) the error
    /// is logged and the message is left to expire, to be delivered again
    /// later. Handlers must tolerate a message delivered more than once.
    ///
    /// The worker reserves only when it has a free slot, with one long-poll
    /// RESERVE in flight at most and an availability watch to wake it, so an
    /// idle worker costs one request per poll wait. It survives reconnects:
    /// the watch is restored, and reservations of the lost session are
    /// abandoned (their handlers run to the end, but their messages are
    /// delivered again). It stops when the [`QueueWorker`] is shut down or
    /// dropped, or the client is closed.
    ///
    /// Fails at once when the pattern is invalid or the availability watch
    /// cannot be set up (e.g. not connected, or not authorized). Failures
    /// later on (a refused RESERVE, say) are logged with `tracing` and
    /// retried after a pause growing from 100 ms to 10 s.
    ///
    /// Resources: one task for the worker, one per running handler (at most
    /// `concurrency`), one RESERVE in flight at most, and a watch buffering
    /// at most 16 availability hints, dropping the oldest when full (a hint
    /// only wakes the worker; losing one loses nothing).
    ///
    /// ```no_run
    /// # async fn demo(client: fitz::Client) -> fitz::Result<()> {
    /// let worker = client
    ///     .queue()
    ///     .worker("queue://prod/billing/*", 4, |msg| async move {
    ///         println!("invoice {} from {}", msg.id(), msg.route());
    ///         Ok::<_, std::io::Error>(())
    ///     })
    ///     .await?;
    /// // … later
    /// let stats = worker.shutdown().await;
    /// println!("{} completed", stats.completed);
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe. Dropped before it resolves, its availability subscription is
    /// removed and no worker task was started.
    pub async fn worker<F, Fut, E>(
        &self,
        pattern: &str,
        concurrency: usize,
        handler: F,
    ) -> Result<QueueWorker>
    where
        F: Fn(QueueMessage) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), E>> + Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        let options = WorkerOptions {
            concurrency,
            ..WorkerOptions::default()
        };
        self.worker_with(pattern, options, handler).await
    }

    /// [`Queue::worker`] with every option.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe. Dropped before it resolves, its availability subscription is
    /// removed and no worker task was started.
    pub async fn worker_with<F, Fut, E>(
        &self,
        pattern: &str,
        options: WorkerOptions,
        handler: F,
    ) -> Result<QueueWorker>
    where
        F: Fn(QueueMessage) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), E>> + Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        validate_pattern(pattern)?;
        let plan = options.plan()?;
        let hints = self.subscribe_with(pattern, HINTS).await?;
        let (stats_tx, stats) = watch::channel(WorkerStats::default());
        let pattern: Arc<str> = Arc::from(pattern);
        // Cancelled by `Client::drain` too.
        let cancel = self.conn.worker_stop_token();
        let shared = Arc::new(Shared {
            queue: self.clone(),
            pattern: pattern.clone(),
            plan,
            handler,
            stats: stats_tx,
        });
        let task = self
            .conn
            .spawn_worker(run(shared, Some(hints), cancel.clone()));
        Ok(QueueWorker {
            pattern,
            cancel,
            task: Some(task),
            stats,
        })
    }

    /// A worker whose handler takes the message body parsed as JSON `T`.
    ///
    /// A body that does not parse counts as a failed handler: it is logged
    /// and the message is delivered again after its lease (with a broker that
    /// limits attempts it ends in the dead-letter state).
    ///
    /// ```no_run
    /// # async fn demo(client: fitz::Client) -> fitz::Result<()> {
    /// #[derive(serde::Deserialize)]
    /// struct Invoice { number: u64 }
    ///
    /// let worker = client
    ///     .queue()
    ///     .worker_json("queue://prod/billing/invoices", 2, |invoice: Invoice| async move {
    ///         println!("invoice #{}", invoice.number);
    ///         Ok::<_, std::io::Error>(())
    ///     })
    ///     .await?;
    /// # drop(worker);
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe. Dropped before it resolves, its availability subscription is
    /// removed and no worker task was started.
    #[cfg(feature = "serde")]
    pub async fn worker_json<T, F, Fut, E>(
        &self,
        pattern: &str,
        concurrency: usize,
        handler: F,
    ) -> Result<QueueWorker>
    where
        T: serde::de::DeserializeOwned + Send + 'static,
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), E>> + Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.worker(pattern, concurrency, move |msg: QueueMessage| {
            let handler = handler.clone();
            async move {
                let value = msg.json::<T>().map_err(JsonJobError::Body)?;
                handler(value).await.map_err(JsonJobError::Handler)
            }
        })
        .await
    }
}

/// Why a typed handler's message failed.
#[cfg(feature = "serde")]
enum JsonJobError<E> {
    Body(Error),
    Handler(E),
}

#[cfg(feature = "serde")]
impl<E: fmt::Display> fmt::Display for JsonJobError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Body(e) => e.fmt(f),
            Self::Handler(e) => e.fmt(f),
        }
    }
}

/// What the loop and its handler tasks share.
struct Shared<F> {
    queue: Queue,
    pattern: Arc<str>,
    plan: Plan,
    handler: F,
    stats: watch::Sender<WorkerStats>,
}

/// When the loop may send the next RESERVE (given a free slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Now.
    Open,
    /// The last RESERVE found nothing: on the next availability hint, or at
    /// this instant (one poll wait after it was sent) as a fallback for hints
    /// the broker dropped or a broker that does not hold RESERVEs open.
    Idle(Instant),
    /// A RESERVE failed: at this instant; hints do not shorten the pause.
    Backoff(Instant),
    /// The connection is down: once the client is authenticated again.
    AwaitSession,
}

impl Gate {
    fn deadline(self) -> Option<Instant> {
        match self {
            Gate::Idle(at) | Gate::Backoff(at) => Some(at),
            Gate::Open | Gate::AwaitSession => None,
        }
    }
}

type Reserving = Pin<Box<dyn Future<Output = Result<Vec<Reservation>>> + Send>>;

async fn run<F, Fut, E>(
    shared: Arc<Shared<F>>,
    mut hints: Option<QueueSubscription>,
    cancel: CancellationToken,
) where
    F: Fn(QueueMessage) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<(), E>> + Send + 'static,
    E: fmt::Display + Send + 'static,
{
    let mut jobs: JoinSet<()> = JoinSet::new();
    let mut reserving: Option<(Instant, Reserving)> = None;
    // A hint that arrived while a RESERVE was in flight: if that RESERVE comes
    // back empty, reserve again at once instead of idling.
    let mut hinted = false;
    let mut gate = Gate::Open;
    let mut backoff = BACKOFF_FIRST;
    let mut session = shared.queue.conn.state();
    loop {
        let free = shared.plan.concurrency.saturating_sub(jobs.len());
        if reserving.is_none() && free > 0 && gate == Gate::Open {
            reserving = Some((Instant::now(), reserve(&shared, free)));
            hinted = false;
        }
        let deadline = gate.deadline();
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            Some(joined) = jobs.join_next() => note_joined(&shared, joined),
            (sent, result) = in_flight(&mut reserving) => {
                reserving = None;
                match result {
                    Ok(batch) if batch.is_empty() => {
                        backoff = BACKOFF_FIRST;
                        gate = if hinted { Gate::Open } else { Gate::Idle(sent + shared.plan.poll_wait) };
                    }
                    Ok(batch) => {
                        backoff = BACKOFF_FIRST;
                        gate = Gate::Open;
                        let n = batch.len();
                        shared.stats.send_modify(|s| {
                            s.running += n;
                            s.reserved += n as u64;
                        });
                        for reservation in batch {
                            let span = crate::telemetry::delivery_span("queue", reservation.route());
                            span.record("messaging.message.id", reservation.id().0);
                            jobs.spawn(handle(shared.clone(), reservation).instrument(span));
                        }
                    }
                    Err(e) => match e.kind() {
                        ErrorKind::Closed => break,
                        ErrorKind::Connection => gate = Gate::AwaitSession,
                        _ => {
                            tracing::warn!(pattern = %shared.pattern, error = %e, pause = ?backoff, "queue worker: RESERVE failed");
                            gate = Gate::Backoff(Instant::now() + backoff);
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                        }
                    },
                }
            }
            hint = next_hint(&mut hints) => match hint {
                Some(Ok(_)) => {
                    hinted = true;
                    if matches!(gate, Gate::Idle(_)) {
                        gate = Gate::Open;
                    }
                }
                Some(Err(e)) if e.kind() == ErrorKind::Closed => break,
                ended => {
                    // A restore the broker refused, say. The fallback timer
                    // of `Gate::Idle` keeps the worker going without hints.
                    let error = ended.and_then(Result::err).map(|e| e.to_string());
                    tracing::warn!(pattern = %shared.pattern, ?error, "queue worker: availability watch ended; polling every poll_wait");
                    hints = None;
                }
            },
            () = sleep_until(deadline), if deadline.is_some() => gate = Gate::Open,
            ready = session_ready(&mut session), if gate == Gate::AwaitSession => {
                if !ready {
                    break;
                }
                gate = Gate::Open;
            }
        }
    }
    // Stopping. A parked RESERVE cannot be withdrawn: whatever it still
    // brings is handed back in the background (not waited for, so shutdown
    // is not held up by a long poll).
    if let Some((_, parked)) = reserving.take() {
        tokio::spawn(give_back(parked));
    }
    while let Some(joined) = jobs.join_next().await {
        note_joined(&shared, joined);
    }
    if let Some(hints) = hints {
        // Best effort: a failure here (client closing) removes it anyway.
        let _ = hints.unsubscribe().await;
    }
}

/// The shortest lease the protocol allows: what messages reserved for a
/// stopped worker are cut down to, so they are delivered again almost at
/// once instead of a whole lease later.
const GIVE_BACK_LEASE: Duration = Duration::from_secs(1);

/// Waits for a RESERVE the worker no longer wants and shortens the lease of
/// whatever it reserved. Best effort: ends when the RESERVE does (at most a
/// poll wait plus the request timeout, at once when the client closes).
async fn give_back(parked: Reserving) {
    let Ok(batch) = parked.await else {
        return;
    };
    for reservation in batch {
        if let Err(e) = reservation.extend(GIVE_BACK_LEASE).await {
            tracing::debug!(id = %reservation.id(), error = %e, "could not hand a message back; it returns when its lease ends");
        }
    }
}

/// One RESERVE for up to `free` messages, as an owned future.
fn reserve<F>(shared: &Shared<F>, free: usize) -> Reserving {
    let queue = shared.queue.clone();
    let pattern = shared.pattern.clone();
    let options = ReserveOptions {
        lease: shared.plan.lease,
        batch: u32::try_from(free).unwrap_or(MAX_BATCH).min(MAX_BATCH),
        wait: shared.plan.poll_wait,
    };
    Box::pin(async move { queue.reserve(&pattern, options).await })
}

/// The in-flight RESERVE's outcome and when it was sent; never resolves when
/// there is none.
async fn in_flight(
    reserving: &mut Option<(Instant, Reserving)>,
) -> (Instant, Result<Vec<Reservation>>) {
    match reserving {
        Some((sent, fut)) => (*sent, fut.await),
        None => pending().await,
    }
}

/// The next availability hint; never resolves without a watch.
async fn next_hint(hints: &mut Option<QueueSubscription>) -> Option<Result<QueueAvailability>> {
    match hints {
        Some(sub) => poll_fn(|cx| Pin::new(&mut *sub).poll_next(cx)).await,
        None => pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => pending().await,
    }
}

/// Waits until the client is authenticated (true) or closed (false).
async fn session_ready(session: &mut watch::Receiver<State>) -> bool {
    match session
        .wait_for(|s| matches!(s, State::Authenticated | State::Closed))
        .await
    {
        // Copied out at once: the guard is a read lock on the watch.
        Ok(state) => *state == State::Authenticated,
        Err(_) => false,
    }
}

fn note_joined<F>(shared: &Shared<F>, joined: std::result::Result<(), JoinError>) {
    if let Err(e) = joined
        && e.is_panic()
    {
        // `handle` never panics itself: the handler did. Its reservation was
        // dropped with the task, so the message is delivered again.
        shared.stats.send_modify(|s| s.failed += 1);
        tracing::warn!(pattern = %shared.pattern, "queue handler panicked; the message will be delivered again after its lease");
    }
}

/// Decrements `running` however the handler task ends (panics included).
struct Running<'a>(&'a watch::Sender<WorkerStats>);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0
            .send_modify(|s| s.running = s.running.saturating_sub(1));
    }
}

/// One message: run the handler while renewing the lease, then complete it
/// or leave it to expire.
async fn handle<F, Fut, E>(shared: Arc<Shared<F>>, reservation: Reservation)
where
    F: Fn(QueueMessage) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<(), E>> + Send + 'static,
    E: fmt::Display + Send + 'static,
{
    let _running = Running(&shared.stats);
    let work = (shared.handler)(reservation.message().clone());
    let outcome = {
        let renew = keep_extended(&reservation, &shared);
        tokio::pin!(work, renew);
        tokio::select! {
            outcome = &mut work => outcome,
            never = &mut renew => match never {},
        }
    };
    match outcome {
        Ok(()) => complete(&shared, reservation).await,
        Err(e) => {
            shared.stats.send_modify(|s| s.failed += 1);
            tracing::warn!(
                route = reservation.route(),
                id = %reservation.id(),
                error = %e,
                "queue handler failed; the message will be delivered again after its lease"
            );
        }
    }
}

/// Renews the lease every third of it until renewing can no longer succeed;
/// never returns.
async fn keep_extended<F>(reservation: &Reservation, shared: &Shared<F>) -> Infallible {
    loop {
        tokio::time::sleep(shared.plan.extend_every).await;
        match reservation.extend(shared.plan.lease).await {
            Ok(()) => shared.stats.send_modify(|s| s.extended += 1),
            // Timeouts, backpressure, 4005: the next round may succeed. A lost
            // connection makes the next round fail Stale and stop.
            Err(e) if e.is_retryable() => {
                tracing::debug!(id = %reservation.id(), error = %e, "lease renewal failed; retrying");
            }
            Err(e) => {
                tracing::debug!(id = %reservation.id(), error = %e, "lease renewal stopped");
                break;
            }
        }
    }
    pending().await
}

async fn complete<F>(shared: &Shared<F>, mut reservation: Reservation) {
    let mut delay = COMPLETE_RETRY_DELAY;
    let mut attempt = 1;
    loop {
        let failed = match reservation.complete().await {
            Ok(()) => {
                shared.stats.send_modify(|s| s.completed += 1);
                return;
            }
            Err(failed) => failed,
        };
        let e = failed.error();
        let rejected_for_now =
            e.kind() == ErrorKind::Broker && e.is_retryable() && !e.maybe_applied();
        if rejected_for_now && attempt < COMPLETE_ATTEMPTS {
            reservation = failed.into_reservation();
            tokio::time::sleep(delay).await;
            delay *= 2;
            attempt += 1;
            continue;
        }
        shared.stats.send_modify(|s| s.abandoned += 1);
        if e.kind() == ErrorKind::Stale {
            tracing::debug!(id = %failed.into_reservation().id(), "handled message belonged to a lost session; it will be delivered again");
        } else {
            tracing::warn!(error = %e, "could not complete a handled message; it will be delivered again");
        }
        return;
    }
}
