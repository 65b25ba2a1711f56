//! Lease (400–403, 407–410): exclusive, expiring ownership of exact
//! `lease://realm/area/resource` routes with fencing tokens, FIFO waiters,
//! watches and snapshot listing. Everything is in memory and ends with the
//! broker process.
//!
//! # Ownership
//!
//! A lease of one route family is free, or held by one `owner_id` with a
//! fencing token, an expiry and a renewal count. Fencing tokens come from
//! one counter per broker process, so every grant's token is strictly
//! larger than every earlier one, across routes and owners. The counter
//! starts at the broker clock's time in microseconds, so tokens also keep
//! growing across restarts (leases themselves do not survive one): an
//! earlier process issued fewer grants than microseconds passed before the
//! next one started, unless the wall clock went back.
//!
//! * ACQUIRE of a free lease grants it (kind 0, fresh token). The holder's
//!   own owner id gets kind 1 with the same token and an unchanged expiry.
//!   Held by another owner: with `wait_seconds` 0 the answer is 5001
//!   `HeldByOther: <owner>`; otherwise the request joins the lease's FIFO
//!   waiters (at most [`MAX_WAITERS`], 5007 beyond) and is answered kind 2
//!   (token 0), or kind 3 when that owner already waits. A waiter is later
//!   answered on its stored [`Reply`], so with the ACQUIRE's correlation, by
//!   a second type-400 record: kind 0 with a fresh token when the lease
//!   passes to it, or a coded 5006 when its wait ends first.
//! * RENEW keeps the token and sets the expiry `ttl_secs` from now.
//! * RELEASE frees the lease and hands it to the next waiter at once.
//! * A holder whose TTL runs out, or whose session ends, loses the lease the
//!   same way; a session that ends also leaves every wait queue.
//!
//! Expiries and waits are deadlines driven by [`Timers`], so tests move a
//! manual clock. A holder found past its expiry before its tick ran is
//! treated as expired on the spot.
//!
//! # Watches and LIST
//!
//! SUBSCRIBE registers an exact route or a pattern that can match three
//! segments in the shared [`Registry`]. NOTIFY `[sub][route][u32 0]` goes to
//! every matching registration when the set of holders changes: a free lease
//! acquired, a grant to a waiter, a release, an expiry, a disconnect. Not on
//! RENEW, AlreadyHeld, queued or refused ACQUIREs.
//!
//! LIST of an exact route answers zero or one held lease. A wildcard LIST
//! takes a point-in-time snapshot of the held, unexpired leases it matches
//! (in route order) on its first call and pages through it: `limit` 0 means
//! 100, larger limits are clamped to 500, and a page also stops before it
//! would outgrow one record. Continuing requires echoing the returned
//! `(snapshot_id, offset)` with the same pattern from the same route family;
//! anything else, a finished or expired snapshot included, is 5011.
//! Snapshots live [`SNAPSHOT_TTL`], at most [`MAX_SNAPSHOTS_PER_SESSION`]
//! per session and [`MAX_SNAPSHOTS`] in all (the oldest is dropped to admit
//! a new one), and hold at most [`MAX_SNAPSHOT_ITEMS`] leases (a broader
//! selector is refused with 5008 asking to narrow it).
//!
//! # Errors
//!
//! All coded. Decisions where the spec is silent or split: RENEW and RELEASE
//! of a lease nobody holds, or that another owner holds, are 5004; a token
//! mismatch is 5002; a holder past its expiry is 5003; RELEASE of an unknown
//! lease is an error (as fitz-rs CS-006 expects), not a silent success;
//! `ttl_secs` 0 and routes too long for a LIST item to fit a record
//! ([`MAX_ROUTE_LEN`]) are 5008; a watch registration over the shared limits
//! is 5008 with the shared limit message (Lease has no limit code); a
//! malformed payload is 5008, a bad route 5008, a bad watch pattern 5010 and
//! a bad LIST pattern 5012.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fitz_protocol::lease::{
    self as proto, AcquireKind, AcquireOk, Holder as QueryHolder, LeaseInfo, ListOk, Notify,
    QueryOk, RenewOk, SubscribeReply,
};
use fitz_protocol::record::MAX_RECORD_PAYLOAD;
use fitz_protocol::types::{self, Domain};
use fitz_protocol::{Str, WireError, codes, route};
use parking_lot::Mutex;

