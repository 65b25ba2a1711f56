//! Dispatch enums: every record a client may send ([`ClientMessage`]) and
//! every record the broker pushes unasked ([`ServerPush`]).
//!
//! Replies are not here: a reply's layout depends on the request it answers,
//! so readers decode them with [`crate::decode_reply`] and the request's type.

use bytes::{Bytes, BytesMut};

use crate::reply::Message;
use crate::{DecodeError, EncodeError};
use crate::{control, kv, lease, notice, queue, rpc, schedule, stream};

macro_rules! message_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident($ty:ty),)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        #[allow(missing_docs)]
        pub enum $name {
            $($variant($ty),)*
        }

        impl $name {
            /// Decodes a record of type `ty`. Types outside this direction's
            /// set are [`DecodeError::UnknownMessageType`].
            pub fn decode(ty: u16, payload: Bytes) -> Result<Self, DecodeError> {
                $(if ty == <$ty as Message>::TYPE {
                    return Ok(Self::$variant(<$ty as Message>::decode(payload)?));
                })*
                Err(DecodeError::UnknownMessageType(ty))
            }

            /// True when `ty` belongs to this direction's set.
            pub fn accepts(ty: u16) -> bool {
                false $(|| ty == <$ty as Message>::TYPE)*
            }

            /// The record type.
            pub fn message_type(&self) -> u16 {
                match self {
                    $(Self::$variant(_) => <$ty as Message>::TYPE,)*
                }
            }

            /// Appends the message as one record.
            pub fn encode_record(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
                match self {
                    $(Self::$variant(m) => m.encode_record(buf),)*
                }
            }
        }

        $(impl From<$ty> for $name {
            fn from(m: $ty) -> Self {
                Self::$variant(m)
            }
        })*
    };
}

message_enum! {
    /// Every record a client may send to the broker (CORRELATE excepted: the
    /// record layer folds it into the record it labels).
    ClientMessage {
        Connect(control::Connect),
        SessionMetadata(control::SessionMetadata),
        KvBegin(kv::Begin),
        KvCommit(kv::Commit),
        KvRollback(kv::Rollback),
        KvGet(kv::Get),
        KvPut(kv::Put),
        KvInsert(kv::Insert),
        KvDelete(kv::Delete),
        KvDeleteRange(kv::DeleteRange),
        KvScan(kv::Scan),
        KvSubscribe(kv::Subscribe),
        KvUnsubscribe(kv::Unsubscribe),
        QueueEnqueue(queue::Enqueue),
        QueueReserve(queue::Reserve),
        QueueExtend(queue::Extend),
        QueueComplete(queue::Complete),
        QueueSubscribe(queue::Subscribe),
        QueueUnsubscribe(queue::Unsubscribe),
        RpcSubscribeWorker(rpc::SubscribeWorker),
        RpcUnsubscribeWorker(rpc::UnsubscribeWorker),
        RpcRequest(rpc::Request),
        RpcResponse(rpc::Response),
        RpcCancel(rpc::Cancel),
        LeaseAcquire(lease::Acquire),
        LeaseRenew(lease::Renew),
        LeaseRelease(lease::Release),
        LeaseQuery(lease::Query),
        LeaseSubscribe(lease::Subscribe),
        LeaseUnsubscribe(lease::Unsubscribe),
        LeaseList(lease::List),
        NoticePublish(notice::Publish),
        NoticeSubscribe(notice::Subscribe),
        NoticeUnsubscribe(notice::Unsubscribe),
        NoticeUnsubscribeAll(notice::UnsubscribeAll),
        StreamBegin(stream::Begin),
        StreamAppend(stream::Append),
        StreamCommit(stream::Commit),
        StreamRollback(stream::Rollback),
        StreamRead(stream::Read),
        StreamLast(stream::Last),
        StreamGetMetadata(stream::GetMetadata),
        StreamSubscribe(stream::Subscribe),
        StreamUnsubscribe(stream::Unsubscribe),
        ScheduleCreate(schedule::Create),
        ScheduleCancel(schedule::Cancel),
        ScheduleList(schedule::List),
        ScheduleSubscribe(schedule::Subscribe),
        ScheduleUnsubscribe(schedule::Unsubscribe),
        ScheduleCreateBatch(schedule::CreateBatch),
        ScheduleListV2(schedule::ListV2),
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
