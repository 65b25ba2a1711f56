//! Feeds: checkpointed stream consumers with gap detection (the types are
//! re-exported from [`crate::sync`]).
//!
//! A [`Feed`] reads a stream selector (an exact resource or a wildcard,
//! with an optional server-side [`Filter`] on the aspect) from a cursor kept
//! in a [`LocalStore`]. Its handler gets each record as a typed
//! [`Envelope`] and a [`FeedTx`]; the handler's local writes and the cursor
//! moving past the record are one [`LocalStore::apply`] batch, so local
//! application is exactly once across reconnects, crashes and restarts
//! (effects outside the store are at-least-once).
//!
//! # Gaps are never skipped silently
//!
//! Offsets are contiguous, so a feed can tell when it missed something; it
//! reports a typed [`Gap`] (as a [`FeedEvent`] and to the caller's policy,
//! [`FeedBuilder::on_gap`]), which stops it ([`GapAction::Stop`], the
//! default) or lets it go on:
//!
//! * [`Gap::Rewound`]: checked whenever the feed starts and after every
//!   reconnect, before its first READ there. For an exact resource the
//!   cursor is beyond the stream's next offset (GET_METADATA); for every
//!   selector, the record the feed applied last is read again at its offset
//!   and must have the stored digest. The broker announces no incarnation,
//!   so the digest is what tells a memory broker that restarted and has
//!   since been written *past* the old cursor.
//! * [`Gap::Truncated`]: the first record read lies beyond the cursor
//!   (retention dropped what was between). Detected on *dense* selectors,
//!   whose axis every record of the page belongs to: an exact resource,
//!   `R/A/*`, `R/*/*` (`R/**`) and `*/*/*` (`**`). Narrower wildcards
//!   (`R/*/X`, `*/A/*` …) skip other routes' offsets by design, so an axis
//!   jump there proves nothing.
//! * [`Gap::Withheld`]: a READ marker for records the broker withheld for a
//!   reason other than the feed's own filter (permission, projection,
//!   unspecified). Records the feed's filter excludes are skipped: that is
//!   what the filter asked for.
//!
//! The embedded broker (`fitz-broker`) keeps no retention and refuses a
//! READ the token may not make whole rather than filtering it, so it
//! produces neither `Truncated` nor `Withheld`; the unit tests script both
//! on the wire.

mod envelope;
mod tx;

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

use super::SyncError;
use super::store::{LocalStore, StoreOp, Table};
use crate::connection::Generation;
use crate::options::{Overflow, SubscriptionOptions, full_jitter};
use crate::stream::{
    FilterReason, ReadOptions, ReadPage, ReadPosition, SelectorScope, StreamItem,
    StreamSubscription,
};
use crate::{Client, Error, ErrorKind, State};

pub use envelope::{Envelope, EnvelopeMeta, Publisher};
pub use tx::{FeedTx, app_key};

use super::store::open_identity;
use crate::stream::Filter;
use tx::{Applied, CursorRecord, blocking, digest};

/// How many [`FeedEvent`]s a receiver may fall behind before it misses some
/// (it then sees `RecvError::Lagged`; the feed never waits for receivers).
const EVENT_BUFFER: usize = 1024;

/// The wake-up subscription: only "something was committed" matters.
const WAKES: SubscriptionOptions = SubscriptionOptions {
    buffer: 64,
    overflow: Overflow::DropOldest,
};

const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Something a feed missed, with the offsets involved.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Gap {
    /// The broker's log no longer holds what the feed applied: its cursor is
    /// beyond the stream's next offset, or the record it applied last is
    /// gone or different (a memory broker restarted, buffered commits were
    /// lost).
    Rewound {
        /// The feed's cursor (next offset on the selector's axis).
        cursor: u64,
        /// The stream's next offset, when the feed could read it (exact
        /// resources).
        broker_next: Option<u64>,
        /// `route#offset` of the applied record that no longer matches, when
        /// that is how the rewind was found.
        last_applied: Option<String>,
    },
    /// Records between the cursor and the first one the broker still has
    /// are gone (retention).
    Truncated {
        /// The route of the first available record.
        route: String,
        /// The feed's cursor (axis offset).
        cursor: u64,
        /// The axis offset of the first available record.
        first_available: u64,
    },
    /// Records the broker withheld from this feed (not for its filter).
    Withheld {
        /// Their route.
        route: String,
        /// The first withheld axis offset.
        first: u64,
        /// The last withheld axis offset.
        last: u64,
        /// Why the broker withheld them.
        reason: FilterReason,
    },
}

