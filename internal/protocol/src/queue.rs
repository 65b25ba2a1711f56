//! Queue (200, 202–204, 207–209). 201 (ENQUEUE_BATCH) is reserved and never valid.

use bytes::{BufMut, Bytes, BytesMut};

use crate::DecodeError;
use crate::reply::{Ack, FlaggedSubscribeOk, Message, ReplyBody, RouteOnly};
use crate::types;
use crate::wire::{Reader, Str, WireWrite};

type Result<T> = std::result::Result<T, DecodeError>;

/// Largest RESERVE batch.
pub const MAX_BATCH: u32 = 1024;
/// Longest RESERVE long-poll, in seconds.
pub const MAX_WAIT_SECONDS: u64 = 30;

/// ENQUEUE (200): `str route, bytes body, opt<u64> delay_seconds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueue {
    /// Concrete queue.
    pub route: Str,
    /// Message body.
    pub body: Bytes,
    /// Seconds before the message becomes visible (`None` = now).
    pub delay_seconds: Option<u64>,
}

impl Message for Enqueue {
    fn route(&self) -> Option<&str> {
        Some(&self.route)
    }

    const TYPE: u16 = types::QUEUE_ENQUEUE;
    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.put_str_field(&self.route);
        buf.put_bytes_field(&self.body);
        buf.put_opt_u64(self.delay_seconds);
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            route: r.str()?,
            body: r.bytes()?,
            delay_seconds: r.opt(Reader::u64)?,
        })
    }
}

/// ENQUEUE reply: `u64 message_id`; a bare `[0]` reads as id 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnqueueOk {
    /// Broker-assigned id.
    pub message_id: u64,
}

impl ReplyBody for EnqueueOk {
    const TYPE: u16 = types::QUEUE_ENQUEUE;
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_u64(self.message_id);
    }
    fn decode_body(r: &mut Reader) -> Result<Self> {
        let message_id = if r.is_empty() { 0 } else { r.u64()? };
        Ok(Self { message_id })
    }
}

/// RESERVE (202): `str route_or_pattern, u64 lease_seconds, opt<u32> batch, opt<u64> wait_seconds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserve {
    /// A concrete queue or a wildcard pattern.
    pub route: Str,
    /// Visibility timeout of each reserved message.
    pub lease_seconds: u64,
    /// Most messages wanted (1..=1024).
    pub batch_size: Option<u32>,
    /// Long-poll up to this many seconds when empty (≤ 30).
    pub wait_seconds: Option<u64>,
}

impl Reserve {
    /// True when the request route has a wildcard segment, which makes the
    /// reply's items carry their concrete route.
    pub fn is_wildcard(&self) -> bool {
        crate::route::is_wildcard(&self.route)
    }
}

impl Message for Reserve {
    fn route(&self) -> Option<&str> {
        Some(&self.route)
    }

    const TYPE: u16 = types::QUEUE_RESERVE;
    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.put_str_field(&self.route);
        buf.put_u64(self.lease_seconds);
        buf.put_opt_u32(self.batch_size);
        buf.put_opt_u64(self.wait_seconds);
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            route: r.str()?,
            lease_seconds: r.u64()?,
            batch_size: r.opt(Reader::u32)?,
            wait_seconds: r.opt(Reader::u64)?,
        })
    }
}

/// One reserved message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedItem {
    /// The concrete queue; present only in replies to wildcard requests.
    pub route: Option<Str>,
    /// Message id.
    pub message_id: u64,
    /// Token proving this reservation (EXTEND/COMPLETE).
    pub lease_token: u64,
    /// Body.
    pub body: Bytes,
}

/// RESERVE reply: `u32 n, n × item`. Items carry `str route` first when the
/// request was a wildcard. A bare `[0]` reads as empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReserveOk {
    /// Reserved messages, FIFO within the reply.
    pub items: Vec<ReservedItem>,
}

