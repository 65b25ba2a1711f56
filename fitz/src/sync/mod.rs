//! Offline-first, part 1 (feature `sync`): a durable local store, an
//! outbox that applies queued KV mutations exactly once, and checkpointed
//! feeds with gap detection.
//!
//! * [`LocalStore`]: one ordered byte map per [`Table`], written in atomic,
//!   durable batches; [`RedbStore`] keeps it in one redb file,
//!   [`MemoryStore`] in memory. The store carries a format version and a
//!   client id created once and kept for the store's life.
//! * [`Outbox`]: [`Outbox::push`] writes a [`Mutation`] for one KV or
//!   Stream resource (a *lane*) to the store and returns once it is durable,
//!   connected or not. A flusher sends each lane's entries in push order whenever the
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
//! # The reserved prefix
//!
//! Keys starting with [`RESERVED_PREFIX`] (`\0sync/`) belong to the sync
//! layer. [`Outbox::push`] rejects writes to them, and a
//! [`KvWrite::DeleteRange`] that covers part of the prefix is split around
//! it when flushed, so a queued range delete never erases a marker. Not yet
//! done (a listed follow-up): the SDK's own [`crate::kv::Transaction::scan`]
//! does not hide the prefix, so a full scan of a resource written through
//! the outbox returns the marker keys; skip keys starting with
//! [`RESERVED_PREFIX`] (or scan from `\x01`), and do not range-delete across
//! it outside the outbox.
//!
//! # Not yet (later parts of issue 16)
//!
//! Schedule and queue lanes, the crash (SIGKILL) test, flush benchmarks;
//! [`crate::kv::Transaction::scan`] hiding [`RESERVED_PREFIX`].

pub mod feed;
mod outbox;
mod store;

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
/// written through an [`Outbox`].
pub const RESERVED_PREFIX: &[u8] = b"\0sync/";

/// The first key after every key starting with [`RESERVED_PREFIX`].
const RESERVED_END: &[u8] = b"\0sync0";

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

/// The ranges a delete of `[start, end)` may touch without entering the
/// reserved prefix: the range itself, or its parts before and after
/// `[RESERVED_PREFIX, RESERVED_END)`. Empty ranges are left out.
fn split_around_reserved(start: &[u8], end: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut push = |s: &[u8], e: &[u8]| {
        if s < e {
            out.push((s.to_vec(), e.to_vec()));
        }
    };
    if end <= RESERVED_PREFIX || start >= RESERVED_END {
        push(start, end);
    } else {
        push(start, RESERVED_PREFIX);
        push(RESERVED_END, end);
    }
    out
}

#[cfg(test)]
mod tests;
