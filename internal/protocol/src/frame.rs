//! TCP transport framing: `[u32 BE length][records]`. WebSocket carries one
//! frame per binary message and needs no prefix.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::{EncodeError, FrameError};

/// Default maximum transport frame: 1 MiB, as the broker enforces.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// Length of the TCP frame prefix.
pub const PREFIX_LEN: usize = 4;

/// Smallest step by which [`FrameDecoder::decode`] grows a buffer that holds
/// part of a frame.
const MIN_GROWTH: usize = 4 * 1024;

/// Splits whole frames off a TCP read buffer.
///
/// Cancel-safe by construction: it only looks at bytes already buffered and
/// consumes nothing until a whole frame is present.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_frame: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl FrameDecoder {
    /// A decoder accepting frames up to `max_frame` bytes (excluding the prefix).
    pub const fn new(max_frame: usize) -> Self {
        Self { max_frame }
    }

    /// The configured limit.
    pub const fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Returns the next whole frame body, `Ok(None)` when more bytes are
    /// needed. A length prefix over the limit (or zero) is an error before any
    /// allocation; the caller must close the connection.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if buf.len() < PREFIX_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > self.max_frame {
            return Err(FrameError::TooLarge {
                size: len,
                max: self.max_frame,
            });
        }
        if buf.len() < PREFIX_LEN + len {
            // Grow toward the announced frame, but never by more than is
            // already buffered (doubling): a length prefix alone cannot make
            // the reader allocate the frame before its bytes arrive.
            let missing = PREFIX_LEN + len - buf.len();
            buf.reserve(missing.min(buf.len().max(MIN_GROWTH)));
            return Ok(None);
        }
        buf.advance(PREFIX_LEN);
        Ok(Some(buf.split_to(len).freeze()))
    }
}

/// Appends one TCP frame whose records are written by `body`, patching the
/// length prefix afterwards. On error `buf` is restored.
pub fn encode_frame_with<E: From<EncodeError>>(
    buf: &mut BytesMut,
    max_frame: usize,
    body: impl FnOnce(&mut BytesMut) -> Result<(), E>,
) -> Result<(), E> {
    let start = buf.len();
    buf.put_u32(0);
    if let Err(e) = body(buf) {
        buf.truncate(start);
        return Err(e);
    }
    let size = buf.len() - start - PREFIX_LEN;
    if size == 0 || size > max_frame {
        buf.truncate(start);
        return Err(EncodeError::FrameTooLarge {
            size,
            max: max_frame,
        }
        .into());
    }
    // `size <= max_frame`, and frames beyond u32 are refused above for any sane limit.
    let prefix = u32::try_from(size).map_err(|_| EncodeError::FrameTooLarge {
        size,
        max: max_frame,
    })?;
    buf[start..start + PREFIX_LEN].copy_from_slice(&prefix.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_frames_split_anywhere() {
        let mut wire = BytesMut::new();
        for body in [&b"abc"[..], b"de", b"f"] {
            wire.put_u32(body.len() as u32);
            wire.put_slice(body);
        }
        let d = FrameDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for byte in wire.iter() {
            buf.put_u8(*byte);
            while let Some(f) = d.decode(&mut buf).unwrap() {
                out.push(f);
            }
        }
        assert_eq!(out, vec![&b"abc"[..], b"de", b"f"]);
    }

    #[test]
    fn a_prefix_alone_does_not_reserve_the_frame() {
        let d = FrameDecoder::new(DEFAULT_MAX_FRAME);
        // A 1 MiB frame announced, 5 bytes of it here.
        let mut buf = BytesMut::new();
        buf.put_u32(1 << 20);
        buf.put_u8(1);
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert!(buf.capacity() < 16 * 1024, "{}", buf.capacity());
        // Growth follows what arrives (doubling), not what was announced.
        buf.put_slice(&vec![0u8; 100_000]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert!(buf.capacity() <= 4 * 100_005, "{}", buf.capacity());
    }

    #[test]
    fn oversize_prefix_fails_without_reserving() {
        let d = FrameDecoder::new(1024);
        let mut buf = BytesMut::from(&[0xFFu8, 0xFF, 0xFF, 0xFF][..]);
        let cap = buf.capacity();
        assert!(matches!(
            d.decode(&mut buf),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(buf.capacity(), cap);
        let mut zero = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert_eq!(d.decode(&mut zero), Err(FrameError::Empty));
    }

    #[test]
    fn encode_patches_prefix_and_enforces_limit() {
        let mut buf = BytesMut::new();
        encode_frame_with::<EncodeError>(&mut buf, 16, |b| {
            b.put_slice(b"hello");
            Ok(())
        })
        .unwrap();
        assert_eq!(&buf[..], b"\x00\x00\x00\x05hello");
        let err = encode_frame_with::<EncodeError>(&mut buf, 4, |b| {
            b.put_slice(b"hello");
            Ok(())
        });
        assert!(err.is_err());
        assert_eq!(buf.len(), 9);
    }
}
