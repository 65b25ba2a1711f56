//! A transaction's writes: kept aside (`pending`) while they are few, so a
//! short write transaction never copies the committed map's nodes (see
//! [`Tx::write`]); flattened into its view otherwise.

use bytes::Bytes;

use super::Tx;
use crate::storage::{self, Keyspace, Op};

/// Writes a transaction keeps in `pending` before it flattens them into
/// its view (bounds the linear lookups in [`Tx::get`]).
const MAX_PENDING: usize = 16;

impl Tx {
    /// The value of `key` in this transaction's view.
    pub(super) fn get(&self, key: &[u8]) -> Option<Bytes> {
        match self.pending.iter().rev().find(|(k, _)| k[..] == *key) {
            Some((_, value)) => value.clone(),
            None => self.view.get(key).cloned(),
        }
    }

    /// Records a write. The first [`MAX_PENDING`] writes of a transaction
    /// stay in `pending`: its view shares its nodes with the committed map,
    /// so writing into it would copy the touched path at the first write,
    /// and the commit applies them to the committed map instead. A range
    /// read, or more writes, flatten them into the view.
    fn write(&mut self, key: Bytes, value: Option<Bytes>) {
        if !self.flattened && self.pending.len() >= MAX_PENDING {
            self.flatten();
        }
        if self.flattened {
            match value {
                Some(value) => drop(self.view.insert(key, value)),
                None => drop(self.view.remove(&key[..])),
            }
        } else {
            self.pending.push((key, value));
        }
    }

    /// Applies `pending` to the view (a copy from here on).
    pub(super) fn flatten(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        for (key, value) in self.pending.drain(..) {
            match value {
                Some(value) => drop(self.view.insert(key, value)),
                None => drop(self.view.remove(&key[..])),
            }
        }
        self.flattened = true;
    }

    pub(super) fn put(&mut self, key: Bytes, value: Bytes, durable: bool) {
        if durable {
            self.ops.push(Op::Put(
                Keyspace::Kv,
                storage::kv_key(self.family, &self.route, &key),
                value.clone(),
            ));
        }
        self.write(key, Some(value));
        self.mutations += 1;
    }

    pub(super) fn delete(&mut self, key: Bytes, durable: bool) {
        if self.get(&key).is_some() {
            if durable {
                self.ops.push(Op::Delete(
                    Keyspace::Kv,
                    storage::kv_key(self.family, &self.route, &key),
                ));
            }
            self.write(key, None);
            self.mutations += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Family;
    use fitz_protocol::kv::TxMode;
    use std::time::SystemTime;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn tx(view: super::super::Map) -> Tx {
        Tx {
            session: Default::default(),
            family: Family::default(),
            route: "kv://a/b/c".into(),
            mode: TxMode::ReadWrite,
            view,
            pending: smallvec::SmallVec::new(),
            flattened: false,
            ops: Vec::new(),
            mutations: 0,
            last_active: SystemTime::UNIX_EPOCH,
            staged: 0,
        }
    }

    #[test]
    fn pending_writes_shadow_the_snapshot_and_leave_it_untouched() {
        let committed: super::super::Map =
            [(b("a"), b("1")), (b("b"), b("2"))].into_iter().collect();
        let mut t = tx(committed.clone());
        t.put(b("a"), b("10"), false);
        t.delete(b("b"), false);
        t.delete(b("zz"), false); // absent: no write, no mutation
        t.put(b("c"), b("3"), false);
        t.put(b("a"), b("11"), false);
        assert_eq!(t.get(b"a"), Some(b("11")));
        assert_eq!(t.get(b"b"), None);
        assert_eq!(t.get(b"c"), Some(b("3")));
        assert_eq!((t.pending.len(), t.flattened, t.mutations), (4, false, 4));
        // The snapshot the view shares with the committed map is unchanged.
        assert_eq!(t.view, committed);
        t.flatten();
        assert!(t.flattened && t.pending.is_empty());
        let expect: super::super::Map = [(b("a"), b("11")), (b("c"), b("3"))].into_iter().collect();
        assert_eq!(t.view, expect);
        assert_eq!(committed.len(), 2);
    }

    #[test]
    fn more_than_max_pending_writes_flatten_into_the_view() {
        let mut t = tx(super::super::Map::new());
        for i in 0..MAX_PENDING {
            t.put(b(&format!("k{i:02}")), b("v"), false);
        }
        assert_eq!((t.pending.len(), t.flattened), (MAX_PENDING, false));
        t.put(b("last"), b("v"), false);
        assert!(t.flattened && t.pending.is_empty());
        assert_eq!(t.view.len(), MAX_PENDING + 1);
        t.delete(b("k00"), false);
        assert_eq!((t.view.len(), t.get(b"k00")), (MAX_PENDING, None));
    }

    #[test]
    fn durable_writes_record_storage_ops() {
        let mut t = tx([(b("a"), b("1"))].into_iter().collect());
        t.put(b("x"), b("1"), true);
        t.delete(b("a"), true);
        t.delete(b("absent"), true);
        assert_eq!(t.ops.len(), 2);
    }
}
