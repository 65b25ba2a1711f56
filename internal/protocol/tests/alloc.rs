//! Counts heap allocations on the hot paths with a counting global allocator.
//!
//! Decoding a frame from a read buffer must not allocate: the frame, its
//! records and every byte/string field are slices of the buffer the socket
//! filled. Encoding into a buffer with spare capacity must not allocate
//! either. The table printed at the end is the per-operation count the
//! benchmark report quotes.
//!
//! Runs without the libtest harness so no other thread allocates while a
//! region is being measured.

use std::alloc::System;
use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use fitz_protocol::frame::{DEFAULT_MAX_FRAME, FrameDecoder, encode_frame_with};
use fitz_protocol::record::put_label;
use fitz_protocol::rpc::RpcId;
use fitz_protocol::types::CORRELATE;
use fitz_protocol::{
    ClientMessage, EncodeError, LabelledRecords, Message, ServerPush, Side, Str, kv, notice, rpc,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Frames decoded per measurement, so one stray allocation per frame shows up
/// as a count of at least this many.
const FRAMES: usize = 64;

fn body(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| i as u8).collect::<Vec<_>>())
}

fn kv_put(len: usize) -> kv::Put {
    kv::Put {
        tx_id: 7,
        route: Str::from_static("kv://prod/app/users"),
        key: Bytes::from_static(b"user:42"),
        value: body(len),
    }
}

fn rpc_request(len: usize) -> rpc::Request {
    rpc::Request {
        id: RpcId([0x5a; 16]),
        route: Str::from_static("rpc://prod/app/worker"),
        body: body(len),
        budget_ms: Some(30_000),
    }
}

fn notice_notify(len: usize) -> notice::Notify {
    notice::Notify {
        sub_id: 42,
        route: Str::from_static("notice://prod/app/orders"),
        payload: body(len),
    }
}

/// Which reader a case goes through.
#[derive(Clone, Copy)]
enum Reader {
    /// The broker reading a client frame.
    Broker,
    /// A client reading a broker frame.
    Client,
}

/// Appends one message's records to a frame being built.
type Encoder = Box<dyn Fn(&mut BytesMut) -> Result<(), EncodeError>>;

struct Case {
    name: String,
    reader: Reader,
    encode: Encoder,
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for len in [32, 1024] {
        let put = kv_put(len);
        out.push(Case {
            name: format!("kv put {len} B"),
            reader: Reader::Broker,
            encode: Box::new(move |b| put.encode_record(b)),
        });
        let put = ClientMessage::from(kv_put(len));
        out.push(Case {
            name: format!("kv put {len} B, correlated"),
            reader: Reader::Broker,
            encode: Box::new(move |b| {
                put_label(b, CORRELATE, 9);
                put.encode_record(b)
            }),
        });
        let req = rpc_request(len);
        out.push(Case {
            name: format!("rpc request {len} B (caller)"),
            reader: Reader::Broker,
            encode: Box::new(move |b| req.encode_record(b)),
        });
        let req = rpc_request(len);
        out.push(Case {
            name: format!("rpc request {len} B (worker)"),
            reader: Reader::Client,
            encode: Box::new(move |b| req.encode_record(b)),
        });
        let n = notice_notify(len);
        out.push(Case {
            name: format!("notice notify {len} B"),
            reader: Reader::Client,
            encode: Box::new(move |b| n.encode_record(b)),
        });
    }
    out
}

fn encode_frame(case: &Case, buf: &mut BytesMut) {
    encode_frame_with(buf, DEFAULT_MAX_FRAME, |b| (case.encode)(b)).expect("encodes");
}

/// Decodes every frame in `wire` the way a connection's read loop does.
/// Returns how many messages decoded.
fn decode_all(wire: &mut BytesMut, reader: Reader) -> usize {
    let decoder = FrameDecoder::default();
    let side = match reader {
        Reader::Broker => Side::Broker,
        Reader::Client => Side::Client,
    };
    let mut decoded = 0;
    while let Some(frame) = decoder.decode(wire).expect("valid frame") {
        for labelled in LabelledRecords::new(frame, side) {
            let l = labelled.expect("valid record");
            let ty = l.record.ty;
            match reader {
                Reader::Broker => {
                    black_box(ClientMessage::decode(ty, l.record.payload).expect("decodes"));
                }
                Reader::Client => {
                    black_box(ServerPush::decode(ty, l.record.payload).expect("decodes"));
                }
            }
            black_box(l.correlation);
            decoded += 1;
        }
    }
    decoded
}

/// Allocations (including reallocations) made while `f` runs.
fn count(f: impl FnOnce()) -> usize {
    let region = Region::new(GLOBAL);
    f();
    let stats = region.change();
    stats.allocations + stats.reallocations
}

fn main() {
    let mut failures = Vec::new();
    let mut passed = 0;
    println!(
        "{:<34} {:>14} {:>14} {:>14}",
        "case", "decode/frame", "encode/reused", "encode/fresh"
    );
    for case in cases() {
        // A read buffer the way a TCP read loop holds it: capacity for many
        // frames, already split once so it is in shared mode.
        let mut one = BytesMut::new();
        encode_frame(&case, &mut one);
        let mut wire = BytesMut::with_capacity(FRAMES * one.len() + 64);
        wire.extend_from_slice(b"skip");
        drop(wire.split_to(4));
        for _ in 0..FRAMES {
            wire.extend_from_slice(&one);
        }
        let mut decoded = 0;
        let decode_allocs = count(|| decoded = decode_all(&mut wire, case.reader));
        assert_eq!(decoded, FRAMES, "{}", case.name);

        let mut out = BytesMut::with_capacity(FRAMES * one.len() + 64);
        let reused_allocs = count(|| {
            for _ in 0..FRAMES {
                out.clear();
                encode_frame(&case, &mut out);
                black_box(&out);
            }
        });
        assert_eq!(&out[..], &one[..]);

        let fresh_allocs = count(|| {
            for _ in 0..FRAMES {
                let mut fresh = BytesMut::new();
                encode_frame(&case, &mut fresh);
                black_box(&fresh);
            }
        });

        let per = |n: usize| n as f64 / FRAMES as f64;
        println!(
            "{:<34} {:>14.2} {:>14.2} {:>14.2}",
            case.name,
            per(decode_allocs),
            per(reused_allocs),
            per(fresh_allocs)
        );
        for (what, n) in [
            ("decode", decode_allocs),
            ("encode into spare capacity", reused_allocs),
        ] {
            if n == 0 {
                passed += 1;
            } else {
                failures.push(format!("{}: {what} made {n} allocations", case.name));
            }
        }
    }

    // Guard against a counter that never counts.
    let sanity = count(|| {
        black_box(vec![1u8; 64]);
    });
    if sanity == 0 {
        failures.push("the counting allocator saw no allocation".into());
    } else {
        passed += 1;
    }

    for f in &failures {
        eprintln!("FAILED {f}");
    }
    println!("alloc: {passed} passed, {} failed", failures.len());
    if !failures.is_empty() {
        std::process::exit(1);
    }
}
