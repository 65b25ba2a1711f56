//! One-key writes: a key written (or deleted) in a read-write transaction
//! of its own, with the write and the COMMIT sent together.

use bytes::Bytes;
use fitz_protocol::{Message, ReplyBody, Str, kv};

use super::{Durability, Kv, Transaction, TxMode, open_after_finish};
use crate::connection::RequestOptions;
use crate::error::Result;

impl Kv {
    /// Writes `value` under `key` in `route` in a transaction of its own:
    /// BEGIN, then PUT and COMMIT written together, so two round trips
    /// instead of the three of [`Kv::begin`], [`Transaction::put`] and
    /// [`Transaction::commit`], with the same guarantees (the write is
    /// committed with `durability`, or not at all).
    ///
    /// The COMMIT does not wait for the PUT's answer. When the PUT fails the
    /// COMMIT that follows it commits an empty transaction (or fails), and
    /// the PUT's error is returned; otherwise the COMMIT's. As with any
    /// commit, a lost answer leaves the outcome unknown
    /// ([`crate::Error::maybe_applied`]).
    ///
    /// Errors worth branching on: those of [`Kv::begin`] (1004 while another
    /// read-write transaction holds the resource) and of the write.
    ///
    /// # Cancel safety
    ///
    /// As [`Transaction::commit`]: dropped before the PUT and COMMIT were
    /// queued, the transaction is rolled back in the background; dropped
    /// after, the write is committed whole or not at all.
    pub async fn put(
        &self,
        route: &str,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        durability: Durability,
    ) -> Result<()> {
        let (key, value) = (Bytes::copy_from_slice(key.as_ref()), value.into());
        let put = |tx_id, route| kv::Put {
            tx_id,
            route,
            key,
            value,
        };
        self.write_one::<_, kv::PutOk>(route, durability, put).await
    }

    /// [`Kv::put`], only if `key` is absent: an existing key fails with
    /// broker code 1006 ([`crate::codes::KV_KEY_EXISTS`]) and nothing is
    /// written.
    pub async fn insert(
        &self,
        route: &str,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        durability: Durability,
    ) -> Result<()> {
        let (key, value) = (Bytes::copy_from_slice(key.as_ref()), value.into());
        let insert = |tx_id, route| kv::Insert {
            tx_id,
            route,
            key,
            value,
        };
        self.write_one::<_, kv::InsertOk>(route, durability, insert)
            .await
    }

    /// Deletes `key` from `route` (an absent key is fine) in a transaction
    /// of its own, the DELETE and COMMIT written together; see [`Kv::put`].
    pub async fn delete(
        &self,
        route: &str,
        key: impl AsRef<[u8]>,
        durability: Durability,
    ) -> Result<()> {
        let key = Bytes::copy_from_slice(key.as_ref());
        let delete = |tx_id, route| kv::Delete { tx_id, route, key };
        self.write_one::<_, kv::DeleteOk>(route, durability, delete)
            .await
    }

    /// BEGIN on `route`, then the write `write` builds for the
    /// transaction, sent with the COMMIT.
    async fn write_one<M: Message, R: ReplyBody>(
        &self,
        route: &str,
        durability: Durability,
        write: impl FnOnce(u64, Str) -> M,
    ) -> Result<()> {
        let tx = self.begin(route, TxMode::ReadWrite).await?;
        let msg = write(tx.tx_id, tx.route.clone());
        tx.write_and_commit::<_, R>(&msg, durability).await
    }
}

impl Transaction {
    /// Sends `write` and the COMMIT back to back. Only for a transaction
    /// with no write before this one: a failed `write` must leave nothing
    /// for the COMMIT behind it to commit.
    async fn write_and_commit<M: Message, R: ReplyBody>(
        mut self,
        write: &M,
        durability: Durability,
    ) -> Result<()> {
        let commit = kv::Commit {
            tx_id: self.tx_id,
            route: self.route.clone(),
            durability,
        };
        let opts = RequestOptions::pinned(self.generation);
        // An outer error: nothing was queued, the transaction is still open
        // and its Drop rolls it back.
        let (written, committed) = self
            .conn
            .call_pair::<M, R, _, kv::CommitOk>(write, &commit, opts)
            .await?;
        self.open = open_after_finish(&committed);
        written?;
        committed.map(drop)
    }
}
