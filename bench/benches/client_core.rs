//! The client core's hot paths:
//!
//! * `correlation_map`: one insert (file + labelled write) and one reply
//!   lookup with 1,000 requests in flight;
//! * `notify_dispatch`: routing one NOTIFY to one of 1,000 subscriptions and
//!   consuming it;
//! * `round_trip`: one request through the whole client over the in-memory
//!   transport against a scripted peer that answers at once.
//!
//! Allocation counts per operation are measured with a counting global
//! allocator and printed before the timings.

use std::alloc::System;
use std::hint::black_box;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{Criterion, criterion_group, criterion_main};
use fitz::__bench::{CorrelationMap, NotifyDispatch, round_trip};
use fitz::{Client, StaticToken};
use fitz_bench::scenarios::json_str;
use fitz_protocol::frame::FrameDecoder;
use fitz_protocol::record::{LabelledRecords, Side, encode_raw_record, put_label};
use fitz_protocol::types;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::runtime::Runtime;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const IN_FLIGHT: usize = 1_000;
const SUBSCRIPTIONS: usize = 1_000;

/// Counts allocations per operation of `f` for the benchmark `id`.
fn allocations_per(id: &str, n: usize, mut f: impl FnMut(usize)) {
    let region = Region::new(GLOBAL);
    for i in 0..n {
        f(i);
    }
    let stats = region.change();
    let per_op = stats.allocations as f64 / n as f64;
    println!(
        "{id}: {per_op:.3} allocations and {:.1} bytes per operation",
        stats.bytes_allocated as f64 / n as f64
    );
    record_allocations(id, per_op);
}

/// Keeps allocations per operation by benchmark id in
/// `target/perf/alloc_client_core.json`, which the report joins with
/// criterion's timings.
fn record_allocations(id: &str, per_op: f64) {
    static ROWS: Mutex<Vec<(String, f64)>> = Mutex::new(Vec::new());
    let mut rows = ROWS.lock().unwrap_or_else(PoisonError::into_inner);
    rows.retain(|(k, _)| k != id);
    rows.push((id.to_owned(), per_op));
    let json: Vec<String> = rows
        .iter()
        .map(|(k, v)| format!("{{\"scenario\":{},\"allocations\":{v}}}", json_str(k)))
        .collect();
    fitz_bench::write_perf_json(
        "alloc_client_core.json",
        &format!("[{}]\n", json.join(",\n")),
    );
}

fn correlation_map(c: &mut Criterion) {
    let mut map = CorrelationMap::new(IN_FLIGHT);
    allocations_per(
        "correlation_map/insert_and_lookup_1k_in_flight",
        100_000,
        |_| {
            black_box(map.step());
        },
    );
    assert_eq!(map.len(), IN_FLIGHT);
    c.bench_function("correlation_map/insert_and_lookup_1k_in_flight", |b| {
        b.iter(|| black_box(map.step()));
    });
}

fn notify_dispatch(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let client = Client::builder("tcp://127.0.0.1:1", StaticToken::anonymous())
        .build()
        .unwrap();
    let mut d = NotifyDispatch::new(&client, SUBSCRIPTIONS, 64);
    // Warm up: every mailbox and map has its steady-state capacity.
    for i in 0..SUBSCRIPTIONS * 2 {
        assert!(d.dispatch(i % SUBSCRIPTIONS));
        d.drain(i % SUBSCRIPTIONS);
    }
    allocations_per("notify_dispatch/one_of_1k_subscriptions", 100_000, |i| {
        let s = (i * 7919) % SUBSCRIPTIONS;
        black_box(d.dispatch(s));
        black_box(d.drain(s));
    });
    let mut i = 0usize;
    c.bench_function("notify_dispatch/one_of_1k_subscriptions", |b| {
        b.iter(|| {
            let s = i % SUBSCRIPTIONS;
            i = i.wrapping_add(7919);
            black_box(d.dispatch(s));
            black_box(d.drain(s))
        });
    });
}

