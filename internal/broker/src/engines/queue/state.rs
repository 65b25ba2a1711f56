//! The queue engine's state: queues, messages in their phases, parked
//! RESERVEs, reservations by session, expiry indexes, and the operations on
//! them. Synchronous; the engine holds it behind one lock.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fitz_protocol::queue::{self as proto, Counters, ReserveOk, ReservedItem};
use fitz_protocol::{Str, WireError, codes, route};

use crate::auth::Family;
use crate::session::{Reply, SessionId};
use crate::storage::{Keyspace, Op};

use super::stored::{STORED_DEAD, STORED_MESSAGE, stored_key, stored_value};
use super::*;

pub(super) struct Msg {
    pub(super) body: Bytes,
    pub(super) attempts: u32,
    pub(super) state: Phase,
}

#[derive(Clone, Copy)]
pub(super) enum Phase {
    /// Ready with this ready-order sequence number.
    Ready(u64),
    Delayed(SystemTime),
    Inflight {
        token: u64,
        session: SessionId,
        until: SystemTime,
    },
}

#[derive(Default)]
pub(super) struct Queue {
    pub(super) msgs: HashMap<u64, Msg>,
    /// Ready-order sequence → message id.
    pub(super) ready: BTreeMap<u64, u64>,
    pub(super) delayed: u64,
    pub(super) inflight: u64,
}

impl Queue {
    pub(super) fn counters(&self) -> Counters {
        Counters {
            ready: self.ready.len() as u64,
            delayed: self.delayed,
            inflight: self.inflight,
        }
    }
}

/// A RESERVE waiting for work.
pub(super) struct Parked {
    pub(super) session: SessionId,
    pub(super) family: Family,
    /// The requested route or pattern.
    pub(super) target: Arc<str>,
    pub(super) wildcard: bool,
    pub(super) lease: Duration,
    pub(super) batch: usize,
    pub(super) deadline: SystemTime,
    pub(super) reply: Reply,
}

pub(super) struct State {
    pub(super) queues: HashMap<Family, BTreeMap<Arc<str>, Queue>>,
    /// Message id → its queue.
    pub(super) index: HashMap<u64, Key>,
    pub(super) delayed_due: BTreeSet<(SystemTime, u64)>,
    pub(super) inflight_due: BTreeSet<(SystemTime, u64)>,
    /// Reserved message ids per session.
    pub(super) held: HashMap<SessionId, HashSet<u64>>,
    /// Parked RESERVEs in arrival order.
    pub(super) parked: BTreeMap<u64, Parked>,
    pub(super) parked_due: BTreeSet<(SystemTime, u64)>,
    pub(super) parked_per_target: HashMap<Key, usize>,
    pub(super) dead: VecDeque<DeadLetter>,
    pub(super) stored_bytes: usize,
    pub(super) next_id: u64,
    pub(super) next_seq: u64,
    pub(super) next_park: u64,
    /// Lease tokens are SipHash outputs of a counter under a random key:
    /// unpredictable to clients, never repeated within the process.
    pub(super) token_key: RandomState,
    pub(super) token_count: u64,
    pub(super) durable: bool,
    /// Storage writes not yet committed (only for a durable backend).
    pub(super) ops: Vec<Op>,
}

impl State {
    pub(super) fn new(durable: bool) -> Self {
        Self {
            queues: HashMap::new(),
            index: HashMap::new(),
            delayed_due: BTreeSet::new(),
            inflight_due: BTreeSet::new(),
            held: HashMap::new(),
            parked: BTreeMap::new(),
            parked_due: BTreeSet::new(),
            parked_per_target: HashMap::new(),
            dead: VecDeque::new(),
            stored_bytes: 0,
            next_id: 0,
            next_seq: 0,
            next_park: 0,
            token_key: RandomState::new(),
            token_count: 0,
            durable,
            ops: Vec::new(),
        }
    }

    pub(super) fn queue(&self, family: Family, route: &str) -> Option<&Queue> {
        self.queues.get(&family)?.get(route)
    }

    /// The stored key of `route` when the family already has it, so
    /// messages of one queue share one allocation.
    pub(super) fn route_key(&self, family: Family, route: &str) -> Arc<str> {
        self.queues
            .get(&family)
            .and_then(|m| m.get_key_value(route))
            .map_or_else(|| Arc::from(route), |(k, _)| k.clone())
    }

