//! Schedule (700–707): durable cron schedules that notify live watches.
//!
//! Definitions live per route family in an ordered map keyed by the
//! concrete 4-segment route (LIST and LIST_V2 page in route order); a
//! second index orders them by next fire time. A timer tick at the earliest
//! due minute fires every due schedule once and moves it to its next slot
//! strictly after *now*: there is never a backlog of missed runs, whether
//! the broker was down, the clock jumped, or no one was watching.
//!
//! Every CREATE, CREATE_BATCH and CANCEL is written through the storage
//! backend with [`Durability::Sync`] before it becomes visible and before the
//! reply, under the engine lock, so storage sees changes in the same order
//! as memory. Only definitions are stored; next fire times are recomputed
//! from the clock at start (missed runs are skipped), and watches,
//! round-robin cursors and fire counters are live state that never survives
//! a restart.
//!
//! Delivery ([`DeliveryMode`]): *broadcast* pushes one NOTIFY to every
//! matching watch of the schedule's route family; *single* hands the fire to
//! one watch, rotating in registration (subscription id) order per concrete
//! route and skipping a watch whose notification backlog is full. A fire with
//! no taker is skipped, never queued.
//!
//! Error envelopes (protocol §3.4): the domain's own errors on 700, 701,
//! 703, 704, 706 and 707 are **uncoded** (`[1][str]`); LIST (702) errors are
//! coded. Refusals raised before the domain are coded on every type: 7009
//! unauthorized, 7010 busy/backend (also used when storage fails, so the
//! official client may retry).
//!
//! Decisions where the spec is silent:
//! * At most [`MAX_SCHEDULES_PER_FAMILY`] schedules per route family
//!   (uncoded "schedule limit" error, 7003 conceptually).
//! * A definition must fit one LIST and one LIST_V2 page (65,535-byte record
//!   value, the LIST_V2 continuation naming its route included); larger ones
//!   are rejected at CREATE so every schedule stays listable.
//! * LIST: absent offset/limit = 0/100; limit 0 = as many as fit one record;
//!   limit > 1000 is a coded 7004. LIST_V2: absent or 0 limit = 100; limit >
//!   1000 is an uncoded error.
//! * CREATE_BATCH validates every entry before applying any and commits them
//!   as one storage batch; duplicate routes in a batch upsert in order.
//! * A malformed payload is an uncoded error (7004 conceptually) except on
//!   LIST (coded 7004); an unknown delivery mode is the uncoded
//!   `invalid schedule delivery mode` (7008 conceptually).
//! * The cron grammar and its choices (day-of-week 7 rejected) are in
//!   [`cron`].

pub use fitz_protocol::cron;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use fitz_protocol::schedule::{
    self, CONTINUATION_PREFIX, DEFAULT_LIST_LIMIT, DeliveryMode, Entry, ListOk, ListV2Ok,
    MAX_LIST_LIMIT, Notify, SubscribeReply,
};
use fitz_protocol::types::{self, Domain};
use fitz_protocol::{DecodeError, Reader, Str, WireError, codes};
use parking_lot::Mutex;

use self::cron::CronSchedule;
use super::{DomainRequest, Target, concrete, pattern};
use super::{Engine, Refusal, ScheduleRequest, Services};
use crate::auth::Access;
use crate::auth::Family;
use crate::clock::{Clock, Timers};
use crate::registry::Registry;
use crate::session::{CloseReason, Delivery, Reply, Session};
use crate::storage::{self, Backend, Batch, Durability, Keyspace, Op, StorageError};
use fitz_protocol::route::Scheme;

/// Schedules one route family may hold.
pub const MAX_SCHEDULES_PER_FAMILY: usize = 100_000;
/// A LIST / LIST_V2 reply is one record: its value is at most this long.
const RECORD_VALUE: usize = u16::MAX as usize;
/// Version byte in front of a stored definition.
const STORED_VERSION: u8 = 1;

