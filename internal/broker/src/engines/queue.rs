//! Queue (200–209): stub. Every request is answered with the backend error
//! 4007 "not implemented" (coded, as errors raised before the domain are),
//! a refused one with 4009 when unauthorized.

use fitz_protocol::codes;

use super::{Engine, QueueRequest, Refusal, Services};
use crate::session::{CloseReason, Reply, Session};
use crate::storage::StorageError;

/// The Queue engine.
pub struct QueueEngine {}

impl Engine for QueueEngine {
    type Request = QueueRequest;

    fn start(_services: &Services) -> Result<Self, StorageError> {
        Ok(Self {})
    }

    fn handle(&self, _session: &Session, _request: QueueRequest, reply: Reply) {
        reply.coded(codes::QUEUE_BACKEND, "not implemented");
    }

    fn refuse(
        &self,
        _session: &Session,
        refusal: Refusal<'_, QueueRequest>,
        reply: &Reply,
    ) -> Result<(), CloseReason> {
        match refusal {
            Refusal::Unauthorized { .. } => {
                reply.coded(codes::QUEUE_UNAUTHORIZED, "unauthorized: permission denied");
            }
            Refusal::Malformed { .. } | Refusal::BadRoute { .. } => {
                reply.coded(codes::QUEUE_BACKEND, "not implemented");
            }
        }
        Ok(())
    }

    fn session_closed(&self, _session: &Session) {}
}
