//! The record layer: `[type][u16 BE length][payload]`, several records per
//! transport frame, and the CORRELATE/CORRELATED labels that pair a request
//! with its answer.
//!
//! A type ≤ 254 is one byte; larger types are `0xFF` followed by a `u16 BE`.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::{DecodeError, EncodeError, types};

/// Largest record payload: the length field is a `u16`.
pub const MAX_RECORD_PAYLOAD: usize = u16::MAX as usize;

/// Largest encoded record: 3 type bytes + 2 length bytes + payload.
pub const MAX_RECORD_LEN: usize = 5 + MAX_RECORD_PAYLOAD;

/// Length of a correlation label record: 1 type byte, 2 length bytes, `u64` id.
pub const LABEL_LEN: usize = 11;

/// One decoded record. `payload` is a slice of the frame it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Message type code.
    pub ty: u16,
    /// Payload bytes.
    pub payload: Bytes,
}

/// Bytes the type field of `ty` occupies.
pub const fn type_len(ty: u16) -> usize {
    if ty <= 0xFE { 1 } else { 3 }
}

/// Writes a type field in its canonical form.
pub fn put_type<B: BufMut + ?Sized>(buf: &mut B, ty: u16) {
    if ty <= 0xFE {
        buf.put_u8(ty as u8);
    } else {
        buf.put_u8(0xFF);
        buf.put_u16(ty);
    }
}

/// The type of an encoded record, read from its type field alone (1 byte,
/// or `0xFF` and 2 more).
pub fn peek_type(record: &[u8]) -> Option<u16> {
    match record {
        [0xFF, hi, lo, ..] => Some(u16::from_be_bytes([*hi, *lo])),
        [0xFF, ..] | [] => None,
        [t, ..] => Some(u16::from(*t)),
    }
}

/// Appends one record whose payload is written by `body`. The length field is
/// patched afterwards, so the payload is encoded exactly once, in place. On
/// error (payload over 65,535 bytes) `buf` is restored to its previous length.
pub fn encode_record_with(
    buf: &mut BytesMut,
    ty: u16,
    body: impl FnOnce(&mut BytesMut),
) -> Result<(), EncodeError> {
    let start = buf.len();
    put_type(buf, ty);
    let len_at = buf.len();
    buf.put_u16(0);
    body(buf);
    let payload_len = buf.len() - len_at - 2;
    match u16::try_from(payload_len) {
        Ok(len) => {
            buf[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
            Ok(())
        }
        Err(_) => {
            buf.truncate(start);
            Err(EncodeError::RecordTooLarge(payload_len))
        }
    }
}

/// Appends one record with an already-encoded payload.
pub fn encode_raw_record(buf: &mut BytesMut, ty: u16, payload: &[u8]) -> Result<(), EncodeError> {
    let len =
        u16::try_from(payload.len()).map_err(|_| EncodeError::RecordTooLarge(payload.len()))?;
    buf.reserve(type_len(ty) + 2 + payload.len());
    put_type(buf, ty);
    buf.put_u16(len);
    buf.put_slice(payload);
    Ok(())
}

/// Appends a CORRELATE (`label_ty` = 2) or CORRELATED (3) record carrying `id`.
pub fn put_label(buf: &mut BytesMut, label_ty: u16, id: u64) {
    buf.reserve(LABEL_LEN);
    put_type(buf, label_ty);
    buf.put_u16(8);
    buf.put_u64(id);
}

/// Iterates the records of one transport frame.
///
/// Yields `Err` once and then stops when the frame is malformed.
#[derive(Debug, Clone)]
pub struct Records {
    rest: Bytes,
    strict_types: bool,
    failed: bool,
}

impl Records {
    /// Reads `frame` rejecting escaped small types (the broker's rule).
    pub fn new(frame: Bytes) -> Self {
        Self {
            rest: frame,
            strict_types: true,
            failed: false,
        }
    }

    /// Reads `frame` accepting escaped small types such as `FF 00 04`, as the
    /// official client does.
    pub fn lenient(frame: Bytes) -> Self {
        Self {
            rest: frame,
            strict_types: false,
            failed: false,
        }
    }

    /// Type, header length and total length of the record at the front.
    fn front(&self) -> Result<(u16, usize, usize), DecodeError> {
        let b = &self.rest[..];
        let (ty, header) = match b.first() {
            None => {
                return Err(DecodeError::Truncated {
                    needed: 1,
                    remaining: 0,
                });
            }
            Some(0xFF) => {
                if b.len() < 3 {
                    return Err(DecodeError::Truncated {
                        needed: 3,
                        remaining: b.len(),
                    });
                }
                let ty = u16::from_be_bytes([b[1], b[2]]);
                if ty <= 0xFE && self.strict_types {
                    return Err(DecodeError::NonCanonicalType(ty));
                }
                (ty, 3)
            }
            Some(&t) => (u16::from(t), 1),
        };
        if b.len() < header + 2 {
            return Err(DecodeError::Truncated {
                needed: header + 2,
                remaining: b.len(),
            });
        }
        let len = usize::from(u16::from_be_bytes([b[header], b[header + 1]]));
        let total = header + 2 + len;
        if b.len() < total {
            return Err(DecodeError::Truncated {
                needed: total,
                remaining: b.len(),
            });
        }
        Ok((ty, header, total))
    }

    fn read_one(&mut self) -> Result<Record, DecodeError> {
        let (ty, header, total) = self.front()?;
        // One reference-count increment for the payload (no intermediate
        // record slice to make and drop).
        let payload = self.rest.slice(header + 2..total);
        self.rest.advance(total);
        Ok(Record { ty, payload })
    }

    /// The next record, except that a record of type `label` is consumed
    /// without a payload slice: its id is read in place.
    fn next_or_label(&mut self, label: u16) -> Option<Result<Front, DecodeError>> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let r = match self.front() {
            Ok((ty, header, total)) if ty == label => {
                let id = label_id(&self.rest[header + 2..total]);
                self.rest.advance(total);
                Ok(Front::Label(id))
            }
            Ok(_) => self.read_one().map(Front::Record),
            Err(e) => Err(e),
        };
        self.failed = r.is_err();
        Some(r)
    }
}

