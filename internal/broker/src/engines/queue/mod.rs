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

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fitz_protocol::queue::{self as proto, Counters, EnqueueOk, Notify, SubscribeReply};
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
use crate::session::{CloseReason, Reply, Session};
use crate::storage::{self, Backend, Batch, Durability, Keyspace, Op, StorageError};
use fitz_protocol::route::Scheme;

mod state;
mod stored;

use self::state::*;
use self::stored::{STORED_DEAD, STORED_MESSAGE, parse_stored, stored_key, stored_value};

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
    use crate::session::SessionId;

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
