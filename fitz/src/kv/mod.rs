//! KV: transactions over one resource and change subscriptions (types
//! 100–111).
//!
//! Every read and write happens inside a [`Transaction`] scoped to one
//! concrete resource, `kv://realm/area/resource`:
//!
//! * [`TxMode::ReadOnly`] reads a snapshot of the committed state and takes
//!   no lock; writes fail with broker code 1005.
//! * [`TxMode::ReadWrite`] holds the resource's exclusive lock from
//!   [`Kv::begin`] until [`Transaction::commit`] or
//!   [`Transaction::rollback`]; a second read-write BEGIN on the same resource
//!   fails at once with 1004 (it does not wait).
//!
//! A transaction belongs to the connection session it was begun on. After a
//! reconnect the broker has already discarded it (and released its lock), so
//! every later operation fails locally with
//! [`ErrorKind::Stale`] and nothing is sent.
//! Dropping a transaction that was neither committed nor rolled back sends a
//! best-effort ROLLBACK in the background, so an early return or a `?` never
//! leaves the resource locked.
//!
//! ```no_run
//! # async fn demo(client: fitz::Client) -> fitz::Result<()> {
//! use fitz::kv::{Durability, ScanOptions, TxMode};
//! use futures_util::TryStreamExt;
//!
//! let mut tx = client.kv().begin("kv://prod/shop/carts", TxMode::ReadWrite).await?;
//! tx.put("cart:42", "3 apples").await?;
//! let value = tx.get("cart:42").await?;
//! assert_eq!(value.as_deref(), Some(&b"3 apples"[..]));
//! let carts: Vec<_> = tx.scan(ScanOptions::prefix("cart:")).try_collect().await?;
//! tx.commit(Durability::Sync).await?;
//! # let _ = carts; Ok(()) }
//! ```
//!
//! [`Kv::subscribe`] reports every commit that changed a matching resource,
//! and keeps doing so across reconnects.

mod one;
mod reserved;
mod scan;
#[cfg(test)]
mod tests;
mod watch;

use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use fitz_protocol::route::{self, Scheme};
use fitz_protocol::{Message, ReplyBody, Str, kv};

use crate::connection::{Connection, Generation, RequestOptions, decode_body};
use crate::error::{Error, ErrorKind, Result};
use crate::options::SubscriptionOptions;
use crate::retry::RetryPolicy;

pub use fitz_protocol::kv::{Durability, TxMode};
pub use reserved::RESERVED_PREFIX;
pub(crate) use reserved::{RESERVED_END, is_reserved, split_around_reserved};
pub use scan::{Scan, ScanOptions, ScanPage};
pub use watch::{KvChange, KvSubscription};

/// The KV domain of a [`crate::Client`] (see [`crate::Client::kv`]).
#[derive(Clone)]
pub struct Kv {
    conn: Connection,
    retry: RetryPolicy,
}

impl fmt::Debug for Kv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kv")
    }
}

impl Kv {
    pub(crate) fn new(conn: Connection) -> Self {
        let retry = conn.shared().config.retry;
        Self { conn, retry }
    }

    /// This view with `policy` for its replay-safe reads (GET and SCAN
    /// pages of the transactions it begins) instead of the client's
    /// [`crate::ClientBuilder::retry`]. Cheap: a clone of the handle.
    pub fn with_retry(&self, policy: RetryPolicy) -> Self {
        Self {
            conn: self.conn.clone(),
            retry: policy,
        }
    }

    /// Begins a transaction on `route`, a concrete `kv://realm/area/resource`
    /// (checked locally; nothing is sent when it is invalid).
    ///
    /// Errors worth branching on: 1004 (a read-write transaction already
    /// holds the resource; retryable once it ends), 1011 (the token may not
    /// use the route in this mode).
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped after BEGIN was written, the broker may open
    /// the transaction with no handle to end it; a read-write one then holds the
    /// resource's lock until the broker's idle timeout or the end of the
    /// connection session. Dropped before it was written, nothing is sent.
    pub async fn begin(&self, route: &str, mode: TxMode) -> Result<Transaction> {
        let (msg, generation) = self.begin_request(route, mode)?;
        let ok: kv::BeginOk = self
            .conn
            .call_with(&msg, RequestOptions::pinned(generation))
            .await
            .map_err(Error::stale_as_not_sent)?;
        Ok(self.opened(msg, ok.tx_id, generation))
    }

