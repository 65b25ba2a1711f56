//! End-to-end broker benchmarks over loopback TCP with a minimal raw client
//! built on `fitz-protocol`:
//!
//! * `kv/begin_put_commit`: one connection, one request in flight, three
//!   correlated round trips per iteration (target ≤ 50 µs);
//! * `kv/pipelined_write_256`: 256 write transactions (BEGIN, PUT, COMMIT
//!   on 256 resources) in flight on one connection, each phase pipelined;
//! * `notice/publish_to_notify`: publish on one connection, wait for the
//!   NOTIFY on another (one hop through the broker);
//! * `notice/fanout_throughput`: 50,000 pipelined publishes delivered to one
//!   subscriber of a `**` pattern (target ≥ 200,000 messages/s); the same
//!   with an exact subscription at 32 B and 1 KiB (`fanout_32_exact`,
//!   `fanout_1k_exact`) and to 8 subscribers (`fanout_32_to_8`, throughput
//!   in deliveries).

use fitz_bench::wire::Raw;
use fitz_bench::{broker_runtime, client_runtime};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fitz_broker::{Broker, OutboundLimits};
use fitz_protocol::kv::{self, BeginOk, Durability, TxMode};
use fitz_protocol::{decode_reply, notice};

async fn broker() -> Broker {
    Broker::builder()
        .outbound_limits(OutboundLimits {
            // Throughput runs measure delivery, not the drop policy.
            max_notification_frames: 1 << 20,
            max_notification_bytes: 1 << 30,
            ..OutboundLimits::default()
        })
        .start()
        .await
        .unwrap()
}

fn kv_round_trips(c: &mut Criterion) {
    let rt = client_runtime();
    let brt = broker_runtime();
    let broker = brt.block_on(broker());
    let mut conn = rt.block_on(Raw::connect(broker.tcp_addr()));
    let route: fitz_protocol::Str = "kv://bench/area/res".into();
    let key = Bytes::from_static(b"key");
    let value = Bytes::from_static(b"value-0123456789");
    let mut g = c.benchmark_group("kv");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("begin_put_commit", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let begin = kv::Begin {
                        route: route.clone(),
                        mode: TxMode::ReadWrite,
                    };
                    let tx_id = decode_reply::<BeginOk>(conn.call(&begin).await)
                        .unwrap()
                        .unwrap()
                        .tx_id;
                    let put = kv::Put {
                        tx_id,
                        route: route.clone(),
                        key: key.clone(),
                        value: value.clone(),
                    };
                    assert_eq!(conn.call(&put).await[0], 0);
                    let commit = kv::Commit {
                        tx_id,
                        route: route.clone(),
                        durability: Durability::Buffered,
                    };
                    assert_eq!(conn.call(&commit).await[0], 0);
                }
                started.elapsed()
            })
        });
    });
    // 256 write transactions in flight on one connection, each on its own
    // resource: 256 BEGINs pipelined, then the 256 PUTs, then the COMMITs.
    let routes: Vec<fitz_protocol::Str> = (0..PIPELINED_WRITES)
        .map(|i| format!("kv://bench/pipelined/r{i}").into())
        .collect();
    g.throughput(Throughput::Elements(PIPELINED_WRITES as u64));
    g.bench_function("pipelined_write_256", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                let mut tx_ids = vec![0u64; PIPELINED_WRITES];
                let mut ids = Vec::with_capacity(PIPELINED_WRITES);
                for _ in 0..iters {
                    ids.clear();
                    for route in &routes {
                        ids.push(conn.queue_correlated(&kv::Begin {
                            route: route.clone(),
                            mode: TxMode::ReadWrite,
                        }));
                    }
                    conn.flush().await;
                    for (i, id) in ids.iter().enumerate() {
                        tx_ids[i] = decode_reply::<BeginOk>(conn.reply(*id).await)
                            .unwrap()
                            .unwrap()
                            .tx_id;
                    }
                    ids.clear();
                    for (route, tx_id) in routes.iter().zip(&tx_ids) {
                        ids.push(conn.queue_correlated(&kv::Put {
                            tx_id: *tx_id,
                            route: route.clone(),
                            key: key.clone(),
                            value: value.clone(),
                        }));
                    }
                    conn.flush().await;
                    for id in &ids {
                        assert_eq!(conn.reply(*id).await[0], 0);
                    }
                    ids.clear();
                    for (route, tx_id) in routes.iter().zip(&tx_ids) {
                        ids.push(conn.queue_correlated(&kv::Commit {
                            tx_id: *tx_id,
                            route: route.clone(),
                            durability: Durability::Buffered,
                        }));
                    }
                    conn.flush().await;
                    for id in &ids {
                        assert_eq!(conn.reply(*id).await[0], 0);
                    }
                }
                started.elapsed()
            })
        });
    });
    g.finish();
    brt.block_on(broker.shutdown());
}

