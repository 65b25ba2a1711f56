//! KV (100–111): transactions over one `kv://realm/area/resource`, watches.

use bytes::{BufMut, Bytes, BytesMut};

use crate::DecodeError;
use crate::reply::{Ack, Message, ReplyBody, RouteOnly, SubscribeOk};
use crate::types;
use crate::wire::{Reader, Str, WireWrite};

type Result<T> = std::result::Result<T, DecodeError>;

/// Transaction mode chosen at BEGIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxMode {
    /// Snapshot reads, no lock; writes fail with 1005.
    ReadOnly = 0,
    /// Exclusive per-resource lock.
    ReadWrite = 1,
}

impl TxMode {
    fn decode(r: &mut Reader) -> Result<Self> {
        match r.u8()? {
            0 => Ok(Self::ReadOnly),
            1 => Ok(Self::ReadWrite),
            v => Err(DecodeError::InvalidValue {
                field: "mode",
                value: u64::from(v),
            }),
        }
    }
}

/// Commit-time persistence (KV COMMIT and Stream COMMIT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Durability {
    /// Written to the log, not yet synced.
    #[default]
    Buffered = 0,
    /// Synced to stable storage before the reply.
    Sync = 1,
}

impl Durability {
    /// Reads the required persistence byte (0 or 1).
    pub fn decode(r: &mut Reader) -> Result<Self> {
        match r.u8()? {
            0 => Ok(Self::Buffered),
            1 => Ok(Self::Sync),
            v => Err(DecodeError::InvalidValue {
                field: "persistence",
                value: u64::from(v),
            }),
        }
    }
}

/// BEGIN (100): `str route, u8 mode`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    /// The resource the transaction is scoped to.
    pub route: Str,
    /// Read-only or read-write.
    pub mode: TxMode,
}

impl Message for Begin {
    fn route(&self) -> Option<&str> {
        Some(&self.route)
    }

    const TYPE: u16 = types::KV_BEGIN;
    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.put_str_field(&self.route);
        buf.put_u8(self.mode as u8);
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            route: r.str()?,
            mode: TxMode::decode(r)?,
        })
    }
}

/// BEGIN reply: `u64 tx_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeginOk {
    /// Per-session transaction handle.
    pub tx_id: u64,
}

impl ReplyBody for BeginOk {
    const TYPE: u16 = types::KV_BEGIN;
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_u64(self.tx_id);
    }
    fn decode_body(r: &mut Reader) -> Result<Self> {
        Ok(Self { tx_id: r.u64()? })
    }
}

/// COMMIT (101): `u64 tx_id, str route, u8 persistence`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Transaction.
    pub tx_id: u64,
    /// The BEGIN route, repeated.
    pub route: Str,
    /// Required persistence.
    pub durability: Durability,
}

impl Message for Commit {
    fn route(&self) -> Option<&str> {
        Some(&self.route)
    }

    const TYPE: u16 = types::KV_COMMIT;
    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.put_u64(self.tx_id);
        buf.put_str_field(&self.route);
        buf.put_u8(self.durability as u8);
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            tx_id: r.u64()?,
            route: r.str()?,
            durability: Durability::decode(r)?,
        })
    }
}

/// COMMIT reply.
pub type CommitOk = Ack<{ types::KV_COMMIT }>;

/// ROLLBACK (102): `u64 tx_id, str route`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollback {
    /// Transaction.
    pub tx_id: u64,
    /// The BEGIN route, repeated.
    pub route: Str,
}

impl Message for Rollback {
    fn route(&self) -> Option<&str> {
        Some(&self.route)
    }

    const TYPE: u16 = types::KV_ROLLBACK;
    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.put_u64(self.tx_id);
        buf.put_str_field(&self.route);
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            tx_id: r.u64()?,
            route: r.str()?,
        })
    }
}

/// ROLLBACK reply.
pub type RollbackOk = Ack<{ types::KV_ROLLBACK }>;

/// A key-addressed operation: GET (103) and DELETE (106) share `u64 tx_id, str route, bytes key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOp<const T: u16> {
    /// Transaction.
    pub tx_id: u64,
    /// The BEGIN route, repeated.
    pub route: Str,
    /// Key.
    pub key: Bytes,
}

