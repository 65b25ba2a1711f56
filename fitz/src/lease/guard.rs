//! Managed leases: a background renewer, ownership-loss signalling, and
//! `with_lease`.
//!
//! One small task per [`LeaseGuard`] owns the [`Lease`]: it renews every
//! TTL/3, watches the connection state (a reconnect means the broker has
//! already released the lease with the old session), and releases the lease
//! when the guard is released or dropped. The guard and every [`Ownership`]
//! view observe it through a `watch` channel and a cancellation token, so
//! nothing is locked and the guard's `Drop` only drops a channel.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use fitz_protocol::Str;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Lease;
use crate::connection::RequestOptions;
use crate::error::{Error, ErrorKind, Result};

/// Why ownership of a managed lease ended.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum LossReason {
    /// The broker refused a renewal (fenced, expired, not found), or no
    /// renewal got through before the TTL ran out. Carries the last error.
    RenewalFailed(Error),
    /// The connection session that held the lease ended; the broker released
    /// the lease with it (and may have granted it to someone else since).
    SessionEnded,
    /// The client was closed.
    ClientClosed,
    /// The guard was released or dropped: ownership ended on purpose.
    Released,
}

/// Ownership of a managed lease ended. See [`LossReason`].
#[derive(Debug, Clone)]
pub struct OwnershipLost {
    route: Str,
    fencing_token: u64,
    reason: LossReason,
}

impl OwnershipLost {
    /// The lease's route.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// The fencing token of the ownership that ended.
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }

    /// Why it ended.
    pub fn reason(&self) -> &LossReason {
        &self.reason
    }

    /// The loss as a crate [`Error`]: the renewal's error, or
    /// [`ErrorKind::Stale`] when the session ended or the guard was released,
    /// or [`ErrorKind::Closed`].
    pub fn to_error(&self) -> Error {
        match &self.reason {
            LossReason::RenewalFailed(e) => e.clone(),
            LossReason::SessionEnded | LossReason::Released => Error::stale(),
            LossReason::ClientClosed => Error::closed(),
        }
    }
}

impl fmt::Display for OwnershipLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ownership of {} (token {}) ",
            &*self.route, self.fencing_token
        )?;
        match &self.reason {
            LossReason::RenewalFailed(e) => write!(f, "lost: renewal failed: {e}"),
            LossReason::SessionEnded => f.write_str("lost: the connection session ended"),
            LossReason::ClientClosed => f.write_str("lost: the client was closed"),
            LossReason::Released => f.write_str("ended: the guard was released"),
        }
    }
}

impl std::error::Error for OwnershipLost {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.reason {
            LossReason::RenewalFailed(e) => Some(e),
            _ => None,
        }
    }
}

/// Why [`super::Leases::with_lease`] or [`Lease::run`] did not produce the
/// work's output.
#[derive(Debug)]
#[non_exhaustive]
pub enum WithLeaseError {
    /// The lease was not acquired (or the guard could not start); the work
    /// never ran.
    Acquire(Error),
    /// Ownership was lost while the work ran; the work was cancelled.
    Lost(OwnershipLost),
}

impl fmt::Display for WithLeaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Acquire(e) => write!(f, "lease not acquired: {e}"),
            Self::Lost(l) => l.fmt(f),
        }
    }
}

impl std::error::Error for WithLeaseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Acquire(e) => Some(e),
            Self::Lost(l) => Some(l),
        }
    }
}

#[derive(Debug, Clone)]
enum Status {
    Held,
    Ended(OwnershipLost),
}

struct Identity {
    route: Str,
    owner: Str,
    fencing_token: u64,
}

/// A read-only view of a managed lease's ownership, for the work it
/// protects: cheap to clone and `'static`, so spawned tasks can carry one.
#[derive(Clone)]
pub struct Ownership {
    id: Arc<Identity>,
    status: watch::Receiver<Status>,
    cancel: CancellationToken,
}

impl Ownership {
    /// The lease's route.
    pub fn route(&self) -> &str {
        &self.id.route
    }

    /// The owner id.
    pub fn owner(&self) -> &str {
        &self.id.owner
    }

    /// The fencing token of the grant that admitted this work. Fixed: it
    /// never changes while the guard lives, renewals included.
    pub fn fencing_token(&self) -> u64 {
        self.id.fencing_token
    }

    /// True until ownership ends (lost, released or dropped).
    pub fn is_held(&self) -> bool {
        matches!(*self.status.borrow(), Status::Held)
    }

    /// Resolves when ownership ends: lost (renewal failed, session ended,
    /// client closed) or ended on purpose ([`LossReason::Released`]).
    /// Cancel-safe; resolves at once if it already ended.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only waits for a signal; dropping it changes nothing.
    pub async fn lost(&self) -> OwnershipLost {
        let mut status = self.status.clone();
        match status.wait_for(|s| matches!(s, Status::Ended(_))).await {
            Ok(s) => match &*s {
                Status::Ended(lost) => lost.clone(),
                Status::Held => self.ended_without_word(),
            },
            // The renewer is gone without a word: only when its runtime shut
            // down, which ends the session too.
            Err(_) => self.ended_without_word(),
        }
    }

