//! The lease inventory observer ([`super::Leases::observe`]): one task per
//! observer that keeps an installed LIST snapshot of a selector current.
//!
//! The ordering is the spec's ("High-level Inventory Observer"):
//!
//! 1. SUBSCRIBE and wait for the acknowledgement;
//! 2. from then on every NOTIFY marks the view dirty (the subscription's
//!    mailbox buffers them; the task drains and coalesces them);
//! 3. drain one complete LIST (every page of one broker snapshot);
//! 4. install it only if no notification, reconnect (the protocol has no
//!    broker epoch, so every new session counts as a possible broker
//!    restart), subscription end or overflow crossed the pass; otherwise
//!    list again.
//!
//! In steady state a notification, a new session or the backstop timer
//! (`clamp(TTL / 2, 5 s, 60 s)`, jittered ±20 %) schedules one more full
//! pass; a subscription that ended (overflow, failed restore) is replaced by
//! a new SUBSCRIBE before that pass. Failures back off exponentially; the
//! single task is the "at most one recovery bootstrap" of the spec.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fitz_protocol::route::{self, Scheme};
use futures_util::{FutureExt, StreamExt};
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::list::{HeldLease, fetch_page};
use super::watch::{LeaseSubscription, subscribe};
use crate::connection::Connection;
use crate::error::{Error, ErrorKind, Result};
use crate::events::State;
use crate::options::{Overflow, SubscriptionOptions, capped_exponential};
use crate::retry::Jitter;

/// The default backstop interval, for applications with no workload TTL.
pub const DEFAULT_BACKSTOP: Duration = Duration::from_secs(60);
const MIN_BACKSTOP: Duration = Duration::from_secs(5);

/// How an observer runs ([`super::Leases::observe`]). `Default` suits an
/// application that knows nothing about its leases' TTLs.
#[derive(Debug, Clone)]
pub struct ObserveOptions {
    backstop: Duration,
    page_size: u32,
    buffer: usize,
    retry_base: Duration,
    retry_max: Duration,
}

impl Default for ObserveOptions {
    fn default() -> Self {
        Self {
            backstop: DEFAULT_BACKSTOP,
            page_size: 500,
            buffer: 1024,
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
        }
    }
}

impl ObserveOptions {
    /// Sets the backstop interval from the shortest TTL the application's
    /// leases use: `clamp(ttl / 2, 5 s, 60 s)` (see [`backstop_for_ttl`]).
    #[must_use]
    pub fn expected_ttl(mut self, shortest_ttl: Duration) -> Self {
        self.backstop = backstop_for_ttl(shortest_ttl);
        self
    }

    /// Sets the backstop interval directly (positive; jittered ±20 % per
    /// pass). Default [`DEFAULT_BACKSTOP`].
    #[must_use]
    pub fn backstop(mut self, interval: Duration) -> Self {
        self.backstop = interval;
        self
    }

    /// Leases per LIST page (1–500; default 500, the broker's cap).
    #[must_use]
    pub fn page_size(mut self, n: u32) -> Self {
        self.page_size = n;
        self
    }

    /// Notifications the subscription may buffer between two drains (at
    /// least 1; default 1024). When it is full, the subscription ends with
    /// an overflow and the observer replaces it (a new SUBSCRIBE and a fresh
    /// LIST): nothing is lost, only work is repeated.
    #[must_use]
    pub fn notification_buffer(mut self, n: usize) -> Self {
        self.buffer = n;
        self
    }

    /// Backoff between failed recovery attempts: `base` doubled per failure
    /// up to `max` (each delay jittered to between half and all of it).
    /// Default 100 ms to 10 s.
    #[must_use]
    pub fn retry_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.retry_base = base;
        self.retry_max = max;
        self
    }

    /// The configured backstop interval (before jitter).
    pub fn backstop_interval(&self) -> Duration {
        self.backstop
    }

    fn validate(&self) -> Result<()> {
        if self.backstop.is_zero() {
            return Err(Error::invalid("the observer backstop must be positive"));
        }
        if !(1..=500).contains(&self.page_size) {
            return Err(Error::invalid("the observer page size must be 1 to 500"));
        }
        if self.buffer == 0 {
            return Err(Error::invalid(
                "the observer notification buffer must hold at least one",
            ));
        }
        if self.retry_base.is_zero() || self.retry_max < self.retry_base {
            return Err(Error::invalid("the observer backoff needs 0 < base <= max"));
        }
        Ok(())
    }
}

