//! Schedule (700–707): stub. Every request is answered with the coded error
//! 7010 "not implemented" (coded, as errors raised before the domain are),
//! a refused one with 7009 when unauthorized.

use fitz_protocol::codes;

use super::{Engine, Refusal, ScheduleRequest, Services};
use crate::session::{CloseReason, Reply, Session};
use crate::storage::StorageError;

/// The Schedule engine.
pub struct ScheduleEngine {}

impl Engine for ScheduleEngine {
    type Request = ScheduleRequest;

    fn start(_services: &Services) -> Result<Self, StorageError> {
        Ok(Self {})
    }

    fn handle(&self, _session: &Session, _request: ScheduleRequest, reply: Reply) {
        reply.coded(codes::SCHEDULE_BUSY, "not implemented");
    }

    fn refuse(
        &self,
        _session: &Session,
        refusal: Refusal<'_, ScheduleRequest>,
        reply: &Reply,
    ) -> Result<(), CloseReason> {
        match refusal {
            Refusal::Unauthorized { .. } => {
                reply.coded(
                    codes::SCHEDULE_UNAUTHORIZED,
                    "unauthorized: permission denied",
                );
            }
            Refusal::Malformed { .. } | Refusal::BadRoute { .. } => {
                reply.coded(codes::SCHEDULE_BUSY, "not implemented");
            }
        }
        Ok(())
    }

    fn session_closed(&self, _session: &Session) {}
}
