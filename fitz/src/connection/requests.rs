//! The book of outstanding requests and sends, owned by the actor.
//!
//! Two regimes, fixed per session by the broker's hello:
//!
//! * **correlated** (`CAP_CORRELATION`): every request goes out as
//!   `[CORRELATE id][record]` in its own transport frame (a frame may not
//!   repeat a record type, so requests are never packed together) and is
//!   found by id when its `[CORRELATED id][reply]` frame arrives;
//! * **uncorrelated** (legacy brokers): at most one request per message type
//!   is on the wire (a *lane* per type); the next one of that type waits
//!   locally. A reply of type T answers T's lane. A written request whose
//!   caller gave up becomes a *tombstone* that keeps its place until its
//!   late reply arrives and is swallowed.
//!
//! Every entry is keyed by its never-reused id, so cancellation, timeouts and
//! lane bookkeeping are O(1) or O(lane) without scanning the whole book.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use bytes::{Bytes, BytesMut};
use fitz_protocol::frame::encode_frame_with;
use fitz_protocol::record::put_label;
use fitz_protocol::types;
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio::time::Instant;

use super::command::{Confirm, Outbound, Reply};
use crate::error::{Error, Result};

mod deadlines;

/// Fast hashing for ids we generate ourselves (no HashDoS exposure) and for
/// small composite keys.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        // FxHash's mixing step.
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Work the actor does itself; its outcome goes back to the registry.
#[derive(Debug)]
pub(super) enum Internal {
    /// First SUBSCRIBE of a registration.
    Subscribe(u64),
    /// Re-SUBSCRIBE after a reconnect.
    Restore(u64),
    /// UNSUBSCRIBE; `Some` when a caller waits for the acknowledgement.
    Unsubscribe(Option<oneshot::Sender<Result<()>>>),
    /// A caller's request whose answer makes the requests that follow it
    /// (`Reply::Then`). Never abandoned: once its first request is written
    /// the follow-ups go out too, so a transaction it opens is always
    /// ended.
    Then(Box<dyn super::pair::FollowUp>),
}

/// Appends one frame holding `record`, labelled with CORRELATE `label`
/// when given; on error nothing is appended (the buffer is restored).
fn frame_record(
    out: &mut BytesMut,
    max_frame: usize,
    label: Option<u64>,
    record: &[u8],
) -> Result<(), fitz_protocol::EncodeError> {
    encode_frame_with(out, max_frame, |b| {
        if let Some(id) = label {
            put_label(b, types::CORRELATE, id);
        }
        b.extend_from_slice(record);
        Ok(())
    })
}

enum Waiter {
    Once(oneshot::Sender<Result<Bytes>>),
    /// As `Once`, but never abandoned (`Reply::Kept`).
    Kept(oneshot::Sender<Result<Bytes>>),
    Frames {
        tx: tokio::sync::mpsc::Sender<Result<Bytes>>,
        is_final: fn(&Bytes) -> bool,
    },
    Written(oneshot::Sender<Result<()>>),
    /// A committed send (see `Reply::Committed`).
    Committed(Confirm),
    Internal(Internal),
    /// Written, but nobody waits: swallow the answer.
    Tombstone,
    /// Nobody ever waited, yet it must still be written (`Reply::Detached`).
    Detached,
}

impl Waiter {
    fn from_reply(reply: Reply) -> Self {
        match reply {
            Reply::Once(tx) => Self::Once(tx),
            Reply::Kept(tx) => Self::Kept(tx),
            Reply::Frames { tx, is_final } => Self::Frames { tx, is_final },
            Reply::Written(tx) => Self::Written(tx),
            Reply::Detached => Self::Detached,
            Reply::Committed(tx) => Self::Committed(tx),
            Reply::Then(then) => Self::Internal(Internal::Then(then)),
        }
    }

    /// The caller stopped waiting (dropped its future).
    fn abandoned(&self) -> bool {
        match self {
            Self::Once(tx) => tx.is_closed(),
            Self::Frames { tx, .. } => tx.is_closed(),
            Self::Written(tx) => tx.is_closed(),
            // The actor's own work is never abandoned, nor is a detached
            // request, a committed send or a kept follow-up: being
            // unobserved is their point.
            Self::Internal(_) | Self::Detached | Self::Committed(_) | Self::Kept(_) => false,
            Self::Tombstone => true,
        }
    }
}