/// What [`Records::next_or_label`] found at the front of the frame.
enum Front {
    Record(Record),
    /// A label record's id (or why its payload is not one).
    Label(Result<u64, DecodeError>),
}

impl Iterator for Records {
    type Item = Result<Record, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let r = self.read_one();
        self.failed = r.is_err();
        Some(r)
    }
}

/// Decodes a frame that must hold exactly one record (the strict reader the
/// official client uses for the hello and for registration restore).
pub fn decode_single_record(frame: Bytes) -> Result<Record, DecodeError> {
    let mut it = Records::lenient(frame);
    let rec = it
        .next()
        .unwrap_or(Err(DecodeError::Malformed("empty frame")))?;
    if !it.rest.is_empty() {
        return Err(DecodeError::Malformed("frame holds more than one record"));
    }
    Ok(rec)
}

/// Which end of the connection is reading: it decides which label type is
/// legal and which rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The broker reads client frames: labels are CORRELATE (2); a frame must
    /// not repeat a record type.
    Broker,
    /// A client reads broker frames: labels are CORRELATED (3); a labelled
    /// SERVER_HELLO is illegal; escaped small types are tolerated.
    Client,
}

/// A record with the correlation id that labelled it, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labelled {
    /// The id from the CORRELATE/CORRELATED record just before this one.
    pub correlation: Option<u64>,
    /// The labelled (or plain) record.
    pub record: Record,
}

/// Iterates a frame's records, folding each label into the record after it.
///
/// Fails on a malformed label: wrong length, id 0, a label of the wrong
/// direction, a label followed by another label (or by nothing), and on the
/// broker side a record type repeated within one frame.
#[derive(Debug, Clone)]
pub struct LabelledRecords {
    records: Records,
    side: Side,
    seen: [u16; 32],
    seen_len: usize,
    failed: bool,
}

impl LabelledRecords {
    /// Starts reading `frame` as `side`.
    pub fn new(frame: Bytes, side: Side) -> Self {
        let records = match side {
            Side::Broker => Records::new(frame),
            Side::Client => Records::lenient(frame),
        };
        Self {
            records,
            side,
            seen: [0; 32],
            seen_len: 0,
            failed: false,
        }
    }