/// The Schedule engine.
pub struct ScheduleEngine {
    state: Mutex<State>,
    /// Round-robin position per concrete route of single-mode schedules: the
    /// subscription id that took the last fire. Separate from `state` so
    /// delivery runs without the definitions lock.
    cursors: Mutex<HashMap<(Family, Str), u64>>,
    watches: Registry,
    storage: Arc<dyn Backend>,
    timers: Arc<Timers>,
    clock: Clock,
    fires: AtomicU64,
    notifications: AtomicU64,
    unheard: AtomicU64,
}

#[derive(Default)]
struct State {
    families: HashMap<Family, BTreeMap<Str, Def>>,
    /// `(next fire, family, route)` of every schedule with a next fire.
    due: BTreeSet<(i64, Family, Str)>,
}

struct Def {
    entry: Entry,
    cron: CronSchedule,
    next_fire: Option<i64>,
    last_fire: Option<i64>,
    executions: u64,
}

/// One fire to deliver once the definitions lock is released.
struct Fire {
    family: Family,
    route: Str,
    mode: DeliveryMode,
    payload: Bytes,
}

/// Counts for inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScheduleStats {
    /// Schedules across all route families.
    pub schedules: usize,
    /// Live watch registrations.
    pub watches: usize,
    /// Occurrences fired (including ones nobody heard).
    pub fires: u64,
    /// NOTIFY records queued to watches.
    pub notifications: u64,
    /// Occurrences that reached no watch.
    pub unheard: u64,
}

/// What one stored schedule looks like from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleInfo {
    /// The definition.
    pub entry: Entry,
    /// The next due minute.
    pub next_fire: Option<SystemTime>,
    /// The last minute it fired (since start).
    pub last_fire: Option<SystemTime>,
    /// Fires since start.
    pub executions: u64,
}

fn uncoded(message: impl Into<String>) -> WireError {
    WireError::uncoded(message.into())
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX) - 1,
    }
}