struct Entry {
    ty: u16,
    waiter: Waiter,
    /// The record, until written.
    record: Option<Bytes>,
    deadline: Option<Instant>,
    generation: u64,
    pinned: bool,
    send: bool,
    /// Held while the entry exists: the in-flight limit counts it.
    _permit: Option<OwnedSemaphorePermit>,
}

impl Entry {
    fn written(&self) -> bool {
        self.record.is_none()
    }
}

#[derive(Default)]
struct Lane {
    on_wire: Option<u64>,
    waiting: VecDeque<u64>,
}

/// The session the book currently writes to.
#[derive(Debug, Clone, Copy)]
pub(super) struct Session {
    pub correlated: bool,
    pub generation: u64,
    pub max_frame: usize,
}

/// An internal request finished.
pub(super) type Finished = (Internal, Result<Bytes>);

#[derive(Default)]
pub(super) struct Book {
    entries: IdMap<u64, Entry>,
    deadlines: deadlines::Deadlines,
    backlog: VecDeque<u64>,
    lanes: IdMap<u16, Lane>,
}

impl Book {
    /// Files a caller's request or send.
    pub fn file(&mut self, out: Outbound) -> u64 {
        let send = matches!(out.reply, Reply::Written(_) | Reply::Committed(_));
        // A committed send waits as long as its session lives.
        let deadline = (!matches!(out.reply, Reply::Committed(_))).then_some(out.deadline);
        self.insert(
            out.id,
            Entry {
                ty: out.ty,
                waiter: Waiter::from_reply(out.reply),
                record: Some(out.record.into_bytes()),
                deadline,
                generation: out.generation,
                pinned: out.pinned,
                send,
                _permit: Some(out.permit),
            },
        );
        out.id
    }

    /// The fast path of an item that may be written right now. A send
    /// (publish, RPC chunk, cancellation) is encoded straight into `out` and
    /// acknowledged, without filing it (no map entry, no deadline to insert
    /// and remove). A request on a correlated session is encoded straight
    /// from its command (an inline record needs no allocation) and filed as
    /// written. Gives the item back when it must be filed first: a request
    /// on a legacy broker (its type's lane decides), or an item issued for
    /// another session. The caller checks the admission conditions first
    /// (session ready, no backlog, output below the high-water mark), so the
    /// wire order is the one filing and admitting would give.
    pub fn send_now(
        &mut self,
        item: Outbound,
        session: &Session,
        out: &mut BytesMut,
        finished: &mut Vec<Finished>,
    ) -> Option<Outbound> {
        if item.generation != session.generation {
            return Some(item);
        }
        if !matches!(item.reply, Reply::Written(_) | Reply::Committed(_)) {
            return if session.correlated {
                self.request_now(item, session, out, finished)
            } else {
                Some(item)
            };
        }
        let Outbound { record, reply, .. } = item;
        let waiter = Waiter::from_reply(reply);
        if waiter.abandoned() {
            return None; // as `admit` drops an abandoned send unwritten
        }
        let encoded = frame_record(out, session.max_frame, None, record.as_slice());
        let result = encoded.map(|()| Bytes::new()).map_err(Error::encode);
        deliver_final(waiter, result, finished);
        None
    }

    /// [`Book::send_now`] for a request on a correlated session of its
    /// generation: what `file` + `admit` + `write` would do, in that order,
    /// without the record ever waiting in the book.
    fn request_now(
        &mut self,
        item: Outbound,
        session: &Session,
        out: &mut BytesMut,
        finished: &mut Vec<Finished>,
    ) -> Option<Outbound> {
        let Outbound {
            id,
            ty,
            record,
            deadline,
            generation,
            pinned,
            reply,
            permit,
        } = item;
        let waiter = Waiter::from_reply(reply);
        if waiter.abandoned() {
            return None; // as `admit` drops an abandoned request unwritten
        }
        let encoded = frame_record(out, session.max_frame, Some(id), record.as_slice());
        if let Err(e) = encoded {
            // Nothing was written (the buffer was restored), as in `write`.
            deliver_final(waiter, Err(Error::encode(e)), finished);
            return None;
        }
        self.insert(
            id,
            Entry {
                ty,
                waiter,
                record: None,
                deadline: Some(deadline),
                generation,
                pinned,
                send: false,
                _permit: Some(permit),
            },
        );
        None
    }

