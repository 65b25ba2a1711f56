//! Lease (400–410): stub. Every request is answered with the coded error
//! 5008 "not implemented", a refused one with 5009 when unauthorized.

use fitz_protocol::codes;

use super::{Engine, LeaseRequest, Refusal, Services};
use crate::session::{CloseReason, Reply, Session};
use crate::storage::StorageError;

/// The Lease engine.
pub struct LeaseEngine {}

impl Engine for LeaseEngine {
    type Request = LeaseRequest;

    fn start(_services: &Services) -> Result<Self, StorageError> {
        Ok(Self {})
    }

    fn handle(&self, _session: &Session, _request: LeaseRequest, reply: Reply) {
        reply.coded(codes::LEASE_BAD_REQUEST, "not implemented");
    }

    fn refuse(
        &self,
        _session: &Session,
        refusal: Refusal<'_, LeaseRequest>,
        reply: &Reply,
    ) -> Result<(), CloseReason> {
        match refusal {
            Refusal::Unauthorized { .. } => {
                reply.coded(codes::LEASE_UNAUTHORIZED, "unauthorized: permission denied");
            }
            Refusal::Malformed { .. } | Refusal::BadRoute { .. } => {
                reply.coded(codes::LEASE_BAD_REQUEST, "not implemented");
            }
        }
        Ok(())
    }

    fn session_closed(&self, _session: &Session) {}
}