/// The spec's backstop interval for a workload whose shortest lease TTL is
/// `shortest_ttl`: half of it, at least 5 s, at most 60 s.
pub fn backstop_for_ttl(shortest_ttl: Duration) -> Duration {
    (shortest_ttl / 2).clamp(MIN_BACKSTOP, DEFAULT_BACKSTOP)
}

/// One installed LIST snapshot: the held leases matching the selector,
/// sorted by route. Read-only records — nothing here can renew, release or
/// otherwise act on a lease.
#[derive(Debug, Clone)]
pub struct Inventory {
    version: u64,
    leases: Vec<HeldLease>,
    listed_at: Option<Instant>,
}

impl Inventory {
    fn empty() -> Self {
        Self {
            version: 0,
            leases: Vec::new(),
            listed_at: None,
        }
    }

    /// 0 before the first snapshot is installed, then 1, 2, … for each
    /// installed snapshot.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The leases, sorted by route.
    pub fn leases(&self) -> &[HeldLease] {
        &self.leases
    }

    /// The lease of `route`, if it is held (as of this snapshot).
    pub fn get(&self, route: &str) -> Option<&HeldLease> {
        self.leases
            .binary_search_by(|l| l.route().cmp(route))
            .ok()
            .and_then(|i| self.leases.get(i))
    }

    /// Leases in this snapshot.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// True when no lease matched (or nothing is installed yet).
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// When the LIST pass of this snapshot finished (Tokio's clock); `None`
    /// before the first.
    pub fn listed_at(&self) -> Option<Instant> {
        self.listed_at
    }
}

/// Where an observer stands.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ObserverStatus {
    /// The first snapshot is being taken.
    Bootstrapping,
    /// A snapshot is installed and nothing since invalidated it (beyond
    /// notifications, which are being reconciled).
    Ready,
    /// Readiness was lost (a reconnect, a failed subscription or LIST) and a
    /// new snapshot is being taken; the installed view is the last one and
    /// may be stale.
    Recovering {
        /// The last failure, if one caused or prolonged this.
        error: Option<Error>,
    },
    /// The observer gave up for good: the client closed, or the broker
    /// refused the selector or a scan in a way retrying cannot fix.
    Stopped {
        /// Why.
        error: Error,
    },
}

impl ObserverStatus {
    /// True for [`ObserverStatus::Ready`].
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Ready)
    }
}

/// A running lease inventory observer (see [`super::Leases::observe`]).
///
/// Dropping it stops its task and unsubscribes in the background.
pub struct Observer {
    selector: String,
    view: watch::Receiver<Arc<Inventory>>,
    /// The newest version this handle returned (`view`, `ready`, `changed`).
    seen: AtomicU64,
    status: watch::Receiver<ObserverStatus>,
    task: JoinHandle<()>,
}

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observer")
            .field("selector", &self.selector)
            .field("version", &self.view.borrow().version)
            .field("status", &*self.status.borrow())
            .finish()
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        // The task owns the subscription; dropping it unsubscribes.
        self.task.abort();
    }
}

impl Observer {
    /// The selector observed.
    pub fn selector(&self) -> &str {
        &self.selector
    }

    /// The installed snapshot (cheap: a shared pointer). Readable at any
    /// time; before the observer is first ready it is empty, version 0.
    pub fn view(&self) -> Arc<Inventory> {
        let view = self.view.borrow().clone();
        self.seen.fetch_max(view.version, Ordering::Relaxed);
        view
    }

