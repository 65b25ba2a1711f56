//! Schedule (700–707): durable cron schedules and their fire notifications.

use bytes::{BufMut, Bytes, BytesMut};

use crate::DecodeError;
use crate::reply::{Ack, FlaggedSubscribeOk, Message, ReplyBody, RouteOnly};
use crate::types;
use crate::wire::{Reader, Str, WireWrite};

type Result<T> = std::result::Result<T, DecodeError>;

/// Largest LIST / LIST_V2 page.
pub const MAX_LIST_LIMIT: u64 = 1000;
/// LIST / LIST_V2 page size when none is given.
pub const DEFAULT_LIST_LIMIT: u64 = 100;
/// LIST_V2 continuation prefix (`schedule-list-v1:<family>:<last route>`).
pub const CONTINUATION_PREFIX: &str = "schedule-list-v1:";

/// How a fire is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryMode {
    /// Every matching live subscription.
    Broadcast = 0,
    /// One subscription, round-robin per route.
    Single = 1,
}

impl DeliveryMode {
    fn decode(r: &mut Reader) -> Result<Self> {
        match r.u8()? {
            0 => Ok(Self::Broadcast),
            1 => Ok(Self::Single),
            v => Err(DecodeError::InvalidValue {
                field: "delivery_mode",
                value: v.into(),
            }),
        }
    }
}

/// A schedule definition: CREATE payload, CREATE_BATCH entry and LIST entry
/// share `str route, str cron, u8 mode, bytes payload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Concrete `schedule://realm/area/resource/operation`.
    pub route: Str,
    /// Five-field UTC cron expression.
    pub cron: Str,
    /// Broadcast or single.
    pub mode: DeliveryMode,
    /// Delivered with every fire.
    pub payload: Bytes,
}

impl Entry {
    /// Writes the four fields.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_str_field(&self.route);
        buf.put_str_field(&self.cron);
        buf.put_u8(self.mode as u8);
        buf.put_bytes_field(&self.payload);
    }

    /// Reads the four fields.
    pub fn decode(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            route: r.str()?,
            cron: r.str()?,
            mode: DeliveryMode::decode(r)?,
            payload: r.bytes()?,
        })
    }

    /// Bytes [`Entry::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        4 + self.route.len() + 4 + self.cron.len() + 1 + 4 + self.payload.len()
    }
}

/// CREATE (700): one [`Entry`]; an upsert keyed by route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Create {
    /// The definition.
    pub entry: Entry,
}

impl Message for Create {
    const TYPE: u16 = types::SCHEDULE_CREATE;
    fn route(&self) -> Option<&str> {
        Some(&self.entry.route)
    }
    fn encode_payload(&self, buf: &mut BytesMut) {
        self.entry.encode(buf);
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            entry: Entry::decode(r)?,
        })
    }
}

/// CREATE reply.
pub type CreateOk = Ack<{ types::SCHEDULE_CREATE }>;
/// CANCEL (701): the route; idempotent.
pub type Cancel = RouteOnly<{ types::SCHEDULE_CANCEL }>;
/// CANCEL reply.
pub type CancelOk = Ack<{ types::SCHEDULE_CANCEL }>;

/// LIST (702): `opt<u64> offset, opt<u64> limit`; an empty payload means both absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct List {
    /// Entries to skip.
    pub offset: Option<u64>,
    /// Page size (≤ 1000; 0 = as many as fit).
    pub limit: Option<u64>,
}

impl Message for List {
    const TYPE: u16 = types::SCHEDULE_LIST;
    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.put_opt_u64(self.offset);
        buf.put_opt_u64(self.limit);
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            offset: r.trailing_opt(Reader::u64)?,
            limit: r.trailing_opt(Reader::u64)?,
        })
    }
}

fn put_entries(buf: &mut BytesMut, entries: &[Entry]) {
    for e in entries {
        buf.put_u8(1);
        e.encode(buf);
    }
    buf.put_u8(0);
}

fn read_entries(r: &mut Reader) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    while r.flag()? {
        out.push(Entry::decode(r)?);
    }
    Ok(out)
}

