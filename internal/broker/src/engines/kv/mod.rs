//! KV (100–111): transactions over one `kv://realm/area/resource`, watches.
//!
//! Committed data of a resource is a persistent ordered map
//! ([`imbl::OrdMap`]): cloning it is O(1) and later writes copy only the
//! touched path, so a ReadOnly BEGIN takes a snapshot without copying the
//! resource, and a ReadWrite transaction works on its own copy that COMMIT
//! installs in O(1). A ReadWrite transaction holds the resource's exclusive
//! lock from BEGIN to COMMIT/ROLLBACK; a second ReadWrite BEGIN (from any
//! session, including the owner) fails at once with 1004. Because the lock
//! owner is the only writer, its copy is always based on the latest commit.
//!
//! Decisions where the spec leaves room:
//! * DELETE_RANGE with `start > end` is rejected with 1007 (AC-KV-011 lets
//!   the broker pick a 1xxx code); equal bounds delete nothing.
//! * An idle ReadWrite transaction (no operation for the configured TTL) is
//!   rolled back by a timer tick and its lock released; later use of its
//!   `tx_id` gets 1001 like any unknown transaction. ReadOnly transactions
//!   hold no lock and do not expire.
//! * The NOTIFY mutation count is the number of writes that changed the
//!   transaction's view: each PUT and INSERT, each DELETE of a present key,
//!   each key removed by DELETE_RANGE.
//! * Uncommitted writes are bounded: the keys and values one transaction
//!   PUTs or INSERTs may add up to `FITZ_KV_TX_MAX_BYTES`, those of every
//!   open transaction together to `FITZ_KV_TX_TOTAL_BYTES` (overwrites
//!   count again; deletes free nothing until the transaction ends). A write
//!   beyond either aborts its transaction at once — the staged writes are
//!   dropped and the lock released — and answers `1010` (aborted): the spec
//!   has no "transaction too large" code, and 1010 says what happened and
//!   that nothing was applied.
//! * A BEGIN that cannot be decoded, or whose route is invalid, closes the
//!   session with `authorization parse failed: …` (kv.md); other malformed
//!   requests get 1007 (1012 for SUBSCRIBE/UNSUBSCRIBE).

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fitz_protocol::kv::{self, BeginOk, GetOk, Notify, ScanOk, SubscribeReply, TxMode};
use fitz_protocol::types::{self, Domain};
use fitz_protocol::{WireError, codes};
use imbl::OrdMap;
use parking_lot::Mutex;

use super::{DomainRequest, Target, concrete, pattern};
use super::{Engine, KvRequest, Refusal, Services};
use crate::auth::Access;
use crate::auth::Family;
use crate::clock::{Clock, Timers};
use crate::hash::Seeded;
use crate::registry::Registry;
use crate::session::{CloseReason, Reply, Session, SessionId};
use crate::storage::{self, Backend, Batch, Keyspace, Op, Pending, StorageError};
use fitz_protocol::route::Scheme;

mod tx;

/// Most items in one SCAN page.
pub const MAX_SCAN_ITEMS: usize = 1024;
/// Bytes a SCAN page body may use: one record value minus the status byte,
/// the item count and the `has_more` flag.
const SCAN_BUDGET: usize = u16::MAX as usize - 1 - 4 - 1;

type Map = OrdMap<Bytes, Bytes>;

/// The KV engine.
pub struct KvEngine {
    /// Shared with storage completions (a COMMIT answered when durable).
    state: Arc<Mutex<State>>,
    watches: Arc<Registry>,
    storage: Arc<dyn Backend>,
    timers: Arc<Timers>,
    clock: Clock,
    idle_ttl: Duration,
    tx_ids: AtomicU64,
    /// Bytes one transaction may stage.
    tx_max_bytes: usize,
    /// Bytes all open transactions may stage together.
    tx_total_bytes: usize,
}

#[derive(Default)]
struct State {
    /// Keyed by family, then route (client-chosen strings, so the fast
    /// hash is seeded per map, as the route registry's).
    resources: HashMap<Family, HashMap<Arc<str>, Resource, Seeded>, Seeded>,
    txs: HashMap<u64, Tx, Seeded>,
    /// Bytes staged by every open transaction (the sum of their `staged`)
    /// and by every commit not yet written to storage (so the staging
    /// budget also bounds what waits for the storage writer).
    staged: usize,
}

