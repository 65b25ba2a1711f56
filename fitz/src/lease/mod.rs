//! Lease: exclusive ownership with fencing tokens (types 400–403, 407–410).
//!
//! A lease is a named, time-limited, exclusive right: `lease://realm/area/name`
//! is held by at most one owner at a time, for a TTL the holder keeps
//! renewing. Every grant carries a **fencing token** that grows with each new
//! ownership of the route; pass it to whatever the lease protects so a
//! stale holder (paused, partitioned, expired) can be refused there.
//!
//! * [`Leases::acquire`] takes a free lease or fails at once with broker code
//!   5001 ([`codes::LEASE_HELD`]);
//!   [`Leases::acquire_wait`] queues behind the holder for up to 30 s and
//!   fails with 5006 ([`codes::LEASE_WAIT_TIMEOUT`])
//!   when the wait runs out.
//! * A [`Lease`] renews and releases by hand; dropping it releases it in
//!   the background.
//! * A [`LeaseGuard`] ([`Lease::into_guard`]) renews by itself every TTL/3
//!   and tells the work it protects when ownership is lost;
//!   [`Leases::with_lease`] runs a future under one and cancels it on loss.
//! * [`Leases::query`], [`Leases::list`] and [`Leases::subscribe`] observe
//!   leases without owning them; [`Leases::observe`] keeps a whole
//!   selector's inventory current (SUBSCRIBE, LIST, reconciliation and
//!   recovery in the spec's order) as an [`Observer`].
//!
//! # Reconnects
//!
//! Leases belong to the connection session that acquired them: when that
//! session ends, the broker releases them (and may grant them to a waiter at
//! once). This client therefore never carries a lease over a reconnect:
//!
//! * a [`Lease`] from an earlier session fails every call with
//!   [`ErrorKind::Stale`] without sending anything,
//!   and dropping it sends nothing;
//! * a [`LeaseGuard`] reports [`OwnershipLost`] as soon as the connection
//!   drops (not at its next renewal) and cancels its work. It does **not**
//!   re-acquire by itself: someone else may own the lease by then, and the
//!   work that ran under the old fencing token must not silently continue
//!   under a new one. Acquire again (a loop around [`Leases::with_lease`])
//!   to resume.
//!
//! ```no_run
//! # async fn demo(client: fitz::Client) -> fitz::Result<()> {
//! use std::time::Duration;
//!
//! let leases = client.lease();
//! let lease = leases
//!     .acquire_wait("lease://prod/billing/nightly", "worker-7", Duration::from_secs(30), Duration::from_secs(10))
//!     .await?;
//! println!("fencing token {}", lease.fencing_token());
//! lease.release().await?;
//! # Ok(()) }
//! ```

mod guard;
mod list;
mod observe;
#[cfg(test)]
mod observe_tests;
#[cfg(test)]
mod tests;
mod watch;

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use fitz_protocol::lease::{self, AcquireKind, MAX_OWNER_LEN, MAX_WAIT_SECONDS};
use fitz_protocol::route::{self, Scheme};
use fitz_protocol::{Str, WireError, codes};
use futures_util::FutureExt;

use crate::connection::{Connection, Generation, ReplyFrames, RequestOptions, decode_body};
use crate::error::{Error, ErrorKind, Result};
use crate::options::SubscriptionOptions;
use crate::retry::RetryPolicy;

pub use guard::{LeaseGuard, LossReason, Ownership, OwnershipLost, WithLeaseError};
pub use list::{HeldLease, LeaseList, ListCursor, ListPage};
pub use observe::{
    DEFAULT_BACKSTOP, Inventory, ObserveOptions, Observer, ObserverStatus, backstop_for_ttl,
};
pub use watch::{LeaseChange, LeaseSubscription};

/// The longest [`Leases::acquire_wait`] the broker accepts.
pub const MAX_WAIT: Duration = Duration::from_secs(MAX_WAIT_SECONDS as u64);

/// The Lease domain of a [`crate::Client`] (see [`crate::Client::lease`]).
#[derive(Clone)]
pub struct Leases {
    conn: Connection,
    retry: RetryPolicy,
}

