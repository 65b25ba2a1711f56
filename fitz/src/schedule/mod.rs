//! Schedule: durable cron schedules and their fires (types 700–707).
//!
//! A schedule is keyed by a concrete four-segment route
//! `schedule://realm/area/resource/operation` and holds a five-field UTC
//! cron expression, a [`DeliveryMode`] and a payload. Creating one on an
//! existing route replaces it; cancelling is idempotent. When a schedule
//! fires, the broker hands its payload to live subscriptions whose pattern
//! matches the route ([`Schedule::subscribe`]): every one of them
//! ([`DeliveryMode::Broadcast`]) or one, in rotation
//! ([`DeliveryMode::Single`]). Nothing is queued: a fire nobody is
//! subscribed to is skipped, and so are fires missed while the broker was
//! down.
//!
//! Cron expressions are checked locally with the broker's own grammar
//! (`fitz_protocol::cron`, minute, hour, day of month, month, day of week;
//! `*`, lists, ranges and steps): an invalid one is an
//! [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) error
//! and nothing is sent. Anything else the broker refuses arrives as an
//! [`ErrorKind::Broker`](crate::ErrorKind::Broker) error whose message says
//! why (the broker sends Schedule errors without a numeric code).
//!
//! ```no_run
//! # async fn demo(client: fitz::Client) -> fitz::Result<()> {
//! use futures_util::StreamExt;
//! use fitz::schedule::DeliveryMode;
//!
//! let schedule = client.schedule();
//! let mut fires = schedule.subscribe("schedule://prod/reports/*/run").await?;
//! schedule
//!     .create("schedule://prod/reports/daily/run", "0 6 * * *", DeliveryMode::Single, "{}")
//!     .await?;
//! while let Some(fire) = fires.next().await {
//!     let fire = fire?;
//!     println!("{} fired with {:?}", fire.route(), fire.payload());
//! }
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use fitz_protocol::cron::CronSchedule;
use fitz_protocol::route::{self, Scheme};
use fitz_protocol::schedule::{self as wire, Entry};
use fitz_protocol::{Message, Str, types};
use futures_core::Stream;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use crate::connection::{
    Connection, Registration, RegistrationSpec, decode_ack, domain_subscription,
    record_with_payload,
};
use crate::error::{Error, Result};
use crate::options::SubscriptionOptions;
use crate::retry::{RetryPolicy, replay_safe};

/// How a fire is delivered: to every matching subscription, or to one.
pub use fitz_protocol::schedule::DeliveryMode;
/// The largest page [`Schedule::list`] and [`Schedule::list_after`] accept.
pub use fitz_protocol::schedule::MAX_LIST_LIMIT;

static WATCH: RegistrationSpec = RegistrationSpec {
    name: "schedule subscription",
    subscribe_type: types::SCHEDULE_SUBSCRIBE,
    notify_type: Some(types::SCHEDULE_NOTIFY),
    ack: |payload| decode_ack::<wire::SubscribeReply>(payload, |ok| ok.sub_id),
    // Schedule unsubscribes by the original pattern.
    unsubscribe: |_, payload| record_with_payload(types::SCHEDULE_UNSUBSCRIBE, payload),
};

/// The Schedule domain of a [`crate::Client`] (see [`crate::Client::schedule`]).
#[derive(Clone)]
pub struct Schedule {
    conn: Connection,
    retry: RetryPolicy,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Schedule")
    }
}

impl Schedule {
    pub(crate) fn new(conn: Connection) -> Self {
        let retry = conn.shared().config.retry;
        Self { conn, retry }
    }

    /// This view with `policy` for its replay-safe reads (LIST and LIST_V2 pages) instead
    /// of the client's [`crate::ClientBuilder::retry`]. Cheap: a clone of
    /// the handle.
    pub fn with_retry(&self, policy: RetryPolicy) -> Self {
        Self {
            conn: self.conn.clone(),
            retry: policy,
        }
    }

