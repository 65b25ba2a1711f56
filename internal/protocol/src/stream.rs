//! Stream (600–609): append sessions, paged reads over selectors, filters,
//! commit notifications.

use bytes::{BufMut, Bytes, BytesMut};

use crate::DecodeError;
use crate::kv::Durability;
use crate::reply::{Ack, Message, ReplyBody, RouteOnly};
use crate::types;
use crate::wire::{Reader, Str, WireWrite};

type Result<T> = std::result::Result<T, DecodeError>;

/// BEGIN (600): `str route, opt<bytes> ingest_metadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    /// Concrete stream resource.
    pub route: Str,
    /// Metadata for the whole batch (absent when empty).
    pub ingest_metadata: Option<Bytes>,
}

impl Message for Begin {
    fn route(&self) -> Option<&str> {
        Some(&self.route)
    }

    const TYPE: u16 = types::STREAM_BEGIN;
    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.put_str_field(&self.route);
        buf.put_opt_bytes(self.ingest_metadata.as_deref());
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            route: r.str()?,
            ingest_metadata: r.opt(Reader::bytes)?,
        })
    }
}

/// BEGIN reply: `u64 session_id, bytes data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeginOk {
    /// Append session handle.
    pub session_id: u64,
    /// Opaque broker data.
    pub data: Bytes,
}

impl ReplyBody for BeginOk {
    const TYPE: u16 = types::STREAM_BEGIN;
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_u64(self.session_id);
        buf.put_bytes_field(&self.data);
    }
    fn decode_body(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            session_id: r.u64()?,
            data: r.bytes()?,
        })
    }
}

/// APPEND (601): `u64 session_id, u64 expected_offset, bytes body,
/// opt<bytes> metadata, opt<str> discriminator`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append {
    /// Append session.
    pub session_id: u64,
    /// The offset this record must get (optimistic concurrency).
    pub expected_offset: u64,
    /// Record body.
    pub body: Bytes,
    /// Per-record metadata.
    pub metadata: Option<Bytes>,
    /// Immutable discriminator string that filters match.
    pub discriminator: Option<Str>,
}

impl Message for Append {
    const TYPE: u16 = types::STREAM_APPEND;
    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.put_u64(self.session_id);
        buf.put_u64(self.expected_offset);
        buf.put_bytes_field(&self.body);
        buf.put_opt_bytes(self.metadata.as_deref());
        buf.put_opt_str(self.discriminator.as_deref());
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            session_id: r.u64()?,
            expected_offset: r.u64()?,
            body: r.bytes()?,
            metadata: r.opt(Reader::bytes)?,
            discriminator: r.opt(Reader::str)?,
        })
    }
}

/// A reply carrying one opaque `bytes data` (APPEND, COMMIT).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataOk<const T: u16> {
    /// Opaque broker data.
    pub data: Bytes,
}

impl<const T: u16> DataOk<T> {
    /// The first `u64` of the data: the assigned offset of an APPEND.
    pub fn leading_u64(&self) -> Option<u64> {
        let b: [u8; 8] = self.data.get(..8)?.try_into().ok()?;
        Some(u64::from_be_bytes(b))
    }
}

impl<const T: u16> ReplyBody for DataOk<T> {
    const TYPE: u16 = T;
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_bytes_field(&self.data);
    }
    fn decode_body(r: &mut Reader) -> Result<Self> {
        Ok(Self { data: r.bytes()? })
    }
}

/// APPEND reply: data starts with the assigned offset.
pub type AppendOk = DataOk<{ types::STREAM_APPEND }>;

/// COMMIT (602): `u64 session_id, u8 persistence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// Append session.
    pub session_id: u64,
    /// Required persistence.
    pub durability: Durability,
}

impl Message for Commit {
    const TYPE: u16 = types::STREAM_COMMIT;
    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.put_u64(self.session_id);
        buf.put_u8(self.durability as u8);
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            session_id: r.u64()?,
            durability: Durability::decode(r)?,
        })
    }
}

/// COMMIT reply.
pub type CommitOk = DataOk<{ types::STREAM_COMMIT }>;