#[derive(Default)]
struct Resource {
    committed: Map,
    locked_by: Option<u64>,
}

struct Tx {
    session: SessionId,
    family: Family,
    route: Arc<str>,
    mode: TxMode,
    /// The committed state at BEGIN, plus the writes once flattened.
    view: Map,
    /// Writes not yet applied to `view` (see `Tx::write`), in order.
    pending: smallvec::SmallVec<[(Bytes, Option<Bytes>); 1]>,
    /// `view` holds writes: it is no longer the BEGIN snapshot.
    flattened: bool,
    /// Storage writes, recorded only for a durable backend.
    ops: Vec<Op>,
    mutations: u64,
    last_active: SystemTime,
    /// Bytes of keys and values written so far.
    staged: usize,
}

/// Counts for inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KvStats {
    /// Open transactions.
    pub transactions: usize,
    /// Resources currently locked by a ReadWrite transaction.
    pub locked_resources: usize,
    /// Watch registrations.
    pub watches: usize,
}

fn err(code: u32, message: impl Into<String>) -> WireError {
    WireError::coded(code, message.into())
}

impl KvEngine {
    /// Counts of open transactions, locks and watches.
    pub fn stats(&self) -> KvStats {
        let s = self.state.lock();
        KvStats {
            transactions: s.txs.len(),
            locked_resources: s
                .resources
                .values()
                .flat_map(HashMap::values)
                .filter(|r| r.locked_by.is_some())
                .count(),
            watches: self.watches.len(),
        }
    }

    /// The watch registry (inspection).
    pub fn watches(&self) -> &Registry {
        &self.watches
    }

    fn begin(&self, session: &Session, b: &kv::Begin) -> Result<u64, WireError> {
        let now = self.clock.now();
        let mut s = self.state.lock();
        let tx_id = self.tx_ids.fetch_add(1, Ordering::Relaxed) + 1;
        // A known resource's route is shared with it, not allocated again.
        let (route, view) = if b.mode == TxMode::ReadWrite {
            let m = s.resources.entry(session.family()).or_default();
            let route = m
                .get_key_value(&*b.route)
                .map_or_else(|| Arc::from(&*b.route), |(k, _)| k.clone());
            let res = m.entry(route.clone()).or_default();
            if res.locked_by.is_some() {
                return Err(err(
                    codes::KV_ISOLATION_CONFLICT,
                    "resource locked by another session",
                ));
            }
            res.locked_by = Some(tx_id);
            (route, res.committed.clone())
        } else {
            // A read-only BEGIN of an unknown resource creates nothing.
            match s
                .resources
                .get(&session.family())
                .and_then(|m| m.get_key_value(&*b.route))
            {
                Some((k, r)) => (k.clone(), r.committed.clone()),
                None => (Arc::from(&*b.route), Map::default()),
            }
        };
        s.txs.insert(
            tx_id,
            Tx {
                session: session.id(),
                family: session.family(),
                route,
                mode: b.mode,
                view,
                pending: smallvec::SmallVec::new(),
                flattened: false,
                ops: Vec::new(),
                mutations: 0,
                last_active: now,
                staged: 0,
            },
        );
        drop(s);
        if b.mode == TxMode::ReadWrite {
            self.timers.wake_at(Domain::Kv, now + self.idle_ttl);
        }
        Ok(tx_id)
    }

    /// Runs `f` on the session's transaction `tx_id` addressed by `route`.
    fn with_tx<T>(
        &self,
        session: &Session,
        tx_id: u64,
        route: &str,
        write: bool,
        f: impl FnOnce(&mut Tx, bool) -> Result<T, WireError>,
    ) -> Result<T, WireError> {
        self.with_tx_staging(session, tx_id, route, write, |tx, durable, _| {
            f(tx, durable)
        })
    }

