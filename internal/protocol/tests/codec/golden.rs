//! Golden vectors V1–V132 of the wire digest (§8), captured from the official
//! 0.2.0 client. Client → broker vectors must encode byte-for-byte and decode
//! back to the same typed message; broker → client vectors must decode with
//! the client-side readers, and encode identically wherever our broker emits
//! exactly that form.

use std::fmt::Debug;

use bytes::{Bytes, BytesMut};
use fitz_protocol::frame::{DEFAULT_MAX_FRAME, FrameDecoder, encode_frame_with};
use fitz_protocol::record::{Records, encode_raw_record, put_label};
use fitz_protocol::reply::RouteOnly;
use fitz_protocol::rpc::RpcId;
use fitz_protocol::types::{CORRELATE, CORRELATED};
use fitz_protocol::{
    Capabilities, ClientMessage, DecodeError, EncodeError, Envelope, Labelled, LabelledRecords,
    Message, Record, ReplyBody, ServerPush, Side, Str, WireError, control, decode_reply,
    decode_reply_with, encode_error, encode_ok, kv, lease, notice, queue, rpc, schedule, stream,
};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
        .collect()
}

fn to_hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn s(x: &str) -> Str {
    Str::from(x)
}

fn b(x: &str) -> Bytes {
    Bytes::copy_from_slice(x.as_bytes())
}

const UUID: RpcId = RpcId([
    0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0,
]);

/// Splits the single TCP frame a vector holds, checking nothing is left over.
fn frame_body(v: &[u8]) -> Bytes {
    let mut buf = BytesMut::from(v);
    let body = FrameDecoder::default()
        .decode(&mut buf)
        .expect("valid prefix")
        .expect("whole frame");
    assert!(buf.is_empty(), "vector holds more than one frame");
    body
}

/// Builds one TCP frame: an optional label of type `label_ty`, then `body`.
fn frame(
    label_ty: u16,
    correlation: Option<u64>,
    body: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode_frame_with::<EncodeError>(&mut buf, DEFAULT_MAX_FRAME, |b| {
        if let Some(id) = correlation {
            put_label(b, label_ty, id);
        }
        body(b)
    })
    .expect("encodes");
    buf.to_vec()
}

/// The one (possibly labelled) record of a vector, read as `side`.
fn only_record(v: &[u8], side: Side) -> Labelled {
    let mut it = LabelledRecords::new(frame_body(v), side);
    let first = it.next().expect("one record").expect("well-formed");
    assert!(it.next().is_none(), "more than one record");
    first
}

/// A client → broker vector ([C]/[S]): the typed message encodes to exactly
/// the vector, and the broker-side reader decodes the vector back to it.
fn client_vector(vector: &str, correlation: Option<u64>, msg: impl Into<ClientMessage>) {
    let want = hex(vector);
    let msg = msg.into();
    let got = frame(CORRELATE, correlation, |b| msg.encode_record(b));
    assert_eq!(to_hex(&got), to_hex(&want), "encoding of {msg:?}");
    let l = only_record(&want, Side::Broker);
    assert_eq!(l.correlation, correlation);
    assert_eq!(l.record.ty, msg.message_type());
    assert_eq!(
        ClientMessage::decode(l.record.ty, l.record.payload).expect("decodes"),
        msg
    );
}

/// A broker push ([A]): encodes identically and decodes with the client reader.
fn push_vector(vector: &str, push: impl Into<ServerPush>) {
    let want = hex(vector);
    let push = push.into();
    let got = frame(CORRELATED, None, |b| push.encode_record(b));
    assert_eq!(to_hex(&got), to_hex(&want), "encoding of {push:?}");
    let l = only_record(&want, Side::Client);
    assert_eq!(l.correlation, None);
    assert_eq!(
        ServerPush::decode(l.record.ty, l.record.payload).expect("decodes"),
        push
    );
}

/// The reply record of a broker → client vector, read on the client side.
fn reply_record(vector: &str, correlation: Option<u64>, ty: u16) -> Record {
    let l = only_record(&hex(vector), Side::Client);
    assert_eq!(l.correlation, correlation);
    assert_eq!(l.record.ty, ty);
    l.record
}

/// A reply our broker emits in exactly this form: `encode_ok`/`encode_error`
/// reproduce the vector and `decode_reply` reads back the same outcome.
fn reply_vector<R>(vector: &str, correlation: Option<u64>, outcome: Result<R, WireError>)
where
    R: ReplyBody + PartialEq + Debug,
{
    let got = frame(CORRELATED, correlation, |b| match &outcome {
        Ok(body) => encode_ok(b, body),
        Err(e) => encode_error(b, R::TYPE, e),
    });
    assert_eq!(
        to_hex(&got),
        to_hex(&hex(vector)),
        "encoding of {outcome:?}"
    );
    reply_decodes(vector, correlation, outcome);
}

/// A reply form our broker does not emit (or not byte-identically): only the
/// client-side decode is asserted.
fn reply_decodes<R>(vector: &str, correlation: Option<u64>, outcome: Result<R, WireError>)
where
    R: ReplyBody + PartialEq + Debug,
{
    let rec = reply_record(vector, correlation, R::TYPE);
    assert_eq!(decode_reply::<R>(rec.payload).expect("decodes"), outcome);
}

// ---------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------

#[test]
fn v1_v2_connect() {
    client_vector(V1, None, control::Connect::default());
    client_vector(V2, None, control::Connect { token: b("abc") });
}

#[test]
fn v3_v4_server_hello() {
    push_vector(
        V3,
        control::ServerHello {
            version: 1,
            capabilities: Capabilities::NONE,
        },
    );
    push_vector(
        V4,
        control::ServerHello {
            version: control::PROTOCOL_VERSION,
            capabilities: Capabilities::ALL,
        },
    );
    assert_eq!(
        Capabilities::ALL,
        Capabilities::CORRELATION
            | Capabilities::SESSION_METADATA
            | Capabilities::KV_SCAN_EXCLUSIVE
            | Capabilities::RPC_CANCELLATION
    );
}

#[test]
fn derived_hello_with_trailing_bytes() {
    // Forward compatibility: bytes after the capabilities are ignored, so the
    // decoded hello cannot re-encode to these exact bytes.
    let v = "00 00 00 0b 04 00 08 00 02 00 00 00 01 ab cd";
    let l = only_record(&hex(v), Side::Client);
    assert_eq!(l.record.ty, 4);
    assert_eq!(
        ServerPush::decode(l.record.ty, l.record.payload).unwrap(),
        ServerPush::Hello(control::ServerHello {
            version: 2,
            capabilities: Capabilities::CORRELATION,
        })
    );
    // The strict one-record reader used for the connect settle accepts it too.
    let rec = fitz_protocol::record::decode_single_record(frame_body(&hex(v))).unwrap();
    assert_eq!(rec.payload.len(), 8);
}

#[test]
fn v5_session_metadata() {
    client_vector(
        V5,
        None,
        control::SessionMetadata {
            service_name: s("orders-worker"),
        },
    );
}

// ---------------------------------------------------------------------------
// Correlation
// ---------------------------------------------------------------------------

const KV_ROUTE: &str = "kv://prod/app/users";

#[test]
fn v6_correlate_kv_begin() {
    client_vector(
        V6,
        Some(1),
        kv::Begin {
            route: s(KV_ROUTE),
            mode: kv::TxMode::ReadWrite,
        },
    );
}

#[test]
fn v7_correlated_kv_begin_ok() {
    reply_vector(V7, Some(1), Ok(kv::BeginOk { tx_id: 7 }));
}

#[test]
fn v8_correlate_kv_scan_exclusive() {
    client_vector(
        V8,
        Some(2),
        kv::Scan {
            tx_id: 7,
            route: s(KV_ROUTE),
            start: Some(b("a")),
            end: Some(b("z")),
            limit: Some(10),
            reverse: false,
            start_exclusive: Some(true),
        },
    );
}

#[test]
fn v9_correlate_rpc_subscribe_worker_with_extension() {
    let msg = rpc::SubscribeWorker {
        pattern: s("rpc://prod/app/*"),
        max_concurrent: 4,
        extension_flags: Some(rpc::FLAG_SUPPORTS_CANCELLATION),
    };
    assert!(msg.supports_cancellation());
    client_vector(V9, Some(7), msg);
}

// ---------------------------------------------------------------------------
// KV
// ---------------------------------------------------------------------------

#[test]
fn v10_v11_kv_begin() {
    client_vector(
        V10,
        None,
        kv::Begin {
            route: s(KV_ROUTE),
            mode: kv::TxMode::ReadWrite,
        },
    );
    client_vector(
        V11,
        None,
        kv::Begin {
            route: s(KV_ROUTE),
            mode: kv::TxMode::ReadOnly,
        },
    );
}

#[test]
fn v12_kv_begin_ok() {
    reply_vector(V12, None, Ok(kv::BeginOk { tx_id: 7 }));
}

#[test]
fn v13_kv_put() {
    client_vector(
        V13,
        None,
        kv::Put {
            tx_id: 7,
            route: s(KV_ROUTE),
            key: b("bob"),
            value: b("alice"),
        },
    );
}

#[test]
fn v14_kv_put_ok() {
    reply_vector(V14, None, Ok(kv::PutOk::default()));
}

#[test]
fn v15_kv_insert() {
    client_vector(
        V15,
        None,
        kv::Insert {
            tx_id: 7,
            route: s(KV_ROUTE),
            key: b("bob"),
            value: b("alice"),
        },
    );
}

#[test]
fn v16_kv_insert_coded_error() {
    let e = WireError::coded(fitz_protocol::codes::KV_KEY_EXISTS, "key exists");
    reply_vector::<kv::InsertOk>(V16, None, Err(e.clone()));
    assert_eq!(e.code(), Some(1006));
}

#[test]
fn v17_kv_get() {
    client_vector(
        V17,
        None,
        kv::Get {
            tx_id: 7,
            route: s(KV_ROUTE),
            key: b("bob"),
        },
    );
}

