//! One record payload under any type code, decoded as a client message and
//! as a broker push. Whatever decodes must re-encode and decode equal.
#![no_main]

use bytes::{Bytes, BytesMut};
use fitz_protocol::{ClientMessage, Records, ServerPush};
use libfuzzer_sys::fuzz_target;

fn reread(buf: BytesMut) -> (u16, Bytes) {
    let rec = Records::new(buf.freeze())
        .next()
        .expect("one record")
        .expect("well-formed");
    (rec.ty, rec.payload)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    // Bias towards registered codes so most inputs reach a payload decoder.
    let raw = u16::from_be_bytes([data[0], data[1]]);
    let all = fitz_protocol::types::ALL;
    let ty = if raw & 0x8000 == 0 {
        all[usize::from(raw) % all.len()]
    } else {
        raw & 0x7fff
    };
    let payload = Bytes::copy_from_slice(&data[2..]);
    if let Ok(m) = ClientMessage::decode(ty, payload.clone()) {
        assert_eq!(m.message_type(), ty);
        let mut out = BytesMut::new();
        m.encode_record(&mut out).expect("re-encodes");
        let (t, p) = reread(out);
        assert_eq!(ClientMessage::decode(t, p), Ok(m));
    }
    if let Ok(push) = ServerPush::decode(ty, payload) {
        assert_eq!(push.message_type(), ty);
        let mut out = BytesMut::new();
        push.encode_record(&mut out).expect("re-encodes");
        let (t, p) = reread(out);
        assert_eq!(ServerPush::decode(t, p), Ok(push));
    }
});