    /// [`KvEngine::with_tx`] for a write that stages `add` bytes (its key
    /// and value): over the transaction's or the broker's byte budget the
    /// transaction is aborted (1010) instead.
    fn stage<T>(
        &self,
        session: &Session,
        (tx_id, route): (u64, &str),
        add: usize,
        f: impl FnOnce(&mut Tx, bool) -> Result<T, WireError>,
    ) -> Result<T, WireError> {
        let result = self.with_tx_staging(session, tx_id, route, true, |tx, durable, staged| {
            if tx.staged + add > self.tx_max_bytes || *staged + add > self.tx_total_bytes {
                return Err(Staging::OverBudget);
            }
            let out = f(tx, durable)?;
            tx.staged += add;
            *staged += add;
            Ok(out)
        });
        match result {
            Ok(out) => Ok(out),
            Err(Staging::Refused(e)) => Err(e),
            Err(Staging::OverBudget) => {
                let mut s = self.state.lock();
                if let Some(tx) = s.take_tx(tx_id) {
                    s.release(&tx, tx_id);
                }
                Err(err(
                    codes::KV_ABORTED,
                    format!(
                        "transaction aborted: its writes would exceed the broker's budget \
                         ({} bytes per transaction, {} across open transactions)",
                        self.tx_max_bytes, self.tx_total_bytes
                    ),
                ))
            }
        }
    }

    fn with_tx_staging<T, E: From<WireError>>(
        &self,
        session: &Session,
        tx_id: u64,
        route: &str,
        write: bool,
        f: impl FnOnce(&mut Tx, bool, &mut usize) -> Result<T, E>,
    ) -> Result<T, E> {
        let durable = self.storage.is_durable();
        let now = self.clock.now();
        let mut guard = self.state.lock();
        let s = &mut *guard;
        let tx = s
            .txs
            .get_mut(&tx_id)
            .filter(|t| t.session == session.id())
            .ok_or_else(|| err(codes::KV_TX_NOT_FOUND, "transaction not found"))?;
        if *tx.route != *route {
            return Err(err(
                codes::KV_INVALID_ROUTE,
                "route does not match the transaction's resource",
            )
            .into());
        }
        if write && tx.mode == TxMode::ReadOnly {
            return Err(err(codes::KV_READ_ONLY, "write in a read-only transaction").into());
        }
        tx.last_active = now;
        f(tx, durable, &mut s.staged)
    }

    /// COMMIT. The batch goes to storage without the engine lock; the
    /// resource stays locked by this transaction (no other writer can
    /// begin, readers see the previous commit) until storage reports, and
    /// then [`finish_commit`] makes it visible, unlocks, answers and
    /// notifies. With a local store that happens on the storage writer
    /// thread once the commit's group is written (group commit,
    /// `storage::group`): no runtime thread waits for an fsync, and a Sync
    /// commit is acknowledged only once durable. The transaction's staged
    /// bytes stay charged to the budget until then. A commit storage would
    /// write alone on this thread is held until the end of the session's
    /// batch of frames, to share a write with the batch's other commits
    /// ([`Session::defer_commit`]). An immediate refusal is returned as
    /// `Err`.
    fn commit(&self, session: &Session, c: &kv::Commit, reply: &Reply) -> Result<(), WireError> {
        let mut s = self.state.lock();
        s.check_owned(session, c.tx_id, &c.route)?;
        let Some(mut tx) = s.txs.remove(&c.tx_id) else {
            return Err(err(codes::KV_TX_NOT_FOUND, "transaction not found"));
        };
        if tx.mode == TxMode::ReadOnly {
            s.staged -= tx.staged;
            drop(s);
            reply.ack();
            return Ok(());
        }
        let ops = std::mem::take(&mut tx.ops);
        drop(s);
        let (state, watches, reply) = (self.state.clone(), self.watches.clone(), reply.clone());
        let finish = move |stored| finish_commit(&state, &watches, tx, stored, &reply);
        if ops.is_empty() {
            finish(Ok(()));
            return Ok(());
        }
        let commit = Pending {
            batch: Batch { ops },
            durability: c.durability,
            done: Box::new(finish),
        };
        let commit = if self.storage.defers(c.durability) {
            match session.defer_commit(commit) {
                Ok(()) => return Ok(()),
                Err(commit) => commit,
            }
        } else {
            commit
        };
        self.storage
            .commit_then(commit.batch, commit.durability, commit.done);
        Ok(())
    }

    fn rollback(&self, session: &Session, r: &kv::Rollback) -> Result<(), WireError> {
        let mut s = self.state.lock();
        s.check_owned(session, r.tx_id, &r.route)?;
        if let Some(tx) = s.take_tx(r.tx_id) {
            s.release(&tx, r.tx_id);
        }
        Ok(())
    }

