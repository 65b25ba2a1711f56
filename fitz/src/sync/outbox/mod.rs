//! The outbox: durable queued mutations (KV, stream, schedule, queue),
//! flushed in push order per lane.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::store::{LocalStore, StoreOp, Table, open_identity};
use super::{RESERVED_PREFIX, SyncError, marker_key};
use crate::kv::{Durability, Transaction, TxMode};
use crate::options::full_jitter;
use crate::{Client, Error, State};

mod flush;
mod mutation;

pub use mutation::{Handler, KvWrite, Mutation, MutationError, StreamAppend};

const META_NEXT_SEQ: &[u8] = b"next_seq";

/// How many [`SyncEvent`]s a receiver may fall behind before it misses some
/// (it then sees `RecvError::Lagged` with the count; the outbox never waits
/// for receivers).
const EVENT_BUFFER: usize = 1024;

/// The default bound on pending entries ([`OutboxBuilder::max_pending`]).
pub const DEFAULT_MAX_PENDING: usize = 1_000_000;

/// Retry delays after a retryable failure: from `BACKOFF_MIN`, doubling, up
/// to `BACKOFF_MAX`, each with full jitter. [`Outbox::sync_now`] cuts a wait
/// short.
const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// An entry that failed permanently: kept until [`Outbox::retry_dead_letter`]
/// or [`Outbox::discard`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The entry's sequence number (its id in the dead letter).
    pub seq: u64,
    /// Its lane: the route of the resource it targets.
    pub lane: String,
    /// What it would have done.
    pub mutation: Mutation,
    /// Why it failed.
    pub error: String,
    /// The broker's error code, when the broker refused it.
    pub code: Option<u32>,
}

/// What the outbox reports as it works.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncEvent {
    /// The entry is applied on the broker (now, or by an earlier attempt whose
    /// answer was lost) and left the outbox.
    Synced {
        /// The lane.
        lane: String,
        /// The entry.
        seq: u64,
    },
    /// The entry failed permanently and moved to the dead letter; its lane
    /// moves on.
    Failed {
        /// The lane.
        lane: String,
        /// The entry.
        seq: u64,
        /// Why.
        error: String,
        /// The broker's code, if any.
        code: Option<u32>,
    },
}

/// The state of one lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneStatus {
    /// The lane (the route of the resource its entries target).
    pub lane: String,
    /// Entries waiting to be applied.
    pub pending: usize,
    /// The last failure of this lane's flush (retryable ones included),
    /// cleared when an entry is applied.
    pub last_error: Option<String>,
}

/// A snapshot of the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncStatus {
    /// Lanes with pending entries or a recorded error, by route.
    pub lanes: Vec<LaneStatus>,
    /// Entries in the dead letter.
    pub dead_letters: usize,
}

impl SyncStatus {
    /// Entries waiting, over every lane.
    pub fn pending(&self) -> usize {
        self.lanes.iter().map(|l| l.pending).sum()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    seq: u64,
    lane: String,
    mutation: Mutation,
    /// Stream entries: the offset the batch must start at, fixed before the
    /// first send and stored with the entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expected: Option<u64>,
}

fn entry_key(lane: &str, seq: u64) -> Vec<u8> {
    let mut k = lane_prefix(lane);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn lane_prefix(lane: &str) -> Vec<u8> {
    let mut k = lane.as_bytes().to_vec();
    k.push(0);
    k
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, SyncError> {
    serde_json::to_vec(v).map_err(|e| SyncError::Corrupt(e.to_string()))
}

fn decode<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, SyncError> {
    serde_json::from_slice(b).map_err(|e| SyncError::Corrupt(e.to_string()))
}

fn be_u64(b: &[u8]) -> Result<u64, SyncError> {
    let arr: [u8; 8] = b
        .try_into()
        .map_err(|_| SyncError::Corrupt(format!("expected 8 bytes, found {}", b.len())))?;
    Ok(u64::from_be_bytes(arr))
}

/// The outbox's own handle on the store: its reference count is the outbox
/// plus the store calls running on the blocking pool (a caller's own `Arc`
/// of the store does not count), which [`Outbox::close`] waits out.
struct StoreHandle(Arc<dyn LocalStore>);

/// Runs a blocking store call on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    store: &Arc<StoreHandle>,
    f: impl FnOnce(&dyn LocalStore) -> Result<T, SyncError> + Send + 'static,
) -> Result<T, SyncError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(store.0.as_ref()))
        .await
        .map_err(|e| SyncError::Store(format!("store task failed: {e}")))?
}

