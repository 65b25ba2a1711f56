//! The feed's local transaction ([`FeedTx`]), its stored cursor record and
//! the digest of applied records.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::super::SyncError;
use super::super::store::{Entries, LocalStore, StoreOp, Table};
use crate::stream::StreamRecord;

/// The key of `key` in the application table `table` ([`Table::App`]):
/// `table \0 key`. Read what feed handlers wrote with
/// `store.get(Table::App, &app_key("orders", b"o-1"))`.
pub fn app_key(table: &str, key: impl AsRef<[u8]>) -> Vec<u8> {
    let mut k = Vec::with_capacity(table.len() + 1 + key.as_ref().len());
    k.extend_from_slice(table.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_ref());
    k
}

fn check_table(table: &str) -> Result<(), SyncError> {
    if table.is_empty() || table.contains('\0') {
        return Err(SyncError::InvalidArgument(format!(
            "application table name {table:?} must be non-empty and free of NUL"
        )));
    }
    Ok(())
}

/// The last record a feed applied: enough to find it again and tell whether
/// the broker still holds the same record there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Applied {
    pub route: String,
    /// Its resource offset.
    pub offset: u64,
    pub digest: u64,
}

/// A feed's stored state ([`Table::FeedCursor`], JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct CursorRecord {
    /// The selector the feed reads: a feed name is bound to one selector.
    pub selector: String,
    /// The next offset on the selector's axis.
    pub cursor: u64,
    /// The last record applied, if any since the cursor was last set by
    /// hand (a gap policy's `ResumeAt`).
    pub last: Option<Applied>,
}

impl CursorRecord {
    pub fn op(&self, name: &str) -> Result<StoreOp, SyncError> {
        Ok(StoreOp::Put {
            table: Table::FeedCursor,
            key: name.as_bytes().to_vec(),
            value: serde_json::to_vec(self).map_err(|e| SyncError::Corrupt(e.to_string()))?,
        })
    }

    pub fn decode(b: &[u8]) -> Result<Self, SyncError> {
        serde_json::from_slice(b).map_err(|e| SyncError::Corrupt(format!("feed cursor: {e}")))
    }
}

/// A 64-bit FNV-1a digest of a record's identity and content (route,
/// offset, creation time, body, metadata; each part length-prefixed). It
/// tells a record from another written at the same offset by a broker that
/// lost its log and was written again; not a cryptographic hash.
pub(super) fn digest(record: &StreamRecord) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let offset = record.offset().to_be_bytes();
    let created = record.created_at_millis().to_be_bytes();
    let meta = record.metadata().map(|m| &m[..]);
    let parts: [Option<&[u8]>; 5] = [
        Some(record.route().as_bytes()),
        Some(&offset),
        Some(&created),
        Some(&record.body()[..]),
        meta,
    ];
    for part in parts {
        let (flag, bytes) = match part {
            Some(b) => (1u8, b),
            None => (0u8, &[][..]),
        };
        let len = (bytes.len() as u64).to_be_bytes();
        for b in [flag].iter().chain(len.iter()).chain(bytes.iter()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Runs a blocking store call on tokio's blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    store: &Arc<dyn LocalStore>,
    f: impl FnOnce(&dyn LocalStore) -> Result<T, SyncError> + Send + 'static,
) -> Result<T, SyncError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|e| SyncError::Store(format!("store task failed: {e}")))?
}

/// The local transaction a feed handler runs in: reads go through the
/// store (seeing this transaction's own writes), writes to application
/// tables are buffered and applied together with the feed's cursor in one
/// [`LocalStore::apply`] batch, so a record's local effects and the cursor
/// moving past it are one event, also across a crash.
///
/// The feed commits several records' transactions as one batch (one page
/// at most); a handler that fails has its own writes discarded while the
/// records before it in the batch are applied.
pub struct FeedTx {
    store: Arc<dyn LocalStore>,
    ops: Vec<StoreOp>,
    /// Buffered writes by [`Table::App`] key: `Some` put, `None` deleted.
    overlay: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// `ops.len()` when the current record's handler started.
    mark: usize,
}