    fn answer(
        &self,
        session: &Session,
        request: KvRequest,
        reply: &Reply,
    ) -> Result<(), WireError> {
        match request {
            KvRequest::Begin(b) => {
                let tx_id = self.begin(session, &b)?;
                let _ = reply.ok(&BeginOk { tx_id });
            }
            KvRequest::Commit(c) => self.commit(session, &c, reply)?,
            KvRequest::Rollback(r) => {
                self.rollback(session, &r)?;
                reply.ack();
            }
            KvRequest::Get(g) => {
                let value =
                    self.with_tx(
                        session,
                        g.tx_id,
                        &g.route,
                        false,
                        |tx, _| Ok(tx.get(&g.key)),
                    )?;
                let _ = reply.ok(&GetOk { value });
            }
            KvRequest::Put(p) => {
                let add = p.key.len() + p.value.len();
                self.stage(session, (p.tx_id, &p.route), add, |tx, durable| {
                    tx.put(p.key, p.value, durable);
                    Ok(())
                })?;
                reply.ack();
            }
            KvRequest::Insert(p) => {
                let add = p.key.len() + p.value.len();
                self.stage(session, (p.tx_id, &p.route), add, |tx, durable| {
                    if tx.get(&p.key).is_some() {
                        return Err(err(codes::KV_KEY_EXISTS, "key already exists"));
                    }
                    tx.put(p.key, p.value, durable);
                    Ok(())
                })?;
                reply.ack();
            }
            KvRequest::Delete(d) => {
                self.with_tx(session, d.tx_id, &d.route, true, |tx, durable| {
                    tx.delete(d.key, durable);
                    Ok(())
                })?;
                reply.ack();
            }
            KvRequest::DeleteRange(d) => {
                self.with_tx(session, d.tx_id, &d.route, true, |tx, durable| {
                    if d.start > d.end {
                        return Err(err(
                            codes::KV_INVALID_ROUTE,
                            "invalid range bounds: start is after end",
                        ));
                    }
                    tx.flatten();
                    let keys: Vec<Bytes> = tx
                        .view
                        .range::<_, [u8]>((
                            Bound::Included(&d.start[..]),
                            Bound::Excluded(&d.end[..]),
                        ))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in keys {
                        tx.delete(k, durable);
                    }
                    Ok(())
                })?;
                reply.ack();
            }
            KvRequest::Scan(q) => {
                let page = self.with_tx(session, q.tx_id, &q.route, false, |tx, _| {
                    tx.flatten();
                    Ok(scan(&tx.view, &q))
                })?;
                if let Err(e) = reply.ok(&page) {
                    return Err(err(codes::KV_BACKEND, e.to_string()));
                }
            }
            KvRequest::Subscribe(s) => {
                let r = self
                    .watches
                    .register(session, &s.route, ())
                    .map_err(|e| err(codes::KV_SUBSCRIPTION_LIMIT, e.message()))?;
                let _ = reply.ok(&SubscribeReply { sub_id: r.id });
            }
            KvRequest::Unsubscribe(u) => {
                self.watches.unregister_pattern(session.id(), &u.route);
                reply.ack();
            }
        }
        Ok(())
    }
}

/// Ends a COMMIT once storage reported `stored` (see [`KvEngine::commit`]).
fn finish_commit(
    state: &Mutex<State>,
    watches: &Registry,
    tx: Tx,
    stored: Result<(), StorageError>,
    reply: &Reply,
) {
    let mut s = state.lock();
    s.staged -= tx.staged;
    let res = s
        .resources
        .get_mut(&tx.family)
        .and_then(|m| m.get_mut(&tx.route));
    let Some(res) = res else {
        drop(s);
        reply.error(&err(codes::KV_BACKEND, "resource vanished"));
        return;
    };
    res.locked_by = None;
    if let Err(e) = stored {
        tracing::warn!(error = %e, route = %tx.route, "KV commit failed");
        s.forget_if_empty(tx.family, &tx.route);
        drop(s);
        reply.error(&err(codes::KV_BACKEND, e.to_string()));
        return;
    }
    // The lock kept every other writer out since BEGIN, so `committed` is
    // still the snapshot `view` started from: an unflattened transaction's
    // writes go straight into it (in place unless a reader's snapshot
    // shares it), without copying the map at the first write.
    let mut map = if tx.flattened {
        tx.view
    } else {
        drop(tx.view);
        std::mem::take(&mut res.committed)
    };
    for (key, value) in tx.pending {
        match value {
            Some(value) => drop(map.insert(key, value)),
            None => drop(map.remove(&key[..])),
        }
    }
    let empty = map.is_empty();
    res.committed = map;
    if empty {
        s.forget_if_empty(tx.family, &tx.route);
    }
    drop(s);
    reply.ack();
    if tx.mutations > 0 {
        // Copied into a wire string only when a watch matches.
        let mut route: Option<fitz_protocol::Str> = None;
        watches.for_each_match(tx.family, &tx.route, |reg| {
            let route = route.get_or_insert_with(|| (*tx.route).into()).clone();
            reg.session.notify(&Notify {
                sub_id: reg.id,
                route,
                mutation_count: tx.mutations,
            });
        });
    }
}