#[test]
fn v18_kv_get_found() {
    reply_vector(
        V18,
        None,
        Ok(kv::GetOk {
            value: Some(b("alice")),
        }),
    );
}

#[test]
fn v19_kv_get_not_found_minimal() {
    // `[0][0]`: accepted; our broker writes the V20 form instead.
    reply_decodes(V19, None, Ok(kv::GetOk { value: None }));
}

#[test]
fn v20_kv_get_not_found_broker_form() {
    // `[0][0][u32 0]` is exactly what `GetOk { value: None }` encodes to.
    reply_vector(V20, None, Ok(kv::GetOk { value: None }));
}

#[test]
fn v21_kv_delete() {
    client_vector(
        V21,
        None,
        kv::Delete {
            tx_id: 7,
            route: s(KV_ROUTE),
            key: b("bob"),
        },
    );
}

#[test]
fn v22_kv_delete_range() {
    client_vector(
        V22,
        None,
        kv::DeleteRange {
            tx_id: 7,
            route: s(KV_ROUTE),
            start: b("a"),
            end: b("m"),
        },
    );
}

#[test]
fn v23_kv_scan_without_exclusive_byte() {
    client_vector(
        V23,
        None,
        kv::Scan {
            tx_id: 7,
            route: s(KV_ROUTE),
            start: Some(b("a")),
            end: Some(b("z")),
            limit: Some(10),
            reverse: false,
            start_exclusive: None,
        },
    );
}

#[test]
fn v24_kv_scan_ok() {
    reply_vector(
        V24,
        None,
        Ok(kv::ScanOk {
            items: vec![(b("bob"), b("alice"))],
            has_more: true,
        }),
    );
}

#[test]
fn v25_v26_kv_commit() {
    client_vector(
        V25,
        None,
        kv::Commit {
            tx_id: 7,
            route: s(KV_ROUTE),
            durability: kv::Durability::Sync,
        },
    );
    client_vector(
        V26,
        None,
        kv::Commit {
            tx_id: 9,
            route: s(KV_ROUTE),
            durability: kv::Durability::Buffered,
        },
    );
}

#[test]
fn v27_kv_rollback() {
    client_vector(
        V27,
        None,
        kv::Rollback {
            tx_id: 8,
            route: s(KV_ROUTE),
        },
    );
}

#[test]
fn v28_kv_subscribe() {
    client_vector(V28, None, kv::Subscribe::new("kv://prod/app/*"));
}

#[test]
fn v29_kv_subscribe_ok() {
    reply_vector(V29, None, Ok(kv::SubscribeReply { sub_id: 5 }));
}

#[test]
fn v30_kv_notify() {
    push_vector(
        V30,
        kv::Notify {
            sub_id: 5,
            route: s(KV_ROUTE),
            mutation_count: 3,
        },
    );
}

#[test]
fn v31_kv_unsubscribe() {
    client_vector(V31, None, kv::Unsubscribe::new("kv://prod/app/*"));
}

// ---------------------------------------------------------------------------
// Queue
// ---------------------------------------------------------------------------

const QUEUE_ROUTE: &str = "queue://realm/area/jobs";

#[test]
fn v32_v33_queue_enqueue() {
    client_vector(
        V32,
        None,
        queue::Enqueue {
            route: s(QUEUE_ROUTE),
            body: b("body"),
            delay_seconds: Some(2),
        },
    );
    client_vector(
        V33,
        None,
        queue::Enqueue {
            route: s(QUEUE_ROUTE),
            body: b("body"),
            delay_seconds: None,
        },
    );
}

#[test]
fn v34_queue_enqueue_ok() {
    reply_vector(V34, None, Ok(queue::EnqueueOk { message_id: 77 }));
}

#[test]
fn v35_queue_enqueue_full() {
    let e = WireError::coded(fitz_protocol::codes::QUEUE_FULL, "full");
    reply_vector::<queue::EnqueueOk>(V35, None, Err(e));
    assert!(fitz_protocol::codes::is_retryable(4005));
}

#[test]
fn v36_queue_reserve_concrete() {
    let msg = queue::Reserve {
        route: s(QUEUE_ROUTE),
        lease_seconds: 30,
        batch_size: Some(1),
        wait_seconds: None,
    };
    assert!(!msg.is_wildcard());
    client_vector(V36, None, msg);
}

/// Checks a RESERVE reply both ways; `ReserveOk` is not a `ReplyBody`
/// because its layout depends on the request.
fn reserve_reply_vector(vector: &str, wildcard: bool, want: queue::ReserveOk) {
    let got = frame(CORRELATED, None, |b| want.encode_reply(b));
    assert_eq!(to_hex(&got), to_hex(&hex(vector)));
    let rec = reply_record(vector, None, fitz_protocol::types::QUEUE_RESERVE);
    let back = decode_reply_with(rec.payload.clone(), |r| {
        queue::ReserveOk::decode_body(r, wildcard)
    })
    .unwrap();
    assert_eq!(back, Ok(want));
    // Read with the other request shape, the same bytes must not pass as valid items.
    let wrong = decode_reply_with(rec.payload, |r| queue::ReserveOk::decode_body(r, !wildcard));
    assert!(wrong.is_err(), "{wrong:?}");
}

#[test]
fn v37_queue_reserve_ok_routeless() {
    reserve_reply_vector(
        V37,
        false,
        queue::ReserveOk {
            items: vec![queue::ReservedItem {
                route: None,
                message_id: 5,
                lease_token: 9,
                body: b("body"),
            }],
        },
    );
}

#[test]
fn v38_queue_reserve_wildcard() {
    let msg = queue::Reserve {
        route: s("queue://realm/area/*"),
        lease_seconds: 30,
        batch_size: Some(10),
        wait_seconds: Some(5),
    };
    assert!(msg.is_wildcard());
    client_vector(V38, None, msg);
}

#[test]
fn v39_queue_reserve_ok_routed() {
    reserve_reply_vector(
        V39,
        true,
        queue::ReserveOk {
            items: vec![queue::ReservedItem {
                route: Some(s(QUEUE_ROUTE)),
                message_id: 6,
                lease_token: 10,
                body: b("x"),
            }],
        },
    );
}

#[test]
fn derived_queue_reserve_globstar_is_wildcard() {
    let msg = queue::Reserve {
        route: s("queue://realm/**"),
        lease_seconds: 30,
        batch_size: Some(1),
        wait_seconds: None,
    };
    assert!(msg.is_wildcard());
    let payload = msg.to_payload();
    assert_eq!(queue::Reserve::decode(payload).unwrap(), msg);
}

#[test]
fn v40_queue_extend() {
    client_vector(
        V40,
        None,
        queue::Extend {
            route: s(QUEUE_ROUTE),
            message_id: 5,
            lease_token: 9,
            lease_seconds: 60,
        },
    );
}

#[test]
fn v41_queue_complete() {
    client_vector(
        V41,
        None,
        queue::Complete {
            route: s(QUEUE_ROUTE),
            message_id: 5,
            lease_token: 9,
        },
    );
}

#[test]
fn v42_queue_complete_uncoded_error() {
    // Our broker answers COMPLETE failures in the coded envelope (V43); the
    // uncoded form is only read. The envelope itself still encodes exactly.
    let e = WireError::uncoded("invalid token");
    reply_decodes::<queue::CompleteOk>(V42, None, Err(e.clone()));
    let rec = reply_record(V42, None, fitz_protocol::types::QUEUE_COMPLETE);
    let back = WireError::decode(rec.payload).unwrap();
    assert_eq!(back.envelope, Envelope::Uncoded);
    assert_eq!(back.code(), None);
    let got = frame(CORRELATED, None, |b| {
        encode_error(b, fitz_protocol::types::QUEUE_COMPLETE, &e)
    });
    assert_eq!(got, hex(V42));
}

#[test]
fn v43_queue_complete_coded_error() {
    reply_vector::<queue::CompleteOk>(
        V43,
        None,
        Err(WireError::coded(
            fitz_protocol::codes::QUEUE_INVALID_TOKEN,
            "invalid token",
        )),
    );
}

#[test]
fn v44_queue_subscribe() {
    client_vector(V44, None, queue::Subscribe::new("queue://realm/**"));
}

#[test]
fn v45_queue_subscribe_ok() {
    reply_vector(V45, None, Ok(queue::SubscribeReply { sub_id: 21 }));
}

#[test]
fn v46_queue_notify_wrapped_counters() {
    let counters = queue::Counters {
        ready: 3,
        delayed: 0,
        inflight: 1,
    };
    let n = queue::Notify::with_counters(21, s(QUEUE_ROUTE), counters);
    push_vector(V46, n.clone());
    assert_eq!(n.payload.len(), 24);
    assert_eq!(n.counters(), Some(counters));
}

#[test]
fn v47_queue_unsubscribe() {
    client_vector(V47, None, queue::Unsubscribe::new("queue://realm/**"));
}

// ---------------------------------------------------------------------------
// Notice
// ---------------------------------------------------------------------------

const NOTICE_ROUTE: &str = "notice://prod/app/orders";

#[test]
fn v48_notice_publish() {
    client_vector(
        V48,
        None,
        notice::Publish {
            route: s(NOTICE_ROUTE),
            payload: b("hi"),
        },
    );
}

#[test]
fn v49_notice_subscribe() {
    client_vector(V49, None, notice::Subscribe::new("notice://prod/app/*"));
}

#[test]
fn v50_notice_subscribe_ok_flagged() {
    reply_vector(V50, None, Ok(notice::SubscribeReply { sub_id: 42 }));
}

#[test]
fn v51_notice_subscribe_ok_flagless() {
    // Legacy `[0][u64 id]`; our broker always writes the V50 flagged form.
    reply_decodes(V51, None, Ok(notice::SubscribeReply { sub_id: 43 }));
}

#[test]
fn v52_notice_notify() {
    push_vector(
        V52,
        notice::Notify {
            sub_id: 42,
            route: s(NOTICE_ROUTE),
            payload: b("hi"),
        },
    );
}

