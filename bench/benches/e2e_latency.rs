//! Latency with one request in flight, through our SDK and through the
//! official client (`cntryl-fitz 0.2.0`), over TCP and WebSocket, against
//! the same embedded broker in the same run (see `fitz_bench` for the
//! runtime arrangement).
//!
//! Each group is one scenario; its functions are `{ours,official}_{tcp,ws}`.
//! Every iteration is one complete operation (e.g. BEGIN + PUT + COMMIT):
//!
//! | group | operation | round trips |
//! |---|---|---|
//! | `lat_kv_begin_put_commit` | KV begin, put 16 B, commit (buffered) | 3 |
//! | `lat_kv_get` | KV get of a 16 B value in an open read-write tx | 1 |
//! | `lat_queue_enqueue_reserve_complete` | enqueue 16 B, reserve 1, complete | 3 |
//! | `lat_rpc_call` | call with 16 B, worker on a second client echoes it | 2 (two broker hops each way) |
//! | `lat_lease_acquire_release` | acquire (TTL 30 s), release | 2 |
//! | `lat_notice_publish_notify` | publish 32 B, wait for the NOTIFY on a second client | 1 |
//! | `lat_stream_append_commit` | stream begin, append 16 B, commit (buffered) | 3 |
//! | `lat_schedule_create_cancel` | schedule create, cancel | 2 |

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use fitz_bench::{Env, Transport, official as off, scenarios};
use futures_util::StreamExt;

const BODY: &[u8] = b"0123456789abcdef";
const NOTICE_32: &[u8] = b"0123456789abcdef0123456789abcdef";

fn id(client: &str, t: Transport) -> String {
    format!("{client}_{}", t.name())
}

fn kv_begin_put_commit(c: &mut Criterion, env: &Env) {
    let mut g = c.benchmark_group(scenarios::LAT_KV.group);
    for t in Transport::ALL {
        let ours = env.ours(t);
        let route = format!("kv://bench/ours{}/res", t.name());
        let kv = ours.kv();
        g.bench_function(id("ours", t), |b| {
            b.iter_custom(|n| {
                env.time_seq(n, |_| async {
                    let mut tx = kv.begin(&route, fitz::kv::TxMode::ReadWrite).await.unwrap();
                    tx.put(b"key", Bytes::from_static(BODY)).await.unwrap();
                    tx.commit(fitz::kv::Durability::Buffered).await.unwrap();
                })
            })
        });
        let offc = env.official(t);
        let route = format!("kv://bench/off{}/res", t.name());
        let kv = offc.kv().unwrap();
        g.bench_function(id("official", t), |b| {
            b.iter_custom(|n| {
                env.time_seq(n, |_| async {
                    let tx = kv
                        .begin(&route, off::TransactionMode::ReadWrite)
                        .await
                        .unwrap();
                    tx.put(b"key", BODY).await.unwrap();
                    tx.commit(off::KvDurability::Buffered).await.unwrap();
                })
            })
        });
        env.rt.block_on(async {
            ours.close().await;
            offc.close().await.unwrap();
        });
    }
    g.finish();
}

fn kv_get(c: &mut Criterion, env: &Env) {
    let mut g = c.benchmark_group(scenarios::LAT_KV_GET.group);
    for t in Transport::ALL {
        let ours = env.ours(t);
        let route = format!("kv://bench/getours{}/res", t.name());
        let mut tx = env.rt.block_on(async {
            let mut tx = ours
                .kv()
                .begin(&route, fitz::kv::TxMode::ReadWrite)
                .await
                .unwrap();
            tx.put(b"key", Bytes::from_static(BODY)).await.unwrap();
            tx
        });
        g.bench_function(id("ours", t), |b| {
            b.iter_custom(|n| {
                env.rt.block_on(async {
                    let started = std::time::Instant::now();
                    for _ in 0..n {
                        black_box(tx.get(b"key").await.unwrap().unwrap());
                    }
                    started.elapsed()
                })
            })
        });
        let offc = env.official(t);
        let route = format!("kv://bench/getoff{}/res", t.name());
        let tx = env.rt.block_on(async {
            let tx = offc
                .kv()
                .unwrap()
                .begin(&route, off::TransactionMode::ReadWrite)
                .await
                .unwrap();
            tx.put(b"key", BODY).await.unwrap();
            tx
        });
        g.bench_function(id("official", t), |b| {
            b.iter_custom(|n| {
                env.time_seq(n, |_| async {
                    black_box(tx.get(b"key").await.unwrap());
                })
            })
        });
        env.rt.block_on(async {
            drop(tx);
            ours.close().await;
            offc.close().await.unwrap();
        });
    }
    g.finish();
}