use super::{DomainRequest, Target, concrete, pattern};
use super::{Engine, LeaseRequest, Refusal, Services};
use crate::auth::Access;
use crate::auth::Family;
use crate::clock::{Clock, Timers};
use crate::registry::Registry;
use crate::session::{CloseReason, Reply, Session};
use crate::storage::StorageError;
use fitz_protocol::route::Scheme;

mod state;

use self::state::*;

pub use fitz_protocol::lease::{MAX_OWNER_LEN, MAX_WAITERS};

/// Longest lease route: a LIST item of any held lease must fit one page.
pub const MAX_ROUTE_LEN: usize = 60_000;
/// How long an unfinished LIST snapshot can be continued.
pub const SNAPSHOT_TTL: Duration = Duration::from_secs(60);
/// Unfinished LIST snapshots per session.
pub const MAX_SNAPSHOTS_PER_SESSION: usize = 8;
/// Unfinished LIST snapshots in the broker.
pub const MAX_SNAPSHOTS: usize = 256;
/// Leases one LIST snapshot may capture.
pub const MAX_SNAPSHOT_ITEMS: usize = 10_000;

/// Bytes of LIST items per page: a record value minus the status byte, the
/// item count and the largest cursor.
const PAGE_BUDGET: usize = MAX_RECORD_PAYLOAD - 1 - 4 - 13;

/// A lease: its family and exact route.
type Key = (Family, Arc<str>);

/// Counts for inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseStats {
    /// Leases currently held.
    pub held: usize,
    /// Queued ACQUIREs.
    pub waiters: usize,
    /// Unfinished LIST snapshots.
    pub snapshots: usize,
    /// Watch registrations.
    pub watches: usize,
}

/// The Lease engine.
pub struct LeaseEngine {
    state: Mutex<State>,
    watches: Registry,
    timers: Arc<Timers>,
    clock: Clock,
    /// Keys the holder incarnation reported by LIST: stable per session,
    /// distinct across sessions, and not the broker's internal session id.
    incarnations: RandomState,
}

impl LeaseEngine {
    /// The watch registry (inspection).
    pub fn watches(&self) -> &Registry {
        &self.watches
    }

    /// Counts of held leases, waiters, snapshots and watches.
    pub fn stats(&self) -> LeaseStats {
        let s = self.state.lock();
        let leases = s.leases.values().flat_map(BTreeMap::values);
        LeaseStats {
            held: leases.clone().filter(|l| l.holder.is_some()).count(),
            waiters: leases.map(|l| l.waiters.len()).sum(),
            snapshots: s.snapshots.len(),
            watches: self.watches.len(),
        }
    }

    fn notify(&self, family: Family, route: &str) {
        let route = Str::from(route);
        self.watches.for_each_match(family, &route, |reg| {
            reg.session.notify(&Notify {
                sub_id: reg.id,
                route: route.clone(),
            });
        });
    }

    /// Ends the current holding of `key` (release, expiry, disconnect) and
    /// passes the lease on.
    fn end_holding(&self, s: &mut State, key: &Key, now: SystemTime) {
        let Some(h) = s.lease_mut(key).and_then(|l| l.holder.take()) else {
            return;
        };
        s.expiries.remove(&(h.expires, key.clone()));
        s.untrack(h.session, key);
        self.notify(key.0, &key.1);
        self.grant_next(s, key, now);
        s.forget_if_idle(key);
    }

