//! Notice (500–504): fire-and-forget fan-out.
//!
//! PUBLISH sends one NOTIFY per matching registration of the publisher's
//! route family, carrying the concrete route, and answers nothing on
//! success. Delivery goes through each subscriber's bounded notification
//! backlog: a subscriber that does not read loses notifications (counted)
//! and never slows the publisher or other subscribers. Per-subscriber order
//! follows publish order because a publish pushes to every outbound before
//! the publisher's next record is read.
//!
//! Errors: an invalid PUBLISH route is answered with a coded 3001 and an
//! unauthorized PUBLISH with 3009 (AC-NOTICE-009), although PUBLISH has no
//! success reply; the official client routes such a record to its
//! notification bus and drops it.

use bytes::{BufMut, BytesMut};
use fitz_protocol::notice::SubscribeReply;
use fitz_protocol::record::encode_record_with;
use fitz_protocol::{EncodeError, codes, types};

use super::{DomainRequest, Target, concrete, pattern};
use super::{Engine, NoticeRequest, Refusal, Services};
use crate::auth::Access;
use crate::registry::{LimitError, Registry};
use crate::session::{CloseReason, Reply, Session};
use crate::storage::StorageError;
use fitz_protocol::route::Scheme;

/// The Notice engine.
pub struct NoticeEngine {
    subscriptions: Registry,
}

impl NoticeEngine {
    /// The subscription registry (inspection).
    pub fn subscriptions(&self) -> &Registry {
        &self.subscriptions
    }

    /// One NOTIFY per matching registration. The route and payload are
    /// copied from the PUBLISH straight into each subscriber's outbound
    /// buffer (the frames differ only in `sub_id`): no per-subscriber
    /// allocation or reference count.
    fn publish(&self, session: &Session, p: fitz_protocol::notice::Publish) {
        self.subscriptions
            .for_each_match(session.family(), &p.route, |reg| {
                reg.session
                    .notify_with(|b| encode_notify(b, reg.id, &p.route, &p.payload));
            });
    }
}

/// Appends a NOTIFY record `[u64 sub_id][str route][bytes payload]`, the
/// layout of [`Notify`], from borrowed parts.
fn encode_notify(
    b: &mut BytesMut,
    sub_id: u64,
    route: &str,
    payload: &[u8],
) -> Result<(), EncodeError> {
    let (Ok(route_len), Ok(payload_len)) =
        (u32::try_from(route.len()), u32::try_from(payload.len()))
    else {
        return Err(EncodeError::RecordTooLarge(route.len() + payload.len()));
    };
    b.reserve(24 + route.len() + payload.len());
    encode_record_with(b, types::NOTICE_NOTIFY, |b| {
        b.put_u64(sub_id);
        b.put_u32(route_len);
        b.put_slice(route.as_bytes());
        b.put_u32(payload_len);
        b.put_slice(payload);
    })
}

impl Engine for NoticeEngine {
    type Request = NoticeRequest;

    fn start(services: &Services) -> Result<Self, StorageError> {
        Ok(Self {
            subscriptions: Registry::new(services.ids.clone()),
        })
    }

    fn handle(&self, session: &Session, request: NoticeRequest, reply: Reply) {
        match request {
            NoticeRequest::Publish(p) => self.publish(session, p),
            NoticeRequest::Subscribe(s) => match self.subscriptions.register(session, &s.route, ())
            {
                Ok(r) => {
                    let _ = reply.ok(&SubscribeReply { sub_id: r.id });
                }
                Err(e @ (LimitError::Wildcards | LimitError::Total)) => {
                    reply.coded(codes::NOTICE_SUBSCRIPTION_LIMIT, e.message());
                }
            },
            NoticeRequest::Unsubscribe(u) => {
                self.subscriptions.unregister_id(session.id(), u.sub_id);
                reply.ack();
            }
            NoticeRequest::UnsubscribeAll(_) => {
                self.subscriptions.unregister_session(session.id());
                reply.ack();
            }
        }
    }

    fn refuse(
        &self,
        _session: &Session,
        refusal: Refusal<'_, NoticeRequest>,
        reply: &Reply,
    ) -> Result<(), CloseReason> {
        let invalid_code = if reply.message_type() == types::NOTICE_SUBSCRIBE {
            codes::NOTICE_INVALID_PATTERN
        } else {
            codes::NOTICE_INVALID_ROUTE
        };
        match refusal {
            Refusal::Unauthorized { .. } => {
                reply.coded(
                    codes::NOTICE_UNAUTHORIZED,
                    "unauthorized: permission denied",
                );
            }
            Refusal::BadRoute { error, .. } => reply.coded(invalid_code, &error.to_string()),
            Refusal::Malformed { error, .. } => {
                reply.coded(invalid_code, &format!("malformed request: {error}"));
            }
        }
        Ok(())
    }

    fn session_closed(&self, session: &Session) {
        self.subscriptions.unregister_session(session.id());
    }
}

/// Route shapes and permissions per request (spec §4, "Permission levels
/// per message"): checked by the dispatcher before [`Engine::handle`].
impl DomainRequest for NoticeRequest {
    fn target(&self) -> Target<'_> {
        const S: Scheme = Scheme::Notice;
        match self {
            NoticeRequest::Publish(m) => concrete(&m.route, S, Access::Write),
            NoticeRequest::Subscribe(m) => pattern(&m.route, S, Access::Read),
            NoticeRequest::Unsubscribe(_) | NoticeRequest::UnsubscribeAll(_) => {
                Target::SessionOwned
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fitz_protocol::Message;
    use fitz_protocol::notice::Notify;

    #[test]
    fn borrowed_notify_encodes_like_the_message() {
        let n = Notify {
            sub_id: 0x0102_0304_0506_0708,
            route: "notice://a/b/c".into(),
            payload: bytes::Bytes::from_static(b"payload"),
        };
        let mut want = BytesMut::new();
        n.encode_record(&mut want).unwrap();
        let mut got = BytesMut::new();
        encode_notify(&mut got, n.sub_id, &n.route, &n.payload).unwrap();
        assert_eq!(got, want);
        let big = vec![0u8; 65_535];
        let mut b = BytesMut::new();
        assert!(encode_notify(&mut b, 1, "notice://a/b/c", &big).is_err());
        assert!(b.is_empty(), "nothing left behind");
    }
}
