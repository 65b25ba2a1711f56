//! Queue (200, 202–204, 207–209): at-least-once work queues with delays,
//! reservations, long polls and availability watches.
//!
//! # Model
//!
//! A queue is one concrete `queue://realm/area/resource` route of one route
//! family; it exists while it holds messages. Every message has a
//! broker-wide `u64` id (counting up from 1, continuing after the largest
//! recovered id) and is in one of three states:
//!
//! * **ready**: visible, in the order it *became* ready (a broker-wide
//!   sequence, so a wildcard RESERVE spanning several queues is FIFO too);
//! * **delayed**: invisible until `now + delay_seconds`;
//! * **inflight**: reserved by one session with a fresh unpredictable
//!   lease token until `now + lease_seconds`.
//!
//! One mutex guards all of it. Expiries (delays, reservations, long-poll
//! waits) are kept in ordered deadline sets and driven by [`Timers`]: the
//! engine asks for a tick at the earliest deadline, so tests move a manual
//! clock instead of sleeping. A reservation that expires, or whose session
//! ends, returns its message to ready with the attempt count raised by one;
//! its token is dead from then on. COMPLETE removes a message for good.
//!
//! RESERVE takes up to `batch_size` (1..=1024, default 1) ready messages
//! from the queue, or from every queue of the family the pattern matches,
//! oldest first, as long as the items fit one record value (65,535 bytes).
//! A message too large for even the smallest item shape of an otherwise
//! empty reply can never be delivered: it is moved to the dead letters with
//! reason [`REASON_TOO_LARGE`]. One that only the routed (wildcard) shape
//! cannot carry stays ready for exact RESERVEs; the wildcard reply skips
//! that queue. With nothing to return and `wait_seconds > 0` (capped at 30)
//! the request is parked: it is answered, on its stored [`Reply`] and so with
//! its correlation, as soon as a matching queue gains ready work, or with an
//! empty batch when the wait elapses. At most [`MAX_PARKED_PER_ROUTE`]
//! RESERVEs may be parked on one route or pattern (4005 beyond), and
//! [`MAX_PARKED`] in the whole broker.
//!
//! Availability watches (SUBSCRIBE 207) use the shared [`Registry`]. A
//! NOTIFY goes to every matching registration whenever a queue gains ready
//! work that parked RESERVEs did not take at once, and right after a
//! SUBSCRIBE for every matching queue that already has ready messages. Its
//! payload is the `[ready][delayed][inflight]` counters wrapped as `bytes`
//! ([`Notify::with_counters`]), the form the official client 0.2.0 accepts.
//!
//! # Durability
//!
//! Ready and delayed messages are written through the storage [`Backend`]
//! (buffered: the spec makes queue persistence best effort), with their
//! attempt count and absolute visibility time; COMPLETE deletes, and dead
//! letters are rewritten as such. An ENQUEUE whose write fails is answered
//! 4007 and not kept. At start the engine reloads everything: messages due
//! by now are ready (in id order), later ones delayed. Reservations live in
//! memory only, so a message that was inflight comes back ready.
//!
//! # Errors
//!
//! ENQUEUE and RESERVE errors are coded. EXTEND, COMPLETE, SUBSCRIBE and
//! UNSUBSCRIBE errors raised by the engine itself use the uncoded envelope
//! `[1][str message]`, as the broker's queue actor does (`invalid token`,
//! `lease expired`, `message not found`, the registration limit texts);
//! everything refused before the engine (malformed payload 4006, bad route
//! 4006, bad pattern 4010, unauthorized 4009) is coded.
//!
//! Decisions where the spec is silent: `lease_seconds` must be
//! 1..=[`MAX_LEASE_SECONDS`] and `delay_seconds` at most
//! [`MAX_DELAY_SECONDS`] (4006 otherwise, uncoded on EXTEND); EXTEND sets
//! the reservation to end `lease_seconds` from now; EXTEND and COMPLETE
//! accept only the reserving session's current token (another session is
//! told `message not found`, as the broker's queue actor does); a queue
//! holds at most [`MAX_QUEUE_MESSAGES`] messages and all queues
//! [`MAX_STORED_BYTES`] of bodies (4005 beyond); the last
//! [`MAX_DEAD_LETTERS`] dead letters are kept for inspection.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use fitz_protocol::queue::{
    self as proto, Counters, EnqueueOk, Notify, ReserveOk, ReservedItem, SubscribeReply,
};
use fitz_protocol::record::MAX_RECORD_PAYLOAD;
use fitz_protocol::types::{self, Domain};
use fitz_protocol::{Str, WireError, codes, route};
use parking_lot::Mutex;

