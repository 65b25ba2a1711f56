//! RPC (300–305): stub. Registrations are answered with the coded error 6010
//! "not implemented"; a REQUEST (and a RESPONSE) with a terminal RESPONSE 303
//! carrying the same UUID and a coded 6010 body; unauthorized requests with
//! 6009 in the same shapes.

use fitz_protocol::rpc::{Response, RpcId};
use fitz_protocol::{codes, types};

use super::{Engine, Refusal, RpcRequest, Services};
use crate::session::{CloseReason, Reply, Session};
use crate::storage::StorageError;

/// The RPC engine.
pub struct RpcEngine {}

impl RpcEngine {
    /// Answers `request` with `code`: a terminal 303 for calls, coded otherwise.
    fn fail(request: Option<&RpcRequest>, reply: &Reply, code: u32, message: &str) {
        let id = match request {
            Some(RpcRequest::Request(r)) => Some(r.id),
            Some(RpcRequest::Response(r)) => Some(r.id),
            _ => None,
        };
        match id {
            Some(id) => {
                let _ = reply.message(&Response::terminal_error(id, code, message));
            }
            None => reply.coded(code, message),
        }
    }
}

impl Engine for RpcEngine {
    type Request = RpcRequest;

    fn start(_services: &Services) -> Result<Self, StorageError> {
        Ok(Self {})
    }

    fn handle(&self, _session: &Session, request: RpcRequest, reply: Reply) {
        Self::fail(
            Some(&request),
            &reply,
            codes::RPC_UNAVAILABLE,
            "not implemented",
        );
    }

    fn refuse(
        &self,
        _session: &Session,
        refusal: Refusal<'_, RpcRequest>,
        reply: &Reply,
    ) -> Result<(), CloseReason> {
        match refusal {
            Refusal::Unauthorized { request } => Self::fail(
                Some(request),
                reply,
                codes::RPC_UNAUTHORIZED,
                "unauthorized: permission denied",
            ),
            Refusal::BadRoute { request, .. } => {
                Self::fail(
                    Some(request),
                    reply,
                    codes::RPC_UNAVAILABLE,
                    "not implemented",
                );
            }
            Refusal::Malformed { payload, .. } => {
                // A call whose UUID is readable still gets its terminal frame.
                let uuid = payload.get(..16).and_then(|b| <[u8; 16]>::try_from(b).ok());
                match (reply.message_type(), uuid) {
                    (types::RPC_REQUEST | types::RPC_RESPONSE, Some(id)) => {
                        let _ = reply.message(&Response::terminal_error(
                            RpcId(id),
                            codes::RPC_UNAVAILABLE,
                            "not implemented",
                        ));
                    }
                    _ => reply.coded(codes::RPC_UNAVAILABLE, "not implemented"),
                }
            }
        }
        Ok(())
    }

    fn session_closed(&self, _session: &Session) {}
}