/// Why a staged write failed.
enum Staging {
    /// The request's own error; the transaction lives on.
    Refused(WireError),
    /// Over budget: the transaction is aborted.
    OverBudget,
}

impl From<WireError> for Staging {
    fn from(e: WireError) -> Self {
        Staging::Refused(e)
    }
}

impl State {
    /// Transaction `tx_id` is `session`'s and on `route`: the check every
    /// request that ends a transaction passes first.
    fn check_owned(&self, session: &Session, tx_id: u64, route: &str) -> Result<(), WireError> {
        match self.txs.get(&tx_id) {
            Some(t) if t.session == session.id() => {
                if *t.route != *route {
                    return Err(err(
                        codes::KV_INVALID_ROUTE,
                        "route does not match the transaction's resource",
                    ));
                }
                Ok(())
            }
            _ => Err(err(codes::KV_TX_NOT_FOUND, "transaction not found")),
        }
    }

    /// Removes a transaction, returning its staged bytes to the budget.
    fn take_tx(&mut self, tx_id: u64) -> Option<Tx> {
        let tx = self.txs.remove(&tx_id)?;
        self.staged -= tx.staged;
        Some(tx)
    }

    /// Releases the lock `tx` (with id `tx_id`) holds, if any.
    fn release(&mut self, tx: &Tx, tx_id: u64) {
        if let Some(res) = self
            .resources
            .get_mut(&tx.family)
            .and_then(|m| m.get_mut(&tx.route))
            && res.locked_by == Some(tx_id)
        {
            res.locked_by = None;
        }
        self.forget_if_empty(tx.family, &tx.route);
    }

    /// Drops an unlocked resource without data, so BEGINs on ever new
    /// routes do not grow the map.
    fn forget_if_empty(&mut self, family: Family, route: &str) {
        if let Some(m) = self.resources.get_mut(&family) {
            if m.get(route)
                .is_some_and(|r| r.locked_by.is_none() && r.committed.is_empty())
            {
                m.remove(route);
            }
            if m.is_empty() {
                self.resources.remove(&family);
            }
        }
    }
}

/// One SCAN page: forward `start ≤ key < end`, reverse `end < key ≤ start`
/// (the start bound exclusive with `start_exclusive`), at most `limit` and
/// [`MAX_SCAN_ITEMS`] items and one record's worth of bytes; `has_more` when
/// a further key in range exists.
fn scan(view: &Map, q: &kv::Scan) -> ScanOk {
    let limit = q
        .limit
        .map_or(MAX_SCAN_ITEMS, |l| (l as usize).min(MAX_SCAN_ITEMS));
    let exclusive = q.start_exclusive.unwrap_or(false);
    let start = q.start.as_deref();
    let end = q.end.as_deref();
    let start_bound = |k| {
        if exclusive {
            Bound::Excluded(k)
        } else {
            Bound::Included(k)
        }
    };
    let mut iter: Box<dyn Iterator<Item = (&Bytes, &Bytes)>> = if q.reverse {
        if let (Some(s), Some(e)) = (start, end)
            && s <= e
        {
            return ScanOk::default();
        }
        let hi = start.map_or(Bound::Unbounded, start_bound);
        let lo = end.map_or(Bound::Unbounded, Bound::Excluded);
        Box::new(view.range::<_, [u8]>((lo, hi)).rev())
    } else {
        if let (Some(s), Some(e)) = (start, end)
            && s >= e
        {
            return ScanOk::default();
        }
        let lo = start.map_or(Bound::Unbounded, start_bound);
        let hi = end.map_or(Bound::Unbounded, Bound::Excluded);
        Box::new(view.range::<_, [u8]>((lo, hi)))
    };
    let mut page = ScanOk::default();
    let mut used = 0usize;
    for (k, v) in iter.by_ref() {
        let size = kv::scan_entry_len(k.len(), v.len());
        if page.items.len() >= limit || used + size > SCAN_BUDGET {
            page.has_more = true;
            return page;
        }
        used += size;
        page.items.push((k.clone(), v.clone()));
    }
    page
}