/// Write transactions in flight in `kv/pipelined_write_256`.
const PIPELINED_WRITES: usize = 256;

fn notice_latency(c: &mut Criterion) {
    let rt = client_runtime();
    let brt = broker_runtime();
    let broker = brt.block_on(broker());
    let mut sub = rt.block_on(Raw::connect(broker.tcp_addr()));
    let mut publisher = rt.block_on(Raw::connect(broker.tcp_addr()));
    let subscribe = notice::Subscribe::new("notice://bench/*/events");
    assert_eq!(rt.block_on(sub.call(&subscribe))[0], 0);
    let msg = notice::Publish {
        route: "notice://bench/a/events".into(),
        payload: Bytes::from_static(b"0123456789abcdef"),
    };
    let mut g = c.benchmark_group("notice");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("publish_to_notify", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    publisher.queue(None, &msg);
                    publisher.flush().await;
                    let f = sub.frame().await;
                    assert_eq!(&f[..3], &[0xFF, 0x01, 0xF8]);
                }
                started.elapsed()
            })
        });
    });
    g.finish();
    brt.block_on(broker.shutdown());
}

fn notice_throughput(c: &mut Criterion) {
    let mut g = c.benchmark_group("notice");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    // The original id (16 B, one subscriber on `notice://bench/**`).
    notice_fanout(&mut g, "fanout_throughput", 16, 1, "notice://bench/**");
    notice_fanout(&mut g, "fanout_32_exact", 32, 1, "notice://bench/a/events");
    notice_fanout(
        &mut g,
        "fanout_1k_exact",
        1024,
        1,
        "notice://bench/a/events",
    );
    notice_fanout(&mut g, "fanout_32_to_8", 32, 8, "notice://bench/a/events");
    g.finish();
}

/// `N` pipelined publishes of `size` bytes, each delivered to `subscribers`
/// subscribers of `pattern` on their own connections; throughput counts
/// deliveries.
fn notice_fanout(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    size: usize,
    subscribers: usize,
    pattern: &str,
) {
    const N: u64 = 50_000;
    const BATCH: u64 = 256;
    let rt = client_runtime();
    let brt = broker_runtime();
    let broker = brt.block_on(broker());
    let mut subs: Vec<Option<Raw>> = (0..subscribers)
        .map(|_| {
            let mut sub = rt.block_on(Raw::connect(broker.tcp_addr()));
            assert_eq!(
                rt.block_on(sub.call(&notice::Subscribe::new(pattern)))[0],
                0
            );
            Some(sub)
        })
        .collect();
    let mut publisher = Some(rt.block_on(Raw::connect(broker.tcp_addr())));
    let msg = notice::Publish {
        route: "notice://bench/a/events".into(),
        payload: Bytes::from(vec![b'x'; size]),
    };
    g.throughput(Throughput::Elements(N * subscribers as u64));
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut p = publisher.take().unwrap();
                let msg = msg.clone();
                let taken: Vec<Raw> = subs.iter_mut().map(|s| s.take().unwrap()).collect();
                let (p_back, back, elapsed) = rt.block_on(async {
                    let started = Instant::now();
                    let sender = tokio::spawn(async move {
                        let mut sent = 0;
                        while sent < N {
                            for _ in 0..BATCH.min(N - sent) {
                                p.queue(None, &msg);
                            }
                            sent += BATCH.min(N - sent);
                            p.flush().await;
                        }
                        p
                    });
                    let readers: Vec<_> = taken
                        .into_iter()
                        .map(|mut sub| {
                            tokio::spawn(async move {
                                let mut got = 0u64;
                                while got < N {
                                    while sub.buffered_frame().is_some() {
                                        got += 1;
                                    }
                                    if got < N {
                                        sub.fill().await;
                                    }
                                }
                                sub
                            })
                        })
                        .collect();
                    let mut back = Vec::with_capacity(readers.len());
                    for r in readers {
                        back.push(r.await.unwrap());
                    }
                    let elapsed = started.elapsed();
                    (sender.await.unwrap(), back, elapsed)
                });
                publisher = Some(p_back);
                for (slot, sub) in subs.iter_mut().zip(back) {
                    *slot = Some(sub);
                }
                total += elapsed;
            }
            total
        });
    });
    assert_eq!(broker.dropped_notifications(), 0);
    drop((subs, publisher));
    brt.block_on(broker.shutdown());
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = kv_round_trips, notice_latency, notice_throughput
}
criterion_main!(benches);
