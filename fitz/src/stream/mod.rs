//! Stream: durable append-only logs (types 600–609).
//!
//! A stream *resource* is a concrete `stream://realm/area/resource` route.
//! Writers open an [`AppendSession`] (one per resource at a time), append
//! records and commit them atomically; every record gets a resource offset
//! (consecutive from 0) and, at commit, area, realm and global offsets in
//! commit order. Readers page over a *selector*: the exact resource or one
//! of nine wildcard shapes, each paging by one axis ([`SelectorScope`]):
//!
//! | selector | axis |
//! |---|---|
//! | `stream://R/A/X` | resource |
//! | `stream://R/A/*` | area |
//! | `stream://R/*/X`, `stream://R/*/*`, `stream://R/**` | realm |
//! | `stream://*/A/X`, `stream://*/A/*`, `stream://*/*/X`, `stream://*/*/*`, `stream://**` | global |
//!
//! The broker keeps no consumer cursors: readers store the offset to resume
//! from ([`ReadPage::next_offset`], [`StreamReader::next_offset`]).
//!
//! * [`Streams::read_page`]: one READ.
//! * [`Streams::read`] / [`Streams::read_pages`]: replay from an offset until
//!   caught up, following pages (and the broker's global continuation) and
//!   failing on a stalled broker.
//! * [`Streams::follow`] / [`Streams::follow_pages`]: subscribe first, then
//!   replay, then keep reading whenever a commit is notified or the
//!   connection was re-established.
//! * [`Streams::subscribe`]: raw commit notifications ([`CommitEvent`]).
//!
//! READ, LAST and GET_METADATA are retried (three attempts at most) on
//! retryable failures: they change nothing on the broker.
//!
//! ```no_run
//! # async fn demo(client: fitz::Client) -> fitz::Result<()> {
//! use futures_util::StreamExt;
//! use fitz::stream::{Durability, ReadOptions};
//!
//! let streams = client.stream();
//! let mut session = streams.begin("stream://prod/orders/o-1").await?;
//! session.append(&b"created"[..]).await?;
//! session.commit(Durability::Sync).await?;
//!
//! let mut reader = streams.follow("stream://prod/orders/*", 0, ReadOptions::new()).await?;
//! while let Some(item) = reader.next().await {
//!     let item = item?;
//!     println!("{}: {item:?}", item.route());
//! }
//! # Ok(()) }
//! ```

mod append;
mod event;
mod filter;
mod read;
mod reader;
use crate::retry::{self, RetryPolicy};

use std::fmt;

use bytes::Bytes;
use fitz_protocol::route::{self, Scheme};
use fitz_protocol::stream::{self as wire, LastOk, MetadataOk, ReadOk};
use fitz_protocol::{Reader, Str, decode_reply_with, types};

use crate::connection::{
    Connection, Registration, RegistrationSpec, decode_body, record_with_payload,
};
use crate::error::{Error, Result};
use crate::options::{Overflow, SubscriptionOptions};

pub use append::{AppendOptions, AppendSession, BeginOptions, CommitInfo};
pub use event::{CommitEvent, Committed, StreamSubscription, WatermarkAdvanced};
pub use filter::Filter;
/// Commit persistence: [`Durability::Buffered`] or [`Durability::Sync`]
/// (the same type as KV's).
pub use fitz_protocol::kv::Durability;
/// The axis a selector pages by.
pub use fitz_protocol::route::SelectorScope;
/// Why a READ withheld records.
pub use fitz_protocol::stream::FilterReason;
pub use read::{
    DEFAULT_READ_LIMIT, Filtered, PageCursor, ReadOptions, ReadPage, ReadPosition, StreamItem,
    StreamRecord,
};
pub use reader::{ReadPages, StreamReader};

use reader::{Follow, Pager};

static WATCH: RegistrationSpec = RegistrationSpec {
    name: "stream subscription",
    subscribe_type: types::STREAM_SUBSCRIBE,
    notify_type: Some(types::STREAM_NOTIFY),
    ack: subscribe_ack,
    // Stream unsubscribes by the original selector.
    unsubscribe: |_, payload| record_with_payload(types::STREAM_UNSUBSCRIBE, payload),
};