#[test]
fn v53_notice_unsubscribe_by_id() {
    client_vector(V53, None, notice::Unsubscribe { sub_id: 42 });
}

#[test]
fn v54_notice_unsubscribe_all() {
    client_vector(V54, None, notice::UnsubscribeAll);
}

// ---------------------------------------------------------------------------
// Lease
// ---------------------------------------------------------------------------

const LEASE_ROUTE: &str = "lease://realm/area/resource";

#[test]
fn v55_v56_lease_acquire() {
    for (v, wait) in [(V55, 0), (V56, 7)] {
        client_vector(
            v,
            None,
            lease::Acquire {
                route: s(LEASE_ROUTE),
                owner: s("worker-1"),
                ttl_secs: 30,
                wait_seconds: Some(wait),
            },
        );
    }
}

#[test]
fn v57_v58_v59_lease_acquire_ok_and_deferred_grant() {
    reply_vector(
        V57,
        None,
        Ok(lease::AcquireOk {
            kind: lease::AcquireKind::Acquired,
            fencing_token: 42,
        }),
    );
    reply_vector(
        V58,
        None,
        Ok(lease::AcquireOk {
            kind: lease::AcquireKind::Queued,
            fencing_token: 0,
        }),
    );
    // The deferred grant is a second ordinary type-400 reply.
    reply_vector(
        V59,
        None,
        Ok(lease::AcquireOk {
            kind: lease::AcquireKind::Acquired,
            fencing_token: 43,
        }),
    );
}

#[test]
fn v60_lease_acquire_held() {
    reply_vector::<lease::AcquireOk>(
        V60,
        None,
        Err(WireError::coded(
            fitz_protocol::codes::LEASE_HELD,
            "HeldByOther: worker-1",
        )),
    );
}

#[test]
fn v61_lease_renew() {
    client_vector(
        V61,
        None,
        lease::Renew {
            route: s(LEASE_ROUTE),
            owner: s("worker-1"),
            fencing_token: 42,
            ttl_secs: 30,
        },
    );
}

#[test]
fn v62_lease_renew_ok() {
    reply_vector(V62, None, Ok(lease::RenewOk { fencing_token: 42 }));
}

#[test]
fn v63_lease_release() {
    client_vector(
        V63,
        None,
        lease::Release {
            route: s(LEASE_ROUTE),
            owner: s("worker-1"),
            fencing_token: 42,
        },
    );
}

#[test]
fn v64_lease_query() {
    client_vector(V64, None, lease::Query::new(LEASE_ROUTE));
}

#[test]
fn v65_v66_lease_query_ok() {
    reply_vector(
        V65,
        None,
        Ok(lease::QueryOk {
            holder: Some(lease::Holder {
                owner: s("worker-1"),
                ttl_remaining_secs: 25,
            }),
            waiters: 2,
        }),
    );
    reply_vector(
        V66,
        None,
        Ok(lease::QueryOk {
            holder: None,
            waiters: 0,
        }),
    );
}

#[test]
fn v67_lease_subscribe_wildcard() {
    client_vector(V67, None, lease::Subscribe::new("lease://acme/renderers/*"));
}

#[test]
fn v68_lease_subscribe_ok() {
    reply_vector(V68, None, Ok(lease::SubscribeReply { sub_id: 3 }));
}

#[test]
fn v69_lease_notify() {
    push_vector(
        V69,
        lease::Notify {
            sub_id: 3,
            route: s("lease://acme/renderers/doc-1"),
        },
    );
}

#[test]
fn v70_lease_unsubscribe() {
    client_vector(
        V70,
        None,
        lease::Unsubscribe::new("lease://acme/renderers/*"),
    );
}

#[test]
fn v71_lease_list_first_page() {
    client_vector(
        V71,
        None,
        lease::List {
            pattern: s("lease://acme/**"),
            cursor: None,
            limit: 0,
        },
    );
}

#[test]
fn v72_lease_list_page() {
    reply_vector(
        V72,
        None,
        Ok(lease::ListOk {
            items: vec![lease::LeaseInfo {
                route: s("lease://acme/renderers/doc-1"),
                owner: s("worker-1"),
                holder_incarnation: 7,
                acquired_at: s("2026-01-01T00:00:00Z"),
                expires_in_secs: 25,
                renewals: 2,
            }],
            next: Some(lease::ListCursor {
                snapshot_id: 123,
                offset: 100,
            }),
        }),
    );
}

#[test]
fn v73_lease_list_continuation() {
    client_vector(
        V73,
        None,
        lease::List {
            pattern: s("lease://acme/**"),
            cursor: Some(lease::ListCursor {
                snapshot_id: 123,
                offset: 100,
            }),
            limit: 100,
        },
    );
}

#[test]
fn v74_lease_list_last_page() {
    reply_vector(V74, None, Ok(lease::ListOk::default()));
}

#[test]
fn v75_lease_list_bad_cursor() {
    reply_vector::<lease::ListOk>(
        V75,
        None,
        Err(WireError::coded(
            fitz_protocol::codes::LEASE_INVALID_CURSOR,
            "cursor does not match this scan",
        )),
    );
}

// ---------------------------------------------------------------------------
// Stream
// ---------------------------------------------------------------------------

const STREAM_ROUTE: &str = "stream://r/a/x";

#[test]
fn v76_v77_stream_begin() {
    client_vector(
        V76,
        None,
        stream::Begin {
            route: s(STREAM_ROUTE),
            ingest_metadata: None,
        },
    );
    client_vector(
        V77,
        None,
        stream::Begin {
            route: s(STREAM_ROUTE),
            ingest_metadata: Some(b("ingest")),
        },
    );
}

#[test]
fn v78_stream_begin_ok() {
    reply_vector(
        V78,
        None,
        Ok(stream::BeginOk {
            session_id: 9,
            data: Bytes::new(),
        }),
    );
}

#[test]
fn v79_v80_stream_append() {
    client_vector(
        V79,
        None,
        stream::Append {
            session_id: 9,
            expected_offset: 0,
            body: b("one"),
            metadata: Some(b("m1")),
            discriminator: Some(s("proj.alpha")),
        },
    );
    client_vector(
        V80,
        None,
        stream::Append {
            session_id: 9,
            expected_offset: 1,
            body: b("two"),
            metadata: None,
            discriminator: None,
        },
    );
}

#[test]
fn v81_stream_append_ok() {
    let ok = stream::AppendOk {
        data: Bytes::copy_from_slice(&17u64.to_be_bytes()),
    };
    reply_vector(V81, None, Ok(ok.clone()));
    assert_eq!(ok.leading_u64(), Some(17));
}

#[test]
fn v82_stream_commit() {
    client_vector(
        V82,
        None,
        stream::Commit {
            session_id: 9,
            durability: kv::Durability::Sync,
        },
    );
}

#[test]
fn v83_stream_rollback() {
    client_vector(V83, None, stream::Rollback { session_id: 10 });
}

#[test]
fn v84_stream_read_resource() {
    client_vector(
        V84,
        None,
        stream::Read {
            selector: s(STREAM_ROUTE),
            from_offset: 0,
            limit: 10,
            max_bytes: None,
            filter: None,
            cursor_fingerprint: None,
            captured_watermark: None,
        },
    );
}

/// `created_at` the capture used for every record.
const CREATED_AT: u64 = 0x0000_018b_cfe5_6800;

/// Checks a READ reply both ways and returns the page read with `global`.
fn read_reply_vector(vector: &str, page: &stream::ReadPage, global: bool) {
    let mut data = BytesMut::new();
    page.encode(&mut data, global);
    reply_vector(
        vector,
        None,
        Ok(stream::ReadOk {
            id: None,
            data: data.freeze(),
        }),
    );
    let rec = reply_record(vector, None, fitz_protocol::types::STREAM_READ);
    let ok = decode_reply::<stream::ReadOk>(rec.payload)
        .unwrap()
        .unwrap();
    assert_eq!(ok.id, None);
    assert_eq!(
        &stream::ReadPage::decode(ok.data.clone(), global).unwrap(),
        page
    );
    // The scope decides the layout: the other scope must not read this page.
    assert!(stream::ReadPage::decode(ok.data, !global).is_err());
}

#[test]
fn v85_stream_read_page_resource_scope() {
    let page = stream::ReadPage {
        items: vec![stream::Item {
            route: s(STREAM_ROUTE),
            kind: stream::ItemKind::Event(stream::Record {
                resource_offset: 0,
                area_offset: Some(4),
                realm_offset: Some(9),
                global_offset: None,
                body: b("one"),
                metadata: None,
                created_at: CREATED_AT,
            }),
        }],
        last_resource_offset: 0,
        last_area_offset: Some(4),
        last_realm_offset: Some(9),
        last_global_offset: None,
        has_more: false,
        cursor_fingerprint: None,
        captured_watermark: None,
    };
    read_reply_vector(V85, &page, false);
    assert_eq!(
        fitz_protocol::route::stream_selector(STREAM_ROUTE),
        Ok(fitz_protocol::route::SelectorScope::Resource)
    );
}

fn proj_alpha_filter() -> stream::FilterSet {
    stream::FilterSet {
        clauses: vec![stream::FilterClause::Equals(s("proj.alpha"))],
    }
}

#[test]
fn v86_stream_read_global_with_filter_and_cursor() {
    let filter = proj_alpha_filter().to_bytes();
    client_vector(
        V86,
        None,
        stream::Read {
            selector: s("stream://**"),
            from_offset: 40,
            limit: 100,
            max_bytes: Some(4096),
            filter: Some(filter.clone()),
            cursor_fingerprint: Some(0x1122_3344_5566_7788),
            captured_watermark: Some(42),
        },
    );
    assert_eq!(
        stream::FilterSet::decode(filter).unwrap(),
        proj_alpha_filter()
    );
}

