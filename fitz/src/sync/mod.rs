//! Offline-first, part 1 (feature `sync`): a durable local store, an
//! outbox that applies queued mutations once (KV and stream ones exactly
//! once, schedule ones idempotently, queue messages at least once with a
//! tx id consumers deduplicate by), and checkpointed feeds with gap
//! detection.
//!
//! * [`LocalStore`]: one ordered byte map per [`Table`], written in atomic,
//!   durable batches; [`RedbStore`] keeps it in one redb file,
//!   [`MemoryStore`] in memory. The store carries a format version and a
//!   client id created once and kept for the store's life.
//! * [`Outbox`]: [`Outbox::push`] writes a [`Mutation`] for one KV, stream,
//!   schedule or queue resource (a *lane*) to the store and returns once it
//!   is durable, connected or not. A flusher sends each lane's entries in push order whenever the
//!   client is [`crate::State::Authenticated`]; lanes progress independently.
//!
//! * [`Feed`]: a checkpointed consumer of a stream selector whose handler
//!   writes application tables through a [`FeedTx`]; those writes and the
//!   cursor are one [`LocalStore::apply`] batch. Gaps ([`Gap::Rewound`],
//!   [`Gap::Truncated`], [`Gap::Withheld`]) are reported, never skipped
//!   silently; [`Publisher`] writes typed envelopes. The [`feed`] module
//!   docs say how each gap is found.
//!
//! `fitz/examples/offline.rs` runs this against a broker that starts late.
//!
//! ```no_run
//! # async fn demo(client: fitz::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use fitz::sync::{KvWrite, Mutation, Outbox, RedbStore};
//!
//! let outbox = Outbox::builder(client.clone(), RedbStore::open("app.outbox")?)
//!     .handler("incr", |tx, _args| Box::pin(async move {
//!         let n: u64 = tx.get("n").await?
//!             .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
//!             .unwrap_or(0);
//!         tx.put("n", (n + 1).to_string()).await?;
//!         Ok(())
//!     }))
//!     .open()
//!     .await?;
//! outbox.mutate("kv://app/counters/visits", "incr", b"").await?; // durable now
//! outbox.push("kv://app/carts/42", Mutation::Writes(vec![KvWrite::put("apples", "3")])).await?;
//! outbox.wait_idle().await; // applied, exactly once, whenever the broker is reachable
//! # Ok(()) }
//! ```
//!
//! # Exactly once: the marker
//!
//! Every entry has a sequence number `seq`, unique and increasing per client
//! (so increasing within each lane). An entry is flushed as one read-write
//! KV transaction on its resource: read the marker key
//! [`marker_key`]`(client_id)` (`\0sync/<client id>`); if it holds a number
//! ≥ `seq`, the entry was applied before (its answer was lost, or the
//! process died between the broker's commit and the local dequeue): roll
//! back and dequeue. Otherwise apply the writes (or run the named handler),
//! put the marker to `seq` and commit. The resource's exclusive lock and the
//! atomic commit make "applied" and "marker advanced" one event, so any
//! number of retries after ambiguous outcomes applies the entry once.
//!
//! # Exactly once for stream appends: the expected offset
//!
//! A [`Mutation::Append`] batch is placed at an expected offset O, read from
//! the stream's metadata just before the entry's first send and stored with
//! the entry (it cannot be known offline). Each attempt first reads offset
//! O: a record there whose metadata carries this entry's tx id
//! (`{"sync_tx":"<client id>/<seq>","aspect":…}`) means the batch was
//! applied (dequeue); another writer's record means O was taken (fix a new
//! O); nothing there means BEGIN at O (the broker refuses the batch unless
//! the stream's next offset is O), append, commit. The batch is therefore at
//! O or nowhere, never twice. The aspect (discriminator) is repeated in the
//! metadata because READ items carry no discriminator.
//!
//! When O cannot be read although the stream has moved past it (retention
//! dropped it, or the token may not read it), whether the batch landed
//! cannot be told: the entry goes to the dead letter rather than being sent
//! again or dropped.
//!
//! # Schedules: idempotent as they are
//!
//! [`Mutation::ScheduleCreate`] and [`Mutation::ScheduleCancel`] on a
//! `schedule://realm/area/resource/operation` lane are one request each.
//! Creating replaces the definition at the route and cancelling an absent
//! schedule succeeds, so an attempt whose answer was lost is simply sent
//! again: the route ends as the lane's last entry says, since a lane's
//! entries go in push order. (Another writer changing the same route in
//! between is not detected: last writer wins, as with direct calls.)
//!
//! # Queue messages: at least once, with a tx id
//!
//! [`Mutation::Enqueue`] on a `queue://realm/area/resource` lane is one
//! ENQUEUE, sent again after a lost answer, so a message can be stored
//! twice (and a queue delivers again when a reservation expires anyway).
//! ENQUEUE has no metadata field, so the entry's tx id travels in the body,
//! in a [`QueueEnvelope`] (`\0sync-tx/1\n<tx id>\n<body>`, see
//! [`ENVELOPE_MAGIC`]) when the mutation asks for it
//! ([`Mutation::enqueue`]; [`Mutation::enqueue_plain`] sends the body as it
//! is). Consumers open each body with [`QueueEnvelope::open`] or
//! [`TxDedup::open`] and record the tx id once the message is handled:
//! [`TxDedup`] keeps a bounded in-memory window of them.
//!
//! Permanent refusals of schedule and queue entries (an unauthorized route:
//! 7009, 4009; an invalid request) go to the dead letter with their code,
//! like KV and stream ones; the lane moves on.
//!
//! # The reserved prefix
//!
//! Keys starting with [`RESERVED_PREFIX`] (`\0sync/`) belong to the sync
//! layer. [`Outbox::push`] rejects writes to them. The prefix is defined in
//! [`crate::kv`], which treats it the same with or without this feature:
//! [`crate::kv::Transaction::scan`] and
//! [`scan_page`](crate::kv::Transaction::scan_page) never return its keys
//! (pages stay full across it; see [`crate::kv::ScanOptions`] for the one
//! trace it leaves in `has_more`) and
//! [`delete_range`](crate::kv::Transaction::delete_range) is sent around it,
//! so neither a queued [`KvWrite::DeleteRange`] nor a user's range delete
//! erases a marker. Point reads and writes still reach it (the outbox's
//! marker check uses them).
//!
//! # Entry format
//!
//! Entries and dead letters are JSON ([`Mutation`] with serde's external
//! tagging). The schedule and queue kinds were added without changing
//! [`FORMAT_VERSION`]: stores written before them open unchanged. A build
//! that predates them fails to open a store holding one with
//! [`SyncError::Corrupt`] naming the unknown variant, and changes nothing.
//!
//! # Not yet
//!
//! A durable consumer-side dedup (today [`TxDedup`] is an in-memory
//! window); live views, presence and sync frames (the design's later parts).

