//! Durable storage of committed data: KV pairs, queue messages, stream
//! records and watermarks, schedule definitions.
//!
//! Engines keep their authoritative state in memory and write every commit
//! through a [`Backend`] as one atomic [`Batch`] *before* they make it
//! visible and reply. A persistent backend appends the batch to its log and,
//! for [`Durability::Sync`], returns only after the data is on stable storage
//! (fsync); at startup engines rebuild their state with
//! [`Backend::load`]. The memory backend keeps nothing and loads nothing.
//!
//! Keys are namespaced by [`Keyspace`] and carry the route family and route,
//! so one backend serves every domain. Helpers such as [`kv_key`] fix each
//! domain's key layout.
//!
//! Backends: [`MemoryBackend`] (`FITZ_STORAGE_MODE=memory`, the embedding
//! default) and [`local::LocalBackend`] (`local`: a redb file under
//! `FITZ_STORAGE_PATH`; see its docs for durability and locking). Only
//! committed data is stored: sessions, transactions, reservations, leases,
//! workers and subscriptions never survive a restart.

mod group;
pub mod local;

use std::path::PathBuf;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
pub use fitz_protocol::kv::Durability;

use crate::auth::Family;

/// The data of one domain inside a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Keyspace {
    /// Committed KV pairs: key = [`kv_key`].
    Kv,
    /// Queue messages.
    Queue,
    /// Stream records and counters.
    Stream,
    /// Schedule definitions and claims.
    Schedule,
    /// Broker metadata (format version, counters).
    Meta,
}

/// One write of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Insert or replace.
    Put(Keyspace, Bytes, Bytes),
    /// Remove (absent keys are fine).
    Delete(Keyspace, Bytes),
}

/// Writes applied atomically: all or none survive a crash.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// The writes in order.
    pub ops: Vec<Op>,
}

impl Batch {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// A storage failure; engines answer it with their backend error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageError(pub String);

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "storage: {}", self.0)
    }
}

impl std::error::Error for StorageError {}

/// Told the outcome of a [`Backend::commit_then`], once.
pub type CommitDone = Box<dyn FnOnce(Result<(), StorageError>) + Send>;

/// A commit held back until the end of its reader's batch
/// ([`Backend::defers`], [`Backend::commit_all_then`]).
pub struct Pending {
    /// What to write.
    pub batch: Batch,
    /// How durable it must be before `done` is told.
    pub durability: Durability,
    /// Told the outcome, once.
    pub done: CommitDone,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("ops", &self.batch.ops.len())
            .field("durability", &self.durability)
            .finish()
    }
}

/// A place committed data survives in.
pub trait Backend: Send + Sync + 'static {
    /// False for the memory backend: engines skip building batches.
    fn is_durable(&self) -> bool;

    /// Applies `batch` atomically. With [`Durability::Sync`] it returns only
    /// once the batch is on stable storage; with `Buffered` the batch may be
    /// lost in a crash but is never partially applied.
    fn commit(&self, batch: Batch, durability: Durability) -> Result<(), StorageError>;

    /// [`Backend::commit`] without waiting: `done` gets the outcome once
    /// the batch is applied (for [`Durability::Sync`], once it is on stable
    /// storage), on whatever thread finished it — possibly this one, before
    /// this returns, so the caller must not hold a lock `done` takes. The
    /// default commits synchronously; [`local::LocalBackend`] queues the
    /// batch for its writer thread, so no caller thread waits for an fsync.
    fn commit_then(&self, batch: Batch, durability: Durability, done: CommitDone) {
        done(self.commit(batch, durability));
    }

    /// True when a commit of `durability` made now would be written alone
    /// on the caller's thread. A session's reader then holds it back
    /// ([`Pending`]) until the end of its batch of frames and hands the
    /// batch's held commits to [`Backend::commit_all_then`] together, so
    /// the Sync commits that arrived together share one write instead of
    /// one fsync each. The default (nothing is written inline) never
    /// defers.
    fn defers(&self, durability: Durability) -> bool {
        let _ = durability;
        false
    }

    /// [`Backend::commit_then`] for every commit of `commits`, as one group
    /// where the backend groups commits.
    fn commit_all_then(&self, commits: Vec<Pending>) {
        for p in commits {
            self.commit_then(p.batch, p.durability, p.done);
        }
    }

    /// Write transactions this backend has made so far, each covering one
    /// group of commits (for a group with a Sync member, one fsync); 0 for
    /// a backend that writes nothing.
    fn writes(&self) -> u64 {
        0
    }

    /// Every stored pair of `keyspace`, in key order (startup recovery).
    fn load(&self, keyspace: Keyspace) -> Result<Vec<(Bytes, Bytes)>, StorageError>;

    /// Makes every earlier commit durable and releases the store (a later
    /// broker may open the same path); later commits fail. Idempotent.
    /// Called by `Broker::shutdown` and when a `Broker` is dropped.
    fn close(&self) {}
}