/// Configures and opens an [`Outbox`].
pub struct OutboxBuilder {
    client: Client,
    store: Arc<dyn LocalStore>,
    handlers: HashMap<String, Handler>,
    check_marker: bool,
    max_pending: usize,
}

impl fmt::Debug for OutboxBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxBuilder")
            .field("handlers", &self.handlers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl OutboxBuilder {
    /// Registers `handler` for the named mutations called `name`
    /// ([`Outbox::mutate`]). Register every name that stored entries use
    /// before [`OutboxBuilder::open`]: an entry whose name has no handler
    /// goes to the dead letter.
    ///
    /// ```no_run
    /// # fn demo(b: fitz::sync::OutboxBuilder) -> fitz::sync::OutboxBuilder {
    /// b.handler("incr", |tx, _args| Box::pin(async move {
    ///     let n = match tx.get("n").await? {
    ///         Some(v) => std::str::from_utf8(&v).ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0),
    ///         None => 0,
    ///     };
    ///     tx.put("n", (n + 1).to_string()).await?;
    ///     Ok(())
    /// }))
    /// # }
    /// ```
    pub fn handler<F>(mut self, name: impl Into<String>, handler: F) -> Self
    where
        F: for<'a> Fn(&'a mut Transaction, Bytes) -> BoxFuture<'a, Result<(), MutationError>>
            + Send
            + Sync
            + 'static,
    {
        self.handlers.insert(name.into(), Arc::new(handler));
        self
    }

    /// The most entries the outbox holds pending (over every lane; default
    /// [`DEFAULT_MAX_PENDING`]). When it is full, [`Outbox::push`] fails
    /// with [`SyncError::Full`] and stores nothing; entries already stored
    /// are never dropped to make room. Counted at open too: a store holding
    /// more opens, and refuses pushes until it drains below the bound.
    pub fn max_pending(mut self, entries: usize) -> Self {
        self.max_pending = entries;
        self
    }

    /// Test-only: flushes without reading the marker first, so an entry
    /// whose answer was lost is applied again. Exists to show that the
    /// exactly-once test can fail; never use it otherwise.
    #[doc(hidden)]
    pub fn unchecked_marker_for_tests(mut self) -> Self {
        self.check_marker = false;
        self
    }

    /// Opens the outbox: checks the store's format version (writing it into
    /// an empty store), reads or creates the client id, and starts flushing
    /// the lanes that have pending entries (on the current tokio runtime).
    ///
    /// Errors: [`SyncError::Version`] for a store of another layout version,
    /// [`SyncError::Store`] when the store fails.
    pub async fn open(self) -> Result<Outbox, SyncError> {
        let store = Arc::new(StoreHandle(self.store));
        let (client_id, next_seq, entries) = blocking(&store, load).await?;
        let mut lanes: BTreeMap<String, LaneState> = BTreeMap::new();
        for e in &entries {
            lanes.entry(e.lane.clone()).or_default().pending += 1;
        }
        let dead = blocking(&store, |s| Ok(s.scan_prefix(Table::DeadLetter, b"")?.len())).await?;
        let total: usize = lanes.values().map(|l| l.pending).sum();
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (pending_tx, _) = watch::channel(total);
        let inner = Arc::new(Inner {
            client: self.client,
            store,
            handlers: self.handlers,
            check_marker: self.check_marker,
            max_pending: self.max_pending,
            marker: marker_key(&client_id),
            client_id,
            state: Mutex::new(Shared {
                next_seq,
                lanes,
                dead,
            }),
            push_lock: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
            events,
            pending: pending_tx,
            stop: CancellationToken::new(),
            tasks: Mutex::new(Vec::new()),
        });
        let outbox = Outbox {
            _stop: Arc::new(StopOnDrop(inner.stop.clone())),
            inner,
        };
        let lanes: Vec<String> = outbox.inner.lock().lanes.keys().cloned().collect();
        for lane in lanes {
            outbox.inner.start_lane(&lane);
        }
        Ok(outbox)
    }
}

/// Checks the version, reads the client id and sequence, loads the outbox.
fn load(store: &dyn LocalStore) -> Result<(String, u64, Vec<Entry>), SyncError> {
    let client_id = open_identity(store)?;
    let next_seq = match store.get(Table::Meta, META_NEXT_SEQ)? {
        Some(v) => be_u64(&v)?,
        None => 1,
    };
    let entries = store
        .scan_prefix(Table::Outbox, b"")?
        .into_iter()
        .map(|(_, v)| decode::<Entry>(&v))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((client_id, next_seq, entries))
}