/// What a feed does about a [`Gap`] (the policy's answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapAction {
    /// Stop: [`Feed::run`] returns [`FeedError::Gap`]; the cursor stays
    /// before the gap, so running again reports it again.
    Stop,
    /// Accept it and go on: past withheld records, from the first available
    /// record after a truncation, and after a rewind from the smaller of the
    /// cursor and the broker's next offset (the stored digest is dropped).
    Continue,
    /// Move the cursor to this axis offset and read from there (after a
    /// rewind, `ResumeAt(0)` replays the broker's new log).
    ResumeAt(u64),
}

/// What a feed reports as it works.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FeedEvent {
    /// A gap was found and the policy answered `action`.
    Gap {
        /// The gap.
        gap: Gap,
        /// What the feed does about it.
        action: GapAction,
    },
    /// The feed applied everything the broker had; its cursor is `cursor`.
    CaughtUp {
        /// The stored cursor.
        cursor: u64,
    },
}

/// Why a feed stopped.
#[derive(Debug)]
#[non_exhaustive]
pub enum FeedError {
    /// The local store failed, or the arguments were invalid.
    Store(SyncError),
    /// A broker or client error that retrying will not fix (closed client,
    /// unauthorized selector …). Transient failures are retried.
    Fitz(Error),
    /// A gap the policy said to stop at.
    Gap(Gap),
    /// A record whose body is not JSON of the feed's type; nothing of it was
    /// applied and the cursor stays before it.
    Decode {
        /// Its route.
        route: String,
        /// Its resource offset.
        offset: u64,
        /// The decoder's message.
        error: String,
    },
    /// The handler refused a record; nothing of it was applied.
    Handler(String),
}

impl From<SyncError> for FeedError {
    fn from(e: SyncError) -> Self {
        FeedError::Store(e)
    }
}

impl From<Error> for FeedError {
    fn from(e: Error) -> Self {
        FeedError::Fitz(e)
    }
}

impl fmt::Display for FeedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeedError::Store(e) => write!(f, "feed store: {e}"),
            FeedError::Fitz(e) => write!(f, "feed: {e}"),
            FeedError::Gap(g) => write!(f, "feed stopped at a gap: {g:?}"),
            FeedError::Decode {
                route,
                offset,
                error,
            } => write!(f, "feed record {route}#{offset} does not decode: {error}"),
            FeedError::Handler(m) => write!(f, "feed handler failed: {m}"),
        }
    }
}

impl std::error::Error for FeedError {}

type Policy = Arc<dyn Fn(&Gap) -> GapAction + Send + Sync>;

/// Configures and opens a [`Feed`].
pub struct FeedBuilder<T> {
    client: Client,
    store: Arc<dyn LocalStore>,
    name: String,
    selector: String,
    options: ReadOptions,
    start: u64,
    policy: Policy,
    _body: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for FeedBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeedBuilder")
            .field("name", &self.name)
            .field("selector", &self.selector)
            .finish_non_exhaustive()
    }
}

impl<T> FeedBuilder<T> {
    /// The server-side filter on the aspect (discriminator). Records it
    /// excludes are skipped without a gap.
    pub fn filter(mut self, filter: Filter) -> Self {
        self.options.filter = filter;
        self
    }

    /// Records per READ page (default 256), which is also the most records
    /// committed locally as one batch.
    pub fn page_limit(mut self, limit: u64) -> Self {
        self.options.limit = limit.max(1);
        self
    }

    /// Where a feed with no stored cursor starts (default 0).
    pub fn start_at(mut self, offset: u64) -> Self {
        self.start = offset;
        self
    }