fn system_time(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// The LIST_V2 continuation naming `route`.
fn continuation(family: Family, route: &str) -> String {
    format!("{CONTINUATION_PREFIX}{family}:{route}")
}

/// The route a LIST_V2 continuation resumes after, if it is one of
/// `family`'s; anything else restarts at the first page.
fn resume_after(family: Family, cursor: Option<&str>) -> Option<&str> {
    let rest = cursor?.strip_prefix(CONTINUATION_PREFIX)?;
    let (fam, route) = rest.split_once(':')?;
    (fam.parse::<Family>().ok()? == family && !route.is_empty()).then_some(route)
}

/// Bytes of a LIST_V2 page carrying only `entry` and a continuation naming
/// it: the largest page one definition can need (a LIST page is smaller).
fn single_entry_page_len(family: Family, entry: &Entry) -> usize {
    let cursor = continuation(family, &entry.route).len();
    // status, version, has_more, cursor flag + str, entry flag + entry, end.
    1 + 1 + 1 + 1 + 4 + cursor + 1 + entry.encoded_len() + 1
}

fn encode_stored(entry: &Entry) -> Bytes {
    let mut b = BytesMut::with_capacity(1 + entry.encoded_len());
    b.put_u8(STORED_VERSION);
    entry.encode(&mut b);
    b.freeze()
}

fn decode_stored(value: Bytes) -> Result<Entry, StorageError> {
    let mut r = Reader::new(value);
    let bad = |e: DecodeError| StorageError(format!("unreadable schedule definition: {e}"));
    match r.u8().map_err(bad)? {
        STORED_VERSION => {}
        v => {
            return Err(StorageError(format!(
                "schedule definition of unknown format version {v}"
            )));
        }
    }
    let entry = Entry::decode(&mut r).map_err(bad)?;
    r.finish().map_err(bad)?;
    Ok(entry)
}

impl ScheduleEngine {
    /// Counts for inspection.
    pub fn stats(&self) -> ScheduleStats {
        let schedules = self.state.lock().families.values().map(BTreeMap::len).sum();
        ScheduleStats {
            schedules,
            watches: self.watches.len(),
            fires: self.fires.load(Ordering::Relaxed),
            notifications: self.notifications.load(Ordering::Relaxed),
            unheard: self.unheard.load(Ordering::Relaxed),
        }
    }

    /// The watch registry (inspection).
    pub fn watches(&self) -> &Registry {
        &self.watches
    }

    /// The schedule at `route` in `family`.
    pub fn get(&self, family: Family, route: &str) -> Option<ScheduleInfo> {
        let s = self.state.lock();
        let d = s.families.get(&family)?.get(route)?;
        Some(ScheduleInfo {
            entry: d.entry.clone(),
            next_fire: d.next_fire.map(system_time),
            last_fire: d.last_fire.map(system_time),
            executions: d.executions,
        })
    }

    /// Test hook: fires the schedule at `route` of `family` now, as an extra
    /// occurrence (its next due time does not move). False when there is no
    /// such schedule.
    pub fn fire_now(&self, family: Family, route: &str) -> bool {
        let now = unix_secs(self.clock.now());
        let fire = {
            let mut s = self.state.lock();
            let Some(d) = s.families.get_mut(&family).and_then(|m| m.get_mut(route)) else {
                return false;
            };
            d.last_fire = Some(now);
            d.executions += 1;
            Fire {
                family,
                route: d.entry.route.clone(),
                mode: d.entry.mode,
                payload: d.entry.payload.clone(),
            }
        };
        self.deliver(&fire);
        true
    }

    /// Validates, stores and applies `entries` (CREATE is a batch of one).
    fn create(&self, session: &Session, entries: Vec<Entry>) -> Result<(), WireError> {
        let family = session.family();
        let mut parsed = Vec::with_capacity(entries.len());
        for entry in entries {
            let cron = CronSchedule::parse(&entry.cron).map_err(|e| {
                uncoded(format!(
                    "invalid cron expression for {}: {e}",
                    short(&entry.route)
                ))
            })?;
            let size = single_entry_page_len(family, &entry);
            if size > RECORD_VALUE {
                return Err(uncoded(format!(
                    "schedule definition too large: {} needs {size} bytes in a LIST_V2 page, \
                     more than one record's {RECORD_VALUE}",
                    short(&entry.route)
                )));
            }
            parsed.push((entry, cron));
        }
        if parsed.is_empty() {
            return Ok(());
        }
        let now = unix_secs(self.clock.now());
        let mut s = self.state.lock();
        let existing = s.families.get(&family);
        let mut new_routes: BTreeSet<&str> = BTreeSet::new();
        for (e, _) in &parsed {
            if existing.is_none_or(|m| !m.contains_key(&*e.route)) {
                new_routes.insert(&e.route);
            }
        }
        let held = existing.map_or(0, BTreeMap::len);
        if held + new_routes.len() > MAX_SCHEDULES_PER_FAMILY {
            return Err(uncoded(format!(
                "schedule limit exceeded ({MAX_SCHEDULES_PER_FAMILY} per route family)"
            )));
        }
        if self.storage.is_durable() {
            let ops = parsed
                .iter()
                .map(|(e, _)| {
                    Op::Put(
                        Keyspace::Schedule,
                        storage::schedule_key(family, &e.route),
                        encode_stored(e),
                    )
                })
                .collect();
            self.storage
                .commit(Batch { ops }, Durability::Sync)
                .map_err(storage_failed)?;
        }
        for (entry, cron) in parsed {
            let next_fire = cron.next_after_unix(now);
            s.upsert(family, entry, cron, next_fire);
        }
        let earliest = s.earliest();
        drop(s);
        self.wake(earliest);
        Ok(())
    }

    fn cancel(&self, session: &Session, route: &str) -> Result<(), WireError> {
        let family = session.family();
        let mut s = self.state.lock();
        let exists = s
            .families
            .get(&family)
            .is_some_and(|m| m.contains_key(route));
        if !exists {
            return Ok(());
        }
        if self.storage.is_durable() {
            let ops = vec![Op::Delete(
                Keyspace::Schedule,
                storage::schedule_key(family, route),
            )];
            self.storage
                .commit(Batch { ops }, Durability::Sync)
                .map_err(storage_failed)?;
        }
        if let Some(def) = s.remove(family, route) {
            drop(s);
            self.cursors.lock().remove(&(family, def.entry.route));
        }
        Ok(())
    }

    fn list(&self, session: &Session, l: schedule::List) -> Result<ListOk, WireError> {
        let limit = l.limit.unwrap_or(DEFAULT_LIST_LIMIT);
        if limit > MAX_LIST_LIMIT {
            return Err(WireError::coded(
                codes::SCHEDULE_PARSE,
                format!("LIST limit {limit} is over the maximum of {MAX_LIST_LIMIT}"),
            ));
        }
        // limit 0: as many as fit the record.
        let limit = if limit == 0 {
            usize::MAX
        } else {
            limit as usize
        };
        let offset = usize::try_from(l.offset.unwrap_or(0)).unwrap_or(usize::MAX);
        let s = self.state.lock();
        let Some(map) = s.families.get(&session.family()) else {
            return Ok(ListOk::default());
        };
        let mut page = ListOk {
            total_count: map.len() as u64,
            entries: Vec::new(),
        };
        // status, total, end sentinel.
        let mut used = 1 + 8 + 1;
        for def in map.values().skip(offset) {
            let size = 1 + def.entry.encoded_len();
            if page.entries.len() >= limit || used + size > RECORD_VALUE {
                break;
            }
            used += size;
            page.entries.push(def.entry.clone());
        }
        Ok(page)
    }

    fn list_v2(&self, session: &Session, l: &schedule::ListV2) -> Result<ListV2Ok, WireError> {
        let limit = match l.limit {
            None | Some(0) => DEFAULT_LIST_LIMIT,
            Some(n) if n > MAX_LIST_LIMIT => {
                return Err(uncoded(format!(
                    "LIST_V2 limit {n} is over the maximum of {MAX_LIST_LIMIT}"
                )));
            }
            Some(n) => n,
        } as usize;
        let family = session.family();
        let after = resume_after(family, l.continuation.as_deref());
        let s = self.state.lock();
        let Some(map) = s.families.get(&family) else {
            return Ok(ListV2Ok::default());
        };
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut iter = map.range::<str, _>((lower, Bound::Unbounded));
        let mut page = ListV2Ok::default();
        // status, version, has_more, end sentinel; the continuation is
        // charged per candidate below since it names the last route.
        let fixed = 1 + 1 + 1 + 1;
        let mut used = fixed;
        for (route, def) in iter.by_ref() {
            let size = 1 + def.entry.encoded_len();
            let cursor = 1 + 4 + continuation(family, route).len();
            if page.entries.len() >= limit || used + size + cursor > RECORD_VALUE {
                page.has_more = true;
                break;
            }
            used += size;
            page.entries.push(def.entry.clone());
        }
        if page.has_more
            && let Some(last) = page.entries.last()
        {
            page.continuation = Some(continuation(family, &last.route).into());
        }
        // A page too small for even one entry cannot happen (CREATE bounds
        // definitions to one page), but never claim more without a cursor.
        if page.entries.is_empty() {
            page.has_more = false;
        }
        Ok(page)
    }

    fn wake(&self, earliest: Option<i64>) {
        if let Some(at) = earliest {
            self.timers.wake_at(Domain::Schedule, system_time(at));
        }
    }

    /// Delivers one occurrence (outside the definitions lock).
    fn deliver(&self, fire: &Fire) {
        self.fires.fetch_add(1, Ordering::Relaxed);
        let notify = |reg_id: u64, session: &Session| {
            session.notify(&Notify {
                sub_id: reg_id,
                route: fire.route.clone(),
                payload: fire.payload.clone(),
            })
        };
        let mut delivered = 0u64;
        match fire.mode {
            DeliveryMode::Broadcast => {
                self.watches
                    .for_each_match(fire.family, &fire.route, |reg| {
                        if notify(reg.id, &reg.session) == Delivery::Queued {
                            delivered += 1;
                        }
                    });
            }
            DeliveryMode::Single => {
                let mut candidates: Vec<(u64, Session)> = Vec::new();
                self.watches
                    .for_each_match(fire.family, &fire.route, |reg| {
                        candidates.push((reg.id, reg.session.clone()));
                    });
                if !candidates.is_empty() {
                    candidates.sort_unstable_by_key(|(id, _)| *id);
                    let key = (fire.family, fire.route.clone());
                    let mut cursors = self.cursors.lock();
                    let last = cursors.get(&key).copied().unwrap_or(0);
                    let start = candidates.partition_point(|(id, _)| *id <= last);
                    let n = candidates.len();
                    let mut taker = None;
                    for i in 0..n {
                        let (id, session) = &candidates[(start + i) % n];
                        if notify(*id, session) == Delivery::Queued {
                            taker = Some(*id);
                            break;
                        }
                    }
                    // Nobody accepted: still move on past the first candidate.
                    let next = taker.unwrap_or(candidates[start % n].0);
                    cursors.insert(key, next);
                    delivered = u64::from(taker.is_some());
                }
            }
        }
        if delivered == 0 {
            self.unheard.fetch_add(1, Ordering::Relaxed);
        }
        self.notifications.fetch_add(delivered, Ordering::Relaxed);
    }

    fn answer(
        &self,
        session: &Session,
        request: ScheduleRequest,
        reply: &Reply,
    ) -> Result<(), WireError> {
        match request {
            ScheduleRequest::Create(c) => {
                self.create(session, vec![c.entry])?;
                reply.ack();
            }
            ScheduleRequest::CreateBatch(b) => {
                self.create(session, b.entries)?;
                reply.ack();
            }
            ScheduleRequest::Cancel(c) => {
                self.cancel(session, &c.route)?;
                reply.ack();
            }
            ScheduleRequest::List(l) => {
                let page = self.list(session, l)?;
                if let Err(e) = reply.ok(&page) {
                    return Err(WireError::coded(codes::SCHEDULE_BUSY, e.to_string()));
                }
            }
            ScheduleRequest::ListV2(l) => {
                let page = self.list_v2(session, &l)?;
                if let Err(e) = reply.ok(&page) {
                    return Err(WireError::coded(codes::SCHEDULE_BUSY, e.to_string()));
                }
            }
            ScheduleRequest::Subscribe(s) => {
                let r = self
                    .watches
                    .register(session, &s.route, ())
                    .map_err(|e| uncoded(e.message()))?;
                let _ = reply.ok(&SubscribeReply { sub_id: r.id });
            }
            ScheduleRequest::Unsubscribe(u) => {
                self.watches.unregister_pattern(session.id(), &u.route);
                reply.ack();
            }
        }
        Ok(())
    }
}

/// A route cut for error messages (errors stay well under a kilobyte).
fn short(route: &str) -> String {
    const MAX: usize = 200;
    if route.len() <= MAX {
        return route.to_owned();
    }
    let mut cut = MAX;
    while !route.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &route[..cut])
}