#[derive(Default)]
struct LaneState {
    pending: usize,
    last_error: Option<String>,
    /// A flush task runs for this lane (set and cleared under the lock, so a
    /// push never misses a task that is about to end).
    running: bool,
}

struct Shared {
    next_seq: u64,
    lanes: BTreeMap<String, LaneState>,
    dead: usize,
}

struct Inner {
    client: Client,
    store: Arc<StoreHandle>,
    handlers: HashMap<String, Handler>,
    check_marker: bool,
    max_pending: usize,
    client_id: String,
    marker: Vec<u8>,
    state: Mutex<Shared>,
    /// Serializes sequence allocation with the durable write of the entry,
    /// so entries of one lane are stored in seq order.
    push_lock: tokio::sync::Mutex<()>,
    wake: Notify,
    events: broadcast::Sender<SyncEvent>,
    pending: watch::Sender<usize>,
    stop: CancellationToken,
    /// The lane tasks started so far (finished ones are pruned on start).
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Held by every [`Outbox`] clone: the last one dropped stops the flush
/// tasks.
struct StopOnDrop(CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Durable queued mutations: KV and stream ones applied exactly once on the
/// broker, schedule ones idempotently, queue messages at least once (see the
/// [module docs](super) for each recipe).
///
/// Cheap to clone; the flush tasks stop when the last clone is dropped or
/// [`Outbox::close`] is called, after the attempt in flight (an entry
/// applied but not yet dequeued is found applied on the next open). Use
/// `close().await` before reopening the same store file.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
    _stop: Arc<StopOnDrop>,
}

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("client_id", &self.inner.client_id)
            .finish_non_exhaustive()
    }
}

impl Outbox {
    /// Starts configuring an outbox that flushes through `client` and keeps
    /// its entries in `store`.
    pub fn builder(client: Client, store: impl LocalStore) -> OutboxBuilder {
        Self::builder_shared(client, Arc::new(store))
    }

    /// [`Outbox::builder`] with a store that is already shared (with feeds,
    /// say).
    ///
    /// At most one outbox may be open on a store at a time: close the old one
    /// before opening another. Two live outboxes on one store would both
    /// flush the same entries; KV entries stay exactly once through the
    /// marker, but a stream entry could be appended twice. (A [`RedbStore`](super::RedbStore)
    /// file cannot be opened by two processes at once; within one process
    /// this rule is the caller's.)
    pub fn builder_shared(client: Client, store: Arc<dyn LocalStore>) -> OutboxBuilder {
        OutboxBuilder {
            client,
            store,
            handlers: HashMap::new(),
            check_marker: true,
            max_pending: DEFAULT_MAX_PENDING,
        }
    }

    /// This store's client id: random, created when the store was first
    /// opened, the same for every later open.
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    /// Queues `mutation` for the resource `route` (its lane) and returns
    /// its sequence number once the entry is durable in the local store.
    /// Works connected or not; the flusher sends it when it can.
    ///
    /// Errors (nothing stored): [`SyncError::InvalidArgument`] when `route`
    /// is not a concrete route of the mutation's kind (`kv://` for
    /// [`Mutation::Writes`] and [`Mutation::Named`], `stream://` for
    /// [`Mutation::Append`], `schedule://` for the schedule mutations,
    /// `queue://` for [`Mutation::Enqueue`]), a cron expression is invalid,
    /// a schedule or queue request (with its envelope) would not fit one
    /// 64 KiB record,
    /// a write targets a key under [`RESERVED_PREFIX`], a named
    /// mutation has no handler or an append has no record;
    /// [`SyncError::Full`] when [`OutboxBuilder::max_pending`] entries are
    /// pending; [`SyncError::Store`] when the store fails.
    ///
    /// # Cancel safety
    ///
    /// Dropped before it returns, the entry may or may not have been
    /// stored (it is whole either way).
    pub async fn push(&self, route: &str, mutation: Mutation) -> Result<u64, SyncError> {
        let valid = match &mutation {
            Mutation::Append(_) => crate::stream::validate_resource(route),
            Mutation::ScheduleCreate { cron, .. } => crate::schedule::validate_route(route)
                .and_then(|()| crate::schedule::validate_cron(cron)),
            Mutation::ScheduleCancel => crate::schedule::validate_route(route),
            Mutation::Enqueue { .. } => crate::queue::validate_route(route),
            Mutation::Writes(_) | Mutation::Named { .. } => crate::kv::validate_resource(route),
        };
        valid
            .and_then(|()| mutation.check_fits(route, &self.inner.client_id))
            .map_err(|e| SyncError::InvalidArgument(e.to_string()))?;
        match &mutation {
            Mutation::ScheduleCreate { .. }
            | Mutation::ScheduleCancel
            | Mutation::Enqueue { .. } => {}
            Mutation::Append(records) => {
                if records.is_empty() {
                    return Err(SyncError::InvalidArgument(
                        "a stream append entry needs at least one record".into(),
                    ));
                }
            }
            Mutation::Writes(writes) => {
                if writes.iter().any(KvWrite::touches_reserved) {
                    return Err(SyncError::InvalidArgument(
                        "a write targets the sync layer's reserved key prefix".into(),
                    ));
                }
            }
            Mutation::Named { name, .. } => {
                if !self.inner.handlers.contains_key(name) {
                    return Err(SyncError::InvalidArgument(format!(
                        "no handler is registered for mutation {name:?}"
                    )));
                }
            }
        }
        let _order = self.inner.push_lock.lock().await;
        if *self.inner.pending.borrow() >= self.inner.max_pending {
            return Err(SyncError::Full(self.inner.max_pending));
        }
        let seq = self.inner.lock().next_seq;
        let entry = Entry {
            seq,
            lane: route.to_owned(),
            mutation,
            expected: None,
        };
        let ops = vec![
            StoreOp::Put {
                table: Table::Outbox,
                key: entry_key(route, seq),
                value: encode(&entry)?,
            },
            StoreOp::Put {
                table: Table::Meta,
                key: META_NEXT_SEQ.to_vec(),
                value: (seq + 1).to_be_bytes().to_vec(),
            },
        ];
        blocking(&self.inner.store, move |s| s.apply(&ops)).await?;
        {
            let mut st = self.inner.lock();
            st.next_seq = seq + 1;
            st.lanes.entry(route.to_owned()).or_default().pending += 1;
        }
        self.inner.pending.send_modify(|n| *n += 1);
        self.inner.start_lane(route);
        Ok(seq)
    }

