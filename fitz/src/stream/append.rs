//! Append sessions: BEGIN, APPEND, COMMIT, ROLLBACK (600–603).

use std::fmt;
use std::ops::RangeInclusive;

use bytes::Bytes;
use fitz_protocol::Str;
use fitz_protocol::stream::{self, AppendOk, BeginOk, CommitOk, RollbackOk};

use super::{Durability, fetch_metadata, validate_resource};
use crate::connection::{Connection, Generation, RequestOptions};
use crate::error::{Error, ErrorKind, Result};
use crate::retry::RetryPolicy;

/// How [`super::Streams::begin_with`] opens an append session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BeginOptions {
    /// Metadata for the whole batch (`None` or empty: none is sent).
    pub ingest_metadata: Option<Bytes>,
    /// The offset the first append must get: optimistic concurrency for a
    /// writer that knows which revision it built on (an event-sourced
    /// aggregate). When another writer got there first, the first append
    /// fails with [`codes::STREAM_CONCURRENCY_CONFLICT`](crate::codes::STREAM_CONCURRENCY_CONFLICT).
    ///
    /// `None` appends at the end: once the session holds the resource, its
    /// next offset is read with GET_METADATA (one more round trip). That is
    /// race-free, because the broker allows one append session per resource.
    pub expected_offset: Option<u64>,
}

impl BeginOptions {
    /// No metadata, append at the end.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`BeginOptions::ingest_metadata`].
    #[must_use]
    pub fn ingest_metadata(mut self, metadata: impl Into<Bytes>) -> Self {
        self.ingest_metadata = Some(metadata.into());
        self
    }

    /// Sets [`BeginOptions::expected_offset`].
    #[must_use]
    pub fn expected_offset(mut self, offset: u64) -> Self {
        self.expected_offset = Some(offset);
        self
    }
}

/// Per-record options of [`AppendSession::append_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendOptions {
    /// Opaque per-record metadata, returned with the record (`None` or
    /// empty: none).
    pub metadata: Option<Bytes>,
    /// An immutable tag that READ [`super::Filter`]s match (`None` or
    /// empty: none, which filters see as `""`).
    pub discriminator: Option<String>,
}

impl AppendOptions {
    /// Neither metadata nor discriminator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`AppendOptions::metadata`].
    #[must_use]
    pub fn metadata(mut self, metadata: impl Into<Bytes>) -> Self {
        self.metadata = Some(metadata.into());
        self
    }

    /// Sets [`AppendOptions::discriminator`].
    #[must_use]
    pub fn discriminator(mut self, discriminator: impl Into<String>) -> Self {
        self.discriminator = Some(discriminator.into());
        self
    }
}

/// What a commit published.
#[derive(Clone, PartialEq, Eq)]
pub struct CommitInfo {
    route: Str,
    offsets: Option<RangeInclusive<u64>>,
}

impl CommitInfo {
    /// The resource committed to.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// The resource offsets now visible; `None` for an empty commit.
    pub fn offsets(&self) -> Option<RangeInclusive<u64>> {
        self.offsets.clone()
    }

    /// Records committed.
    pub fn records(&self) -> u64 {
        self.offsets.as_ref().map_or(0, |r| r.end() - r.start() + 1)
    }
}

impl fmt::Debug for CommitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommitInfo")
            .field("route", &&*self.route)
            .field("offsets", &self.offsets)
            .finish()
    }
}

/// An open append session on one stream resource: the broker's exclusive
/// write lock on it plus a batch that becomes visible atomically on
/// [`AppendSession::commit`].
///
/// The session tracks the expected offset of the next append itself
/// ([`AppendSession::next_offset`]). It belongs to the connection session it
/// was opened on: after a reconnect every call fails with
/// [`ErrorKind::Stale`] (the broker already discarded the batch).
///
/// Dropping a session that was neither committed nor rolled back sends a
/// ROLLBACK in the background (best effort), so the resource is not left
/// locked; nothing of the batch becomes visible.
///
/// ```no_run
/// # async fn demo(client: fitz::Client) -> fitz::Result<()> {
/// use fitz::stream::{AppendOptions, Durability};
///
/// let mut session = client.stream().begin("stream://prod/orders/o-42").await?;
/// session.append(&b"created"[..]).await?;
/// session
///     .append_with(&b"paid"[..], AppendOptions::new().discriminator("payment"))
///     .await?;
/// let info = session.commit(Durability::Sync).await?;
/// println!("committed offsets {:?}", info.offsets());
/// # Ok(()) }
/// ```
pub struct AppendSession {
    conn: Connection,
    route: Str,
    session_id: u64,
    generation: Generation,
    first_offset: u64,
    next_offset: u64,
    /// Neither committed nor rolled back (as far as the broker may know):
    /// Drop rolls back.
    open: bool,
}