impl<const T: u16> Message for KeyOp<T> {
    fn route(&self) -> Option<&str> {
        Some(&self.route)
    }

    const TYPE: u16 = T;
    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.put_u64(self.tx_id);
        buf.put_str_field(&self.route);
        buf.put_bytes_field(&self.key);
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            tx_id: r.u64()?,
            route: r.str()?,
            key: r.bytes()?,
        })
    }
}

/// GET (103).
pub type Get = KeyOp<{ types::KV_GET }>;
/// DELETE (106).
pub type Delete = KeyOp<{ types::KV_DELETE }>;
/// DELETE reply.
pub type DeleteOk = Ack<{ types::KV_DELETE }>;

/// GET reply: `u8 found [, bytes value]`. The broker writes a not-found as
/// `[0][u32 0]`; readers ignore anything after a 0 flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetOk {
    /// The value, `None` when the key is absent.
    pub value: Option<Bytes>,
}

impl ReplyBody for GetOk {
    const TYPE: u16 = types::KV_GET;
    fn encode_body(&self, buf: &mut BytesMut) {
        match &self.value {
            Some(v) => {
                buf.put_u8(1);
                buf.put_bytes_field(v);
            }
            None => {
                buf.put_u8(0);
                buf.put_u32(0);
            }
        }
    }
    fn decode_body(r: &mut Reader) -> Result<Self> {
        if r.flag()? {
            Ok(Self {
                value: Some(r.bytes()?),
            })
        } else {
            r.rest();
            Ok(Self { value: None })
        }
    }
}

/// A key/value write: PUT (104) and INSERT (105) share `u64 tx_id, str route, bytes key, bytes value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write<const T: u16> {
    /// Transaction.
    pub tx_id: u64,
    /// The BEGIN route, repeated.
    pub route: Str,
    /// Key.
    pub key: Bytes,
    /// Value.
    pub value: Bytes,
}

impl<const T: u16> Message for Write<T> {
    fn route(&self) -> Option<&str> {
        Some(&self.route)
    }

    const TYPE: u16 = T;
    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.reserve(8 + 12 + self.route.len() + self.key.len() + self.value.len());
        buf.put_u64(self.tx_id);
        buf.put_str_field(&self.route);
        buf.put_bytes_field(&self.key);
        buf.put_bytes_field(&self.value);
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            tx_id: r.u64()?,
            route: r.str()?,
            key: r.bytes()?,
            value: r.bytes()?,
        })
    }
}

/// PUT (104).
pub type Put = Write<{ types::KV_PUT }>;
/// INSERT (105): fails with 1006 when the key exists.
pub type Insert = Write<{ types::KV_INSERT }>;
/// PUT reply.
pub type PutOk = Ack<{ types::KV_PUT }>;
/// INSERT reply.
pub type InsertOk = Ack<{ types::KV_INSERT }>;

/// DELETE_RANGE (107): `u64 tx_id, str route, bytes start, bytes end` (end exclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRange {
    /// Transaction.
    pub tx_id: u64,
    /// The BEGIN route, repeated.
    pub route: Str,
    /// First key deleted.
    pub start: Bytes,
    /// First key kept.
    pub end: Bytes,
}

impl Message for DeleteRange {
    fn route(&self) -> Option<&str> {
        Some(&self.route)
    }

    const TYPE: u16 = types::KV_DELETE_RANGE;
    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.put_u64(self.tx_id);
        buf.put_str_field(&self.route);
        buf.put_bytes_field(&self.start);
        buf.put_bytes_field(&self.end);
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            tx_id: r.u64()?,
            route: r.str()?,
            start: r.bytes()?,
            end: r.bytes()?,
        })
    }
}

/// DELETE_RANGE reply.
pub type DeleteRangeOk = Ack<{ types::KV_DELETE_RANGE }>;

