//! RPC (300–305): worker registration, requests, streamed responses, and the
//! cancellation extension (capability bit 3).

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::DecodeError;
use crate::reply::{Ack, Message, ReplyBody, RouteOnly, WireError};
use crate::types;
use crate::wire::{Reader, Str, WireWrite};

type Result<T> = std::result::Result<T, DecodeError>;

/// Largest `max_concurrent` a worker may register.
pub const MAX_CONCURRENT: u32 = 1024;
/// Largest remaining budget the extension may carry: one day.
pub const MAX_BUDGET_MS: u32 = 86_400_000;
/// Version byte of both extensions.
pub const EXTENSION_VERSION: u8 = 1;
/// Registration extension flag: the worker supports cancellation.
pub const FLAG_SUPPORTS_CANCELLATION: u8 = 1;

/// The 16-byte id of an RPC call: the caller's UUID, or the invocation UUID
/// the broker substitutes for workers that support cancellation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RpcId(pub [u8; 16]);

impl fmt::Debug for RpcId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Display for RpcId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// SUBSCRIBE_WORKER (300): `str pattern, u32 max_concurrent [, u8 1, u8 flags]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeWorker {
    /// Exact route or pattern served.
    pub pattern: Str,
    /// Credit shared across every route the pattern matches (1..=1024).
    pub max_concurrent: u32,
    /// Registration extension flags; `None` omits the extension (broker
    /// without capability bit 3).
    pub extension_flags: Option<u8>,
}

impl SubscribeWorker {
    /// True when the worker declared cancellation support.
    pub fn supports_cancellation(&self) -> bool {
        self.extension_flags
            .is_some_and(|f| f & FLAG_SUPPORTS_CANCELLATION != 0)
    }
}

impl Message for SubscribeWorker {
    fn route(&self) -> Option<&str> {
        Some(&self.pattern)
    }

    const TYPE: u16 = types::RPC_SUBSCRIBE_WORKER;
    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.put_str_field(&self.pattern);
        buf.put_u32(self.max_concurrent);
        if let Some(flags) = self.extension_flags {
            buf.put_u8(EXTENSION_VERSION);
            buf.put_u8(flags);
        }
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        let pattern = r.str()?;
        let max_concurrent = r.u32()?;
        let extension_flags = if r.is_empty() {
            None
        } else {
            let version = r.u8()?;
            if version != EXTENSION_VERSION {
                return Err(DecodeError::InvalidValue {
                    field: "extension version",
                    value: version.into(),
                });
            }
            let flags = r.u8()?;
            if flags & !FLAG_SUPPORTS_CANCELLATION != 0 {
                return Err(DecodeError::InvalidValue {
                    field: "extension flags",
                    value: flags.into(),
                });
            }
            Some(flags)
        };
        Ok(Self {
            pattern,
            max_concurrent,
            extension_flags,
        })
    }
}

/// SUBSCRIBE_WORKER reply: `[0][bytes data]`, the broker sends empty data
/// (`[0][u32 0]`). Readers ignore what follows the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscribeWorkerOk;

impl ReplyBody for SubscribeWorkerOk {
    const TYPE: u16 = types::RPC_SUBSCRIBE_WORKER;
    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_u32(0);
    }
    fn decode_body(r: &mut Reader) -> Result<Self> {
        r.rest();
        Ok(Self)
    }
}

/// UNSUBSCRIBE_WORKER (301): the pattern.
pub type UnsubscribeWorker = RouteOnly<{ types::RPC_UNSUBSCRIBE_WORKER }>;
/// UNSUBSCRIBE_WORKER reply.
pub type UnsubscribeWorkerOk = Ack<{ types::RPC_UNSUBSCRIBE_WORKER }>;

/// REQUEST (302), both caller → broker and broker → worker:
/// `uuid id, str route, bytes body [, u8 1, u8 1, u32 remaining_budget_ms]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Caller UUID (or invocation UUID on delivery to a supporting worker).
    pub id: RpcId,
    /// Concrete route.
    pub route: Str,
    /// Request body.
    pub body: Bytes,
    /// Remaining budget in ms (the budget extension); `None` omits it.
    pub budget_ms: Option<u32>,
}

impl Message for Request {
    fn route(&self) -> Option<&str> {
        Some(&self.route)
    }

    const TYPE: u16 = types::RPC_REQUEST;
    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.reserve(16 + 8 + self.route.len() + self.body.len() + 6);
        buf.put_slice(&self.id.0);
        buf.put_str_field(&self.route);
        buf.put_bytes_field(&self.body);
        if let Some(ms) = self.budget_ms {
            buf.put_u8(EXTENSION_VERSION);
            buf.put_u8(1);
            buf.put_u32(ms);
        }
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        let id = RpcId(r.uuid()?);
        let route = r.str()?;
        let body = r.bytes()?;
        let budget_ms = if r.is_empty() {
            None
        } else {
            let version = r.u8()?;
            let kind = r.u8()?;
            if version != EXTENSION_VERSION || kind != 1 {
                return Err(DecodeError::Malformed("unknown RPC request extension"));
            }
            let ms = r.u32()?;
            if ms > MAX_BUDGET_MS {
                return Err(DecodeError::InvalidValue {
                    field: "remaining_budget_ms",
                    value: ms.into(),
                });
            }
            Some(ms)
        };
        Ok(Self {
            id,
            route,
            body,
            budget_ms,
        })
    }
}