impl AppendSession {
    /// Opens a session (BEGIN) and settles its first offset.
    pub(super) async fn begin(
        conn: &Connection,
        retry: &RetryPolicy,
        route: &str,
        options: BeginOptions,
    ) -> Result<Self> {
        validate_resource(route)?;
        // Captured before BEGIN and pinned to it: a BEGIN that would land on
        // a later session fails instead of opening a lock we cannot use.
        let generation = conn.generation();
        let msg = stream::Begin {
            route: Str::from(route),
            ingest_metadata: options.ingest_metadata.filter(|m| !m.is_empty()),
        };
        let ok: BeginOk = conn
            .call_with(&msg, RequestOptions::pinned(generation))
            .await
            .map_err(Error::stale_as_not_sent)?;
        // From here on Drop rolls back, also if the probe below fails or
        // this future is dropped while it runs.
        let mut session = Self {
            conn: conn.clone(),
            route: msg.route,
            session_id: ok.session_id,
            generation,
            first_offset: 0,
            next_offset: 0,
            open: true,
        };
        let next = match options.expected_offset {
            Some(offset) => offset,
            None => fetch_metadata(conn, retry, &session.route)
                .await?
                .last_offset
                .map_or(0, |last| last.saturating_add(1)),
        };
        session.first_offset = next;
        session.next_offset = next;
        Ok(session)
    }

    /// The resource this session appends to.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// The offset the next append will get (the OCC `expected_offset`).
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// False once the connection session it was opened on has ended: every
    /// call would fail with [`ErrorKind::Stale`] (the broker has already
    /// discarded the batch and released the resource).
    pub fn is_current(&self) -> bool {
        self.conn.check_generation(self.generation).is_ok()
    }

    /// Records appended in this session so far.
    pub fn appended(&self) -> u64 {
        self.next_offset - self.first_offset
    }

    /// Appends one record to the batch; returns its resource offset.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe, but never duplicating: dropped after the APPEND was
    /// written, the record may be in the batch while
    /// [`AppendSession::next_offset`] did not move, so the next append fails with
    /// [`codes::STREAM_CONCURRENCY_CONFLICT`](crate::codes::STREAM_CONCURRENCY_CONFLICT)
    /// instead of adding it twice; roll back and start over. A commit is always
    /// of whole records.
    pub async fn append(&mut self, body: impl Into<Bytes>) -> Result<u64> {
        self.append_with(body, AppendOptions::default()).await
    }

    /// Appends one record with metadata and/or a discriminator.
    ///
    /// A [`codes::STREAM_CONCURRENCY_CONFLICT`](crate::codes::STREAM_CONCURRENCY_CONFLICT)
    /// error means the resource's next offset is not
    /// [`AppendSession::next_offset`] (another writer committed first, with
    /// an explicit [`BeginOptions::expected_offset`]); roll back, re-read
    /// and start over. After a failure whose
    /// [`Error::maybe_applied`] is true the record may be in the batch: the
    /// next append then fails with that conflict rather than duplicating it.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe, but never duplicating: dropped after the APPEND was
    /// written, the record may be in the batch while
    /// [`AppendSession::next_offset`] did not move, so the next append fails with
    /// [`codes::STREAM_CONCURRENCY_CONFLICT`](crate::codes::STREAM_CONCURRENCY_CONFLICT)
    /// instead of adding it twice; roll back and start over. A commit is always
    /// of whole records.
    pub async fn append_with(
        &mut self,
        body: impl Into<Bytes>,
        options: AppendOptions,
    ) -> Result<u64> {
        let expected = self.next_offset;
        let msg = stream::Append {
            session_id: self.session_id,
            expected_offset: expected,
            body: body.into(),
            metadata: options.metadata.filter(|m| !m.is_empty()),
            discriminator: options
                .discriminator
                .filter(|d| !d.is_empty())
                .map(Str::from),
        };
        let ok: AppendOk = self
            .conn
            .call_with(&msg, RequestOptions::pinned(self.generation))
            .await?;
        // OCC success means the record got `expected`; the reply data is
        // broker-defined, so it is only cross-checked, never trusted.
        if let Some(reported) = ok.leading_u64()
            && reported != expected
        {
            tracing::debug!(
                route = &*self.route,
                expected,
                reported,
                "APPEND reply data does not lead with the expected offset"
            );
        }
        self.next_offset = expected.saturating_add(1);
        Ok(expected)
    }