/// SCAN (108): `u64 tx_id, str route, opt<bytes> start, opt<bytes> end,
/// opt<u32> limit, u8 reverse [, u8 start_exclusive]`. The trailing byte is
/// only sent to brokers advertising `KV_SCAN_EXCLUSIVE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Transaction.
    pub tx_id: u64,
    /// The BEGIN route, repeated.
    pub route: Str,
    /// Start bound (inclusive unless `start_exclusive`).
    pub start: Option<Bytes>,
    /// End bound (exclusive).
    pub end: Option<Bytes>,
    /// Most items wanted.
    pub limit: Option<u32>,
    /// Descending order: `end < key ≤ start`.
    pub reverse: bool,
    /// The optional trailing byte; `None` omits it.
    pub start_exclusive: Option<bool>,
}

impl Message for Scan {
    fn route(&self) -> Option<&str> {
        Some(&self.route)
    }

    const TYPE: u16 = types::KV_SCAN;
    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.put_u64(self.tx_id);
        buf.put_str_field(&self.route);
        buf.put_opt_bytes(self.start.as_deref());
        buf.put_opt_bytes(self.end.as_deref());
        buf.put_opt_u32(self.limit);
        buf.put_flag(self.reverse);
        if let Some(x) = self.start_exclusive {
            buf.put_flag(x);
        }
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            tx_id: r.u64()?,
            route: r.str()?,
            start: r.opt(Reader::bytes)?,
            end: r.opt(Reader::bytes)?,
            limit: r.opt(Reader::u32)?,
            reverse: r.flag()?,
            start_exclusive: if r.is_empty() { None } else { Some(r.flag()?) },
        })
    }
}

/// SCAN reply: `u32 n, n × (bytes key, bytes value), u8 has_more`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScanOk {
    /// Entries in scan order.
    pub items: Vec<(Bytes, Bytes)>,
    /// More keys remain in range.
    pub has_more: bool,
}

impl ReplyBody for ScanOk {
    const TYPE: u16 = types::KV_SCAN;
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_count(self.items.len());
        for (k, v) in &self.items {
            buf.put_bytes_field(k);
            buf.put_bytes_field(v);
        }
        buf.put_flag(self.has_more);
    }
    fn decode_body(r: &mut Reader) -> Result<Self> {
        let n = r.count(8)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push((r.bytes()?, r.bytes()?));
        }
        Ok(Self {
            items,
            has_more: r.flag()?,
        })
    }
}

/// Encoded size of one SCAN entry, for page budgeting.
pub const fn scan_entry_len(key_len: usize, value_len: usize) -> usize {
    8 + key_len + value_len
}

/// SUBSCRIBE (109): `str pattern`.
pub type Subscribe = RouteOnly<{ types::KV_SUBSCRIBE }>;
/// SUBSCRIBE reply: `u64 sub_id` (no flag byte).
pub type SubscribeReply = SubscribeOk<{ types::KV_SUBSCRIBE }>;
/// UNSUBSCRIBE (110): the original pattern string.
pub type Unsubscribe = RouteOnly<{ types::KV_UNSUBSCRIBE }>;
/// UNSUBSCRIBE reply.
pub type UnsubscribeOk = Ack<{ types::KV_UNSUBSCRIBE }>;

/// NOTIFY (111): `u64 sub_id, str route, u64 mutation_count`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// Subscription.
    pub sub_id: u64,
    /// The committed resource.
    pub route: Str,
    /// Keys the commit changed.
    pub mutation_count: u64,
}

impl Message for Notify {
    fn route(&self) -> Option<&str> {
        Some(&self.route)
    }

    const TYPE: u16 = types::KV_NOTIFY;
    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.put_u64(self.sub_id);
        buf.put_str_field(&self.route);
        buf.put_u64(self.mutation_count);
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            sub_id: r.u64()?,
            route: r.str()?,
            mutation_count: r.u64()?,
        })
    }
}

crate::message::message_enum! {
    /// Every KV record a client may send: the domain's part of
    /// [`crate::ClientMessage`] (100–110).
    ClientMessage in Kv {
        Begin(Begin),
        Commit(Commit),
        Rollback(Rollback),
        Get(Get),
        Put(Put),
        Insert(Insert),
        Delete(Delete),
        DeleteRange(DeleteRange),
        Scan(Scan),
        Subscribe(Subscribe),
        Unsubscribe(Unsubscribe),
    }
}
