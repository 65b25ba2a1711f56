//! READ pages: options, positions, items, records and the cursor rules.

use std::fmt;
use std::ops::RangeInclusive;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fitz_protocol::Str;
use fitz_protocol::route::{self, Scheme, SelectorScope};
use fitz_protocol::stream::{self as wire, FilterReason, ItemKind};

use super::Filter;
use crate::error::{Error, Result};

/// Items per READ page when [`ReadOptions::limit`] is not changed.
pub const DEFAULT_READ_LIMIT: u64 = 256;

/// How a READ pages: item limit, byte budget and filter. The starting point
/// is a separate argument ([`ReadPosition`]).
///
/// ```
/// use fitz::stream::{Filter, ReadOptions};
///
/// let options = ReadOptions::new()
///     .limit(500)
///     .max_bytes(32 * 1024)
///     .filter(Filter::new().starts_with("order."));
/// assert_eq!(options.limit, 500);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOptions {
    /// Most items (records and filtered markers) per page. The broker may
    /// return fewer, and rejects `0` with
    /// [`codes::STREAM_INVALID_READ_BOUND`](crate::codes::STREAM_INVALID_READ_BOUND).
    pub limit: u64,
    /// Byte budget of a page, if any (the broker's own page limit, one 64 KiB
    /// record, always applies).
    pub max_bytes: Option<u64>,
    /// Server-side filter; empty reads everything.
    pub filter: Filter,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            limit: DEFAULT_READ_LIMIT,
            max_bytes: None,
            filter: Filter::new(),
        }
    }
}

impl ReadOptions {
    /// [`DEFAULT_READ_LIMIT`] items, no byte budget, no filter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`ReadOptions::limit`].
    #[must_use]
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = limit;
        self
    }

    /// Sets [`ReadOptions::max_bytes`].
    #[must_use]
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = Some(max_bytes);
        self
    }

    /// Sets [`ReadOptions::filter`].
    #[must_use]
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }
}

/// Where a READ starts: an offset on the selector's axis (see
/// [`SelectorScope`]), plus, when it continues a global-scope page that had
/// more, the broker's private continuation values.
///
/// Build one from an offset (`ReadPosition::from(42)`, or pass a `u64`
/// wherever `impl Into<ReadPosition>` is taken) or take
/// [`ReadPage::next_position`] to continue a page. Only the offset is meant
/// to be stored by applications ([`ReadPosition::offset`]); the continuation
/// binds the selector and filter of the page it came from.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ReadPosition {
    offset: u64,
    fingerprint: Option<u64>,
    watermark: Option<u64>,
}

impl ReadPosition {
    /// A fresh start at `offset`.
    pub const fn at(offset: u64) -> Self {
        Self {
            offset,
            fingerprint: None,
            watermark: None,
        }
    }

    /// The offset on the selector's axis.
    pub const fn offset(&self) -> u64 {
        self.offset
    }

    /// True when this position carries a global continuation.
    pub const fn is_continuation(&self) -> bool {
        self.fingerprint.is_some() || self.watermark.is_some()
    }

    pub(crate) fn read_request(&self, spec: &ReadSpec) -> wire::Read {
        wire::Read {
            selector: spec.selector.clone(),
            from_offset: self.offset,
            limit: spec.limit,
            max_bytes: spec.max_bytes,
            filter: spec.filter.clone(),
            cursor_fingerprint: self.fingerprint,
            captured_watermark: self.watermark,
        }
    }
}

impl From<u64> for ReadPosition {
    fn from(offset: u64) -> Self {
        Self::at(offset)
    }
}

impl fmt::Debug for ReadPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The continuation values are protocol-private: say only that they exist.
        f.debug_struct("ReadPosition")
            .field("offset", &self.offset)
            .field("continuation", &self.is_continuation())
            .finish()
    }
}

/// A validated READ: selector, scope and the encoded options.
#[derive(Debug, Clone)]
pub(crate) struct ReadSpec {
    pub selector: Str,
    pub scope: SelectorScope,
    pub limit: u64,
    pub max_bytes: Option<u64>,
    pub filter: Option<Bytes>,
}