    /// Grants a free lease to its oldest waiter whose session is still open.
    fn grant_next(&self, s: &mut State, key: &Key, now: SystemTime) {
        loop {
            let Some(w) = s.lease_mut(key).and_then(|l| l.waiters.pop_front()) else {
                return;
            };
            s.waiter_due.remove(&(w.deadline, w.id));
            s.waiter_keys.remove(&w.id);
            s.untrack(w.session, key);
            if !w.reply.is_open() {
                continue;
            }
            let Some(expires) = now.checked_add(w.ttl) else {
                w.reply.error(&bad("ttl_secs too large"));
                continue;
            };
            let Some(token) = s.grant(key, w.owner, w.session, expires, now) else {
                w.reply.error(&bad("fencing token space exhausted"));
                continue;
            };
            let _ = w.reply.ok(&AcquireOk {
                kind: AcquireKind::Acquired,
                fencing_token: token,
            });
            self.notify(key.0, &key.1);
            return;
        }
    }

    fn rearm(&self, s: &State) {
        if let Some(at) = s.earliest_deadline() {
            self.timers.wake_at(Domain::Lease, at);
        }
    }

    fn key(s: &State, family: Family, route: &str) -> Key {
        let shared = s
            .leases
            .get(&family)
            .and_then(|m| m.get_key_value(route))
            .map(|(k, _)| k.clone());
        (family, shared.unwrap_or_else(|| Arc::from(route)))
    }

    fn acquire(
        &self,
        session: &Session,
        a: &proto::Acquire,
        reply: &Reply,
    ) -> Result<(), WireError> {
        if a.owner.len() > MAX_OWNER_LEN {
            return Err(bad(format!("owner_id longer than {MAX_OWNER_LEN} bytes")));
        }
        if a.route.len() > MAX_ROUTE_LEN {
            return Err(bad(format!(
                "lease route longer than {MAX_ROUTE_LEN} bytes"
            )));
        }
        if a.ttl_secs == 0 {
            return Err(bad("ttl_secs must be at least 1"));
        }
        let wait = a.wait_seconds.unwrap_or(0);
        if wait > proto::MAX_WAIT_SECONDS {
            return Err(bad(format!(
                "wait_seconds must not exceed {}",
                proto::MAX_WAIT_SECONDS
            )));
        }
        let now = self.clock.now();
        let ttl = Duration::from_secs(a.ttl_secs);
        let expires = now
            .checked_add(ttl)
            .ok_or_else(|| bad("ttl_secs too large"))?;
        let mut s = self.state.lock();
        let key = Self::key(&s, session.family(), &a.route);
        if s.lease(key.0, &key.1)
            .and_then(|l| l.holder.as_ref())
            .is_some_and(|h| h.expires <= now)
        {
            // Found expired before its tick: the lease may pass to a waiter
            // whose expiry needs a timer.
            self.end_holding(&mut s, &key, now);
            self.rearm(&s);
        }
        let owner = Str::from(&*a.owner);
        let lease = s.lease(key.0, &key.1);
        match lease.and_then(|l| l.holder.as_ref()) {
            None => {
                let token = s
                    .grant(&key, owner, session.id(), expires, now)
                    .ok_or_else(|| bad("fencing token space exhausted"))?;
                let _ = reply.ok(&AcquireOk {
                    kind: AcquireKind::Acquired,
                    fencing_token: token,
                });
                self.notify(key.0, &key.1);
                self.rearm(&s);
            }
            Some(h) if h.owner == owner => {
                let _ = reply.ok(&AcquireOk {
                    kind: AcquireKind::AlreadyHeld,
                    fencing_token: h.token,
                });
            }
            Some(h) if wait == 0 => {
                return Err(err(codes::LEASE_HELD, format!("HeldByOther: {}", h.owner)));
            }
            Some(_) => {
                let waiters = lease.map(|l| &l.waiters);
                if waiters.is_some_and(|w| w.iter().any(|w| w.owner == owner)) {
                    let _ = reply.ok(&AcquireOk {
                        kind: AcquireKind::AlreadyQueued,
                        fencing_token: 0,
                    });
                    return Ok(());
                }
                if waiters.is_some_and(|w| w.len() >= MAX_WAITERS) {
                    return Err(err(
                        codes::LEASE_QUEUE_FULL,
                        format!("lease wait queue full ({MAX_WAITERS} waiters)"),
                    ));
                }
                let deadline = now + Duration::from_secs(u64::from(wait));
                s.next_waiter += 1;
                let id = s.next_waiter;
                // Answer Queued before the waiter becomes visible to a
                // release on another thread, so the grant always comes second.
                let _ = reply.ok(&AcquireOk {
                    kind: AcquireKind::Queued,
                    fencing_token: 0,
                });
                if let Some(l) = s.lease_mut(&key) {
                    l.waiters.push_back(Waiter {
                        id,
                        owner,
                        session: session.id(),
                        ttl,
                        deadline,
                        reply: reply.clone(),
                    });
                }
                s.waiter_due.insert((deadline, id));
                s.waiter_keys.insert(id, key.clone());
                s.track(session.id(), &key);
                self.timers.wake_at(Domain::Lease, deadline);
            }
        }
        Ok(())
    }

