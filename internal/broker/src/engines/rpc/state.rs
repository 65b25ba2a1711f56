//! The RPC engine's state: registered workers and their credit, calls in their phases, per-route wait queues, and the hashers of its maps.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use fitz_protocol::rpc::{Lifecycle, Response, RpcId};
use fitz_protocol::{Message, Str};

use crate::auth::Family;
use crate::session::{Session, SessionId};

pub(super) use crate::hash::Seeded;

pub(super) type Map<K, V> = HashMap<K, V, Seeded>;

#[derive(Default)]
pub(super) struct State {
    /// Credit of every registration, by registration id.
    pub(super) credit: Map<u64, Credit>,
    pub(super) calls: Map<u64, Call>,
    pub(super) by_caller: Map<(Family, RpcId), u64>,
    pub(super) by_worker_id: Map<(Family, RpcId), u64>,
    pub(super) queues: Map<Family, Map<Str, VecDeque<u64>>>,
    pub(super) queued: usize,
    /// Call deadlines (queued and running calls).
    pub(super) deadlines: Deadlines,
    /// Cleanup grace deadlines of cancelled calls.
    pub(super) graces: BTreeSet<(SystemTime, u64)>,
    /// The tick requested and not yet run.
    pub(super) armed: Option<SystemTime>,
    pub(super) next_call: u64,
    /// Dispatch counter stamping `Credit::last_used`.
    pub(super) uses: u64,
    pub(super) invocations: u64,
}

/// Call deadlines in time order. Deadlines that do not go back in time (the
/// default timeout on a forward clock: nearly every call) go to a FIFO whose
/// entries are removed lazily, saving a B-tree insert and remove per call
/// (~690 of ~3,900 instructions per call in the engine, callgrind on
/// `rpc/throughput_256`); the rest go to a B-tree. A FIFO entry is live
/// while its call exists with that deadline (see [`Deadlines::pop_due`]);
/// dead entries are dropped when popped or when the FIFO holds more than
/// twice the live calls (plus [`Deadlines::SLACK`]), which bounds it.
#[derive(Default)]
pub(super) struct Deadlines {
    fifo: VecDeque<(SystemTime, u64)>,
    set: BTreeSet<(SystemTime, u64)>,
}

impl Deadlines {
    /// Dead FIFO entries tolerated beyond twice the live calls.
    const SLACK: usize = 1024;

    pub(super) fn insert(&mut self, at: SystemTime, call_id: u64, calls: &Map<u64, Call>) {
        if self.fifo.back().is_none_or(|&(last, _)| last <= at) {
            self.fifo.push_back((at, call_id));
            if self.fifo.len() > 2 * calls.len() + Self::SLACK {
                self.fifo
                    .retain(|(at, id)| calls.get(id).is_some_and(|c| c.deadline == *at));
            }
        } else {
            self.set.insert((at, call_id));
        }
    }

    /// Forgets a deadline (a FIFO entry dies with its call).
    pub(super) fn remove(&mut self, at: SystemTime, call_id: u64) {
        if !self.set.is_empty() {
            self.set.remove(&(at, call_id));
        }
    }

    /// The earliest deadline (possibly a dead FIFO entry: an early tick).
    pub(super) fn first(&self) -> Option<SystemTime> {
        let f = self.fifo.front().map(|e| e.0);
        let s = self.set.first().map(|e| e.0);
        f.into_iter().chain(s).min()
    }

    /// Takes the earliest deadline due at `now`: `Some(Some(id))` for a call
    /// to expire, `Some(None)` for a dead entry, `None` when nothing is due.
    pub(super) fn pop_due(
        &mut self,
        now: SystemTime,
        calls: &Map<u64, Call>,
    ) -> Option<Option<u64>> {
        let f = self.fifo.front().copied().filter(|e| e.0 <= now);
        let s = self.set.first().copied().filter(|e| e.0 <= now);
        match (f, s) {
            (Some(a), Some(b)) if b < a => {
                self.set.pop_first();
                Some(Some(b.1))
            }
            (Some((at, id)), _) => {
                self.fifo.pop_front();
                let live = calls
                    .get(&id)
                    .is_some_and(|c| c.deadline == at && !matches!(c.phase, Phase::Cancelled(..)));
                Some(live.then_some(id))
            }
            (None, Some(b)) => {
                self.set.pop_first();
                Some(Some(b.1))
            }
            (None, None) => None,
        }
    }
}

