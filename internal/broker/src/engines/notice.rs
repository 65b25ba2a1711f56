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

use fitz_protocol::notice::{Notify, SubscribeReply};
use fitz_protocol::{codes, types};

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

    fn publish(&self, session: &Session, p: fitz_protocol::notice::Publish) {
        self.subscriptions
            .for_each_match(session.family(), &p.route, |reg| {
                reg.session.notify(&Notify {
                    sub_id: reg.id,
                    route: p.route.clone(),
                    payload: p.payload.clone(),
                });
            });
    }
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