    /// Creates (or replaces) the schedule at the concrete route `route`:
    /// fire `payload` on every minute `cron` matches (5 fields, UTC).
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped after the request was written, the change may
    /// still be applied (a batch whole or not at all) and the caller does not
    /// learn the outcome; list the schedules to find out. Dropped before it was
    /// written, nothing is sent.
    pub async fn create(
        &self,
        route: &str,
        cron: &str,
        mode: DeliveryMode,
        payload: impl Into<Bytes>,
    ) -> Result<()> {
        validate_route(route)?;
        validate_cron(cron)?;
        let msg = wire::Create {
            entry: Entry {
                route: Str::from(route),
                cron: Str::from(cron),
                mode,
                payload: payload.into(),
            },
        };
        self.conn.call::<_, wire::CreateOk>(&msg).await.map(drop)
    }

    /// [`Schedule::create`] with `payload` encoded as JSON (a value that
    /// cannot be is an
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument)
    /// error, and nothing is sent).
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped after the request was written, the change may
    /// still be applied (a batch whole or not at all) and the caller does not
    /// learn the outcome; list the schedules to find out. Dropped before it was
    /// written, nothing is sent.
    #[cfg(feature = "serde")]
    pub async fn create_json<T: serde::Serialize + ?Sized>(
        &self,
        route: &str,
        cron: &str,
        mode: DeliveryMode,
        payload: &T,
    ) -> Result<()> {
        self.create(route, cron, mode, crate::json::encode(payload)?)
            .await
    }

    /// Creates (or replaces) several schedules with one request
    /// (CREATE_BATCH, a broker extension). Every route is checked before
    /// anything is sent; an empty batch sends nothing. The batch must fit
    /// one 64 KiB record.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped after the request was written, the change may
    /// still be applied (a batch whole or not at all) and the caller does not
    /// learn the outcome; list the schedules to find out. Dropped before it was
    /// written, nothing is sent.
    pub async fn create_batch(
        &self,
        entries: impl IntoIterator<Item = ScheduleEntry>,
    ) -> Result<()> {
        let entries: Vec<Entry> = entries.into_iter().map(|e| e.entry).collect();
        for e in &entries {
            validate_route(&e.route)?;
            validate_cron(&e.cron)?;
        }
        if entries.is_empty() {
            return Ok(());
        }
        let msg = wire::CreateBatch { entries };
        self.conn
            .call::<_, wire::CreateBatchOk>(&msg)
            .await
            .map(drop)
    }

    /// Cancels the schedule at `route`; cancelling one that does not exist
    /// succeeds. A fire already handed out may still arrive.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropped after the request was written, the change may
    /// still be applied (a batch whole or not at all) and the caller does not
    /// learn the outcome; list the schedules to find out. Dropped before it was
    /// written, nothing is sent.
    pub async fn cancel(&self, route: &str) -> Result<()> {
        validate_route(route)?;
        self.conn
            .call::<_, wire::CancelOk>(&wire::Cancel::new(route))
            .await
            .map(drop)
    }

    /// One LIST page: up to `limit` schedules (at most [`MAX_LIST_LIMIT`];
    /// `0` asks for as many as fit one reply) from index `offset`, with the
    /// total count. A page may be shorter than asked even when more remain:
    /// continue from [`SchedulePage::next_offset`] until
    /// [`SchedulePage::is_last`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe. Dropping the future abandons the read: nothing changed on
    /// the broker, a request already written is still answered and that reply is
    /// discarded (it never reaches another call), and nothing leaks.
    pub async fn list(&self, offset: u64, limit: u64) -> Result<SchedulePage> {
        check_limit(limit)?;
        // LIST always carries both optional fields (protocol §9.11).
        let msg = wire::List {
            offset: Some(offset),
            limit: Some(limit),
        };
        let ok: wire::ListOk = replay_safe(&self.retry, || self.conn.call(&msg)).await?;
        Ok(SchedulePage {
            offset,
            total: ok.total_count,
            entries: ok.entries.into_iter().map(ScheduleEntry::from).collect(),
        })
    }

    /// Every schedule, paging LIST (the portable listing) by offset.
    ///
    /// Offsets are indexes into the current set: schedules created or
    /// cancelled while listing may shift entries between pages (use
    /// [`Schedule::list_all_after`] for a listing that resumes by route).
    pub fn list_all(&self) -> ScheduleList {
        ScheduleList::new(self.clone(), Paging::Offset(0), None)
    }

    /// Every schedule whose route `pattern` matches (`*` one segment, `**`
    /// any number), filtered locally over [`Schedule::list_all`].
    pub fn list_matching(&self, pattern: &str) -> Result<ScheduleList> {
        validate_pattern(pattern)?;
        Ok(ScheduleList::new(
            self.clone(),
            Paging::Offset(0),
            Some(pattern.to_owned()),
        ))
    }

    /// One LIST_V2 page (a broker extension): up to `limit` schedules
    /// (`0`: the broker's default of 100; at most [`MAX_LIST_LIMIT`]) in
    /// route order, after `cursor` (`None`: from the first).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe. Dropping the future abandons the read: nothing changed on
    /// the broker, a request already written is still answered and that reply is
    /// discarded (it never reaches another call), and nothing leaks.
    pub async fn list_after(
        &self,
        cursor: Option<&ListCursor>,
        limit: u64,
    ) -> Result<ScheduleCursorPage> {
        check_limit(limit)?;
        let msg = wire::ListV2 {
            continuation: cursor.map(|c| c.0.clone()),
            limit: (limit > 0).then_some(limit),
        };
        let ok: wire::ListV2Ok = replay_safe(&self.retry, || self.conn.call(&msg)).await?;
        Ok(ScheduleCursorPage {
            entries: ok.entries.into_iter().map(ScheduleEntry::from).collect(),
            has_more: ok.has_more,
            next: ok.continuation.map(ListCursor),
        })
    }

    /// Every schedule after `cursor` (`None`: all), in route order, paging
    /// LIST_V2 by its continuation: a schedule cancelled meanwhile does not
    /// shift the rest.
    pub fn list_all_after(&self, cursor: Option<ListCursor>) -> ScheduleList {
        ScheduleList::new(self.clone(), Paging::Cursor(cursor), None)
    }

    /// Subscribes to the fires of every schedule `pattern` matches (an exact
    /// route or a pattern able to match four segments), with the client's
    /// default buffering.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe. Dropped before it resolves, no registration is left behind:
    /// the handle under construction unsubscribes in the background, or is never
    /// installed when the connection task had not handled it yet.
    pub async fn subscribe(&self, pattern: &str) -> Result<ScheduleSubscription> {
        let options = self.conn.shared().config.subscription;
        self.subscribe_with(pattern, options).await
    }

    /// [`Schedule::subscribe`] with explicit buffering for this subscription.
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
    ) -> Result<ScheduleSubscription> {
        validate_pattern(pattern)?;
        let reg = Registration::new(&WATCH, &wire::Subscribe::new(pattern), decode_fire, options)?;
        let inner = self.conn.register(reg).await?;
        Ok(ScheduleSubscription {
            inner,
            pattern: pattern.to_owned(),
        })
    }
}

