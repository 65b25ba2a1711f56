//! Bytes off the socket: TCP frame splitting fed in fuzzer-chosen chunk
//! sizes, then the labelled-record reader of both sides, then the typed
//! decoder of each side. Whatever decodes must re-encode and decode equal.
#![no_main]

use bytes::BytesMut;
use fitz_protocol::frame::FrameDecoder;
use fitz_protocol::{ClientMessage, LabelledRecords, ServerPush, Side};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, wire)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let decoder = FrameDecoder::new(4096);
    let mut buf = BytesMut::new();
    for piece in wire.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(!frame.is_empty() && frame.len() <= decoder.max_frame());
                    for side in [Side::Broker, Side::Client] {
                        for l in LabelledRecords::new(frame.clone(), side) {
                            let Ok(l) = l else { break };
                            if let Some(id) = l.correlation {
                                assert_ne!(id, 0);
                            }
                            let (ty, payload) = (l.record.ty, l.record.payload);
                            match side {
                                Side::Broker => {
                                    if let Ok(m) = ClientMessage::decode(ty, payload) {
                                        let mut out = BytesMut::new();
                                        m.encode_record(&mut out).expect("re-encodes");
                                        let again = first_record(out);
                                        assert_eq!(ClientMessage::decode(again.0, again.1), Ok(m));
                                    }
                                }
                                Side::Client => {
                                    if let Ok(p) = ServerPush::decode(ty, payload) {
                                        let mut out = BytesMut::new();
                                        p.encode_record(&mut out).expect("re-encodes");
                                        let again = first_record(out);
                                        assert_eq!(ServerPush::decode(again.0, again.1), Ok(p));
                                    }
                                }
                            }
                        }
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});

fn first_record(buf: BytesMut) -> (u16, bytes::Bytes) {
    let rec = fitz_protocol::Records::new(buf.freeze())
        .next()
        .expect("one record")
        .expect("well-formed");
    (rec.ty, rec.payload)
}
