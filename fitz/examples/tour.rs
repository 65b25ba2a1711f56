//! The tour. Until the client lands this walks the wire codec: it encodes a
//! correlated KV BEGIN exactly as it travels over TCP and decodes it back.

use bytes::BytesMut;
use fitz_protocol::record::{LabelledRecords, Side, put_label};
use fitz_protocol::{ClientMessage, Message, frame, kv, types};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let begin = kv::Begin {
        route: "kv://prod/app/users".into(),
        mode: kv::TxMode::ReadWrite,
    };
    let mut wire = BytesMut::new();
    frame::encode_frame_with(&mut wire, frame::DEFAULT_MAX_FRAME, |b| {
        put_label(b, types::CORRELATE, 1);
        begin.encode_record(b)
    })?;
    println!("KV BEGIN on the wire ({} bytes):", wire.len());
    println!("  {}", hex(&wire));

    let body = frame::FrameDecoder::default()
        .decode(&mut wire)?
        .ok_or("incomplete frame")?;
    for labelled in LabelledRecords::new(body, Side::Broker) {
        let labelled = labelled?;
        let msg = ClientMessage::decode(labelled.record.ty, labelled.record.payload)?;
        println!("decoded: correlation {:?} → {msg:?}", labelled.correlation);
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}
