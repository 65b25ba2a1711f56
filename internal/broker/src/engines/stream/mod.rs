//! Stream (600–609): durable append-only logs with commit-time ordering.
//!
//! * **Append sessions.** BEGIN takes the resource's write lock (one append
//!   session per resource; a second BEGIN from anyone gets 2002) and returns
//!   a broker-unique session id that only the connection that opened it can
//!   use (others get 2003). APPEND checks `expected_offset` against the
//!   resource's next offset counting the session's earlier appends (2001),
//!   and buffers the record; its reply data is the assigned resource offset.
//!   COMMIT publishes the batch atomically; ROLLBACK, or the connection
//!   ending, discards it and releases the lock.
//! * **Commit.** Commits are serialized by one commit lock, so resource,
//!   area, realm and the family-wide global offsets are assigned in commit
//!   order. Offsets are planned under a short state lock, the batch is
//!   written through the storage [`Backend`] (with Sync it is on stable
//!   storage when `commit` returns) *without* the state lock, so READs go on
//!   meanwhile, and only then installed: nothing is visible, and nothing is
//!   acknowledged, before it is stored. A storage failure answers 2012 and
//!   ends the append session.
//! * **READ** pages over the exact resource and the nine wildcard selector
//!   shapes; the private `read` module documents the page, cursor and
//!   continuation rules.
//! * **LAST / GET_METADATA** answer from the committed log; an unknown
//!   resource is empty (`[0]` for LAST; no first/last offset, count 0).
//! * **Watches.** SUBSCRIBE/UNSUBSCRIBE use the shared [`Registry`] rules;
//!   commit notifications are debounced per resource (module `notify`, [`DEBOUNCE`]).
//! * **Memory.** The whole committed log is kept in memory (the backend is
//!   for durability and recovery); there is no retention (`ttl` none).
//!   Pending batches are bounded by the batch limits and the number of open
//!   append sessions per connection.
//!
//! Errors: READ answers status-1 coded errors, every other operation the
//! status-2 `[2][u32 code][str]` envelope. Decisions where the spec is
//! silent:
//! * 2005 (resource not found) is never sent: the spec's rule that reading
//!   past the watermark is an empty success (AC-STREAM-003) covers streams
//!   not written yet too, so a reader can follow a stream before its first
//!   commit; LAST and GET_METADATA report an unknown resource as empty.
//! * Batch limits ([`MAX_BATCH_EVENTS`], [`MAX_BATCH_BYTES`], counting body,
//!   metadata and discriminator bytes) are enforced at APPEND with 2012, the
//!   spec's default code; at most [`MAX_OPEN_SESSIONS`] append sessions per
//!   connection (2014, busy).
//! * A COMMIT of an empty session succeeds and publishes nothing.
//! * BEGIN's reply data is the resource's next offset (u64); APPEND's is the
//!   assigned offset; COMMIT's is the batch's first and last resource, area,
//!   realm and global offsets (eight u64, empty for an empty batch). All are
//!   opaque to clients. BEGIN's ingest metadata is accepted and not kept.
//! * Invalid routes and selectors get 2010 in every operation; undecodable
//!   payloads get 2012.

mod log;
mod notify;
mod read;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::{BufMut, Bytes, BytesMut};
use fitz_protocol::route::{self, SelectorScope};
use fitz_protocol::stream::{
    self, AppendOk, BeginOk, CommitOk, FilterError, FilterSet, LastOk, Metadata, MetadataOk,
    ReadOk, SubscribeReply,
};
use fitz_protocol::types::{self, Domain};
use fitz_protocol::{Str, WireError, codes};
use parking_lot::{Mutex, RwLock};

