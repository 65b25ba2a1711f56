//! Stream benchmarks over loopback TCP with a minimal raw client built on
//! `fitz-protocol` (memory storage, so they measure the engine and the
//! session path, not a disk):
//!
//! * `stream/append_commit`: BEGIN + one APPEND + COMMIT, one request in
//!   flight (three round trips per iteration);
//! * `stream/batch100_sequential`: BEGIN + 100 APPENDs + COMMIT, one
//!   request in flight (102 round trips);
//! * `stream/batch100_pipelined`: the same 102 requests written at once,
//!   then the 102 replies read;
//! * `stream/read_page_100`: READ of a 100-record page (64-byte bodies) of
//!   one resource.

use fitz_bench::wire::Raw;
use fitz_bench::{broker_runtime, client_runtime};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fitz_broker::Broker;
use fitz_protocol::decode_reply;
use fitz_protocol::kv::Durability;
use fitz_protocol::stream::{self, BeginOk, ReadOk, ReadPage};

fn begin(route: &str) -> stream::Begin {
    stream::Begin {
        route: route.into(),
        ingest_metadata: None,
    }
}

fn append(session_id: u64, expected: u64, body: &Bytes) -> stream::Append {
    stream::Append {
        session_id,
        expected_offset: expected,
        body: body.clone(),
        metadata: None,
        discriminator: None,
    }
}

fn commit(session_id: u64) -> stream::Commit {
    stream::Commit {
        session_id,
        durability: Durability::Buffered,
    }
}

/// BEGIN; returns the session and the resource's next offset.
async fn open(conn: &mut Raw, route: &str) -> (u64, u64) {
    let ok = decode_reply::<BeginOk>(conn.call(&begin(route)).await)
        .unwrap()
        .unwrap();
    let next = u64::from_be_bytes(ok.data[..8].try_into().unwrap());
    (ok.session_id, next)
}

fn writes(c: &mut Criterion) {
    let rt = client_runtime();
    let brt = broker_runtime();
    let broker = brt.block_on(Broker::builder().start()).unwrap();
    let mut conn = rt.block_on(Raw::connect(broker.tcp_addr()));
    let body = Bytes::from(vec![7u8; 64]);
    let mut g = c.benchmark_group("stream");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("append_commit", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let (id, next) = open(&mut conn, "stream://bench/one/res").await;
                    assert_eq!(conn.call(&append(id, next, &body)).await[0], 0);
                    assert_eq!(conn.call(&commit(id)).await[0], 0);
                }
                started.elapsed()
            })
        });
    });
    g.throughput(Throughput::Elements(100));
    g.sample_size(20);
    g.bench_function("batch100_sequential", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let (id, next) = open(&mut conn, "stream://bench/seq/res").await;
                    for i in 0..100 {
                        assert_eq!(conn.call(&append(id, next + i, &body)).await[0], 0);
                    }
                    assert_eq!(conn.call(&commit(id)).await[0], 0);
                }
                started.elapsed()
            })
        });
    });
    g.bench_function("batch100_pipelined", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let (id, next) = open(&mut conn, "stream://bench/pipe/res").await;
                    let first = conn.queue_correlated(&append(id, next, &body));
                    for i in 1..100 {
                        conn.queue_correlated(&append(id, next + i, &body));
                    }
                    let last = conn.queue_correlated(&commit(id));
                    conn.flush().await;
                    for want in first..=last {
                        assert_eq!(conn.reply(want).await[0], 0);
                    }
                }
                started.elapsed()
            })
        });
    });
    g.finish();
    brt.block_on(broker.shutdown());
}

fn reads(c: &mut Criterion) {
    let rt = client_runtime();
    let brt = broker_runtime();
    let broker = brt.block_on(Broker::builder().start()).unwrap();
    let mut conn = rt.block_on(Raw::connect(broker.tcp_addr()));
    let route = "stream://bench/read/res";
    let body = Bytes::from(vec![7u8; 64]);
    rt.block_on(async {
        let (id, next) = open(&mut conn, route).await;
        for i in 0..100 {
            assert_eq!(conn.call(&append(id, next + i, &body)).await[0], 0);
        }
        assert_eq!(conn.call(&commit(id)).await[0], 0);
    });
    let read = stream::Read {
        selector: route.into(),
        from_offset: 0,
        limit: 100,
        max_bytes: None,
        filter: None,
        cursor_fingerprint: None,
        captured_watermark: None,
    };
    let check = rt.block_on(conn.call(&read));
    let page = decode_reply::<ReadOk>(check).unwrap().unwrap();
    assert_eq!(ReadPage::decode(page.data, false).unwrap().items.len(), 100);
    let mut g = c.benchmark_group("stream");
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(100));
    g.bench_function("read_page_100", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let reply = conn.call(&read).await;
                    assert_eq!(reply[0], 0);
                }
                started.elapsed()
            })
        });
    });
    g.finish();
    brt.block_on(broker.shutdown());
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = writes, reads
}
criterion_main!(benches);