impl std::fmt::Debug for FeedTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedTx")
            .field("buffered", &self.ops.len())
            .finish_non_exhaustive()
    }
}

impl FeedTx {
    pub(super) fn new(store: Arc<dyn LocalStore>) -> Self {
        Self {
            store,
            ops: Vec::new(),
            overlay: HashMap::new(),
            mark: 0,
        }
    }

    /// The value of `key` in the application table `table`: this
    /// transaction's own write if it made one, else the store's.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a read.
    pub async fn get(
        &self,
        table: &str,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<Vec<u8>>, SyncError> {
        check_table(table)?;
        let k = app_key(table, key);
        if let Some(v) = self.overlay.get(&k) {
            return Ok(v.clone());
        }
        blocking(&self.store, move |s| s.get(Table::App, &k)).await
    }

    /// Every entry of `table` whose key starts with `prefix`, in key order,
    /// as `(key, value)` with the table prefix removed, this transaction's
    /// writes included.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a read.
    pub async fn scan_prefix(
        &self,
        table: &str,
        prefix: impl AsRef<[u8]>,
    ) -> Result<Entries, SyncError> {
        check_table(table)?;
        let full = app_key(table, prefix);
        let p = full.clone();
        let stored = blocking(&self.store, move |s| s.scan_prefix(Table::App, &p)).await?;
        let mut merged: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = stored.into_iter().collect();
        for (k, v) in &self.overlay {
            if k.starts_with(&full) {
                match v {
                    Some(v) => merged.insert(k.clone(), v.clone()),
                    None => merged.remove(k),
                };
            }
        }
        let strip = table.len() + 1;
        Ok(merged
            .into_iter()
            .map(|(k, v)| (k[strip..].to_vec(), v))
            .collect())
    }

    /// Sets `key` in `table` to `value` when the transaction is applied.
    pub fn put(
        &mut self,
        table: &str,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<(), SyncError> {
        check_table(table)?;
        let k = app_key(table, key);
        let v = value.as_ref().to_vec();
        self.overlay.insert(k.clone(), Some(v.clone()));
        self.ops.push(StoreOp::Put {
            table: Table::App,
            key: k,
            value: v,
        });
        Ok(())
    }

    /// Removes `key` from `table` when the transaction is applied.
    pub fn delete(&mut self, table: &str, key: impl AsRef<[u8]>) -> Result<(), SyncError> {
        check_table(table)?;
        let k = app_key(table, key);
        self.overlay.insert(k.clone(), None);
        self.ops.push(StoreOp::Delete {
            table: Table::App,
            key: k,
        });
        Ok(())
    }

    /// A new record's handler starts: its writes can be discarded alone.
    pub(super) fn begin_record(&mut self) {
        self.mark = self.ops.len();
    }

    /// Discards the writes of the record whose handler failed.
    pub(super) fn discard_record(&mut self) {
        self.ops.truncate(self.mark);
        self.overlay.clear();
        for op in &self.ops {
            match op {
                StoreOp::Put { key, value, .. } => {
                    self.overlay.insert(key.clone(), Some(value.clone()));
                }
                StoreOp::Delete { key, .. } => {
                    self.overlay.insert(key.clone(), None);
                }
            }
        }
    }

    /// The buffered writes and `cursor` (as feed `name`): one batch for
    /// [`LocalStore::apply`]. The transaction starts empty again.
    pub(super) fn take_batch(
        &mut self,
        name: &str,
        cursor: &CursorRecord,
    ) -> Result<Vec<StoreOp>, SyncError> {
        let mut ops = std::mem::take(&mut self.ops);
        ops.push(cursor.op(name)?);
        self.overlay.clear();
        self.mark = 0;
        Ok(ops)
    }

    /// [`FeedTx::take_batch`], applied.
    #[cfg(test)]
    pub(super) async fn commit(
        &mut self,
        name: &str,
        cursor: &CursorRecord,
    ) -> Result<(), SyncError> {
        let ops = self.take_batch(name, cursor)?;
        blocking(&self.store, move |s| s.apply(&ops)).await
    }
}