impl fmt::Debug for Leases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Leases")
    }
}

impl Leases {
    pub(crate) fn new(conn: Connection) -> Self {
        let retry = conn.shared().config.retry;
        Self { conn, retry }
    }

    /// This view with `policy` for its replay-safe reads (QUERY and LIST pages) instead
    /// of the client's [`crate::ClientBuilder::retry`]. Cheap: a clone of
    /// the handle.
    pub fn with_retry(&self, policy: RetryPolicy) -> Self {
        Self {
            conn: self.conn.clone(),
            retry: policy,
        }
    }

    /// Acquires `route` (a concrete `lease://realm/area/name`) for `owner`
    /// (at most 512 bytes) for `ttl` (rounded up to whole seconds, at least
    /// one), without waiting.
    ///
    /// * Free → a fresh grant with a new, higher fencing token.
    /// * Already held by this `owner` → the same grant again (same token, TTL
    ///   **not** reset; see [`Lease::already_held`]).
    /// * Held by another owner → broker error 5001 (retryable).
    ///
    /// Arguments are checked locally; nothing is sent when one is invalid.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped after ACQUIRE was written, the broker may grant
    /// the lease with no handle here to renew or release it; it stays held until
    /// its TTL runs out or the connection session ends. Dropped before it was
    /// written, nothing is sent.
    pub async fn acquire(&self, route: &str, owner: &str, ttl: Duration) -> Result<Lease> {
        self.acquire_inner(route, owner, ttl, Duration::ZERO).await
    }