use self::log::{FamilyLog, Mark, Pending, Span, StoredRecord};
use self::notify::Debouncer;
use super::{DomainRequest, Target, concrete, pattern};
use super::{Engine, Refusal, Services, StreamRequest};
use crate::auth::Access;
use crate::auth::Family;
use crate::clock::{Clock, Timers};
use crate::registry::Registry;
use crate::session::{CloseReason, Reply, Session, SessionId};
use fitz_protocol::route::Scheme;
/// Route shapes and permissions per request (spec §4, "Permission levels
/// per message"): checked by the dispatcher before [`Engine::handle`].
impl DomainRequest for StreamRequest {
    fn target(&self) -> Target<'_> {
        const S: Scheme = Scheme::Stream;
        match self {
            StreamRequest::Begin(m) => concrete(&m.route, S, Access::Write),
            StreamRequest::Append(_) | StreamRequest::Commit(_) | StreamRequest::Rollback(_) => {
                Target::SessionOwned
            }
            StreamRequest::Read(m) => Target::StreamSelector {
                selector: &m.selector,
                access: Access::Read,
            },
            StreamRequest::Last(m) => concrete(&m.route, S, Access::Read),
            StreamRequest::GetMetadata(m) => concrete(&m.route, S, Access::Read),
            StreamRequest::Subscribe(m) => pattern(&m.route, S, Access::Read),
            StreamRequest::Unsubscribe(m) => pattern(&m.route, S, Access::Read),
        }
    }
}

#[cfg(test)]
use crate::storage::Durability;
use crate::storage::{Backend, Batch, Keyspace, Op, StorageError};

pub use self::notify::DEBOUNCE;
pub use self::read::{MAX_EXAMINED, MAX_ITEMS};

/// Most records one append session may hold (GET_METADATA `max_batch_events`).
pub const MAX_BATCH_EVENTS: u64 = 1_000;
/// Most bytes (body + metadata + discriminator) one append session may hold
/// (GET_METADATA `max_batch_bytes`).
pub const MAX_BATCH_BYTES: u64 = 1 << 20;
/// Most append sessions one connection may have open at once.
pub const MAX_OPEN_SESSIONS: usize = 64;

/// The Stream engine.
pub struct StreamEngine {
    state: RwLock<State>,
    /// Serializes commits from offset planning to installation.
    commits: Mutex<()>,
    watches: Registry,
    debounce: Mutex<Debouncer>,
    storage: Arc<dyn Backend>,
    timers: Arc<Timers>,
    clock: Clock,
    session_ids: AtomicU64,
}

#[derive(Default)]
struct State {
    families: HashMap<Family, FamilyLog>,
    sessions: HashMap<u64, AppendSession>,
    open_by_owner: HashMap<SessionId, usize>,
}

struct AppendSession {
    owner: SessionId,
    family: Family,
    route: Str,
    batch: Vec<Pending>,
    bytes: usize,
}

/// Counts for inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamStats {
    /// Open append sessions.
    pub append_sessions: usize,
    /// Committed records over every family.
    pub records: usize,
    /// Watch registrations.
    pub watches: usize,
    /// Commit notifications waiting for their debounce window.
    pub pending_notifications: usize,
}

fn fail(ty: u16, code: u32, message: impl Into<String>) -> WireError {
    let message: String = message.into();
    if ty == types::STREAM_READ {
        WireError::coded(code, message)
    } else {
        WireError::stream(code, message)
    }
}

/// Cuts a message to a few hundred bytes (storage errors and the like may
/// quote long routes; replies stay small).
fn short(mut m: String) -> String {
    const MAX: usize = 512;
    if m.len() > MAX {
        let mut cut = MAX;
        while !m.is_char_boundary(cut) {
            cut -= 1;
        }
        m.truncate(cut);
        m.push('…');
    }
    m
}

fn not_found() -> WireError {
    WireError::stream(codes::STREAM_SESSION_NOT_FOUND, "session not found")
}

impl State {
    /// Removes `id` and releases what it held; the caller checked ownership.
    fn end_session(&mut self, id: u64) -> Option<AppendSession> {
        let s = self.sessions.remove(&id)?;
        if let Some(n) = self.open_by_owner.get_mut(&s.owner) {
            *n -= 1;
            if *n == 0 {
                self.open_by_owner.remove(&s.owner);
            }
        }
        Some(s)
    }