/// Keeps nothing: committed state lives only in the engines' memory.
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryBackend;

impl Backend for MemoryBackend {
    fn is_durable(&self) -> bool {
        false
    }

    fn commit(&self, _batch: Batch, _durability: Durability) -> Result<(), StorageError> {
        Ok(())
    }

    fn load(&self, _keyspace: Keyspace) -> Result<Vec<(Bytes, Bytes)>, StorageError> {
        Ok(Vec::new())
    }
}

/// `FITZ_STORAGE_MODE` / `FITZ_STORAGE_PATH`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StorageMode {
    /// Nothing survives a restart.
    #[default]
    Memory,
    /// A redb file in this directory ([`local::LocalBackend`]).
    Local(PathBuf),
}

/// Opens the backend for `mode`.
pub fn open(mode: &StorageMode) -> Result<Arc<dyn Backend>, StorageError> {
    match mode {
        StorageMode::Memory => Ok(Arc::new(MemoryBackend)),
        StorageMode::Local(path) => Ok(Arc::new(local::LocalBackend::open(path)?)),
    }
}

/// Key of one committed KV pair: `[u32 family][u32 route_len][route][key]`,
/// so a resource's pairs are contiguous and in key order.
pub fn kv_key(family: Family, route: &str, key: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(8 + route.len() + key.len());
    b.put_u32(family);
    b.put_u32(u32::try_from(route.len()).unwrap_or(u32::MAX));
    b.put_slice(route.as_bytes());
    b.put_slice(key);
    b.freeze()
}

/// Splits a [`kv_key`] back into family, route and user key.
pub fn split_kv_key(stored: &Bytes) -> Option<(Family, String, Bytes)> {
    let family = u32::from_be_bytes(stored.get(0..4)?.try_into().ok()?);
    let len = u32::from_be_bytes(stored.get(4..8)?.try_into().ok()?) as usize;
    let route = std::str::from_utf8(stored.get(8..8 + len)?)
        .ok()?
        .to_owned();
    Some((family, route, stored.slice(8 + len..)))
}

/// Key of one schedule definition: `[u32 family][route]`, so LIST order
/// (by route) is key order within a family.
pub fn schedule_key(family: Family, route: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + route.len());
    b.put_u32(family);
    b.put_slice(route.as_bytes());
    b.freeze()
}

/// Splits a [`schedule_key`] back into family and route.
pub fn split_schedule_key(stored: &[u8]) -> Option<(Family, String)> {
    let family = u32::from_be_bytes(stored.get(0..4)?.try_into().ok()?);
    let route = std::str::from_utf8(stored.get(4..)?).ok()?.to_owned();
    Some((family, route))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_keys_round_trip() {
        let k = schedule_key(3, "schedule://a/b/c/d");
        assert_eq!(
            split_schedule_key(&k),
            Some((3, "schedule://a/b/c/d".to_string()))
        );
        assert!(split_schedule_key(b"\x00\x00\x00").is_none());
        assert!(split_schedule_key(b"\x00\x00\x00\x01\xff").is_none());
    }

    #[test]
    fn kv_keys_round_trip() {
        let k = kv_key(7, "kv://a/b/c", b"\x00key");
        assert_eq!(
            split_kv_key(&k),
            Some((7, "kv://a/b/c".to_string(), Bytes::from_static(b"\x00key")))
        );
        assert!(split_kv_key(&Bytes::from_static(b"\x00\x00")).is_none());
    }

    #[test]
    fn open_picks_the_backend_of_the_mode() {
        assert!(!open(&StorageMode::Memory).unwrap().is_durable());
        let dir = std::env::temp_dir().join(format!("fitz-open-{}", std::process::id()));
        let local = open(&StorageMode::Local(dir.clone())).unwrap();
        assert!(local.is_durable());
        local.close();
        let _ = std::fs::remove_dir_all(dir);
    }
}