fn storage_failed(e: StorageError) -> WireError {
    tracing::warn!(error = %e, "schedule storage write failed");
    WireError::coded(codes::SCHEDULE_BUSY, format!("storage unavailable: {e}"))
}

impl State {
    fn upsert(&mut self, family: Family, entry: Entry, cron: CronSchedule, next_fire: Option<i64>) {
        let route = entry.route.clone();
        let map = self.families.entry(family).or_default();
        let old = map.insert(
            route.clone(),
            Def {
                entry,
                cron,
                next_fire,
                last_fire: None,
                executions: 0,
            },
        );
        if let Some(old) = old {
            // Keep the history of the route across an upsert.
            if let Some(d) = map.get_mut(&*route) {
                d.last_fire = old.last_fire;
                d.executions = old.executions;
            }
            if let Some(t) = old.next_fire {
                self.due.remove(&(t, family, route.clone()));
            }
        }
        if let Some(t) = next_fire {
            self.due.insert((t, family, route));
        }
    }

    fn remove(&mut self, family: Family, route: &str) -> Option<Def> {
        let map = self.families.get_mut(&family)?;
        let def = map.remove(route)?;
        if map.is_empty() {
            self.families.remove(&family);
        }
        if let Some(t) = def.next_fire {
            self.due.remove(&(t, family, def.entry.route.clone()));
        }
        Some(def)
    }

