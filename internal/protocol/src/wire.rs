//! Field-level encoding: big-endian integers, `[u32 len]`-prefixed strings and
//! bytes, `[u8 flag]` optionals and 16-byte UUIDs.
//!
//! [`Reader`] decodes from a [`Bytes`] by slicing, so byte and string fields
//! share the frame's allocation. [`WireWrite`] encodes straight into any
//! [`BufMut`].

use bytes::{Buf, BufMut, Bytes};

use crate::DecodeError;

/// A UTF-8 string backed by [`Bytes`]: decoding a string field costs one
/// validation and no copy.
pub type Str = bytestring::ByteString;

type Result<T> = std::result::Result<T, DecodeError>;

/// Cursor over one payload. Every read checks the remaining length first.
#[derive(Debug, Clone)]
pub struct Reader {
    buf: Bytes,
}

impl Reader {
    /// Starts reading `buf` from its first byte.
    pub fn new(buf: Bytes) -> Self {
        Self { buf }
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// True when every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Looks at the unconsumed bytes without consuming them.
    pub fn peek(&self) -> &[u8] {
        &self.buf
    }

    fn need(&self, n: usize) -> Result<()> {
        if self.buf.len() < n {
            Err(DecodeError::Truncated {
                needed: n,
                remaining: self.buf.len(),
            })
        } else {
            Ok(())
        }
    }

    /// Reads a `u8`.
    pub fn u8(&mut self) -> Result<u8> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    /// Reads a big-endian `u16`.
    pub fn u16(&mut self) -> Result<u16> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    /// Reads a big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    /// Reads a big-endian `u64`.
    pub fn u64(&mut self) -> Result<u64> {
        self.need(8)?;
        Ok(self.buf.get_u64())
    }

    /// Reads a strict boolean byte: 0 or 1, anything else is an error.
    pub fn flag(&mut self) -> Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError::InvalidFlag(other)),
        }
    }

    /// Reads exactly `n` raw bytes (no length prefix).
    pub fn raw(&mut self, n: usize) -> Result<Bytes> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }

    /// Reads a `[u32 len][bytes]` field.
    pub fn bytes(&mut self) -> Result<Bytes> {
        let len = self.u32()? as usize;
        self.raw(len)
    }

    /// Reads a `[u32 len][UTF-8]` field.
    pub fn str(&mut self) -> Result<Str> {
        let raw = self.bytes()?;
        Str::try_from(raw).map_err(|_| DecodeError::InvalidUtf8)
    }

    /// Reads a 16-byte UUID.
    pub fn uuid(&mut self) -> Result<[u8; 16]> {
        self.need(16)?;
        let mut id = [0u8; 16];
        self.buf.copy_to_slice(&mut id);
        Ok(id)
    }

    /// Reads an optional field: a strict 0/1 flag, then the value if 1.
    pub fn opt<T>(&mut self, read: impl FnOnce(&mut Self) -> Result<T>) -> Result<Option<T>> {
        if self.flag()? {
            Ok(Some(read(self)?))
        } else {
            Ok(None)
        }
    }

    /// Reads an optional field that may also be absent because the payload
    /// ended (a trailing optional added by a later protocol revision).
    pub fn trailing_opt<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<Option<T>> {
        if self.is_empty() {
            Ok(None)
        } else {
            self.opt(read)
        }
    }

    /// Reads a `u32` item count and checks that `count × min_item_len` bytes
    /// can still follow, so a hostile count never drives an allocation.
    pub fn count(&mut self, min_item_len: usize) -> Result<usize> {
        let count = self.u32()? as usize;
        let needed = count.saturating_mul(min_item_len.max(1));
        if needed > self.buf.len() {
            return Err(DecodeError::CountTooLarge {
                count: count as u64,
                remaining: self.buf.len(),
            });
        }
        Ok(count)
    }

    /// Takes every remaining byte.
    pub fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Fails if any byte is left.
    pub fn finish(self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes(self.buf.len()))
        }
    }
}