    /// A checked BEGIN of `route`, and the session it is pinned to (so the
    /// transaction is known to live in exactly this session; a reconnect
    /// racing the call surfaces as "not sent").
    fn begin_request(&self, route: &str, mode: TxMode) -> Result<(kv::Begin, Generation)> {
        validate_resource(route)?;
        let msg = kv::Begin {
            route: Str::from(route),
            mode,
        };
        Ok((msg, self.conn.generation()))
    }

    /// The open transaction `tx_id` that `begin` started.
    fn opened(&self, begin: kv::Begin, tx_id: u64, generation: Generation) -> Transaction {
        Transaction {
            conn: self.conn.clone(),
            route: begin.route,
            mode: begin.mode,
            tx_id,
            generation,
            open: true,
            retry: self.retry,
        }
    }

    /// Subscribes to commits to every resource matching `pattern` (exact, or
    /// with whole-segment `*`/`**` wildcards able to match a three-segment
    /// KV route), with the client's default buffering. Each item is a
    /// [`KvChange`]: which resource a commit changed and how many writes it
    /// made; read the values in a transaction.
    ///
    /// The subscription survives reconnects: it is re-registered before the
    /// client reports [`crate::State::Authenticated`] again. Commits made
    /// while the connection was down are not replayed. Two subscriptions of
    /// one client to the same pattern share one broker registration.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe. Dropped before it resolves, no registration is left behind:
    /// the handle under construction unsubscribes in the background, or is never
    /// installed when the connection task had not handled it yet.
    pub async fn subscribe(&self, pattern: &str) -> Result<KvSubscription> {
        let options = self.conn.shared().config.subscription;
        self.subscribe_with(pattern, options).await
    }

    /// [`Kv::subscribe`] with explicit buffering for this subscription.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe. Dropped before it resolves, no registration is left behind:
    /// the handle under construction unsubscribes in the background, or is never
    /// installed when the connection task had not handled it yet.
    pub async fn subscribe_with(
        &self,
        pattern: &str,
        options: SubscriptionOptions,
    ) -> Result<KvSubscription> {
        watch::subscribe(&self.conn, pattern, options).await
    }
}

pub(crate) fn validate_resource(route: &str) -> Result<()> {
    // `validate_concrete` also enforces KV's depth of three segments.
    route::validate_concrete(route, Scheme::Kv)
        .map(drop)
        .map_err(Error::route)
}

/// One transaction on one KV resource. See the [module docs](self).
///
/// Operations take `&mut self`: the broker requires the operations of one
/// transaction to be sequential, and the borrow checker keeps them so.
/// [`Transaction::commit`] and [`Transaction::rollback`] consume it.
#[must_use = "a transaction dropped without commit() is rolled back"]
pub struct Transaction {
    conn: Connection,
    route: Str,
    mode: TxMode,
    tx_id: u64,
    generation: Generation,
    /// Still open on the broker as far as we know: Drop rolls it back.
    open: bool,
    /// Retries of GET and SCAN pages.
    retry: RetryPolicy,
}