/// LIST reply: `u64 total_count, {u8 1, entry}*, u8 0`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListOk {
    /// Schedules in the family.
    pub total_count: u64,
    /// This page.
    pub entries: Vec<Entry>,
}

impl ReplyBody for ListOk {
    const TYPE: u16 = types::SCHEDULE_LIST;
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_u64(self.total_count);
        put_entries(buf, &self.entries);
    }
    fn decode_body(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            total_count: r.u64()?,
            entries: read_entries(r)?,
        })
    }
}

/// SUBSCRIBE (703): exact route or pattern.
pub type Subscribe = RouteOnly<{ types::SCHEDULE_SUBSCRIBE }>;
/// SUBSCRIBE reply: `u8 1, u64 sub_id`.
pub type SubscribeReply = FlaggedSubscribeOk<{ types::SCHEDULE_SUBSCRIBE }>;
/// UNSUBSCRIBE (704): the original pattern.
pub type Unsubscribe = RouteOnly<{ types::SCHEDULE_UNSUBSCRIBE }>;
/// UNSUBSCRIBE reply.
pub type UnsubscribeOk = Ack<{ types::SCHEDULE_UNSUBSCRIBE }>;
/// NOTIFY (705): `u64 sub_id, str route, bytes payload`.
pub type Notify = crate::reply::Notify<{ types::SCHEDULE_NOTIFY }>;

/// CREATE_BATCH (706): `u32 n, n × entry`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateBatch {
    /// Definitions, each an upsert.
    pub entries: Vec<Entry>,
}

impl Message for CreateBatch {
    const TYPE: u16 = types::SCHEDULE_CREATE_BATCH;
    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.put_count(self.entries.len());
        for e in &self.entries {
            e.encode(buf);
        }
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        let n = r.count(13)?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            entries.push(Entry::decode(r)?);
        }
        Ok(Self { entries })
    }
}

/// CREATE_BATCH reply.
pub type CreateBatchOk = Ack<{ types::SCHEDULE_CREATE_BATCH }>;

/// LIST_V2 (707): `opt<str> continuation, opt<u64> limit`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListV2 {
    /// Opaque continuation from the previous page.
    pub continuation: Option<Str>,
    /// Page size (default 100, ≤ 1000).
    pub limit: Option<u64>,
}

impl Message for ListV2 {
    const TYPE: u16 = types::SCHEDULE_LIST_V2;
    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.put_opt_str(self.continuation.as_deref());
        buf.put_opt_u64(self.limit);
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            continuation: r.trailing_opt(Reader::str)?,
            limit: r.trailing_opt(Reader::u64)?,
        })
    }
}

/// Version byte of the LIST_V2 page.
pub const LIST_V2_VERSION: u8 = 1;

/// LIST_V2 reply: `u8 version (1), u8 has_more, opt<str> continuation, {u8 1, entry}*, u8 0`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListV2Ok {
    /// More entries follow.
    pub has_more: bool,
    /// Continuation for the next page.
    pub continuation: Option<Str>,
    /// This page, ordered by route.
    pub entries: Vec<Entry>,
}

impl ReplyBody for ListV2Ok {
    const TYPE: u16 = types::SCHEDULE_LIST_V2;
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_u8(LIST_V2_VERSION);
        buf.put_flag(self.has_more);
        buf.put_opt_str(self.continuation.as_deref());
        put_entries(buf, &self.entries);
    }
    fn decode_body(r: &mut Reader) -> Result<Self> {
        let version = r.u8()?;
        if version != LIST_V2_VERSION {
            return Err(DecodeError::InvalidValue {
                field: "list_v2 version",
                value: version.into(),
            });
        }
        Ok(Self {
            has_more: r.flag()?,
            continuation: r.opt(Reader::str)?,
            entries: read_entries(r)?,
        })
    }
}

crate::message::message_enum! {
    /// Every Schedule record a client may send: the domain's part of
    /// [`crate::ClientMessage`] (700–704, 706, 707).
    ClientMessage in Schedule {
        Create(Create),
        Cancel(Cancel),
        List(List),
        Subscribe(Subscribe),
        Unsubscribe(Unsubscribe),
        CreateBatch(CreateBatch),
        ListV2(ListV2),
    }
}