pub(crate) fn validate_route(route: &str) -> Result<()> {
    route::validate_concrete(route, Scheme::Schedule)
        .map(drop)
        .map_err(Error::route)
}

/// The broker's own cron grammar (shared through `fitz_protocol::cron`), so
/// an expression the broker would refuse is refused here without a round trip.
pub(crate) fn validate_cron(cron: &str) -> Result<()> {
    CronSchedule::parse(cron)
        .map(drop)
        .map_err(|e| Error::invalid(format!("invalid cron expression: {e}")))
}

fn validate_pattern(pattern: &str) -> Result<()> {
    route::validate_pattern(pattern, Scheme::Schedule)
        .map(drop)
        .map_err(Error::route)
}

fn check_limit(limit: u64) -> Result<()> {
    if limit > MAX_LIST_LIMIT {
        return Err(Error::invalid(format!(
            "a schedule list page holds at most {MAX_LIST_LIMIT} entries, not {limit}"
        )));
    }
    Ok(())
}

/// One schedule definition: route, cron, delivery mode and payload.
#[derive(Clone, PartialEq, Eq)]
pub struct ScheduleEntry {
    entry: Entry,
}

impl ScheduleEntry {
    /// A definition for [`Schedule::create_batch`]. The route is checked
    /// when it is sent.
    pub fn new(
        route: impl Into<String>,
        cron: impl Into<String>,
        mode: DeliveryMode,
        payload: impl Into<Bytes>,
    ) -> Self {
        Self {
            entry: Entry {
                route: Str::from(route.into()),
                cron: Str::from(cron.into()),
                mode,
                payload: payload.into(),
            },
        }
    }