    /// Where the observer stands right now.
    pub fn status(&self) -> ObserverStatus {
        self.status.borrow().clone()
    }

    /// Waits until the observer is [`ObserverStatus::Ready`] and returns the
    /// view; fails with the error that stopped it.
    pub async fn ready(&self) -> Result<Arc<Inventory>> {
        let mut rx = self.status.clone();
        let outcome = rx
            .wait_for(|s| matches!(s, ObserverStatus::Ready | ObserverStatus::Stopped { .. }))
            .await
            .map(|s| s.clone());
        match outcome {
            Ok(ObserverStatus::Stopped { error }) => Err(error),
            Ok(_) => Ok(self.view()),
            Err(_) => Err(Error::closed()),
        }
    }

    /// Waits for a snapshot newer than the newest this handle returned
    /// (from [`Observer::view`], [`Observer::ready`] or
    /// [`Observer::changed`]) and returns it. Updates coalesce: several
    /// installs between two calls are seen as the newest one. Every
    /// complete, uncrossed LIST pass installs a new snapshot (expiries
    /// move), even when the held set is unchanged. Fails with the error
    /// that stopped the observer.
    pub async fn changed(&self) -> Result<Arc<Inventory>> {
        let seen = self.seen.load(Ordering::Relaxed);
        let mut rx = self.view.clone();
        let newer = rx.wait_for(|v| v.version > seen).await.map(|v| v.clone());
        match newer {
            Ok(view) => {
                self.seen.fetch_max(view.version, Ordering::Relaxed);
                Ok(view)
            }
            Err(_) => Err(match &*self.status.borrow() {
                ObserverStatus::Stopped { error } => error.clone(),
                _ => Error::closed(),
            }),
        }
    }

    /// Waits for the status to change and returns the new one (intermediate
    /// states may be skipped). Fails with [`ErrorKind::Closed`] once the
    /// observer has stopped and that was reported.
    pub async fn status_changed(&mut self) -> Result<ObserverStatus> {
        self.status.changed().await.map_err(|_| Error::closed())?;
        Ok(self.status.borrow_and_update().clone())
    }
}

pub(super) fn observe(
    conn: Connection,
    selector: &str,
    options: ObserveOptions,
) -> Result<Observer> {
    route::validate_pattern(selector, Scheme::Lease).map_err(Error::route)?;
    options.validate()?;
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| Error::invalid("Leases::observe needs a Tokio runtime"))?;
    let (view_tx, view) = watch::channel(Arc::new(Inventory::empty()));
    let (status_tx, status) = watch::channel(ObserverStatus::Bootstrapping);
    let task = Task {
        state: conn.state(),
        conn,
        selector: selector.to_owned(),
        options,
        view: view_tx,
        status: status_tx,
        failures: 0,
    };
    let task = runtime.spawn(task.run());
    Ok(Observer {
        selector: selector.to_owned(),
        view,
        seen: AtomicU64::new(0),
        status,
        task,
    })
}

/// What crossed a LIST pass.
#[derive(Default)]
struct Crossed {
    notified: bool,
    /// The subscription ended (with its error, if it had one).
    ended: Option<Option<Error>>,
}

/// Stops the task (the status says why).
struct Stop;

struct Task {
    conn: Connection,
    state: watch::Receiver<State>,
    selector: String,
    options: ObserveOptions,
    view: watch::Sender<Arc<Inventory>>,
    status: watch::Sender<ObserverStatus>,
    /// Consecutive failures, for the backoff.
    failures: u32,
}

enum Pass {
    Installed,
    /// Something crossed the pass: list again at once.
    Crossed,
    /// The subscription ended: replace it.
    Resubscribe(Option<Error>),
}

impl Task {
    async fn run(mut self) {
        let _ = self.run_inner().await;
    }

