//! The lease engine's state: leases with their holders and FIFO waiters, LIST snapshots, what each session holds or waits for, the fencing token counter; and the RFC 3339 times LIST and QUERY report.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fitz_protocol::lease::{LeaseInfo, ListCursor, ListOk};
use fitz_protocol::{Str, WireError, codes};

use crate::auth::Family;
use crate::session::{Reply, SessionId};

use super::*;

pub(super) struct Holder {
    pub(super) owner: Str,
    pub(super) session: SessionId,
    pub(super) token: u64,
    pub(super) expires: SystemTime,
    pub(super) acquired_at: SystemTime,
    pub(super) renewals: u32,
}

pub(super) struct Waiter {
    pub(super) id: u64,
    pub(super) owner: Str,
    pub(super) session: SessionId,
    pub(super) ttl: Duration,
    pub(super) deadline: SystemTime,
    pub(super) reply: Reply,
}

#[derive(Default)]
pub(super) struct Lease {
    pub(super) holder: Option<Holder>,
    pub(super) waiters: VecDeque<Waiter>,
}

pub(super) struct Snapshot {
    pub(super) family: Family,
    pub(super) session: SessionId,
    pub(super) pattern: String,
    pub(super) items: Vec<LeaseInfo>,
    /// The only offset a continuation may present.
    pub(super) next: usize,
    pub(super) expires: SystemTime,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) leases: HashMap<Family, BTreeMap<Arc<str>, Lease>>,
    pub(super) expiries: BTreeSet<(SystemTime, Key)>,
    pub(super) waiter_due: BTreeSet<(SystemTime, u64)>,
    pub(super) waiter_keys: HashMap<u64, Key>,
    /// Leases each session holds or waits for.
    pub(super) by_session: HashMap<SessionId, HashSet<Key>>,
    pub(super) snapshots: BTreeMap<u64, Snapshot>,
    pub(super) last_token: u64,
    pub(super) next_waiter: u64,
    pub(super) next_snapshot: u64,
}

pub(super) fn err(code: u32, message: impl Into<Str>) -> WireError {
    WireError::coded(code, message)
}

pub(super) fn bad(message: impl Into<Str>) -> WireError {
    err(codes::LEASE_BAD_REQUEST, message)
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2));
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (the
/// well-known era-based conversion: 400-year eras of 146,097 days, years
/// starting in March so the leap day falls last).
pub(super) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

pub(super) fn info_len(i: &LeaseInfo) -> usize {
    4 + i.route.len() + 4 + i.owner.len() + 8 + 4 + i.acquired_at.len() + 8 + 4
}

impl State {
    pub(super) fn lease(&self, family: Family, route: &str) -> Option<&Lease> {
        self.leases.get(&family)?.get(route)
    }

    pub(super) fn lease_mut(&mut self, key: &Key) -> Option<&mut Lease> {
        self.leases.get_mut(&key.0)?.get_mut(&*key.1)
    }

    pub(super) fn next_token(&mut self) -> Option<u64> {
        self.last_token = self.last_token.checked_add(1)?;
        Some(self.last_token)
    }

    pub(super) fn track(&mut self, session: SessionId, key: &Key) {
        self.by_session
            .entry(session)
            .or_default()
            .insert(key.clone());
    }

    /// Forgets that `session` is involved in `key` unless it still holds or
    /// waits for it.
    pub(super) fn untrack(&mut self, session: SessionId, key: &Key) {
        let involved = self.lease(key.0, &key.1).is_some_and(|l| {
            l.holder.as_ref().is_some_and(|h| h.session == session)
                || l.waiters.iter().any(|w| w.session == session)
        });
        if involved {
            return;
        }
        if let Some(set) = self.by_session.get_mut(&session) {
            set.remove(key);
            if set.is_empty() {
                self.by_session.remove(&session);
            }
        }
    }

    /// Drops the lease entry once nobody holds or waits for it.
    pub(super) fn forget_if_idle(&mut self, key: &Key) {
        if let Some(m) = self.leases.get_mut(&key.0) {
            if m.get(&*key.1)
                .is_some_and(|l| l.holder.is_none() && l.waiters.is_empty())
            {
                m.remove(&*key.1);
            }
            if m.is_empty() {
                self.leases.remove(&key.0);
            }
        }
    }

    pub(super) fn remove_waiter(&mut self, key: &Key, id: u64) -> Option<Waiter> {
        let lease = self.lease_mut(key)?;
        let i = lease.waiters.iter().position(|w| w.id == id)?;
        let w = lease.waiters.remove(i)?;
        self.waiter_due.remove(&(w.deadline, id));
        self.waiter_keys.remove(&id);
        self.untrack(w.session, key);
        Some(w)
    }

    /// Makes `session`/`owner` the holder of a lease nobody holds.
    pub(super) fn grant(
        &mut self,
        key: &Key,
        owner: Str,
        session: SessionId,
        expires: SystemTime,
        now: SystemTime,
    ) -> Option<u64> {
        let token = self.next_token()?;
        self.leases
            .entry(key.0)
            .or_default()
            .entry(key.1.clone())
            .or_default()
            .holder = Some(Holder {
            owner,
            session,
            token,
            expires,
            acquired_at: now,
            renewals: 0,
        });
        self.expiries.insert((expires, key.clone()));
        self.track(session, key);
        Some(token)
    }

    pub(super) fn snapshot_page(&mut self, id: u64, limit: usize) -> ListOk {
        let Some(snap) = self.snapshots.get_mut(&id) else {
            return ListOk::default();
        };
        let mut page = ListOk::default();
        let mut used = 0usize;
        while snap.next < snap.items.len() && page.items.len() < limit {
            let item = &snap.items[snap.next];
            let len = info_len(item);
            if used + len > PAGE_BUDGET && !page.items.is_empty() {
                break;
            }
            used += len;
            page.items.push(item.clone());
            snap.next += 1;
        }
        if snap.next < snap.items.len() {
            page.next = Some(ListCursor {
                snapshot_id: id,
                offset: u32::try_from(snap.next).unwrap_or(u32::MAX),
            });
        } else {
            self.snapshots.remove(&id);
        }
        page
    }

    pub(super) fn earliest_deadline(&self) -> Option<SystemTime> {
        let a = self.expiries.first().map(|(t, _)| *t);
        let b = self.waiter_due.first().map(|(t, _)| *t);
        a.into_iter().chain(b).min()
    }
}