    /// A token cancelled the moment ownership ends, for tasks the work
    /// spawns. Cancelling it yourself does not affect the lease.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.cancel.child_token()
    }

    fn ended_without_word(&self) -> OwnershipLost {
        OwnershipLost {
            route: self.id.route.clone(),
            fencing_token: self.id.fencing_token,
            reason: LossReason::SessionEnded,
        }
    }
}

impl fmt::Debug for Ownership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ownership")
            .field("route", &&*self.id.route)
            .field("fencing_token", &self.id.fencing_token)
            .field("held", &self.is_held())
            .finish()
    }
}

type ReleaseReply = oneshot::Sender<Result<()>>;

/// A lease renewed in the background every TTL/3 until it is released,
/// dropped, or lost. Get one with [`Lease::into_guard`].
///
/// * [`LeaseGuard::fencing_token`] is the grant's token, fixed for the
///   guard's life.
/// * [`LeaseGuard::lost`] resolves and every
///   [`LeaseGuard::cancellation_token`] is cancelled when ownership is lost:
///   a renewal is refused, no renewal gets through before the TTL runs out,
///   the connection drops (the broker released the lease with the session;
///   the guard does not re-acquire), or the client closes.
/// * [`LeaseGuard::release`] releases and reports the outcome; dropping the
///   guard releases in the background (by the renewer task, which already
///   exists: `Drop` spawns nothing and never blocks).
///
/// ```no_run
/// # async fn demo(client: fitz::Client) -> fitz::Result<()> {
/// use std::time::Duration;
///
/// let guard = client
///     .lease()
///     .acquire("lease://prod/scheduler/leader", "node-a", Duration::from_secs(9))
///     .await?
///     .into_guard()?;
/// tokio::select! {
///     lost = guard.lost() => eprintln!("{lost}"),
///     _ = lead(guard.fencing_token()) => {}
/// }
/// guard.release().await.ok();
/// # Ok(()) }
/// # async fn lead(_token: u64) {}
/// ```
#[must_use = "dropping a LeaseGuard releases the lease"]
pub struct LeaseGuard {
    ownership: Ownership,
    /// Sending asks the renewer to release and answer; dropping it asks the
    /// renewer to release without answering.
    release: Option<oneshot::Sender<ReleaseReply>>,
}

impl LeaseGuard {
    /// The lease's route.
    pub fn route(&self) -> &str {
        self.ownership.route()
    }

    /// The owner id.
    pub fn owner(&self) -> &str {
        self.ownership.owner()
    }

    /// The grant's fencing token, fixed for the guard's life.
    pub fn fencing_token(&self) -> u64 {
        self.ownership.fencing_token()
    }

    /// True until ownership is lost.
    pub fn is_held(&self) -> bool {
        self.ownership.is_held()
    }

    /// Resolves when ownership is lost (see [`Ownership::lost`]).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only waits for a signal; dropping it changes nothing.
    pub async fn lost(&self) -> OwnershipLost {
        self.ownership.lost().await
    }

    /// A token cancelled the moment ownership is lost or the guard ends.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.ownership.cancellation_token()
    }

    /// A `'static` view of this guard for the work it protects.
    pub fn ownership(&self) -> Ownership {
        self.ownership.clone()
    }

    /// Stops renewing and releases the lease. Fails with the loss's error
    /// ([`OwnershipLost::to_error`]) when ownership was already lost: there
    /// was nothing left to release.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropped before the answer, the guard's `Drop` stops renewing
    /// and releases the lease in the background.
    pub async fn release(mut self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        let asked = self.release.take().is_some_and(|r| r.send(tx).is_ok());
        if asked && let Ok(result) = rx.await {
            return result;
        }
        Err(self.ownership.lost().await.to_error())
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        // Work holding an `Ownership` stops now, not one round trip later;
        // the renewer sees the dropped channel and releases.
        self.ownership.cancel.cancel();
    }
}

impl fmt::Debug for LeaseGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseGuard")
            .field("route", &self.route())
            .field("fencing_token", &self.fencing_token())
            .field("held", &self.is_held())
            .finish()
    }
}

