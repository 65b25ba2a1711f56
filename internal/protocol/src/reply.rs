//! Messages, replies and the error envelopes replies travel in.
//!
//! A request or push is a [`Message`]: its payload is its fields. A reply
//! starts with a status byte: `0` then the operation's [`ReplyBody`], or an
//! error in one of three envelopes (see [`WireError`]). Which envelope the
//! broker uses is fixed per operation; readers accept every well-formed one.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::record::encode_record_with;
use crate::wire::{Reader, Str, WireWrite};
use crate::{DecodeError, EncodeError, codes};

type Result<T> = std::result::Result<T, DecodeError>;

/// A record payload with a fixed type code: a request, a push or a notification.
pub trait Message: Sized {
    /// The record type.
    const TYPE: u16;

    /// Writes the payload (no record header).
    fn encode_payload(&self, buf: &mut BytesMut);

    /// The route (or route pattern) the message addresses, when it carries
    /// one: what telemetry reports as the destination. `None` by default.
    fn route(&self) -> Option<&str> {
        None
    }

    /// Reads the payload's fields. [`Message::decode`] checks nothing trails.
    fn decode_payload(r: &mut Reader) -> Result<Self>;

    /// Decodes a whole payload, rejecting trailing bytes.
    fn decode(payload: Bytes) -> Result<Self> {
        let mut r = Reader::new(payload);
        let v = Self::decode_payload(&mut r)?;
        r.finish()?;
        Ok(v)
    }

    /// Appends this message as one record.
    fn encode_record(&self, buf: &mut BytesMut) -> std::result::Result<(), EncodeError> {
        encode_record_with(buf, Self::TYPE, |b| self.encode_payload(b))
    }

    /// The payload as a fresh buffer (tests and tools; the hot path uses
    /// [`Message::encode_record`]).
    fn to_payload(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.encode_payload(&mut b);
        b.freeze()
    }
}

/// The success body of a reply, written after the `0` status byte.
pub trait ReplyBody: Sized {
    /// The record type (the request's type).
    const TYPE: u16;

    /// Writes the body (after the status byte).
    fn encode_body(&self, buf: &mut BytesMut);

    /// Reads the body. The caller checks nothing trails.
    fn decode_body(r: &mut Reader) -> Result<Self>;
}

/// Appends a success reply record: `[0]` then the body.
pub fn encode_ok<R: ReplyBody>(
    buf: &mut BytesMut,
    body: &R,
) -> std::result::Result<(), EncodeError> {
    encode_record_with(buf, R::TYPE, |b| {
        b.put_u8(0);
        body.encode_body(b);
    })
}

/// Appends an error reply record of type `ty`.
pub fn encode_error(
    buf: &mut BytesMut,
    ty: u16,
    err: &WireError,
) -> std::result::Result<(), EncodeError> {
    encode_record_with(buf, ty, |b| err.encode(b))
}

/// Decodes a reply payload of a [`ReplyBody`] type.
pub fn decode_reply<R: ReplyBody>(payload: Bytes) -> Result<std::result::Result<R, WireError>> {
    decode_reply_with(payload, R::decode_body)
}

/// Decodes a reply payload whose body needs context (for example a RESERVE
/// reply, whose item layout depends on the request).
pub fn decode_reply_with<T>(
    payload: Bytes,
    body: impl FnOnce(&mut Reader) -> Result<T>,
) -> Result<std::result::Result<T, WireError>> {
    let mut r = Reader::new(payload);
    match r.u8()? {
        0 => {
            let v = body(&mut r)?;
            r.finish()?;
            Ok(Ok(v))
        }
        status => Ok(Err(WireError::decode_after_status(status, r)?)),
    }
}

/// The three error envelopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Envelope {
    /// `[1][u32 code][str message]`: most operations.
    Coded,
    /// `[1][str message]`: Schedule CREATE/CANCEL/SUBSCRIBE/UNSUBSCRIBE/
    /// CREATE_BATCH/LIST_V2 and Queue domain errors on EXTEND/COMPLETE/SUBSCRIBE/UNSUBSCRIBE.
    Uncoded,
    /// `[2][u32 code][str message]`: every non-READ Stream error.
    Stream,
}