impl fmt::Debug for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction")
            .field("route", &&*self.route)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Transaction {
    /// The resource this transaction is scoped to.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// Read-only or read-write.
    pub fn mode(&self) -> TxMode {
        self.mode
    }

    /// False once the connection session it was begun on has ended: every
    /// operation would fail with [`ErrorKind::Stale`].
    pub fn is_current(&self) -> bool {
        self.conn.check_generation(self.generation).is_ok()
    }

    /// Reads `key`; `None` when it is absent.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe. The transaction stays usable: a read already written still
    /// runs on the broker (it changes nothing) and its reply is discarded; the
    /// next call gets its own reply.
    pub async fn get(&mut self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>> {
        let msg = kv::Get {
            tx_id: self.tx_id,
            route: self.route.clone(),
            key: Bytes::copy_from_slice(key.as_ref()),
        };
        let ok: kv::GetOk = self.read(&msg).await?;
        Ok(ok.value)
    }

    /// Writes `value` under `key`, replacing any value. Fails with 1005 in a
    /// read-only transaction.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped after the request was written, the write may
    /// still be applied to the transaction (whole, never half) and the caller
    /// cannot tell which. The transaction stays usable; re-read what matters, or
    /// roll back. Dropped before it was written, nothing is sent.
    pub async fn put(&mut self, key: impl AsRef<[u8]>, value: impl Into<Bytes>) -> Result<()> {
        let msg = kv::Put {
            tx_id: self.tx_id,
            route: self.route.clone(),
            key: Bytes::copy_from_slice(key.as_ref()),
            value: value.into(),
        };
        self.write::<_, kv::PutOk>(&msg).await
    }

    /// Writes `value` under `key` only if the key is absent. An existing key
    /// fails with broker code 1006
    /// ([`codes::KV_KEY_EXISTS`](crate::codes::KV_KEY_EXISTS)); the
    /// transaction stays usable.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped after the request was written, the write may
    /// still be applied to the transaction (whole, never half) and the caller
    /// cannot tell which. The transaction stays usable; re-read what matters, or
    /// roll back. Dropped before it was written, nothing is sent.
    pub async fn insert(&mut self, key: impl AsRef<[u8]>, value: impl Into<Bytes>) -> Result<()> {
        let msg = kv::Insert {
            tx_id: self.tx_id,
            route: self.route.clone(),
            key: Bytes::copy_from_slice(key.as_ref()),
            value: value.into(),
        };
        self.write::<_, kv::InsertOk>(&msg).await
    }

    /// Deletes `key` (absent keys are fine).
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped after the request was written, the write may
    /// still be applied to the transaction (whole, never half) and the caller
    /// cannot tell which. The transaction stays usable; re-read what matters, or
    /// roll back. Dropped before it was written, nothing is sent.
    pub async fn delete(&mut self, key: impl AsRef<[u8]>) -> Result<()> {
        let msg = kv::Delete {
            tx_id: self.tx_id,
            route: self.route.clone(),
            key: Bytes::copy_from_slice(key.as_ref()),
        };
        self.write::<_, kv::DeleteOk>(&msg).await
    }

    /// Deletes every key in `range` (`start` included, `end` excluded),
    /// except keys under [`RESERVED_PREFIX`]: a range that covers part of
    /// the prefix is sent as its parts below and above it (two deletes, in
    /// this transaction), one inside it as an empty range. An empty range
    /// deletes nothing; an inverted one (`start > end`) is rejected by the
    /// broker with a 1xxx error.
    ///
    /// When a range is sent in two parts and the second fails, the first
    /// stays applied to the transaction: roll back (or drop it) unless you
    /// retry the delete.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped after a request was written, the write may
    /// still be applied to the transaction (each part whole, never half) and
    /// the caller cannot tell which. The transaction stays usable; re-read
    /// what matters, or roll back. Dropped before it was written, nothing is
    /// sent.
    pub async fn delete_range<K: AsRef<[u8]>>(&mut self, range: Range<K>) -> Result<()> {
        let (start, end) = (range.start.as_ref(), range.end.as_ref());
        let mut parts = if start > end {
            // The broker's to refuse, as it is.
            vec![(start.to_vec(), end.to_vec())]
        } else {
            split_around_reserved(start, end)
        };
        if parts.is_empty() {
            // Nothing to delete: still one request, so a read-only or stale
            // transaction fails as it would for any delete.
            parts.push((start.to_vec(), start.to_vec()));
        }
        for (s, e) in parts {
            let msg = kv::DeleteRange {
                tx_id: self.tx_id,
                route: self.route.clone(),
                start: Bytes::from(s),
                end: Bytes::from(e),
            };
            self.write::<_, kv::DeleteRangeOk>(&msg).await?;
        }
        Ok(())
    }

    /// Every entry selected by `options`, fetched page by page as the stream
    /// is polled. See [`ScanOptions`] for ranges, direction and limits. Keys
    /// under [`RESERVED_PREFIX`] are left out.
    ///
    /// The stream borrows the transaction; it ends after its first error.
    pub fn scan(&mut self, options: ScanOptions) -> Scan<'_> {
        Scan::new(self, options)
    }

    /// One page of the scan `options` describes: at most the options' limit
    /// or page size, and at most what the broker fits in one reply (1,024
    /// entries, 64 KiB). Continue with
    /// [`ScanOptions::resume_after`]`(page.last_key())` while
    /// [`ScanPage::has_more`]. Keys under [`RESERVED_PREFIX`] are left out
    /// (see [`ScanOptions`] for how that meets limits and pages).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe. The transaction stays usable: a read already written still
    /// runs on the broker (it changes nothing) and its reply is discarded; the
    /// next call gets its own reply.
    pub async fn scan_page(&mut self, options: &ScanOptions) -> Result<ScanPage> {
        scan::fetch_page(&self.handle(), options).await
    }

    /// Commits with the chosen durability and ends the transaction.
    ///
    /// When the reply is lost (a timeout or a dropped connection after the
    /// request was written) the outcome is unknown:
    /// [`Error::maybe_applied`] is true.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe as far as atomicity goes: dropped before COMMIT was written,
    /// the transaction is rolled back in the background (as on any drop); dropped
    /// after, the broker commits it whole or not at all, and the caller does not
    /// learn which (read it back).
    pub async fn commit(mut self, durability: Durability) -> Result<()> {
        let msg = kv::Commit {
            tx_id: self.tx_id,
            route: self.route.clone(),
            durability,
        };
        self.finish::<_, kv::CommitOk>(&msg).await.map(drop)
    }

    /// Discards every write and ends the transaction (releasing the lock of a
    /// read-write transaction).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropped before the answer, the transaction's `Drop` sends
    /// the ROLLBACK in the background instead (a second ROLLBACK is harmless).
    pub async fn rollback(mut self) -> Result<()> {
        let msg = kv::Rollback {
            tx_id: self.tx_id,
            route: self.route.clone(),
        };
        self.finish::<_, kv::RollbackOk>(&msg).await.map(drop)
    }

    /// What the scan and serde helpers need, without borrowing `self`.
    fn handle(&self) -> TxHandle {
        TxHandle {
            conn: self.conn.clone(),
            route: self.route.clone(),
            tx_id: self.tx_id,
            generation: self.generation,
            retry: self.retry,
        }
    }

    async fn read<M: Message, R: ReplyBody>(&self, msg: &M) -> Result<R> {
        self.handle().read(msg).await
    }

    async fn write<M: Message, R: ReplyBody>(&self, msg: &M) -> Result<()> {
        let opts = RequestOptions::pinned(self.generation);
        self.conn.call_with::<M, R>(msg, opts).await.map(drop)
    }

    /// COMMIT or ROLLBACK: afterwards the transaction is closed on the broker
    /// unless the request certainly never got there.
    async fn finish<M: Message, R: ReplyBody>(&mut self, msg: &M) -> Result<R> {
        let result = self
            .conn
            .call_with::<M, R>(msg, RequestOptions::pinned(self.generation))
            .await;
        self.open = open_after_finish(&result);
        result
    }
}