/// A broker that answers every request at once, echoing its payload after a
/// success status, labelled like the request.
async fn echo_peer(mut io: DuplexStream) {
    let decoder = FrameDecoder::default();
    let mut read = BytesMut::with_capacity(64 * 1024);
    let mut out = BytesMut::with_capacity(64 * 1024);
    loop {
        match io.read_buf(&mut read).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        while let Ok(Some(frame)) = decoder.decode(&mut read) {
            for rec in LabelledRecords::new(frame, Side::Broker).flatten() {
                let at = out.len();
                out.put_u32(0);
                if rec.record.ty == types::CONNECT {
                    encode_raw_record(&mut out, types::SERVER_HELLO, &[0, 1, 0, 0, 0, 1]).unwrap();
                } else {
                    if let Some(id) = rec.correlation {
                        put_label(&mut out, types::CORRELATED, id);
                    }
                    let mut payload = Vec::with_capacity(1 + rec.record.payload.len());
                    payload.push(0);
                    payload.extend_from_slice(&rec.record.payload);
                    encode_raw_record(&mut out, rec.record.ty, &payload).unwrap();
                }
                let len = (out.len() - at - 4) as u32;
                out[at..at + 4].copy_from_slice(&len.to_be_bytes());
            }
        }
        if !out.is_empty() {
            if io.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}

fn connected_client(rt: &Runtime) -> Client {
    rt.block_on(async {
        let (connector, mut listener) = fitz::transport::memory(256 * 1024);
        tokio::spawn(async move {
            while let Some(io) = listener.accept().await {
                tokio::spawn(echo_peer(io));
            }
        });
        let client = Client::builder("memory://bench", StaticToken::anonymous())
            .connector(connector)
            .build()
            .unwrap();
        client.connect().await.unwrap();
        client
    })
}

fn record() -> Bytes {
    let mut b = BytesMut::new();
    encode_raw_record(&mut b, types::KV_GET, b"0123456789abcdef").unwrap();
    b.freeze()
}

fn round_trips(c: &mut Criterion) {
    let mut group = c.benchmark_group("round_trip");
    group.measurement_time(Duration::from_secs(3));
    let runtimes = [
        (
            "current_thread",
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        ),
        (
            "multi_thread_2",
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
        ),
    ];
    for (name, rt) in runtimes {
        let client = connected_client(&rt);
        let rec = record();
        rt.block_on(async {
            for _ in 0..1_000 {
                round_trip(&client, types::KV_GET, rec.clone())
                    .await
                    .unwrap();
            }
            let region = Region::new(GLOBAL);
            let n = 10_000;
            for _ in 0..n {
                round_trip(&client, types::KV_GET, rec.clone())
                    .await
                    .unwrap();
            }
            let s = region.change();
            let per_op = s.allocations as f64 / n as f64;
            println!(
                "round_trip ({name}): {per_op:.2} allocations per request (client + scripted peer)"
            );
            record_allocations(&format!("round_trip/memory_{name}"), per_op);
        });
        // The caller is a task on the runtime, as in an application (not
        // the benchmark's own thread, which would add a cross-thread
        // hand-off per await).
        group.bench_function(format!("memory_{name}"), |b| {
            b.iter_custom(|iters| {
                let client = client.clone();
                let rec = rec.clone();
                rt.block_on(async move {
                    tokio::spawn(async move {
                        let start = std::time::Instant::now();
                        for _ in 0..iters {
                            black_box(
                                round_trip(&client, types::KV_GET, rec.clone())
                                    .await
                                    .unwrap(),
                            );
                        }
                        start.elapsed()
                    })
                    .await
                    .unwrap()
                })
            });
        });
        rt.block_on(client.close());
    }
    group.finish();
}

criterion_group!(benches, correlation_map, notify_dispatch, round_trips);
criterion_main!(benches);
