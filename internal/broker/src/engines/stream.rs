//! Stream (600–609): stub. Every request is answered with the backend error
//! 2012 "not implemented": status 1 coded for READ, status 2 (the
//! stream-versioned envelope) for every other operation; a refused one with
//! 2009 in the same envelopes when unauthorized.

use fitz_protocol::{WireError, codes, types};

use super::{Engine, Refusal, Services, StreamRequest};
use crate::session::{CloseReason, Reply, Session};
use crate::storage::StorageError;

/// The Stream engine.
pub struct StreamEngine {}

/// READ errors are status 1 coded; every other Stream error is status 2.
fn envelope(ty: u16, code: u32, message: &str) -> WireError {
    if ty == types::STREAM_READ {
        WireError::coded(code, message)
    } else {
        WireError::stream(code, message)
    }
}

impl Engine for StreamEngine {
    type Request = StreamRequest;

    fn start(_services: &Services) -> Result<Self, StorageError> {
        Ok(Self {})
    }

    fn handle(&self, _session: &Session, _request: StreamRequest, reply: Reply) {
        reply.error(&envelope(
            reply.message_type(),
            codes::STREAM_BACKEND,
            "not implemented",
        ));
    }

    fn refuse(
        &self,
        _session: &Session,
        refusal: Refusal<'_, StreamRequest>,
        reply: &Reply,
    ) -> Result<(), CloseReason> {
        let ty = reply.message_type();
        match refusal {
            Refusal::Unauthorized { .. } => reply.error(&envelope(
                ty,
                codes::STREAM_UNAUTHORIZED,
                "unauthorized: permission denied",
            )),
            Refusal::Malformed { .. } | Refusal::BadRoute { .. } => {
                reply.error(&envelope(ty, codes::STREAM_BACKEND, "not implemented"));
            }
        }
        Ok(())
    }

    fn session_closed(&self, _session: &Session) {}
}