/// Whether a transaction is still open on the broker after its COMMIT or
/// ROLLBACK got `result`.
fn open_after_finish<R>(result: &Result<R>) -> bool {
    match result {
        Ok(_) => false,
        // The broker answered (it discards the transaction on a failed
        // commit), or the request may have reached it.
        Err(e) if e.kind() == ErrorKind::Broker || e.maybe_applied() => false,
        // Never written (backpressure, timeout in the queue, stale):
        // still open, so Drop tries a ROLLBACK if the session lives.
        Err(_) => true,
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        let msg = kv::Rollback {
            tx_id: self.tx_id,
            route: self.route.clone(),
        };
        // Pinned: a tx id means nothing to a later session. If no slot is free
        // right now the broker still ends the transaction with the session or
        // when its idle timeout fires.
        let queued = self
            .conn
            .request_detached(&msg, RequestOptions::pinned(self.generation));
        if !queued {
            tracing::debug!(route = %self.route, "KV transaction dropped; background ROLLBACK not queued");
        }
    }
}

/// The parts of a transaction its requests need (cheap to clone: a
/// connection handle and a shared string).
#[derive(Clone)]
struct TxHandle {
    conn: Connection,
    route: Str,
    tx_id: u64,
    generation: Generation,
    retry: RetryPolicy,
}