/// ROLLBACK (603): `u64 session_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rollback {
    /// Append session.
    pub session_id: u64,
}

impl Message for Rollback {
    const TYPE: u16 = types::STREAM_ROLLBACK;
    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.put_u64(self.session_id);
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            session_id: r.u64()?,
        })
    }
}

/// ROLLBACK reply (anything after the status is ignored).
pub type RollbackOk = Ack<{ types::STREAM_ROLLBACK }>;

/// READ (604): `str selector, u64 from_offset, u64 limit, opt<u64> max_bytes,
/// opt<bytes> filter, opt<u64> cursor_fingerprint, opt<u64> captured_watermark`.
/// The last two are optional trailing fields on decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// Exact resource or one of the nine wildcard selector shapes.
    pub selector: Str,
    /// First offset on the selector's axis.
    pub from_offset: u64,
    /// Most items.
    pub limit: u64,
    /// Byte budget for the page.
    pub max_bytes: Option<u64>,
    /// Encoded [`FilterSet`].
    pub filter: Option<Bytes>,
    /// Global continuation: echo from the previous page.
    pub cursor_fingerprint: Option<u64>,
    /// Global continuation: echo from the previous page.
    pub captured_watermark: Option<u64>,
}

impl Message for Read {
    const TYPE: u16 = types::STREAM_READ;
    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.put_str_field(&self.selector);
        buf.put_u64(self.from_offset);
        buf.put_u64(self.limit);
        buf.put_opt_u64(self.max_bytes);
        buf.put_opt_bytes(self.filter.as_deref());
        buf.put_opt_u64(self.cursor_fingerprint);
        buf.put_opt_u64(self.captured_watermark);
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            selector: r.str()?,
            from_offset: r.u64()?,
            limit: r.u64()?,
            max_bytes: r.opt(Reader::u64)?,
            filter: r.opt(Reader::bytes)?,
            cursor_fingerprint: r.trailing_opt(Reader::u64)?,
            captured_watermark: r.trailing_opt(Reader::u64)?,
        })
    }
}

/// A committed record (LAST payload, READ event item).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Offset within its resource, from 0.
    pub resource_offset: u64,
    /// Offset within its area (assigned at commit).
    pub area_offset: Option<u64>,
    /// Offset within its realm (assigned at commit).
    pub realm_offset: Option<u64>,
    /// Family-wide offset; only carried in global-scope reads.
    pub global_offset: Option<u64>,
    /// Body.
    pub body: Bytes,
    /// Per-record metadata.
    pub metadata: Option<Bytes>,
    /// Creation time, Unix milliseconds.
    pub created_at: u64,
}

impl Record {
    /// Writes the record; `global` adds the `opt<u64> global_offset` field.
    pub fn encode(&self, buf: &mut BytesMut, global: bool) {
        buf.put_u64(self.resource_offset);
        buf.put_opt_u64(self.area_offset);
        buf.put_opt_u64(self.realm_offset);
        if global {
            buf.put_opt_u64(self.global_offset);
        }
        buf.put_bytes_field(&self.body);
        buf.put_opt_bytes(self.metadata.as_deref());
        buf.put_u64(self.created_at);
    }

    /// Reads a record; `global` expects the global-offset field.
    pub fn decode(r: &mut Reader, global: bool) -> Result<Self> {
        Ok(Self {
            resource_offset: r.u64()?,
            area_offset: r.opt(Reader::u64)?,
            realm_offset: r.opt(Reader::u64)?,
            global_offset: if global { r.opt(Reader::u64)? } else { None },
            body: r.bytes()?,
            metadata: r.opt(Reader::bytes)?,
            created_at: r.u64()?,
        })
    }

    /// Bytes [`Record::encode`] writes.
    pub fn encoded_len(&self, global: bool) -> usize {
        let opt = |v: &Option<u64>| if v.is_some() { 9 } else { 1 };
        8 + opt(&self.area_offset)
            + opt(&self.realm_offset)
            + if global { opt(&self.global_offset) } else { 0 }
            + 4
            + self.body.len()
            + self.metadata.as_ref().map_or(1, |m| 5 + m.len())
            + 8
    }
}