pub(super) struct Credit {
    pub(super) session: Session,
    pub(super) pattern: Arc<str>,
    pub(super) wildcard: bool,
    pub(super) max: u32,
    pub(super) in_flight: u32,
    pub(super) supports_cancellation: bool,
    pub(super) last_used: u64,
}

impl Credit {
    pub(super) fn free(&self) -> bool {
        self.in_flight < self.max && !self.session.is_closed()
    }
}

pub(super) struct Call {
    pub(super) family: Family,
    pub(super) caller_id: RpcId,
    pub(super) caller_session: SessionId,
    /// `None` once the caller is detached (cancelled, timed out, gone).
    pub(super) caller: Option<Session>,
    pub(super) route: Str,
    /// Held while queued, handed to the worker on dispatch.
    pub(super) body: Bytes,
    pub(super) has_budget: bool,
    pub(super) deadline: SystemTime,
    pub(super) phase: Phase,
}

pub(super) enum Phase {
    Queued,
    Running(Running),
    /// Cancelled (or timed out) on a supporting worker: credit is held
    /// until cleanup acknowledgement, the worker's session end, or the
    /// grace deadline closes that session.
    Cancelled(Running, SystemTime),
}

pub(super) struct Running {
    pub(super) registration: u64,
    pub(super) worker: Session,
    pub(super) worker_id: RpcId,
    pub(super) supports_cancellation: bool,
    pub(super) next_sequence: u64,
    /// The worker acknowledged cleanup before any cancellation reached it.
    pub(super) cleaned_up: bool,
}

impl Call {
    pub(super) fn running(&self) -> Option<&Running> {
        match &self.phase {
            Phase::Queued => None,
            Phase::Running(r) | Phase::Cancelled(r, _) => Some(r),
        }
    }
}

/// Sends a terminal error RESPONSE with `id` (never frame-correlated).
pub(super) fn terminal(session: &Session, id: RpcId, code: u32, message: &str) {
    let r = Response::terminal_error(id, code, message);
    // A short coded body always fits a record.
    let _ = session.send_frame(None, |b| r.encode_record(b));
}

pub(super) fn lifecycle(session: &Session, l: Lifecycle) {
    // 18 bytes always fit a record.
    let _ = session.send_frame(None, |b| l.encode_record(b));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn call(deadline: SystemTime) -> Call {
        Call {
            family: 0,
            caller_id: RpcId::default(),
            caller_session: 0,
            caller: None,
            route: Str::from("rpc://a/b/c"),
            body: Bytes::new(),
            has_budget: false,
            deadline,
            phase: Phase::Queued,
        }
    }

    fn due(d: &mut Deadlines, now: SystemTime, calls: &Map<u64, Call>) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(x) = d.pop_due(now, calls) {
            out.extend(x);
        }
        out
    }

    #[test]
    fn deadlines_pop_in_time_order_and_skip_finished_calls() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut calls: Map<u64, Call> = Map::default();
        let mut d = Deadlines::default();
        // 1 and 3 in order (FIFO), 2 goes back in time (B-tree).
        for (id, s) in [(1, 10), (3, 30), (2, 5)] {
            calls.insert(id, call(at(s)));
            d.insert(at(s), id, &calls);
        }
        assert_eq!(d.first(), Some(at(5)));
        // Call 3 finished: its FIFO entry is dead.
        calls.remove(&3);
        d.remove(at(30), 3);
        assert!(due(&mut d, at(4), &calls).is_empty());
        assert_eq!(due(&mut d, at(10), &calls), vec![2, 1]);
        assert!(due(&mut d, at(100), &calls).is_empty());
        assert_eq!(d.first(), None);
    }

    #[test]
    fn dead_fifo_entries_stay_bounded_by_the_live_calls() {
        let t0 = SystemTime::UNIX_EPOCH;
        let calls: Map<u64, Call> = Map::default();
        let mut d = Deadlines::default();
        let mut live: Map<u64, Call> = Map::default();
        for id in 0..10_000u64 {
            let at = t0 + Duration::from_millis(id);
            live.insert(id, call(at));
            d.insert(at, id, &live);
            // Every call finishes right away.
            live.remove(&id);
            d.remove(at, id);
        }
        assert!(d.fifo.len() <= Deadlines::SLACK + 1, "{}", d.fifo.len());
        assert!(due(&mut d, t0 + Duration::from_secs(100), &calls).is_empty());
    }
}
