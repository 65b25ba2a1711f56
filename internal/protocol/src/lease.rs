//! Lease (400–403, 407–410): exclusive ownership with fencing tokens.

use bytes::{BufMut, BytesMut};

use crate::DecodeError;
use crate::reply::{Ack, Message, ReplyBody, RouteOnly, SubscribeOk};
use crate::types;
use crate::wire::{Reader, Str, WireWrite};

type Result<T> = std::result::Result<T, DecodeError>;

/// Longest owner id, in bytes.
pub const MAX_OWNER_LEN: usize = 512;
/// Longest ACQUIRE wait, in seconds.
pub const MAX_WAIT_SECONDS: u32 = 30;
/// Most waiters queued on one lease.
pub const MAX_WAITERS: usize = 100;
/// LIST page size when the request says 0.
pub const DEFAULT_LIST_LIMIT: u32 = 100;
/// Largest LIST page.
pub const MAX_LIST_LIMIT: u32 = 500;

/// ACQUIRE (400): `str route, str owner_id, u64 ttl_secs, u32 wait_seconds`.
/// `wait_seconds` is optional on decode (older clients omitted it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acquire {
    /// Concrete lease route.
    pub route: Str,
    /// Who wants it.
    pub owner: Str,
    /// Time to live once held.
    pub ttl_secs: u64,
    /// Wait up to this long when held elsewhere; `None` omits the field.
    pub wait_seconds: Option<u32>,
}

impl Message for Acquire {
    fn route(&self) -> Option<&str> {
        Some(&self.route)
    }

    const TYPE: u16 = types::LEASE_ACQUIRE;
    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.put_str_field(&self.route);
        buf.put_str_field(&self.owner);
        buf.put_u64(self.ttl_secs);
        if let Some(w) = self.wait_seconds {
            buf.put_u32(w);
        }
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            route: r.str()?,
            owner: r.str()?,
            ttl_secs: r.u64()?,
            wait_seconds: if r.is_empty() { None } else { Some(r.u32()?) },
        })
    }
}

/// What ACQUIRE achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcquireKind {
    /// Now held; the token is fresh.
    Acquired = 0,
    /// Already held by this owner; same token, TTL not reset.
    AlreadyHeld = 1,
    /// Queued behind the holder; a grant follows on the same correlation.
    Queued = 2,
    /// Already queued.
    AlreadyQueued = 3,
}

/// ACQUIRE reply (and the deferred grant): `u8 kind, u64 fencing_token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcquireOk {
    /// Outcome.
    pub kind: AcquireKind,
    /// Fencing token (0 while queued).
    pub fencing_token: u64,
}

impl ReplyBody for AcquireOk {
    const TYPE: u16 = types::LEASE_ACQUIRE;
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_u8(self.kind as u8);
        buf.put_u64(self.fencing_token);
    }
    fn decode_body(r: &mut Reader) -> Result<Self> {
        let kind = match r.u8()? {
            0 => AcquireKind::Acquired,
            1 => AcquireKind::AlreadyHeld,
            2 => AcquireKind::Queued,
            3 => AcquireKind::AlreadyQueued,
            v => {
                return Err(DecodeError::InvalidValue {
                    field: "acquire kind",
                    value: v.into(),
                });
            }
        };
        Ok(Self {
            kind,
            fencing_token: r.u64()?,
        })
    }
}

/// RENEW (401): `str route, str owner_id, u64 fencing_token, u64 ttl_secs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renew {
    /// Concrete lease route.
    pub route: Str,
    /// Holder.
    pub owner: Str,
    /// Current token.
    pub fencing_token: u64,
    /// New time to live from now.
    pub ttl_secs: u64,
}

impl Message for Renew {
    fn route(&self) -> Option<&str> {
        Some(&self.route)
    }

    const TYPE: u16 = types::LEASE_RENEW;
    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.put_str_field(&self.route);
        buf.put_str_field(&self.owner);
        buf.put_u64(self.fencing_token);
        buf.put_u64(self.ttl_secs);
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            route: r.str()?,
            owner: r.str()?,
            fencing_token: r.u64()?,
            ttl_secs: r.u64()?,
        })
    }
}

/// RENEW reply: `u64 fencing_token` (unchanged by renewal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenewOk {
    /// The token, still valid.
    pub fencing_token: u64,
}

impl ReplyBody for RenewOk {
    const TYPE: u16 = types::LEASE_RENEW;
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_u64(self.fencing_token);
    }
    fn decode_body(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            fencing_token: r.u64()?,
        })
    }
}

/// RELEASE (402): `str route, str owner_id, u64 fencing_token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Concrete lease route.
    pub route: Str,
    /// Holder.
    pub owner: Str,
    /// Current token.
    pub fencing_token: u64,
}

impl Message for Release {
    fn route(&self) -> Option<&str> {
        Some(&self.route)
    }

    const TYPE: u16 = types::LEASE_RELEASE;
    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.put_str_field(&self.route);
        buf.put_str_field(&self.owner);
        buf.put_u64(self.fencing_token);
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            route: r.str()?,
            owner: r.str()?,
            fencing_token: r.u64()?,
        })
    }
}

/// RELEASE reply.
pub type ReleaseOk = Ack<{ types::LEASE_RELEASE }>;

/// QUERY (403): `str route`.
pub type Query = RouteOnly<{ types::LEASE_QUERY }>;

/// The holder reported by QUERY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Owner id.
    pub owner: Str,
    /// Seconds until expiry.
    pub ttl_remaining_secs: u64,
}

/// QUERY reply: free `[u8 0][u32 waiters]`, held `[u8 1][str owner][u64 ttl][u32 waiters]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryOk {
    /// The holder, `None` when free.
    pub holder: Option<Holder>,
    /// Queued waiters.
    pub waiters: u32,
}

