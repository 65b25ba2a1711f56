//! Injectable time and the engines' timer service.
//!
//! Every time-based rule of the broker (queue visibility, lease TTLs and
//! waits, RPC timeouts, stream debounce, schedule fires, KV idle
//! transactions, token expiry) reads [`Clock::now`] and asks [`Timers`] for a
//! tick instead of sleeping on its own. Tests swap in [`Clock::manual`] and
//! call [`Clock::advance`]: due ticks run before `advance` returns, so TTL
//! logic is tested without real sleeps.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fitz_protocol::types::Domain;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// The broker's source of time. Cheap to clone; clones share one time line.
///
/// Time is a [`SystemTime`] so engines that need wall-clock semantics (cron in
/// UTC, absolute `visible_at` epoch milliseconds) and engines that need
/// durations share one representation. The system clock is derived from a
/// monotonic [`Instant`] anchored once at creation, so it never jumps
/// backwards when the host's wall clock is adjusted.
#[derive(Clone)]
pub struct Clock {
    inner: Arc<ClockInner>,
}

struct ClockInner {
    source: Source,
    listeners: Mutex<Vec<Weak<dyn AdvanceListener>>>,
}

enum Source {
    System {
        base_system: SystemTime,
        base_instant: Instant,
    },
    Manual(Mutex<SystemTime>),
}

/// Something that must run its due timers when a manual clock moves.
pub(crate) trait AdvanceListener: Send + Sync {
    fn advanced(&self, now: SystemTime);
}

impl Clock {
    /// Real time: monotonic, anchored to the host's wall clock at creation.
    pub fn system() -> Self {
        Self::with_source(Source::System {
            base_system: SystemTime::now(),
            base_instant: Instant::now(),
        })
    }

    /// A clock that stands still at `start` until [`Clock::advance`] moves it.
    pub fn manual(start: SystemTime) -> Self {
        Self::with_source(Source::Manual(Mutex::new(start)))
    }