    /// The gap policy: called with every [`Gap`] (after it is sent as a
    /// [`FeedEvent`]); the default stops at every gap.
    pub fn on_gap(mut self, policy: impl Fn(&Gap) -> GapAction + Send + Sync + 'static) -> Self {
        self.policy = Arc::new(policy);
        self
    }

    /// Opens the feed: checks the store's format version (as the outbox
    /// does) and reads the feed's cursor.
    ///
    /// Errors: [`SyncError::InvalidArgument`] for an empty name, an invalid
    /// selector, or a name whose stored cursor belongs to another selector;
    /// [`SyncError::Version`] / [`SyncError::Store`] from the store.
    pub async fn open(self) -> Result<Feed<T>, SyncError> {
        if self.name.is_empty() {
            return Err(SyncError::InvalidArgument("a feed needs a name".into()));
        }
        let scope = fitz_protocol::route::stream_selector(&self.selector)
            .map_err(|e| SyncError::InvalidArgument(format!("{}: {e}", self.selector)))?;
        let key = self.name.clone().into_bytes();
        let (client_id, stored) = blocking(&self.store, move |s| {
            let id = open_identity(s)?;
            let rec = s.get(Table::FeedCursor, &key)?;
            Ok((id, rec.map(|b| CursorRecord::decode(&b)).transpose()?))
        })
        .await?;
        let state = match stored {
            Some(rec) if rec.selector != self.selector => {
                return Err(SyncError::InvalidArgument(format!(
                    "feed {:?} reads {}, not {}",
                    self.name, rec.selector, self.selector
                )));
            }
            Some(rec) => rec,
            None => CursorRecord {
                selector: self.selector.clone(),
                cursor: self.start,
                last: None,
            },
        };
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Ok(Feed {
            dense: is_dense(&self.selector, scope),
            position: ReadPosition::at(state.cursor),
            client: self.client,
            store: self.store,
            name: self.name,
            selector: self.selector,
            scope,
            options: self.options,
            policy: self.policy,
            client_id,
            state,
            events,
            verified: None,
            wake: None,
            inflight: None,
            _body: PhantomData,
        })
    }
}

/// Does every record on the selector's axis belong to the selector?
fn is_dense(selector: &str, scope: SelectorScope) -> bool {
    let path = selector.strip_prefix("stream://").unwrap_or_default();
    let wild = |s: &&str| *s == "*" || *s == "**";
    match scope {
        SelectorScope::Resource | SelectorScope::Area => true,
        SelectorScope::Realm => path.split('/').skip(1).all(|s| wild(&s)),
        _ => path.split('/').all(|s| wild(&s)),
    }
}

/// A checkpointed consumer of a stream selector (see the module docs).
///
/// ```no_run
/// # async fn demo(client: fitz::Client) -> Result<(), Box<dyn std::error::Error>> {
/// use fitz::sync::{Feed, RedbStore};
///
/// #[derive(serde::Deserialize)]
/// struct Order { total: u64 }
///
/// let mut feed = Feed::<Order>::builder(client, RedbStore::open("app.db")?, "totals",
///     "stream://shop/orders/*").open().await?;
/// feed.run(|tx, order| Box::pin(async move {
///     let sum: u64 = tx.get("sums", "all").await?
///         .and_then(|v| String::from_utf8(v).ok()?.parse().ok()).unwrap_or(0);
///     tx.put("sums", "all", (sum + order.body.total).to_string())?;
///     Ok(())
/// })).await?; // runs until a gap the policy stops at, or a permanent error
/// # Ok(()) }
/// ```
pub struct Feed<T> {
    client: Client,
    store: Arc<dyn LocalStore>,
    name: String,
    selector: String,
    scope: SelectorScope,
    dense: bool,
    options: ReadOptions,
    policy: Policy,
    client_id: String,
    /// The stored state, as last applied.
    state: CursorRecord,
    /// Where the next READ starts (the stored cursor, with a global
    /// continuation while one is running).
    position: ReadPosition,
    events: broadcast::Sender<FeedEvent>,
    /// The session generation the broker's log was last verified on.
    verified: Option<Generation>,
    wake: Option<StreamSubscription>,
    /// The store batch being applied (kept across a cancelled run).
    inflight: Option<tokio::task::JoinHandle<Result<(), SyncError>>>,
    _body: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Feed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Feed")
            .field("name", &self.name)
            .field("selector", &self.selector)
            .field("cursor", &self.state.cursor)
            .finish_non_exhaustive()
    }
}