/// Length of a `[u32 len]` prefix: clamps to `u32::MAX`. A field that long can
/// never fit a record, and the record layer rejects the payload before it is sent.
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Field encoders for any [`BufMut`].
pub trait WireWrite: BufMut {
    /// Writes a `[u32 len][UTF-8]` field.
    fn put_str_field(&mut self, s: &str) {
        self.put_bytes_field(s.as_bytes());
    }

    /// Writes a `[u32 len][bytes]` field.
    fn put_bytes_field(&mut self, b: &[u8]) {
        self.put_u32(len_u32(b.len()));
        self.put_slice(b);
    }

    /// Writes a boolean as one byte, 0 or 1.
    fn put_flag(&mut self, v: bool) {
        self.put_u8(u8::from(v));
    }

    /// Writes an optional `u64`.
    fn put_opt_u64(&mut self, v: Option<u64>) {
        match v {
            Some(v) => {
                self.put_u8(1);
                self.put_u64(v);
            }
            None => self.put_u8(0),
        }
    }

    /// Writes an optional `u32`.
    fn put_opt_u32(&mut self, v: Option<u32>) {
        match v {
            Some(v) => {
                self.put_u8(1);
                self.put_u32(v);
            }
            None => self.put_u8(0),
        }
    }

    /// Writes an optional `[u32 len][bytes]`.
    fn put_opt_bytes(&mut self, v: Option<&[u8]>) {
        match v {
            Some(v) => {
                self.put_u8(1);
                self.put_bytes_field(v);
            }
            None => self.put_u8(0),
        }
    }

    /// Writes an optional `[u32 len][UTF-8]`.
    fn put_opt_str(&mut self, v: Option<&str>) {
        self.put_opt_bytes(v.map(str::as_bytes));
    }

    /// Writes a `u32` count.
    fn put_count(&mut self, n: usize) {
        self.put_u32(len_u32(n));
    }
}

impl<B: BufMut + ?Sized> WireWrite for B {}

/// Bytes a `[u32 len][data]` field occupies.
pub const fn field_len(data_len: usize) -> usize {
    4 + data_len
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn reads_every_primitive() {
        let mut b = BytesMut::new();
        b.put_u8(7);
        b.put_u16(0x0102);
        b.put_u32(0x0304_0506);
        b.put_u64(9);
        b.put_str_field("héllo");
        b.put_bytes_field(b"\x00\x01");
        b.put_opt_u64(Some(5));
        b.put_opt_u64(None);
        b.put_slice(&[1; 16]);
        let mut r = Reader::new(b.freeze());
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u16().unwrap(), 0x0102);
        assert_eq!(r.u32().unwrap(), 0x0304_0506);
        assert_eq!(r.u64().unwrap(), 9);
        assert_eq!(&*r.str().unwrap(), "héllo");
        assert_eq!(&r.bytes().unwrap()[..], b"\x00\x01");
        assert_eq!(r.opt(Reader::u64).unwrap(), Some(5));
        assert_eq!(r.opt(Reader::u64).unwrap(), None);
        assert_eq!(r.uuid().unwrap(), [1; 16]);
        r.finish().unwrap();
    }

    #[test]
    fn rejects_truncation_bad_flags_utf8_and_trailing() {
        let mut r = Reader::new(Bytes::from_static(&[0, 0, 0, 5, b'a']));
        assert!(matches!(r.bytes(), Err(DecodeError::Truncated { .. })));
        let mut r = Reader::new(Bytes::from_static(&[2]));
        assert_eq!(r.flag(), Err(DecodeError::InvalidFlag(2)));
        let mut r = Reader::new(Bytes::from_static(&[0, 0, 0, 1, 0xff]));
        assert_eq!(r.str(), Err(DecodeError::InvalidUtf8));
        let r = Reader::new(Bytes::from_static(&[1]));
        assert_eq!(r.finish(), Err(DecodeError::TrailingBytes(1)));
    }

    #[test]
    fn hostile_count_is_rejected_before_allocating() {
        let mut r = Reader::new(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0]));
        assert!(matches!(r.count(8), Err(DecodeError::CountTooLarge { .. })));
    }
}