/// An error reply from the broker.
#[derive(Clone, PartialEq, Eq)]
pub struct WireError {
    /// The envelope it arrived in (or will be sent in).
    pub envelope: Envelope,
    /// The code; 0 for the uncoded envelope.
    pub code: u32,
    /// The broker's message.
    pub message: Str,
}

impl WireError {
    /// A coded (status 1) error.
    pub fn coded(code: u32, message: impl Into<Str>) -> Self {
        Self {
            envelope: Envelope::Coded,
            code,
            message: message.into(),
        }
    }

    /// An uncoded (status 1, message only) error.
    pub fn uncoded(message: impl Into<Str>) -> Self {
        Self {
            envelope: Envelope::Uncoded,
            code: 0,
            message: message.into(),
        }
    }

    /// A Stream status-2 coded error.
    pub fn stream(code: u32, message: impl Into<Str>) -> Self {
        Self {
            envelope: Envelope::Stream,
            code,
            message: message.into(),
        }
    }

    /// The code, `None` for an uncoded error.
    pub fn code(&self) -> Option<u32> {
        match self.envelope {
            Envelope::Uncoded => None,
            _ => Some(self.code),
        }
    }

    /// Writes the envelope (status byte included).
    pub fn encode<B: BufMut>(&self, buf: &mut B) {
        match self.envelope {
            Envelope::Coded => {
                buf.put_u8(1);
                buf.put_u32(self.code);
            }
            Envelope::Uncoded => buf.put_u8(1),
            Envelope::Stream => {
                buf.put_u8(2);
                buf.put_u32(self.code);
            }
        }
        buf.put_str_field(&self.message);
    }

    /// Decodes a whole error payload (status byte included).
    pub fn decode(payload: Bytes) -> Result<Self> {
        let mut r = Reader::new(payload);
        let status = r.u8()?;
        Self::decode_after_status(status, r)
    }

    /// Decodes what follows a non-zero status byte.
    ///
    /// Status 1 is coded or uncoded; the two are told apart by which length
    /// field is consistent with the payload size. When both are (a rare
    /// coincidence), a registered code wins.
    pub fn decode_after_status(status: u8, mut r: Reader) -> Result<Self> {
        match status {
            1 => {
                let rest = r.peek();
                let total = rest.len();
                let u32_at = |i: usize| {
                    rest.get(i..i + 4)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
                };
                let coded = u32_at(4) == Some(total.wrapping_sub(8)) && total >= 8;
                let uncoded = u32_at(0) == Some(total.wrapping_sub(4)) && total >= 4;
                let prefer_coded = coded
                    && (!uncoded || u32_at(0).is_some_and(|c| codes::info(c as u32).is_some()));
                if prefer_coded {
                    let code = r.u32()?;
                    let message = r.str()?;
                    r.finish()?;
                    Ok(Self::coded(code, message))
                } else if uncoded {
                    let message = r.str()?;
                    r.finish()?;
                    Ok(Self::uncoded(message))
                } else {
                    Err(DecodeError::Malformed(
                        "error envelope is neither coded nor uncoded",
                    ))
                }
            }
            2 => {
                let code = r.u32()?;
                let message = r.str()?;
                r.finish()?;
                Ok(Self::stream(code, message))
            }
            other => Err(DecodeError::InvalidValue {
                field: "status",
                value: u64::from(other),
            }),
        }
    }
}