impl Engine for KvEngine {
    type Request = KvRequest;

    fn start(services: &Services) -> Result<Self, StorageError> {
        let mut state = State::default();
        for (stored, value) in services.storage.load(Keyspace::Kv)? {
            let Some((family, route, key)) = storage::split_kv_key(&stored) else {
                return Err(StorageError("unreadable KV key in storage".into()));
            };
            state
                .resources
                .entry(family)
                .or_default()
                .entry(Arc::from(route))
                .or_default()
                .committed
                .insert(key, value);
        }
        Ok(Self {
            state: Arc::new(Mutex::new(state)),
            watches: Arc::new(Registry::new(services.ids.clone())),
            storage: services.storage.clone(),
            timers: services.timers.clone(),
            clock: services.clock.clone(),
            idle_ttl: services.config.kv_idle_transaction_ttl,
            tx_ids: AtomicU64::new(0),
            tx_max_bytes: services.config.limits.kv_tx_max_bytes,
            tx_total_bytes: services.config.limits.kv_tx_total_bytes,
        })
    }

    fn handle(&self, session: &Session, request: KvRequest, reply: Reply) {
        if let Err(e) = self.answer(session, request, &reply) {
            reply.error(&e);
        }
    }

    fn refuse(
        &self,
        _session: &Session,
        refusal: Refusal<'_, KvRequest>,
        reply: &Reply,
    ) -> Result<(), CloseReason> {
        let ty = reply.message_type();
        let invalid = if matches!(ty, types::KV_SUBSCRIBE | types::KV_UNSUBSCRIBE) {
            codes::KV_INVALID_PATTERN
        } else {
            codes::KV_INVALID_ROUTE
        };
        match refusal {
            Refusal::Malformed { error, .. } => {
                if ty == types::KV_BEGIN {
                    return Err(format!("authorization parse failed: {error}").into());
                }
                reply.error(&err(invalid, format!("malformed request: {error}")));
            }
            Refusal::BadRoute { error, .. } => {
                if ty == types::KV_BEGIN {
                    return Err(format!("authorization parse failed: {error}").into());
                }
                reply.error(&err(invalid, error.to_string()));
            }
            Refusal::Unauthorized { .. } => {
                reply.error(&err(
                    codes::KV_UNAUTHORIZED,
                    "unauthorized: permission denied",
                ));
            }
        }
        Ok(())
    }

    fn session_closed(&self, session: &Session) {
        let mut s = self.state.lock();
        let ids: Vec<u64> = s
            .txs
            .iter()
            .filter(|(_, t)| t.session == session.id())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(tx) = s.take_tx(id) {
                s.release(&tx, id);
            }
        }
        drop(s);
        self.watches.unregister_session(session.id());
    }

    fn tick(&self, now: SystemTime) {
        let mut s = self.state.lock();
        let expired: Vec<u64> = s
            .txs
            .iter()
            .filter(|(_, t)| t.mode == TxMode::ReadWrite && t.last_active + self.idle_ttl <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(tx) = s.take_tx(id) {
                tracing::debug!(tx_id = id, route = %tx.route, "idle KV transaction rolled back");
                s.release(&tx, id);
            }
        }
        let next = s
            .txs
            .values()
            .filter(|t| t.mode == TxMode::ReadWrite)
            .map(|t| t.last_active + self.idle_ttl)
            .min();
        drop(s);
        if let Some(at) = next {
            self.timers.wake_at(Domain::Kv, at);
        }
    }
}

