//! The one error type of the crate.
//!
//! Every fallible call returns [`Error`]. Callers branch on [`Error::kind`],
//! read the broker's code with [`Error::code`], and decide what to do next
//! with [`Error::is_retryable`] and [`Error::maybe_applied`]:
//!
//! ```
//! # fn handle(err: fitz::Error) {
//! use fitz::ErrorKind;
//! match err.kind() {
//!     ErrorKind::Broker if err.code() == Some(fitz::codes::KV_KEY_EXISTS) => { /* a value, really */ }
//!     _ if err.is_retryable() && !err.maybe_applied() => { /* safe to send again */ }
//!     _ => { /* give up, or reconcile first when maybe_applied() */ }
//! }
//! # }
//! ```

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use fitz_protocol::codes::{self, Outcome};
use fitz_protocol::{DecodeError, EncodeError, RouteError, WireError};

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, in categories callers can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The transport failed: refused, reset, TLS failure, lost mid-request,
    /// or the client is not connected right now.
    Connection,
    /// The operation did not complete within its timeout.
    Timeout,
    /// The client was closed (by [`crate::Client::close`], or for good after
    /// an authentication rejection during reconnect).
    Closed,
    /// The broker rejected the credentials (it closed the connection during
    /// the handshake). Terminal: build a new client with a valid token.
    Auth,
    /// The broker sent something this client cannot accept.
    Protocol,
    /// A local limit is full (in-flight requests, outbound buffer).
    Backpressure,
    /// The broker answered with a domain error; see [`Error::code`].
    Broker,
    /// A handle from an earlier connection session (KV transaction, stream
    /// append session, queue reservation, lease) was used after a reconnect;
    /// nothing was sent. Each of those handles says so up front with
    /// `is_current()`. Begin, reserve or acquire again.
    Stale,
    /// The operation was cancelled before it completed.
    Cancelled,
    /// The caller passed something invalid (a malformed route, an oversized
    /// payload, a bad option). Nothing was sent.
    InvalidArgument,
    /// A subscription's buffer overflowed under [`crate::Overflow::Error`].
    Overflow,
    /// The broker does not support what was asked (a capability is missing).
    Unsupported,
    /// A payload that arrived intact is not what the caller asked to decode
    /// it as: a `*_json` helper (feature `serde`) found a body that is not
    /// JSON of the requested type. The data and the type disagree; the
    /// connection and the broker are fine, and retrying reads the same bytes.
    Decode,
}

impl ErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Connection => "connection error",
            Self::Timeout => "timed out",
            Self::Closed => "client closed",
            Self::Auth => "authentication rejected",
            Self::Protocol => "protocol error",
            Self::Backpressure => "backpressure",
            Self::Broker => "broker error",
            Self::Stale => "stale handle",
            Self::Cancelled => "cancelled",
            Self::InvalidArgument => "invalid argument",
            Self::Overflow => "subscription overflow",
            Self::Unsupported => "unsupported",
            Self::Decode => "undecodable payload",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from the client or the broker.
///
/// Cheap to clone (one pointer), so one failure can be handed to many
/// waiters, e.g. every subscription of a closed client.
#[derive(Clone)]
pub struct Error {
    inner: Arc<Inner>,
}