    fn note_type(&mut self, ty: u16) -> Result<(), DecodeError> {
        if self.side != Side::Broker {
            return Ok(());
        }
        if self.seen[..self.seen_len].contains(&ty) {
            return Err(DecodeError::Malformed(
                "record type repeated within one frame",
            ));
        }
        if self.seen_len == self.seen.len() {
            return Err(DecodeError::Malformed("too many records in one frame"));
        }
        self.seen[self.seen_len] = ty;
        self.seen_len += 1;
        Ok(())
    }

    fn read(&mut self, first: Front, own_label: u16) -> Result<Labelled, DecodeError> {
        let foreign_label = match self.side {
            Side::Broker => types::CORRELATED,
            Side::Client => types::CORRELATE,
        };
        let first_ty = match &first {
            Front::Record(r) => r.ty,
            Front::Label(_) => own_label,
        };
        self.note_type(first_ty)?;
        if first_ty == foreign_label {
            return Err(DecodeError::Malformed(
                "correlation label of the wrong direction",
            ));
        }
        let id = match first {
            Front::Record(record) => {
                return Ok(Labelled {
                    correlation: None,
                    record,
                });
            }
            Front::Label(id) => id?,
        };
        let record = match self.records.next() {
            Some(r) => r?,
            None => return Err(DecodeError::Malformed("correlation label ends the frame")),
        };
        self.note_type(record.ty)?;
        if record.ty == types::CORRELATE || record.ty == types::CORRELATED {
            return Err(DecodeError::Malformed(
                "correlation label labels another label",
            ));
        }
        if self.side == Side::Client && record.ty == types::SERVER_HELLO {
            return Err(DecodeError::Malformed(
                "SERVER_HELLO must not be correlated",
            ));
        }
        Ok(Labelled {
            correlation: Some(id),
            record,
        })
    }
}

/// Reads a label payload: exactly 8 bytes holding a non-zero `u64`.
pub fn label_id(payload: &[u8]) -> Result<u64, DecodeError> {
    let bytes: [u8; 8] = payload
        .try_into()
        .map_err(|_| DecodeError::Malformed("correlation label is not 8 bytes"))?;
    match u64::from_be_bytes(bytes) {
        0 => Err(DecodeError::Malformed("correlation id 0 is reserved")),
        id => Ok(id),
    }
}

impl Iterator for LabelledRecords {
    type Item = Result<Labelled, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let own_label = match self.side {
            Side::Broker => types::CORRELATE,
            Side::Client => types::CORRELATED,
        };
        let first = match self.records.next_or_label(own_label)? {
            Ok(r) => r,
            Err(e) => {
                self.failed = true;
                return Some(Err(e));
            }
        };
        let r = self.read(first, own_label);
        self.failed = r.is_err();
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(parts: &[(u16, &[u8])]) -> Bytes {
        let mut b = BytesMut::new();
        for (ty, p) in parts {
            encode_raw_record(&mut b, *ty, p).unwrap();
        }
        b.freeze()
    }

    #[test]
    fn type_escape_boundary() {
        let mut b = BytesMut::new();
        encode_raw_record(&mut b, 254, &[]).unwrap();
        encode_raw_record(&mut b, 255, &[]).unwrap();
        assert_eq!(&b[..], &[0xFE, 0, 0, 0xFF, 0x00, 0xFF, 0, 0]);
        let recs: Vec<_> = Records::new(b.freeze()).collect::<Result<_, _>>().unwrap();
        assert_eq!(recs[0].ty, 254);
        assert_eq!(recs[1].ty, 255);
    }

    #[test]
    fn escaped_small_type_strict_vs_lenient() {
        let f = Bytes::from_static(&[0xFF, 0x00, 0x04, 0x00, 0x00]);
        assert_eq!(
            Records::new(f.clone()).next(),
            Some(Err(DecodeError::NonCanonicalType(4)))
        );
        assert_eq!(Records::lenient(f).next().unwrap().unwrap().ty, 4);
    }

    #[test]
    fn oversize_payload_is_refused_and_buffer_restored() {
        let mut b = BytesMut::from(&b"xy"[..]);
        let err = encode_record_with(&mut b, 104, |b| b.put_bytes(0, 65_536)).unwrap_err();
        assert_eq!(err, EncodeError::RecordTooLarge(65_536));
        assert_eq!(&b[..], b"xy");
        encode_record_with(&mut b, 104, |b| b.put_bytes(0, 65_535)).unwrap();
        assert_eq!(b.len(), 2 + 3 + 65_535);
    }

