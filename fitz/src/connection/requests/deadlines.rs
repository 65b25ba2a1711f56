//! The book's request deadlines: a FIFO for deadlines that do not go back
//! in time (every request with the client's default timeout), removed
//! lazily, and an ordered set for the others.
//!
//! A `BTreeSet<(Instant, id)>` insert and remove per request was ~1 k
//! instructions per request on the KV write path. A FIFO entry is not
//! removed when its request finishes: it is dropped when it reaches the
//! front ([`Deadlines::first`] skips and drops dead entries, asking the
//! book whether an id still waits with that deadline), or by
//! [`Deadlines::compact`] once dead entries could outnumber the live ones
//! (at most 2 × live + 1,024 entries are kept: bounded memory however long
//! a request lingers at the front).

use std::collections::{BTreeSet, VecDeque};

use tokio::time::Instant;

/// Entries the FIFO may hold beyond twice the live requests.
const SLACK: usize = 1024;

#[derive(Default)]
pub(super) struct Deadlines {
    /// Non-decreasing deadlines, dead ones included until dropped.
    fifo: VecDeque<(Instant, u64)>,
    /// Deadlines earlier than the FIFO's last when they came; removed
    /// eagerly.
    set: BTreeSet<(Instant, u64)>,
}

impl Deadlines {
    /// Adds request `id`'s deadline `at`.
    pub fn insert(&mut self, at: Instant, id: u64) {
        if self.fifo.back().is_none_or(|&(last, _)| last <= at) {
            self.fifo.push_back((at, id));
        } else {
            self.set.insert((at, id));
        }
    }

    /// Request `id` (deadline `at`) finished. A FIFO entry stays until it is
    /// dropped as dead (see the module docs).
    pub fn remove(&mut self, at: Instant, id: u64) {
        if !self.set.is_empty() {
            self.set.remove(&(at, id));
        }
    }

    /// The earliest live deadline and its id; dead FIFO entries in front
    /// are dropped. `live(id, at)`: does request `id` still wait with
    /// deadline `at`?
    pub fn first(&mut self, live: impl Fn(u64, Instant) -> bool) -> Option<(Instant, u64)> {
        while let Some(&(at, id)) = self.fifo.front() {
            if live(id, at) {
                break;
            }
            self.fifo.pop_front();
        }
        match (self.fifo.front(), self.set.first()) {
            (Some(&f), Some(&s)) => Some(f.min(s)),
            (f, s) => f.or(s).copied(),
        }
    }

    /// Removes `(at, id)`, the entry [`Deadlines::first`] returned.
    pub fn pop(&mut self, at: Instant, id: u64) {
        if self.fifo.front() == Some(&(at, id)) {
            self.fifo.pop_front();
        } else {
            self.set.remove(&(at, id));
        }
    }

    /// Drops dead FIFO entries once there are more than 2 × `live_count` +
    /// 1,024 of them.
    pub fn compact(&mut self, live_count: usize, live: impl Fn(u64, Instant) -> bool) {
        if self.fifo.len() > 2 * live_count + SLACK {
            self.fifo.retain(|&(at, id)| live(id, at));
        }
    }

    /// Entries held (live and dead; tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.fifo.len() + self.set.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::time::Duration;

    #[test]
    fn earliest_live_first_across_fifo_and_set_and_dead_entries_skipped() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut d = Deadlines::default();
        let mut live: HashSet<u64> = HashSet::new();
        for (id, ms) in [(1, 10), (2, 20), (3, 30), (4, 5), (5, 25)] {
            d.insert(at(ms), id);
            live.insert(id);
        }
        let is_live = |l: &HashSet<u64>| {
            let l = l.clone();
            move |id, _| l.contains(&id)
        };
        assert_eq!(d.first(is_live(&live)), Some((at(5), 4)));
        live.remove(&4);
        d.remove(at(5), 4);
        assert_eq!(d.first(is_live(&live)), Some((at(10), 1)));
        live.remove(&1);
        d.remove(at(10), 1);
        live.remove(&2);
        d.remove(at(20), 2);
        // 1 and 2 were dead FIFO entries: dropped on the way to 5.
        assert_eq!(d.first(is_live(&live)), Some((at(25), 5)));
        assert_eq!(d.len(), 2);
        d.pop(at(25), 5);
        live.remove(&5);
        assert_eq!(d.first(is_live(&live)), Some((at(30), 3)));
        d.pop(at(30), 3);
        live.remove(&3);
        assert_eq!(d.first(is_live(&live)), None);
    }

    #[test]
    fn dead_entries_behind_a_lingering_one_are_bounded() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        // Request 0 lingers at the front; every later one finishes at once.
        d.insert(t0, 0);
        for id in 1..100_000u64 {
            d.insert(t0 + Duration::from_micros(id), id);
            d.remove(t0 + Duration::from_micros(id), id);
            d.compact(1, |id, _| id == 0);
            assert!(d.len() <= 2 + SLACK + 1, "{} entries", d.len());
        }
        assert_eq!(d.first(|id, _| id == 0), Some((t0, 0)));
    }
}