/// The call UUID an RPC push carries, read without decoding the rest (for
/// routing): the leading field of REQUEST (302) and RESPONSE (303), after
/// the kind byte of LIFECYCLE (305). `None` for other types or a payload too
/// short to hold one.
pub fn push_id(ty: u16, payload: &[u8]) -> Option<RpcId> {
    let at = match ty {
        types::RPC_REQUEST | types::RPC_RESPONSE => 0,
        types::RPC_LIFECYCLE => 1,
        _ => return None,
    };
    Some(RpcId(payload.get(at..at + 16)?.try_into().ok()?))
}

/// The route of a REQUEST delivery (302), read without decoding its body
/// (for routing to the worker whose pattern matches).
pub fn request_route(payload: &Bytes) -> Option<Str> {
    let mut r = Reader::new(payload.slice(16.min(payload.len())..));
    r.str().ok()
}

/// RESPONSE (303): `uuid id, u64 sequence, u8 flags (bit 0 = end), bytes body`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The id the frame belongs to.
    pub id: RpcId,
    /// Chunk number, from 0, contiguous.
    pub sequence: u64,
    /// Last chunk of the call.
    pub end: bool,
    /// Chunk body (or a coded error envelope on a broker terminal frame).
    pub body: Bytes,
}

impl Response {
    /// The terminal frame the broker sends a caller when a call fails:
    /// sequence 0, end, body `[1][u32 code][str message]`.
    pub fn terminal_error(id: RpcId, code: u32, message: &str) -> Self {
        let mut body = BytesMut::with_capacity(9 + message.len());
        WireError::coded(code, Str::from(message)).encode(&mut body);
        Self {
            id,
            sequence: 0,
            end: true,
            body: body.freeze(),
        }
    }

    /// Reads a terminal body that is exactly a coded RPC error (6001–6013);
    /// any other body is data.
    pub fn as_error(&self) -> Option<WireError> {
        if !self.end || self.body.first() != Some(&1) {
            return None;
        }
        let e = WireError::decode(self.body.clone()).ok()?;
        e.code().is_some_and(crate::codes::is_rpc).then_some(e)
    }
}

impl Message for Response {
    const TYPE: u16 = types::RPC_RESPONSE;
    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.reserve(16 + 8 + 1 + 4 + self.body.len());
        buf.put_slice(&self.id.0);
        buf.put_u64(self.sequence);
        buf.put_flag(self.end);
        buf.put_bytes_field(&self.body);
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            id: RpcId(r.uuid()?),
            sequence: r.u64()?,
            end: r.flag()?,
            body: r.bytes()?,
        })
    }
}

/// Why a caller cancels (RPC_CANCEL kind 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// The caller asked.
    Explicit = 1,
    /// The caller's deadline passed.
    CallerDeadline = 2,
}

/// RPC_CANCEL (304).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// Kind 1: the caller cancels its call `id`.
    Caller {
        /// Caller UUID.
        id: RpcId,
        /// Why.
        reason: CancelReason,
    },
    /// Kind 3: the worker finished cleaning up invocation `id`.
    CleanupDone {
        /// Invocation UUID.
        id: RpcId,
    },
}

impl Message for Cancel {
    const TYPE: u16 = types::RPC_CANCEL;
    fn encode_payload(&self, buf: &mut BytesMut) {
        match self {
            Cancel::Caller { id, reason } => {
                buf.put_u8(1);
                buf.put_slice(&id.0);
                buf.put_u8(*reason as u8);
            }
            Cancel::CleanupDone { id } => {
                buf.put_u8(3);
                buf.put_slice(&id.0);
            }
        }
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        match r.u8()? {
            1 => {
                let id = RpcId(r.uuid()?);
                let reason = match r.u8()? {
                    1 => CancelReason::Explicit,
                    2 => CancelReason::CallerDeadline,
                    v => {
                        return Err(DecodeError::InvalidValue {
                            field: "cancel reason",
                            value: v.into(),
                        });
                    }
                };
                Ok(Cancel::Caller { id, reason })
            }
            3 => Ok(Cancel::CleanupDone {
                id: RpcId(r.uuid()?),
            }),
            k => Err(DecodeError::InvalidValue {
                field: "cancel kind",
                value: k.into(),
            }),
        }
    }
}