    fn earliest(&self) -> Option<i64> {
        self.due.first().map(|(t, _, _)| *t)
    }

    /// Takes every occurrence due at `now` and moves each schedule to its
    /// first slot strictly after `now` (at most one fire per schedule).
    fn take_due(&mut self, now: i64) -> Vec<Fire> {
        let mut fires = Vec::new();
        while let Some((t, family, route)) = self.due.first().cloned() {
            if t > now {
                break;
            }
            self.due.pop_first();
            let Some(d) = self
                .families
                .get_mut(&family)
                .and_then(|m| m.get_mut(&*route))
            else {
                continue;
            };
            if d.next_fire != Some(t) {
                continue;
            }
            d.last_fire = Some(t);
            d.executions += 1;
            d.next_fire = d.cron.next_after_unix(now);
            fires.push(Fire {
                family,
                route: route.clone(),
                mode: d.entry.mode,
                payload: d.entry.payload.clone(),
            });
            if let Some(next) = d.next_fire {
                self.due.insert((next, family, route));
            }
        }
        fires
    }
}

impl Engine for ScheduleEngine {
    type Request = ScheduleRequest;

    fn start(services: &Services) -> Result<Self, StorageError> {
        let now = unix_secs(services.clock.now());
        let mut state = State::default();
        for (key, value) in services.storage.load(Keyspace::Schedule)? {
            let Some((family, route)) = storage::split_schedule_key(&key) else {
                return Err(StorageError("unreadable schedule key in storage".into()));
            };
            let entry = decode_stored(value)?;
            if *entry.route != *route {
                return Err(StorageError(format!(
                    "schedule stored under {} names {}",
                    short(&route),
                    short(&entry.route)
                )));
            }
            // The grammar never loosens, so a stored cron parses; if a
            // future version tightens it, keep the broker starting.
            let cron = match CronSchedule::parse(&entry.cron) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(route = %short(&route), error = %e, "stored schedule skipped");
                    continue;
                }
            };
            let next_fire = cron.next_after_unix(now);
            state.upsert(family, entry, cron, next_fire);
        }
        let engine = Self {
            state: Mutex::new(state),
            cursors: Mutex::new(HashMap::new()),
            watches: Registry::new(services.ids.clone()),
            storage: services.storage.clone(),
            timers: services.timers.clone(),
            clock: services.clock.clone(),
            fires: AtomicU64::new(0),
            notifications: AtomicU64::new(0),
            unheard: AtomicU64::new(0),
        };
        let earliest = engine.state.lock().earliest();
        engine.wake(earliest);
        Ok(engine)
    }

    fn handle(&self, session: &Session, request: ScheduleRequest, reply: Reply) {
        if let Err(e) = self.answer(session, request, &reply) {
            reply.error(&e);
        }
    }

    fn refuse(
        &self,
        _session: &Session,
        refusal: Refusal<'_, ScheduleRequest>,
        reply: &Reply,
    ) -> Result<(), CloseReason> {
        let ty = reply.message_type();
        match refusal {
            Refusal::Unauthorized { .. } => {
                reply.coded(
                    codes::SCHEDULE_UNAUTHORIZED,
                    "unauthorized: permission denied",
                );
            }
            Refusal::BadRoute { error, .. } => {
                let what = if matches!(ty, types::SCHEDULE_SUBSCRIBE | types::SCHEDULE_UNSUBSCRIBE)
                {
                    "invalid schedule subscription pattern"
                } else {
                    "invalid schedule route"
                };
                reply.error(&uncoded(format!("{what}: {error}")));
            }
            Refusal::Malformed { error, .. } => {
                let e = if ty == types::SCHEDULE_LIST {
                    WireError::coded(codes::SCHEDULE_PARSE, format!("malformed request: {error}"))
                } else if let DecodeError::InvalidValue {
                    field: "delivery_mode",
                    value,
                } = error
                {
                    uncoded(format!("invalid schedule delivery mode {value}"))
                } else {
                    uncoded(format!("malformed request: {error}"))
                };
                reply.error(&e);
            }
        }
        Ok(())
    }

    fn session_closed(&self, session: &Session) {
        self.watches.unregister_session(session.id());
    }

    fn tick(&self, now: SystemTime) {
        let (fires, earliest) = {
            let mut s = self.state.lock();
            let fires = s.take_due(unix_secs(now));
            (fires, s.earliest())
        };
        self.wake(earliest);
        for fire in &fires {
            self.deliver(fire);
        }
    }
}