/// Buffer of the wake-up subscription behind a follow: it only needs to
/// know that *something* was committed, so old wakes may go.
const FOLLOW_WAKES: SubscriptionOptions = SubscriptionOptions {
    buffer: 64,
    overflow: Overflow::DropOldest,
};

/// The Stream domain of a [`crate::Client`] (see [`crate::Client::stream`]).
#[derive(Clone)]
pub struct Streams {
    conn: Connection,
    retry: RetryPolicy,
}

impl fmt::Debug for Streams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Streams")
    }
}

/// Resource metadata ([`Streams::metadata`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StreamMetadata {
    /// First retained offset (`None`: nothing retained).
    pub first_offset: Option<u64>,
    /// Last committed offset (`None`: nothing committed).
    pub last_offset: Option<u64>,
    /// Records retained.
    pub record_count: u64,
    /// Most records one append session may hold.
    pub max_batch_events: u64,
    /// Most bytes one append session may hold.
    pub max_batch_bytes: u64,
    /// Record retention, if any.
    pub ttl_seconds: Option<u64>,
    /// Area offsets committed so far (the area's watermark).
    pub area_watermark: u64,
    /// Realm offsets committed so far (the realm's watermark).
    pub realm_watermark: u64,
}

impl StreamMetadata {
    /// The offset the next appended record gets.
    pub fn next_offset(&self) -> u64 {
        self.last_offset.map_or(0, |last| last.saturating_add(1))
    }
}

impl Streams {
    pub(crate) fn new(conn: Connection) -> Self {
        let retry = conn.shared().config.retry;
        Self { conn, retry }
    }

    /// This view with `policy` for its replay-safe reads (READ pages, LAST, GET_METADATA, also the one in `begin`) instead
    /// of the client's [`crate::ClientBuilder::retry`]. Cheap: a clone of
    /// the handle.
    pub fn with_retry(&self, policy: RetryPolicy) -> Self {
        Self {
            conn: self.conn.clone(),
            retry: policy,
        }
    }

    // ----- writing -----

    /// Opens an append session on the concrete resource `route`, appending
    /// at its end (see [`BeginOptions::expected_offset`]).
    ///
    /// Only one append session per resource exists at a time: while another
    /// is open this fails with
    /// [`codes::STREAM_SESSION_ACTIVE`](crate::codes::STREAM_SESSION_ACTIVE).
    /// The end is read with GET_METADATA, which needs read permission on the
    /// route; a write-only credential uses [`Streams::begin_at`].
    ///
    /// Cancelling this future after BEGIN was sent but before it returned
    /// (or a BEGIN that timed out after it was written) may leave the
    /// resource locked until the connection ends.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped after BEGIN was written but before the session
    /// handle exists, the broker may keep the append session (and the resource
    /// locked) until the connection session ends. Once the handle exists (during
    /// the GET_METADATA probe) a drop rolls it back in the background.
    pub async fn begin(&self, route: &str) -> Result<AppendSession> {
        AppendSession::begin(&self.conn, &self.retry, route, BeginOptions::default()).await
    }

    /// [`Streams::begin`] expecting the first append to get `offset`
    /// (optimistic concurrency), without the GET_METADATA probe.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped after BEGIN was written but before the session
    /// handle exists, the broker may keep the append session (and the resource
    /// locked) until the connection session ends. Once the handle exists (during
    /// the GET_METADATA probe) a drop rolls it back in the background.
    pub async fn begin_at(&self, route: &str, offset: u64) -> Result<AppendSession> {
        let options = BeginOptions::new().expected_offset(offset);
        AppendSession::begin(&self.conn, &self.retry, route, options).await
    }

    /// [`Streams::begin`] with ingest metadata and/or an expected offset.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped after BEGIN was written but before the session
    /// handle exists, the broker may keep the append session (and the resource
    /// locked) until the connection session ends. Once the handle exists (during
    /// the GET_METADATA probe) a drop rolls it back in the background.
    pub async fn begin_with(&self, route: &str, options: BeginOptions) -> Result<AppendSession> {
        AppendSession::begin(&self.conn, &self.retry, route, options).await
    }

    // ----- reading -----