    /// Files an internal request of the current session.
    pub fn file_internal(
        &mut self,
        id: u64,
        ty: u16,
        record: Bytes,
        deadline: Instant,
        generation: u64,
        internal: Internal,
    ) {
        self.insert(
            id,
            Entry {
                ty,
                waiter: Waiter::Internal(internal),
                record: Some(record),
                deadline: Some(deadline),
                generation,
                pinned: false,
                send: false,
                _permit: None,
            },
        );
    }

    fn insert(&mut self, id: u64, entry: Entry) {
        if let Some(d) = entry.deadline {
            self.deadlines.insert(d, id);
        }
        self.entries.insert(id, entry);
    }

    pub fn defer(&mut self, id: u64) {
        self.backlog.push_back(id);
    }

    pub fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Admits backlog items while the outbound buffer is below `high_water`.
    pub fn admit_backlog(
        &mut self,
        session: &Session,
        out: &mut BytesMut,
        high_water: usize,
        finished: &mut Vec<Finished>,
    ) {
        while out.len() < high_water {
            let Some(id) = self.backlog.pop_front() else {
                break;
            };
            self.admit(id, session, out, finished);
        }
    }

    /// Puts one filed item on the wire (or in its lane).
    pub fn admit(
        &mut self,
        id: u64,
        session: &Session,
        out: &mut BytesMut,
        finished: &mut Vec<Finished>,
    ) {
        let Some(entry) = self.entries.get(&id) else {
            return; // timed out while waiting
        };
        if entry.waiter.abandoned() && !matches!(entry.waiter, Waiter::Tombstone) {
            self.remove(id);
            return;
        }
        if entry.generation != session.generation {
            let err = if entry.pinned {
                Error::stale()
            } else {
                Error::connection_lost(false)
            };
            self.complete(id, Err(err), finished);
            return;
        }
        if entry.send || session.correlated {
            self.write(id, session, out, finished);
            return;
        }
        let ty = entry.ty;
        let lane = self.lanes.entry(ty).or_default();
        if lane.on_wire.is_none() {
            lane.on_wire = Some(id);
            self.write(id, session, out, finished);
        } else {
            lane.waiting.push_back(id);
        }
    }

