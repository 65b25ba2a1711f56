//! RPC through the broker over loopback TCP, with the caller and the worker
//! on separate connections of a minimal raw client built on `fitz-protocol`:
//!
//! * `rpc/round_trip`: one call in flight: REQUEST → delivery to the worker
//!   → RESPONSE (end) → delivery to the caller (target ≤ 60 µs);
//! * `rpc/throughput_256`, `rpc/throughput_1024`: 20,000 calls with 256 or
//!   1,024 in flight, the worker answering everything it reads at once
//!   (target ≥ 100,000 calls/s with 256 in flight).

use fitz_bench::wire::Raw;
use fitz_bench::{broker_runtime, client_runtime};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fitz_broker::Broker;
use fitz_protocol::record::{self, LabelledRecords, Side};
use fitz_protocol::rpc::{Request, Response, RpcId, SubscribeWorker};
use fitz_protocol::{Message, Str, types};

const ROUTE: &str = "rpc://bench/app/echo";

/// Registers a legacy worker for [`ROUTE`] with `max` credit.
async fn register(worker: &mut Raw, max: u32) {
    worker.queue(
        Some(1),
        &SubscribeWorker {
            pattern: ROUTE.into(),
            max_concurrent: max,
            extension_flags: None,
        },
    );
    worker.flush().await;
    let f = worker.frame().await;
    let l = LabelledRecords::new(f, Side::Client)
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(l.record.payload[0], 0);
}

fn id(n: u64) -> RpcId {
    let mut id = [0u8; 16];
    id[8..].copy_from_slice(&n.to_be_bytes());
    RpcId(id)
}

fn request(route: &Str, body: &Bytes, n: u64) -> Request {
    Request {
        id: id(n),
        route: route.clone(),
        body: body.clone(),
        budget_ms: None,
    }
}

/// Answers every delivery in a frame with one terminal chunk echoing it.
fn answer(worker: &mut Raw, frame: Bytes) {
    let rec = record::decode_single_record(frame).unwrap();
    assert_eq!(rec.ty, types::RPC_REQUEST);
    let req = Request::decode(rec.payload).unwrap();
    worker.queue(
        None,
        &Response {
            id: req.id,
            sequence: 0,
            end: true,
            body: req.body,
        },
    );
}

fn round_trip(c: &mut Criterion) {
    let rt = client_runtime();
    let brt = broker_runtime();
    let broker = brt.block_on(Broker::builder().start()).unwrap();
    let (mut caller, mut worker) = rt.block_on(async {
        let caller = Raw::connect(broker.tcp_addr()).await;
        let mut worker = Raw::connect(broker.tcp_addr()).await;
        register(&mut worker, 1).await;
        (caller, worker)
    });
    let route: Str = ROUTE.into();
    let body = Bytes::from_static(b"0123456789abcdef");
    let mut n = 0u64;
    let mut g = c.benchmark_group("rpc");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("round_trip", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    n += 1;
                    caller.queue(None, &request(&route, &body, n));
                    caller.flush().await;
                    let f = worker.frame().await;
                    answer(&mut worker, f);
                    worker.flush().await;
                    let f = caller.frame().await;
                    assert_eq!(&f[..3], &[0xFF, 0x01, 0x2F]);
                }
                started.elapsed()
            })
        });
    });
    g.finish();
    brt.block_on(broker.shutdown());
}

fn throughput(c: &mut Criterion) {
    const N: u64 = 20_000;
    let rt = client_runtime();
    let brt = broker_runtime();
    let broker = brt.block_on(Broker::builder().start()).unwrap();
    let route: Str = ROUTE.into();
    let body = Bytes::from_static(b"0123456789abcdef");
    let mut g = c.benchmark_group("rpc");
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    for window in [256u64, 1024] {
        let (mut caller, worker) = rt.block_on(async {
            let caller = Raw::connect(broker.tcp_addr()).await;
            let mut worker = Raw::connect(broker.tcp_addr()).await;
            register(&mut worker, 1024).await;
            (caller, worker)
        });
        let mut worker = Some(worker);
        let mut next = 0u64;
        g.bench_function(format!("throughput_{window}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut w = worker.take().unwrap();
                    let (w_back, elapsed) = rt.block_on(async {
                        let started = Instant::now();
                        // The worker answers whatever it has read, in batches.
                        let serving = tokio::spawn(async move {
                            let mut served = 0;
                            while served < N {
                                w.fill().await;
                                while let Some(f) = w.buffered_frame() {
                                    answer(&mut w, f);
                                    served += 1;
                                }
                                w.flush().await;
                            }
                            w
                        });
                        let (mut sent, mut done) = (0u64, 0u64);
                        while sent < window.min(N) {
                            next += 1;
                            caller.queue(None, &request(&route, &body, next));
                            sent += 1;
                        }
                        caller.flush().await;
                        while done < N {
                            caller.fill().await;
                            while let Some(f) = caller.buffered_frame() {
                                debug_assert_eq!(&f[..3], &[0xFF, 0x01, 0x2F]);
                                done += 1;
                                if sent < N {
                                    next += 1;
                                    caller.queue(None, &request(&route, &body, next));
                                    sent += 1;
                                }
                            }
                            if caller.has_queued() {
                                caller.flush().await;
                            }
                        }
                        let elapsed = started.elapsed();
                        (serving.await.unwrap(), elapsed)
                    });
                    worker = Some(w_back);
                    total += elapsed;
                }
                total
            });
        });
    }
    g.finish();
    assert_eq!(broker.engines().rpc.live_calls(), 0);
    brt.block_on(broker.shutdown());
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = round_trip, throughput
}
criterion_main!(benches);