impl ReadSpec {
    pub fn new(selector: &str, options: &ReadOptions) -> Result<Self> {
        let scope = route::stream_selector(selector).map_err(Error::route)?;
        Ok(Self {
            selector: Str::from(selector),
            scope,
            limit: options.limit,
            max_bytes: options.max_bytes,
            filter: options.filter.to_wire(),
        })
    }
}

/// One READ page: its items in axis order and where to continue.
///
/// Every page is worth looking at, even an empty one: a filtered-only or
/// empty page may still move the cursor ([`ReadPage::next_offset`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadPage {
    items: Vec<StreamItem>,
    scope: SelectorScope,
    requested: u64,
    next: ReadPosition,
    caught_up: bool,
    cursor: PageCursor,
}

impl ReadPage {
    /// Records and filtered markers, in the order of the selector's axis.
    pub fn items(&self) -> &[StreamItem] {
        &self.items
    }

    /// Takes the items.
    pub fn into_items(self) -> Vec<StreamItem> {
        self.items
    }

    /// The records only (filtered markers skipped).
    pub fn records(&self) -> impl Iterator<Item = &StreamRecord> {
        self.items.iter().filter_map(StreamItem::as_record)
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when the page has no item (it may still have advanced).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The axis this selector pages by.
    pub fn scope(&self) -> SelectorScope {
        self.scope
    }

    /// The offset this page was read from.
    pub fn requested_offset(&self) -> u64 {
        self.requested
    }

    /// The offset to read from next: the last offset of the selector's axis
    /// this page covered, plus one; the requested offset when the page did
    /// not report that axis. Store this to resume later.
    pub fn next_offset(&self) -> u64 {
        self.next.offset
    }

    /// The position to read the next page from: [`ReadPage::next_offset`]
    /// plus, for a global selector with more to read, the continuation the
    /// broker expects echoed. Only valid with the same selector and filter.
    pub fn next_position(&self) -> ReadPosition {
        self.next
    }

    /// True when the broker had nothing more (`has_more = false`): the
    /// reader reached the committed watermark.
    pub fn caught_up(&self) -> bool {
        self.caught_up
    }

    /// The raw cursor the broker reported.
    pub fn cursor(&self) -> &PageCursor {
        &self.cursor
    }

    /// Decodes the `read_page` bytes of a READ reply for `scope`.
    ///
    /// Fails closed: a single item with an invalid route fails the page.
    pub(crate) fn decode(
        data: Bytes,
        scope: SelectorScope,
        requested: ReadPosition,
    ) -> Result<Self> {
        let raw = wire::ReadPage::decode(data, scope == SelectorScope::Global)
            .map_err(Error::malformed_reply)?;
        let mut items = Vec::with_capacity(raw.items.len());
        for item in raw.items {
            items.push(StreamItem::from_wire(item)?);
        }
        let cursor = PageCursor {
            last_resource_offset: raw.last_resource_offset,
            last_area_offset: raw.last_area_offset,
            last_realm_offset: raw.last_realm_offset,
            last_global_offset: raw.last_global_offset,
        };
        let next = next_position(
            scope,
            requested.offset,
            items.is_empty(),
            &cursor,
            raw.has_more
                .then_some((raw.cursor_fingerprint, raw.captured_watermark)),
        );
        Ok(Self {
            items,
            scope,
            requested: requested.offset,
            next,
            caught_up: !raw.has_more,
            cursor,
        })
    }
}

/// Applies the continuation rules (protocol §4.6, conformance fixture):
/// next = last offset of the selector's axis + 1, the requested offset when
/// that axis is absent, never behind the requested offset; global
/// continuation values are echoed only while the broker has more.
fn next_position(
    scope: SelectorScope,
    requested: u64,
    no_items: bool,
    cursor: &PageCursor,
    more: Option<(Option<u64>, Option<u64>)>,
) -> ReadPosition {
    let axis = match scope {
        // The resource axis is not optional on the wire, so "nothing
        // examined" reads as `from - 1` (saturating at 0). Every examined
        // record of an exact resource yields an item, so an empty page did
        // not move; trusting `0 + 1` here would skip record 0 of a stream
        // that is empty today.
        SelectorScope::Resource if no_items => None,
        SelectorScope::Resource => Some(cursor.last_resource_offset),
        SelectorScope::Area => cursor.last_area_offset,
        SelectorScope::Realm => cursor.last_realm_offset,
        SelectorScope::Global => cursor.last_global_offset,
    };
    let offset = axis.map_or(requested, |last| last.saturating_add(1).max(requested));
    let (fingerprint, watermark) = match (scope, more) {
        (SelectorScope::Global, Some(continuation)) => continuation,
        _ => (None, None),
    };
    ReadPosition {
        offset,
        fingerprint,
        watermark,
    }
}

/// The cursor fields of a READ page, as the broker sent them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PageCursor {
    /// Last resource offset covered.
    pub last_resource_offset: u64,
    /// Last area offset covered, if reported.
    pub last_area_offset: Option<u64>,
    /// Last realm offset covered, if reported.
    pub last_realm_offset: Option<u64>,
    /// Last global offset covered (global scope only).
    pub last_global_offset: Option<u64>,
}