/// Why a record was withheld from a READ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterReason {
    /// No reason given.
    Unspecified = 0,
    /// The request's filter excluded it.
    ServerFilter = 1,
    /// The caller may not see it.
    Permission = 2,
    /// Excluded by projection.
    Projection = 3,
}

impl FilterReason {
    fn decode(r: &mut Reader) -> Result<Self> {
        match r.u8()? {
            0 => Ok(Self::Unspecified),
            1 => Ok(Self::ServerFilter),
            2 => Ok(Self::Permission),
            3 => Ok(Self::Projection),
            v => Err(DecodeError::InvalidValue {
                field: "filter reason",
                value: v.into(),
            }),
        }
    }
}

/// What a READ page item holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemKind {
    /// Tag 0: a record.
    Event(Record),
    /// Tag 1: one withheld offset.
    Filtered {
        /// Resource offset.
        offset: u64,
        /// Why.
        reason: FilterReason,
    },
    /// Tag 2: a withheld offset range (inclusive).
    FilteredRange {
        /// First offset.
        from_offset: u64,
        /// Last offset.
        to_offset: u64,
        /// Why.
        reason: FilterReason,
    },
}

/// One READ page item: the concrete route and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Concrete `stream://realm/area/resource`.
    pub route: Str,
    /// Event or filtered marker.
    pub kind: ItemKind,
}

impl Item {
    /// Writes the item.
    pub fn encode(&self, buf: &mut BytesMut, global: bool) {
        buf.put_str_field(&self.route);
        match &self.kind {
            ItemKind::Event(rec) => {
                buf.put_u8(0);
                rec.encode(buf, global);
            }
            ItemKind::Filtered { offset, reason } => {
                buf.put_u8(1);
                buf.put_u64(*offset);
                buf.put_u8(*reason as u8);
            }
            ItemKind::FilteredRange {
                from_offset,
                to_offset,
                reason,
            } => {
                buf.put_u8(2);
                buf.put_u64(*from_offset);
                buf.put_u64(*to_offset);
                buf.put_u8(*reason as u8);
            }
        }
    }

    fn decode(r: &mut Reader, global: bool) -> Result<Self> {
        let route = r.str()?;
        let kind = match r.u8()? {
            0 => ItemKind::Event(Record::decode(r, global)?),
            1 => ItemKind::Filtered {
                offset: r.u64()?,
                reason: FilterReason::decode(r)?,
            },
            2 => ItemKind::FilteredRange {
                from_offset: r.u64()?,
                to_offset: r.u64()?,
                reason: FilterReason::decode(r)?,
            },
            t => {
                return Err(DecodeError::InvalidValue {
                    field: "read item tag",
                    value: t.into(),
                });
            }
        };
        Ok(Self { route, kind })
    }

    /// Bytes [`Item::encode`] writes.
    pub fn encoded_len(&self, global: bool) -> usize {
        4 + self.route.len()
            + 1
            + match &self.kind {
                ItemKind::Event(rec) => rec.encoded_len(global),
                ItemKind::Filtered { .. } => 9,
                ItemKind::FilteredRange { .. } => 17,
            }
    }
}

/// One READ page and its cursor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadPage {
    /// Items in order.
    pub items: Vec<Item>,
    /// Last resource offset covered.
    pub last_resource_offset: u64,
    /// Last area offset covered.
    pub last_area_offset: Option<u64>,
    /// Last realm offset covered.
    pub last_realm_offset: Option<u64>,
    /// Last global offset covered (global scope only).
    pub last_global_offset: Option<u64>,
    /// More items may follow.
    pub has_more: bool,
    /// Global continuation to echo (global scope only).
    pub cursor_fingerprint: Option<u64>,
    /// Global continuation to echo (global scope only).
    pub captured_watermark: Option<u64>,
}

