//! What each chaos workload did, op by op, and the checks on it afterwards.
//!
//! Every operation gets an id and one of three outcomes, as in Jepsen's
//! acknowledged-operations ledger: **acknowledged** (the broker said it was
//! done), **ambiguous** (it failed after it may have reached the broker:
//! `Error::maybe_applied`) or **not applied** (it failed and the client
//! guarantees it had no effect). The checks then hold the broker and the
//! client to their word: nothing acknowledged is lost, nothing reported not
//! applied shows up, ambiguous operations may go either way.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

/// How far before a crash (SIGKILL) a Buffered commit may be lost: the
/// broker's flush interval for Buffered commits on local storage (100 ms)
/// with room for scheduling. Queue enqueues and completions are Buffered
/// (the spec makes queue persistence best effort); KV and Stream commits
/// here are Sync and get no such allowance.
pub const CRASH_WINDOW: Duration = Duration::from_millis(250);

/// How long after the broker sent an acknowledgement the client may record
/// it (the reply in flight, the client's task scheduled).
pub const ACK_LAG: Duration = Duration::from_millis(50);

/// How one operation ended, as the client reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done, as far as the broker said.
    Acked,
    /// May or may not have been applied.
    Ambiguous,
    /// Certainly not applied.
    NotApplied,
}

impl Outcome {
    /// The outcome of a single request.
    pub fn of<T>(r: &fitz::Result<T>) -> Outcome {
        match r {
            Ok(_) => Outcome::Acked,
            Err(e) if e.maybe_applied() => Outcome::Ambiguous,
            Err(_) => Outcome::NotApplied,
        }
    }
}

/// The ids of one workload's writes by outcome.
#[derive(Debug, Default, Clone)]
pub struct Writes {
    /// Acknowledged ids.
    pub acked: BTreeSet<u64>,
    /// Ambiguous ids.
    pub ambiguous: BTreeSet<u64>,
    /// Ids reported not applied.
    pub not_applied: BTreeSet<u64>,
}

impl Writes {
    /// Records `id`'s outcome.
    pub fn record(&mut self, id: u64, outcome: Outcome) {
        match outcome {
            Outcome::Acked => self.acked.insert(id),
            Outcome::Ambiguous => self.ambiguous.insert(id),
            Outcome::NotApplied => self.not_applied.insert(id),
        };
    }

    /// Checks what the broker holds (`present`) against the ledger: every
    /// acknowledged id present, no id reported not applied present, nothing
    /// present that was never written. Returns the violations.
    pub fn check(&self, what: &str, present: &BTreeSet<u64>) -> Vec<String> {
        let mut v = Vec::new();
        let lost: Vec<_> = self.acked.difference(present).collect();
        if !lost.is_empty() {
            v.push(format!("{what}: acknowledged but lost: {}", sample(&lost)));
        }
        let phantom: Vec<_> = self.not_applied.intersection(present).collect();
        if !phantom.is_empty() {
            v.push(format!(
                "{what}: reported not applied but applied: {}",
                sample(&phantom)
            ));
        }
        let unknown: Vec<_> = present
            .iter()
            .filter(|id| {
                !self.acked.contains(id)
                    && !self.ambiguous.contains(id)
                    && !self.not_applied.contains(id)
            })
            .collect();
        if !unknown.is_empty() {
            v.push(format!(
                "{what}: present but never written: {}",
                sample(&unknown)
            ));
        }
        v
    }

    /// `acked / ambiguous / not applied` counts.
    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.acked.len(),
            self.ambiguous.len(),
            self.not_applied.len(),
        )
    }
}

fn sample<T: fmt::Debug>(ids: &[T]) -> String {
    let shown: Vec<_> = ids.iter().take(8).collect();
    if ids.len() > shown.len() {
        format!("{shown:?} … ({} in all)", ids.len())
    } else {
        format!("{shown:?}")
    }
}

/// Every workload's record of a run.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    /// KV transactions, each writing its own key.
    pub kv: Writes,
    /// Queue enqueues, each message carrying its id.
    pub queue: Writes,
    /// Deliveries per message id.
    pub deliveries: BTreeMap<u64, u32>,
    /// Completions the broker confirmed.
    pub completed: BTreeSet<u64>,
    /// Stream appends (one record per committed session).
    pub stream: Writes,
    /// Records the follower saw, in order: `(offset, id)`.
    pub followed: Vec<(u64, u64)>,
    /// Fencing tokens of successive lease grants.
    pub fencing: Vec<u64>,
    /// Liveness probes that found the subscription and the worker alive.
    pub probes: u32,
    /// Violations seen while the run went on.
    pub violations: Vec<String>,
    /// When the broker was killed (SIGKILL restarts).
    pub crashes: Vec<Instant>,
    /// When each enqueue was acknowledged.
    pub enqueued_at: HashMap<u64, Instant>,
    /// When each completion was confirmed.
    pub completed_at: HashMap<u64, Instant>,
    /// Queue completions a crash undid within [`CRASH_WINDOW`] (the message
    /// came back).
    pub undone_by_crash: usize,
    /// Acknowledged enqueues a crash lost within [`CRASH_WINDOW`].
    pub lost_to_crash: usize,
}