/// One READ item: a record, or a marker for records the READ withheld.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    /// A committed record.
    Record(StreamRecord),
    /// Records withheld (filtered out, not permitted, projected away).
    Filtered(Filtered),
}

impl StreamItem {
    /// The concrete `stream://realm/area/resource` route of the item.
    pub fn route(&self) -> &str {
        match self {
            Self::Record(r) => r.route(),
            Self::Filtered(f) => f.route(),
        }
    }

    /// The record, if this is one.
    pub fn as_record(&self) -> Option<&StreamRecord> {
        match self {
            Self::Record(r) => Some(r),
            Self::Filtered(_) => None,
        }
    }

    /// Takes the record, if this is one.
    pub fn into_record(self) -> Option<StreamRecord> {
        match self {
            Self::Record(r) => Some(r),
            Self::Filtered(_) => None,
        }
    }

    /// The last offset this item covers on the axis of `scope`, if known.
    pub(crate) fn axis_offset(&self, scope: SelectorScope) -> Option<u64> {
        match self {
            Self::Record(r) => match scope {
                SelectorScope::Resource => Some(r.resource_offset),
                SelectorScope::Area => r.area_offset,
                SelectorScope::Realm => r.realm_offset,
                SelectorScope::Global => r.global_offset,
            },
            Self::Filtered(f) => Some(f.last),
        }
    }

    fn from_wire(item: wire::Item) -> Result<Self> {
        // A page is all or nothing: one bad route fails it (protocol §9.8).
        route::validate_concrete(&item.route, Scheme::Stream).map_err(|e| {
            Error::protocol(format!(
                "READ page item with an invalid route {:?}: {e}",
                &*item.route
            ))
            .with_source(e)
        })?;
        Ok(match item.kind {
            ItemKind::Event(rec) => Self::Record(StreamRecord::from_wire(item.route, rec)),
            ItemKind::Filtered { offset, reason } => Self::Filtered(Filtered {
                route: item.route,
                first: offset,
                last: offset,
                reason,
            }),
            ItemKind::FilteredRange {
                from_offset,
                to_offset,
                reason,
            } => {
                if from_offset > to_offset {
                    return Err(Error::protocol(format!(
                        "READ page filtered range {from_offset}..={to_offset} is backwards"
                    )));
                }
                Self::Filtered(Filtered {
                    route: item.route,
                    first: from_offset,
                    last: to_offset,
                    reason,
                })
            }
        })
    }
}

/// A committed stream record with its concrete route.
#[derive(Clone, PartialEq, Eq)]
pub struct StreamRecord {
    route: Str,
    resource_offset: u64,
    area_offset: Option<u64>,
    realm_offset: Option<u64>,
    global_offset: Option<u64>,
    body: Bytes,
    metadata: Option<Bytes>,
    created_at: u64,
}

impl StreamRecord {
    pub(crate) fn from_wire(route: Str, rec: wire::Record) -> Self {
        Self {
            route,
            resource_offset: rec.resource_offset,
            area_offset: rec.area_offset,
            realm_offset: rec.realm_offset,
            global_offset: rec.global_offset,
            body: rec.body,
            metadata: rec.metadata,
            created_at: rec.created_at,
        }
    }

    /// The concrete `stream://realm/area/resource` route.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// The offset within its resource (from 0, consecutive).
    pub fn offset(&self) -> u64 {
        self.resource_offset
    }