#[test]
fn v87_stream_read_page_global_scope() {
    let page = stream::ReadPage {
        items: vec![
            stream::Item {
                route: s("stream://acme/cats/cat-1"),
                kind: stream::ItemKind::Event(stream::Record {
                    resource_offset: 3,
                    area_offset: Some(5),
                    realm_offset: Some(8),
                    global_offset: Some(40),
                    body: b("e"),
                    metadata: None,
                    created_at: CREATED_AT,
                }),
            },
            stream::Item {
                route: s("stream://acme/dogs/dog-1"),
                kind: stream::ItemKind::Filtered {
                    offset: 0,
                    reason: stream::FilterReason::ServerFilter,
                },
            },
        ],
        last_resource_offset: 3,
        last_area_offset: Some(5),
        last_realm_offset: Some(8),
        last_global_offset: Some(41),
        has_more: true,
        cursor_fingerprint: Some(0x1122_3344_5566_7788),
        captured_watermark: Some(42),
    };
    read_reply_vector(V87, &page, true);
    assert_eq!(
        fitz_protocol::route::stream_selector("stream://**"),
        Ok(fitz_protocol::route::SelectorScope::Global)
    );
}

#[test]
fn v88_stream_read_coded_error() {
    reply_vector::<stream::ReadOk>(
        V88,
        None,
        Err(WireError::coded(
            fitz_protocol::codes::STREAM_FILTER_VERSION,
            "unsupported filter version",
        )),
    );
}

#[test]
fn v89_stream_append_status2_error() {
    let e = WireError::stream(
        fitz_protocol::codes::STREAM_CONCURRENCY_CONFLICT,
        "conflict",
    );
    reply_vector::<stream::AppendOk>(V89, None, Err(e.clone()));
    assert_eq!(e.envelope, Envelope::Stream);
    assert_eq!(e.code(), Some(2001));
}

#[test]
fn v90_v91_stream_legacy_status1_uncoded_errors() {
    // Legacy brokers; ours answers non-READ Stream errors with status 2 (V89).
    reply_decodes::<stream::AppendOk>(V90, None, Err(WireError::uncoded("conflict")));
    reply_decodes::<stream::BeginOk>(V91, None, Err(WireError::uncoded("session already active")));
}

#[test]
fn v92_stream_last() {
    client_vector(V92, None, stream::Last::new(STREAM_ROUTE));
}

#[test]
fn v93_stream_last_ok() {
    reply_vector(
        V93,
        None,
        Ok(stream::LastOk {
            record: Some(stream::Record {
                resource_offset: 1,
                area_offset: Some(4),
                realm_offset: Some(9),
                global_offset: None,
                body: b("two"),
                metadata: None,
                created_at: CREATED_AT + 1,
            }),
        }),
    );
}

#[test]
fn v94_stream_get_metadata() {
    client_vector(V94, None, stream::GetMetadata::new(STREAM_ROUTE));
}

#[test]
fn v95_stream_get_metadata_ok() {
    reply_vector(
        V95,
        None,
        Ok(stream::MetadataOk {
            metadata: stream::Metadata {
                first_offset: Some(0),
                last_offset: Some(1),
                record_count: 2,
                max_batch_events: 1000,
                max_batch_bytes: 1 << 20,
                ttl_seconds: None,
                area_watermark: 4,
                realm_watermark: 9,
            },
        }),
    );
}

#[test]
fn v96_stream_subscribe() {
    client_vector(V96, None, stream::Subscribe::new("stream://r/a/*"));
}

#[test]
fn v97_stream_subscribe_ok() {
    reply_vector(
        V97,
        None,
        Ok(stream::SubscribeReply {
            id: Some(5),
            data: Bytes::new(),
        }),
    );
}

#[test]
fn v98_stream_notify() {
    let json = concat!(
        r#"{"event":"committed","first_resource_offset":0,"last_resource_offset":1,"#,
        r#""first_area_offset":4,"last_area_offset":5,"first_realm_offset":9,"#,
        r#""last_realm_offset":10,"batch_size":2}"#
    );
    push_vector(
        V98,
        stream::Notify {
            sub_id: 5,
            route: s(STREAM_ROUTE),
            payload: b(json),
        },
    );
}

#[test]
fn v99_stream_unsubscribe() {
    client_vector(V99, None, stream::Unsubscribe::new("stream://r/a/*"));
}

#[test]
fn v100_stream_filter_set() {
    // Not a frame: the bare `filter` value of a READ.
    let set = stream::FilterSet {
        clauses: vec![
            stream::FilterClause::Equals(s("proj.alpha")),
            stream::FilterClause::NotEquals(s("audit.beta")),
            stream::FilterClause::StartsWith(s("proj.")),
            stream::FilterClause::AnyOf(vec![s("proj.alpha"), s("proj.gamma")]),
        ],
    };
    assert_eq!(to_hex(&set.to_bytes()), to_hex(&hex(V100)));
    assert_eq!(
        stream::FilterSet::decode(Bytes::from(hex(V100))).unwrap(),
        set
    );
    assert!(set.matches("proj.alpha"));
    assert!(!set.matches("proj.gamma"));
}

// ---------------------------------------------------------------------------
// Schedule
// ---------------------------------------------------------------------------

const SCHEDULE_ROUTE: &str = "schedule://realm/area/job/run";

fn every_five(mode: schedule::DeliveryMode, payload: &str) -> schedule::Entry {
    schedule::Entry {
        route: s(SCHEDULE_ROUTE),
        cron: s("*/5 * * * *"),
        mode,
        payload: b(payload),
    }
}

#[test]
fn v101_schedule_create() {
    client_vector(
        V101,
        None,
        schedule::Create {
            entry: every_five(schedule::DeliveryMode::Broadcast, "x"),
        },
    );
}

#[test]
fn v102_schedule_create_uncoded_error() {
    // Domain errors of CREATE travel uncoded, so our broker writes this form.
    reply_vector::<schedule::CreateOk>(V102, None, Err(WireError::uncoded("invalid cron")));
}

#[test]
fn v103_schedule_create_coded_error() {
    reply_vector::<schedule::CreateOk>(
        V103,
        None,
        Err(WireError::coded(
            fitz_protocol::codes::SCHEDULE_BUSY,
            "broker busy",
        )),
    );
}

#[test]
fn v104_schedule_cancel() {
    client_vector(V104, None, schedule::Cancel::new(SCHEDULE_ROUTE));
}

#[test]
fn v105_schedule_list() {
    client_vector(
        V105,
        None,
        schedule::List {
            offset: Some(0),
            limit: Some(100),
        },
    );
}

#[test]
fn v106_schedule_list_ok() {
    reply_vector(
        V106,
        None,
        Ok(schedule::ListOk {
            total_count: 7,
            entries: vec![every_five(schedule::DeliveryMode::Single, "payload")],
        }),
    );
}

#[test]
fn v107_schedule_list_coded_error() {
    reply_vector::<schedule::ListOk>(
        V107,
        None,
        Err(WireError::coded(
            fitz_protocol::codes::SCHEDULE_BUSY,
            "broker busy",
        )),
    );
}

const CONTINUATION: &str = "schedule-list-v1:1:schedule://realm/area/job/run";

#[test]
fn v108_schedule_list_v2_first_page() {
    client_vector(
        V108,
        None,
        schedule::ListV2 {
            continuation: None,
            limit: Some(1),
        },
    );
}

#[test]
fn v109_schedule_list_v2_page() {
    reply_vector(
        V109,
        None,
        Ok(schedule::ListV2Ok {
            has_more: true,
            continuation: Some(s(CONTINUATION)),
            entries: vec![every_five(schedule::DeliveryMode::Broadcast, "x")],
        }),
    );
    assert!(CONTINUATION.starts_with(schedule::CONTINUATION_PREFIX));
}

#[test]
fn v110_schedule_list_v2_continuation() {
    client_vector(
        V110,
        None,
        schedule::ListV2 {
            continuation: Some(s(CONTINUATION)),
            limit: None,
        },
    );
}

#[test]
fn v111_schedule_list_v2_last_page() {
    reply_vector(V111, None, Ok(schedule::ListV2Ok::default()));
}

#[test]
fn v112_schedule_create_batch() {
    client_vector(
        V112,
        None,
        schedule::CreateBatch {
            entries: vec![
                schedule::Entry {
                    route: s("schedule://acme/jobs/backup/run"),
                    cron: s("0 2 * * *"),
                    mode: schedule::DeliveryMode::Broadcast,
                    payload: b("b"),
                },
                schedule::Entry {
                    route: s("schedule://acme/jobs/report/run"),
                    cron: s("15 6 * * *"),
                    mode: schedule::DeliveryMode::Single,
                    payload: b("r"),
                },
            ],
        },
    );
}

#[test]
fn v113_schedule_subscribe() {
    client_vector(
        V113,
        None,
        schedule::Subscribe::new("schedule://realm/area/*/run"),
    );
}

#[test]
fn v114_schedule_subscribe_ok() {
    reply_vector(V114, None, Ok(schedule::SubscribeReply { sub_id: 8 }));
}

#[test]
fn v115_schedule_notify() {
    push_vector(
        V115,
        schedule::Notify {
            sub_id: 8,
            route: s(SCHEDULE_ROUTE),
            payload: b("x"),
        },
    );
}

#[test]
fn v116_schedule_unsubscribe() {
    client_vector(
        V116,
        None,
        schedule::Unsubscribe::new("schedule://realm/area/*/run"),
    );
}

#[test]
fn derived_schedule_unsubscribe_errors() {
    // Both envelopes are legal for 704; the record type is what changes.
    for e in [
        WireError::uncoded("subscription not found"),
        WireError::coded(fitz_protocol::codes::SCHEDULE_UNAUTHORIZED, "denied"),
    ] {
        let mut buf = BytesMut::new();
        encode_error(&mut buf, fitz_protocol::types::SCHEDULE_UNSUBSCRIBE, &e).unwrap();
        let rec = Records::new(buf.freeze()).next().unwrap().unwrap();
        assert_eq!(rec.ty, 704);
        assert_eq!(
            decode_reply::<schedule::UnsubscribeOk>(rec.payload).unwrap(),
            Err(e)
        );
    }
}

