//! Dispatch enums: every record a client may send ([`ClientMessage`]) and
//! every record the broker pushes unasked ([`ServerPush`]).
//!
//! Replies are not here: a reply's layout depends on the request it answers,
//! so readers decode them with [`crate::decode_reply`] and the request's type.

use bytes::{Bytes, BytesMut};

use crate::reply::Message;
use crate::types::Domain;
use crate::{DecodeError, EncodeError};
use crate::{control, kv, lease, notice, queue, rpc, schedule, stream};

/// One dispatch enum: `decode` by record type, `accepts`, `message_type`,
/// `encode_record`, and `From` each message. With `in $outer`, the enum is
/// one domain's part of [`ClientMessage`] (its `$outer` variant), and each
/// message also converts straight into a `ClientMessage`.
macro_rules! message_enum {
    ($(#[$meta:meta])* $name:ident in $outer:ident { $($variant:ident($ty:ty),)* }) => {
        $crate::message::message_enum! { $(#[$meta])* $name { $($variant($ty),)* } }

        $(
            impl From<$ty> for $crate::ClientMessage {
                fn from(m: $ty) -> Self {
                    $crate::ClientMessage::$outer($name::$variant(m))
                }
            }
        )*
    };
    ($(#[$meta:meta])* $name:ident { $($variant:ident($ty:ty),)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum $name {
            $(
                #[doc = concat!("[`", stringify!($ty), "`]")]
                $variant($ty),
            )*
        }

        impl $name {
            /// Decodes a record of type `ty`. Types outside this enum's set
            /// are [`$crate::DecodeError::UnknownMessageType`].
            pub fn decode(ty: u16, payload: bytes::Bytes) -> ::std::result::Result<Self, $crate::DecodeError> {
                $(if ty == <$ty as $crate::Message>::TYPE {
                    return Ok(Self::$variant(<$ty as $crate::Message>::decode(payload)?));
                })*
                Err($crate::DecodeError::UnknownMessageType(ty))
            }

            /// True when `ty` belongs to this enum's set.
            pub fn accepts(ty: u16) -> bool {
                false $(|| ty == <$ty as $crate::Message>::TYPE)*
            }

            /// The record type.
            pub fn message_type(&self) -> u16 {
                match self {
                    $(Self::$variant(_) => <$ty as $crate::Message>::TYPE,)*
                }
            }

            /// Appends the message as one record.
            pub fn encode_record(
                &self,
                buf: &mut bytes::BytesMut,
            ) -> ::std::result::Result<(), $crate::EncodeError> {
                use $crate::Message as _;
                match self {
                    $(Self::$variant(m) => m.encode_record(buf),)*
                }
            }
        }

        $(
            impl From<$ty> for $name {
                fn from(m: $ty) -> Self {
                    Self::$variant(m)
                }
            }
        )*
    };
}

pub(crate) use message_enum;

/// Every record a client may send to the broker (CORRELATE excepted: the
/// record layer folds it into the record it labels): the two control
/// records, and each domain's requests nested in one variant per domain, so
/// the broker matches once per layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// CONNECT (1).
    Connect(control::Connect),
    /// SESSION_METADATA (5).
    SessionMetadata(control::SessionMetadata),
    /// KV (100–110).
    Kv(kv::ClientMessage),
    /// Queue (200–208).
    Queue(queue::ClientMessage),
    /// RPC (300–304).
    Rpc(rpc::ClientMessage),
    /// Lease (400–410).
    Lease(lease::ClientMessage),
    /// Notice (500–503).
    Notice(notice::ClientMessage),
    /// Stream (600–608).
    Stream(stream::ClientMessage),
    /// Schedule (700–707).
    Schedule(schedule::ClientMessage),
}

/// `match` over every variant of a [`ClientMessage`], binding the inner value.
macro_rules! each_variant {
    ($value:expr, $m:ident => $body:expr) => {
        match $value {
            ClientMessage::Connect($m) => $body,
            ClientMessage::SessionMetadata($m) => $body,
            ClientMessage::Kv($m) => $body,
            ClientMessage::Queue($m) => $body,
            ClientMessage::Rpc($m) => $body,
            ClientMessage::Lease($m) => $body,
            ClientMessage::Notice($m) => $body,
            ClientMessage::Stream($m) => $body,
            ClientMessage::Schedule($m) => $body,
        }
    };
}

impl ClientMessage {
    /// Decodes a record of type `ty`, by its domain. Types outside the
    /// client's set are [`DecodeError::UnknownMessageType`].
    pub fn decode(ty: u16, payload: Bytes) -> Result<Self, DecodeError> {
        match Domain::of(ty) {
            Some(Domain::Control) if ty == control::Connect::TYPE => {
                Ok(Self::Connect(control::Connect::decode(payload)?))
            }
            Some(Domain::Control) if ty == control::SessionMetadata::TYPE => Ok(
                Self::SessionMetadata(control::SessionMetadata::decode(payload)?),
            ),
            Some(Domain::Kv) => kv::ClientMessage::decode(ty, payload).map(Self::Kv),
            Some(Domain::Queue) => queue::ClientMessage::decode(ty, payload).map(Self::Queue),
            Some(Domain::Rpc) => rpc::ClientMessage::decode(ty, payload).map(Self::Rpc),
            Some(Domain::Lease) => lease::ClientMessage::decode(ty, payload).map(Self::Lease),
            Some(Domain::Notice) => notice::ClientMessage::decode(ty, payload).map(Self::Notice),
            Some(Domain::Stream) => stream::ClientMessage::decode(ty, payload).map(Self::Stream),
            Some(Domain::Schedule) => {
                schedule::ClientMessage::decode(ty, payload).map(Self::Schedule)
            }
            Some(Domain::Control) | None => Err(DecodeError::UnknownMessageType(ty)),
        }
    }

    /// True when `ty` is a record a client may send.
    pub fn accepts(ty: u16) -> bool {
        match Domain::of(ty) {
            Some(Domain::Control) => {
                ty == control::Connect::TYPE || ty == control::SessionMetadata::TYPE
            }
            Some(Domain::Kv) => kv::ClientMessage::accepts(ty),
            Some(Domain::Queue) => queue::ClientMessage::accepts(ty),
            Some(Domain::Rpc) => rpc::ClientMessage::accepts(ty),
            Some(Domain::Lease) => lease::ClientMessage::accepts(ty),
            Some(Domain::Notice) => notice::ClientMessage::accepts(ty),
            Some(Domain::Stream) => stream::ClientMessage::accepts(ty),
            Some(Domain::Schedule) => schedule::ClientMessage::accepts(ty),
            None => false,
        }
    }

    /// The record type.
    pub fn message_type(&self) -> u16 {
        match self {
            Self::Connect(_) => control::Connect::TYPE,
            Self::SessionMetadata(_) => control::SessionMetadata::TYPE,
            Self::Kv(m) => m.message_type(),
            Self::Queue(m) => m.message_type(),
            Self::Rpc(m) => m.message_type(),
            Self::Lease(m) => m.message_type(),
            Self::Notice(m) => m.message_type(),
            Self::Stream(m) => m.message_type(),
            Self::Schedule(m) => m.message_type(),
        }
    }

    /// Appends the message as one record.
    pub fn encode_record(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        each_variant!(self, m => m.encode_record(buf))
    }
}

impl From<control::Connect> for ClientMessage {
    fn from(m: control::Connect) -> Self {
        Self::Connect(m)
    }
}

impl From<control::SessionMetadata> for ClientMessage {
    fn from(m: control::SessionMetadata) -> Self {
        Self::SessionMetadata(m)
    }
}

message_enum! {
    /// Every record the broker sends without being asked: the hello,
    /// notifications, and RPC traffic (deliveries to workers, responses and
    /// lifecycle signals). A deferred Lease grant is a reply (type 400).
    ServerPush {
        Hello(control::ServerHello),
        KvNotify(kv::Notify),
        QueueNotify(queue::Notify),
        RpcRequest(rpc::Request),
        RpcResponse(rpc::Response),
        RpcLifecycle(rpc::Lifecycle),
        LeaseNotify(lease::Notify),
        NoticeNotify(notice::Notify),
        StreamNotify(stream::Notify),
        ScheduleNotify(schedule::Notify),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types;

    #[test]
    fn client_set_matches_the_registry() {
        for &t in types::ALL {
            let info = types::info(t).unwrap();
            let labels = t == types::CORRELATE;
            assert_eq!(
                ClientMessage::accepts(t),
                info.client_sends && !labels,
                "type {t}"
            );
        }
        assert!(!ClientMessage::accepts(types::QUEUE_ENQUEUE_BATCH_RESERVED));
        assert!(!ClientMessage::accepts(types::KV_NOTIFY));
    }

    #[test]
    fn unknown_types_are_errors() {
        assert_eq!(
            ClientMessage::decode(201, Bytes::new()),
            Err(DecodeError::UnknownMessageType(201))
        );
        assert_eq!(
            ServerPush::decode(100, Bytes::new()),
            Err(DecodeError::UnknownMessageType(100))
        );
    }
}