    /// The holder of `route` after the owner and token checks of RENEW and
    /// RELEASE.
    fn owned(
        &self,
        s: &mut State,
        key: &Key,
        owner: &str,
        token: u64,
        now: SystemTime,
    ) -> Result<(), WireError> {
        let h = s
            .lease(key.0, &key.1)
            .and_then(|l| l.holder.as_ref())
            .ok_or_else(|| err(codes::LEASE_NOT_FOUND, "lease not held"))?;
        if h.expires <= now {
            self.end_holding(s, key, now);
            self.rearm(s);
            return Err(err(codes::LEASE_EXPIRED, "lease expired"));
        }
        if *h.owner != *owner {
            return Err(err(codes::LEASE_NOT_FOUND, "lease not held by this owner"));
        }
        if h.token != token {
            return Err(err(
                codes::LEASE_INVALID_FENCE,
                "fencing token does not match the current holder",
            ));
        }
        Ok(())
    }

    fn renew(&self, session: &Session, r: &proto::Renew, reply: &Reply) -> Result<(), WireError> {
        if r.ttl_secs == 0 {
            return Err(bad("ttl_secs must be at least 1"));
        }
        let now = self.clock.now();
        let expires = now
            .checked_add(Duration::from_secs(r.ttl_secs))
            .ok_or_else(|| bad("ttl_secs too large"))?;
        let mut s = self.state.lock();
        let key = Self::key(&s, session.family(), &r.route);
        self.owned(&mut s, &key, &r.owner, r.fencing_token, now)?;
        let Some(h) = s.lease_mut(&key).and_then(|l| l.holder.as_mut()) else {
            return Err(err(codes::LEASE_NOT_FOUND, "lease not held"));
        };
        let old = std::mem::replace(&mut h.expires, expires);
        h.renewals = h.renewals.saturating_add(1);
        let token = h.token;
        s.expiries.remove(&(old, key.clone()));
        s.expiries.insert((expires, key));
        let _ = reply.ok(&RenewOk {
            fencing_token: token,
        });
        self.rearm(&s);
        Ok(())
    }

    fn release(
        &self,
        session: &Session,
        r: &proto::Release,
        reply: &Reply,
    ) -> Result<(), WireError> {
        let now = self.clock.now();
        let mut s = self.state.lock();
        let key = Self::key(&s, session.family(), &r.route);
        self.owned(&mut s, &key, &r.owner, r.fencing_token, now)?;
        reply.ack();
        self.end_holding(&mut s, &key, now);
        self.rearm(&s);
        Ok(())
    }

    fn query(&self, session: &Session, route: &str, reply: &Reply) {
        let now = self.clock.now();
        let s = self.state.lock();
        let lease = s.lease(session.family(), route);
        let holder = lease
            .and_then(|l| l.holder.as_ref())
            .filter(|h| h.expires > now);
        let ok = match holder {
            Some(h) => QueryOk {
                holder: Some(QueryHolder {
                    owner: h.owner.clone(),
                    ttl_remaining_secs: h.expires.duration_since(now).map_or(0, |d| d.as_secs()),
                }),
                waiters: lease.map_or(0, |l| u32::try_from(l.waiters.len()).unwrap_or(u32::MAX)),
            },
            None => QueryOk {
                holder: None,
                waiters: 0,
            },
        };
        let _ = reply.ok(&ok);
    }