/// Why the broker signals a worker (RPC_LIFECYCLE kind 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalReason {
    /// The caller cancelled explicitly.
    Explicit = 1,
    /// The caller's deadline passed.
    CallerDeadline = 2,
    /// The caller disconnected.
    CallerDisconnected = 3,
    /// The broker's own deadline passed.
    BrokerDeadline = 4,
}

/// What became of a caller's cancel (RPC_LIFECYCLE kind 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelStatus {
    /// The call was still queued and was removed.
    QueuedRemoved = 1,
    /// The signal was forwarded to the worker (which may still finish).
    Forwarded = 2,
    /// The worker does not support cancellation.
    Unsupported = 3,
    /// Already cancelled, awaiting worker cleanup.
    AlreadyCancelled = 4,
    /// Unknown call, not the caller's, or already finished.
    Unknown = 5,
    /// Forwarding to the worker failed.
    ForwardFailed = 6,
}

/// RPC_LIFECYCLE (305).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Kind 2, to a worker: stop working on invocation `id`.
    WorkerSignal {
        /// Invocation UUID.
        id: RpcId,
        /// Why.
        reason: SignalReason,
    },
    /// Kind 4, to a caller: the outcome of its RPC_CANCEL.
    CallerResult {
        /// Caller UUID.
        id: RpcId,
        /// Outcome.
        status: CancelStatus,
    },
}

impl Message for Lifecycle {
    const TYPE: u16 = types::RPC_LIFECYCLE;
    fn encode_payload(&self, buf: &mut BytesMut) {
        match self {
            Lifecycle::WorkerSignal { id, reason } => {
                buf.put_u8(2);
                buf.put_slice(&id.0);
                buf.put_u8(*reason as u8);
            }
            Lifecycle::CallerResult { id, status } => {
                buf.put_u8(4);
                buf.put_slice(&id.0);
                buf.put_u8(*status as u8);
            }
        }
    }
    fn decode_payload(r: &mut Reader) -> Result<Self> {
        let kind = r.u8()?;
        let id = RpcId(r.uuid()?);
        let code = r.u8()?;
        let bad = |field| DecodeError::InvalidValue {
            field,
            value: code.into(),
        };
        match kind {
            2 => Ok(Lifecycle::WorkerSignal {
                id,
                reason: match code {
                    1 => SignalReason::Explicit,
                    2 => SignalReason::CallerDeadline,
                    3 => SignalReason::CallerDisconnected,
                    4 => SignalReason::BrokerDeadline,
                    _ => return Err(bad("signal reason")),
                },
            }),
            4 => Ok(Lifecycle::CallerResult {
                id,
                status: match code {
                    1 => CancelStatus::QueuedRemoved,
                    2 => CancelStatus::Forwarded,
                    3 => CancelStatus::Unsupported,
                    4 => CancelStatus::AlreadyCancelled,
                    5 => CancelStatus::Unknown,
                    6 => CancelStatus::ForwardFailed,
                    _ => return Err(bad("cancel status")),
                },
            }),
            k => Err(DecodeError::InvalidValue {
                field: "lifecycle kind",
                value: k.into(),
            }),
        }
    }
}

crate::message::message_enum! {
    /// Every RPC record a client may send: the domain's part of
    /// [`crate::ClientMessage`] (300–304).
    ClientMessage in Rpc {
        SubscribeWorker(SubscribeWorker),
        UnsubscribeWorker(UnsubscribeWorker),
        Request(Request),
        Response(Response),
        Cancel(Cancel),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_error_round_trips() {
        let r = Response::terminal_error(RpcId([7; 16]), 6004, "No workers registered for route");
        let e = r.as_error().unwrap();
        assert_eq!(e.code(), Some(6004));
        let data = Response {
            body: Bytes::from_static(b"\x01hello"),
            ..r.clone()
        };
        assert_eq!(data.as_error(), None);
        let not_rpc = Response::terminal_error(RpcId([7; 16]), 4001, "x");
        assert_eq!(not_rpc.as_error(), None);
    }

    #[test]
    fn extensions_are_validated() {
        let mut b = BytesMut::new();
        b.put_str_field("rpc://a/b");
        b.put_u32(4);
        b.put_slice(&[2, 1]);
        assert!(SubscribeWorker::decode(b.freeze()).is_err());
        let mut b = BytesMut::new();
        b.put_str_field("rpc://a/b");
        b.put_u32(4);
        b.put_slice(&[1, 0]);
        let w = SubscribeWorker::decode(b.freeze()).unwrap();
        assert_eq!(w.extension_flags, Some(0));
        assert!(!w.supports_cancellation());
        let req = Request {
            id: RpcId([1; 16]),
            route: Str::from_static("rpc://a/b"),
            body: Bytes::new(),
            budget_ms: Some(MAX_BUDGET_MS + 1),
        };
        assert!(Request::decode(req.to_payload()).is_err());
    }
}