/// Route shapes and permissions per request (spec §4, "Permission levels
/// per message"): checked by the dispatcher before [`Engine::handle`].
impl DomainRequest for ScheduleRequest {
    fn target(&self) -> Target<'_> {
        const S: Scheme = Scheme::Schedule;
        match self {
            ScheduleRequest::Create(m) => concrete(&m.entry.route, S, Access::Write),
            ScheduleRequest::Cancel(m) => concrete(&m.route, S, Access::Write),
            ScheduleRequest::List(_) | ScheduleRequest::ListV2(_) => Target::SchemeWide {
                scheme: S,
                access: Access::Read,
            },
            ScheduleRequest::Subscribe(m) => pattern(&m.route, S, Access::Read),
            ScheduleRequest::Unsubscribe(m) => pattern(&m.route, S, Access::Read),
            ScheduleRequest::CreateBatch(m) => Target::ConcreteSet {
                routes: m.entries.iter().map(|e| &*e.route).collect(),
                scheme: S,
                access: Access::Write,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(route: &str) -> Entry {
        Entry {
            route: route.into(),
            cron: "* * * * *".into(),
            mode: DeliveryMode::Single,
            payload: Bytes::from_static(b"p"),
        }
    }

    #[test]
    fn continuations_name_the_family_and_last_route() {
        let c = continuation(7, "schedule://a/b/c/d");
        assert_eq!(c, "schedule-list-v1:7:schedule://a/b/c/d");
        assert_eq!(resume_after(7, Some(&c)), Some("schedule://a/b/c/d"));
        for foreign in [
            "schedule-list-v1:8:schedule://a/b/c/d",
            "schedule-list-v1:7:",
            "schedule-list-v1:x:schedule://a",
            "schedule-list-v2:7:schedule://a",
            "",
            "garbage",
        ] {
            assert_eq!(resume_after(7, Some(foreign)), None, "{foreign}");
        }
        assert_eq!(resume_after(7, None), None);
    }

    #[test]
    fn stored_definitions_round_trip() {
        let e = entry("schedule://a/b/c/d");
        assert_eq!(decode_stored(encode_stored(&e)).unwrap(), e);
        assert!(decode_stored(Bytes::from_static(b"\x02")).is_err());
        let mut trailing = BytesMut::from(&encode_stored(&e)[..]);
        trailing.put_u8(0);
        assert!(decode_stored(trailing.freeze()).is_err());
    }

    #[test]
    fn due_schedules_fire_once_and_skip_missed_slots() {
        let mut s = State::default();
        let e = entry("schedule://a/b/c/d");
        let cron = CronSchedule::parse(&e.cron).unwrap();
        s.upsert(1, e, cron, Some(60));
        assert!(s.take_due(59).is_empty(), "never before the due minute");
        // A jump of a day fires once and lands after now.
        let fires = s.take_due(86_400 + 30);
        assert_eq!(fires.len(), 1);
        assert_eq!(s.earliest(), Some(86_400 + 60));
        assert!(s.take_due(86_400 + 59).is_empty());
        assert!(s.remove(1, "schedule://a/b/c/d").is_some());
        assert_eq!(s.earliest(), None);
        assert!(s.families.is_empty());
    }

    #[test]
    fn single_entry_page_fits_the_decoded_size() {
        let e = entry("schedule://a/b/c/d");
        let page = ListV2Ok {
            has_more: true,
            continuation: Some(continuation(1, &e.route).into()),
            entries: vec![e.clone()],
        };
        let mut buf = BytesMut::new();
        fitz_protocol::encode_ok(&mut buf, &page).unwrap();
        // The record header is 5 bytes for a type ≥ 255 with a u16 length.
        assert_eq!(buf.len() - 5, single_entry_page_len(1, &e));
    }
}