    fn info(&self, route: &Arc<str>, h: &Holder, now: SystemTime) -> LeaseInfo {
        LeaseInfo {
            route: Str::from(&**route),
            owner: h.owner.clone(),
            holder_incarnation: self.incarnations.hash_one(h.session),
            acquired_at: rfc3339(h.acquired_at).into(),
            expires_in_secs: h.expires.duration_since(now).map_or(0, |d| d.as_secs()),
            renewals: h.renewals,
        }
    }

    fn list(&self, session: &Session, l: &proto::List, reply: &Reply) -> Result<(), WireError> {
        let limit = match l.limit {
            0 => proto::DEFAULT_LIST_LIMIT,
            n => n.min(proto::MAX_LIST_LIMIT),
        } as usize;
        let family = session.family();
        let now = self.clock.now();
        let mut s = self.state.lock();
        s.snapshots.retain(|_, snap| snap.expires > now);
        if let Some(c) = l.cursor {
            let valid = s.snapshots.get(&c.snapshot_id).is_some_and(|snap| {
                snap.family == family
                    && snap.pattern == *l.pattern
                    && snap.next == c.offset as usize
            });
            if !valid {
                return Err(err(
                    codes::LEASE_INVALID_CURSOR,
                    "cursor does not match this scan",
                ));
            }
            let page = s.snapshot_page(c.snapshot_id, limit);
            let _ = reply.ok(&page);
            return Ok(());
        }
        let held = |h: &&Holder| h.expires > now;
        if !route::is_wildcard(&l.pattern) {
            let item = s
                .leases
                .get(&family)
                .and_then(|m| m.get_key_value(&*l.pattern))
                .and_then(|(r, lease)| {
                    lease
                        .holder
                        .as_ref()
                        .filter(held)
                        .map(|h| self.info(r, h, now))
                });
            let _ = reply.ok(&ListOk {
                items: item.into_iter().collect(),
                next: None,
            });
            return Ok(());
        }
        let mut items = Vec::new();
        if let Some(m) = s.leases.get(&family) {
            let prefix = route::literal_prefix(&l.pattern);
            for (r, lease) in m
                .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
                .take_while(|(r, _)| r.starts_with(prefix))
            {
                let Some(h) = lease.holder.as_ref().filter(held) else {
                    continue;
                };
                if !route::matches(&l.pattern, r) {
                    continue;
                }
                if items.len() >= MAX_SNAPSHOT_ITEMS {
                    return Err(bad(format!(
                        "LIST selector matches more than {MAX_SNAPSHOT_ITEMS} leases; narrow the pattern"
                    )));
                }
                items.push(self.info(r, h, now));
            }
        }
        // The snapshot is kept only while pages remain, bounded per session
        // and globally by dropping the oldest.
        let mine: Vec<u64> = s
            .snapshots
            .iter()
            .filter(|(_, snap)| snap.session == session.id())
            .map(|(id, _)| *id)
            .collect();
        if mine.len() >= MAX_SNAPSHOTS_PER_SESSION {
            s.snapshots.remove(&mine[0]);
        }
        if s.snapshots.len() >= MAX_SNAPSHOTS {
            s.snapshots.pop_first();
        }
        s.next_snapshot += 1;
        let id = s.next_snapshot;
        s.snapshots.insert(
            id,
            Snapshot {
                family,
                session: session.id(),
                pattern: l.pattern.to_string(),
                items,
                next: 0,
                expires: now + SNAPSHOT_TTL,
            },
        );
        let page = s.snapshot_page(id, limit);
        let _ = reply.ok(&page);
        Ok(())
    }