use super::{DomainRequest, Target, concrete, pattern};
use super::{Engine, QueueRequest, Refusal, Services};
use crate::auth::Access;
use crate::auth::Family;
use crate::clock::{Clock, Timers, to_unix_millis};
use crate::registry::Registry;
use crate::session::{CloseReason, Reply, Session, SessionId};
use crate::storage::{self, Backend, Batch, Durability, Keyspace, Op, StorageError};
use fitz_protocol::route::Scheme;

/// RESERVEs that may wait on one route or pattern of one family.
pub const MAX_PARKED_PER_ROUTE: usize = 100;
/// RESERVEs that may wait in the whole broker.
pub const MAX_PARKED: usize = 16_384;
/// Longest reservation a RESERVE or EXTEND may ask for.
pub const MAX_LEASE_SECONDS: u64 = 7 * 86_400;
/// Longest ENQUEUE delay.
pub const MAX_DELAY_SECONDS: u64 = 366 * 86_400;
/// Messages (in any state) one queue may hold.
pub const MAX_QUEUE_MESSAGES: usize = 1_000_000;
/// Body bytes all queues together may hold.
pub const MAX_STORED_BYTES: usize = 1 << 30;
/// Dead letters kept for inspection; older ones are forgotten first.
pub const MAX_DEAD_LETTERS: usize = 1_024;
/// Dead-letter reason of a message no RESERVE reply can carry.
pub const REASON_TOO_LARGE: &str = "reserve_response_too_large";

/// Bytes the items of one RESERVE reply may use: a record value minus the
/// status byte and the item count.
const ITEM_BUDGET: usize = MAX_RECORD_PAYLOAD - 1 - 4;

const STORED_MESSAGE: u8 = 0;
const STORED_DEAD: u8 = 1;

/// A queue: its family and concrete route.
type Key = (Family, Arc<str>);

/// A message that was moved out of delivery for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Route family of its queue.
    pub family: Family,
    /// Its queue.
    pub route: String,
    /// Message id.
    pub message_id: u64,
    /// Body size.
    pub body_len: usize,
    /// Failed deliveries before it was moved.
    pub attempts: u32,
    /// Why (for example [`REASON_TOO_LARGE`]).
    pub reason: String,
}

/// Where one message stands, for inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageState {
    /// Visible to RESERVE.
    Ready,
    /// Invisible until its delay ends.
    Delayed,
    /// Reserved until the given time.
    Inflight(SystemTime),
}

/// One message, for inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageInfo {
    /// Its state.
    pub state: MessageState,
    /// Reservations that ended without COMPLETE (expiry or disconnect).
    pub attempts: u32,
}

/// Counts for inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Queues holding messages.
    pub queues: usize,
    /// Messages in any state.
    pub messages: usize,
    /// Reserved messages.
    pub inflight: usize,
    /// Parked RESERVEs.
    pub parked: usize,
    /// Availability watches.
    pub watches: usize,
    /// Dead letters kept.
    pub dead_letters: usize,
}

struct Msg {
    body: Bytes,
    attempts: u32,
    state: Phase,
}

