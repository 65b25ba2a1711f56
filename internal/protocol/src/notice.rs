//! Notice (500–504): fire-and-forget fan-out.

use bytes::{BufMut, Bytes, BytesMut};

use crate::DecodeError;
use crate::reply::{Ack, FlaggedSubscribeOk, Message, RouteOnly};
use crate::types;
use crate::wire::{Reader, Str, WireWrite};

type Result<T> = std::result::Result<T, DecodeError>;

/// PUBLISH (500): `str route, bytes payload`. No reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Concrete route.
    pub route: Str,
    /// Payload delivered to every matching subscription.
    pub payload: Bytes,
}

impl Message for Publish {
    fn route(&self) -> Option<&str> {
        Some(&self.route)
    }

    const TYPE: u16 = types::NOTICE_PUBLISH;
    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.reserve(8 + self.route.len() + self.payload.len());
        buf.put_str_field(&self.route);
        buf.put_bytes_field(&self.payload);
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            route: r.str()?,
            payload: r.bytes()?,
        })
    }
}

/// SUBSCRIBE (501): `str pattern` of any depth.
pub type Subscribe = RouteOnly<{ types::NOTICE_SUBSCRIBE }>;
/// SUBSCRIBE reply: `u8 1, u64 sub_id` (the flagless form is also read).
pub type SubscribeReply = FlaggedSubscribeOk<{ types::NOTICE_SUBSCRIBE }>;

/// UNSUBSCRIBE (502): `u64 sub_id` (not the pattern).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Subscription to drop.
    pub sub_id: u64,
}

impl Message for Unsubscribe {
    const TYPE: u16 = types::NOTICE_UNSUBSCRIBE;
    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.put_u64(self.sub_id);
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        Ok(Self { sub_id: r.u64()? })
    }
}

/// UNSUBSCRIBE reply.
pub type UnsubscribeOk = Ack<{ types::NOTICE_UNSUBSCRIBE }>;

/// UNSUBSCRIBE_ALL (503): empty payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnsubscribeAll;

impl Message for UnsubscribeAll {
    const TYPE: u16 = types::NOTICE_UNSUBSCRIBE_ALL;
    fn encode_payload(&self, _buf: &mut BytesMut) {}
    fn decode_payload(_r: &mut Reader) -> Result<Self> {
        Ok(Self)
    }
}

/// UNSUBSCRIBE_ALL reply.
pub type UnsubscribeAllOk = Ack<{ types::NOTICE_UNSUBSCRIBE_ALL }>;

/// NOTIFY (504): `u64 sub_id, str route, bytes payload`.
pub type Notify = crate::reply::Notify<{ types::NOTICE_NOTIFY }>;

crate::message::message_enum! {
    /// Every Notice record a client may send: the domain's part of
    /// [`crate::ClientMessage`] (500–503).
    ClientMessage in Notice {
        Publish(Publish),
        Subscribe(Subscribe),
        Unsubscribe(Unsubscribe),
        UnsubscribeAll(UnsubscribeAll),
    }
}