impl ReserveOk {
    /// Writes the body; items with a route are written in the routed form.
    pub fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_count(self.items.len());
        for it in &self.items {
            if let Some(route) = &it.route {
                buf.put_str_field(route);
            }
            buf.put_u64(it.message_id);
            buf.put_u64(it.lease_token);
            buf.put_bytes_field(&it.body);
        }
    }

    /// Reads the body; `wildcard` says whether the request had a wildcard.
    pub fn decode_body(r: &mut Reader, wildcard: bool) -> Result<Self> {
        if r.is_empty() {
            return Ok(Self::default());
        }
        let min = if wildcard { 24 } else { 20 };
        let n = r.count(min)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            let route = if wildcard { Some(r.str()?) } else { None };
            items.push(ReservedItem {
                route,
                message_id: r.u64()?,
                lease_token: r.u64()?,
                body: r.bytes()?,
            });
        }
        Ok(Self { items })
    }

    /// Appends the reply record `[0]` + body.
    pub fn encode_reply(&self, buf: &mut BytesMut) -> std::result::Result<(), crate::EncodeError> {
        crate::record::encode_record_with(buf, types::QUEUE_RESERVE, |b| {
            b.put_u8(0);
            self.encode_body(b);
        })
    }
}

/// Encoded size of one reserved item.
pub const fn reserved_item_len(route_len: Option<usize>, body_len: usize) -> usize {
    let route = match route_len {
        Some(n) => 4 + n,
        None => 0,
    };
    route + 20 + body_len
}

/// EXTEND (203): `str route, u64 message_id, u64 lease_token, u64 lease_seconds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extend {
    /// Concrete queue of the item.
    pub route: Str,
    /// Message id.
    pub message_id: u64,
    /// Current lease token.
    pub lease_token: u64,
    /// New visibility timeout from now.
    pub lease_seconds: u64,
}

impl Message for Extend {
    fn route(&self) -> Option<&str> {
        Some(&self.route)
    }

    const TYPE: u16 = types::QUEUE_EXTEND;
    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.put_str_field(&self.route);
        buf.put_u64(self.message_id);
        buf.put_u64(self.lease_token);
        buf.put_u64(self.lease_seconds);
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            route: r.str()?,
            message_id: r.u64()?,
            lease_token: r.u64()?,
            lease_seconds: r.u64()?,
        })
    }
}

/// EXTEND reply.
pub type ExtendOk = Ack<{ types::QUEUE_EXTEND }>;

/// COMPLETE (204): `str route, u64 message_id, u64 lease_token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Complete {
    /// Concrete queue of the item.
    pub route: Str,
    /// Message id.
    pub message_id: u64,
    /// Current lease token.
    pub lease_token: u64,
}

impl Message for Complete {
    fn route(&self) -> Option<&str> {
        Some(&self.route)
    }

    const TYPE: u16 = types::QUEUE_COMPLETE;
    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.put_str_field(&self.route);
        buf.put_u64(self.message_id);
        buf.put_u64(self.lease_token);
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            route: r.str()?,
            message_id: r.u64()?,
            lease_token: r.u64()?,
        })
    }
}

/// COMPLETE reply.
pub type CompleteOk = Ack<{ types::QUEUE_COMPLETE }>;

/// SUBSCRIBE (207): `str pattern`.
pub type Subscribe = RouteOnly<{ types::QUEUE_SUBSCRIBE }>;
/// SUBSCRIBE reply: `u8 1, u64 sub_id`.
pub type SubscribeReply = FlaggedSubscribeOk<{ types::QUEUE_SUBSCRIBE }>;
/// UNSUBSCRIBE (208): the original pattern.
pub type Unsubscribe = RouteOnly<{ types::QUEUE_UNSUBSCRIBE }>;
/// UNSUBSCRIBE reply.
pub type UnsubscribeOk = Ack<{ types::QUEUE_UNSUBSCRIBE }>;

/// Availability counters of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Messages visible now.
    pub ready: u64,
    /// Messages waiting out a delay.
    pub delayed: u64,
    /// Messages reserved and not yet completed.
    pub inflight: u64,
}