    fn release(&mut self, family: Family, route: &str, id: u64) {
        if let Some(fam) = self.families.get_mut(&family) {
            if let Some(res) = fam.resources.get_mut(route)
                && res.writer == Some(id)
            {
                res.writer = None;
            }
            fam.forget_if_empty(route);
            if fam.is_empty() {
                self.families.remove(&family);
            }
        }
    }

    fn owned(&mut self, owner: SessionId, id: u64) -> Result<&mut AppendSession, WireError> {
        self.sessions
            .get_mut(&id)
            .filter(|s| s.owner == owner)
            .ok_or_else(not_found)
    }
}

impl StreamEngine {
    /// Counts of sessions, records, watches and pending notifications.
    pub fn stats(&self) -> StreamStats {
        let s = self.state.read();
        StreamStats {
            append_sessions: s.sessions.len(),
            records: s.families.values().map(|f| f.records.len()).sum(),
            watches: self.watches.len(),
            pending_notifications: self.debounce.lock().len(),
        }
    }

    /// The watch registry (inspection).
    pub fn watches(&self) -> &Registry {
        &self.watches
    }

    fn begin(&self, session: &Session, b: &stream::Begin) -> Result<BeginOk, WireError> {
        let mut s = self.state.write();
        if s.open_by_owner.get(&session.id()).copied().unwrap_or(0) >= MAX_OPEN_SESSIONS {
            return Err(WireError::stream(
                codes::STREAM_BUSY,
                format!(
                    "too many open append sessions on this connection (max {MAX_OPEN_SESSIONS})"
                ),
            ));
        }
        let id = self.session_ids.fetch_add(1, Ordering::Relaxed) + 1;
        let route = b.route.clone();
        let fam = s.families.entry(session.family()).or_default();
        let res = fam.resources.entry(route.clone()).or_default();
        if res.writer.is_some() {
            return Err(WireError::stream(
                codes::STREAM_SESSION_ACTIVE,
                "session already active",
            ));
        }
        res.writer = Some(id);
        let next = res.offsets.len() as u64;
        s.sessions.insert(
            id,
            AppendSession {
                owner: session.id(),
                family: session.family(),
                route,
                batch: Vec::new(),
                bytes: 0,
            },
        );
        *s.open_by_owner.entry(session.id()).or_default() += 1;
        Ok(BeginOk {
            session_id: id,
            data: Bytes::copy_from_slice(&next.to_be_bytes()),
        })
    }

    fn append(&self, session: &Session, a: stream::Append) -> Result<AppendOk, WireError> {
        let mut s = self.state.write();
        let st = &mut *s;
        let sess = st
            .sessions
            .get_mut(&a.session_id)
            .filter(|x| x.owner == session.id())
            .ok_or_else(not_found)?;
        let committed = st
            .families
            .get(&sess.family)
            .map_or(0, |f| f.next_resource_offset(&sess.route));
        let next = committed + sess.batch.len() as u64;
        if a.expected_offset != next {
            return Err(WireError::stream(
                codes::STREAM_CONCURRENCY_CONFLICT,
                format!(
                    "concurrency conflict: expected_offset {} but the next offset is {next}",
                    a.expected_offset
                ),
            ));
        }
        let p = Pending {
            body: a.body,
            metadata: a.metadata,
            discriminator: a.discriminator,
        };
        if sess.batch.len() as u64 >= MAX_BATCH_EVENTS {
            return Err(WireError::stream(
                codes::STREAM_BACKEND,
                format!("batch limit: at most {MAX_BATCH_EVENTS} records per append session"),
            ));
        }
        if (sess.bytes + p.size()) as u64 > MAX_BATCH_BYTES {
            return Err(WireError::stream(
                codes::STREAM_BACKEND,
                format!("batch limit: at most {MAX_BATCH_BYTES} bytes per append session"),
            ));
        }
        sess.bytes += p.size();
        sess.batch.push(p);
        Ok(AppendOk {
            data: Bytes::copy_from_slice(&next.to_be_bytes()),
        })
    }

