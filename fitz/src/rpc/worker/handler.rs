//! What a handler returns: [`IntoBody`] for success, [`HandlerError`] for
//! failure, and the coded error body both become on the wire.

use std::fmt;

use bytes::{Bytes, BytesMut};
use fitz_protocol::{Str, WireError, codes};

use super::MAX_MESSAGE;
use crate::error::Error;

/// A handler's success value: the body of the call's final chunk.
///
/// `()` is an empty final chunk (for handlers that streamed their answer or
/// have nothing to say).
pub trait IntoBody: Send {
    /// The bytes.
    fn into_body(self) -> Bytes;
}

impl IntoBody for () {
    fn into_body(self) -> Bytes {
        Bytes::new()
    }
}

impl IntoBody for Bytes {
    fn into_body(self) -> Bytes {
        self
    }
}

impl IntoBody for BytesMut {
    fn into_body(self) -> Bytes {
        self.freeze()
    }
}

impl IntoBody for Vec<u8> {
    fn into_body(self) -> Bytes {
        Bytes::from(self)
    }
}

impl IntoBody for String {
    fn into_body(self) -> Bytes {
        Bytes::from(self)
    }
}

impl IntoBody for &'static str {
    fn into_body(self) -> Bytes {
        Bytes::from_static(self.as_bytes())
    }
}

impl IntoBody for &'static [u8] {
    fn into_body(self) -> Bytes {
        Bytes::from_static(self)
    }
}

/// A handler's failure: the code and message the caller receives as a
/// [`Broker`](crate::ErrorKind::Broker) error.
///
/// The code must be an RPC code (6001–6013) — anything else would reach the
/// caller as ordinary data — so [`HandlerError::new`] turns other codes into
/// `6010` (backend failure: outcome unknown, not retryable). Any
/// `std::error::Error` converts with `?`: a [`crate::Error`] carrying an RPC
/// code (a failed downstream call) keeps that code, everything else becomes
/// `6010` with the error's text (a downstream timeout becomes `6001`).
///
/// ```
/// use fitz::rpc::HandlerError;
/// let busy = HandlerError::overloaded("try again in a second");
/// assert_eq!(busy.code(), fitz::codes::RPC_BACKPRESSURE);
/// let parse: HandlerError = "x".parse::<u32>().unwrap_err().into();
/// assert_eq!(parse.code(), fitz::codes::RPC_UNAVAILABLE);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct HandlerError {
    pub(super) code: u32,
    pub(super) message: String,
}

impl HandlerError {
    /// A failure with `code` (6001–6013; others become 6010).
    pub fn new(code: u32, message: impl Into<String>) -> Self {
        let code = if codes::is_rpc(code) {
            code
        } else {
            codes::RPC_UNAVAILABLE
        };
        let mut message = message.into();
        if message.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        Self { code, message }
    }

    /// `6010`: the handler failed; whether it did anything is unknown.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(codes::RPC_UNAVAILABLE, message)
    }

    /// `6003`: the worker is too busy; the caller may retry (nothing was done).
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(codes::RPC_BACKPRESSURE, message)
    }

    /// `6009`: the caller may not do this.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(codes::RPC_UNAUTHORIZED, message)
    }

    /// `6001`: the work did not finish in time.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(codes::RPC_TIMEOUT, message)
    }

    /// The code the caller sees.
    pub fn code(&self) -> u32 {
        self.code
    }

    /// The message the caller sees.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The terminal body: `[1][u32 code][str message]`.
    pub(super) fn to_body(&self) -> Bytes {
        error_body(self.code, &self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(error: E) -> Self {
        let any: &dyn std::any::Any = &error;
        if let Some(e) = any.downcast_ref::<Error>() {
            if let Some(code) = e.code().filter(|c| codes::is_rpc(*c)) {
                return Self::new(code, e.message());
            }
            // A downstream call that ran out of (inherited) budget.
            if e.kind() == crate::ErrorKind::Timeout {
                return Self::timeout(e.message());
            }
        }
        Self::failed(error.to_string())
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("code", &self.code)
            .field("message", &self.message)
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code,
            codes::name(self.code),
            self.message
        )
    }
}

pub(super) fn error_body(code: u32, message: &str) -> Bytes {
    let mut body = BytesMut::with_capacity(9 + message.len());
    WireError::coded(code, Str::from(message)).encode(&mut body);
    body.freeze()
}

// ----- cancellation -----
