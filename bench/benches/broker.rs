//! End-to-end broker benchmarks over loopback TCP with a minimal raw client
//! built on `fitz-protocol`:
//!
//! * `kv/begin_put_commit`: one connection, one request in flight, three
//!   correlated round trips per iteration (target ≤ 50 µs);
//! * `notice/publish_to_notify`: publish on one connection, wait for the
//!   NOTIFY on another (one hop through the broker);
//! * `notice/fanout_throughput`: 50,000 pipelined publishes delivered to one
//!   subscriber (target ≥ 200,000 messages/s).

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
    g.finish();
    brt.block_on(broker.shutdown());
}

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
    const N: u64 = 50_000;
    const BATCH: u64 = 256;
    let rt = client_runtime();
    let brt = broker_runtime();
    let broker = brt.block_on(broker());
    let mut sub = rt.block_on(Raw::connect(broker.tcp_addr()));
    assert_eq!(
        rt.block_on(sub.call(&notice::Subscribe::new("notice://bench/**")))[0],
        0
    );
    let mut publisher = Some(rt.block_on(Raw::connect(broker.tcp_addr())));
    let msg = notice::Publish {
        route: "notice://bench/a/events".into(),
        payload: Bytes::from_static(b"0123456789abcdef"),
    };
    let mut g = c.benchmark_group("notice");
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("fanout_throughput", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut p = publisher.take().unwrap();
                let msg = msg.clone();
                let (p_back, elapsed) = rt.block_on(async {
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
                    let mut got = 0u64;
                    while got < N {
                        while sub.buffered_frame().is_some() {
                            got += 1;
                        }
                        if got < N {
                            sub.fill().await;
                        }
                    }
                    let elapsed = started.elapsed();
                    (sender.await.unwrap(), elapsed)
                });
                publisher = Some(p_back);
                total += elapsed;
            }
            total
        });
    });
    g.finish();
    assert_eq!(broker.dropped_notifications(), 0);
    brt.block_on(broker.shutdown());
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = kv_round_trips, notice_latency, notice_throughput
}
criterion_main!(benches);