    /// The offset within its area, assigned at commit.
    pub fn area_offset(&self) -> Option<u64> {
        self.area_offset
    }

    /// The offset within its realm, assigned at commit.
    pub fn realm_offset(&self) -> Option<u64> {
        self.realm_offset
    }

    /// The family-wide offset; only global-scope reads carry it.
    pub fn global_offset(&self) -> Option<u64> {
        self.global_offset
    }

    /// The body (shares the received frame's memory).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Takes the body.
    pub fn into_body(self) -> Bytes {
        self.body
    }

    /// The per-record metadata it was appended with, if any.
    pub fn metadata(&self) -> Option<&Bytes> {
        self.metadata.as_ref()
    }

    /// When the record was created (the broker's clock).
    pub fn created_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.created_at)
    }

    /// [`StreamRecord::created_at`] in milliseconds since the Unix epoch.
    pub fn created_at_millis(&self) -> u64 {
        self.created_at
    }

    /// The body parsed as JSON. A body that is not JSON of type `T` is an
    /// [`ErrorKind::Decode`](crate::ErrorKind::Decode) error.
    #[cfg(feature = "serde")]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        let what = format_args!("record {} of {}", self.resource_offset, &*self.route);
        crate::json::decode(&self.body, what)
    }
}

impl fmt::Debug for StreamRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamRecord")
            .field("route", &&*self.route)
            .field("offset", &self.resource_offset)
            .field("area_offset", &self.area_offset)
            .field("realm_offset", &self.realm_offset)
            .field("global_offset", &self.global_offset)
            .field("body", &self.body)
            .field("metadata", &self.metadata)
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// Offsets of one route that a READ withheld, with the reason.
///
/// The offsets are the broker's cursor offsets for the read (on the
/// selector's axis); they count as read: a reader continues after them.
#[derive(Clone, PartialEq, Eq)]
pub struct Filtered {
    route: Str,
    first: u64,
    last: u64,
    reason: FilterReason,
}

impl Filtered {
    /// The concrete route of the withheld records.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// The first withheld offset.
    pub fn first_offset(&self) -> u64 {
        self.first
    }

    /// The last withheld offset (equal to the first for a single record).
    pub fn last_offset(&self) -> u64 {
        self.last
    }

    /// Every withheld offset.
    pub fn offsets(&self) -> RangeInclusive<u64> {
        self.first..=self.last
    }

    /// Why they were withheld.
    pub fn reason(&self) -> FilterReason {
        self.reason
    }
}