// ---------------------------------------------------------------------------
// RPC
// ---------------------------------------------------------------------------

#[test]
fn v117_rpc_subscribe_worker_legacy() {
    let msg = rpc::SubscribeWorker {
        pattern: s("rpc://prod/app/*"),
        max_concurrent: 4,
        extension_flags: None,
    };
    assert!(!msg.supports_cancellation());
    client_vector(V117, None, msg);
}

#[test]
fn v118_rpc_subscribe_worker_ok() {
    reply_vector(V118, None, Ok(rpc::SubscribeWorkerOk));
}

fn foo_request(budget_ms: Option<u32>) -> rpc::Request {
    rpc::Request {
        id: UUID,
        route: s("rpc://prod/app/worker"),
        body: b("foo"),
        budget_ms,
    }
}

#[test]
fn v119_v120_rpc_request_from_caller() {
    client_vector(V119, None, foo_request(None));
    client_vector(V120, None, foo_request(Some(30_000)));
}

#[test]
fn v121_v122_rpc_request_delivery_to_worker() {
    push_vector(V121, foo_request(None));
    push_vector(V122, foo_request(Some(30_000)));
}

#[test]
fn v123_rpc_response_from_worker() {
    client_vector(
        V123,
        None,
        rpc::Response {
            id: UUID,
            sequence: 0,
            end: true,
            body: b("pong"),
        },
    );
}

#[test]
fn v124_rpc_terminal_error_response() {
    let r = rpc::Response::terminal_error(UUID, 6004, "No workers registered for route");
    push_vector(V124, r.clone());
    let e = r.as_error().expect("terminal coded error");
    assert_eq!(e.code(), Some(fitz_protocol::codes::RPC_NO_WORKER));
    assert_eq!(&*e.message, "No workers registered for route");
}

#[test]
fn v125_v126_v127_rpc_cancel() {
    client_vector(
        V125,
        None,
        rpc::Cancel::Caller {
            id: UUID,
            reason: rpc::CancelReason::Explicit,
        },
    );
    client_vector(
        V126,
        None,
        rpc::Cancel::Caller {
            id: UUID,
            reason: rpc::CancelReason::CallerDeadline,
        },
    );
    client_vector(V127, None, rpc::Cancel::CleanupDone { id: UUID });
}

#[test]
fn v128_v129_rpc_lifecycle() {
    push_vector(
        V128,
        rpc::Lifecycle::WorkerSignal {
            id: UUID,
            reason: rpc::SignalReason::Explicit,
        },
    );
    push_vector(
        V129,
        rpc::Lifecycle::CallerResult {
            id: UUID,
            status: rpc::CancelStatus::Forwarded,
        },
    );
}

#[test]
fn derived_rpc_lifecycle_reasons_and_statuses() {
    // Same layout as V128/V129 with only the last byte changed.
    let with_last = |v: &str, last: u8| {
        let mut bytes = hex(v);
        *bytes.last_mut().unwrap() = last;
        to_hex(&bytes)
    };
    use rpc::{CancelStatus::*, SignalReason::*};
    for (code, reason) in [
        (2, CallerDeadline),
        (3, CallerDisconnected),
        (4, BrokerDeadline),
    ] {
        push_vector(
            &with_last(V128, code),
            rpc::Lifecycle::WorkerSignal { id: UUID, reason },
        );
    }
    for (code, status) in [
        (1, QueuedRemoved),
        (3, Unsupported),
        (4, AlreadyCancelled),
        (5, Unknown),
        (6, ForwardFailed),
    ] {
        push_vector(
            &with_last(V129, code),
            rpc::Lifecycle::CallerResult { id: UUID, status },
        );
    }
    for (v, bad) in [(V128, 0), (V128, 5), (V129, 0), (V129, 7)] {
        let l = only_record(&hex(&with_last(v, bad)), Side::Client);
        assert!(matches!(
            ServerPush::decode(l.record.ty, l.record.payload),
            Err(DecodeError::InvalidValue { .. })
        ));
    }
}

#[test]
fn v130_rpc_unsubscribe_worker() {
    client_vector(V130, None, rpc::UnsubscribeWorker::new("rpc://prod/app/*"));
}

// ---------------------------------------------------------------------------
// Boundaries
// ---------------------------------------------------------------------------

/// V131/V132 are record-level: no message has these types.
fn raw_record_vector(vector: &str, ty: u16) {
    let got = frame(CORRELATE, None, |b| encode_raw_record(b, ty, &[]));
    assert_eq!(to_hex(&got), to_hex(&hex(vector)));
    let l = only_record(&hex(vector), Side::Broker);
    assert_eq!(
        l.record,
        Record {
            ty,
            payload: Bytes::new()
        }
    );
    assert_eq!(
        ClientMessage::decode(ty, l.record.payload),
        Err(DecodeError::UnknownMessageType(ty))
    );
}

#[test]
fn v131_escape_boundary_255() {
    raw_record_vector(V131, 255);
}

#[test]
fn v132_largest_single_byte_type_254() {
    raw_record_vector(V132, 254);
}

#[test]
fn every_type_code_is_encoded_canonically() {
    // Vectors only show a few escapes; the rule covers every code.
    for &ty in fitz_protocol::types::ALL {
        let mut buf = BytesMut::new();
        encode_raw_record(&mut buf, ty, &[]).unwrap();
        if ty <= 254 {
            assert_eq!(&buf[..], &[ty as u8, 0, 0]);
        } else {
            let [hi, lo] = ty.to_be_bytes();
            assert_eq!(&buf[..], &[0xFF, hi, lo, 0, 0]);
        }
    }
}

#[test]
fn every_vector_is_one_whole_frame() {
    for (i, v) in ALL_VECTORS.iter().enumerate() {
        let bytes = hex(v);
        if i == 99 {
            continue; // V100 is a filter value, not a frame.
        }
        let body = frame_body(&bytes);
        assert_eq!(body.len() + 4, bytes.len(), "V{}", i + 1);
        let whole = |side| {
            LabelledRecords::new(body.clone(), side)
                .collect::<Result<Vec<_>, _>>()
                .is_ok_and(|recs| recs.len() == 1)
        };
        assert!(
            whole(Side::Broker) || whole(Side::Client),
            "V{} is not one record on either side",
            i + 1
        );
    }
}

#[test]
fn route_only_messages_share_one_layout() {
    // Every RouteOnly alias must produce `[u32 len][route]` regardless of type.
    let m = RouteOnly::<{ fitz_protocol::types::LEASE_QUERY }>::new(LEASE_ROUTE);
    assert_eq!(to_hex(&m.to_payload()), to_hex(&hex(V64)[9..]),);
}

// ---------------------------------------------------------------------------
// The vectors: full TCP frames (4-byte prefix included), except V100.
// ---------------------------------------------------------------------------

const ALL_VECTORS: [&str; 132] = [
    V1, V2, V3, V4, V5, V6, V7, V8, V9, V10, V11, V12, V13, V14, V15, V16, V17, V18, V19, V20, V21,
    V22, V23, V24, V25, V26, V27, V28, V29, V30, V31, V32, V33, V34, V35, V36, V37, V38, V39, V40,
    V41, V42, V43, V44, V45, V46, V47, V48, V49, V50, V51, V52, V53, V54, V55, V56, V57, V58, V59,
    V60, V61, V62, V63, V64, V65, V66, V67, V68, V69, V70, V71, V72, V73, V74, V75, V76, V77, V78,
    V79, V80, V81, V82, V83, V84, V85, V86, V87, V88, V89, V90, V91, V92, V93, V94, V95, V96, V97,
    V98, V99, V100, V101, V102, V103, V104, V105, V106, V107, V108, V109, V110, V111, V112, V113,
    V114, V115, V116, V117, V118, V119, V120, V121, V122, V123, V124, V125, V126, V127, V128, V129,
    V130, V131, V132,
];

const V1: &str = "00 00 00 03 01 00 00";
const V2: &str = "00 00 00 06 01 00 03 61 62 63";
const V3: &str = "00 00 00 09 04 00 06 00 01 00 00 00 00";
const V4: &str = "00 00 00 09 04 00 06 00 01 00 00 00 0f";
const V5: &str = "00 00 00 14 05 00 11 00 00 00 0d 6f 72 64 65 72 73 2d 77 6f 72 6b 65 72";
const V6: &str = "00 00 00 26 02 00 08 00 00 00 00 00 00 00 01 64 00 18 00 00 00 13 6b 76 3a 2f 2f 70 72 6f 64 2f 61 70 70 2f 75 73 65 72 73 01";
const V7: &str = "00 00 00 17 03 00 08 00 00 00 00 00 00 00 01 64 00 09 00 00 00 00 00 00 00 00 07";
const V8: &str = "00 00 00 40 02 00 08 00 00 00 00 00 00 00 02 6c 00 32 00 00 00 00 00 00 00 07 00 00 00 13 6b 76 3a 2f 2f 70 72 6f 64 2f 61 70 70 2f 75 73 65 72 73 01 00 00 00 01 61 01 00 00 00 01 7a 01 00 00 00 0a 00 01";
const V9: &str = "00 00 00 2a 02 00 08 00 00 00 00 00 00 00 07 ff 01 2c 00 1a 00 00 00 10 72 70 63 3a 2f 2f 70 72 6f 64 2f 61 70 70 2f 2a 00 00 00 04 01 01";
const V10: &str =
    "00 00 00 1b 64 00 18 00 00 00 13 6b 76 3a 2f 2f 70 72 6f 64 2f 61 70 70 2f 75 73 65 72 73 01";
const V11: &str =
    "00 00 00 1b 64 00 18 00 00 00 13 6b 76 3a 2f 2f 70 72 6f 64 2f 61 70 70 2f 75 73 65 72 73 00";