impl ReadPage {
    /// Writes the page (the content of the reply's `bytes read_page`).
    pub fn encode(&self, buf: &mut BytesMut, global: bool) {
        buf.put_count(self.items.len());
        for it in &self.items {
            it.encode(buf, global);
        }
        buf.put_u64(self.last_resource_offset);
        buf.put_opt_u64(self.last_area_offset);
        buf.put_opt_u64(self.last_realm_offset);
        if global {
            buf.put_opt_u64(self.last_global_offset);
        }
        buf.put_flag(self.has_more);
        if global {
            buf.put_opt_u64(self.cursor_fingerprint);
            buf.put_opt_u64(self.captured_watermark);
        }
    }

    /// Reads a page; an empty buffer is an empty, caught-up page.
    pub fn decode(page: Bytes, global: bool) -> Result<Self> {
        if page.is_empty() {
            return Ok(Self::default());
        }
        let mut r = Reader::new(page);
        let n = r.count(14)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(Item::decode(&mut r, global)?);
        }
        let mut p = Self {
            items,
            last_resource_offset: r.u64()?,
            last_area_offset: r.opt(Reader::u64)?,
            last_realm_offset: r.opt(Reader::u64)?,
            ..Self::default()
        };
        if global {
            p.last_global_offset = r.opt(Reader::u64)?;
        }
        p.has_more = r.flag()?;
        if global {
            p.cursor_fingerprint = r.opt(Reader::u64)?;
            p.captured_watermark = r.opt(Reader::u64)?;
        }
        r.finish()?;
        Ok(p)
    }

    /// Most bytes the count and cursor of a page take for the given scope
    /// (every optional present): the fixed cost a page budget must reserve.
    pub const fn max_overhead(global: bool) -> usize {
        if global {
            4 + 8 + 9 * 3 + 1 + 9 * 2
        } else {
            4 + 8 + 9 * 2 + 1
        }
    }
}

/// The generic Stream reply body `u8 has_id [, u64 id], bytes data`, used by
/// READ (no id, data = page) and SUBSCRIBE (id = subscription).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdDataOk<const T: u16> {
    /// Optional id.
    pub id: Option<u64>,
    /// Data.
    pub data: Bytes,
}

impl<const T: u16> ReplyBody for IdDataOk<T> {
    const TYPE: u16 = T;
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_opt_u64(self.id);
        buf.put_bytes_field(&self.data);
    }
    fn decode_body(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            id: r.opt(Reader::u64)?,
            data: r.bytes()?,
        })
    }
}

/// READ reply: `[0][bytes read_page]`; decode the page with [`ReadPage::decode`].
pub type ReadOk = IdDataOk<{ types::STREAM_READ }>;

/// LAST (605): `str route` (concrete).
pub type Last = RouteOnly<{ types::STREAM_LAST }>;

/// LAST reply: the raw record, or nothing when the stream is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastOk {
    /// The last committed record.
    pub record: Option<Record>,
}

impl ReplyBody for LastOk {
    const TYPE: u16 = types::STREAM_LAST;
    fn encode_body(&self, buf: &mut BytesMut) {
        if let Some(r) = &self.record {
            r.encode(buf, false);
        }
    }
    fn decode_body(r: &mut Reader) -> Result<Self> {
        if r.is_empty() {
            return Ok(Self { record: None });
        }
        Ok(Self {
            record: Some(Record::decode(r, false)?),
        })
    }
}

/// GET_METADATA (606): `str route` (concrete).
pub type GetMetadata = RouteOnly<{ types::STREAM_GET_METADATA }>;

/// Stream resource metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Metadata {
    /// First retained offset.
    pub first_offset: Option<u64>,
    /// Last committed offset.
    pub last_offset: Option<u64>,
    /// Records retained.
    pub record_count: u64,
    /// Most records per append session.
    pub max_batch_events: u64,
    /// Most bytes per append session.
    pub max_batch_bytes: u64,
    /// Record retention, if any.
    pub ttl_seconds: Option<u64>,
    /// Committed area offsets so far.
    pub area_watermark: u64,
    /// Committed realm offsets so far.
    pub realm_watermark: u64,
}

/// GET_METADATA reply: raw metadata, or nothing (read as all zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetadataOk {
    /// The metadata.
    pub metadata: Metadata,
}