    fn answer(
        &self,
        session: &Session,
        request: LeaseRequest,
        reply: &Reply,
    ) -> Result<(), WireError> {
        match request {
            LeaseRequest::Acquire(a) => self.acquire(session, &a, reply),
            LeaseRequest::Renew(r) => self.renew(session, &r, reply),
            LeaseRequest::Release(r) => self.release(session, &r, reply),
            LeaseRequest::Query(q) => {
                self.query(session, &q.route, reply);
                Ok(())
            }
            LeaseRequest::Subscribe(p) => {
                let reg = self
                    .watches
                    .register(session, &p.route, ())
                    .map_err(|e| bad(e.message()))?;
                let _ = reply.ok(&SubscribeReply { sub_id: reg.id });
                Ok(())
            }
            LeaseRequest::Unsubscribe(p) => {
                self.watches.unregister_pattern(session.id(), &p.route);
                reply.ack();
                Ok(())
            }
            LeaseRequest::List(l) => self.list(session, &l, reply),
        }
    }
}

impl Engine for LeaseEngine {
    type Request = LeaseRequest;

    fn start(services: &Services) -> Result<Self, StorageError> {
        let started = services
            .clock
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let state = State {
            last_token: u64::try_from(started.as_micros()).unwrap_or(u64::MAX / 2),
            ..State::default()
        };
        Ok(Self {
            state: Mutex::new(state),
            watches: Registry::new(services.ids.clone()),
            timers: services.timers.clone(),
            clock: services.clock.clone(),
            incarnations: RandomState::new(),
        })
    }

    fn handle(&self, session: &Session, request: LeaseRequest, reply: Reply) {
        if let Err(e) = self.answer(session, request, &reply) {
            reply.error(&e);
        }
    }

    fn refuse(
        &self,
        _session: &Session,
        refusal: Refusal<'_, LeaseRequest>,
        reply: &Reply,
    ) -> Result<(), CloseReason> {
        match refusal {
            Refusal::Malformed { error, .. } => {
                reply.coded(
                    codes::LEASE_BAD_REQUEST,
                    &format!("malformed request: {error}"),
                );
            }
            Refusal::BadRoute { error, .. } => {
                let code = match reply.message_type() {
                    types::LEASE_SUBSCRIBE | types::LEASE_UNSUBSCRIBE => {
                        codes::LEASE_INVALID_SUBSCRIPTION
                    }
                    types::LEASE_LIST => codes::LEASE_INVALID_LIST_PATTERN,
                    _ => codes::LEASE_BAD_REQUEST,
                };
                reply.coded(code, &error.to_string());
            }
            Refusal::Unauthorized { .. } => {
                reply.coded(codes::LEASE_UNAUTHORIZED, "unauthorized: permission denied");
            }
        }
        Ok(())
    }

    fn session_closed(&self, session: &Session) {
        let now = self.clock.now();
        let id = session.id();
        let mut s = self.state.lock();
        let keys: Vec<Key> = s
            .by_session
            .remove(&id)
            .map(|k| k.into_iter().collect())
            .unwrap_or_default();
        for key in keys {
            let mine: Vec<u64> = s.lease(key.0, &key.1).map_or_else(Vec::new, |l| {
                l.waiters
                    .iter()
                    .filter(|w| w.session == id)
                    .map(|w| w.id)
                    .collect()
            });
            for w in mine {
                s.remove_waiter(&key, w);
            }
            if s.lease(key.0, &key.1)
                .and_then(|l| l.holder.as_ref())
                .is_some_and(|h| h.session == id)
            {
                self.end_holding(&mut s, &key, now);
            }
            s.forget_if_idle(&key);
        }
        s.by_session.remove(&id);
        s.snapshots.retain(|_, snap| snap.session != id);
        self.rearm(&s);
        drop(s);
        self.watches.unregister_session(id);
    }