const V12: &str = "00 00 00 0c 64 00 09 00 00 00 00 00 00 00 00 07";
const V13: &str = "00 00 00 32 68 00 2f 00 00 00 00 00 00 00 07 00 00 00 13 6b 76 3a 2f 2f 70 72 6f 64 2f 61 70 70 2f 75 73 65 72 73 00 00 00 03 62 6f 62 00 00 00 05 61 6c 69 63 65";
const V14: &str = "00 00 00 04 68 00 01 00";
const V15: &str = "00 00 00 32 69 00 2f 00 00 00 00 00 00 00 07 00 00 00 13 6b 76 3a 2f 2f 70 72 6f 64 2f 61 70 70 2f 75 73 65 72 73 00 00 00 03 62 6f 62 00 00 00 05 61 6c 69 63 65";
const V16: &str = "00 00 00 16 69 00 13 01 00 00 03 ee 00 00 00 0a 6b 65 79 20 65 78 69 73 74 73";
const V17: &str = "00 00 00 29 67 00 26 00 00 00 00 00 00 00 07 00 00 00 13 6b 76 3a 2f 2f 70 72 6f 64 2f 61 70 70 2f 75 73 65 72 73 00 00 00 03 62 6f 62";
const V18: &str = "00 00 00 0e 67 00 0b 00 01 00 00 00 05 61 6c 69 63 65";
const V19: &str = "00 00 00 05 67 00 02 00 00";
const V20: &str = "00 00 00 09 67 00 06 00 00 00 00 00 00";
const V21: &str = "00 00 00 29 6a 00 26 00 00 00 00 00 00 00 07 00 00 00 13 6b 76 3a 2f 2f 70 72 6f 64 2f 61 70 70 2f 75 73 65 72 73 00 00 00 03 62 6f 62";
const V22: &str = "00 00 00 2c 6b 00 29 00 00 00 00 00 00 00 07 00 00 00 13 6b 76 3a 2f 2f 70 72 6f 64 2f 61 70 70 2f 75 73 65 72 73 00 00 00 01 61 00 00 00 01 6d";
const V23: &str = "00 00 00 34 6c 00 31 00 00 00 00 00 00 00 07 00 00 00 13 6b 76 3a 2f 2f 70 72 6f 64 2f 61 70 70 2f 75 73 65 72 73 01 00 00 00 01 61 01 00 00 00 01 7a 01 00 00 00 0a 00";
const V24: &str =
    "00 00 00 19 6c 00 16 00 00 00 00 01 00 00 00 03 62 6f 62 00 00 00 05 61 6c 69 63 65 01";
const V25: &str = "00 00 00 23 65 00 20 00 00 00 00 00 00 00 07 00 00 00 13 6b 76 3a 2f 2f 70 72 6f 64 2f 61 70 70 2f 75 73 65 72 73 01";
const V26: &str = "00 00 00 23 65 00 20 00 00 00 00 00 00 00 09 00 00 00 13 6b 76 3a 2f 2f 70 72 6f 64 2f 61 70 70 2f 75 73 65 72 73 00";
const V27: &str = "00 00 00 22 66 00 1f 00 00 00 00 00 00 00 08 00 00 00 13 6b 76 3a 2f 2f 70 72 6f 64 2f 61 70 70 2f 75 73 65 72 73";
const V28: &str = "00 00 00 16 6d 00 13 00 00 00 0f 6b 76 3a 2f 2f 70 72 6f 64 2f 61 70 70 2f 2a";
const V29: &str = "00 00 00 0c 6d 00 09 00 00 00 00 00 00 00 00 05";
const V30: &str = "00 00 00 2a 6f 00 27 00 00 00 00 00 00 00 05 00 00 00 13 6b 76 3a 2f 2f 70 72 6f 64 2f 61 70 70 2f 75 73 65 72 73 00 00 00 00 00 00 00 03";
const V31: &str = "00 00 00 16 6e 00 13 00 00 00 0f 6b 76 3a 2f 2f 70 72 6f 64 2f 61 70 70 2f 2a";
const V32: &str = "00 00 00 2f c8 00 2c 00 00 00 17 71 75 65 75 65 3a 2f 2f 72 65 61 6c 6d 2f 61 72 65 61 2f 6a 6f 62 73 00 00 00 04 62 6f 64 79 01 00 00 00 00 00 00 00 02";
const V33: &str = "00 00 00 27 c8 00 24 00 00 00 17 71 75 65 75 65 3a 2f 2f 72 65 61 6c 6d 2f 61 72 65 61 2f 6a 6f 62 73 00 00 00 04 62 6f 64 79 00";
const V34: &str = "00 00 00 0c c8 00 09 00 00 00 00 00 00 00 00 4d";
const V35: &str = "00 00 00 10 c8 00 0d 01 00 00 0f a5 00 00 00 04 66 75 6c 6c";
const V36: &str = "00 00 00 2c ca 00 29 00 00 00 17 71 75 65 75 65 3a 2f 2f 72 65 61 6c 6d 2f 61 72 65 61 2f 6a 6f 62 73 00 00 00 00 00 00 00 1e 01 00 00 00 01 00";
const V37: &str = "00 00 00 20 ca 00 1d 00 00 00 00 01 00 00 00 00 00 00 00 05 00 00 00 00 00 00 00 09 00 00 00 04 62 6f 64 79";
const V38: &str = "00 00 00 31 ca 00 2e 00 00 00 14 71 75 65 75 65 3a 2f 2f 72 65 61 6c 6d 2f 61 72 65 61 2f 2a 00 00 00 00 00 00 00 1e 01 00 00 00 0a 01 00 00 00 00 00 00 00 05";
const V39: &str = "00 00 00 38 ca 00 35 00 00 00 00 01 00 00 00 17 71 75 65 75 65 3a 2f 2f 72 65 61 6c 6d 2f 61 72 65 61 2f 6a 6f 62 73 00 00 00 00 00 00 00 06 00 00 00 00 00 00 00 0a 00 00 00 01 78";
const V40: &str = "00 00 00 36 cb 00 33 00 00 00 17 71 75 65 75 65 3a 2f 2f 72 65 61 6c 6d 2f 61 72 65 61 2f 6a 6f 62 73 00 00 00 00 00 00 00 05 00 00 00 00 00 00 00 09 00 00 00 00 00 00 00 3c";
const V41: &str = "00 00 00 2e cc 00 2b 00 00 00 17 71 75 65 75 65 3a 2f 2f 72 65 61 6c 6d 2f 61 72 65 61 2f 6a 6f 62 73 00 00 00 00 00 00 00 05 00 00 00 00 00 00 00 09";
const V42: &str = "00 00 00 15 cc 00 12 01 00 00 00 0d 69 6e 76 61 6c 69 64 20 74 6f 6b 65 6e";
const V43: &str =
    "00 00 00 19 cc 00 16 01 00 00 0f a1 00 00 00 0d 69 6e 76 61 6c 69 64 20 74 6f 6b 65 6e";
const V44: &str =
    "00 00 00 17 cf 00 14 00 00 00 10 71 75 65 75 65 3a 2f 2f 72 65 61 6c 6d 2f 2a 2a";
const V45: &str = "00 00 00 0d cf 00 0a 00 01 00 00 00 00 00 00 00 15";
const V46: &str = "00 00 00 42 d1 00 3f 00 00 00 00 00 00 00 15 00 00 00 17 71 75 65 75 65 3a 2f 2f 72 65 61 6c 6d 2f 61 72 65 61 2f 6a 6f 62 73 00 00 00 18 00 00 00 00 00 00 00 03 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01";
const V47: &str =
    "00 00 00 17 d0 00 14 00 00 00 10 71 75 65 75 65 3a 2f 2f 72 65 61 6c 6d 2f 2a 2a";