impl ReplyBody for MetadataOk {
    const TYPE: u16 = types::STREAM_GET_METADATA;
    fn encode_body(&self, buf: &mut BytesMut) {
        let m = &self.metadata;
        buf.put_opt_u64(m.first_offset);
        buf.put_opt_u64(m.last_offset);
        buf.put_u64(m.record_count);
        buf.put_u64(m.max_batch_events);
        buf.put_u64(m.max_batch_bytes);
        buf.put_opt_u64(m.ttl_seconds);
        buf.put_u64(m.area_watermark);
        buf.put_u64(m.realm_watermark);
    }
    fn decode_body(r: &mut Reader) -> Result<Self> {
        if r.is_empty() {
            return Ok(Self::default());
        }
        Ok(Self {
            metadata: Metadata {
                first_offset: r.opt(Reader::u64)?,
                last_offset: r.opt(Reader::u64)?,
                record_count: r.u64()?,
                max_batch_events: r.u64()?,
                max_batch_bytes: r.u64()?,
                ttl_seconds: r.opt(Reader::u64)?,
                area_watermark: r.u64()?,
                realm_watermark: r.u64()?,
            },
        })
    }
}

/// SUBSCRIBE (607): a selector.
pub type Subscribe = RouteOnly<{ types::STREAM_SUBSCRIBE }>;
/// SUBSCRIBE reply: `[0][u8 1][u64 sub_id][bytes data]`.
pub type SubscribeReply = IdDataOk<{ types::STREAM_SUBSCRIBE }>;
/// UNSUBSCRIBE (608): the original selector.
pub type Unsubscribe = RouteOnly<{ types::STREAM_UNSUBSCRIBE }>;
/// UNSUBSCRIBE reply (anything after the status is ignored).
pub type UnsubscribeOk = Ack<{ types::STREAM_UNSUBSCRIBE }>;
/// NOTIFY (609): `u64 sub_id, str route, bytes json`; the JSON is a
/// [`CommitEvent`].
pub type Notify = crate::reply::Notify<{ types::STREAM_NOTIFY }>;

pub use crate::commit_event::{CommitEvent, Committed};

/// Filter marker bytes: format `0x00`, version `0xF1`.
pub const FILTER_MARKER: [u8; 2] = [0x00, 0xF1];

/// One conjunctive filter clause over the record discriminator (a missing
/// discriminator is the empty string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterClause {
    /// Tag 0: equal to.
    Equals(Str),
    /// Tag 1: not equal to.
    NotEquals(Str),
    /// Tag 2: starts with.
    StartsWith(Str),
    /// Tag 3: equal to one of.
    AnyOf(Vec<Str>),
}

impl FilterClause {
    /// Does the clause accept `discriminator`?
    pub fn matches(&self, discriminator: &str) -> bool {
        match self {
            Self::Equals(v) => discriminator == &**v,
            Self::NotEquals(v) => discriminator != &**v,
            Self::StartsWith(v) => discriminator.starts_with(&**v),
            Self::AnyOf(vs) => vs.iter().any(|v| discriminator == &**v),
        }
    }
}

/// Why filter bytes were rejected: maps to 2006 and 2007.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterError {
    /// Bad marker or version (2006).
    UnsupportedVersion,
    /// Marker fine, clauses malformed (2007).
    Malformed(DecodeError),
}

/// The READ filter: clauses ANDed together.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FilterSet {
    /// Clauses, all of which must match.
    pub clauses: Vec<FilterClause>,
}

impl FilterSet {
    /// Does every clause accept `discriminator`?
    pub fn matches(&self, discriminator: &str) -> bool {
        self.clauses.iter().all(|c| c.matches(discriminator))
    }