impl ReplyBody for QueryOk {
    const TYPE: u16 = types::LEASE_QUERY;
    fn encode_body(&self, buf: &mut BytesMut) {
        match &self.holder {
            Some(h) => {
                buf.put_u8(1);
                buf.put_str_field(&h.owner);
                buf.put_u64(h.ttl_remaining_secs);
            }
            None => buf.put_u8(0),
        }
        buf.put_u32(self.waiters);
    }
    fn decode_body(r: &mut Reader) -> Result<Self> {
        let holder = r.opt(|r| {
            Ok(Holder {
                owner: r.str()?,
                ttl_remaining_secs: r.u64()?,
            })
        })?;
        Ok(Self {
            holder,
            waiters: r.u32()?,
        })
    }
}

/// SUBSCRIBE (407): exact route or pattern.
pub type Subscribe = RouteOnly<{ types::LEASE_SUBSCRIBE }>;
/// SUBSCRIBE reply: `u64 sub_id`.
pub type SubscribeReply = SubscribeOk<{ types::LEASE_SUBSCRIBE }>;
/// UNSUBSCRIBE (408): the original pattern.
pub type Unsubscribe = RouteOnly<{ types::LEASE_UNSUBSCRIBE }>;
/// UNSUBSCRIBE reply.
pub type UnsubscribeOk = Ack<{ types::LEASE_UNSUBSCRIBE }>;

/// NOTIFY (409): `u64 sub_id, str route, u32 payload_len (0)`. Readers take
/// id and route and ignore the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// Subscription.
    pub sub_id: u64,
    /// The lease whose holder set changed.
    pub route: Str,
}

impl Message for Notify {
    fn route(&self) -> Option<&str> {
        Some(&self.route)
    }

    const TYPE: u16 = types::LEASE_NOTIFY;
    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.put_u64(self.sub_id);
        buf.put_str_field(&self.route);
        buf.put_u32(0);
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        let n = Self {
            sub_id: r.u64()?,
            route: r.str()?,
        };
        r.rest();
        Ok(n)
    }
}

/// A LIST continuation: echo it verbatim with the same pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListCursor {
    /// Snapshot taken by the first call.
    pub snapshot_id: u64,
    /// Position within it.
    pub offset: u32,
}

fn put_cursor(buf: &mut BytesMut, c: Option<ListCursor>) {
    match c {
        Some(c) => {
            buf.put_u8(1);
            buf.put_u64(c.snapshot_id);
            buf.put_u32(c.offset);
        }
        None => buf.put_u8(0),
    }
}

fn read_cursor(r: &mut Reader) -> Result<Option<ListCursor>> {
    r.opt(|r| {
        Ok(ListCursor {
            snapshot_id: r.u64()?,
            offset: r.u32()?,
        })
    })
}

/// LIST (410): `str pattern, u8 has_cursor [, u64 snapshot_id, u32 offset], u32 limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List {
    /// Exact route or pattern.
    pub pattern: Str,
    /// Continuation from the previous page.
    pub cursor: Option<ListCursor>,
    /// Page size; 0 = server default (100), capped at 500.
    pub limit: u32,
}

impl Message for List {
    fn route(&self) -> Option<&str> {
        Some(&self.pattern)
    }

    const TYPE: u16 = types::LEASE_LIST;
    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.put_str_field(&self.pattern);
        put_cursor(buf, self.cursor);
        buf.put_u32(self.limit);
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            pattern: r.str()?,
            cursor: read_cursor(r)?,
            limit: r.u32()?,
        })
    }
}

/// One held lease in a LIST page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    /// Concrete lease route.
    pub route: Str,
    /// Holder.
    pub owner: Str,
    /// The holder's fencing token.
    pub holder_incarnation: u64,
    /// RFC 3339 acquisition time.
    pub acquired_at: Str,
    /// Seconds until expiry.
    pub expires_in_secs: u64,
    /// Renewals so far.
    pub renewals: u32,
}

/// LIST reply: `u32 n, n × item, u8 has_next [, u64 snapshot_id, u32 offset]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListOk {
    /// Held leases.
    pub items: Vec<LeaseInfo>,
    /// Cursor of the next page, `None` on the last page.
    pub next: Option<ListCursor>,
}

impl ReplyBody for ListOk {
    const TYPE: u16 = types::LEASE_LIST;
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_count(self.items.len());
        for it in &self.items {
            buf.put_str_field(&it.route);
            buf.put_str_field(&it.owner);
            buf.put_u64(it.holder_incarnation);
            buf.put_str_field(&it.acquired_at);
            buf.put_u64(it.expires_in_secs);
            buf.put_u32(it.renewals);
        }
        put_cursor(buf, self.next);
    }
    fn decode_body(r: &mut Reader) -> Result<Self> {
        // Smallest item: three empty strings (3 × 4) + u64 + u64 + u32 = 32 bytes.
        let n = r.count(32)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(LeaseInfo {
                route: r.str()?,
                owner: r.str()?,
                holder_incarnation: r.u64()?,
                acquired_at: r.str()?,
                expires_in_secs: r.u64()?,
                renewals: r.u32()?,
            });
        }
        Ok(Self {
            items,
            next: read_cursor(r)?,
        })
    }
}

crate::message::message_enum! {
    /// Every Lease record a client may send: the domain's part of
    /// [`crate::ClientMessage`] (400–403, 407, 408, 410).
    ClientMessage in Lease {
        Acquire(Acquire),
        Renew(Renew),
        Release(Release),
        Query(Query),
        Subscribe(Subscribe),
        Unsubscribe(Unsubscribe),
        List(List),
    }
}