    async fn run_inner(&mut self) -> Result<(), Stop> {
        // Whether the last subscription got to an install: replacing one
        // that did not (an overflow on every pass, say) backs off first.
        let mut installed_with_last = true;
        loop {
            if !installed_with_last {
                self.back_off().await?;
            }
            let mut sub = match self.subscribe().await? {
                Some(sub) => sub,
                None => continue,
            };
            installed_with_last = false;
            // The generation the installed view belongs to.
            let mut installed_gen = None;
            let mut dirty = true;
            let mut backstop = Instant::now();
            loop {
                if dirty {
                    match self.pass(&mut sub).await? {
                        Pass::Installed => {
                            dirty = false;
                            self.failures = 0;
                            installed_with_last = true;
                            installed_gen = Some(self.conn.generation().0);
                            backstop = Instant::now() + self.jittered_backstop();
                        }
                        Pass::Crossed => continue,
                        Pass::Resubscribe(error) => {
                            if let Some(e) = &error {
                                self.stop_if_fatal(e)?;
                            }
                            self.not_ready(error);
                            break;
                        }
                    }
                }
                // Steady state: wait for a reason to list again.
                tokio::select! {
                    item = sub.next() => match item {
                        Some(Ok(_)) => dirty = true,
                        Some(Err(e)) => {
                            self.stop_if_fatal(&e)?;
                            self.not_ready(Some(e));
                            break;
                        }
                        None => {
                            self.not_ready(None);
                            break;
                        }
                    },
                    changed = self.state.changed() => {
                        if changed.is_err() {
                            return Err(self.stop(Error::closed()));
                        }
                        let state = *self.state.borrow_and_update();
                        if state == State::Closed {
                            return Err(self.stop(Error::closed()));
                        }
                        if state != State::Authenticated
                            || installed_gen != Some(self.conn.generation().0)
                        {
                            // A lost session invalidates readiness; the
                            // restored subscription counts only with a fresh
                            // LIST right after it.
                            self.not_ready(None);
                            dirty = true;
                        }
                    }
                    () = tokio::time::sleep_until(backstop) => dirty = true,
                }
            }
            // `sub` is dropped here: unsubscribed in the background.
        }
    }

    /// One SUBSCRIBE, acknowledged. `None` after a retryable failure (backed
    /// off already).
    async fn subscribe(&mut self) -> Result<Option<LeaseSubscription>, Stop> {
        self.authenticated().await?;
        let options = SubscriptionOptions {
            buffer: self.options.buffer,
            overflow: Overflow::Error,
        };
        match subscribe(&self.conn, &self.selector, options).await {
            Ok(sub) => Ok(Some(sub)),
            Err(e) => {
                self.stop_if_fatal(&e)?;
                self.not_ready(Some(e));
                self.back_off().await?;
                Ok(None)
            }
        }
    }

    /// One complete LIST, installed if nothing crossed it.
    async fn pass(&mut self, sub: &mut LeaseSubscription) -> Result<Pass, Stop> {
        self.authenticated().await?;
        // What arrived before the pass starts is covered by it.
        if let Some(error) = drain(sub).ended {
            return Ok(Pass::Resubscribe(error));
        }
        let generation = self.conn.generation().0;
        let listed = self.list_all().await;
        let crossed = drain(sub);
        if let Some(error) = crossed.ended {
            return Ok(Pass::Resubscribe(error));
        }
        let reconnected = self.conn.generation().0 != generation;
        match listed {
            Ok(leases) if !crossed.notified && !reconnected => {
                self.install(leases);
                Ok(Pass::Installed)
            }
            Ok(_) => {
                if reconnected {
                    self.not_ready(None);
                }
                Ok(Pass::Crossed)
            }
            // A pass broken by a new session (e.g. a cursor the restarted
            // broker does not know) is retried at once.
            Err(_) if reconnected => {
                self.not_ready(None);
                Ok(Pass::Crossed)
            }
            Err(e) => {
                self.stop_if_fatal(&e)?;
                self.not_ready(Some(e));
                self.back_off().await?;
                Ok(Pass::Crossed)
            }
        }
    }