    fn with_source(source: Source) -> Self {
        Self {
            inner: Arc::new(ClockInner {
                source,
                listeners: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The current time.
    pub fn now(&self) -> SystemTime {
        match &self.inner.source {
            Source::System {
                base_system,
                base_instant,
            } => *base_system + base_instant.elapsed(),
            Source::Manual(t) => *t.lock(),
        }
    }

    /// Milliseconds since the Unix epoch (0 before it).
    pub fn unix_millis(&self) -> u64 {
        to_unix_millis(self.now())
    }

    /// True for a clock made by [`Clock::manual`].
    pub fn is_manual(&self) -> bool {
        matches!(self.inner.source, Source::Manual(_))
    }

    /// Moves a manual clock forward by `by` and runs every timer that became
    /// due, before returning. A system clock cannot be moved: the call is
    /// ignored (and logged) so shared test helpers work with either clock.
    pub fn advance(&self, by: Duration) {
        let now = match &self.inner.source {
            Source::Manual(t) => {
                let mut t = t.lock();
                *t += by;
                *t
            }
            Source::System { .. } => {
                tracing::debug!(?by, "advance ignored: the system clock cannot be moved");
                return;
            }
        };
        // Collect first: listeners call into engines, which must never run
        // under this clock's lock.
        let listeners: Vec<_> = {
            let mut l = self.inner.listeners.lock();
            l.retain(|w| w.strong_count() > 0);
            l.iter().filter_map(Weak::upgrade).collect()
        };
        for l in listeners {
            l.advanced(now);
        }
    }

    pub(crate) fn subscribe(&self, listener: Weak<dyn AdvanceListener>) {
        self.inner.listeners.lock().push(listener);
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock")
            .field("manual", &self.is_manual())
            .field("now", &self.now())
            .finish()
    }
}

/// Milliseconds since the Unix epoch of `t` (0 before the epoch).
pub fn to_unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Seconds since the Unix epoch of `t` (0 before the epoch).
pub fn to_unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The seven domains in a fixed order, for per-domain tables.
pub(crate) const DOMAINS: [Domain; 7] = [
    Domain::Kv,
    Domain::Queue,
    Domain::Rpc,
    Domain::Lease,
    Domain::Notice,
    Domain::Stream,
    Domain::Schedule,
];

pub(crate) fn domain_index(d: Domain) -> Option<usize> {
    DOMAINS.iter().position(|x| *x == d)
}

/// Wake-up requests of the engines: one pending deadline per domain.
///
/// An engine keeps its own deadlines (a lease's TTL, a parked RESERVE's
/// wait …) and asks for a tick at the earliest one with [`Timers::wake_at`].
/// A request later than the one already pending is ignored; a tick clears
/// the domain's request, so [`crate::engines::Engine::tick`] asks again for
/// its next deadline. Ticks may arrive early or more than once; engines
/// compare their deadlines with the `now` they are given.
///
/// Under the system clock a background task sleeps until the earliest
/// deadline. Under a manual clock ticks run inside [`Clock::advance`], and a
/// request that is already due runs promptly on the background task.
pub struct Timers {
    clock: Clock,
    pending: Mutex<[Option<SystemTime>; 7]>,
    changed: Notify,
}

impl Timers {
    pub(crate) fn new(clock: Clock) -> Self {
        Self {
            clock,
            pending: Mutex::new([None; 7]),
            changed: Notify::new(),
        }
    }

    /// The clock the deadlines are measured on.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Asks for a tick of `domain` at or after `at`. Never blocks and never
    /// calls the engine synchronously, so it is safe under an engine's lock.
    pub fn wake_at(&self, domain: Domain, at: SystemTime) {
        let Some(i) = domain_index(domain) else {
            return;
        };
        let mut p = self.pending.lock();
        if p[i].is_none_or(|cur| at < cur) {
            p[i] = Some(at);
            drop(p);
            self.changed.notify_one();
        }
    }

    /// Asks for a tick of `domain` after `delay` from now.
    pub fn wake_after(&self, domain: Domain, delay: Duration) {
        self.wake_at(domain, self.clock.now() + delay);
    }

    /// Removes and returns the domains whose deadline is at or before `now`.
    pub(crate) fn take_due(&self, now: SystemTime) -> Vec<Domain> {
        let mut p = self.pending.lock();
        let mut due = Vec::new();
        for (i, slot) in p.iter_mut().enumerate() {
            if slot.is_some_and(|t| t <= now) {
                *slot = None;
                due.push(DOMAINS[i]);
            }
        }
        due
    }

    /// The earliest pending deadline.
    pub(crate) fn next_deadline(&self) -> Option<SystemTime> {
        self.pending.lock().iter().flatten().min().copied()
    }

    /// Resolves when a wake-up request was added or moved earlier.
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_on_advance() {
        let start = UNIX_EPOCH + Duration::from_secs(1_000);
        let c = Clock::manual(start);
        assert_eq!(c.now(), start);
        c.advance(Duration::from_millis(1500));
        assert_eq!(c.unix_millis(), 1_001_500);
        assert!(c.is_manual());
    }

    #[test]
    fn system_clock_is_monotonic_and_ignores_advance() {
        let c = Clock::system();
        let a = c.now();
        c.advance(Duration::from_secs(3600));
        let b = c.now();
        assert!(b >= a);
        assert!(b.duration_since(a).unwrap() < Duration::from_secs(60));
    }

    #[test]
    fn timers_keep_the_earliest_request_per_domain() {
        let c = Clock::manual(UNIX_EPOCH);
        let t = Timers::new(c.clone());
        t.wake_at(Domain::Kv, UNIX_EPOCH + Duration::from_secs(10));
        t.wake_at(Domain::Kv, UNIX_EPOCH + Duration::from_secs(20));
        t.wake_at(Domain::Queue, UNIX_EPOCH + Duration::from_secs(5));
        assert_eq!(t.next_deadline(), Some(UNIX_EPOCH + Duration::from_secs(5)));
        assert_eq!(
            t.take_due(UNIX_EPOCH + Duration::from_secs(10)),
            vec![Domain::Kv, Domain::Queue]
        );
        assert_eq!(t.next_deadline(), None);
    }
}