    /// [`ScheduleEntry::new`] with `payload` encoded as JSON (a value that
    /// cannot be is an
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument)
    /// error).
    #[cfg(feature = "serde")]
    pub fn new_json<T: serde::Serialize + ?Sized>(
        route: impl Into<String>,
        cron: impl Into<String>,
        mode: DeliveryMode,
        payload: &T,
    ) -> Result<Self> {
        Ok(Self::new(route, cron, mode, crate::json::encode(payload)?))
    }

    /// The concrete `schedule://realm/area/resource/operation` route.
    pub fn route(&self) -> &str {
        &self.entry.route
    }

    /// The five-field UTC cron expression.
    pub fn cron(&self) -> &str {
        &self.entry.cron
    }

    /// How fires are delivered.
    pub fn mode(&self) -> DeliveryMode {
        self.entry.mode
    }

    /// The payload every fire carries.
    pub fn payload(&self) -> &Bytes {
        &self.entry.payload
    }

    /// Takes the payload.
    pub fn into_payload(self) -> Bytes {
        self.entry.payload
    }

    /// The payload parsed as JSON. A payload that is not JSON of type `T` is
    /// an [`ErrorKind::Decode`](crate::ErrorKind::Decode) error.
    #[cfg(feature = "serde")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        let what = format_args!("the payload of {}", &*self.entry.route);
        crate::json::decode(&self.entry.payload, what)
    }
}

impl From<Entry> for ScheduleEntry {
    fn from(entry: Entry) -> Self {
        Self { entry }
    }
}

impl fmt::Debug for ScheduleEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScheduleEntry")
            .field("route", &&*self.entry.route)
            .field("cron", &&*self.entry.cron)
            .field("mode", &self.entry.mode)
            .field("payload", &self.entry.payload)
            .finish()
    }
}

/// One LIST page ([`Schedule::list`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulePage {
    offset: u64,
    total: u64,
    entries: Vec<ScheduleEntry>,
}

impl SchedulePage {
    /// The index this page starts at.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Schedules in the route family right now.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// This page's schedules.
    pub fn entries(&self) -> &[ScheduleEntry] {
        &self.entries
    }

    /// Takes the schedules.
    pub fn into_entries(self) -> Vec<ScheduleEntry> {
        self.entries
    }

    /// The offset of the next page: this one's plus its length.
    pub fn next_offset(&self) -> u64 {
        self.offset.saturating_add(self.entries.len() as u64)
    }

    /// True when nothing follows this page.
    pub fn is_last(&self) -> bool {
        self.next_offset() >= self.total
    }
}

/// An opaque LIST_V2 position: resumes after the schedule it names, even if
/// that one was cancelled since. Store it as a string with
/// [`ListCursor::as_str`] and rebuild it with `ListCursor::from`; a cursor
/// the broker does not recognise restarts from the first page.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ListCursor(Str);

impl ListCursor {
    /// The cursor as the broker wrote it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for ListCursor {
    fn from(s: String) -> Self {
        Self(Str::from(s))
    }
}

impl From<&str> for ListCursor {
    fn from(s: &str) -> Self {
        Self(Str::from(s))
    }
}

impl fmt::Debug for ListCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ListCursor").field(&&*self.0).finish()
    }
}

/// One LIST_V2 page ([`Schedule::list_after`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleCursorPage {
    entries: Vec<ScheduleEntry>,
    has_more: bool,
    next: Option<ListCursor>,
}

impl ScheduleCursorPage {
    /// This page's schedules, in route order.
    pub fn entries(&self) -> &[ScheduleEntry] {
        &self.entries
    }

    /// Takes the schedules.
    pub fn into_entries(self) -> Vec<ScheduleEntry> {
        self.entries
    }

    /// True when more schedules follow.
    pub fn has_more(&self) -> bool {
        self.has_more
    }

    /// Where the next page starts.
    pub fn next_cursor(&self) -> Option<&ListCursor> {
        self.next.as_ref()
    }
}

/// How a [`ScheduleList`] pages.
#[derive(Debug, Clone)]
enum Paging {
    /// LIST by offset.
    Offset(u64),
    /// LIST_V2 after a cursor.
    Cursor(Option<ListCursor>),
}

/// Schedules listed page by page as they are consumed: a `Stream` of
/// [`ScheduleEntry`]s. An error is the last item.
pub struct ScheduleList {
    inner: BoxStream<'static, Result<ScheduleEntry>>,
}

