//! Queue and Lease benchmarks against the embedded broker over loopback TCP,
//! with a minimal raw client on `fitz-protocol`:
//!
//! * `queue/enqueue_reserve_complete`: one connection, one request in
//!   flight, three correlated round trips per iteration;
//! * `lease/acquire_release`: one connection, two round trips per iteration;
//! * `queue/enqueue_pipelined`: 20,000 ENQUEUEs written in batches while
//!   their replies are read on the same connection (messages per second).

use fitz_bench::wire::Raw;
use fitz_bench::{broker_runtime, client_runtime};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fitz_broker::Broker;
use fitz_protocol::frame::FrameDecoder;
use fitz_protocol::lease::{self, AcquireKind, AcquireOk};
use fitz_protocol::queue::{self, EnqueueOk, ReserveOk};
use fitz_protocol::{Message, decode_reply, decode_reply_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn queue_round_trips(c: &mut Criterion) {
    let rt = client_runtime();
    let brt = broker_runtime();
    let broker = brt.block_on(Broker::builder().start()).unwrap();
    let mut conn = rt.block_on(Raw::connect(broker.tcp_addr()));
    let route: fitz_protocol::Str = "queue://bench/area/jobs".into();
    let body = Bytes::from_static(b"job-0123456789ab");
    let mut g = c.benchmark_group("queue");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("enqueue_reserve_complete", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let enqueue = queue::Enqueue {
                        route: route.clone(),
                        body: body.clone(),
                        delay_seconds: None,
                    };
                    let id = decode_reply::<EnqueueOk>(conn.call(&enqueue).await)
                        .unwrap()
                        .unwrap()
                        .message_id;
                    let reserve = queue::Reserve {
                        route: route.clone(),
                        lease_seconds: 30,
                        batch_size: Some(1),
                        wait_seconds: None,
                    };
                    let reply = conn.call(&reserve).await;
                    let item = decode_reply_with(reply, |r| ReserveOk::decode_body(r, false))
                        .unwrap()
                        .unwrap()
                        .items
                        .pop()
                        .unwrap();
                    assert_eq!(item.message_id, id);
                    let complete = queue::Complete {
                        route: route.clone(),
                        message_id: id,
                        lease_token: item.lease_token,
                    };
                    assert_eq!(&conn.call(&complete).await[..], &[0]);
                }
                started.elapsed()
            })
        });
    });
    g.finish();
    brt.block_on(broker.shutdown());
}

fn lease_round_trips(c: &mut Criterion) {
    let rt = client_runtime();
    let brt = broker_runtime();
    let broker = brt.block_on(Broker::builder().start()).unwrap();
    let mut conn = rt.block_on(Raw::connect(broker.tcp_addr()));
    let route: fitz_protocol::Str = "lease://bench/area/leader".into();
    let owner: fitz_protocol::Str = "bench-owner".into();
    let mut g = c.benchmark_group("lease");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("acquire_release", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let acquire = lease::Acquire {
                        route: route.clone(),
                        owner: owner.clone(),
                        ttl_secs: 30,
                        wait_seconds: Some(0),
                    };
                    let ok = decode_reply::<AcquireOk>(conn.call(&acquire).await)
                        .unwrap()
                        .unwrap();
                    assert_eq!(ok.kind, AcquireKind::Acquired);
                    let release = lease::Release {
                        route: route.clone(),
                        owner: owner.clone(),
                        fencing_token: ok.fencing_token,
                    };
                    assert_eq!(&conn.call(&release).await[..], &[0]);
                }
                started.elapsed()
            })
        });
    });
    g.finish();
    brt.block_on(broker.shutdown());
}

fn queue_pipelined(c: &mut Criterion) {
    const N: u64 = 20_000;
    const BATCH: u64 = 256;
    let rt = client_runtime();
    let brt = broker_runtime();
    let broker = brt.block_on(Broker::builder().start()).unwrap();
    let conn = rt.block_on(Raw::connect(broker.tcp_addr()));
    let (mut reader, writer, mut rbuf) = conn.into_split();
    let mut writer = Some(writer);
    let body = Bytes::from_static(b"job-0123456789ab");
    let mut run = 0u64;
    let mut g = c.benchmark_group("queue");
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("enqueue_pipelined", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                run += 1;
                // A fresh queue per run keeps every queue's size bounded by N.
                let msg = queue::Enqueue {
                    route: format!("queue://bench/pipe/q{run}").into(),
                    body: body.clone(),
                    delay_seconds: None,
                };
                let mut w = writer.take().unwrap();
                let (w_back, elapsed) = rt.block_on(async {
                    let started = Instant::now();
                    let sender = tokio::spawn(async move {
                        let mut buf = BytesMut::with_capacity(1 << 16);
                        let mut sent = 0;
                        while sent < N {
                            let n = BATCH.min(N - sent);
                            for _ in 0..n {
                                let at = buf.len();
                                buf.put_u32(0);
                                msg.encode_record(&mut buf).unwrap();
                                let len = u32::try_from(buf.len() - at - 4).unwrap();
                                buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
                            }
                            w.write_all(&buf).await.unwrap();
                            buf.clear();
                            sent += n;
                        }
                        w
                    });
                    let decoder = FrameDecoder::default();
                    let mut got = 0u64;
                    while got < N {
                        while let Some(f) = decoder.decode(&mut rbuf).unwrap() {
                            debug_assert_eq!(f[0], 200);
                            got += 1;
                        }
                        if got < N {
                            rbuf.reserve(1 << 18);
                            assert!(reader.read_buf(&mut rbuf).await.unwrap() > 0);
                        }
                    }
                    let elapsed = started.elapsed();
                    (sender.await.unwrap(), elapsed)
                });
                writer = Some(w_back);
                total += elapsed;
            }
            total
        });
    });
    g.finish();
    brt.block_on(broker.shutdown());
}

criterion_group!(
    benches,
    queue_round_trips,
    lease_round_trips,
    queue_pipelined
);
criterion_main!(benches);