fn queue_round(c: &mut Criterion, env: &Env) {
    let mut g = c.benchmark_group(scenarios::LAT_QUEUE.group);
    for t in Transport::ALL {
        let ours = env.ours(t);
        let route = format!("queue://bench/ours{}/q", t.name());
        let q = ours.queue();
        g.bench_function(id("ours", t), |b| {
            b.iter_custom(|n| {
                env.time_seq(n, |_| async {
                    q.enqueue(&route, Bytes::from_static(BODY)).await.unwrap();
                    let mut r = q
                        .reserve(&route, fitz::queue::ReserveOptions::default())
                        .await
                        .unwrap();
                    r.pop().unwrap().complete().await.unwrap();
                })
            })
        });
        let offc = env.official(t);
        let route = format!("queue://bench/off{}/q", t.name());
        let q = offc.queue().unwrap();
        g.bench_function(id("official", t), |b| {
            b.iter_custom(|n| {
                env.time_seq(n, |_| async {
                    q.enqueue(&route, BODY, None).await.unwrap();
                    let r = q.reserve(&route, 30, 1, None).await.unwrap();
                    r[0].complete().await.unwrap();
                })
            })
        });
        env.rt.block_on(async {
            ours.close().await;
            offc.close().await.unwrap();
        });
    }
    g.finish();
}

fn rpc_call(c: &mut Criterion, env: &Env) {
    let mut g = c.benchmark_group(scenarios::LAT_RPC.group);
    for t in Transport::ALL {
        let (caller, worker) = (env.ours(t), env.ours(t));
        let route = format!("rpc://bench/ours{}/echo", t.name());
        let handle = env
            .rt
            .block_on(fitz_bench::ours_echo_worker(&worker, &route, 64));
        let rpc = caller.rpc();
        g.bench_function(id("ours", t), |b| {
            b.iter_custom(|n| {
                env.time_seq(n, |_| async {
                    black_box(rpc.request(&route, Bytes::from_static(BODY)).await.unwrap());
                })
            })
        });
        env.rt.block_on(async {
            handle.shutdown().await.unwrap();
            caller.close().await;
            worker.close().await;
        });

        let (caller, worker) = (env.official(t), env.official(t));
        let route = format!("rpc://bench/off{}/echo", t.name());
        let w = env.rt.block_on(async {
            worker
                .rpc()
                .unwrap()
                .register_worker(&route, 64)
                .await
                .unwrap()
        });
        let serving = env.rt.spawn(fitz_bench::official_echo_worker(w));
        let rpc = caller.rpc().unwrap();
        g.bench_function(id("official", t), |b| {
            b.iter_custom(|n| {
                env.time_seq(n, |_| async {
                    let mut s = rpc.call(&route, BODY).await.unwrap();
                    black_box(s.next().await.unwrap().unwrap());
                })
            })
        });
        env.rt.block_on(async {
            serving.abort();
            caller.close().await.unwrap();
            worker.close().await.unwrap();
        });
    }
    g.finish();
}

fn lease_round(c: &mut Criterion, env: &Env) {
    let mut g = c.benchmark_group(scenarios::LAT_LEASE.group);
    let ttl = std::time::Duration::from_secs(30);
    for t in Transport::ALL {
        let ours = env.ours(t);
        let route = format!("lease://bench/ours{}/leader", t.name());
        let leases = ours.lease();
        g.bench_function(id("ours", t), |b| {
            b.iter_custom(|n| {
                env.time_seq(n, |_| async {
                    let l = leases.acquire(&route, "node-1", ttl).await.unwrap();
                    l.release().await.unwrap();
                })
            })
        });
        let offc = env.official(t);
        let route = format!("lease://bench/off{}/leader", t.name());
        let leases = offc.lease().unwrap();
        g.bench_function(id("official", t), |b| {
            b.iter_custom(|n| {
                env.time_seq(n, |_| async {
                    let l = leases
                        .acquire(&route, "node-1", 30, Default::default())
                        .await
                        .unwrap();
                    l.release().await.unwrap();
                })
            })
        });
        env.rt.block_on(async {
            ours.close().await;
            offc.close().await.unwrap();
        });
    }
    g.finish();
}

fn notice_round(c: &mut Criterion, env: &Env) {
    let mut g = c.benchmark_group(scenarios::LAT_NOTICE.group);
    for t in Transport::ALL {
        let (publisher, subscriber) = (env.ours(t), env.ours(t));
        let route = format!("notice://bench/ours{}/ev", t.name());
        let mut sub = env
            .rt
            .block_on(subscriber.notice().subscribe(&route))
            .unwrap();
        let notice = publisher.notice();
        g.bench_function(id("ours", t), |b| {
            b.iter_custom(|n| {
                env.rt.block_on(async {
                    let started = std::time::Instant::now();
                    for _ in 0..n {
                        notice
                            .publish(&route, Bytes::from_static(NOTICE_32))
                            .await
                            .unwrap();
                        black_box(sub.next().await.unwrap().unwrap());
                    }
                    started.elapsed()
                })
            })
        });
        env.rt.block_on(async {
            drop(sub);
            publisher.close().await;
            subscriber.close().await;
        });

        let (publisher, subscriber) = (env.official(t), env.official(t));
        let route = format!("notice://bench/off{}/ev", t.name());
        let mut sub = env
            .rt
            .block_on(subscriber.notice().unwrap().subscribe(&route))
            .unwrap();
        let notice = publisher.notice().unwrap();
        g.bench_function(id("official", t), |b| {
            b.iter_custom(|n| {
                env.rt.block_on(async {
                    let started = std::time::Instant::now();
                    for _ in 0..n {
                        notice.publish(&route, NOTICE_32).await.unwrap();
                        black_box(sub.next().await.unwrap().unwrap());
                    }
                    started.elapsed()
                })
            })
        });
        env.rt.block_on(async {
            drop(sub);
            publisher.close().await.unwrap();
            subscriber.close().await.unwrap();
        });
    }
    g.finish();
}