struct Inner {
    kind: ErrorKind,
    code: Option<u32>,
    maybe_applied: bool,
    message: Cow<'static, str>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    fn build(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            inner: Arc::new(Inner {
                kind,
                code: None,
                maybe_applied: false,
                message: message.into(),
                source: None,
            }),
        }
    }

    fn with(mut self, f: impl FnOnce(&mut Inner)) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => f(inner),
            None => {
                let old = &self.inner;
                let mut inner = Inner {
                    kind: old.kind,
                    code: old.code,
                    maybe_applied: old.maybe_applied,
                    message: old.message.clone(),
                    source: None,
                };
                f(&mut inner);
                self.inner = Arc::new(inner);
            }
        }
        self
    }

    /// The category of the failure.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The broker's error code, for [`ErrorKind::Broker`] errors that carried
    /// one (see [`crate::codes`]).
    pub fn code(&self) -> Option<u32> {
        self.inner.code
    }

    /// The human-readable message (the broker's, for broker errors).
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// True when sending the same request again later is reasonable: transport
    /// failures, timeouts, local backpressure and the broker codes the registry
    /// marks retryable. Retrying is only *safe* when [`Error::maybe_applied`]
    /// is false or the operation is idempotent.
    pub fn is_retryable(&self) -> bool {
        match self.inner.kind {
            ErrorKind::Connection | ErrorKind::Timeout | ErrorKind::Backpressure => true,
            ErrorKind::Broker => self.inner.code.is_some_and(codes::is_retryable),
            _ => false,
        }
    }

    /// True when the operation may have taken effect on the broker even though
    /// it failed: the request was written and the connection dropped or the
    /// timeout fired before the answer, or the broker reported an outcome it
    /// cannot vouch for (a code whose outcome is unknown, e.g. a backend
    /// failure). False means the broker certainly did not apply it.
    pub fn maybe_applied(&self) -> bool {
        self.inner.maybe_applied
    }

    // ----- constructors (crate-internal) -----

    pub(crate) fn connection(message: impl Into<Cow<'static, str>>) -> Self {
        Self::build(ErrorKind::Connection, message)
    }

    /// The connection was lost while this request was outstanding.
    pub(crate) fn connection_lost(written: bool) -> Self {
        let msg = if written {
            "connection lost before the reply arrived"
        } else {
            "connection lost before the request was sent"
        };
        Self::connection(msg).applied_if(written)
    }

    pub(crate) fn not_connected() -> Self {
        Self::connection("not connected")
    }

    pub(crate) fn timeout(written: bool) -> Self {
        let msg = if written {
            "no reply within the request timeout"
        } else {
            "the request could not be sent within its timeout"
        };
        Self::build(ErrorKind::Timeout, msg).applied_if(written)
    }

    /// A timeout outside a request (the handshake), with its own message.
    pub(crate) fn timed_out(message: impl Into<Cow<'static, str>>) -> Self {
        Self::build(ErrorKind::Timeout, message)
    }

    pub(crate) fn closed() -> Self {
        Self::build(ErrorKind::Closed, "the client is closed")
    }

    /// `Closed` with a more precise reason (e.g. "the client is draining").
    pub(crate) fn closed_because(message: impl Into<Cow<'static, str>>) -> Self {
        Self::build(ErrorKind::Closed, message)
    }

    pub(crate) fn auth(message: impl Into<Cow<'static, str>>) -> Self {
        Self::build(ErrorKind::Auth, message)
    }

    pub(crate) fn protocol(message: impl Into<Cow<'static, str>>) -> Self {
        Self::build(ErrorKind::Protocol, message)
    }

    pub(crate) fn backpressure(message: impl Into<Cow<'static, str>>) -> Self {
        Self::build(ErrorKind::Backpressure, message)
    }

    pub(crate) fn stale() -> Self {
        Self::build(
            ErrorKind::Stale,
            "the handle belongs to an earlier connection session",
        )
    }
    pub(crate) fn cancelled(message: impl Into<Cow<'static, str>>) -> Self {
        Self::build(ErrorKind::Cancelled, message)
    }

    pub(crate) fn invalid(message: impl Into<Cow<'static, str>>) -> Self {
        Self::build(ErrorKind::InvalidArgument, message)
    }

    pub(crate) fn overflow(message: impl Into<Cow<'static, str>>) -> Self {
        Self::build(ErrorKind::Overflow, message)
    }

    pub(crate) fn unsupported(message: impl Into<Cow<'static, str>>) -> Self {
        Self::build(ErrorKind::Unsupported, message)
    }

    /// A received payload is not of the type the caller asked for (the
    /// `serde` feature's typed helpers).
    #[cfg(feature = "serde")]
    pub(crate) fn decode(message: impl Into<Cow<'static, str>>) -> Self {
        Self::build(ErrorKind::Decode, message)
    }

    /// A domain error the broker answered with.
    pub(crate) fn broker(err: &WireError) -> Self {
        let code = err.code();
        let unknown_outcome = code
            .and_then(codes::info)
            .is_some_and(|i| i.outcome == Outcome::Unknown);
        Self::build(ErrorKind::Broker, err.message.to_string()).with(|i| {
            i.code = code;
            i.maybe_applied = unknown_outcome;
        })
    }

    /// A reply that could not be decoded. The request reached the broker, so
    /// what it did is unknown.
    pub(crate) fn malformed_reply(err: DecodeError) -> Self {
        Self::protocol(format!("malformed reply: {err}"))
            .with_source(err)
            .applied_if(true)
    }

    pub(crate) fn route(err: RouteError) -> Self {
        Self::invalid(format!("invalid route: {err}")).with_source(err)
    }

    pub(crate) fn encode(err: EncodeError) -> Self {
        Self::invalid(err.to_string()).with_source(err)
    }

    pub(crate) fn io(context: &'static str, err: std::io::Error) -> Self {
        let kind = if err.kind() == std::io::ErrorKind::TimedOut {
            ErrorKind::Timeout
        } else {
            ErrorKind::Connection
        };
        Self::build(kind, format!("{context}: {err}")).with_source(err)
    }

    pub(crate) fn with_source(
        self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        self.with(|i| i.source = Some(Box::new(source)))
    }

    /// For the request that *opens* a session-bound handle (KV BEGIN, Stream
    /// BEGIN, Lease ACQUIRE): it is pinned to the session it was issued in,
    /// and if that session ended before it was written the caller sees a
    /// plain, retryable "not sent" connection failure. [`ErrorKind::Stale`]
    /// is reserved for using a handle the caller already holds.
    pub(crate) fn stale_as_not_sent(self) -> Self {
        if self.kind() == ErrorKind::Stale {
            Self::connection_lost(false)
        } else {
            self
        }
    }

    pub(crate) fn applied_if(self, maybe_applied: bool) -> Self {
        if self.inner.maybe_applied == maybe_applied {
            return self;
        }
        self.with(|i| i.maybe_applied = maybe_applied)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind);
        if let Some(code) = self.inner.code {
            d.field("code", &code);
        }
        d.field("message", &self.inner.message);
        if self.inner.maybe_applied {
            d.field("maybe_applied", &true);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.inner.code {
            Some(code) => write!(
                f,
                "{} {code} ({}): {}",
                self.inner.kind,
                codes::name(code),
                self.inner.message
            ),
            None => write!(f, "{}: {}", self.inner.kind, self.inner.message),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_codes_classify_through_the_registry() {
        let busy = Error::broker(&WireError::coded(codes::KV_BUSY, "busy"));
        assert_eq!(busy.kind(), ErrorKind::Broker);
        assert_eq!(busy.code(), Some(1014));
        assert!(busy.is_retryable());
        assert!(!busy.maybe_applied());

        let backend = Error::broker(&WireError::coded(codes::QUEUE_BACKEND, "disk"));
        assert!(!backend.is_retryable());
        assert!(backend.maybe_applied());

        let uncoded = Error::broker(&WireError::uncoded("nope"));
        assert_eq!(uncoded.code(), None);
        assert!(!uncoded.is_retryable());
        assert_eq!(uncoded.to_string(), "broker error: nope");
    }

    #[test]
    fn transport_errors_know_whether_the_request_left() {
        assert!(Error::connection_lost(true).maybe_applied());
        assert!(!Error::connection_lost(false).maybe_applied());
        assert!(Error::timeout(true).is_retryable());
        assert!(!Error::auth("bad token").is_retryable());
        assert!(!Error::closed().is_retryable());
        let e = Error::timeout(false).applied_if(true);
        assert!(e.maybe_applied());
        assert_eq!(e.kind(), ErrorKind::Timeout);
    }

    #[test]
    fn display_names_the_code() {
        let e = Error::broker(&WireError::coded(3002, "bad pattern"));
        assert_eq!(
            e.to_string(),
            "broker error 3002 (NOTICE_INVALID_PATTERN): bad pattern"
        );
    }
}