    fn write(
        &mut self,
        id: u64,
        session: &Session,
        out: &mut BytesMut,
        finished: &mut Vec<Finished>,
    ) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        let Some(record) = entry.record.take() else {
            return;
        };
        let label = (session.correlated && !entry.send).then_some(id);
        let encoded = frame_record(out, session.max_frame, label, &record);
        if let Err(e) = encoded {
            // Nothing was written: the buffer was restored.
            entry.record = Some(record);
            let ty = entry.ty;
            if let Some(lane) = self.lanes.get_mut(&ty)
                && lane.on_wire == Some(id)
            {
                lane.on_wire = None;
            }
            self.complete(id, Err(Error::encode(e)), finished);
            self.advance_lane(ty, session, out, finished);
            return;
        }
        if entry.send {
            self.complete(id, Ok(Bytes::new()), finished);
        }
    }

    /// Routes one inbound record. Returns it back when no request claims it
    /// (a push, a notification, or a late answer).
    pub fn on_record(
        &mut self,
        correlation: Option<u64>,
        ty: u16,
        payload: Bytes,
        session: &Session,
        out: &mut BytesMut,
        finished: &mut Vec<Finished>,
    ) -> Option<Bytes> {
        let id = match correlation {
            Some(id) => match self.entries.get(&id) {
                Some(e) if e.ty == ty && e.written() => id,
                _ => return Some(payload),
            },
            None if session.correlated => return Some(payload),
            None => match self.lanes.get(&ty).and_then(|l| l.on_wire) {
                Some(id) => id,
                None => return Some(payload),
            },
        };
        let Some(entry) = self.entries.get_mut(&id) else {
            return Some(payload);
        };
        let done = match &entry.waiter {
            Waiter::Frames { tx, is_final } => {
                let last = is_final(&payload);
                match tx.try_send(Ok(payload)) {
                    Ok(()) => last,
                    Err(_) => true, // abandoned or flooded: stop listening
                }
            }
            Waiter::Tombstone => true,
            _ => {
                self.complete(id, Ok(payload), finished);
                self.advance_lane(ty, session, out, finished);
                return None;
            }
        };
        if done {
            self.remove(id);
            self.advance_lane(ty, session, out, finished);
        }
        None
    }

    /// Frees `ty`'s lane when its head is gone and writes the next request.
    fn advance_lane(
        &mut self,
        ty: u16,
        session: &Session,
        out: &mut BytesMut,
        finished: &mut Vec<Finished>,
    ) {
        if session.correlated {
            return;
        }
        loop {
            let Some(lane) = self.lanes.get_mut(&ty) else {
                return;
            };
            if let Some(head) = lane.on_wire {
                if self.entries.contains_key(&head) {
                    return;
                }
                lane.on_wire = None;
            }
            let Some(next) = lane.waiting.pop_front() else {
                self.lanes.remove(&ty);
                return;
            };
            match self.entries.get(&next) {
                None => continue,
                Some(e) if e.waiter.abandoned() => {
                    self.remove(next);
                    continue;
                }
                Some(_) => {
                    if let Some(lane) = self.lanes.get_mut(&ty) {
                        lane.on_wire = Some(next);
                    }
                    self.write(next, session, out, finished);
                }
            }
        }
    }

    /// Delivers a final result and removes the entry.
    fn complete(&mut self, id: u64, result: Result<Bytes>, finished: &mut Vec<Finished>) {
        if let Some(entry) = self.remove(id) {
            deliver_final(entry.waiter, result, finished);
        }
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        // (The deadline list keeps dead entries a while: see `deadlines`.)
        let entry = self.entries.remove(&id)?;
        if let Some(d) = entry.deadline {
            self.deadlines.remove(d, id);
        }
        let entries = &self.entries;
        self.deadlines
            .compact(entries.len(), |id, d| is_waiting(entries, id, d));
        Some(entry)
    }

    pub fn next_deadline(&mut self) -> Option<Instant> {
        let entries = &self.entries;
        self.deadlines
            .first(|id, d| is_waiting(entries, id, d))
            .map(|(d, _)| d)
    }

    /// Fails everything whose deadline has passed.
    pub fn expire(
        &mut self,
        now: Instant,
        session: Option<&Session>,
        out: &mut BytesMut,
        finished: &mut Vec<Finished>,
    ) {
        loop {
            let entries = &self.entries;
            let Some((deadline, id)) = self.deadlines.first(|id, d| is_waiting(entries, id, d))
            else {
                break;
            };
            if deadline > now {
                break;
            }
            self.deadlines.pop(deadline, id);
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            entry.deadline = None;
            let written = entry.written();
            let in_lane = !session.is_some_and(|s| s.correlated) && !entry.send;
            if written && in_lane {
                // Keep the lane's place so the late answer is swallowed.
                let waiter = std::mem::replace(&mut entry.waiter, Waiter::Tombstone);
                deliver_final(waiter, Err(Error::timeout(true)), finished);
                continue;
            }
            let ty = entry.ty;
            self.complete(id, Err(Error::timeout(written)), finished);
            if let Some(s) = session {
                self.advance_lane(ty, s, out, finished);
            }
        }
        // Timed-out ids linger in the backlog; drop them before they can
        // outnumber the live entries (a long outage must not grow memory).
        if self.backlog.len() > self.entries.len() {
            let entries = &self.entries;
            self.backlog.retain(|id| entries.contains_key(id));
        }
    }

    /// The session ended: everything outstanding or queued for it fails.
    /// Items filed for a later generation (issued while reconnecting) stay.
    pub fn fail_session(
        &mut self,
        ended_generation: u64,
        error: impl Fn(bool) -> Error,
        finished: &mut Vec<Finished>,
    ) {
        let ids: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| e.generation <= ended_generation)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let written = self.entries.get(&id).is_some_and(Entry::written);
            self.complete(id, Err(error(written)), finished);
        }
        self.lanes.clear();
        let entries = &self.entries;
        self.backlog.retain(|id| entries.contains_key(id));
    }

    /// Fails everything (the client closed).
    pub fn fail_all(&mut self, error: impl Fn(bool) -> Error, finished: &mut Vec<Finished>) {
        self.fail_session(u64::MAX, error, finished);
        self.backlog.clear();
    }

    pub fn counts(&self) -> (usize, usize, usize) {
        let tombstones = self
            .entries
            .values()
            .filter(|e| matches!(e.waiter, Waiter::Tombstone))
            .count();
        (self.entries.len(), tombstones, self.backlog.len())
    }
}

