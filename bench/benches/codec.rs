//! Wire codec cost per message: encoding a message as a TCP frame into a
//! reused buffer, and decoding a frame body back to the typed message through
//! the labelled-record reader — what a connection does per frame, minus IO.
//!
//! Allocation counts per operation live in the protocol crate's
//! `tests/alloc.rs`, outside any timing loop.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fitz_protocol::frame::{DEFAULT_MAX_FRAME, FrameDecoder, encode_frame_with};
use fitz_protocol::rpc::RpcId;
use fitz_protocol::{
    ClientMessage, EncodeError, LabelledRecords, ServerPush, Side, Str, kv, notice, rpc,
};

const SIZES: [usize; 2] = [32, 1024];

fn body(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| i as u8).collect::<Vec<_>>())
}

/// One benchmarked message and the side that reads it.
struct Case {
    name: &'static str,
    side: Side,
    msg: Msg,
}

enum Msg {
    Client(ClientMessage),
    Push(ServerPush),
}

impl Msg {
    fn encode_record(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Msg::Client(m) => m.encode_record(buf),
            Msg::Push(m) => m.encode_record(buf),
        }
    }
}

fn cases(len: usize) -> [Case; 3] {
    [
        Case {
            name: "kv_put",
            side: Side::Broker,
            msg: Msg::Client(
                kv::Put {
                    tx_id: 7,
                    route: Str::from_static("kv://prod/app/users"),
                    key: Bytes::from_static(b"user:42"),
                    value: body(len),
                }
                .into(),
            ),
        },
        Case {
            name: "rpc_request",
            side: Side::Broker,
            msg: Msg::Client(
                rpc::Request {
                    id: RpcId([0x5a; 16]),
                    route: Str::from_static("rpc://prod/app/worker"),
                    body: body(len),
                    budget_ms: Some(30_000),
                }
                .into(),
            ),
        },
        Case {
            name: "notice_notify",
            side: Side::Client,
            msg: Msg::Push(
                notice::Notify {
                    sub_id: 42,
                    route: Str::from_static("notice://prod/app/orders"),
                    payload: body(len),
                }
                .into(),
            ),
        },
    ]
}

fn encode_frame(msg: &Msg, buf: &mut BytesMut) {
    encode_frame_with(buf, DEFAULT_MAX_FRAME, |b| msg.encode_record(b)).expect("encodes");
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for len in SIZES {
        for case in cases(len) {
            let mut buf = BytesMut::with_capacity(4096);
            encode_frame(&case.msg, &mut buf);
            group.throughput(Throughput::Bytes(buf.len() as u64));
            group.bench_function(BenchmarkId::new(case.name, len), |b| {
                b.iter(|| {
                    buf.clear();
                    encode_frame(black_box(&case.msg), &mut buf);
                    black_box(&buf);
                })
            });
        }
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for len in SIZES {
        for case in cases(len) {
            let mut wire = BytesMut::new();
            encode_frame(&case.msg, &mut wire);
            let frame_len = wire.len();
            let body = FrameDecoder::default()
                .decode(&mut wire)
                .expect("valid")
                .expect("whole frame");
            group.throughput(Throughput::Bytes(frame_len as u64));
            group.bench_function(BenchmarkId::new(case.name, len), |b| {
                b.iter(|| {
                    let l = LabelledRecords::new(black_box(&body).clone(), case.side)
                        .next()
                        .expect("a record")
                        .expect("valid");
                    match case.side {
                        Side::Broker => {
                            black_box(ClientMessage::decode(l.record.ty, l.record.payload))
                                .expect("decodes");
                        }
                        Side::Client => {
                            black_box(ServerPush::decode(l.record.ty, l.record.payload))
                                .expect("decodes");
                        }
                    }
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