    fn commit(&self, session: &Session, c: &stream::Commit) -> Result<CommitOk, WireError> {
        let _serial = self.commits.lock();
        // Plan under a short lock: take the session, assign offsets.
        let (family, route, id, planned) = {
            let mut s = self.state.write();
            s.owned(session.id(), c.session_id)?;
            let Some(sess) = s.end_session(c.session_id) else {
                return Err(not_found());
            };
            if sess.batch.is_empty() {
                s.release(sess.family, &sess.route, c.session_id);
                return Ok(CommitOk::default());
            }
            let created = self.clock.unix_millis();
            let fam = s.families.entry(sess.family).or_default();
            let planned = fam.plan(&sess.route, sess.batch, created);
            (sess.family, sess.route, c.session_id, planned)
        };
        // Store without the state lock: READs and other sessions' APPENDs go
        // on while a Sync commit waits for the disk. The resource stays
        // locked by this session, and the commit lock keeps offsets in order.
        let stored = if self.storage.is_durable() {
            self.storage
                .commit(storage_batch(family, &planned), c.durability)
        } else {
            Ok(())
        };
        let mut s = self.state.write();
        let installed = match stored {
            Ok(()) => s
                .families
                .entry(family)
                .or_default()
                .install(planned)
                .map_err(|e| WireError::stream(codes::STREAM_BACKEND, short(e))),
            Err(e) => {
                tracing::warn!(error = %e, route = %route, "stream commit failed");
                Err(WireError::stream(
                    codes::STREAM_BACKEND,
                    short(e.to_string()),
                ))
            }
        };
        s.release(family, &route, id);
        drop(s);
        let span = installed?.unwrap_or(Span {
            first: [0; 4],
            last: [0; 4],
            count: 0,
        });
        self.schedule_notify(family, route, span);
        let mut data = BytesMut::with_capacity(64);
        for axis in 0..4 {
            data.put_u64(span.first[axis]);
            data.put_u64(span.last[axis]);
        }
        Ok(CommitOk {
            data: data.freeze(),
        })
    }

    fn rollback(&self, session: &Session, r: &stream::Rollback) -> Result<(), WireError> {
        let mut s = self.state.write();
        s.owned(session.id(), r.session_id)?;
        if let Some(sess) = s.end_session(r.session_id) {
            s.release(sess.family, &sess.route, r.session_id);
        }
        Ok(())
    }

    fn read(&self, session: &Session, r: &stream::Read) -> Result<ReadOk, WireError> {
        let ty = types::STREAM_READ;
        let scope = route::stream_selector(&r.selector)
            .map_err(|e| fail(ty, codes::STREAM_INVALID_PATTERN, e.to_string()))?;
        let selector = read::Selector::parse(&r.selector, scope).ok_or_else(|| {
            fail(
                ty,
                codes::STREAM_INVALID_PATTERN,
                "not a valid stream selector",
            )
        })?;
        let filter = match r.filter.clone().map(FilterSet::decode) {
            None => None,
            Some(Ok(f)) if f.clauses.is_empty() => None,
            Some(Ok(f)) => Some(f),
            Some(Err(FilterError::UnsupportedVersion)) => {
                return Err(fail(
                    ty,
                    codes::STREAM_FILTER_VERSION,
                    "unsupported filter version",
                ));
            }
            Some(Err(FilterError::Malformed(e))) => {
                return Err(fail(
                    ty,
                    codes::STREAM_FILTER_INVALID,
                    format!("invalid filter payload: {e}"),
                ));
            }
        };
        let req = read::Request {
            selector,
            from_offset: r.from_offset,
            limit: r.limit,
            max_bytes: r.max_bytes,
            filter,
            cursor_fingerprint: r.cursor_fingerprint,
            captured_watermark: r.captured_watermark,
        };
        let page = {
            let s = self.state.read();
            read::page(session.family(), s.families.get(&session.family()), &req)
        }
        .map_err(|(code, m)| fail(ty, code, m))?;
        Ok(ReadOk {
            id: None,
            data: read::encode(&page, scope == SelectorScope::Global),
        })
    }