    /// [`AppendSession::append`] with `value` encoded as JSON (a value that
    /// cannot be is an
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument)
    /// error, and nothing is sent).
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe, but never duplicating: dropped after the APPEND was
    /// written, the record may be in the batch while
    /// [`AppendSession::next_offset`] did not move, so the next append fails with
    /// [`codes::STREAM_CONCURRENCY_CONFLICT`](crate::codes::STREAM_CONCURRENCY_CONFLICT)
    /// instead of adding it twice; roll back and start over. A commit is always
    /// of whole records.
    #[cfg(feature = "serde")]
    pub async fn append_json<T: serde::Serialize + ?Sized>(&mut self, value: &T) -> Result<u64> {
        self.append(crate::json::encode(value)?).await
    }

    /// Publishes the batch atomically (COMMIT) and ends the session. With
    /// [`Durability::Sync`] the broker has it on stable storage first.
    ///
    /// When this fails with [`Error::maybe_applied`] true, the batch may be
    /// visible: check with [`super::Streams::metadata`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe as far as atomicity goes: dropped before COMMIT was written,
    /// the batch is rolled back in the background (as on any drop); dropped after,
    /// the broker publishes the whole batch or nothing, and the caller does not
    /// learn which (see [`super::Streams::metadata`]).
    pub async fn commit(mut self, durability: Durability) -> Result<CommitInfo> {
        let msg = stream::Commit {
            session_id: self.session_id,
            durability,
        };
        match self
            .conn
            .call_with::<_, CommitOk>(&msg, RequestOptions::pinned(self.generation))
            .await
        {
            Ok(_) => {
                self.open = false;
                Ok(CommitInfo {
                    route: self.route.clone(),
                    offsets: (self.next_offset > self.first_offset)
                        .then(|| self.first_offset..=self.next_offset - 1),
                })
            }
            Err(e) => {
                // Only a COMMIT that never reached the broker leaves the
                // session open for Drop to roll back; rolling back behind a
                // COMMIT in flight could race it.
                if reached_broker(&e) {
                    self.open = false;
                }
                Err(e)
            }
        }
    }

    /// Discards the batch (ROLLBACK) and ends the session.
    ///
    /// A session from an earlier connection session is already gone on the
    /// broker: rolling it back succeeds without sending anything.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropped before the answer, the session's `Drop` sends the
    /// ROLLBACK in the background instead.
    pub async fn rollback(mut self) -> Result<()> {
        let msg = stream::Rollback {
            session_id: self.session_id,
        };
        self.open = false;
        match self
            .conn
            .call_with::<_, RollbackOk>(&msg, RequestOptions::pinned(self.generation))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::Stale => Ok(()),
            Err(e) => {
                // Not sent (local backpressure …): Drop tries once more.
                self.open = !reached_broker(&e);
                Err(e)
            }
        }
    }
}

/// The request was written (or answered): its outcome is the broker's.
fn reached_broker(e: &Error) -> bool {
    e.maybe_applied() || e.kind() == ErrorKind::Broker
}

impl Drop for AppendSession {
    fn drop(&mut self) {
        if self.open {
            let queued = self.conn.request_detached(
                &stream::Rollback {
                    session_id: self.session_id,
                },
                RequestOptions::pinned(self.generation),
            );
            tracing::trace!(
                route = &*self.route,
                queued,
                "append session dropped: rollback"
            );
        }
    }
}

impl fmt::Debug for AppendSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppendSession")
            .field("route", &&*self.route)
            .field("next_offset", &self.next_offset)
            .field("appended", &self.appended())
            .finish()
    }
}