    /// Queues the named mutation `name` with `args` for `route`
    /// ([`Outbox::push`] of a [`Mutation::Named`]).
    pub async fn mutate(
        &self,
        route: &str,
        name: &str,
        args: impl AsRef<[u8]>,
    ) -> Result<u64, SyncError> {
        self.push(
            route,
            Mutation::Named {
                name: name.to_owned(),
                args: args.as_ref().to_vec(),
            },
        )
        .await
    }

    /// Stops flushing and waits until every flush task has ended (an
    /// attempt in flight is finished first: at most a few request
    /// timeouts, plus whatever a named handler takes), so the
    /// store is released once the last clone is dropped (a redb file can then
    /// be opened again; a store call already running on the blocking pool is
    /// waited for, as it cannot be cancelled). Entries not yet applied stay
    /// in the store; one
    /// in flight is retried on the next open, and the marker keeps it from
    /// applying twice. Other clones stop flushing too.
    pub async fn close(self) {
        self.inner.stop.cancel();
        let tasks = std::mem::take(
            &mut *self
                .inner
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for t in tasks {
            let _ = t.await;
        }
        // A store call of an ended task may still run on the blocking pool
        // (it cannot be cancelled); it holds the store until it returns.
        while Arc::strong_count(&self.inner.store) > 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Optimistic read: the value `key` of the KV resource `route` will
    /// have once that lane's pending [`Mutation::Writes`] entries are
    /// applied, over `committed` (what a read of the broker returned).
    ///
    /// Entries leave the outbox once applied (or dead-lettered, which
    /// removes their optimistic effect), so the overlay shrinks to nothing
    /// as the lane drains. Between an entry's commit and its local dequeue
    /// it is applied twice to the view, which is harmless: puts and deletes
    /// set a final state. [`Mutation::Named`] entries are not overlaid (their
    /// effect is known only when their handler runs at flush).
    pub async fn overlay(
        &self,
        route: &str,
        key: impl AsRef<[u8]>,
        committed: Option<Bytes>,
    ) -> Result<Option<Bytes>, SyncError> {
        let prefix = lane_prefix(route);
        let entries = blocking(&self.inner.store, move |s| {
            s.scan_prefix(Table::Outbox, &prefix)
        })
        .await?;
        let key = key.as_ref();
        let mut value = committed;
        for (_, raw) in entries {
            let entry: Entry = decode(&raw)?;
            let Mutation::Writes(writes) = entry.mutation else {
                continue;
            };
            for w in writes {
                match w {
                    KvWrite::Put { key: k, value: v } | KvWrite::Insert { key: k, value: v }
                        if k == key =>
                    {
                        value = Some(Bytes::from(v));
                    }
                    KvWrite::Delete { key: k } if k == key => value = None,
                    KvWrite::DeleteRange { start, end }
                        if start.as_slice() <= key && key < end.as_slice() =>
                    {
                        value = None;
                    }
                    _ => {}
                }
            }
        }
        Ok(value)
    }

    /// Flush now: every lane waiting out a retry delay tries again at once.
    /// Returns without waiting for the flush; see [`Outbox::wait_idle`].
    pub fn sync_now(&self) {
        self.inner.wake.notify_waiters();
    }

    /// Waits until no entry is pending (applied or dead-lettered). Waits
    /// for ever while the client cannot connect.
    pub async fn wait_idle(&self) {
        let mut rx = self.inner.pending.subscribe();
        // The sender lives in `inner`, which `self` keeps alive.
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// The number of pending entries, as a watch (changes with every push,
    /// apply and dead-lettering).
    pub fn watch_pending(&self) -> watch::Receiver<usize> {
        self.inner.pending.subscribe()
    }

    /// Events from now on: [`SyncEvent::Synced`] and [`SyncEvent::Failed`].
    /// A receiver more than 1,024 events behind misses the oldest ones (it
    /// sees `Lagged`); the outbox never waits for it.
    pub fn events(&self) -> broadcast::Receiver<SyncEvent> {
        self.inner.events.subscribe()
    }

    /// Pending entries per lane, each lane's last error and the dead-letter
    /// count.
    pub fn status(&self) -> SyncStatus {
        let st = self.inner.lock();
        SyncStatus {
            lanes: st
                .lanes
                .iter()
                .filter(|(_, l)| l.pending > 0 || l.last_error.is_some())
                .map(|(lane, l)| LaneStatus {
                    lane: lane.clone(),
                    pending: l.pending,
                    last_error: l.last_error.clone(),
                })
                .collect(),
            dead_letters: st.dead,
        }
    }

    /// The dead letter, in sequence order.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, SyncError> {
        blocking(&self.inner.store, |s| {
            s.scan_prefix(Table::DeadLetter, b"")?
                .into_iter()
                .map(|(_, v)| decode::<DeadLetter>(&v))
                .collect()
        })
        .await
    }

    /// Moves dead-letter entry `seq` back into its lane, at the end, under a
    /// new sequence number (returned): the lane's marker may already be past
    /// the old one, which would make the entry look applied.
    pub async fn retry_dead_letter(&self, seq: u64) -> Result<u64, SyncError> {
        let _order = self.inner.push_lock.lock().await;
        let key = seq.to_be_bytes().to_vec();
        let found = {
            let key = key.clone();
            blocking(&self.inner.store, move |s| s.get(Table::DeadLetter, &key)).await?
        };
        let dead: DeadLetter = decode(&found.ok_or(SyncError::NotFound(seq))?)?;
        let new_seq = self.inner.lock().next_seq;
        let entry = Entry {
            seq: new_seq,
            lane: dead.lane.clone(),
            mutation: dead.mutation,
            expected: None,
        };
        let ops = vec![
            StoreOp::Delete {
                table: Table::DeadLetter,
                key,
            },
            StoreOp::Put {
                table: Table::Outbox,
                key: entry_key(&entry.lane, new_seq),
                value: encode(&entry)?,
            },
            StoreOp::Put {
                table: Table::Meta,
                key: META_NEXT_SEQ.to_vec(),
                value: (new_seq + 1).to_be_bytes().to_vec(),
            },
        ];
        blocking(&self.inner.store, move |s| s.apply(&ops)).await?;
        {
            let mut st = self.inner.lock();
            st.next_seq = new_seq + 1;
            st.dead = st.dead.saturating_sub(1);
            st.lanes.entry(dead.lane.clone()).or_default().pending += 1;
        }
        self.inner.pending.send_modify(|n| *n += 1);
        self.inner.start_lane(&dead.lane);
        Ok(new_seq)
    }

    /// Deletes dead-letter entry `seq` for good.
    pub async fn discard(&self, seq: u64) -> Result<(), SyncError> {
        let key = seq.to_be_bytes().to_vec();
        let found = {
            let key = key.clone();
            blocking(&self.inner.store, move |s| s.get(Table::DeadLetter, &key)).await?
        };
        if found.is_none() {
            return Err(SyncError::NotFound(seq));
        }
        let ops = vec![StoreOp::Delete {
            table: Table::DeadLetter,
            key,
        }];
        blocking(&self.inner.store, move |s| s.apply(&ops)).await?;
        let mut st = self.inner.lock();
        st.dead = st.dead.saturating_sub(1);
        Ok(())
    }
}