impl Ledger {
    /// True when a crash came within [`CRASH_WINDOW`] after `at`, or just
    /// before it: an acknowledgement the broker sent right before it was
    /// killed is recorded by the client a moment later (within
    /// [`ACK_LAG`]).
    pub fn crash_after(&self, at: Instant) -> bool {
        self.crash_gap(at).is_some_and(|gap| gap <= CRASH_WINDOW)
            || self.crash_before(at).is_some_and(|gap| gap <= ACK_LAG)
    }

    /// How long after `at` the next crash came, if one did.
    pub fn crash_gap(&self, at: Instant) -> Option<Duration> {
        self.crashes
            .iter()
            .filter(|c| **c >= at)
            .map(|c| c.duration_since(at))
            .min()
    }

    /// How long before `at` the last crash came, if one did.
    pub fn crash_before(&self, at: Instant) -> Option<Duration> {
        self.crashes
            .iter()
            .filter(|c| **c <= at)
            .map(|c| at.duration_since(*c))
            .min()
    }

    /// Where `at` lies between crashes, for a report.
    pub fn when(&self, at: Option<&Instant>) -> String {
        let Some(at) = at else {
            return String::new();
        };
        format!(
            " (last SIGKILL {:?} before, next {:?} after)",
            self.crash_before(*at),
            self.crash_gap(*at)
        )
    }

    /// A delivery of queue message `id`: a message is never delivered again
    /// once its completion was confirmed — unless a crash right after the
    /// confirmation undid it (see [`CRASH_WINDOW`]).
    pub fn delivered(&mut self, id: u64) {
        if self.completed.remove(&id) {
            let excused = self
                .completed_at
                .get(&id)
                .is_some_and(|at| self.crash_after(*at));
            if excused {
                self.undone_by_crash += 1;
            } else {
                let when = self.when(self.completed_at.get(&id));
                self.violations.push(format!(
                    "queue: message {id} delivered after a confirmed complete{when}"
                ));
            }
        }
        *self.deliveries.entry(id).or_default() += 1;
    }

    /// A confirmed completion of `id`.
    pub fn completed(&mut self, id: u64) {
        self.completed.insert(id);
        self.completed_at.insert(id, Instant::now());
    }

    /// Acknowledged enqueues never delivered, less those a crash excuses
    /// (counted in [`Ledger::lost_to_crash`]).
    pub fn undelivered(&mut self) -> Vec<u64> {
        let missing: Vec<u64> = self
            .queue
            .acked
            .iter()
            .filter(|id| !self.deliveries.contains_key(id))
            .copied()
            .collect();
        let (excused, lost): (Vec<u64>, Vec<u64>) = missing.into_iter().partition(|id| {
            self.enqueued_at
                .get(id)
                .is_some_and(|at| self.crash_after(*at))
        });
        self.lost_to_crash = excused.len();
        lost
    }

    /// A record the stream follower saw: offsets run on without a gap, a
    /// repeat or a reorder.
    pub fn followed(&mut self, offset: u64, id: u64) {
        let want = self.followed.last().map_or(0, |(o, _)| o + 1);
        if offset != want {
            self.violations.push(format!(
                "stream follow: offset {offset} where {want} was due (gap, repeat or reorder)"
            ));
        }
        self.followed.push((offset, id));
    }

    /// A lease grant: fencing tokens strictly increase (an `already_held`
    /// answer repeats the current token).
    pub fn granted(&mut self, token: u64, already_held: bool) {
        if let Some(&last) = self.fencing.last() {
            let ok = if already_held {
                token == last
            } else {
                token > last
            };
            if !ok {
                self.violations.push(format!(
                    "lease: fencing token {token} after {last} (already held: {already_held})"
                ));
            }
        }
        if !already_held || self.fencing.is_empty() {
            self.fencing.push(token);
        }
    }

    /// Queue messages delivered more than once.
    pub fn redelivered(&self) -> usize {
        self.deliveries.values().filter(|n| **n > 1).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checks_catch_what_they_are_for() {
        let mut w = Writes::default();
        w.record(1, Outcome::Acked);
        w.record(2, Outcome::Ambiguous);
        w.record(3, Outcome::NotApplied);
        assert!(w.check("x", &[1].into()).is_empty());
        assert!(w.check("x", &[1, 2].into()).is_empty());
        assert_eq!(w.check("x", &[2].into()).len(), 1, "lost");
        assert_eq!(w.check("x", &[1, 3].into()).len(), 1, "phantom");
        assert_eq!(w.check("x", &[1, 9].into()).len(), 1, "unknown");

        let mut l = Ledger::default();
        l.delivered(5);
        l.completed(5);
        l.delivered(5);
        l.followed(0, 1);
        l.followed(1, 2);
        l.followed(3, 3);
        l.followed(3, 3);
        l.granted(10, false);
        l.granted(10, true);
        l.granted(11, false);
        l.granted(11, false);
        assert_eq!(l.violations.len(), 4, "{:?}", l.violations);
    }
}
