//! One-key writes: a key written (or deleted) in a read-write transaction
//! of its own, with the write and the COMMIT sent together.

use bytes::Bytes;
use fitz_protocol::{Message, ReplyBody, Str, kv, types};

use super::{Durability, Kv, Transaction, TxMode, open_after_finish};
use crate::connection::RequestOptions;
use crate::error::{Error, Result};

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
    /// Dropped before its BEGIN is queued, nothing is sent. Dropped after,
    /// the write is committed whole or not at all: the PUT and the COMMIT
    /// usually travel with the BEGIN and are written once it is answered,
    /// whether or not anyone still waits; when the client had fewer than
    /// three in-flight slots free they are sent from here, and a drop before
    /// they are queued rolls the transaction back in the background (as
    /// [`Transaction::commit`]).
    pub async fn put(
        &self,
        route: &str,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        durability: Durability,
    ) -> Result<()> {
        self.write_value::<{ types::KV_PUT }>(route, key.as_ref(), value.into(), durability)
            .await
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
        self.write_value::<{ types::KV_INSERT }>(route, key.as_ref(), value.into(), durability)
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

    /// [`Kv::put`] or [`Kv::insert`]: the one-key write of record type `T`.
    async fn write_value<const T: u16>(
        &self,
        route: &str,
        key: &[u8],
        value: Bytes,
        durability: Durability,
    ) -> Result<()>
    where
        kv::Write<T>: Message,
        fitz_protocol::Ack<T>: ReplyBody,
    {
        let key = Bytes::copy_from_slice(key);
        let write = |tx_id, route| kv::Write::<T> {
            tx_id,
            route,
            key,
            value,
        };
        self.write_one::<_, fitz_protocol::Ack<T>>(route, durability, write)
            .await
    }

    /// BEGIN on `route`, then the write `write` builds for the
    /// transaction, sent with the COMMIT.
    ///
    /// When two in-flight slots are free besides the BEGIN's, the write and
    /// the COMMIT ride in the BEGIN's command and the connection's actor
    /// writes them as soon as it reads the BEGIN's answer (`call_then`):
    /// no trip back through this task in between. Otherwise the transaction
    /// is begun first and the two follow as a pair.
    async fn write_one<M, R>(
        &self,
        route: &str,
        durability: Durability,
        write: impl FnOnce(u64, Str) -> M + Send + 'static,
    ) -> Result<()>
    where
        M: Message + 'static,
        R: ReplyBody,
    {
        let Some(spare) = self.conn.spare_two() else {
            let tx = self.begin(route, TxMode::ReadWrite).await?;
            let msg = write(tx.tx_id, tx.route.clone());
            return tx.write_and_commit::<_, R>(&msg, durability).await;
        };
        let (begin, generation) = self.begin_request(route, TxMode::ReadWrite)?;
        let resource = begin.route.clone();
        let then = move |ok: kv::BeginOk| {
            let commit = kv::Commit {
                tx_id: ok.tx_id,
                route: resource.clone(),
                durability,
            };
            (write(ok.tx_id, resource), commit)
        };
        let (begun, written, committed) = self
            .conn
            .call_then::<_, kv::BeginOk, M, R, _, kv::CommitOk>(&begin, then, generation, spare)
            .await
            .map_err(Error::stale_as_not_sent)?;
        let begun = begun.map_err(Error::stale_as_not_sent)?;
        // The one case that leaves the transaction open: a COMMIT that was
        // never written while the session lives on; its Drop rolls it back.
        let mut tx = self.opened(begin, begun.tx_id, generation);
        tx.open = open_after_finish(&committed);
        drop(tx);
        written?;
        committed.map(drop)
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