    /// Like [`Leases::acquire`], but when another owner holds the lease,
    /// queues (FIFO) for up to `wait` (rounded up to whole seconds, at most
    /// [`MAX_WAIT`]) and resolves when the broker grants it — on release,
    /// expiry or the holder's disconnect — or fails with broker error 5006
    /// when the wait runs out (5007 when 100 waiters are queued already).
    ///
    /// The wait is the broker's: cancelling this future (dropping it, a
    /// `select!`) stops waiting here, but the broker keeps the place in the
    /// queue until the wait expires. A grant that arrives after cancellation
    /// is not seen by this client: that lease stays held, unrenewed, until
    /// its TTL runs out or the connection ends. Prefer a `wait` no longer
    /// than you are prepared to wait.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: see above; a grant for a dropped wait stays held until
    /// its TTL runs out or the connection session ends.
    pub async fn acquire_wait(
        &self,
        route: &str,
        owner: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease> {
        self.acquire_inner(route, owner, ttl, wait).await
    }

    async fn acquire_inner(
        &self,
        route: &str,
        owner: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease> {
        validate_lease_route(route)?;
        if owner.len() > MAX_OWNER_LEN {
            return Err(Error::invalid(format!(
                "lease owner ids are at most {MAX_OWNER_LEN} bytes, got {}",
                owner.len()
            )));
        }
        let ttl_secs = ttl_seconds(ttl)?;
        let wait_secs = whole_seconds(wait);
        if wait_secs > u64::from(MAX_WAIT_SECONDS) {
            return Err(Error::invalid(format!(
                "a lease acquire waits at most {MAX_WAIT_SECONDS} s, asked for {wait:?}"
            )));
        }
        let wait_secs = u32::try_from(wait_secs).unwrap_or(MAX_WAIT_SECONDS);
        let route = Str::from(route);
        let owner = Str::from(owner);
        let msg = lease::Acquire {
            route: route.clone(),
            owner: owner.clone(),
            ttl_secs,
            wait_seconds: Some(wait_secs),
        };
        // Pinned: the grant is known to belong to exactly this session.
        let generation = self.conn.generation();
        let grant = if wait_secs == 0 {
            let ok: lease::AcquireOk = self
                .conn
                .call_with(&msg, RequestOptions::pinned(generation))
                .await
                .map_err(Error::stale_as_not_sent)?;
            match ok.kind {
                AcquireKind::Acquired | AcquireKind::AlreadyHeld => ok,
                // The broker answers 5001 for a held lease when told not to
                // wait; report a queued answer the same way.
                AcquireKind::Queued | AcquireKind::AlreadyQueued => {
                    return Err(Error::broker(&WireError::coded(
                        codes::LEASE_HELD,
                        "lease acquisition queued although no wait was asked",
                    )));
                }
            }
        } else {
            // The broker answers the wait itself (grant or 5006); our own
            // deadline only guards against a broker that never does.
            let timeout =
                Duration::from_secs(wait_secs.into()) + self.conn.shared().config.request_timeout;
            let opts = RequestOptions::pinned(generation).with_timeout(timeout);
            let frames = self
                .conn
                .request_frames(&msg, acquire_is_final, opts)
                .await
                .map_err(Error::stale_as_not_sent)?;
            let mut waiting = Waiting {
                frames: Some(frames),
                conn: &self.conn,
                msg: &msg,
                generation,
            };
            waiting.grant().await?
        };
        Ok(Lease {
            conn: self.conn.clone(),
            route,
            owner,
            fencing_token: grant.fencing_token,
            credential: grant.fencing_token,
            ttl: Duration::from_secs(ttl_secs),
            already_held: grant.kind == AcquireKind::AlreadyHeld,
            generation,
            held: true,
        })
    }

    /// Who holds `route` (a concrete lease route) right now, and how many
    /// acquirers wait for it. A free lease is a normal answer, not an error.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe. Dropping the future abandons the read: nothing changed on
    /// the broker, a request already written is still answered and that reply is
    /// discarded (it never reaches another call), and nothing leaks.
    pub async fn query(&self, route: &str) -> Result<LeaseStatus> {
        validate_lease_route(route)?;
        let msg = lease::Query::new(route);
        let payload =
            crate::retry::replay_safe_raw(&self.retry, || self.conn.request(&msg)).await?;
        let ok: lease::QueryOk = decode_body(payload)?;
        Ok(LeaseStatus {
            holder: ok.holder.map(|h| LeaseHolder {
                owner: h.owner,
                ttl_remaining: Duration::from_secs(h.ttl_remaining_secs),
            }),
            waiters: ok.waiters,
        })
    }

    /// Every held lease matching `pattern` (an exact route, or whole-segment
    /// `*`/`**` wildcards able to match a three-segment lease route), as a
    /// stream that fetches page after page of one point-in-time snapshot.
    /// Waiters are never listed.
    ///
    /// The pattern is checked when the stream is first polled.
    pub fn list(&self, pattern: &str) -> LeaseList {
        LeaseList::new(self.conn.clone(), self.retry, pattern)
    }

    /// One page of [`Leases::list`]: pass the previous page's
    /// [`ListPage::next_cursor`] to continue the same snapshot (the cursor
    /// remembers its pattern). `limit` 0 means the broker's page size (100);
    /// the broker caps pages at 500.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe. Dropping the future abandons the read: nothing changed on
    /// the broker, a request already written is still answered and that reply is
    /// discarded (it never reaches another call), and nothing leaks.
    pub async fn list_page(
        &self,
        pattern: &str,
        cursor: Option<&ListCursor>,
        limit: u32,
    ) -> Result<ListPage> {
        list::fetch_page(&self.conn, &self.retry, pattern, cursor, limit).await
    }

    /// Subscribes to changes of the held set of leases matching `pattern`
    /// (same grammar as [`Leases::list`]): acquisition of a free lease, grant
    /// to a waiter, release, expiry, a holder's disconnect. Renewals are not
    /// reported. A change is a hint to re-read ([`Leases::query`],
    /// [`Leases::list`]), not a log: it carries only the route.
    ///
    /// The subscription survives reconnects; changes while disconnected are
    /// not replayed.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe. Dropped before it resolves, no registration is left behind:
    /// the handle under construction unsubscribes in the background, or is never
    /// installed when the connection task had not handled it yet.
    pub async fn subscribe(&self, pattern: &str) -> Result<LeaseSubscription> {
        let options = self.conn.shared().config.subscription;
        self.subscribe_with(pattern, options).await
    }

    /// [`Leases::subscribe`] with explicit buffering.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe. Dropped before it resolves, no registration is left behind:
    /// the handle under construction unsubscribes in the background, or is never
    /// installed when the connection task had not handled it yet.
    pub async fn subscribe_with(
        &self,
        pattern: &str,
        options: SubscriptionOptions,
    ) -> Result<LeaseSubscription> {
        watch::subscribe(&self.conn, pattern, options).await
    }

    /// Starts an inventory observer over `selector` (same grammar as
    /// [`Leases::list`]): a background task that subscribes, waits for the
    /// acknowledgement, takes a complete LIST snapshot and installs it only
    /// if no notification, reconnect, subscription end or overflow crossed
    /// that pass (else lists again); then re-lists (coalesced) on
    /// notifications, on every new session and on a jittered backstop timer
    /// ([`ObserveOptions`]), and recovers with bounded exponential backoff.
    ///
    /// The [`Observer`]'s [`Observer::view`] is readable at any time and is
    /// advisory: read-only records that may be stale between
    /// reconciliations, never an ownership capability. Dropping the observer
    /// stops it and unsubscribes. The selector and options are checked here;
    /// must be called within a Tokio runtime.
    ///
    /// ```no_run
    /// # async fn demo(client: fitz::Client) -> fitz::Result<()> {
    /// use std::time::Duration;
    /// use fitz::lease::ObserveOptions;
    ///
    /// let options = ObserveOptions::default().expected_ttl(Duration::from_secs(30));
    /// let mut observer = client.lease().observe("lease://prod/billing/*", options)?;
    /// let view = observer.ready().await?;
    /// println!("{} leases held", view.len());
    /// loop {
    ///     let view = observer.changed().await?;
    ///     for lease in view.leases() {
    ///         println!("{} held by {}", lease.route(), lease.owner());
    ///     }
    /// }
    /// # }
    /// ```
    pub fn observe(&self, selector: &str, options: ObserveOptions) -> Result<Observer> {
        observe::observe(self.conn.clone(), selector, options)
    }

    /// Acquires `route` without waiting, runs `work` under a [`LeaseGuard`]
    /// (renewed every TTL/3) and releases the lease when `work` finishes.
    ///
    /// `work` receives the guard's [`Ownership`]: its
    /// [`Ownership::fencing_token`] to pass along, and
    /// [`Ownership::cancellation_token`] for tasks it spawns. When ownership
    /// is lost (a renewal fails, or the connection drops and the broker
    /// releases the lease with the session) the token is cancelled, the
    /// `work` future is dropped at its next `.await`, and the result is
    /// [`WithLeaseError::Lost`]. Use [`Leases::acquire_wait`] and
    /// [`Lease::run`] to wait for the lease instead.
    ///
    /// ```no_run
    /// # async fn demo(client: fitz::Client) {
    /// use std::time::Duration;
    /// use fitz::lease::WithLeaseError;
    ///
    /// let out = client
    ///     .lease()
    ///     .with_lease("lease://prod/billing/nightly", "worker-7", Duration::from_secs(15), |own| async move {
    ///         // write to storage that checks `own.fencing_token()`
    ///         own.fencing_token()
    ///     })
    ///     .await;
    /// match out {
    ///     Ok(token) => println!("done under token {token}"),
    ///     Err(WithLeaseError::Acquire(e)) => println!("not acquired: {e}"),
    ///     Err(WithLeaseError::Lost(lost)) => println!("lost midway: {lost}"),
    ///     Err(e) => println!("{e}"),
    /// }
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe in effect: dropping the future drops `work` at its current
    /// `.await` and the held lease is released in the background. An ACQUIRE in
    /// flight when it is dropped behaves as in [`Leases::acquire`].
    pub async fn with_lease<F, Fut, T>(
        &self,
        route: &str,
        owner: &str,
        ttl: Duration,
        work: F,
    ) -> Result<T, WithLeaseError>
    where
        F: FnOnce(Ownership) -> Fut,
        Fut: Future<Output = T>,
    {
        let lease = self
            .acquire(route, owner, ttl)
            .await
            .map_err(WithLeaseError::Acquire)?;
        lease.run(work).await
    }
}

fn validate_lease_route(route: &str) -> Result<()> {
    // Checks the lease depth of three segments too.
    route::validate_concrete(route, Scheme::Lease)
        .map(drop)
        .map_err(Error::route)
}

fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The wire TTL: whole seconds, rounded up (the holder's view stays the
/// conservative one), at least one.
fn ttl_seconds(ttl: Duration) -> Result<u64> {
    match whole_seconds(ttl) {
        0 => Err(Error::invalid("a lease TTL must be at least one second")),
        s => Ok(s),
    }
}

/// Runs in the actor: a queued answer keeps the correlation open for the
/// grant that follows; anything else (a grant, an error) ends it.
fn acquire_is_final(payload: &Bytes) -> bool {
    !matches!(payload.get(..2), Some([0, 2 | 3]))
}

/// A queued ACQUIRE waiting for its grant. If the caller gives up after the
/// grant reached our reply channel but before it was read, Drop finds it
/// there and releases it.
struct Waiting<'a> {
    frames: Option<ReplyFrames>,
    conn: &'a Connection,
    msg: &'a lease::Acquire,
    generation: Generation,
}

impl Waiting<'_> {
    async fn grant(&mut self) -> Result<lease::AcquireOk> {
        loop {
            let Some(frames) = self.frames.as_mut() else {
                return Err(Error::closed());
            };
            let frame = match frames.next().await {
                Some(frame) => frame?,
                // The actor ended the exchange without a final frame: only
                // when it is shutting down.
                None => return Err(Error::connection_lost(true)),
            };
            let ok: lease::AcquireOk = decode_body(frame)?;
            match ok.kind {
                AcquireKind::Acquired | AcquireKind::AlreadyHeld => {
                    self.frames = None;
                    return Ok(ok);
                }
                AcquireKind::Queued | AcquireKind::AlreadyQueued => {}
            }
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let Some(mut frames) = self.frames.take() else {
            return;
        };
        // Only what has already arrived: polling once never blocks.
        while let Some(Some(frame)) = frames.next().now_or_never() {
            let Ok(ok) = frame.and_then(decode_body::<lease::AcquireOk>) else {
                continue;
            };
            if matches!(ok.kind, AcquireKind::Acquired | AcquireKind::AlreadyHeld) {
                let release = lease::Release {
                    route: self.msg.route.clone(),
                    owner: self.msg.owner.clone(),
                    fencing_token: ok.fencing_token,
                };
                let _ = self
                    .conn
                    .request_detached(&release, RequestOptions::pinned(self.generation));
            }
        }
    }
}

/// A held lease: route, owner, fencing token, and the connection session it
/// lives in. See the [module docs](self).
///
/// Dropping a `Lease` that was not released, while its session is still the
/// current one, sends a best-effort RELEASE in the background.
#[must_use = "dropping a Lease releases it"]
pub struct Lease {
    conn: Connection,
    route: Str,
    owner: Str,
    /// The grant's token: what the holder fences with.
    fencing_token: u64,
    /// The token RENEW and RELEASE present: the latest RENEW answer (the
    /// broker keeps it equal to the grant's; if one ever rotated it, the
    /// handle follows).
    credential: u64,
    ttl: Duration,
    already_held: bool,
    generation: Generation,
    /// Held as far as we know: Drop releases it.
    held: bool,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("route", &&*self.route)
            .field("owner", &&*self.owner)
            .field("fencing_token", &self.fencing_token)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// The lease's route.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// The owner id it was acquired for.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The grant's fencing token: strictly greater than that of every earlier
    /// ownership of this route (within one broker process). Fixed for the
    /// life of the handle.
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }

    /// The TTL last granted or renewed (whole seconds).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The broker reported that this owner already held the lease: this is
    /// the same grant as before (same token), and its TTL was **not** reset
    /// (call [`Lease::renew`]). Releasing or dropping any handle of the grant
    /// releases it for all.
    pub fn already_held(&self) -> bool {
        self.already_held
    }

    /// False once the session that acquired it has ended (the broker has
    /// released it): every call fails with
    /// [`ErrorKind::Stale`].
    pub fn is_current(&self) -> bool {
        self.conn.check_generation(self.generation).is_ok()
    }

    /// Extends the lease to `ttl` from now (rounded up to whole seconds). The
    /// fencing token does not change.
    ///
    /// Broker errors 5002 (fenced), 5003 (expired) and 5004 (not found) mean
    /// the lease is no longer this holder's; the handle then has nothing left
    /// to release.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe for the handle: dropped after RENEW was written, the lease may
    /// or may not have been extended (the fencing token does not change); renew
    /// again, the handle stays usable.
    pub async fn renew(&mut self, ttl: Duration) -> Result<()> {
        let ttl_secs = ttl_seconds(ttl)?;
        self.renew_with(ttl_secs, RequestOptions::pinned(self.generation))
            .await
    }

    async fn renew_with(&mut self, ttl_secs: u64, opts: RequestOptions) -> Result<()> {
        let msg = lease::Renew {
            route: self.route.clone(),
            owner: self.owner.clone(),
            fencing_token: self.credential,
            ttl_secs,
        };
        match self.conn.call_with::<_, lease::RenewOk>(&msg, opts).await {
            Ok(ok) => {
                self.credential = ok.fencing_token;
                self.ttl = Duration::from_secs(ttl_secs);
                Ok(())
            }
            Err(e) => {
                if is_not_ours(&e) {
                    self.held = false;
                }
                Err(e)
            }
        }
    }

    /// Releases the lease; the broker grants it to the first waiter at once.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropped before the answer, the handle's `Drop` releases the
    /// lease in the background instead.
    pub async fn release(mut self) -> Result<()> {
        self.release_in_place().await
    }

    async fn release_in_place(&mut self) -> Result<()> {
        let msg = self.release_msg();
        let opts = RequestOptions::pinned(self.generation);
        let result = self
            .conn
            .call_with::<_, lease::ReleaseOk>(&msg, opts)
            .await
            .map(drop);
        self.held = match &result {
            Ok(()) => false,
            // Answered (e.g. fenced: nothing of ours to release), or it may
            // have reached the broker.
            Err(e) if e.kind() == ErrorKind::Broker || e.maybe_applied() => false,
            // Never written: Drop tries once more in the background.
            Err(_) => true,
        };
        result
    }

    fn release_msg(&self) -> lease::Release {
        lease::Release {
            route: self.route.clone(),
            owner: self.owner.clone(),
            fencing_token: self.credential,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        // Pinned: a lease of an ended session is already released, and the
        // same route may be someone else's now.
        let _ = self
            .conn
            .request_detached(&self.release_msg(), RequestOptions::pinned(self.generation));
    }
}

/// Codes saying a lease is no longer this holder's.
fn is_not_ours(e: &Error) -> bool {
    matches!(
        e.code(),
        Some(codes::LEASE_INVALID_FENCE | codes::LEASE_EXPIRED | codes::LEASE_NOT_FOUND)
    )
}

/// What [`Leases::query`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseStatus {
    holder: Option<LeaseHolder>,
    waiters: u32,
}

impl LeaseStatus {
    /// The current holder; `None` when the lease is free.
    pub fn holder(&self) -> Option<&LeaseHolder> {
        self.holder.as_ref()
    }

    /// True when someone holds it.
    pub fn is_held(&self) -> bool {
        self.holder.is_some()
    }

    /// Acquirers queued for it.
    pub fn waiters(&self) -> u32 {
        self.waiters
    }
}

/// The holder of a lease, as [`Leases::query`] reports it.
#[derive(Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    owner: Str,
    ttl_remaining: Duration,
}

impl LeaseHolder {
    /// The holder's owner id.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Time left before the lease expires unless renewed (whole seconds).
    pub fn ttl_remaining(&self) -> Duration {
        self.ttl_remaining
    }
}

impl fmt::Debug for LeaseHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseHolder")
            .field("owner", &&*self.owner)
            .field("ttl_remaining", &self.ttl_remaining)
            .finish()
    }
}