impl TxHandle {
    /// A replay-safe read pinned to the transaction's session, retried a
    /// few times when the broker certainly did not act on it (see
    /// `crate::retry`). Never retried across a reconnect: the pin turns the
    /// next attempt into `Stale`.
    async fn read<M: Message, R: ReplyBody>(&self, msg: &M) -> Result<R> {
        let opts = RequestOptions::pinned(self.generation);
        let payload =
            crate::retry::replay_safe_raw(&self.retry, || self.conn.request_with(msg, opts))
                .await?;
        decode_body::<R>(payload)
    }
}

#[cfg(feature = "serde")]
mod json {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use super::Transaction;
    use crate::error::Result;

    impl Transaction {
        /// [`Transaction::get`], decoding the value as JSON. A value that is
        /// not JSON of type `T` is an
        /// [`ErrorKind::Decode`](crate::ErrorKind::Decode) error.
        ///
        /// # Cancel safety
        ///
        /// Cancel-safe. The transaction stays usable: a read already written still
        /// runs on the broker (it changes nothing) and its reply is discarded; the
        /// next call gets its own reply.
        pub async fn get_json<T: DeserializeOwned>(
            &mut self,
            key: impl AsRef<[u8]>,
        ) -> Result<Option<T>> {
            let key = key.as_ref();
            let Some(value) = self.get(key).await? else {
                return Ok(None);
            };
            let what = format_args!(
                "the value of {:?} in {}",
                String::from_utf8_lossy(key),
                self.route()
            );
            crate::json::decode(&value, what).map(Some)
        }

        /// [`Transaction::put`] with `value` encoded as JSON (a value that
        /// cannot be is an
        /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument)
        /// error, and nothing is sent).
        ///
        /// # Cancel safety
        ///
        /// Not cancel-safe: dropped after the request was written, the write may
        /// still be applied to the transaction (whole, never half) and the caller
        /// cannot tell which. The transaction stays usable; re-read what matters, or
        /// roll back. Dropped before it was written, nothing is sent.
        pub async fn put_json<T: Serialize + ?Sized>(
            &mut self,
            key: impl AsRef<[u8]>,
            value: &T,
        ) -> Result<()> {
            let body = crate::json::encode(value)?;
            self.put(key, body).await
        }

        /// [`Transaction::insert`] with `value` encoded as JSON.
        ///
        /// # Cancel safety
        ///
        /// Not cancel-safe: dropped after the request was written, the write may
        /// still be applied to the transaction (whole, never half) and the caller
        /// cannot tell which. The transaction stays usable; re-read what matters, or
        /// roll back. Dropped before it was written, nothing is sent.
        pub async fn insert_json<T: Serialize + ?Sized>(
            &mut self,
            key: impl AsRef<[u8]>,
            value: &T,
        ) -> Result<()> {
            let body = crate::json::encode(value)?;
            self.insert(key, body).await
        }
    }
}