/// What [`Feed::apply_page`] leaves the loop to do.
enum Next {
    /// The page is done.
    Done,
    /// The cursor was moved by a policy: read again from it.
    Reread,
}

impl<T: DeserializeOwned + Send + 'static> Feed<T> {
    /// A builder for the feed `name` (its key in the store: one cursor per
    /// name) over `selector`.
    pub fn builder(
        client: Client,
        store: impl LocalStore,
        name: impl Into<String>,
        selector: impl Into<String>,
    ) -> FeedBuilder<T> {
        Self::builder_shared(client, Arc::new(store), name, selector)
    }

    /// [`Feed::builder`] with a store shared with others (an outbox, other
    /// feeds).
    pub fn builder_shared(
        client: Client,
        store: Arc<dyn LocalStore>,
        name: impl Into<String>,
        selector: impl Into<String>,
    ) -> FeedBuilder<T> {
        FeedBuilder {
            client,
            store,
            name: name.into(),
            selector: selector.into(),
            options: ReadOptions::new(),
            start: 0,
            policy: Arc::new(|_| GapAction::Stop),
            _body: PhantomData,
        }
    }

    /// The feed's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The selector it reads.
    pub fn selector(&self) -> &str {
        &self.selector
    }

    /// The stored cursor: the next offset on the selector's axis.
    pub fn cursor(&self) -> u64 {
        self.state.cursor
    }

    /// The store's client id (shared with an outbox on the same store).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The feed's events from now on (bounded: a slow receiver lags).
    pub fn events(&self) -> broadcast::Receiver<FeedEvent> {
        self.events.subscribe()
    }

    /// Applies records until everything the broker has is applied, then
    /// returns. See [`Feed::run`] for the handler and the errors.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a batch is applied to the store whole or not at all. A
    /// batch whose apply was under way when the future was dropped still
    /// completes; the next run waits for it and resumes from the cursor the
    /// store holds, so its records are handled again only if it was not
    /// applied.
    pub async fn catch_up<F>(&mut self, handler: F) -> Result<(), FeedError>
    where
        F: for<'a> FnMut(&'a mut FeedTx, Envelope<T>) -> BoxFuture<'a, Result<(), FeedError>>
            + Send,
    {
        self.drive(handler, false).await
    }

    /// Applies records as they are committed, forever: returns only at a gap
    /// the policy stops at ([`FeedError::Gap`]), a record that does not
    /// decode, a handler error, or an error that retrying cannot fix.
    /// Connection failures are waited out and the feed resumes from its
    /// cursor (verified against the broker first, see [`Gap::Rewound`]).
    ///
    /// The handler runs once per record (again only if the process dies
    /// before the batch is applied); its [`FeedTx`] writes are applied with
    /// the cursor.
    ///
    /// # Cancel safety
    ///
    /// As [`Feed::catch_up`].
    pub async fn run<F>(&mut self, handler: F) -> Result<(), FeedError>
    where
        F: for<'a> FnMut(&'a mut FeedTx, Envelope<T>) -> BoxFuture<'a, Result<(), FeedError>>
            + Send,
    {
        self.drive(handler, true).await
    }

    /// Up to `limit` records of the selector (with the feed's filter) from
    /// axis offset `since` (inclusive) to `until` (exclusive), decoded;
    /// withheld and filtered records are left out. Reads only: the cursor
    /// does not move.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: reads only.
    pub async fn history(
        &self,
        since: u64,
        until: u64,
        limit: usize,
    ) -> Result<Vec<Envelope<T>>, FeedError> {
        let streams = self.client.stream();
        let page_limit = self.options.limit.min(limit.max(1) as u64);
        let options = self.options.clone().limit(page_limit);
        let mut out = Vec::new();
        let mut at = ReadPosition::at(since);
        while out.len() < limit && at.offset() < until {
            let page = streams.read_page(&self.selector, at, &options).await?;
            for item in page.items() {
                let (StreamItem::Record(r), Some(axis)) = (item, item.axis_offset(self.scope))
                else {
                    continue;
                };
                if axis >= until || out.len() == limit {
                    return Ok(out);
                }
                out.push(self.decode(r, axis)?);
            }
            if page.caught_up() {
                break;
            }
            at = page.next_position();
        }
        Ok(out)
    }

    fn decode(&self, r: &crate::stream::StreamRecord, axis: u64) -> Result<Envelope<T>, FeedError> {
        Envelope::decode(r, axis).map_err(|e| FeedError::Decode {
            route: r.route().to_owned(),
            offset: r.offset(),
            error: e.to_string(),
        })
    }

    async fn drive<F>(&mut self, mut handler: F, follow: bool) -> Result<(), FeedError>
    where
        F: for<'a> FnMut(&'a mut FeedTx, Envelope<T>) -> BoxFuture<'a, Result<(), FeedError>>
            + Send,
    {
        self.settle_abandoned().await?;
        let conn = self.client.connection().clone();
        let streams = self.client.stream();
        let mut backoff = BACKOFF_MIN;
        loop {
            if follow && self.wake.is_none() {
                // Subscribed before the READ, so no commit after it is missed.
                match streams.subscribe_with(&self.selector, WAKES).await {
                    Ok(s) => self.wake = Some(s),
                    Err(e) => {
                        self.pause(e, &mut backoff).await?;
                        continue;
                    }
                }
            }
            if !self.authenticated().await {
                return Err(FeedError::Fitz(Error::closed()));
            }
            let generation = conn.generation();
            if self.verified != Some(generation) {
                let found = match self.verify().await {
                    Ok(found) => found,
                    Err(e) => {
                        self.pause(e, &mut backoff).await?;
                        continue;
                    }
                };
                if conn.generation() != generation {
                    continue;
                }
                if let Some(gap) = found {
                    self.rewound(gap).await?;
                    continue;
                }
                self.verified = Some(generation);
                // A global continuation belongs to the session it came from.
                self.position = ReadPosition::at(self.state.cursor);
            }
            self.drain_wakes();
            let page = match streams
                .read_page(&self.selector, self.position, &self.options)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    self.pause(e, &mut backoff).await?;
                    continue;
                }
            };
            // Answered by another session than the one verified: possibly
            // another broker lifetime. Verify again before using anything.
            if conn.generation() != generation {
                continue;
            }
            backoff = BACKOFF_MIN;
            let caught_up = page.caught_up();
            if let Next::Reread = self.apply_page(page, &mut handler).await? {
                continue;
            }
            if caught_up {
                let _ = self.events.send(FeedEvent::CaughtUp {
                    cursor: self.state.cursor,
                });
                if !follow {
                    return Ok(());
                }
                self.wait(generation).await?;
            }
        }
    }

    /// True once authenticated; false when the client closed.
    async fn authenticated(&self) -> bool {
        let mut rx = self.client.watch_state();
        rx.wait_for(|s| matches!(s, State::Authenticated | State::Closed))
            .await
            .map(|s| *s == State::Authenticated)
            .unwrap_or(false)
    }

    /// Waits after a failure that retrying may fix; returns the others.
    async fn pause(&self, e: Error, backoff: &mut Duration) -> Result<(), FeedError> {
        let transient = matches!(
            e.kind(),
            ErrorKind::Connection
                | ErrorKind::Timeout
                | ErrorKind::Backpressure
                | ErrorKind::Stale
                | ErrorKind::Cancelled
        ) || e.is_retryable();
        if !transient {
            return Err(FeedError::Fitz(e));
        }
        tracing::debug!(feed = %self.name, error = %e, "feed: retrying");
        let delay = full_jitter(*backoff, &mut rand::rng());
        tokio::time::sleep(delay).await;
        *backoff = (*backoff * 2).min(BACKOFF_MAX);
        Ok(())
    }

    /// Coalesces the wakes already queued: the next READ covers them.
    fn drain_wakes(&mut self) {
        let Some(wake) = &mut self.wake else { return };
        loop {
            match wake.next().now_or_never() {
                Some(Some(Ok(_))) => continue,
                // Ended: subscribe again before the next READ.
                Some(Some(Err(_)) | None) => {
                    self.wake = None;
                    return;
                }
                None => return,
            }
        }
    }

    /// Waits for a commit notification or a new session.
    async fn wait(&mut self, read_on: Generation) -> Result<(), FeedError> {
        let conn = self.client.connection().clone();
        let mut state = self.client.watch_state();
        let Some(wake) = &mut self.wake else {
            return Ok(());
        };
        let ended = loop {
            if conn.generation() != read_on {
                break false;
            }
            tokio::select! {
                item = wake.next() => break !matches!(item, Some(Ok(_))),
                changed = state.changed() => {
                    if changed.is_err() || *state.borrow() == State::Closed {
                        return Err(FeedError::Fitz(Error::closed()));
                    }
                }
            }
        };
        if ended {
            // Subscribe again before the next READ.
            self.wake = None;
        }
        Ok(())
    }

    /// Checks that the broker still holds what the feed applied.
    async fn verify(&self) -> Result<Option<Gap>, Error> {
        let streams = self.client.stream();
        let cursor = self.state.cursor;
        let mut broker_next = None;
        if self.scope == SelectorScope::Resource {
            let next = streams.metadata(&self.selector).await?.next_offset();
            broker_next = Some(next);
            if cursor > next {
                return Ok(Some(Gap::Rewound {
                    cursor,
                    broker_next,
                    last_applied: None,
                }));
            }
        }
        let Some(last) = &self.state.last else {
            return Ok(None);
        };
        let page = streams
            .read_page(&last.route, last.offset, &ReadOptions::new().limit(1))
            .await?;
        let same = page
            .records()
            .next()
            .is_some_and(|r| r.offset() == last.offset && digest(r) == last.digest);
        Ok((!same).then(|| Gap::Rewound {
            cursor,
            broker_next,
            last_applied: Some(format!("{}#{}", last.route, last.offset)),
        }))
    }

    /// Reports `gap` and asks the policy.
    fn decide(&self, gap: &Gap) -> GapAction {
        let action = (self.policy)(gap);
        tracing::warn!(feed = %self.name, ?gap, ?action, "feed gap");
        let _ = self.events.send(FeedEvent::Gap {
            gap: gap.clone(),
            action,
        });
        action
    }

    /// A rewind found by [`Feed::verify`]: stop, or re-anchor the cursor.
    async fn rewound(&mut self, gap: Gap) -> Result<(), FeedError> {
        let to = match (self.decide(&gap), &gap) {
            (GapAction::Stop, _) => return Err(FeedError::Gap(gap)),
            (GapAction::ResumeAt(at), _) => at,
            (
                GapAction::Continue,
                Gap::Rewound {
                    cursor,
                    broker_next,
                    ..
                },
            ) => broker_next.map_or(*cursor, |n| n.min(*cursor)),
            (GapAction::Continue, _) => self.state.cursor,
        };
        self.move_to(to).await
    }

    /// Applies one batch on the blocking pool. The task is kept in the feed
    /// until it is done, so a run cancelled meanwhile (the apply goes on
    /// without it) is settled by the next one: see [`Feed::settle_abandoned`].
    async fn apply(&mut self, ops: Vec<StoreOp>) -> Result<(), SyncError> {
        let store = self.store.clone();
        let task = self
            .inflight
            .insert(tokio::task::spawn_blocking(move || store.apply(&ops)));
        let result = task.await;
        self.inflight = None;
        result.map_err(|e| SyncError::Store(format!("store task failed: {e}")))?
    }

    /// After a cancelled run: waits for its batch, whose outcome is unknown,
    /// and takes the cursor from the store, which has it or not.
    async fn settle_abandoned(&mut self) -> Result<(), SyncError> {
        let Some(task) = self.inflight.take() else {
            return Ok(());
        };
        // Applied or not, the store tells.
        let _ = task.await;
        let key = self.name.clone().into_bytes();
        let stored = blocking(&self.store, move |s| s.get(Table::FeedCursor, &key)).await?;
        if let Some(b) = stored {
            self.state = CursorRecord::decode(&b)?;
        }
        self.position = ReadPosition::at(self.state.cursor);
        Ok(())
    }

    /// Sets the cursor by hand (a policy's answer): the digest goes.
    async fn move_to(&mut self, cursor: u64) -> Result<(), FeedError> {
        let rec = CursorRecord {
            selector: self.selector.clone(),
            cursor,
            last: None,
        };
        let ops = FeedTx::new(self.store.clone()).take_batch(&self.name, &rec)?;
        self.apply(ops).await?;
        self.state = rec;
        self.position = ReadPosition::at(cursor);
        Ok(())
    }

    /// Applies what `staged` holds beyond the stored state, with `tx`.
    async fn settle(&mut self, tx: &mut FeedTx, staged: CursorRecord) -> Result<(), FeedError> {
        if staged != self.state {
            let ops = tx.take_batch(&self.name, &staged)?;
            self.apply(ops).await?;
            self.state = staged;
            self.position = ReadPosition::at(self.state.cursor);
        }
        Ok(())
    }

    /// Runs the handler over one page and applies it as one batch.
    async fn apply_page<F>(&mut self, page: ReadPage, handler: &mut F) -> Result<Next, FeedError>
    where
        F: for<'a> FnMut(&'a mut FeedTx, Envelope<T>) -> BoxFuture<'a, Result<(), FeedError>>
            + Send,
    {
        let next = page.next_position();
        let mut tx = FeedTx::new(self.store.clone());
        let mut staged = self.state.clone();
        for item in page.into_items() {
            let expected = staged.cursor;
            let gap = match &item {
                StreamItem::Filtered(f) if f.reason() != FilterReason::ServerFilter => {
                    Some(Gap::Withheld {
                        route: f.route().to_owned(),
                        first: f.first_offset(),
                        last: f.last_offset(),
                        reason: f.reason(),
                    })
                }
                StreamItem::Record(r) => match item.axis_offset(self.scope) {
                    Some(axis) if self.dense && axis > expected => Some(Gap::Truncated {
                        route: r.route().to_owned(),
                        cursor: expected,
                        first_available: axis,
                    }),
                    _ => None,
                },
                StreamItem::Filtered(_) => None,
            };
            if let Some(gap) = gap {
                match self.decide(&gap) {
                    GapAction::Continue => {}
                    GapAction::Stop => {
                        self.settle(&mut tx, staged).await?;
                        return Err(FeedError::Gap(gap));
                    }
                    GapAction::ResumeAt(at) => {
                        self.settle(&mut tx, staged).await?;
                        self.move_to(at).await?;
                        return Ok(Next::Reread);
                    }
                }
            }
            let axis = item.axis_offset(self.scope).unwrap_or(expected);
            match item {
                StreamItem::Filtered(f) => {
                    staged.cursor = staged.cursor.max(f.last_offset().saturating_add(1));
                }
                // Already applied (a page overlapping the cursor).
                StreamItem::Record(_) if axis < expected => {}
                StreamItem::Record(r) => {
                    let envelope = match self.decode(&r, axis) {
                        Ok(e) => e,
                        Err(e) => {
                            self.settle(&mut tx, staged).await?;
                            return Err(e);
                        }
                    };
                    tx.begin_record();
                    if let Err(e) = handler(&mut tx, envelope).await {
                        tx.discard_record();
                        self.settle(&mut tx, staged).await?;
                        return Err(e);
                    }
                    staged.cursor = axis.saturating_add(1);
                    staged.last = Some(Applied {
                        route: r.route().to_owned(),
                        offset: r.offset(),
                        digest: digest(&r),
                    });
                }
            }
        }
        // Narrow wildcards: the page also covered other routes' offsets.
        staged.cursor = staged.cursor.max(next.offset());
        self.settle(&mut tx, staged).await?;
        self.position = if next.offset() == self.state.cursor {
            next
        } else {
            ReadPosition::at(self.state.cursor)
        };
        Ok(Next::Done)
    }
}

#[cfg(test)]
mod tests;
