//! The local store: one ordered byte map per [`Table`], written in atomic,
//! durable batches.
//!
//! Everything the sync layer must keep in agreement (an outbox entry and the
//! sequence counter it took, an entry leaving the outbox and entering the
//! dead letter) is written by one [`LocalStore::apply`] call: one local
//! transaction, all or nothing, durable when it returns.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use super::{FORMAT_VERSION, SyncError};

/// The tables of a [`LocalStore`]. Each is an ordered map from byte keys to
/// byte values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Table {
    /// Store-wide records: the format version, the client id, the next
    /// sequence number.
    Meta,
    /// Pending outbox entries, keyed `lane \0 seq` (seq big-endian), so a
    /// prefix scan of one lane yields its entries in push order.
    Outbox,
    /// Entries that failed permanently, keyed by seq (big-endian).
    DeadLetter,
    /// Feed cursors, keyed by feed name: where each [`super::Feed`] resumes
    /// and a digest of the last record it applied.
    FeedCursor,
    /// Application tables written by feed handlers ([`super::FeedTx`]),
    /// keyed `table \0 key` ([`super::app_key`]).
    App,
}

impl Table {
    /// Every table, in a fixed order.
    ///
    /// A table added later in the same format version is created when a
    /// store is opened, so stores written before it open unchanged.
    pub const ALL: [Table; 5] = [
        Table::Meta,
        Table::Outbox,
        Table::DeadLetter,
        Table::FeedCursor,
        Table::App,
    ];

    /// The table's stable name (the redb table name).
    pub fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Outbox => "outbox",
            Table::DeadLetter => "dead_letter",
            Table::FeedCursor => "feed_cursor",
            Table::App => "app",
        }
    }
}

/// One write of a [`LocalStore::apply`] batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// Sets `key` to `value` in `table`.
    Put {
        /// The table.
        table: Table,
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Removes `key` from `table` (nothing happens when it is absent).
    Delete {
        /// The table.
        table: Table,
        /// The key.
        key: Vec<u8>,
    },
}

/// Key-value pairs of a [`LocalStore::scan_prefix`], in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

type Tables = BTreeMap<Table, BTreeMap<Vec<u8>, Vec<u8>>>;

/// Durable local storage for the sync layer.
///
/// Implementations must make [`LocalStore::apply`] atomic (all of a batch or
/// none of it, also across a crash) and durable when it returns, and reads
/// must see every batch applied before them. Calls block: the sync layer
/// runs them on tokio's blocking pool.
pub trait LocalStore: Send + Sync + 'static {
    /// The value of `key` in `table`.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, SyncError>;
    /// Every entry of `table` whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, table: Table, prefix: &[u8]) -> Result<Entries, SyncError>;
    /// Applies `ops` in order as one transaction, durably.
    fn apply(&self, ops: &[StoreOp]) -> Result<(), SyncError>;
}

/// A shared store is a store: one [`RedbStore`] (which a process can open
/// only once) behind an `Arc` serves an [`super::Outbox`] and any number of
/// [`super::Feed`]s, and everything they write still goes through one
/// `apply` per batch.
impl<S: LocalStore + ?Sized> LocalStore for Arc<S> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, SyncError> {
        (**self).get(table, key)
    }

    fn scan_prefix(&self, table: Table, prefix: &[u8]) -> Result<Entries, SyncError> {
        (**self).scan_prefix(table, prefix)
    }

    fn apply(&self, ops: &[StoreOp]) -> Result<(), SyncError> {
        (**self).apply(ops)
    }
}