const V48: &str = "00 00 00 27 ff 01 f4 00 22 00 00 00 18 6e 6f 74 69 63 65 3a 2f 2f 70 72 6f 64 2f 61 70 70 2f 6f 72 64 65 72 73 00 00 00 02 68 69";
const V49: &str = "00 00 00 1c ff 01 f5 00 17 00 00 00 13 6e 6f 74 69 63 65 3a 2f 2f 70 72 6f 64 2f 61 70 70 2f 2a";
const V50: &str = "00 00 00 0f ff 01 f5 00 0a 00 01 00 00 00 00 00 00 00 2a";
const V51: &str = "00 00 00 0e ff 01 f5 00 09 00 00 00 00 00 00 00 00 2b";
const V52: &str = "00 00 00 2f ff 01 f8 00 2a 00 00 00 00 00 00 00 2a 00 00 00 18 6e 6f 74 69 63 65 3a 2f 2f 70 72 6f 64 2f 61 70 70 2f 6f 72 64 65 72 73 00 00 00 02 68 69";
const V53: &str = "00 00 00 0d ff 01 f6 00 08 00 00 00 00 00 00 00 2a";
const V54: &str = "00 00 00 05 ff 01 f7 00 00";
const V55: &str = "00 00 00 3c ff 01 90 00 37 00 00 00 1b 6c 65 61 73 65 3a 2f 2f 72 65 61 6c 6d 2f 61 72 65 61 2f 72 65 73 6f 75 72 63 65 00 00 00 08 77 6f 72 6b 65 72 2d 31 00 00 00 00 00 00 00 1e 00 00 00 00";
const V56: &str = "00 00 00 3c ff 01 90 00 37 00 00 00 1b 6c 65 61 73 65 3a 2f 2f 72 65 61 6c 6d 2f 61 72 65 61 2f 72 65 73 6f 75 72 63 65 00 00 00 08 77 6f 72 6b 65 72 2d 31 00 00 00 00 00 00 00 1e 00 00 00 07";
const V57: &str = "00 00 00 0f ff 01 90 00 0a 00 00 00 00 00 00 00 00 00 2a";
const V58: &str = "00 00 00 0f ff 01 90 00 0a 00 02 00 00 00 00 00 00 00 00";
const V59: &str = "00 00 00 0f ff 01 90 00 0a 00 00 00 00 00 00 00 00 00 2b";
const V60: &str = "00 00 00 23 ff 01 90 00 1e 01 00 00 13 89 00 00 00 15 48 65 6c 64 42 79 4f 74 68 65 72 3a 20 77 6f 72 6b 65 72 2d 31";
const V61: &str = "00 00 00 40 ff 01 91 00 3b 00 00 00 1b 6c 65 61 73 65 3a 2f 2f 72 65 61 6c 6d 2f 61 72 65 61 2f 72 65 73 6f 75 72 63 65 00 00 00 08 77 6f 72 6b 65 72 2d 31 00 00 00 00 00 00 00 2a 00 00 00 00 00 00 00 1e";
const V62: &str = "00 00 00 0e ff 01 91 00 09 00 00 00 00 00 00 00 00 2a";
const V63: &str = "00 00 00 38 ff 01 92 00 33 00 00 00 1b 6c 65 61 73 65 3a 2f 2f 72 65 61 6c 6d 2f 61 72 65 61 2f 72 65 73 6f 75 72 63 65 00 00 00 08 77 6f 72 6b 65 72 2d 31 00 00 00 00 00 00 00 2a";
const V64: &str = "00 00 00 24 ff 01 93 00 1f 00 00 00 1b 6c 65 61 73 65 3a 2f 2f 72 65 61 6c 6d 2f 61 72 65 61 2f 72 65 73 6f 75 72 63 65";
const V65: &str = "00 00 00 1f ff 01 93 00 1a 00 01 00 00 00 08 77 6f 72 6b 65 72 2d 31 00 00 00 00 00 00 00 19 00 00 00 02";
const V66: &str = "00 00 00 0b ff 01 93 00 06 00 00 00 00 00 00";
const V67: &str = "00 00 00 21 ff 01 97 00 1c 00 00 00 18 6c 65 61 73 65 3a 2f 2f 61 63 6d 65 2f 72 65 6e 64 65 72 65 72 73 2f 2a";
const V68: &str = "00 00 00 0e ff 01 97 00 09 00 00 00 00 00 00 00 00 03";
const V69: &str = "00 00 00 31 ff 01 99 00 2c 00 00 00 00 00 00 00 03 00 00 00 1c 6c 65 61 73 65 3a 2f 2f 61 63 6d 65 2f 72 65 6e 64 65 72 65 72 73 2f 64 6f 63 2d 31 00 00 00 00";
const V70: &str = "00 00 00 21 ff 01 98 00 1c 00 00 00 18 6c 65 61 73 65 3a 2f 2f 61 63 6d 65 2f 72 65 6e 64 65 72 65 72 73 2f 2a";
const V71: &str = "00 00 00 1d ff 01 9a 00 18 00 00 00 0f 6c 65 61 73 65 3a 2f 2f 61 63 6d 65 2f 2a 2a 00 00 00 00 00";
const V72: &str = "00 00 00 6f ff 01 9a 00 6a 00 00 00 00 01 00 00 00 1c 6c 65 61 73 65 3a 2f 2f 61 63 6d 65 2f 72 65 6e 64 65 72 65 72 73 2f 64 6f 63 2d 31 00 00 00 08 77 6f 72 6b 65 72 2d 31 00 00 00 00 00 00 00 07 00 00 00 14 32 30 32 36 2d 30 31 2d 30 31 54 30 30 3a 30 30 3a 30 30 5a 00 00 00 00 00 00 00 19 00 00 00 02 01 00 00 00 00 00 00 00 7b 00 00 00 64";
const V73: &str = "00 00 00 29 ff 01 9a 00 24 00 00 00 0f 6c 65 61 73 65 3a 2f 2f 61 63 6d 65 2f 2a 2a 01 00 00 00 00 00 00 00 7b 00 00 00 64 00 00 00 64";
const V74: &str = "00 00 00 0b ff 01 9a 00 06 00 00 00 00 00 00";
const V75: &str = "00 00 00 2d ff 01 9a 00 28 01 00 00 13 93 00 00 00 1f 63 75 72 73 6f 72 20 64 6f 65 73 20 6e 6f 74 20 6d 61 74 63 68 20 74 68 69 73 20 73 63 61 6e";
const V76: &str =
    "00 00 00 18 ff 02 58 00 13 00 00 00 0e 73 74 72 65 61 6d 3a 2f 2f 72 2f 61 2f 78 00";
const V77: &str = "00 00 00 22 ff 02 58 00 1d 00 00 00 0e 73 74 72 65 61 6d 3a 2f 2f 72 2f 61 2f 78 01 00 00 00 06 69 6e 67 65 73 74";
const V78: &str = "00 00 00 12 ff 02 58 00 0d 00 00 00 00 00 00 00 00 09 00 00 00 00";
const V79: &str = "00 00 00 32 ff 02 59 00 2d 00 00 00 00 00 00 00 09 00 00 00 00 00 00 00 00 00 00 00 03 6f 6e 65 01 00 00 00 02 6d 31 01 00 00 00 0a 70 72 6f 6a 2e 61 6c 70 68 61";
const V80: &str = "00 00 00 1e ff 02 59 00 19 00 00 00 00 00 00 00 09 00 00 00 00 00 00 00 01 00 00 00 03 74 77 6f 00 00";
const V81: &str = "00 00 00 12 ff 02 59 00 0d 00 00 00 00 08 00 00 00 00 00 00 00 11";
const V82: &str = "00 00 00 0e ff 02 5a 00 09 00 00 00 00 00 00 00 09 01";
const V83: &str = "00 00 00 0d ff 02 5b 00 08 00 00 00 00 00 00 00 0a";
const V84: &str = "00 00 00 2b ff 02 5c 00 26 00 00 00 0e 73 74 72 65 61 6d 3a 2f 2f 72 2f 61 2f 78 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 0a 00 00 00 00";
const V85: &str = "00 00 00 67 ff 02 5c 00 62 00 00 00 00 00 5c 00 00 00 01 00 00 00 0e 73 74 72 65 61 6d 3a 2f 2f 72 2f 61 2f 78 00 00 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 04 01 00 00 00 00 00 00 00 09 00 00 00 03 6f 6e 65 00 00 00 01 8b cf e5 68 00 00 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 04 01 00 00 00 00 00 00 00 09 00";
const V86: &str = "00 00 00 59 ff 02 5c 00 54 00 00 00 0b 73 74 72 65 61 6d 3a 2f 2f 2a 2a 00 00 00 00 00 00 00 28 00 00 00 00 00 00 00 64 01 00 00 00 00 00 00 10 00 01 00 00 00 15 00 f1 00 00 00 01 00 00 00 00 0a 70 72 6f 6a 2e 61 6c 70 68 61 01 11 22 33 44 55 66 77 88 01 00 00 00 00 00 00 00 2a";
const V87: &str = "00 00 00 b9 ff 02 5c 00 b4 00 00 00 00 00 ae 00 00 00 02 00 00 00 18 73 74 72 65 61 6d 3a 2f 2f 61 63 6d 65 2f 63 61 74 73 2f 63 61 74 2d 31 00 00 00 00 00 00 00 00 03 01 00 00 00 00 00 00 00 05 01 00 00 00 00 00 00 00 08 01 00 00 00 00 00 00 00 28 00 00 00 01 65 00 00 00 01 8b cf e5 68 00 00 00 00 18 73 74 72 65 61 6d 3a 2f 2f 61 63 6d 65 2f 64 6f 67 73 2f 64 6f 67 2d 31 01 00 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 03 01 00 00 00 00 00 00 00 05 01 00 00 00 00 00 00 00 08 01 00 00 00 00 00 00 00 29 01 01 11 22 33 44 55 66 77 88 01 00 00 00 00 00 00 00 2a";
const V88: &str = "00 00 00 28 ff 02 5c 00 23 01 00 00 07 d6 00 00 00 1a 75 6e 73 75 70 70 6f 72 74 65 64 20 66 69 6c 74 65 72 20 76 65 72 73 69 6f 6e";
const V89: &str = "00 00 00 16 ff 02 59 00 11 02 00 00 07 d1 00 00 00 08 63 6f 6e 66 6c 69 63 74";
const V90: &str = "00 00 00 12 ff 02 59 00 0d 01 00 00 00 08 63 6f 6e 66 6c 69 63 74";
const V91: &str = "00 00 00 20 ff 02 58 00 1b 01 00 00 00 16 73 65 73 73 69 6f 6e 20 61 6c 72 65 61 64 79 20 61 63 74 69 76 65";
const V92: &str =
    "00 00 00 17 ff 02 5d 00 12 00 00 00 0e 73 74 72 65 61 6d 3a 2f 2f 72 2f 61 2f 78";
const V93: &str = "00 00 00 30 ff 02 5d 00 2b 00 00 00 00 00 00 00 00 01 01 00 00 00 00 00 00 00 04 01 00 00 00 00 00 00 00 09 00 00 00 03 74 77 6f 00 00 00 01 8b cf e5 68 01";
const V94: &str =
    "00 00 00 17 ff 02 5e 00 12 00 00 00 0e 73 74 72 65 61 6d 3a 2f 2f 72 2f 61 2f 78";
const V95: &str = "00 00 00 41 ff 02 5e 00 3c 00 01 00 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 02 00 00 00 00 00 00 03 e8 00 00 00 00 00 10 00 00 00 00 00 00 00 00 00 00 04 00 00 00 00 00 00 00 09";
const V96: &str =
    "00 00 00 17 ff 02 5f 00 12 00 00 00 0e 73 74 72 65 61 6d 3a 2f 2f 72 2f 61 2f 2a";