impl fmt::Debug for Filtered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Filtered")
            .field("route", &&*self.route)
            .field("offsets", &self.offsets())
            .field("reason", &self.reason)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    fn rec(
        resource: u64,
        area: Option<u64>,
        realm: Option<u64>,
        global: Option<u64>,
    ) -> wire::Record {
        wire::Record {
            resource_offset: resource,
            area_offset: area,
            realm_offset: realm,
            global_offset: global,
            body: Bytes::from_static(b"b"),
            metadata: None,
            created_at: 1_700_000_000_000,
        }
    }

    fn encode(page: &wire::ReadPage, global: bool) -> Bytes {
        let mut b = BytesMut::new();
        page.encode(&mut b, global);
        b.freeze()
    }

    fn item(route: &'static str, kind: ItemKind) -> wire::Item {
        wire::Item {
            route: Str::from_static(route),
            kind,
        }
    }

    #[test]
    fn next_offset_follows_the_selector_axis() {
        let raw = wire::ReadPage {
            items: vec![item(
                "stream://r/a/x",
                ItemKind::Event(rec(3, Some(10), Some(20), None)),
            )],
            last_resource_offset: 3,
            last_area_offset: Some(10),
            last_realm_offset: Some(20),
            has_more: true,
            ..wire::ReadPage::default()
        };
        for (scope, want) in [
            (SelectorScope::Resource, 4),
            (SelectorScope::Area, 11),
            (SelectorScope::Realm, 21),
        ] {
            let page = ReadPage::decode(encode(&raw, false), scope, 0.into()).unwrap();
            assert_eq!(page.next_offset(), want, "{scope:?}");
            assert!(!page.caught_up());
            assert!(!page.next_position().is_continuation());
        }
    }

    #[test]
    fn an_absent_axis_keeps_the_requested_offset() {
        let raw = wire::ReadPage {
            last_resource_offset: 6,
            has_more: false,
            ..wire::ReadPage::default()
        };
        let page = ReadPage::decode(encode(&raw, false), SelectorScope::Area, 7.into()).unwrap();
        assert_eq!(page.next_offset(), 7);
        assert!(page.caught_up());
        // An empty resource page at 0 reports last = 0 (saturated): still 0.
        let raw = wire::ReadPage::default();
        let page =
            ReadPage::decode(encode(&raw, false), SelectorScope::Resource, 0.into()).unwrap();
        assert_eq!(page.next_offset(), 0);
        // The empty `read_page` bytes are an empty, caught-up page.
        let page = ReadPage::decode(Bytes::new(), SelectorScope::Global, 9.into()).unwrap();
        assert_eq!((page.next_offset(), page.caught_up()), (9, true));
    }

    #[test]
    fn global_pages_carry_the_continuation_only_while_more() {
        let raw = wire::ReadPage {
            items: vec![item(
                "stream://r/a/x",
                ItemKind::Filtered {
                    offset: 41,
                    reason: FilterReason::ServerFilter,
                },
            )],
            last_global_offset: Some(41),
            has_more: true,
            cursor_fingerprint: Some(0xF00D),
            captured_watermark: Some(99),
            ..wire::ReadPage::default()
        };
        let page = ReadPage::decode(encode(&raw, true), SelectorScope::Global, 40.into()).unwrap();
        let next = page.next_position();
        assert_eq!(next.offset(), 42);
        assert!(next.is_continuation());
        let req =
            next.read_request(&ReadSpec::new("stream://**", &ReadOptions::default()).unwrap());
        assert_eq!(
            (
                req.from_offset,
                req.cursor_fingerprint,
                req.captured_watermark
            ),
            (42, Some(0xF00D), Some(99))
        );
        match &page.items()[0] {
            StreamItem::Filtered(f) => {
                assert_eq!(
                    (f.offsets(), f.reason()),
                    (41..=41, FilterReason::ServerFilter)
                )
            }
            other => panic!("{other:?}"),
        }
        let done = wire::ReadPage {
            has_more: false,
            ..raw
        };
        let page = ReadPage::decode(encode(&done, true), SelectorScope::Global, 40.into()).unwrap();
        assert!(!page.next_position().is_continuation());
    }

    #[test]
    fn one_bad_route_fails_the_page() {
        for bad in [
            "stream://r/a",
            "stream://r/a/*",
            "kv://r/a/x",
            "stream://r/a/x/y",
        ] {
            let raw = wire::ReadPage {
                items: vec![
                    item("stream://r/a/x", ItemKind::Event(rec(0, None, None, None))),
                    wire::Item {
                        route: Str::from(bad),
                        kind: ItemKind::Event(rec(1, None, None, None)),
                    },
                ],
                ..wire::ReadPage::default()
            };
            let e =
                ReadPage::decode(encode(&raw, false), SelectorScope::Area, 0.into()).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Protocol, "{bad}");
        }
        // Global fields decoded for a non-global scope: trailing bytes.
        let raw = wire::ReadPage {
            last_global_offset: Some(1),
            ..wire::ReadPage::default()
        };
        assert!(ReadPage::decode(encode(&raw, true), SelectorScope::Realm, 0.into()).is_err());
    }

    #[test]
    fn records_expose_their_offsets() {
        let r = StreamRecord::from_wire(
            Str::from_static("stream://r/a/x"),
            rec(5, Some(6), Some(7), Some(8)),
        );
        assert_eq!(r.route(), "stream://r/a/x");
        assert_eq!(
            (
                r.offset(),
                r.area_offset(),
                r.realm_offset(),
                r.global_offset()
            ),
            (5, Some(6), Some(7), Some(8))
        );
        assert_eq!(
            r.created_at(),
            UNIX_EPOCH + Duration::from_millis(1_700_000_000_000)
        );
        let item = StreamItem::Record(r);
        assert_eq!(item.axis_offset(SelectorScope::Realm), Some(7));
        assert_eq!(item.route(), "stream://r/a/x");
    }
}