impl Counters {
    /// The 24-byte `[u64 ready][u64 delayed][u64 inflight]` form.
    pub fn to_bytes(self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..8].copy_from_slice(&self.ready.to_be_bytes());
        out[8..16].copy_from_slice(&self.delayed.to_be_bytes());
        out[16..].copy_from_slice(&self.inflight.to_be_bytes());
        out
    }

    /// Reads the 24-byte form.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let b: &[u8; 24] = b.try_into().ok()?;
        let at = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_be_bytes(w)
        };
        Some(Self {
            ready: at(0),
            delayed: at(8),
            inflight: at(16),
        })
    }
}

/// NOTIFY (209): `u64 sub_id, str route, bytes payload`.
///
/// The broker contract documents three bare `u64` counters after the route;
/// the official client 0.2.0 only accepts a length-prefixed payload. The
/// broker therefore sends the counters wrapped as `bytes` (24 bytes inside a
/// `u32` length), and this decoder accepts both: a consistent length prefix
/// wins, otherwise exactly 24 bytes are read as bare counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// Subscription.
    pub sub_id: u64,
    /// The concrete queue with ready work.
    pub route: Str,
    /// Opaque payload; 24 bytes of counters from this broker.
    pub payload: Bytes,
}

impl Notify {
    /// A notification carrying `counters`.
    pub fn with_counters(sub_id: u64, route: Str, counters: Counters) -> Self {
        Self {
            sub_id,
            route,
            payload: Bytes::copy_from_slice(&counters.to_bytes()),
        }
    }

    /// The counters, when the payload holds them.
    pub fn counters(&self) -> Option<Counters> {
        Counters::from_bytes(&self.payload)
    }
}

impl Message for Notify {
    fn route(&self) -> Option<&str> {
        Some(&self.route)
    }

    const TYPE: u16 = types::QUEUE_NOTIFY;
    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.put_u64(self.sub_id);
        buf.put_str_field(&self.route);
        buf.put_bytes_field(&self.payload);
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        let sub_id = r.u64()?;
        let route = r.str()?;
        let rest = r.peek();
        let prefixed = rest.len() >= 4
            && u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize == rest.len() - 4;
        let payload = if prefixed || rest.len() != 24 {
            r.bytes()?
        } else {
            r.rest()
        };
        Ok(Self {
            sub_id,
            route,
            payload,
        })
    }
}

crate::message::message_enum! {
    /// Every Queue record a client may send: the domain's part of
    /// [`crate::ClientMessage`] (200, 202–204, 207, 208).
    ClientMessage in Queue {
        Enqueue(Enqueue),
        Reserve(Reserve),
        Extend(Extend),
        Complete(Complete),
        Subscribe(Subscribe),
        Unsubscribe(Unsubscribe),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_accepts_bare_counters_and_wrapped_payloads() {
        let c = Counters {
            ready: 3,
            delayed: 0,
            inflight: 1,
        };
        let mut bare = BytesMut::new();
        bare.put_u64(21);
        bare.put_str_field("queue://r/a/q");
        bare.put_slice(&c.to_bytes());
        let n = Notify::decode(bare.freeze()).unwrap();
        assert_eq!(n.counters(), Some(c));

        let wrapped = Notify::with_counters(21, Str::from_static("queue://r/a/q"), c);
        let back = Notify::decode(wrapped.to_payload()).unwrap();
        assert_eq!(back, wrapped);
        assert_eq!(back.counters(), Some(c));
    }

    #[test]
    fn reserve_items_follow_the_request_shape() {
        let routed = ReserveOk {
            items: vec![ReservedItem {
                route: Some(Str::from_static("queue://r/a/q")),
                message_id: 6,
                lease_token: 10,
                body: Bytes::from_static(b"x"),
            }],
        };
        let mut b = BytesMut::new();
        routed.encode_body(&mut b);
        let mut r = Reader::new(b.freeze());
        assert_eq!(ReserveOk::decode_body(&mut r, true).unwrap(), routed);
        assert!(r.is_empty());
        let wildcard = |route: &'static str| Reserve {
            route: Str::from_static(route),
            lease_seconds: 1,
            batch_size: None,
            wait_seconds: None,
        };
        assert!(wildcard("queue://r/**").is_wildcard());
        assert!(!wildcard("queue://r/a/q*x").is_wildcard());
    }
}