    /// Adds a new message (ready, or delayed until `visible_at`).
    pub(super) fn insert(
        &mut self,
        family: Family,
        route: Arc<str>,
        id: u64,
        body: Bytes,
        attempts: u32,
        visible_at: Option<SystemTime>,
    ) {
        self.stored_bytes += body.len();
        let state = match visible_at {
            Some(at) => {
                self.delayed_due.insert((at, id));
                Phase::Delayed(at)
            }
            None => {
                self.next_seq += 1;
                Phase::Ready(self.next_seq)
            }
        };
        self.index.insert(id, (family, route.clone()));
        let q = self
            .queues
            .entry(family)
            .or_default()
            .entry(route)
            .or_default();
        match state {
            Phase::Ready(seq) => {
                q.ready.insert(seq, id);
            }
            Phase::Delayed(_) => q.delayed += 1,
            Phase::Inflight { .. } => {}
        }
        q.msgs.insert(
            id,
            Msg {
                body,
                attempts,
                state,
            },
        );
    }

    /// Makes a delayed or inflight message ready again; an inflight one
    /// counts a failed attempt. Returns its queue.
    pub(super) fn make_ready(&mut self, id: u64) -> Option<Key> {
        let key = self.index.get(&id)?.clone();
        let q = self.queues.get_mut(&key.0)?.get_mut(&key.1)?;
        let msg = q.msgs.get_mut(&id)?;
        match msg.state {
            Phase::Ready(_) => return None,
            Phase::Delayed(at) => {
                self.delayed_due.remove(&(at, id));
                q.delayed = q.delayed.saturating_sub(1);
            }
            Phase::Inflight { session, until, .. } => {
                self.inflight_due.remove(&(until, id));
                q.inflight = q.inflight.saturating_sub(1);
                msg.attempts = msg.attempts.saturating_add(1);
                if let Some(set) = self.held.get_mut(&session) {
                    set.remove(&id);
                    if set.is_empty() {
                        self.held.remove(&session);
                    }
                }
                if self.durable {
                    self.ops.push(Op::Put(
                        Keyspace::Queue,
                        stored_key(key.0, &key.1, id),
                        stored_value(STORED_MESSAGE, msg.attempts, 0, &msg.body),
                    ));
                }
            }
        }
        self.next_seq += 1;
        msg.state = Phase::Ready(self.next_seq);
        q.ready.insert(self.next_seq, id);
        Some(key)
    }

    /// Removes message `id` of `key` entirely; returns it.
    pub(super) fn remove(&mut self, family: Family, route: &str, id: u64) -> Option<Msg> {
        let fam = self.queues.get_mut(&family)?;
        let q = fam.get_mut(route)?;
        let msg = q.msgs.remove(&id)?;
        match msg.state {
            Phase::Ready(seq) => {
                q.ready.remove(&seq);
            }
            Phase::Delayed(at) => {
                self.delayed_due.remove(&(at, id));
                q.delayed = q.delayed.saturating_sub(1);
            }
            Phase::Inflight { session, until, .. } => {
                self.inflight_due.remove(&(until, id));
                q.inflight = q.inflight.saturating_sub(1);
                if let Some(set) = self.held.get_mut(&session) {
                    set.remove(&id);
                    if set.is_empty() {
                        self.held.remove(&session);
                    }
                }
            }
        }
        if q.msgs.is_empty() {
            fam.remove(route);
            if fam.is_empty() {
                self.queues.remove(&family);
            }
        }
        self.index.remove(&id);
        self.stored_bytes = self.stored_bytes.saturating_sub(msg.body.len());
        Some(msg)
    }

    /// Moves a message no reply can carry to the dead letters.
    pub(super) fn dead_letter(&mut self, family: Family, route: &Arc<str>, id: u64, reason: &str) {
        let Some(msg) = self.remove(family, route, id) else {
            return;
        };
        tracing::warn!(family, route = %route, message_id = id, size = msg.body.len(), reason, "queue message dead-lettered");
        if self.durable {
            self.ops.push(Op::Put(
                Keyspace::Queue,
                stored_key(family, route, id),
                stored_value(STORED_DEAD, msg.attempts, 0, reason.as_bytes()),
            ));
        }
        self.keep_dead(DeadLetter {
            family,
            route: route.to_string(),
            message_id: id,
            body_len: msg.body.len(),
            attempts: msg.attempts,
            reason: reason.to_owned(),
        });
    }

    pub(super) fn keep_dead(&mut self, d: DeadLetter) {
        if self.dead.len() >= MAX_DEAD_LETTERS {
            self.dead.pop_front();
        }
        self.dead.push_back(d);
    }

    pub(super) fn next_token(&mut self) -> u64 {
        self.token_count += 1;
        self.token_key.hash_one(self.token_count).max(1)
    }