#[derive(Clone, Copy)]
enum Phase {
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
struct Queue {
    msgs: HashMap<u64, Msg>,
    /// Ready-order sequence → message id.
    ready: BTreeMap<u64, u64>,
    delayed: u64,
    inflight: u64,
}

impl Queue {
    fn counters(&self) -> Counters {
        Counters {
            ready: self.ready.len() as u64,
            delayed: self.delayed,
            inflight: self.inflight,
        }
    }
}

/// A RESERVE waiting for work.
struct Parked {
    session: SessionId,
    family: Family,
    /// The requested route or pattern.
    target: Arc<str>,
    wildcard: bool,
    lease: Duration,
    batch: usize,
    deadline: SystemTime,
    reply: Reply,
}

struct State {
    queues: HashMap<Family, BTreeMap<Arc<str>, Queue>>,
    /// Message id → its queue.
    index: HashMap<u64, Key>,
    delayed_due: BTreeSet<(SystemTime, u64)>,
    inflight_due: BTreeSet<(SystemTime, u64)>,
    /// Reserved message ids per session.
    held: HashMap<SessionId, HashSet<u64>>,
    /// Parked RESERVEs in arrival order.
    parked: BTreeMap<u64, Parked>,
    parked_due: BTreeSet<(SystemTime, u64)>,
    parked_per_target: HashMap<Key, usize>,
    dead: VecDeque<DeadLetter>,
    stored_bytes: usize,
    next_id: u64,
    next_seq: u64,
    next_park: u64,
    /// Lease tokens are SipHash outputs of a counter under a random key:
    /// unpredictable to clients, never repeated within the process.
    token_key: RandomState,
    token_count: u64,
    durable: bool,
    /// Storage writes not yet committed (only for a durable backend).
    ops: Vec<Op>,
}

fn coded(code: u32, message: impl Into<Str>) -> WireError {
    WireError::coded(code, message)
}

fn uncoded(message: impl Into<Str>) -> WireError {
    WireError::uncoded(message)
}

/// Cuts a message from elsewhere (a storage error) well below the size at
/// which the coded and uncoded envelopes could be mistaken for each other.
fn short(mut message: String) -> String {
    const MAX: usize = 512;
    if message.len() > MAX {
        let mut cut = MAX;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    message
}

/// `[u8 kind][u32 attempts][u64 visible_at_ms][body]`; `visible_at_ms` is 0
/// for a message that was ready.
fn stored_value(kind: u8, attempts: u32, visible_at_ms: u64, body: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(13 + body.len());
    b.put_u8(kind);
    b.put_u32(attempts);
    b.put_u64(visible_at_ms);
    b.put_slice(body);
    b.freeze()
}

fn parse_stored(v: &Bytes) -> Option<(u8, u32, u64, Bytes)> {
    let kind = *v.first()?;
    let attempts = u32::from_be_bytes(v.get(1..5)?.try_into().ok()?);
    let at = u64::from_be_bytes(v.get(5..13)?.try_into().ok()?);
    Some((kind, attempts, at, v.slice(13..)))
}

fn stored_key(family: Family, route: &str, id: u64) -> Bytes {
    storage::kv_key(family, route, &id.to_be_bytes())
}

impl State {
    fn new(durable: bool) -> Self {
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

    fn queue(&self, family: Family, route: &str) -> Option<&Queue> {
        self.queues.get(&family)?.get(route)
    }

    /// The stored key of `route` when the family already has it, so
    /// messages of one queue share one allocation.
    fn route_key(&self, family: Family, route: &str) -> Arc<str> {
        self.queues
            .get(&family)
            .and_then(|m| m.get_key_value(route))
            .map_or_else(|| Arc::from(route), |(k, _)| k.clone())
    }

    /// Adds a new message (ready, or delayed until `visible_at`).
    fn insert(
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
    fn make_ready(&mut self, id: u64) -> Option<Key> {
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
    fn remove(&mut self, family: Family, route: &str, id: u64) -> Option<Msg> {
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
    fn dead_letter(&mut self, family: Family, route: &Arc<str>, id: u64, reason: &str) {
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

    fn keep_dead(&mut self, d: DeadLetter) {
        if self.dead.len() >= MAX_DEAD_LETTERS {
            self.dead.pop_front();
        }
        self.dead.push_back(d);
    }

    fn next_token(&mut self) -> u64 {
        self.token_count += 1;
        self.token_key.hash_one(self.token_count).max(1)
    }

    /// Reserves up to `batch` ready messages of the queue `target`, or of
    /// every queue of `family` the pattern `target` matches, oldest first,
    /// within one reply's byte budget.
    fn take(
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

    fn park(&mut self, p: Parked) -> Result<(), WireError> {
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

    fn unpark(&mut self, id: u64) -> Option<Parked> {
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

    fn earliest_deadline(&self) -> Option<SystemTime> {
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
fn send_items(reply: &Reply, items: Vec<ReservedItem>) {
    let ok = ReserveOk { items };
    if let Err(e) = reply
        .session()
        .send_frame(reply.correlation(), |b| ok.encode_reply(b))
    {
        tracing::warn!(error = %e, "RESERVE reply not encodable");
        reply.coded(codes::QUEUE_BACKEND, "reply could not be encoded");
    }
}

/// The Queue engine.
pub struct QueueEngine {
    state: Mutex<State>,
    watches: Registry,
    storage: Arc<dyn Backend>,
    timers: Arc<Timers>,
    clock: Clock,
}

impl QueueEngine {
    /// The availability watch registry (inspection).
    pub fn watches(&self) -> &Registry {
        &self.watches
    }

    /// Counts of queues, messages, reservations, parked RESERVEs and watches.
    pub fn stats(&self) -> QueueStats {
        let s = self.state.lock();
        QueueStats {
            queues: s.queues.values().map(BTreeMap::len).sum(),
            messages: s.index.len(),
            inflight: s.held.values().map(HashSet::len).sum(),
            parked: s.parked.len(),
            watches: self.watches.len(),
            dead_letters: s.dead.len(),
        }
    }

    /// The counters of one queue (all zero when it holds nothing).
    pub fn counters(&self, family: Family, route: &str) -> Counters {
        self.state
            .lock()
            .queue(family, route)
            .map(Queue::counters)
            .unwrap_or_default()
    }

    /// One message of one queue.
    pub fn message(&self, family: Family, route: &str, id: u64) -> Option<MessageInfo> {
        let s = self.state.lock();
        let m = s.queue(family, route)?.msgs.get(&id)?;
        Some(MessageInfo {
            state: match m.state {
                Phase::Ready(_) => MessageState::Ready,
                Phase::Delayed(_) => MessageState::Delayed,
                Phase::Inflight { until, .. } => MessageState::Inflight(until),
            },
            attempts: m.attempts,
        })
    }

    /// The dead letters kept, oldest first.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.state.lock().dead.iter().cloned().collect()
    }

    fn enqueue(
        &self,
        session: &Session,
        e: proto::Enqueue,
        reply: &Reply,
    ) -> Result<(), WireError> {
        let delay = e.delay_seconds.unwrap_or(0);
        if delay > MAX_DELAY_SECONDS {
            return Err(coded(
                codes::QUEUE_BAD_REQUEST,
                format!("delay_seconds must be at most {MAX_DELAY_SECONDS}"),
            ));
        }
        let now = self.clock.now();
        let family = session.family();
        let visible_at = (delay > 0).then(|| now + Duration::from_secs(delay));
        let mut s = self.state.lock();
        if s.queue(family, &e.route)
            .is_some_and(|q| q.msgs.len() >= MAX_QUEUE_MESSAGES)
        {
            return Err(coded(codes::QUEUE_FULL, "queue full"));
        }
        if s.stored_bytes + e.body.len() > MAX_STORED_BYTES {
            return Err(coded(codes::QUEUE_FULL, "broker queue memory full"));
        }
        let id = s.next_id + 1;
        // A copy, so a long-lived message does not pin the whole receive buffer.
        let body = Bytes::copy_from_slice(&e.body);
        if s.durable {
            let value = stored_value(
                STORED_MESSAGE,
                0,
                visible_at.map_or(0, to_unix_millis),
                &body,
            );
            let batch = Batch {
                ops: vec![Op::Put(
                    Keyspace::Queue,
                    stored_key(family, &e.route, id),
                    value,
                )],
            };
            if let Err(err) = self.storage.commit(batch, Durability::Buffered) {
                tracing::warn!(error = %err, route = %e.route, "ENQUEUE not stored");
                return Err(coded(codes::QUEUE_BACKEND, short(err.to_string())));
            }
        }
        s.next_id = id;
        let route = s.route_key(family, &e.route);
        s.insert(family, route.clone(), id, body, 0, visible_at);
        let _ = reply.ok(&EnqueueOk { message_id: id });
        match visible_at {
            Some(at) => self.timers.wake_at(Domain::Queue, at),
            None => self.ready_gained(&mut s, now, std::iter::once((family, route))),
        }
        self.flush(&mut s);
        Ok(())
    }

    fn reserve(&self, session: &Session, r: proto::Reserve, reply: Reply) -> Result<(), WireError> {
        let batch = r.batch_size.unwrap_or(1);
        if batch == 0 || batch > proto::MAX_BATCH {
            return Err(coded(
                codes::QUEUE_BAD_REQUEST,
                format!("batch_size must be between 1 and {}", proto::MAX_BATCH),
            ));
        }
        if r.lease_seconds == 0 || r.lease_seconds > MAX_LEASE_SECONDS {
            return Err(coded(
                codes::QUEUE_BAD_REQUEST,
                format!("lease_seconds must be between 1 and {MAX_LEASE_SECONDS}"),
            ));
        }
        let wait = r.wait_seconds.unwrap_or(0).min(proto::MAX_WAIT_SECONDS);
        let lease = Duration::from_secs(r.lease_seconds);
        let wildcard = route::is_wildcard(&r.route);
        let now = self.clock.now();
        let family = session.family();
        let mut s = self.state.lock();
        let items = s.take(
            family,
            &r.route,
            wildcard,
            batch as usize,
            now + lease,
            session.id(),
        );
        if !items.is_empty() || wait == 0 {
            send_items(&reply, items);
        } else {
            let deadline = now + Duration::from_secs(wait);
            s.park(Parked {
                session: session.id(),
                family,
                target: Arc::from(&*r.route),
                wildcard,
                lease,
                batch: batch as usize,
                deadline,
                reply,
            })?;
            self.timers.wake_at(Domain::Queue, deadline);
        }
        self.rearm(&s);
        self.flush(&mut s);
        Ok(())
    }

    /// Finds the session's current reservation of `id` in `route`.
    fn check_reservation(
        s: &State,
        session: &Session,
        route: &str,
        id: u64,
        token: u64,
    ) -> Result<SystemTime, WireError> {
        let msg = s
            .queue(session.family(), route)
            .and_then(|q| q.msgs.get(&id))
            .ok_or_else(|| uncoded("message not found"))?;
        match msg.state {
            // Another session's reservation is none of this session's business.
            Phase::Inflight { session: owner, .. } if owner != session.id() => {
                Err(uncoded("message not found"))
            }
            Phase::Inflight {
                token: t, until, ..
            } if t == token => Ok(until),
            _ => Err(uncoded("invalid token")),
        }
    }

    /// A reservation found past its end before its tick ran: expire it now.
    fn expire_now(&self, s: &mut State, now: SystemTime, id: u64) -> WireError {
        if let Some(key) = s.make_ready(id) {
            self.ready_gained(s, now, std::iter::once(key));
        }
        self.rearm(s);
        self.flush(s);
        uncoded("lease expired")
    }

    fn extend(&self, session: &Session, x: &proto::Extend, reply: &Reply) -> Result<(), WireError> {
        if x.lease_seconds == 0 || x.lease_seconds > MAX_LEASE_SECONDS {
            return Err(uncoded(format!(
                "lease_seconds must be between 1 and {MAX_LEASE_SECONDS}"
            )));
        }
        let now = self.clock.now();
        let mut s = self.state.lock();
        let until = Self::check_reservation(&s, session, &x.route, x.message_id, x.lease_token)?;
        if until <= now {
            return Err(self.expire_now(&mut s, now, x.message_id));
        }
        let new_until = now + Duration::from_secs(x.lease_seconds);
        if let Some(Phase::Inflight { until, .. }) = s
            .queues
            .get_mut(&session.family())
            .and_then(|m| m.get_mut(&*x.route))
            .and_then(|q| q.msgs.get_mut(&x.message_id))
            .map(|m| &mut m.state)
        {
            *until = new_until;
        }
        s.inflight_due.remove(&(until, x.message_id));
        s.inflight_due.insert((new_until, x.message_id));
        reply.ack();
        self.rearm(&s);
        Ok(())
    }

    fn complete(
        &self,
        session: &Session,
        c: &proto::Complete,
        reply: &Reply,
    ) -> Result<(), WireError> {
        let now = self.clock.now();
        let mut s = self.state.lock();
        let until = Self::check_reservation(&s, session, &c.route, c.message_id, c.lease_token)?;
        if until <= now {
            return Err(self.expire_now(&mut s, now, c.message_id));
        }
        let family = session.family();
        s.remove(family, &c.route, c.message_id);
        if s.durable {
            s.ops.push(Op::Delete(
                Keyspace::Queue,
                stored_key(family, &c.route, c.message_id),
            ));
        }
        reply.ack();
        self.flush(&mut s);
        Ok(())
    }

    fn subscribe(&self, session: &Session, pattern: &str, reply: &Reply) -> Result<(), WireError> {
        let reg = self
            .watches
            .register(session, pattern, ())
            .map_err(|e| uncoded(e.message()))?;
        let _ = reply.ok(&SubscribeReply { sub_id: reg.id });
        let s = self.state.lock();
        let Some(fam) = s.queues.get(&session.family()) else {
            return Ok(());
        };
        let prefix = route::literal_prefix(pattern);
        for (r, q) in fam
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(r, _)| r.starts_with(prefix))
        {
            if !q.ready.is_empty() && route::matches(pattern, r) {
                session.notify(&Notify::with_counters(
                    reg.id,
                    Str::from(&**r),
                    q.counters(),
                ));
            }
        }
        Ok(())
    }

    /// Queues in `keys` gained ready work: serve parked RESERVEs, then tell
    /// watchers about what is still ready.
    fn ready_gained(&self, s: &mut State, now: SystemTime, keys: impl IntoIterator<Item = Key>) {
        for (family, route) in keys {
            self.feed_parked(s, now, family, &route);
            let Some(q) = s.queue(family, &route) else {
                continue;
            };
            if q.ready.is_empty() {
                continue;
            }
            let counters = q.counters();
            let route = Str::from(&*route);
            self.watches.for_each_match(family, &route, |reg| {
                reg.session
                    .notify(&Notify::with_counters(reg.id, route.clone(), counters));
            });
        }
    }

    /// Answers parked RESERVEs that `route` can serve, oldest first.
    fn feed_parked(&self, s: &mut State, now: SystemTime, family: Family, route: &str) {
        if s.parked.is_empty() {
            return;
        }
        let waiting: Vec<u64> = s
            .parked
            .iter()
            .filter(|(_, p)| {
                p.family == family
                    && if p.wildcard {
                        route::matches(&p.target, route)
                    } else {
                        *p.target == *route
                    }
            })
            .map(|(id, _)| *id)
            .collect();
        for pid in waiting {
            if s.queue(family, route).is_none_or(|q| q.ready.is_empty()) {
                break;
            }
            let Some(p) = s.parked.get(&pid) else {
                continue;
            };
            if !p.reply.is_open() {
                s.unpark(pid);
                continue;
            }
            let (target, wildcard, batch, until, session) = (
                p.target.clone(),
                p.wildcard,
                p.batch,
                now + p.lease,
                p.session,
            );
            let items = s.take(family, &target, wildcard, batch, until, session);
            if items.is_empty() {
                continue;
            }
            self.timers.wake_at(Domain::Queue, until);
            if let Some(p) = s.unpark(pid) {
                send_items(&p.reply, items);
            }
        }
    }

    /// Asks for a tick at the earliest pending deadline.
    fn rearm(&self, s: &State) {
        if let Some(at) = s.earliest_deadline() {
            self.timers.wake_at(Domain::Queue, at);
        }
    }

    /// Commits the storage writes gathered under the current operation.
    fn flush(&self, s: &mut State) {
        if s.ops.is_empty() {
            return;
        }
        let ops = std::mem::take(&mut s.ops);
        if let Err(e) = self.storage.commit(Batch { ops }, Durability::Buffered) {
            // Best effort by contract: memory stays authoritative.
            tracing::warn!(error = %e, "queue state not stored");
        }
    }

    fn answer(
        &self,
        session: &Session,
        request: QueueRequest,
        reply: &Reply,
    ) -> Result<(), WireError> {
        match request {
            QueueRequest::Enqueue(e) => self.enqueue(session, e, reply),
            QueueRequest::Reserve(r) => self.reserve(session, r, reply.clone()),
            QueueRequest::Extend(x) => self.extend(session, &x, reply),
            QueueRequest::Complete(c) => self.complete(session, &c, reply),
            QueueRequest::Subscribe(p) => self.subscribe(session, &p.route, reply),
            QueueRequest::Unsubscribe(p) => {
                self.watches.unregister_pattern(session.id(), &p.route);
                reply.ack();
                Ok(())
            }
        }
    }
}

impl Engine for QueueEngine {
    type Request = QueueRequest;

    fn start(services: &Services) -> Result<Self, StorageError> {
        let now = services.clock.now();
        let mut s = State::new(services.storage.is_durable());
        let mut ready = Vec::new();
        for (key, value) in services.storage.load(Keyspace::Queue)? {
            let unreadable = || StorageError("unreadable queue entry in storage".into());
            let (family, route, id) = storage::split_kv_key(&key).ok_or_else(unreadable)?;
            let id = <[u8; 8]>::try_from(&id[..])
                .map(u64::from_be_bytes)
                .map_err(|_| unreadable())?;
            let (kind, attempts, at, body) = parse_stored(&value).ok_or_else(unreadable)?;
            s.next_id = s.next_id.max(id);
            if kind == STORED_DEAD {
                s.keep_dead(DeadLetter {
                    family,
                    route,
                    message_id: id,
                    body_len: 0,
                    attempts,
                    reason: String::from_utf8_lossy(&body).into_owned(),
                });
                continue;
            }
            let visible_at = UNIX_EPOCH + Duration::from_millis(at);
            let route = s.route_key(family, &route);
            if at > 0 && visible_at > now {
                s.insert(family, route, id, body, attempts, Some(visible_at));
            } else {
                ready.push((id, family, route, body, attempts));
            }
        }
        // Ready order across queues follows enqueue order.
        ready.sort_unstable_by_key(|m| m.0);
        for (id, family, route, body, attempts) in ready {
            s.insert(family, route, id, body, attempts, None);
        }
        if !s.index.is_empty() {
            tracing::info!(messages = s.index.len(), "queue messages recovered");
        }
        let engine = Self {
            state: Mutex::new(s),
            watches: Registry::new(services.ids.clone()),
            storage: services.storage.clone(),
            timers: services.timers.clone(),
            clock: services.clock.clone(),
        };
        engine.rearm(&engine.state.lock());
        Ok(engine)
    }

    fn handle(&self, session: &Session, request: QueueRequest, reply: Reply) {
        if let Err(e) = self.answer(session, request, &reply) {
            reply.error(&e);
        }
    }

    fn refuse(
        &self,
        _session: &Session,
        refusal: Refusal<'_, QueueRequest>,
        reply: &Reply,
    ) -> Result<(), CloseReason> {
        let invalid = if matches!(
            reply.message_type(),
            types::QUEUE_SUBSCRIBE | types::QUEUE_UNSUBSCRIBE
        ) {
            codes::QUEUE_INVALID_PATTERN
        } else {
            codes::QUEUE_BAD_REQUEST
        };
        match refusal {
            Refusal::Malformed { error, .. } => {
                reply.coded(invalid, &format!("malformed request: {error}"));
            }
            Refusal::BadRoute { error, .. } => reply.coded(invalid, &error.to_string()),
            Refusal::Unauthorized { .. } => {
                reply.coded(codes::QUEUE_UNAUTHORIZED, "unauthorized: permission denied");
            }
        }
        Ok(())
    }

    fn session_closed(&self, session: &Session) {
        let now = self.clock.now();
        let mut s = self.state.lock();
        let parked: Vec<u64> = s
            .parked
            .iter()
            .filter(|(_, p)| p.session == session.id())
            .map(|(id, _)| *id)
            .collect();
        for id in parked {
            s.unpark(id);
        }
        let mut held: Vec<u64> = s
            .held
            .remove(&session.id())
            .map(|h| h.into_iter().collect())
            .unwrap_or_default();
        // Back in enqueue order. The set was taken out first, so make_ready
        // finds nothing left to untrack.
        held.sort_unstable();
        let mut touched = BTreeSet::new();
        for id in held {
            if let Some(key) = s.make_ready(id) {
                touched.insert(key);
            }
        }
        self.ready_gained(&mut s, now, touched);
        self.rearm(&s);
        self.flush(&mut s);
        drop(s);
        self.watches.unregister_session(session.id());
    }

    fn tick(&self, now: SystemTime) {
        let mut s = self.state.lock();
        let mut touched = BTreeSet::new();
        while let Some(&(at, id)) = s.delayed_due.first() {
            if at > now {
                break;
            }
            s.delayed_due.pop_first();
            if let Some(key) = s.make_ready(id) {
                touched.insert(key);
            }
        }
        while let Some(&(at, id)) = s.inflight_due.first() {
            if at > now {
                break;
            }
            s.inflight_due.pop_first();
            if let Some(key) = s.make_ready(id) {
                tracing::debug!(message_id = id, route = %key.1, "queue reservation expired");
                touched.insert(key);
            }
        }
        self.ready_gained(&mut s, now, touched);
        while let Some(&(at, id)) = s.parked_due.first() {
            if at > now {
                break;
            }
            s.parked_due.pop_first();
            if let Some(p) = s.unpark(id) {
                send_items(&p.reply, Vec::new());
            }
        }
        self.rearm(&s);
        self.flush(&mut s);
    }
}

/// Route shapes and permissions per request (spec §4, "Permission levels
/// per message"): checked by the dispatcher before [`Engine::handle`].
impl DomainRequest for QueueRequest {
    fn target(&self) -> Target<'_> {
        const S: Scheme = Scheme::Queue;
        match self {
            QueueRequest::Enqueue(m) => concrete(&m.route, S, Access::Write),
            QueueRequest::Reserve(m) => pattern(&m.route, S, Access::Write),
            QueueRequest::Extend(m) => concrete(&m.route, S, Access::Write),
            QueueRequest::Complete(m) => concrete(&m.route, S, Access::Write),
            QueueRequest::Subscribe(m) => pattern(&m.route, S, Access::Read),
            QueueRequest::Unsubscribe(m) => pattern(&m.route, S, Access::Read),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::registry::SubscriptionIds;

    #[test]
    fn stored_values_round_trip() {
        let v = stored_value(STORED_MESSAGE, 3, 77, b"body");
        assert_eq!(
            parse_stored(&v),
            Some((STORED_MESSAGE, 3, 77, Bytes::from_static(b"body")))
        );
        assert!(parse_stored(&Bytes::from_static(&[0, 1])).is_none());
    }

    /// A durable backend in memory, to test recovery.
    #[derive(Default)]
    struct Saved(parking_lot::Mutex<BTreeMap<Bytes, Bytes>>);

    impl Backend for Saved {
        fn is_durable(&self) -> bool {
            true
        }
        fn commit(&self, batch: Batch, _: Durability) -> Result<(), StorageError> {
            let mut m = self.0.lock();
            for op in batch.ops {
                match op {
                    Op::Put(Keyspace::Queue, k, v) => {
                        m.insert(k, v);
                    }
                    Op::Delete(Keyspace::Queue, k) => {
                        m.remove(&k);
                    }
                    _ => {}
                }
            }
            Ok(())
        }
        fn load(&self, keyspace: Keyspace) -> Result<Vec<(Bytes, Bytes)>, StorageError> {
            Ok(match keyspace {
                Keyspace::Queue => self.0.lock().clone().into_iter().collect(),
                _ => Vec::new(),
            })
        }
    }

    fn services(clock: &Clock, storage: Arc<dyn Backend>) -> Services {
        Services {
            clock: clock.clone(),
            timers: Arc::new(Timers::new(clock.clone())),
            ids: SubscriptionIds::default(),
            storage,
            config: Arc::new(Config::default()),
        }
    }

    fn session(id: SessionId) -> Session {
        Session::new(
            id,
            crate::auth::Grant::anonymous(),
            crate::session::Transport::Tcp,
            None,
            crate::session::OutboundLimits::default(),
            Arc::default(),
        )
    }

    fn run(e: &QueueEngine, s: &Session, r: QueueRequest) {
        let reply = Reply::new(s.clone(), r_type(&r), None);
        e.handle(s, r, reply);
    }

    fn r_type(r: &QueueRequest) -> u16 {
        r.message_type()
    }

    fn enqueue(route: &str, body: &str, delay: Option<u64>) -> QueueRequest {
        QueueRequest::Enqueue(proto::Enqueue {
            route: route.into(),
            body: Bytes::copy_from_slice(body.as_bytes()),
            delay_seconds: delay,
        })
    }

    #[test]
    fn messages_survive_a_restart_and_inflight_ones_come_back_ready() {
        let clock = Clock::manual(UNIX_EPOCH + Duration::from_secs(1_000_000));
        let saved: Arc<Saved> = Arc::default();
        let e = QueueEngine::start(&services(&clock, saved.clone())).unwrap();
        let s = session(1);
        let r = "queue://r/a/jobs";
        for body in ["one", "two", "three", "four"] {
            run(&e, &s, enqueue(r, body, None));
        }
        run(&e, &s, enqueue(r, "later", Some(60)));
        run(&e, &s, enqueue("queue://r/a/other", "x", None));
        // Reserve two; complete the first, leave the second inflight.
        let mut st = e.state.lock();
        let items = st.take(1, r, false, 2, clock.now() + Duration::from_secs(30), 1);
        drop(st);
        assert_eq!(items.len(), 2);
        run(
            &e,
            &s,
            QueueRequest::Complete(proto::Complete {
                route: r.into(),
                message_id: items[0].message_id,
                lease_token: items[0].lease_token,
            }),
        );
        assert_eq!(
            e.counters(1, r),
            Counters {
                ready: 2,
                delayed: 1,
                inflight: 1
            }
        );
        drop(e);

        let e = QueueEngine::start(&services(&clock, saved.clone())).unwrap();
        assert_eq!(
            e.counters(1, r),
            Counters {
                ready: 3,
                delayed: 1,
                inflight: 0
            }
        );
        let mut st = e.state.lock();
        let items = st.take(1, r, false, 10, clock.now() + Duration::from_secs(30), 2);
        let bodies: Vec<&[u8]> = items.iter().map(|i| &i.body[..]).collect();
        assert_eq!(bodies, [&b"two"[..], b"three", b"four"]);
        assert!(st.next_id >= 6, "ids continue after the recovered ones");
        drop(st);
        // The delayed message keeps its absolute visibility time.
        let later = Duration::from_secs(61);
        drop(e);
        let clock2 = Clock::manual(UNIX_EPOCH + Duration::from_secs(1_000_000) + later);
        let e = QueueEngine::start(&services(&clock2, saved)).unwrap();
        assert_eq!(e.counters(1, r).ready, 4);
        assert_eq!(e.counters(1, "queue://r/a/other").ready, 1);
    }

    #[test]
    fn dead_letters_are_stored_as_such() {
        let clock = Clock::manual(UNIX_EPOCH + Duration::from_secs(5));
        let saved: Arc<Saved> = Arc::default();
        let e = QueueEngine::start(&services(&clock, saved.clone())).unwrap();
        let s = session(1);
        let r = "queue://r/a/big";
        let big = "x".repeat(ITEM_BUDGET);
        run(&e, &s, enqueue(r, &big, None));
        let mut st = e.state.lock();
        assert!(st.take(1, r, false, 1, clock.now(), 1).is_empty());
        drop(st);
        e.flush(&mut e.state.lock());
        drop(e);
        let e = QueueEngine::start(&services(&clock, saved)).unwrap();
        assert_eq!(e.counters(1, r), Counters::default());
        let dead = e.dead_letters();
        assert_eq!(dead.len(), 1);
        assert_eq!(
            (dead[0].route.as_str(), dead[0].reason.as_str()),
            (r, REASON_TOO_LARGE)
        );
    }
}
