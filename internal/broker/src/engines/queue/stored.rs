//! How a queue message is stored: key `[family][route][u64 id]`, value
//! `[u8 kind][u32 attempts][u64 visible_at_ms][body]`.

use bytes::{BufMut, Bytes, BytesMut};

use crate::auth::Family;
use crate::storage;

pub(super) const STORED_MESSAGE: u8 = 0;
pub(super) const STORED_DEAD: u8 = 1;

/// `[u8 kind][u32 attempts][u64 visible_at_ms][body]`; `visible_at_ms` is 0
/// for a message that was ready.
pub(super) fn stored_value(kind: u8, attempts: u32, visible_at_ms: u64, body: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(13 + body.len());
    b.put_u8(kind);
    b.put_u32(attempts);
    b.put_u64(visible_at_ms);
    b.put_slice(body);
    b.freeze()
}

pub(super) fn parse_stored(v: &Bytes) -> Option<(u8, u32, u64, Bytes)> {
    let kind = *v.first()?;
    let attempts = u32::from_be_bytes(v.get(1..5)?.try_into().ok()?);
    let at = u64::from_be_bytes(v.get(5..13)?.try_into().ok()?);
    Some((kind, attempts, at, v.slice(13..)))
}

pub(super) fn stored_key(family: Family, route: &str, id: u64) -> Bytes {
    storage::kv_key(family, route, &id.to_be_bytes())
}