struct Lister {
    schedule: Schedule,
    paging: Paging,
    pattern: Option<String>,
    buffer: VecDeque<ScheduleEntry>,
    done: bool,
}

impl Lister {
    /// Fetches the next page into the buffer; marks the end.
    async fn fill(&mut self) -> Result<()> {
        match &mut self.paging {
            Paging::Offset(offset) => {
                let page = self.schedule.list(*offset, MAX_LIST_LIMIT).await?;
                if page.entries.is_empty() && !page.is_last() {
                    return Err(Error::protocol(format!(
                        "schedule LIST returned no entry at offset {offset} of {}",
                        page.total
                    )));
                }
                *offset = page.next_offset();
                self.done = page.is_last();
                self.buffer.extend(page.entries);
            }
            Paging::Cursor(cursor) => {
                let page = self
                    .schedule
                    .list_after(cursor.as_ref(), MAX_LIST_LIMIT)
                    .await?;
                if page.has_more && (page.next.is_none() || page.next == *cursor) {
                    return Err(Error::protocol(
                        "schedule LIST_V2 reported more without moving its cursor",
                    ));
                }
                self.done = !page.has_more;
                *cursor = page.next;
                self.buffer.extend(page.entries);
            }
        }
        if let Some(pattern) = &self.pattern {
            self.buffer.retain(|e| route::matches(pattern, e.route()));
        }
        Ok(())
    }

    async fn next_entry(&mut self) -> Option<Result<ScheduleEntry>> {
        loop {
            if let Some(e) = self.buffer.pop_front() {
                return Some(Ok(e));
            }
            if self.done {
                return None;
            }
            if let Err(e) = self.fill().await {
                self.done = true;
                return Some(Err(e));
            }
        }
    }
}

impl ScheduleList {
    fn new(schedule: Schedule, paging: Paging, pattern: Option<String>) -> Self {
        let lister = Lister {
            schedule,
            paging,
            pattern,
            buffer: VecDeque::new(),
            done: false,
        };
        let inner = futures_util::stream::unfold(lister, |mut l| async move {
            let item = l.next_entry().await?;
            Some((item, l))
        })
        // Polling past the end keeps answering None.
        .fuse()
        .boxed();
        Self { inner }
    }
}

impl Stream for ScheduleList {
    type Item = Result<ScheduleEntry>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().inner.poll_next_unpin(cx)
    }
}

impl fmt::Debug for ScheduleList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ScheduleList")
    }
}

fn decode_fire(payload: Bytes) -> Result<ScheduleFire> {
    let n = wire::Notify::decode(payload)
        .map_err(|e| Error::protocol(format!("malformed SCHEDULE NOTIFY: {e}")).with_source(e))?;
    Ok(ScheduleFire {
        route: n.route,
        payload: n.payload,
    })
}

/// One fire of a schedule.
#[derive(Clone, PartialEq, Eq)]
pub struct ScheduleFire {
    route: Str,
    payload: Bytes,
}

impl ScheduleFire {
    /// The concrete route of the schedule that fired.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// The schedule's payload (shares the received frame's memory).
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Takes the payload.
    pub fn into_payload(self) -> Bytes {
        self.payload
    }

    /// The payload parsed as JSON. A payload that is not JSON of type `T` is
    /// an [`ErrorKind::Decode`](crate::ErrorKind::Decode) error.
    #[cfg(feature = "serde")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        let what = format_args!("the payload of {}", &*self.route);
        crate::json::decode(&self.payload, what)
    }
}

impl fmt::Debug for ScheduleFire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScheduleFire")
            .field("route", &&*self.route)
            .field("payload", &self.payload)
            .finish()
    }
}

domain_subscription! {
    /// A live Schedule subscription: a `Stream` of [`ScheduleFire`]s.
    ///
    /// It keeps working across reconnects (fires while disconnected are lost:
    /// the broker never queues them). Items are `Err` only as the last item
    /// before the stream ends: on overflow under [`crate::Overflow::Error`],
    /// when the subscription could not be restored after a reconnect, or when
    /// the client closed. Subscriptions of one client to the same pattern share
    /// one broker registration (and so count once for single delivery);
    /// dropping one unsubscribes it in the background.
    pub struct ScheduleSubscription: ScheduleFire, keyed by pattern, dropping "Fires";
}

#[cfg(test)]
mod tests;
