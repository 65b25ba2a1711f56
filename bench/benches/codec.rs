//! Wire codec cost per message, one representative message per domain: encoding
//! a message as a TCP frame into a reused buffer, and decoding a frame body
//! back to the typed message through the labelled-record reader — what a
//! connection does per frame, minus IO. Plus route validation and wildcard
//! matching.
//!
//! Heap allocations per encode and per decode are counted (outside the
//! timing loops) with a counting global allocator, printed, and written to
//! `target/perf/alloc_codec.json` for the report.

use std::alloc::System;
use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fitz_protocol::frame::{DEFAULT_MAX_FRAME, FrameDecoder, encode_frame_with};
use fitz_protocol::route::{self, Scheme};
use fitz_protocol::rpc::RpcId;
use fitz_protocol::{
    ClientMessage, EncodeError, LabelledRecords, ServerPush, Side, Str, kv, lease, notice, queue,
    rpc, schedule, stream,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

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

fn client(name: &'static str, m: impl Into<ClientMessage>) -> Case {
    Case {
        name,
        side: Side::Broker,
        msg: Msg::Client(m.into()),
    }
}

fn cases(len: usize) -> Vec<Case> {
    vec![
        client(
            "kv_put",
            kv::Put {
                tx_id: 7,
                route: Str::from_static("kv://prod/app/users"),
                key: Bytes::from_static(b"user:42"),
                value: body(len),
            },
        ),
        client(
            "queue_enqueue",
            queue::Enqueue {
                route: Str::from_static("queue://prod/app/jobs"),
                body: body(len),
                delay_seconds: None,
            },
        ),
        client(
            "rpc_request",
            rpc::Request {
                id: RpcId([0x5a; 16]),
                route: Str::from_static("rpc://prod/app/worker"),
                body: body(len),
                budget_ms: Some(30_000),
            },
        ),
        client(
            "lease_acquire",
            lease::Acquire {
                route: Str::from_static("lease://prod/app/leader"),
                owner: Str::from_static("node-1"),
                ttl_secs: 30,
                wait_seconds: None,
            },
        ),
        client(
            "notice_publish",
            notice::Publish {
                route: Str::from_static("notice://prod/app/orders"),
                payload: body(len),
            },
        ),
        client(
            "stream_append",
            stream::Append {
                session_id: 9,
                expected_offset: 1234,
                body: body(len),
                metadata: None,
                discriminator: None,
            },
        ),
        client(
            "schedule_create",
            schedule::Create {
                entry: schedule::Entry {
                    route: Str::from_static("schedule://prod/app/daily/run"),
                    cron: Str::from_static("0 6 * * *"),
                    mode: schedule::DeliveryMode::Single,
                    payload: body(len),
                },
            },
        ),
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

fn decode_one(body: &Bytes, side: Side) {
    let l = LabelledRecords::new(body.clone(), side)
        .next()
        .expect("a record")
        .expect("valid");
    match side {
        Side::Broker => {
            black_box(ClientMessage::decode(l.record.ty, l.record.payload)).expect("decodes");
        }
        Side::Client => {
            black_box(ServerPush::decode(l.record.ty, l.record.payload)).expect("decodes");
        }
    }
}

fn frame_body(case: &Case) -> (Bytes, usize) {
    let mut wire = BytesMut::new();
    encode_frame(&case.msg, &mut wire);
    let len = wire.len();
    let body = FrameDecoder::default()
        .decode(&mut wire)
        .expect("valid")
        .expect("whole frame");
    (body, len)
}

/// Allocations per operation over `n` runs.
fn allocations(n: usize, mut f: impl FnMut()) -> f64 {
    let region = Region::new(GLOBAL);
    for _ in 0..n {
        f();
    }
    region.change().allocations as f64 / n as f64
}

/// Counts allocations per encode (into a buffer with room) and per decode,
/// and writes them for the report.
fn count_allocations() {
    const N: usize = 1_000;
    let mut rows = Vec::new();
    for len in SIZES {
        for case in cases(len) {
            let mut buf = BytesMut::with_capacity(4096);
            let enc = allocations(N, || {
                buf.clear();
                encode_frame(black_box(&case.msg), &mut buf);
            });
            let (body, _) = frame_body(&case);
            let dec = allocations(N, || decode_one(black_box(&body), case.side));
            println!(
                "allocations per op: {}/{len}: encode {enc:.2}, decode {dec:.2}",
                case.name
            );
            rows.push(format!(
                "{{\"message\":\"{}\",\"bytes\":{len},\"encode\":{enc},\"decode\":{dec}}}",
                case.name
            ));
        }
    }
    fitz_bench::write_perf_json("alloc_codec.json", &format!("[{}]\n", rows.join(",\n")));
}

fn encode(c: &mut Criterion) {
    count_allocations();
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
            let (body, frame_len) = frame_body(&case);
            group.throughput(Throughput::Bytes(frame_len as u64));
            group.bench_function(BenchmarkId::new(case.name, len), |b| {
                b.iter(|| decode_one(black_box(&body), case.side))
            });
        }
    }
    group.finish();
}

fn routes(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    group.bench_function("validate_concrete", |b| {
        b.iter(|| route::validate_concrete(black_box("kv://prod/app/users"), Scheme::Kv))
    });
    group.bench_function("validate_pattern", |b| {
        b.iter(|| route::validate_pattern(black_box("notice://prod/*/orders/**"), Scheme::Notice))
    });
    group.bench_function("match_wildcard", |b| {
        b.iter(|| {
            route::matches(
                black_box("notice://prod/*/orders/**"),
                black_box("notice://prod/eu/orders/created/v2"),
            )
        })
    });
    group.bench_function("match_miss", |b| {
        b.iter(|| {
            route::matches(
                black_box("notice://prod/*/orders/**"),
                black_box("notice://prod/eu/invoices/created"),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, encode, decode, routes);
criterion_main!(benches);