const V97: &str = "00 00 00 13 ff 02 5f 00 0e 00 01 00 00 00 00 00 00 00 05 00 00 00 00";
const V98: &str = "00 00 00 d3 ff 02 61 00 ce 00 00 00 00 00 00 00 05 00 00 00 0e 73 74 72 65 61 6d 3a 2f 2f 72 2f 61 2f 78 00 00 00 b0 7b 22 65 76 65 6e 74 22 3a 22 63 6f 6d 6d 69 74 74 65 64 22 2c 22 66 69 72 73 74 5f 72 65 73 6f 75 72 63 65 5f 6f 66 66 73 65 74 22 3a 30 2c 22 6c 61 73 74 5f 72 65 73 6f 75 72 63 65 5f 6f 66 66 73 65 74 22 3a 31 2c 22 66 69 72 73 74 5f 61 72 65 61 5f 6f 66 66 73 65 74 22 3a 34 2c 22 6c 61 73 74 5f 61 72 65 61 5f 6f 66 66 73 65 74 22 3a 35 2c 22 66 69 72 73 74 5f 72 65 61 6c 6d 5f 6f 66 66 73 65 74 22 3a 39 2c 22 6c 61 73 74 5f 72 65 61 6c 6d 5f 6f 66 66 73 65 74 22 3a 31 30 2c 22 62 61 74 63 68 5f 73 69 7a 65 22 3a 32 7d";
const V99: &str =
    "00 00 00 17 ff 02 60 00 12 00 00 00 0e 73 74 72 65 61 6d 3a 2f 2f 72 2f 61 2f 2a";
const V100: &str = "00 f1 00 00 00 04 00 00 00 00 0a 70 72 6f 6a 2e 61 6c 70 68 61 01 00 00 00 0a 61 75 64 69 74 2e 62 65 74 61 02 00 00 00 05 70 72 6f 6a 2e 03 00 00 00 02 00 00 00 0a 70 72 6f 6a 2e 61 6c 70 68 61 00 00 00 0a 70 72 6f 6a 2e 67 61 6d 6d 61";
const V101: &str = "00 00 00 3b ff 02 bc 00 36 00 00 00 1d 73 63 68 65 64 75 6c 65 3a 2f 2f 72 65 61 6c 6d 2f 61 72 65 61 2f 6a 6f 62 2f 72 75 6e 00 00 00 0b 2a 2f 35 20 2a 20 2a 20 2a 20 2a 00 00 00 00 01 78";
const V102: &str = "00 00 00 16 ff 02 bc 00 11 01 00 00 00 0c 69 6e 76 61 6c 69 64 20 63 72 6f 6e";
const V103: &str =
    "00 00 00 19 ff 02 bc 00 14 01 00 00 1b 62 00 00 00 0b 62 72 6f 6b 65 72 20 62 75 73 79";
const V104: &str = "00 00 00 26 ff 02 bd 00 21 00 00 00 1d 73 63 68 65 64 75 6c 65 3a 2f 2f 72 65 61 6c 6d 2f 61 72 65 61 2f 6a 6f 62 2f 72 75 6e";
const V105: &str =
    "00 00 00 17 ff 02 be 00 12 01 00 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 64";
const V106: &str = "00 00 00 4c ff 02 be 00 47 00 00 00 00 00 00 00 00 07 01 00 00 00 1d 73 63 68 65 64 75 6c 65 3a 2f 2f 72 65 61 6c 6d 2f 61 72 65 61 2f 6a 6f 62 2f 72 75 6e 00 00 00 0b 2a 2f 35 20 2a 20 2a 20 2a 20 2a 01 00 00 00 07 70 61 79 6c 6f 61 64 00";
const V107: &str =
    "00 00 00 19 ff 02 be 00 14 01 00 00 1b 62 00 00 00 0b 62 72 6f 6b 65 72 20 62 75 73 79";
const V108: &str = "00 00 00 0f ff 02 c3 00 0a 00 01 00 00 00 00 00 00 00 01";
const V109: &str = "00 00 00 75 ff 02 c3 00 70 00 01 01 01 00 00 00 30 73 63 68 65 64 75 6c 65 2d 6c 69 73 74 2d 76 31 3a 31 3a 73 63 68 65 64 75 6c 65 3a 2f 2f 72 65 61 6c 6d 2f 61 72 65 61 2f 6a 6f 62 2f 72 75 6e 01 00 00 00 1d 73 63 68 65 64 75 6c 65 3a 2f 2f 72 65 61 6c 6d 2f 61 72 65 61 2f 6a 6f 62 2f 72 75 6e 00 00 00 0b 2a 2f 35 20 2a 20 2a 20 2a 20 2a 00 00 00 00 01 78 00";
const V110: &str = "00 00 00 3b ff 02 c3 00 36 01 00 00 00 30 73 63 68 65 64 75 6c 65 2d 6c 69 73 74 2d 76 31 3a 31 3a 73 63 68 65 64 75 6c 65 3a 2f 2f 72 65 61 6c 6d 2f 61 72 65 61 2f 6a 6f 62 2f 72 75 6e 00";
const V111: &str = "00 00 00 0a ff 02 c3 00 05 00 01 00 00 00";
const V112: &str = "00 00 00 76 ff 02 c2 00 71 00 00 00 02 00 00 00 1f 73 63 68 65 64 75 6c 65 3a 2f 2f 61 63 6d 65 2f 6a 6f 62 73 2f 62 61 63 6b 75 70 2f 72 75 6e 00 00 00 09 30 20 32 20 2a 20 2a 20 2a 00 00 00 00 01 62 00 00 00 1f 73 63 68 65 64 75 6c 65 3a 2f 2f 61 63 6d 65 2f 6a 6f 62 73 2f 72 65 70 6f 72 74 2f 72 75 6e 00 00 00 0a 31 35 20 36 20 2a 20 2a 20 2a 01 00 00 00 01 72";
const V113: &str = "00 00 00 24 ff 02 bf 00 1f 00 00 00 1b 73 63 68 65 64 75 6c 65 3a 2f 2f 72 65 61 6c 6d 2f 61 72 65 61 2f 2a 2f 72 75 6e";
const V114: &str = "00 00 00 0f ff 02 bf 00 0a 00 01 00 00 00 00 00 00 00 08";
const V115: &str = "00 00 00 33 ff 02 c1 00 2e 00 00 00 00 00 00 00 08 00 00 00 1d 73 63 68 65 64 75 6c 65 3a 2f 2f 72 65 61 6c 6d 2f 61 72 65 61 2f 6a 6f 62 2f 72 75 6e 00 00 00 01 78";
const V116: &str = "00 00 00 24 ff 02 c0 00 1f 00 00 00 1b 73 63 68 65 64 75 6c 65 3a 2f 2f 72 65 61 6c 6d 2f 61 72 65 61 2f 2a 2f 72 75 6e";
const V117: &str = "00 00 00 1d ff 01 2c 00 18 00 00 00 10 72 70 63 3a 2f 2f 70 72 6f 64 2f 61 70 70 2f 2a 00 00 00 04";
const V118: &str = "00 00 00 0a ff 01 2c 00 05 00 00 00 00 00";
const V119: &str = "00 00 00 35 ff 01 2e 00 30 12 34 56 78 9a bc de f0 12 34 56 78 9a bc de f0 00 00 00 15 72 70 63 3a 2f 2f 70 72 6f 64 2f 61 70 70 2f 77 6f 72 6b 65 72 00 00 00 03 66 6f 6f";
const V120: &str = "00 00 00 3b ff 01 2e 00 36 12 34 56 78 9a bc de f0 12 34 56 78 9a bc de f0 00 00 00 15 72 70 63 3a 2f 2f 70 72 6f 64 2f 61 70 70 2f 77 6f 72 6b 65 72 00 00 00 03 66 6f 6f 01 01 00 00 75 30";
const V121: &str = "00 00 00 35 ff 01 2e 00 30 12 34 56 78 9a bc de f0 12 34 56 78 9a bc de f0 00 00 00 15 72 70 63 3a 2f 2f 70 72 6f 64 2f 61 70 70 2f 77 6f 72 6b 65 72 00 00 00 03 66 6f 6f";
const V122: &str = "00 00 00 3b ff 01 2e 00 36 12 34 56 78 9a bc de f0 12 34 56 78 9a bc de f0 00 00 00 15 72 70 63 3a 2f 2f 70 72 6f 64 2f 61 70 70 2f 77 6f 72 6b 65 72 00 00 00 03 66 6f 6f 01 01 00 00 75 30";
const V123: &str = "00 00 00 26 ff 01 2f 00 21 12 34 56 78 9a bc de f0 12 34 56 78 9a bc de f0 00 00 00 00 00 00 00 00 01 00 00 00 04 70 6f 6e 67";
const V124: &str = "00 00 00 4a ff 01 2f 00 45 12 34 56 78 9a bc de f0 12 34 56 78 9a bc de f0 00 00 00 00 00 00 00 00 01 00 00 00 28 01 00 00 17 74 00 00 00 1f 4e 6f 20 77 6f 72 6b 65 72 73 20 72 65 67 69 73 74 65 72 65 64 20 66 6f 72 20 72 6f 75 74 65";
const V125: &str =
    "00 00 00 17 ff 01 30 00 12 01 12 34 56 78 9a bc de f0 12 34 56 78 9a bc de f0 01";
const V126: &str =
    "00 00 00 17 ff 01 30 00 12 01 12 34 56 78 9a bc de f0 12 34 56 78 9a bc de f0 02";
const V127: &str = "00 00 00 16 ff 01 30 00 11 03 12 34 56 78 9a bc de f0 12 34 56 78 9a bc de f0";
const V128: &str =
    "00 00 00 17 ff 01 31 00 12 02 12 34 56 78 9a bc de f0 12 34 56 78 9a bc de f0 01";
const V129: &str =
    "00 00 00 17 ff 01 31 00 12 04 12 34 56 78 9a bc de f0 12 34 56 78 9a bc de f0 02";
const V130: &str =
    "00 00 00 19 ff 01 2d 00 14 00 00 00 10 72 70 63 3a 2f 2f 70 72 6f 64 2f 61 70 70 2f 2a";
const V131: &str = "00 00 00 05 ff 00 ff 00 00";
const V132: &str = "00 00 00 03 fe 00 00";
