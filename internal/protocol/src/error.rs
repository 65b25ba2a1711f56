//! Codec errors.

use std::fmt;

/// Why a payload, record or frame could not be decoded.
///
/// Decoders never panic: every malformed input maps to one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before a field was complete.
    Truncated {
        /// Bytes the field needed.
        needed: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// Bytes remained after the last field of a payload.
    TrailingBytes(usize),
    /// A string field was not valid UTF-8.
    InvalidUtf8,
    /// A boolean or optional-presence flag was neither 0 nor 1.
    InvalidFlag(u8),
    /// A field held a value outside its domain.
    InvalidValue {
        /// Name of the field.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// A declared item count cannot fit in the remaining bytes.
    CountTooLarge {
        /// Declared count.
        count: u64,
        /// Bytes left to hold the items.
        remaining: usize,
    },
    /// A record type the decoder does not know for this direction.
    UnknownMessageType(u16),
    /// A small message type (≤ 254) was sent in the 3-byte escaped form.
    NonCanonicalType(u16),
    /// A structural rule of the protocol was broken.
    Malformed(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { needed, remaining } => {
                write!(f, "truncated: needed {needed} bytes, {remaining} left")
            }
            Self::TrailingBytes(n) => write!(f, "{n} trailing bytes after payload"),
            Self::InvalidUtf8 => f.write_str("string is not valid UTF-8"),
            Self::InvalidFlag(v) => write!(f, "flag byte {v} is neither 0 nor 1"),
            Self::InvalidValue { field, value } => write!(f, "invalid {field}: {value}"),
            Self::CountTooLarge { count, remaining } => {
                write!(f, "item count {count} cannot fit in {remaining} bytes")
            }
            Self::UnknownMessageType(t) => write!(f, "unknown message type {t}"),
            Self::NonCanonicalType(t) => write!(f, "message type {t} uses the escaped form"),
            Self::Malformed(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a record or frame could not be encoded. Nothing is written when this is returned.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// A record payload exceeded 65,535 bytes.
    RecordTooLarge(usize),
    /// A transport frame exceeded the configured maximum.
    FrameTooLarge {
        /// Size of the frame body.
        size: usize,
        /// The configured limit.
        max: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RecordTooLarge(n) => {
                write!(f, "record payload of {n} bytes exceeds 65535")
            }
            Self::FrameTooLarge { size, max } => {
                write!(f, "frame of {size} bytes exceeds the limit of {max}")
            }
        }
    }
}

impl std::error::Error for EncodeError {}

/// Why a transport frame could not be read from a byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix announced a frame larger than the limit. Nothing was allocated.
    TooLarge {
        /// Announced length.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// A zero-length frame, which the protocol forbids.
    Empty,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { size, max } => {
                write!(f, "frame length {size} exceeds the limit of {max}")
            }
            Self::Empty => f.write_str("zero-length frame"),
        }
    }
}

impl std::error::Error for FrameError {}