/// A [`LocalStore`] in memory: for tests, and for clients that accept losing
/// their outbox with the process. Clones share the same maps, so "reopening"
/// a clone sees what the original wrote.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    tables: Arc<Mutex<Tables>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl LocalStore for MemoryStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, SyncError> {
        let tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(tables.get(&table).and_then(|t| t.get(key)).cloned())
    }

    fn scan_prefix(&self, table: Table, prefix: &[u8]) -> Result<Entries, SyncError> {
        let tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(tables
            .get(&table)
            .map(|t| {
                t.range(prefix.to_vec()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn apply(&self, ops: &[StoreOp]) -> Result<(), SyncError> {
        // One lock for the whole batch: readers see all of it or none.
        let mut tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        for op in ops {
            match op {
                StoreOp::Put { table, key, value } => {
                    tables
                        .entry(*table)
                        .or_default()
                        .insert(key.clone(), value.clone());
                }
                StoreOp::Delete { table, key } => {
                    if let Some(t) = tables.get_mut(table) {
                        t.remove(key);
                    }
                }
            }
        }
        Ok(())
    }
}

type RedbTable = redb::TableDefinition<'static, &'static [u8], &'static [u8]>;

fn definition(table: Table) -> RedbTable {
    redb::TableDefinition::new(table.name())
}

fn store_err(e: impl std::fmt::Display) -> SyncError {
    SyncError::Store(e.to_string())
}

/// A [`LocalStore`] in one [redb](https://docs.rs/redb) file: every
/// [`LocalStore::apply`] is one redb write transaction committed with
/// immediate durability (fsync) before it returns.
pub struct RedbStore {
    db: redb::Database,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedbStore")
    }
}

impl RedbStore {
    /// Opens the store at `path`, creating the file when it does not exist.
    ///
    /// A file that redb cannot read (another redb file format, or not a
    /// redb file) fails with [`SyncError::Store`] naming the reason; the
    /// file is left untouched. The sync layer's own format version is
    /// checked when an [`super::Outbox`] opens the store
    /// ([`SyncError::Version`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SyncError> {
        let path = path.as_ref();
        let db = redb::Database::create(path).map_err(|e| match e {
            redb::DatabaseError::UpgradeRequired(v) => SyncError::Store(format!(
                "{}: written by redb file format {v}, which this build cannot read \
                 (the file was not changed)",
                path.display()
            )),
            other => SyncError::Store(format!("{}: {other}", path.display())),
        })?;
        // Every table exists from here on, so reads never meet a missing one.
        let w = db.begin_write().map_err(store_err)?;
        for table in Table::ALL {
            w.open_table(definition(table)).map_err(store_err)?;
        }
        w.commit().map_err(store_err)?;
        Ok(Self { db })
    }
}

impl LocalStore for RedbStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, SyncError> {
        let r = self.db.begin_read().map_err(store_err)?;
        let t = r.open_table(definition(table)).map_err(store_err)?;
        Ok(t.get(key).map_err(store_err)?.map(|v| v.value().to_vec()))
    }

    fn scan_prefix(&self, table: Table, prefix: &[u8]) -> Result<Entries, SyncError> {
        let r = self.db.begin_read().map_err(store_err)?;
        let t = r.open_table(definition(table)).map_err(store_err)?;
        let mut out = Vec::new();
        for item in t.range::<&[u8]>(prefix..).map_err(store_err)? {
            let (k, v) = item.map_err(store_err)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn apply(&self, ops: &[StoreOp]) -> Result<(), SyncError> {
        let w = self.db.begin_write().map_err(store_err)?;
        for op in ops {
            match op {
                StoreOp::Put { table, key, value } => {
                    let mut t = w.open_table(definition(*table)).map_err(store_err)?;
                    t.insert(key.as_slice(), value.as_slice())
                        .map_err(store_err)?;
                }
                StoreOp::Delete { table, key } => {
                    let mut t = w.open_table(definition(*table)).map_err(store_err)?;
                    t.remove(key.as_slice()).map_err(store_err)?;
                }
            }
        }
        // Durability::Immediate is redb's default: fsync before returning.
        w.commit().map_err(store_err)
    }
}

/// Meta-table key of the store's format version (`u32`, big-endian).
pub(crate) const META_FORMAT: &[u8] = b"format";
/// Meta-table key of the client id.
pub(crate) const META_CLIENT_ID: &[u8] = b"client_id";

/// Checks the store's format version (writing it into an empty store) and
/// reads or creates the client id: what the outbox and feeds both do first
/// when they open a store.
pub(crate) fn open_identity(store: &dyn LocalStore) -> Result<String, SyncError> {
    let mut init = Vec::new();
    match store.get(Table::Meta, META_FORMAT)? {
        Some(v) => {
            let arr: [u8; 4] = v
                .as_slice()
                .try_into()
                .map_err(|_| SyncError::Corrupt("format version record".into()))?;
            let found = u32::from_be_bytes(arr);
            if found != FORMAT_VERSION {
                return Err(SyncError::Version {
                    found,
                    supported: FORMAT_VERSION,
                });
            }
        }
        None => init.push(StoreOp::Put {
            table: Table::Meta,
            key: META_FORMAT.to_vec(),
            value: FORMAT_VERSION.to_be_bytes().to_vec(),
        }),
    }
    let client_id = match store.get(Table::Meta, META_CLIENT_ID)? {
        Some(v) => String::from_utf8(v).map_err(|_| SyncError::Corrupt("client id".into()))?,
        None => {
            let id = format!("{:032x}", rand::random::<u128>());
            init.push(StoreOp::Put {
                table: Table::Meta,
                key: META_CLIENT_ID.to_vec(),
                value: id.clone().into_bytes(),
            });
            id
        }
    };
    if !init.is_empty() {
        store.apply(&init)?;
    }
    Ok(client_id)
}