    /// Reserves up to `batch` ready messages of the queue `target`, or of
    /// every queue of `family` the pattern `target` matches, oldest first,
    /// within one reply's byte budget.
    pub(super) fn take(
        &mut self,
        family: Family,
        target: &str,
        wildcard: bool,
        batch: usize,
        until: SystemTime,
        session: SessionId,
    ) -> Vec<ReservedItem> {
        let mut items = Vec::new();
        let Some(fam) = self.queues.get(&family) else {
            return items;
        };
        let candidates: Vec<Arc<str>> = if wildcard {
            let prefix = route::literal_prefix(target);
            fam.range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
                .take_while(|(r, _)| r.starts_with(prefix))
                .filter(|(r, q)| !q.ready.is_empty() && route::matches(target, r))
                .map(|(r, _)| r.clone())
                .collect()
        } else {
            fam.get_key_value(target)
                .filter(|(_, q)| !q.ready.is_empty())
                .map(|(r, _)| r.clone())
                .into_iter()
                .collect()
        };
        let head = |s: &Self, r: &str| {
            s.queue(family, r)
                .and_then(|q| q.ready.first_key_value())
                .map(|(seq, id)| (*seq, *id))
        };
        // Merge the candidates' ready lists by ready order.
        let mut heap: BinaryHeap<Reverse<(u64, usize)>> = candidates
            .iter()
            .enumerate()
            .filter_map(|(i, r)| head(self, r).map(|(seq, _)| Reverse((seq, i))))
            .collect();
        let mut used = 0usize;
        while items.len() < batch {
            let Some(Reverse((_, i))) = heap.pop() else {
                break;
            };
            let r = &candidates[i];
            let Some((seq, id)) = head(self, r) else {
                continue;
            };
            let Some(body_len) = self
                .queue(family, r)
                .and_then(|q| q.msgs.get(&id))
                .map(|m| m.body.len())
            else {
                continue;
            };
            if proto::reserved_item_len(None, body_len) > ITEM_BUDGET {
                self.dead_letter(family, r, id, REASON_TOO_LARGE);
                if let Some((seq, _)) = head(self, r) {
                    heap.push(Reverse((seq, i)));
                }
                continue;
            }
            let len = proto::reserved_item_len(wildcard.then_some(r.len()), body_len);
            if len > ITEM_BUDGET {
                // Only the routed shape is too large: leave it for an exact RESERVE.
                continue;
            }
            if used + len > ITEM_BUDGET {
                break;
            }
            let token = self.next_token();
            let Some(q) = self.queues.get_mut(&family).and_then(|m| m.get_mut(&**r)) else {
                continue;
            };
            let Some(msg) = q.msgs.get_mut(&id) else {
                continue;
            };
            q.ready.remove(&seq);
            q.inflight += 1;
            msg.state = Phase::Inflight {
                token,
                session,
                until,
            };
            used += len;
            items.push(ReservedItem {
                route: wildcard.then(|| Str::from(&**r)),
                message_id: id,
                lease_token: token,
                body: msg.body.clone(),
            });
            self.inflight_due.insert((until, id));
            self.held.entry(session).or_default().insert(id);
            if let Some((seq, _)) = head(self, r) {
                heap.push(Reverse((seq, i)));
            }
        }
        items
    }

    pub(super) fn park(&mut self, p: Parked) -> Result<(), WireError> {
        let key = (p.family, p.target.clone());
        let n = self.parked_per_target.get(&key).copied().unwrap_or(0);
        if n >= MAX_PARKED_PER_ROUTE {
            return Err(coded(
                codes::QUEUE_FULL,
                "too many RESERVE requests waiting on this route (100)",
            ));
        }
        if self.parked.len() >= MAX_PARKED {
            return Err(coded(
                codes::QUEUE_FULL,
                "too many RESERVE requests waiting in the broker",
            ));
        }
        self.next_park += 1;
        self.parked_per_target.insert(key, n + 1);
        self.parked_due.insert((p.deadline, self.next_park));
        self.parked.insert(self.next_park, p);
        Ok(())
    }

    pub(super) fn unpark(&mut self, id: u64) -> Option<Parked> {
        let p = self.parked.remove(&id)?;
        self.parked_due.remove(&(p.deadline, id));
        let key = (p.family, p.target.clone());
        if let Some(n) = self.parked_per_target.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.parked_per_target.remove(&key);
            }
        }
        Some(p)
    }

    pub(super) fn earliest_deadline(&self) -> Option<SystemTime> {
        [
            self.delayed_due.first(),
            self.inflight_due.first(),
            self.parked_due.first(),
        ]
        .into_iter()
        .flatten()
        .map(|(t, _)| *t)
        .min()
    }
}

/// Sends a RESERVE success. Items were sized to fit one record.
pub(super) fn send_items(reply: &Reply, items: Vec<ReservedItem>) {
    let ok = ReserveOk { items };
    if let Err(e) = reply
        .session()
        .send_frame(reply.correlation(), |b| ok.encode_reply(b))
    {
        tracing::warn!(error = %e, "RESERVE reply not encodable");
        reply.coded(codes::QUEUE_BACKEND, "reply could not be encoded");
    }
}