    fn tick(&self, now: SystemTime) {
        let mut s = self.state.lock();
        while let Some((at, key)) = s.expiries.first().cloned() {
            if at > now {
                break;
            }
            s.expiries.pop_first();
            if s.lease(key.0, &key.1)
                .and_then(|l| l.holder.as_ref())
                .is_some_and(|h| h.expires == at)
            {
                tracing::debug!(route = %key.1, "lease expired");
                self.end_holding(&mut s, &key, now);
            }
        }
        while let Some(&(at, id)) = s.waiter_due.first() {
            if at > now {
                break;
            }
            s.waiter_due.pop_first();
            let Some(key) = s.waiter_keys.get(&id).cloned() else {
                continue;
            };
            if let Some(w) = s.remove_waiter(&key, id) {
                w.reply
                    .coded(codes::LEASE_WAIT_TIMEOUT, "lease wait timed out");
            }
            s.forget_if_idle(&key);
        }
        self.rearm(&s);
    }
}

/// Route shapes and permissions per request (spec §4, "Permission levels
/// per message"): checked by the dispatcher before [`Engine::handle`].
impl DomainRequest for LeaseRequest {
    fn target(&self) -> Target<'_> {
        const S: Scheme = Scheme::Lease;
        match self {
            LeaseRequest::Acquire(m) => concrete(&m.route, S, Access::Write),
            LeaseRequest::Renew(m) => concrete(&m.route, S, Access::Write),
            LeaseRequest::Release(m) => concrete(&m.route, S, Access::Write),
            LeaseRequest::Query(m) => concrete(&m.route, S, Access::Read),
            LeaseRequest::Subscribe(m) => pattern(&m.route, S, Access::Read),
            LeaseRequest::Unsubscribe(m) => pattern(&m.route, S, Access::Read),
            LeaseRequest::List(m) => pattern(&m.pattern, S, Access::Read),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::registry::SubscriptionIds;
    use crate::session::{OutboundLimits, Transport, frames};
    use crate::storage::MemoryBackend;
    use fitz_protocol::record::decode_single_record;
    use std::time::UNIX_EPOCH;

    /// An engine whose timers never fire, so expiry is only ever found lazily.
    fn lazy_engine(clock: &Clock) -> LeaseEngine {
        LeaseEngine::start(&Services {
            clock: clock.clone(),
            timers: Arc::new(Timers::new(clock.clone())),
            ids: SubscriptionIds::default(),
            storage: Arc::new(MemoryBackend),
            config: Arc::new(Config::default()),
        })
        .unwrap()
    }

    fn call(e: &LeaseEngine, s: &Session, r: LeaseRequest) -> bytes::Bytes {
        let reply = Reply::new(s.clone(), r.message_type(), None);
        e.handle(s, r, reply);
        let (batch, _) = s.take_batch();
        let frame = frames(&batch).last().unwrap();
        decode_single_record(frame).unwrap().payload
    }

    #[test]
    fn a_holder_past_its_expiry_is_found_expired_before_its_tick() {
        let clock = Clock::manual(UNIX_EPOCH + Duration::from_secs(1_000));
        let e = lazy_engine(&clock);
        let s = Session::new(
            1,
            crate::auth::Grant::anonymous(),
            Transport::Tcp,
            None,
            OutboundLimits::default(),
            Arc::default(),
        );
        let route = "lease://r/a/x";
        let got = call(
            &e,
            &s,
            LeaseRequest::Acquire(proto::Acquire {
                route: route.into(),
                owner: "o".into(),
                ttl_secs: 5,
                wait_seconds: None,
            }),
        );
        let token = u64::from_be_bytes(got[2..].try_into().unwrap());
        clock.advance(Duration::from_secs(5));
        let got = call(
            &e,
            &s,
            LeaseRequest::Renew(proto::Renew {
                route: route.into(),
                owner: "o".into(),
                fencing_token: token,
                ttl_secs: 5,
            }),
        );
        let err = WireError::decode(got).unwrap();
        assert_eq!(err.code(), Some(codes::LEASE_EXPIRED));
        assert_eq!(e.stats().held, 0, "the expired holding ended");
        let got = call(&e, &s, LeaseRequest::Query(proto::Query::new(route)));
        assert_eq!(&got[..], &[0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        assert_eq!(rfc3339(t), "2026-01-01T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_827_696);
        assert_eq!(rfc3339(leap), "2000-02-29T12:34:56Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(4_102_444_799)),
            "2099-12-31T23:59:59Z"
        );
    }
}
