//! Reply payloads: the first byte picks one of the client-side readers (every
//! `ReplyBody`, RESERVE in both request shapes, READ pages in both scopes,
//! filter sets, bare error envelopes). Whatever decodes must re-encode and
//! decode equal.
#![no_main]

use bytes::{Bytes, BytesMut};
use fitz_protocol::{
    ReplyBody, WireError, decode_reply, decode_reply_with, encode_error, encode_ok, kv, lease,
    notice, queue, rpc, schedule, stream,
};
use libfuzzer_sys::fuzz_target;

fn payload_of(buf: BytesMut) -> Bytes {
    fitz_protocol::Records::new(buf.freeze())
        .next()
        .expect("one record")
        .expect("well-formed")
        .payload
}

fn check<R: ReplyBody + PartialEq + std::fmt::Debug>(p: Bytes) {
    let Ok(out) = decode_reply::<R>(p) else {
        return;
    };
    let mut buf = BytesMut::new();
    match &out {
        Ok(ok) => encode_ok(&mut buf, ok).expect("re-encodes"),
        Err(e) => encode_error(&mut buf, R::TYPE, e).expect("re-encodes"),
    }
    assert_eq!(decode_reply::<R>(payload_of(buf)), Ok(out));
}

fn check_reserve(p: Bytes, wildcard: bool) {
    let read = |p| decode_reply_with(p, |r| queue::ReserveOk::decode_body(r, wildcard));
    let Ok(out) = read(p) else { return };
    let mut buf = BytesMut::new();
    match &out {
        Ok(ok) => ok.encode_reply(&mut buf).expect("re-encodes"),
        Err(e) => {
            encode_error(&mut buf, fitz_protocol::types::QUEUE_RESERVE, e).expect("re-encodes")
        }
    }
    assert_eq!(read(payload_of(buf)), Ok(out));
}

fn check_page(p: Bytes, global: bool) {
    let Ok(page) = stream::ReadPage::decode(p, global) else {
        return;
    };
    let mut buf = BytesMut::new();
    page.encode(&mut buf, global);
    assert_eq!(stream::ReadPage::decode(buf.freeze(), global), Ok(page));
}

macro_rules! dispatch {
    ($sel:expr, $p:expr, [$($t:ty),* $(,)?], $($extra:expr),* $(,)?) => {{
        let readers: &[fn(Bytes)] = &[$(check::<$t>,)* $($extra,)*];
        readers[usize::from($sel) % readers.len()]($p)
    }};
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let p = Bytes::copy_from_slice(rest);
    dispatch!(
        sel,
        p,
        [
            kv::BeginOk,
            kv::CommitOk,
            kv::GetOk,
            kv::PutOk,
            kv::ScanOk,
            kv::SubscribeReply,
            queue::EnqueueOk,
            queue::CompleteOk,
            queue::SubscribeReply,
            rpc::SubscribeWorkerOk,
            lease::AcquireOk,
            lease::RenewOk,
            lease::QueryOk,
            lease::SubscribeReply,
            lease::ListOk,
            notice::SubscribeReply,
            stream::BeginOk,
            stream::AppendOk,
            stream::ReadOk,
            stream::LastOk,
            stream::MetadataOk,
            stream::SubscribeReply,
            schedule::ListOk,
            schedule::SubscribeReply,
            schedule::ListV2Ok,
        ],
        |p| check_reserve(p, false),
        |p| check_reserve(p, true),
        |p| check_page(p, false),
        |p| check_page(p, true),
        |p: Bytes| {
            if let Ok(set) = stream::FilterSet::decode(p) {
                assert_eq!(stream::FilterSet::decode(set.to_bytes()), Ok(set));
            }
        },
        |p: Bytes| {
            if let Ok(e) = WireError::decode(p) {
                let mut buf = BytesMut::new();
                e.encode(&mut buf);
                assert_eq!(WireError::decode(buf.freeze()), Ok(e));
            }
        },
    );
});