    /// One READ page of `selector` from `from` (an offset, or
    /// [`ReadPage::next_position`] of the previous page to continue it).
    ///
    /// Reading past the committed end is an empty, caught-up page. A page
    /// with an item whose route is not a concrete stream route fails whole.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe. Dropping the future abandons the read: nothing changed on
    /// the broker, a request already written is still answered and that reply is
    /// discarded (it never reaches another call), and nothing leaks.
    pub async fn read_page(
        &self,
        selector: &str,
        from: impl Into<ReadPosition>,
        options: &ReadOptions,
    ) -> Result<ReadPage> {
        let spec = read::ReadSpec::new(selector, options)?;
        fetch_page(&self.conn, &self.retry, &spec, from.into()).await
    }

    /// Replays `selector` from offset `from` until caught up, item by item.
    /// The selector is checked now; the READs run as the reader is polled.
    pub fn read(&self, selector: &str, from: u64, options: ReadOptions) -> Result<StreamReader> {
        let spec = read::ReadSpec::new(selector, &options)?;
        let scope = spec.scope;
        let pager = Pager::new(self.conn.clone(), self.retry, spec, from, None);
        Ok(StreamReader::new(pager, selector.to_owned(), scope, from))
    }

    /// [`Streams::read`], page by page.
    pub fn read_pages(&self, selector: &str, from: u64, options: ReadOptions) -> Result<ReadPages> {
        let spec = read::ReadSpec::new(selector, &options)?;
        let pager = Pager::new(self.conn.clone(), self.retry, spec, from, None);
        Ok(ReadPages::new(pager, selector.to_owned()))
    }

    /// Follows `selector` from offset `from`: subscribes to its commits
    /// first (so none is missed), replays until caught up, then reads again
    /// whenever a commit is notified or the connection was re-established.
    ///
    /// The reader never ends on its own; it yields a last error when a READ
    /// fails (after retries), the subscription cannot be restored after a
    /// reconnect, or the client closes. Dropping it unsubscribes.
    ///
    /// Notifications only wake the reader, so its subscription buffers the
    /// newest 64 and drops older ones ([`Overflow::DropOldest`]; a long
    /// catch-up may report [`crate::Event::SlowConsumer`] for it): one READ
    /// covers any number of them.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe. Dropped before it resolves, its subscription is removed
    /// (see the subscribe methods); nothing was read yet.
    pub async fn follow(
        &self,
        selector: &str,
        from: u64,
        options: ReadOptions,
    ) -> Result<StreamReader> {
        let spec = read::ReadSpec::new(selector, &options)?;
        let scope = spec.scope;
        let pager = self.follow_pager(spec, from).await?;
        Ok(StreamReader::new(pager, selector.to_owned(), scope, from))
    }

    /// [`Streams::follow`], page by page.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe. Dropped before it resolves, its subscription is removed
    /// (see the subscribe methods); nothing was read yet.
    pub async fn follow_pages(
        &self,
        selector: &str,
        from: u64,
        options: ReadOptions,
    ) -> Result<ReadPages> {
        let spec = read::ReadSpec::new(selector, &options)?;
        let pager = self.follow_pager(spec, from).await?;
        Ok(ReadPages::new(pager, selector.to_owned()))
    }

    async fn follow_pager(&self, spec: read::ReadSpec, from: u64) -> Result<Pager> {
        let mut state = self.conn.state();
        state.borrow_and_update();
        let reg = Registration::new(
            &WATCH,
            &wire::Subscribe::new(spec.selector.clone()),
            |_| Ok(()),
            FOLLOW_WAKES,
        )?;
        let wake = self.conn.register(reg).await?;
        let follow = Follow {
            wake,
            state,
            read_generation: self.conn.generation(),
            failed: None,
        };
        Ok(Pager::new(
            self.conn.clone(),
            self.retry,
            spec,
            from,
            Some(follow),
        ))
    }

    /// The last committed record of the concrete resource `route`, if any.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe. Dropping the future abandons the read: nothing changed on
    /// the broker, a request already written is still answered and that reply is
    /// discarded (it never reaches another call), and nothing leaks.
    pub async fn last(&self, route: &str) -> Result<Option<StreamRecord>> {
        validate_resource(route)?;
        let msg = wire::Last::new(route);
        let ok: LastOk = retry::replay_safe(&self.retry, || self.conn.call(&msg)).await?;
        Ok(ok
            .record
            .map(|rec| StreamRecord::from_wire(msg.route.clone(), rec)))
    }