/// Route shapes and permissions per request (spec §4, "Permission levels
/// per message"): checked by the dispatcher before [`Engine::handle`].
impl DomainRequest for KvRequest {
    /// BEGIN needs read or write by mode. The manifest treats 101–108 as
    /// session-owned; reads and writes inside a transaction are additionally
    /// checked against the route (AC-KV-010 expects 1011 for a PUT by a
    /// read-only session), COMMIT and ROLLBACK only touch the session's own
    /// transaction.
    fn target(&self) -> Target<'_> {
        const S: Scheme = Scheme::Kv;
        match self {
            KvRequest::Begin(m) => concrete(
                &m.route,
                S,
                match m.mode {
                    fitz_protocol::kv::TxMode::ReadOnly => Access::Read,
                    fitz_protocol::kv::TxMode::ReadWrite => Access::Write,
                },
            ),
            KvRequest::Commit(_) | KvRequest::Rollback(_) => Target::SessionOwned,
            KvRequest::Get(m) => concrete(&m.route, S, Access::Read),
            KvRequest::Scan(m) => concrete(&m.route, S, Access::Read),
            KvRequest::Put(m) => concrete(&m.route, S, Access::Write),
            KvRequest::Insert(m) => concrete(&m.route, S, Access::Write),
            KvRequest::Delete(m) => concrete(&m.route, S, Access::Write),
            KvRequest::DeleteRange(m) => concrete(&m.route, S, Access::Write),
            KvRequest::Subscribe(m) => pattern(&m.route, S, Access::Read),
            KvRequest::Unsubscribe(m) => pattern(&m.route, S, Access::Read),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(keys: &[&str]) -> Map {
        keys.iter()
            .map(|k| {
                (
                    Bytes::copy_from_slice(k.as_bytes()),
                    Bytes::from_static(b"v"),
                )
            })
            .collect()
    }

    fn q(start: Option<&str>, end: Option<&str>, limit: Option<u32>, reverse: bool) -> kv::Scan {
        kv::Scan {
            tx_id: 1,
            route: "kv://a/b/c".into(),
            start: start.map(|s| Bytes::copy_from_slice(s.as_bytes())),
            end: end.map(|s| Bytes::copy_from_slice(s.as_bytes())),
            limit,
            reverse,
            start_exclusive: None,
        }
    }

    fn keys(p: &ScanOk) -> Vec<&[u8]> {
        p.items.iter().map(|(k, _)| &k[..]).collect()
    }

    #[test]
    fn scan_bounds_directions_and_paging() {
        let m = map(&["a", "b", "c", "d"]);
        let p = scan(&m, &q(Some("b"), Some("d"), None, false));
        assert_eq!((keys(&p), p.has_more), (vec![&b"b"[..], b"c"], false));
        let p = scan(&m, &q(Some("c"), Some("a"), None, true));
        assert_eq!((keys(&p), p.has_more), (vec![&b"c"[..], b"b"], false));
        let p = scan(&m, &q(None, None, Some(2), false));
        assert_eq!((keys(&p), p.has_more), (vec![&b"a"[..], b"b"], true));
        let p = scan(&m, &q(None, None, Some(2), true));
        assert_eq!((keys(&p), p.has_more), (vec![&b"d"[..], b"c"], true));
        assert_eq!(
            scan(&m, &q(Some("c"), Some("c"), None, false)),
            ScanOk::default()
        );
        assert_eq!(
            scan(&m, &q(Some("d"), Some("a"), None, false)),
            ScanOk::default()
        );
        assert_eq!(
            scan(&m, &q(Some("a"), Some("d"), None, true)),
            ScanOk::default()
        );
        let mut ex = q(Some("b"), None, None, false);
        ex.start_exclusive = Some(true);
        assert_eq!(keys(&scan(&m, &ex)), vec![&b"c"[..], b"d"]);
        ex.reverse = true;
        assert_eq!(keys(&scan(&m, &ex)), vec![&b"a"[..]]);
    }

    #[test]
    fn scan_pages_stop_at_the_record_budget() {
        let big = Bytes::from(vec![7u8; 30_000]);
        let m: Map = (0..5u8)
            .map(|i| (Bytes::copy_from_slice(&[i]), big.clone()))
            .collect();
        let p = scan(&m, &q(None, None, None, false));
        assert_eq!((p.items.len(), p.has_more), (2, true));
        let mut buf = bytes::BytesMut::new();
        fitz_protocol::encode_ok(&mut buf, &p).unwrap();
    }
}