    /// Encodes `00 F1 [u32 n] clauses…`.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_slice(&FILTER_MARKER);
        buf.put_count(self.clauses.len());
        for c in &self.clauses {
            match c {
                FilterClause::Equals(v) => {
                    buf.put_u8(0);
                    buf.put_str_field(v);
                }
                FilterClause::NotEquals(v) => {
                    buf.put_u8(1);
                    buf.put_str_field(v);
                }
                FilterClause::StartsWith(v) => {
                    buf.put_u8(2);
                    buf.put_str_field(v);
                }
                FilterClause::AnyOf(vs) => {
                    buf.put_u8(3);
                    buf.put_count(vs.len());
                    for v in vs {
                        buf.put_str_field(v);
                    }
                }
            }
        }
    }

    /// The encoding as a fresh buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.encode(&mut b);
        b.freeze()
    }

    /// Decodes filter bytes, telling a bad marker from malformed clauses.
    pub fn decode(bytes: Bytes) -> std::result::Result<Self, FilterError> {
        if bytes.get(..2) != Some(&FILTER_MARKER[..]) {
            return Err(FilterError::UnsupportedVersion);
        }
        let mut r = Reader::new(bytes.slice(2..));
        let set = Self::decode_clauses(&mut r).map_err(FilterError::Malformed)?;
        r.finish().map_err(FilterError::Malformed)?;
        Ok(set)
    }

    fn decode_clauses(r: &mut Reader) -> Result<Self> {
        let n = r.count(5)?;
        let mut clauses = Vec::with_capacity(n);
        for _ in 0..n {
            clauses.push(match r.u8()? {
                0 => FilterClause::Equals(r.str()?),
                1 => FilterClause::NotEquals(r.str()?),
                2 => FilterClause::StartsWith(r.str()?),
                3 => {
                    let m = r.count(4)?;
                    let mut vs = Vec::with_capacity(m);
                    for _ in 0..m {
                        vs.push(r.str()?);
                    }
                    FilterClause::AnyOf(vs)
                }
                t => {
                    return Err(DecodeError::InvalidValue {
                        field: "filter clause tag",
                        value: t.into(),
                    });
                }
            });
        }
        Ok(Self { clauses })
    }
}

crate::message::message_enum! {
    /// Every Stream record a client may send: the domain's part of
    /// [`crate::ClientMessage`] (600–608).
    ClientMessage in Stream {
        Begin(Begin),
        Append(Append),
        Commit(Commit),
        Rollback(Rollback),
        Read(Read),
        Last(Last),
        GetMetadata(GetMetadata),
        Subscribe(Subscribe),
        Unsubscribe(Unsubscribe),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_errors_distinguish_marker_from_body() {
        assert_eq!(
            FilterSet::decode(Bytes::from_static(&[0, 0xF2, 0, 0, 0, 0])),
            Err(FilterError::UnsupportedVersion)
        );
        assert!(matches!(
            FilterSet::decode(Bytes::from_static(&[0, 0xF1, 0, 0, 0, 1, 9])),
            Err(FilterError::Malformed(_))
        ));
        let f = FilterSet {
            clauses: vec![FilterClause::StartsWith(Str::from_static("proj."))],
        };
        let back = FilterSet::decode(f.to_bytes()).unwrap();
        assert!(back.matches("proj.alpha"));
        assert!(!back.matches(""));
    }

    #[test]
    fn encoded_lengths_are_exact() {
        let rec = Record {
            resource_offset: 1,
            area_offset: Some(2),
            realm_offset: None,
            global_offset: Some(4),
            body: Bytes::from_static(b"abc"),
            metadata: Some(Bytes::from_static(b"m")),
            created_at: 9,
        };
        for global in [false, true] {
            let item = Item {
                route: Str::from_static("stream://r/a/x"),
                kind: ItemKind::Event(rec.clone()),
            };
            let mut b = BytesMut::new();
            item.encode(&mut b, global);
            assert_eq!(b.len(), item.encoded_len(global));
            let full = ReadPage {
                last_area_offset: Some(1),
                last_realm_offset: Some(1),
                last_global_offset: Some(1),
                cursor_fingerprint: Some(1),
                captured_watermark: Some(1),
                ..ReadPage::default()
            };
            let mut b = BytesMut::new();
            full.encode(&mut b, global);
            assert_eq!(b.len(), ReadPage::max_overhead(global));
        }
    }
}