impl fmt::Debug for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code() {
            Some(c) => write!(f, "WireError({c} {}: {:?})", codes::name(c), &*self.message),
            None => write!(f, "WireError(uncoded: {:?})", &*self.message),
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code() {
            Some(c) => write!(f, "{} ({c}): {}", codes::name(c), &*self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for WireError {}

/// A success reply with no body (`[0]`). Readers ignore anything after the
/// status byte, as the official client does for most acknowledgements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ack<const T: u16>;

impl<const T: u16> ReplyBody for Ack<T> {
    const TYPE: u16 = T;

    fn encode_body(&self, _buf: &mut BytesMut) {}

    fn decode_body(r: &mut Reader) -> Result<Self> {
        r.rest();
        Ok(Ack)
    }
}

/// A subscription acknowledgement `[0][u8 1][u64 id]` (Queue, Notice, Schedule).
/// Readers also accept the flagless `[0][u64 id]` form Notice once used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlaggedSubscribeOk<const T: u16> {
    /// The subscription id.
    pub sub_id: u64,
}

impl<const T: u16> ReplyBody for FlaggedSubscribeOk<T> {
    const TYPE: u16 = T;

    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_u8(1);
        buf.put_u64(self.sub_id);
    }

    fn decode_body(r: &mut Reader) -> Result<Self> {
        if r.remaining() == 8 {
            return Ok(Self { sub_id: r.u64()? });
        }
        match r.u8()? {
            1 => Ok(Self { sub_id: r.u64()? }),
            other => Err(DecodeError::InvalidFlag(other)),
        }
    }
}

/// A subscription acknowledgement without the flag: `[0][u64 id]` (KV, Lease).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscribeOk<const T: u16> {
    /// The subscription id.
    pub sub_id: u64,
}

impl<const T: u16> ReplyBody for SubscribeOk<T> {
    const TYPE: u16 = T;

    fn encode_body(&self, buf: &mut BytesMut) {
        buf.put_u64(self.sub_id);
    }

    fn decode_body(r: &mut Reader) -> Result<Self> {
        Ok(Self { sub_id: r.u64()? })
    }
}

/// A message whose whole payload is one route or pattern string
/// (SUBSCRIBE/UNSUBSCRIBE by pattern, QUERY, LAST, CANCEL …).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteOnly<const T: u16> {
    /// The route or pattern.
    pub route: Str,
}

impl<const T: u16> RouteOnly<T> {
    /// Wraps a route.
    pub fn new(route: impl Into<Str>) -> Self {
        Self {
            route: route.into(),
        }
    }
}

impl<const T: u16> Message for RouteOnly<T> {
    fn route(&self) -> Option<&str> {
        Some(&self.route)
    }

    const TYPE: u16 = T;

    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.put_str_field(&self.route);
    }

    fn decode_payload(r: &mut Reader) -> Result<Self> {
        Ok(Self { route: r.str()? })
    }
}

/// A notification `[u64 sub_id][str route][bytes payload]` (Queue, Notice,
/// Stream and Schedule NOTIFY share this layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify<const T: u16> {
    /// The subscription it was delivered for.
    pub sub_id: u64,
    /// The concrete route that fired.
    pub route: Str,
    /// Domain payload.
    pub payload: Bytes,
}

impl<const T: u16> Message for Notify<T> {
    fn route(&self) -> Option<&str> {
        Some(&self.route)
    }

    const TYPE: u16 = T;

    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.reserve(16 + self.route.len() + self.payload.len());
        buf.put_u64(self.sub_id);
        buf.put_str_field(&self.route);
        buf.put_bytes_field(&self.payload);
    }

    fn decode_payload(r: &mut Reader) -> Result<Self> {
        Ok(Self {
            sub_id: r.u64()?,
            route: r.str()?,
            payload: r.bytes()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_disambiguate() {
        for e in [
            WireError::coded(4001, "invalid token"),
            WireError::uncoded("invalid token"),
            WireError::stream(2001, "conflict"),
            WireError::uncoded(""),
            WireError::coded(6004, ""),
        ] {
            let mut b = BytesMut::new();
            e.encode(&mut b);
            assert_eq!(WireError::decode(b.freeze()).unwrap(), e);
        }
    }

    #[test]
    fn malformed_envelopes_fail() {
        assert!(WireError::decode(Bytes::from_static(&[1, 0, 0])).is_err());
        assert!(WireError::decode(Bytes::from_static(&[1, 0, 0, 0, 9, b'x'])).is_err());
        assert!(WireError::decode(Bytes::from_static(&[3, 0, 0, 0, 0])).is_err());
        assert!(WireError::decode(Bytes::from_static(&[2, 0, 0, 7, 0xd1, 0, 0, 0, 0, 1])).is_err());
    }

    #[test]
    fn ack_tolerates_trailing_bytes() {
        type A = Ack<300>;
        assert_eq!(
            decode_reply::<A>(Bytes::from_static(&[0, 0, 0, 0, 0])).unwrap(),
            Ok(Ack)
        );
    }
}