mod envelope;
pub mod feed;
mod outbox;
mod store;

pub use envelope::{ENVELOPE_MAGIC, QueueEnvelope, TxDedup};
pub use feed::{
    Envelope, EnvelopeMeta, Feed, FeedBuilder, FeedError, FeedEvent, FeedTx, Gap, GapAction,
    Publisher, app_key,
};
pub use outbox::{
    DEFAULT_MAX_PENDING, DeadLetter, Handler, KvWrite, LaneStatus, Mutation, MutationError, Outbox,
    OutboxBuilder, StreamAppend, SyncEvent, SyncStatus,
};
pub use store::{Entries, LocalStore, MemoryStore, RedbStore, StoreOp, Table};

use std::fmt;

/// The key prefix reserved for the sync layer's markers in every KV resource
/// written through an [`Outbox`] (defined in [`crate::kv`], which hides it
/// from scans and range deletes with or without this feature).
pub use crate::kv::RESERVED_PREFIX;

/// The version of the layout the sync layer writes into a [`LocalStore`].
/// A store recording another version is refused ([`SyncError::Version`]),
/// never rewritten.
pub const FORMAT_VERSION: u32 = 1;

/// The marker key of `client_id` in a KV resource.
pub fn marker_key(client_id: &str) -> Vec<u8> {
    let mut k = RESERVED_PREFIX.to_vec();
    k.extend_from_slice(client_id.as_bytes());
    k
}

/// What can go wrong in the sync layer itself (broker errors of flushed
/// entries are reported per lane and in the dead letter instead).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SyncError {
    /// The local store failed (I/O, a file it cannot read).
    Store(String),
    /// The store was written with another layout version; nothing was
    /// changed. Open it with the crate version that wrote it, or delete it.
    Version {
        /// The version recorded in the store.
        found: u32,
        /// The version this build reads and writes ([`FORMAT_VERSION`]).
        supported: u32,
    },
    /// The caller passed something invalid (a bad route, a write under
    /// [`RESERVED_PREFIX`], a mutation name with no handler); nothing was
    /// stored.
    InvalidArgument(String),
    /// A stored record could not be decoded.
    Corrupt(String),
    /// No dead-letter entry has this sequence number.
    NotFound(u64),
    /// The outbox holds its maximum of pending entries
    /// ([`OutboxBuilder::max_pending`]); nothing was stored. Retry once it
    /// drains.
    Full(usize),
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncError::Store(m) => write!(f, "local store: {m}"),
            SyncError::Version { found, supported } => write!(
                f,
                "local store format version {found} is not supported by this build \
                 (it reads version {supported}); the store was not changed"
            ),
            SyncError::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            SyncError::Corrupt(m) => write!(f, "corrupt local record: {m}"),
            SyncError::NotFound(seq) => write!(f, "no dead-letter entry with seq {seq}"),
            SyncError::Full(max) => {
                write!(f, "the outbox holds its maximum of {max} pending entries")
            }
        }
    }
}

impl std::error::Error for SyncError {}

#[cfg(test)]
mod tests;