fn stream_round(c: &mut Criterion, env: &Env) {
    let mut g = c.benchmark_group(scenarios::LAT_STREAM.group);
    for t in Transport::ALL {
        let ours = env.ours(t);
        let route = format!("stream://bench/ours{}/log", t.name());
        let streams = ours.stream();
        let mut next = 0u64;
        g.bench_function(id("ours", t), |b| {
            b.iter_custom(|n| {
                env.rt.block_on(async {
                    let started = std::time::Instant::now();
                    for _ in 0..n {
                        // Offset known locally: no GET_METADATA probe, as
                        // the official client (which takes it as an argument).
                        let mut s = streams.begin_at(&route, next).await.unwrap();
                        s.append(Bytes::from_static(BODY)).await.unwrap();
                        s.commit(fitz::stream::Durability::Buffered).await.unwrap();
                        next += 1;
                    }
                    started.elapsed()
                })
            })
        });
        let offc = env.official(t);
        let route = format!("stream://bench/off{}/log", t.name());
        let streams = offc.stream().unwrap();
        let mut next = 0u64;
        g.bench_function(id("official", t), |b| {
            b.iter_custom(|n| {
                env.rt.block_on(async {
                    let started = std::time::Instant::now();
                    for _ in 0..n {
                        let mut s = streams.begin(&route, None).await.unwrap();
                        s.append(next, BODY, None, None).await.unwrap();
                        s.commit(off::client_domains::stream::StreamCommitMode::Buffered)
                            .await
                            .unwrap();
                        next += 1;
                    }
                    started.elapsed()
                })
            })
        });
        env.rt.block_on(async {
            ours.close().await;
            offc.close().await.unwrap();
        });
    }
    g.finish();
}

fn schedule_round(c: &mut Criterion, env: &Env) {
    let mut g = c.benchmark_group(scenarios::LAT_SCHEDULE.group);
    for t in Transport::ALL {
        let ours = env.ours(t);
        let route = format!("schedule://bench/ours{}/job/run", t.name());
        let s = ours.schedule();
        g.bench_function(id("ours", t), |b| {
            b.iter_custom(|n| {
                env.time_seq(n, |_| async {
                    s.create(
                        &route,
                        "0 6 * * *",
                        fitz::schedule::DeliveryMode::Single,
                        Bytes::from_static(BODY),
                    )
                    .await
                    .unwrap();
                    s.cancel(&route).await.unwrap();
                })
            })
        });
        let offc = env.official(t);
        let route = format!("schedule://bench/off{}/job/run", t.name());
        let s = offc.schedule().unwrap();
        g.bench_function(id("official", t), |b| {
            b.iter_custom(|n| {
                env.time_seq(n, |_| async {
                    s.create(
                        &route,
                        "0 6 * * *",
                        off::client_domains::schedule::ScheduleDeliveryMode::Single,
                        BODY,
                    )
                    .await
                    .unwrap();
                    s.cancel(&route).await.unwrap();
                })
            })
        });
        env.rt.block_on(async {
            ours.close().await;
            offc.close().await.unwrap();
        });
    }
    g.finish();
}

fn latency(c: &mut Criterion) {
    scenarios::write();
    let env = Env::start();
    type Run = fn(&mut Criterion, &Env);
    let all: [(scenarios::Scenario, Run); 8] = [
        (scenarios::LAT_KV, kv_begin_put_commit),
        (scenarios::LAT_KV_GET, kv_get),
        (scenarios::LAT_QUEUE, queue_round),
        (scenarios::LAT_RPC, rpc_call),
        (scenarios::LAT_LEASE, lease_round),
        (scenarios::LAT_NOTICE, notice_round),
        (scenarios::LAT_STREAM, stream_round),
        (scenarios::LAT_SCHEDULE, schedule_round),
    ];
    for (scenario, f) in all {
        // Skip the (costly) client setup of groups the filter excludes.
        if fitz_bench::selected(scenario.group, &fitz_bench::PAIR_IDS) {
            f(c, &env);
        }
    }
    env.shutdown();
}

criterion_group! {
    name = benches;
    config = fitz_bench::criterion_config();
    targets = latency
}
criterion_main!(benches);