    fn last(&self, session: &Session, route: &str) -> LastOk {
        let s = self.state.read();
        let record = s.families.get(&session.family()).and_then(|f| {
            let g = *f.resources.get(route)?.offsets.last()?;
            f.record(g).map(|r| r.wire(false))
        });
        LastOk { record }
    }

    fn metadata(&self, session: &Session, route: &str) -> MetadataOk {
        let s = self.state.read();
        let fam = s.families.get(&session.family());
        let count = fam.map_or(0, |f| f.next_resource_offset(route));
        let (realm, area, _) = log::split_route(route).unwrap_or(("", "", ""));
        let mark = |len: usize| (len as u64).saturating_sub(1);
        MetadataOk {
            metadata: Metadata {
                first_offset: (count > 0).then_some(0),
                last_offset: count.checked_sub(1),
                record_count: count,
                max_batch_events: MAX_BATCH_EVENTS,
                max_batch_bytes: MAX_BATCH_BYTES,
                ttl_seconds: None,
                area_watermark: mark(fam.map_or(0, |f| f.area(realm, area).len())),
                realm_watermark: mark(fam.map_or(0, |f| f.realm(realm).len())),
            },
        }
    }

    /// Queues the debounced NOTIFY of a commit, when someone watches it.
    fn schedule_notify(&self, family: Family, route: Str, span: Span) {
        if span.count == 0 {
            return;
        }
        let mut watched = false;
        self.watches
            .for_each_match(family, &route, |_| watched = true);
        if !watched {
            return;
        }
        let now = self.clock.now();
        if let Some(due) = self.debounce.lock().add(family, route, span, now) {
            self.timers.wake_at(Domain::Stream, due);
        }
    }

    fn answer(
        &self,
        session: &Session,
        request: StreamRequest,
        reply: &Reply,
    ) -> Result<(), WireError> {
        match request {
            StreamRequest::Begin(b) => {
                let ok = self.begin(session, &b)?;
                let _ = reply.ok(&ok);
            }
            StreamRequest::Append(a) => {
                let ok = self.append(session, a)?;
                let _ = reply.ok(&ok);
            }
            StreamRequest::Commit(c) => {
                let ok = self.commit(session, &c)?;
                let _ = reply.ok(&ok);
            }
            StreamRequest::Rollback(r) => {
                self.rollback(session, &r)?;
                reply.ack();
            }
            StreamRequest::Read(r) => {
                let ok = self.read(session, &r)?;
                if let Err(e) = reply.ok(&ok) {
                    return Err(fail(
                        types::STREAM_READ,
                        codes::STREAM_RESPONSE_TOO_LARGE,
                        e.to_string(),
                    ));
                }
            }
            StreamRequest::Last(l) => {
                let ok = self.last(session, &l.route);
                if reply.ok(&ok).is_err() {
                    return Err(WireError::stream(
                        codes::STREAM_RESPONSE_TOO_LARGE,
                        "the last record is larger than one response",
                    ));
                }
            }
            StreamRequest::GetMetadata(m) => {
                let _ = reply.ok(&self.metadata(session, &m.route));
            }
            StreamRequest::Subscribe(sub) => {
                let r = self
                    .watches
                    .register(session, &sub.route, ())
                    .map_err(|e| {
                        WireError::stream(codes::STREAM_SUBSCRIPTION_LIMIT, e.message())
                    })?;
                let _ = reply.ok(&SubscribeReply {
                    id: Some(r.id),
                    data: Bytes::new(),
                });
            }
            StreamRequest::Unsubscribe(u) => {
                self.watches.unregister_pattern(session.id(), &u.route);
                reply.ack();
            }
        }
        Ok(())
    }
}