impl Lease {
    /// Hands the lease to a background renewer (see [`LeaseGuard`]): it
    /// renews every TTL/3 — at once when the lease was
    /// [already held](Lease::already_held), whose TTL was not reset — and
    /// releases when the guard is released or dropped.
    ///
    /// Must be called inside a tokio runtime (the renewer is a task); outside
    /// one it fails with [`ErrorKind::InvalidArgument`] and the lease is
    /// released.
    pub fn into_guard(self) -> Result<LeaseGuard> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::invalid("a LeaseGuard must be created inside a tokio runtime"))?;
        let id = Arc::new(Identity {
            route: self.route.clone(),
            owner: self.owner.clone(),
            fencing_token: self.fencing_token,
        });
        let (status_tx, status) = watch::channel(Status::Held);
        let cancel = CancellationToken::new();
        let (release_tx, release_rx) = oneshot::channel();
        let renewer = Renewer {
            lease: self,
            id: id.clone(),
            status: status_tx,
            cancel: cancel.clone(),
        };
        runtime.spawn(renewer.run(release_rx));
        Ok(LeaseGuard {
            ownership: Ownership { id, status, cancel },
            release: Some(release_tx),
        })
    }

    /// Runs `work` under a [`LeaseGuard`] made of this lease and releases it
    /// when `work` finishes. On ownership loss the guard's token is
    /// cancelled, `work` is dropped, and the result is
    /// [`WithLeaseError::Lost`]. See [`super::Leases::with_lease`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe in effect: dropping the future drops `work` and the guard,
    /// which releases the lease in the background.
    pub async fn run<F, Fut, T>(self, work: F) -> Result<T, WithLeaseError>
    where
        F: FnOnce(Ownership) -> Fut,
        Fut: Future<Output = T>,
    {
        let guard = self.into_guard().map_err(WithLeaseError::Acquire)?;
        let ownership = guard.ownership();
        let work = work(ownership.clone());
        tokio::select! {
            // A loss observed in the same poll as the work's end wins: the
            // output may have been produced without the lease.
            biased;
            lost = ownership.lost() => Err(WithLeaseError::Lost(lost)),
            output = work => {
                if let Err(e) = guard.release().await {
                    // The output stands: it was produced while every renewal
                    // succeeded. An unreleased lease lapses after its TTL.
                    tracing::debug!(error = %e, route = %ownership.route(), "releasing a managed lease failed");
                }
                Ok(output)
            }
        }
    }
}

/// The guard's background task.
struct Renewer {
    lease: Lease,
    id: Arc<Identity>,
    status: watch::Sender<Status>,
    cancel: CancellationToken,
}

impl Renewer {
    async fn run(mut self, mut release: oneshot::Receiver<ReleaseReply>) {
        let ttl = self.lease.ttl;
        let ttl_secs = ttl.as_secs().max(1);
        let interval = ttl / 3;
        // A renewal that has not answered by the next slot is not going to
        // help; it also must not outlive the client's own request timeout.
        let renew_timeout = interval.min(self.lease.conn.shared().config.request_timeout);
        let mut conn_state = self.lease.conn.state();
        // Conservative: the TTL counts from before the request that set it.
        let mut expires = Instant::now() + ttl;
        let mut next = if self.lease.already_held {
            Instant::now()
        } else {
            Instant::now() + interval
        };
        loop {
            tokio::select! {
                biased;
                asked = &mut release => {
                    let result = self.lease.release_in_place().await;
                    self.end(LossReason::Released);
                    if let Ok(reply) = asked {
                        let _ = reply.send(result);
                    }
                    return;
                }
                changed = conn_state.changed() => {
                    if changed.is_err() {
                        return self.end(LossReason::ClientClosed);
                    }
                    if let Some(reason) = self.session_over() {
                        return self.end(reason);
                    }
                }
                () = tokio::time::sleep_until(next) => {
                    let sent = Instant::now();
                    // Never wait for an answer past the point where the
                    // lease may already have expired.
                    let timeout = renew_timeout.min(expires.saturating_duration_since(sent));
                    let opts = RequestOptions::pinned(self.lease.generation).with_timeout(timeout);
                    match self.lease.renew_with(ttl_secs, opts).await {
                        Ok(()) => {
                            expires = sent + ttl;
                            next = sent + interval;
                        }
                        Err(e) => {
                            if let Some(reason) = self.session_over() {
                                return self.end(reason);
                            }
                            // Transient (a timeout, a busy broker): try again
                            // sooner, as long as the lease can still be ours.
                            let retry = Instant::now() + (interval / 4).min(Duration::from_secs(1));
                            if e.is_retryable() && retry < expires {
                                tracing::debug!(error = %e, route = %self.lease.route, "lease renewal failed; retrying");
                                next = retry;
                            } else {
                                return self.end(LossReason::RenewalFailed(e));
                            }
                        }
                    }
                }
            }
        }
    }

    /// `Some` once the lease's session is no longer the current one.
    fn session_over(&self) -> Option<LossReason> {
        match self.lease.conn.check_generation(self.lease.generation) {
            Ok(()) => None,
            Err(e) if e.kind() == ErrorKind::Closed => Some(LossReason::ClientClosed),
            Err(_) => Some(LossReason::SessionEnded),
        }
    }

    fn end(self, reason: LossReason) {
        // Cancel first: work must stop before anyone can observe the loss
        // and act on it.
        self.cancel.cancel();
        if !matches!(reason, LossReason::Released) {
            tracing::debug!(route = %self.lease.route, ?reason, "lease ownership lost");
        }
        self.status.send_replace(Status::Ended(OwnershipLost {
            route: self.id.route.clone(),
            fencing_token: self.id.fencing_token,
            reason,
        }));
        // `self.lease` drops here: when the session still lives and the
        // lease was not released (a refused renewal), its Drop sends a
        // best-effort RELEASE, harmless if it is no longer ours.
    }
}