    #[test]
    fn labels_attach_to_the_next_record() {
        let mut b = BytesMut::new();
        put_label(&mut b, types::CORRELATE, 9);
        encode_raw_record(&mut b, 100, b"x").unwrap();
        encode_raw_record(&mut b, 500, b"y").unwrap();
        let got: Vec<_> = LabelledRecords::new(b.freeze(), Side::Broker)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(got[0].correlation, Some(9));
        assert_eq!(got[0].record.ty, 100);
        assert_eq!(got[1].correlation, None);
    }

    #[test]
    fn malformed_labels_are_rejected() {
        let cases: Vec<Bytes> = vec![
            frame(&[(2, &[0; 7]), (100, b"")]),
            frame(&[(2, &[0; 8]), (100, b"")]),
            frame(&[(2, &[0, 0, 0, 0, 0, 0, 0, 1])]),
            frame(&[
                (2, &[0, 0, 0, 0, 0, 0, 0, 1]),
                (2, &[0, 0, 0, 0, 0, 0, 0, 2]),
            ]),
            frame(&[(3, &[0, 0, 0, 0, 0, 0, 0, 1]), (100, b"")]),
            frame(&[(100, b""), (100, b"")]),
        ];
        for f in cases {
            let r: Result<Vec<_>, _> = LabelledRecords::new(f.clone(), Side::Broker).collect();
            assert!(r.is_err(), "{f:?}");
        }
        let hello = frame(&[(3, &[0, 0, 0, 0, 0, 0, 0, 1]), (4, &[0, 1, 0, 0, 0, 0])]);
        assert!(
            LabelledRecords::new(hello, Side::Client)
                .collect::<Result<Vec<_>, _>>()
                .is_err()
        );
    }

    #[test]
    fn client_side_labels_read_in_place_and_errors_end_the_frame() {
        // Several labelled replies in one frame (the client's common case):
        // ids and payloads as written, then a truncated record fails once.
        let mut b = BytesMut::new();
        for id in 1..=3u64 {
            put_label(&mut b, types::CORRELATED, id);
            encode_raw_record(&mut b, 100 + id as u16, &[id as u8; 5]).unwrap();
        }
        encode_raw_record(&mut b, 300, b"plain").unwrap();
        let got: Vec<_> = LabelledRecords::new(b.clone().freeze(), Side::Client)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(got.len(), 4);
        for (i, l) in got[..3].iter().enumerate() {
            let id = i as u64 + 1;
            assert_eq!(l.correlation, Some(id));
            assert_eq!(l.record.ty, 100 + id as u16);
            assert_eq!(&l.record.payload[..], &[id as u8; 5]);
        }
        assert_eq!(
            (got[3].correlation, &got[3].record.payload[..]),
            (None, &b"plain"[..])
        );
        // A label whose record is cut short: one error, then nothing.
        put_label(&mut b, types::CORRELATED, 4);
        b.extend_from_slice(&[100, 0, 9, 1]);
        let mut it = LabelledRecords::new(b.freeze(), Side::Client).skip(4);
        assert!(matches!(
            it.next(),
            Some(Err(DecodeError::Truncated { .. }))
        ));
        assert!(it.next().is_none());
        // A label of the wrong length, or a wrong-direction one, on the client.
        for f in [
            frame(&[(3, &[0; 9]), (100, b"")]),
            frame(&[(2, &[0, 0, 0, 0, 0, 0, 0, 1]), (100, b"")]),
        ] {
            let mut it = LabelledRecords::new(f, Side::Client);
            assert!(matches!(it.next(), Some(Err(DecodeError::Malformed(_)))));
            assert!(it.next().is_none());
        }
    }

    #[test]
    fn single_record_reader_rejects_extra_records() {
        assert!(decode_single_record(frame(&[(4, b"abcdef")])).is_ok());
        assert!(decode_single_record(frame(&[(4, b""), (5, b"")])).is_err());
        assert!(decode_single_record(Bytes::new()).is_err());
    }
}