/// The storage writes of a commit: its records and the watermarks after it.
fn storage_batch(family: Family, planned: &[StoredRecord]) -> Batch {
    let mut ops: Vec<Op> = planned
        .iter()
        .map(|r| {
            Op::Put(
                Keyspace::Stream,
                log::record_key(family, r.global_offset),
                log::encode_record(r),
            )
        })
        .collect();
    if let Some(last) = planned.last() {
        let (realm, area, _) = last.segments();
        let u = |v: u64| Bytes::copy_from_slice(&v.to_be_bytes());
        ops.push(Op::Put(
            Keyspace::Stream,
            log::watermark_key(family, Mark::Area, &format!("{realm}/{area}")),
            u(last.area_offset),
        ));
        ops.push(Op::Put(
            Keyspace::Stream,
            log::watermark_key(family, Mark::Realm, realm),
            u(last.realm_offset),
        ));
        ops.push(Op::Put(
            Keyspace::Stream,
            log::watermark_key(family, Mark::Global, ""),
            u(last.global_offset + 1),
        ));
    }
    Batch { ops }
}

impl Engine for StreamEngine {
    type Request = StreamRequest;

    fn start(services: &Services) -> Result<Self, StorageError> {
        let families = log::recover(services.storage.load(Keyspace::Stream)?)?;
        Ok(Self {
            state: RwLock::new(State {
                families,
                ..State::default()
            }),
            commits: Mutex::new(()),
            watches: Registry::new(services.ids.clone()),
            debounce: Mutex::new(Debouncer::default()),
            storage: services.storage.clone(),
            timers: services.timers.clone(),
            clock: services.clock.clone(),
            session_ids: AtomicU64::new(0),
        })
    }

    fn handle(&self, session: &Session, request: StreamRequest, reply: Reply) {
        if let Err(e) = self.answer(session, request, &reply) {
            reply.error(&e);
        }
    }

    fn refuse(
        &self,
        _session: &Session,
        refusal: Refusal<'_, StreamRequest>,
        reply: &Reply,
    ) -> Result<(), CloseReason> {
        let ty = reply.message_type();
        let e = match refusal {
            Refusal::Unauthorized { .. } => fail(
                ty,
                codes::STREAM_UNAUTHORIZED,
                "unauthorized: permission denied",
            ),
            Refusal::BadRoute { error, .. } => fail(
                ty,
                codes::STREAM_INVALID_PATTERN,
                format!("invalid stream route or selector: {error}"),
            ),
            Refusal::Malformed { error, .. } => fail(
                ty,
                codes::STREAM_BACKEND,
                format!("malformed request: {error}"),
            ),
        };
        reply.error(&e);
        Ok(())
    }

    fn session_closed(&self, session: &Session) {
        let mut s = self.state.write();
        if !s.open_by_owner.contains_key(&session.id()) {
            drop(s);
            self.watches.unregister_session(session.id());
            return;
        }
        let ids: Vec<u64> = s
            .sessions
            .iter()
            .filter(|(_, a)| a.owner == session.id())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(sess) = s.end_session(id) {
                s.release(sess.family, &sess.route, id);
            }
        }
        drop(s);
        self.watches.unregister_session(session.id());
    }

    fn tick(&self, now: SystemTime) {
        let (due, next) = self.debounce.lock().take_due(now);
        if let Some(at) = next {
            self.timers.wake_at(Domain::Stream, at);
        }
        for (family, route, span) in due {
            let json = notify::committed_json(&span);
            self.watches.for_each_match(family, &route, |reg| {
                reg.session.notify(&stream::Notify {
                    sub_id: reg.id,
                    route: route.clone(),
                    payload: json.clone(),
                });
            });
        }
    }
}

#[cfg(test)]
mod tests;