    /// Offsets, counts, limits and watermarks of the concrete resource
    /// `route` (an unknown resource reads as empty).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe. Dropping the future abandons the read: nothing changed on
    /// the broker, a request already written is still answered and that reply is
    /// discarded (it never reaches another call), and nothing leaks.
    pub async fn metadata(&self, route: &str) -> Result<StreamMetadata> {
        validate_resource(route)?;
        fetch_metadata(&self.conn, &self.retry, &Str::from(route)).await
    }

    // ----- watching -----

    /// Subscribes to commit notifications of every resource `selector`
    /// matches, with the client's default buffering.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe. Dropped before it resolves, no registration is left behind:
    /// the handle under construction unsubscribes in the background, or is never
    /// installed when the connection task had not handled it yet.
    pub async fn subscribe(&self, selector: &str) -> Result<StreamSubscription> {
        let options = self.conn.shared().config.subscription;
        self.subscribe_with(selector, options).await
    }

    /// [`Streams::subscribe`] with explicit buffering for this subscription.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe. Dropped before it resolves, no registration is left behind:
    /// the handle under construction unsubscribes in the background, or is never
    /// installed when the connection task had not handled it yet.
    pub async fn subscribe_with(
        &self,
        selector: &str,
        options: SubscriptionOptions,
    ) -> Result<StreamSubscription> {
        route::stream_selector(selector).map_err(Error::route)?;
        let reg = Registration::new(
            &WATCH,
            &wire::Subscribe::new(selector),
            event::decode_notify,
            options,
        )?;
        let inner = self.conn.register(reg).await?;
        Ok(StreamSubscription::new(inner, selector.to_owned()))
    }
}

/// A concrete `stream://realm/area/resource` route (BEGIN, LAST, GET_METADATA).
pub(crate) fn validate_resource(route: &str) -> Result<()> {
    route::validate_concrete(route, Scheme::Stream)
        .map(drop)
        .map_err(Error::route)
}

/// One READ (retried while replay-safe), decoded for the selector's scope.
async fn fetch_page(
    conn: &Connection,
    policy: &RetryPolicy,
    spec: &read::ReadSpec,
    at: ReadPosition,
) -> Result<ReadPage> {
    let msg = at.read_request(spec);
    retry::replay_safe(policy, || async {
        let ok: ReadOk = decode_body(conn.request(&msg).await?)?;
        ReadPage::decode(ok.data, spec.scope, at)
    })
    .await
}

async fn fetch_metadata(
    conn: &Connection,
    policy: &RetryPolicy,
    route: &Str,
) -> Result<StreamMetadata> {
    let msg = wire::GetMetadata::new(route.clone());
    let ok: MetadataOk = retry::replay_safe(policy, || conn.call(&msg)).await?;
    let m = ok.metadata;
    Ok(StreamMetadata {
        first_offset: m.first_offset,
        last_offset: m.last_offset,
        record_count: m.record_count,
        max_batch_events: m.max_batch_events,
        max_batch_bytes: m.max_batch_bytes,
        ttl_seconds: m.ttl_seconds,
        area_watermark: m.area_watermark,
        realm_watermark: m.realm_watermark,
    })
}

/// SUBSCRIBE reply `[0][u8 1][u64 sub_id]`, with or without the trailing
/// `bytes data` some brokers add.
fn subscribe_ack(payload: Bytes) -> Result<Option<u64>> {
    let decoded = decode_reply_with(payload, |r: &mut Reader| {
        let id = r.opt(Reader::u64)?;
        if !r.is_empty() {
            r.bytes()?;
        }
        Ok(id)
    });
    match decoded {
        Ok(Ok(Some(id))) => Ok(Some(id)),
        Ok(Ok(None)) => Err(Error::protocol(
            "stream SUBSCRIBE acknowledged without a subscription id",
        )),
        Ok(Err(e)) => Err(Error::broker(&e)),
        Err(e) => Err(Error::malformed_reply(e)),
    }
}

#[cfg(test)]
mod tests;
