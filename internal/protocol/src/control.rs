//! Control records: CONNECT, SERVER_HELLO, SESSION_METADATA.
//! (CORRELATE/CORRELATED are handled by the record layer.)

use bytes::{BufMut, Bytes, BytesMut};

use crate::DecodeError;
use crate::caps::Capabilities;
use crate::reply::Message;
use crate::types;
use crate::wire::{Reader, Str, WireWrite};

/// Protocol version this crate speaks and the broker advertises.
pub const PROTOCOL_VERSION: u16 = 1;

/// Longest service name SESSION_METADATA may carry, in bytes after trimming.
pub const MAX_SERVICE_NAME: usize = 128;

/// CONNECT (1): the raw token bytes, no length prefix. Empty = anonymous.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Connect {
    /// Compact JWT (or anything in anonymous mode).
    pub token: Bytes,
}

impl Message for Connect {
    const TYPE: u16 = types::CONNECT;

    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.put_slice(&self.token);
    }

    fn decode_payload(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self { token: r.rest() })
    }
}

/// SERVER_HELLO (4): `[u16 version][u32 capabilities]`, trailing bytes ignored
/// for forward compatibility.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerHello {
    /// Protocol version (1).
    pub version: u16,
    /// Advertised capability bits.
    pub capabilities: Capabilities,
}

impl Message for ServerHello {
    const TYPE: u16 = types::SERVER_HELLO;

    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.put_u16(self.version);
        buf.put_u32(self.capabilities.0);
    }

    fn decode_payload(r: &mut Reader) -> Result<Self, DecodeError> {
        let version = r.u16()?;
        let capabilities = Capabilities(r.u32()?);
        r.rest();
        Ok(Self {
            version,
            capabilities,
        })
    }
}

/// SESSION_METADATA (5): one string, the client's service name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionMetadata {
    /// Display-only service name.
    pub service_name: Str,
}

impl Message for SessionMetadata {
    const TYPE: u16 = types::SESSION_METADATA;

    fn encode_payload(&self, buf: &mut BytesMut) {
        buf.put_str_field(&self.service_name);
    }

    fn decode_payload(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(Self {
            service_name: r.str()?,
        })
    }
}

/// Normalises a service name the way SESSION_METADATA requires: trimmed,
/// 1–128 bytes, no control characters. `None` when it cannot be sent.
pub fn normalize_service_name(name: &str) -> Option<&str> {
    let t = name.trim();
    let ok = !t.is_empty() && t.len() <= MAX_SERVICE_NAME && !t.chars().any(char::is_control);
    ok.then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_ignores_trailing_bytes() {
        let h = ServerHello::decode(Bytes::from_static(&[0, 2, 0, 0, 0, 1, 0xab, 0xcd])).unwrap();
        assert_eq!(h.version, 2);
        assert_eq!(h.capabilities, Capabilities::CORRELATION);
        assert!(ServerHello::decode(Bytes::from_static(&[0, 1, 0, 0])).is_err());
    }

    #[test]
    fn service_names() {
        assert_eq!(normalize_service_name("  orders  "), Some("orders"));
        assert_eq!(normalize_service_name("   "), None);
        assert_eq!(normalize_service_name("a\tb"), None);
        assert_eq!(normalize_service_name(&"x".repeat(129)), None);
    }
}