    async fn list_all(&self) -> Result<Vec<HeldLease>> {
        let mut leases = Vec::new();
        let mut cursor = None;
        loop {
            // The client's read-retry policy; the observer's own backoff
            // handles what is left.
            let page = fetch_page(
                &self.conn,
                &self.conn.shared().config.retry,
                &self.selector,
                cursor.as_ref(),
                self.options.page_size,
            )
            .await?;
            cursor = page.next_cursor().cloned();
            leases.extend(page.into_leases());
            if cursor.is_none() {
                return Ok(leases);
            }
        }
    }

    fn install(&mut self, mut leases: Vec<HeldLease>) {
        leases.sort_by(|a, b| a.route().cmp(b.route()));
        let version = self.view.borrow().version + 1;
        self.view.send_replace(Arc::new(Inventory {
            version,
            leases,
            listed_at: Some(Instant::now()),
        }));
        self.status.send_if_modified(|s| {
            let was_ready = s.is_ready();
            *s = ObserverStatus::Ready;
            !was_ready
        });
    }

    /// Readiness is lost (or the first bootstrap is still failing).
    fn not_ready(&self, error: Option<Error>) {
        self.status.send_if_modified(|s| match s {
            ObserverStatus::Stopped { .. } => false,
            ObserverStatus::Bootstrapping | ObserverStatus::Recovering { .. }
                if error.is_none() =>
            {
                false
            }
            _ => {
                *s = ObserverStatus::Recovering {
                    error: error.clone(),
                };
                true
            }
        });
    }

    fn stop(&self, error: Error) -> Stop {
        self.status.send_replace(ObserverStatus::Stopped { error });
        Stop
    }

    /// Stops on what retrying cannot fix.
    fn stop_if_fatal(&self, e: &Error) -> Result<(), Stop> {
        let fatal = match e.kind() {
            ErrorKind::Closed
            | ErrorKind::Auth
            | ErrorKind::InvalidArgument
            | ErrorKind::Unsupported => true,
            // A cursor the broker no longer knows only means "list again".
            ErrorKind::Broker => {
                !e.is_retryable() && e.code() != Some(fitz_protocol::codes::LEASE_INVALID_CURSOR)
            }
            _ => false,
        };
        if fatal || self.conn.shared().is_closed() {
            Err(self.stop(e.clone()))
        } else {
            Ok(())
        }
    }

    /// Waits for a ready session; stops when the client closes.
    async fn authenticated(&mut self) -> Result<(), Stop> {
        loop {
            let state = *self.state.borrow_and_update();
            match state {
                State::Authenticated => return Ok(()),
                State::Closed => return Err(self.stop(Error::closed())),
                _ => {}
            }
            if self.state.changed().await.is_err() {
                return Err(self.stop(Error::closed()));
            }
        }
    }

    /// Sleeps the next backoff delay (or stops when the client closes
    /// meanwhile).
    async fn back_off(&mut self) -> Result<(), Stop> {
        self.failures = self.failures.saturating_add(1);
        let ceiling = capped_exponential(
            self.options.retry_base,
            self.options.retry_max,
            self.failures,
        );
        let delay = Jitter::Equal.apply(ceiling, &mut rand::rng());
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return Ok(()),
                changed = self.state.changed() => {
                    if changed.is_err() || *self.state.borrow_and_update() == State::Closed {
                        return Err(self.stop(Error::closed()));
                    }
                }
            }
        }
    }

    fn jittered_backstop(&self) -> Duration {
        self.options
            .backstop
            .mul_f64(rand::rng().random_range(0.8..=1.2))
    }
}

/// Takes every notification already buffered, without waiting.
fn drain(sub: &mut LeaseSubscription) -> Crossed {
    let mut crossed = Crossed::default();
    loop {
        match sub.next().now_or_never() {
            None => return crossed,
            Some(Some(Ok(_))) => crossed.notified = true,
            Some(Some(Err(e))) => {
                crossed.ended = Some(Some(e));
                return crossed;
            }
            Some(None) => {
                crossed.ended = Some(None);
                return crossed;
            }
        }
    }
}