fn deliver_final(waiter: Waiter, result: Result<Bytes>, finished: &mut Vec<Finished>) {
    match waiter {
        Waiter::Once(tx) | Waiter::Kept(tx) => {
            let _ = tx.send(result);
        }
        Waiter::Frames { tx, .. } => {
            if let Err(e) = result {
                let _ = tx.try_send(Err(e));
            }
        }
        Waiter::Written(tx) => {
            let _ = tx.send(result.map(drop));
        }
        Waiter::Committed(confirm) => confirm.deliver(result.map(drop)),
        Waiter::Internal(i) => finished.push((i, result)),
        Waiter::Tombstone | Waiter::Detached => {}
    }
}

/// Whether request `id` still waits with deadline `at` (the deadline list's
/// test for a dead entry: ids are never reused).
fn is_waiting(entries: &IdMap<u64, Entry>, id: u64, at: Instant) -> bool {
    entries.get(&id).is_some_and(|e| e.deadline == Some(at))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::Semaphore;

    use super::*;
    use crate::connection::command::RecordBuf;
    use crate::error::ErrorKind;

    const CORRELATED: Session = Session {
        correlated: true,
        generation: 1,
        max_frame: 1 << 20,
    };

    fn request(id: u64, record: &[u8], reply: Reply) -> Outbound {
        let permits = Arc::new(Semaphore::new(1));
        Outbound {
            id,
            ty: types::KV_GET,
            record: RecordBuf::from(Bytes::copy_from_slice(record)),
            deadline: Instant::now() + std::time::Duration::from_secs(30),
            generation: 1,
            pinned: false,
            reply,
            permit: permits.try_acquire_owned().expect("a permit"),
        }
    }

    #[test]
    fn a_request_written_at_once_is_filed_as_written_and_answered_by_id() {
        let (mut book, mut out, mut finished) = (Book::default(), BytesMut::new(), Vec::new());
        let (tx, mut rx) = oneshot::channel();
        let item = request(7, b"\x68\x00\x01x", Reply::Once(tx));
        assert!(
            book.send_now(item, &CORRELATED, &mut out, &mut finished)
                .is_none()
        );
        assert!(!out.is_empty(), "written");
        assert_eq!(book.counts(), (1, 0, 0));
        assert!(book.entries.get(&7).is_some_and(Entry::written));
        assert!(book.next_deadline().is_some(), "its deadline is kept");
        let answer = Bytes::from_static(b"\x00ok");
        let unclaimed = book.on_record(
            Some(7),
            types::KV_GET,
            answer.clone(),
            &CORRELATED,
            &mut out,
            &mut finished,
        );
        assert!(unclaimed.is_none());
        assert_eq!(rx.try_recv().expect("answered").expect("ok"), answer);
        assert_eq!(book.counts(), (0, 0, 0));
    }

    #[test]
    fn an_abandoned_or_unencodable_request_is_not_filed_and_a_legacy_one_is_given_back() {
        let (mut book, mut out, mut finished) = (Book::default(), BytesMut::new(), Vec::new());
        // The caller gave up before the actor saw it: nothing is written.
        let (tx, rx) = oneshot::channel();
        drop(rx);
        let item = request(1, b"\x68\x00\x00", Reply::Once(tx));
        assert!(
            book.send_now(item, &CORRELATED, &mut out, &mut finished)
                .is_none()
        );
        assert!(out.is_empty());
        assert_eq!(book.counts(), (0, 0, 0));
        // Larger than a frame: answered with the encoding error, unwritten.
        let tiny = Session {
            max_frame: 8,
            ..CORRELATED
        };
        let (tx, mut rx) = oneshot::channel();
        let item = request(
            2,
            &[0x68, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            Reply::Once(tx),
        );
        assert!(
            book.send_now(item, &tiny, &mut out, &mut finished)
                .is_none()
        );
        let err = rx.try_recv().expect("answered").expect_err("too large");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(out.is_empty());
        assert_eq!(book.counts(), (0, 0, 0));
        // A legacy broker's lane, or another generation: filed by the caller.
        let legacy = Session {
            correlated: false,
            ..CORRELATED
        };
        let (tx, _rx) = oneshot::channel();
        let item = request(3, b"\x68\x00\x00", Reply::Once(tx));
        let back = book.send_now(item, &legacy, &mut out, &mut finished);
        let mut item = back.expect("given back");
        item.generation = 2;
        assert!(
            book.send_now(item, &CORRELATED, &mut out, &mut finished)
                .is_some()
        );
        assert!(out.is_empty());
    }
}
