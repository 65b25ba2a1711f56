//! Throughput through our SDK and through the official client
//! (`cntryl-fitz 0.2.0`), over TCP and WebSocket, against the same embedded
//! broker in the same run (see `fitz_bench` for the runtime arrangement).
//! Each group's functions are `{ours,official}_{tcp,ws}`; one iteration is a
//! batch of operations, sized once per function so a batch takes ~100 ms,
//! and criterion reports elements per second.
//!
//! | group | batch |
//! |---|---|
//! | `tput_notice_{32,1024}` | up to 10,000 publishes of 32 B / 1 KiB delivered to one subscriber on a second client; at most 16 publishes awaiting their acknowledgement and 48 published and not yet delivered (both clients buffer 64 notifications per subscription by default, so neither drops) |
//! | `tput_rpc_{1,16,256,1024}` | up to 20,000 calls with 1 / 16 / 256 / 1,024 in flight from one client; the worker on a second client echoes 16 B (the official client only up to 16: see `fitz_bench::scenarios::OFFICIAL_RPC_WINDOW`) |
//! | `tput_rpc_256_split` | as `tput_rpc_256`, ours only, with the worker's client on its own thread and runtime (`fitz_bench::ThreadWorker`), so the bench thread runs the caller's client alone |
//! | `tput_queue_enqueue` | up to 20,000 enqueues of 16 B with 256 in flight (the official client over WS only: see `fitz_bench::scenarios::official_skipped`) |
//! | `tput_stream_append_100` | BEGIN, 100 appends of 16 B, COMMIT (the append API of both clients awaits each append; the official client over WS only) |

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use fitz_bench::{Env, PAIR_IDS, Transport, official as off, scenarios, selected, windowed};
use futures_util::StreamExt;
use tokio::sync::Semaphore;

const BODY: &[u8] = b"0123456789abcdef";

fn id(client: &str, t: Transport) -> String {
    format!("{client}_{}", t.name())
}

/// How long one measured batch should take. The official client stalls
/// ~40 ms per round trip on TCP (see docs/PERF.md), so fixed batch sizes
/// would take minutes there.
const BATCH_TARGET: f64 = 0.1;

/// Benchmarks a batch-shaped operation: `batch(n)` runs `n` operations and
/// returns the time of its measured part. The batch size is calibrated once
/// (between `min` and `max` operations) so a batch takes about
/// [`BATCH_TARGET`]; criterion reports operations per second.
fn bench_batches(
    g: &mut BenchmarkGroup<'_, WallTime>,
    id: String,
    min: u64,
    max: u64,
    mut batch: impl FnMut(u64) -> Duration,
) {
    let probe = min.max(1);
    let per_op = batch(probe).as_secs_f64() / probe as f64;
    let n = ((BATCH_TARGET / per_op.max(1e-9)) as u64).clamp(min, max);
    g.throughput(Throughput::Elements(n));
    g.bench_function(id, |b| {
        b.iter_custom(|iters| (0..iters).map(|_| batch(n)).sum())
    });
}

fn notice(c: &mut Criterion, env: &Env, scenario: &scenarios::Scenario) {
    let size = scenario.param;
    const N: u64 = 10_000;
    const WINDOW: usize = 48;
    // Publishes awaiting their acknowledgement at once (each also needs a
    // delivery slot of WINDOW first).
    const PUBLISHING: usize = 16;
    let name = scenario.group;
    if !selected(name, &PAIR_IDS) {
        return;
    }
    let payload = Bytes::from(vec![7u8; size]);
    let mut g = c.benchmark_group(name);
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    for t in Transport::ALL {
        let (publisher, subscriber) = (env.ours(t), env.ours(t));
        let route = format!("notice://bench/tours{}{size}/ev", t.name());
        let mut sub = env
            .rt
            .block_on(subscriber.notice().subscribe(&route))
            .unwrap();
        let notice = publisher.notice();
        bench_batches(&mut g, id("ours", t), 100, N, |n| {
            env.rt.block_on(async {
                let window = Arc::new(Semaphore::new(WINDOW));
                let started = Instant::now();
                let publish = windowed(n, PUBLISHING, |_| async {
                    window.acquire().await.unwrap().forget();
                    notice.publish(&route, payload.clone()).await.unwrap();
                });
                let receive = async {
                    for _ in 0..n {
                        sub.next().await.unwrap().unwrap();
                        window.add_permits(1);
                    }
                };
                tokio::join!(publish, receive);
                started.elapsed()
            })
        });
        env.rt.block_on(async {
            drop(sub);
            publisher.close().await;
            subscriber.close().await;
        });

        let (publisher, subscriber) = (env.official(t), env.official(t));
        let route = format!("notice://bench/toff{}{size}/ev", t.name());
        let mut sub = env
            .rt
            .block_on(subscriber.notice().unwrap().subscribe(&route))
            .unwrap();
        let notice = publisher.notice().unwrap();
        bench_batches(&mut g, id("official", t), 100, N, |n| {
            env.rt.block_on(async {
                let window = Arc::new(Semaphore::new(WINDOW));
                let started = Instant::now();
                let publish = windowed(n, PUBLISHING, |_| async {
                    window.acquire().await.unwrap().forget();
                    notice.publish(&route, &payload).await.unwrap();
                });
                let receive = async {
                    for _ in 0..n {
                        sub.next().await.unwrap().unwrap();
                        window.add_permits(1);
                    }
                };
                tokio::join!(publish, receive);
                started.elapsed()
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

fn notices(c: &mut Criterion, env: &Env) {
    for s in &scenarios::TPUT_NOTICE {
        notice(c, env, s);
    }
}

fn rpc(c: &mut Criterion, env: &Env) {
    const N: u64 = 20_000;
    for scenario in &scenarios::TPUT_RPC {
        let (window, name) = (scenario.param, scenario.group);
        if !selected(name, &PAIR_IDS) {
            continue;
        }
        let min = window as u64 * 2;
        let mut g = c.benchmark_group(name);
        g.sampling_mode(SamplingMode::Flat);
        g.sample_size(10);
        for t in Transport::ALL {
            let (caller, worker) = (env.ours(t), env.ours(t));
            let route = format!("rpc://bench/tours{}{window}/echo", t.name());
            let handle = env
                .rt
                .block_on(fitz_bench::ours_echo_worker(&worker, &route, 1024));
            let rpc = caller.rpc();
            bench_batches(&mut g, id("ours", t), min, N, |n| {
                env.rt.block_on(async {
                    let started = Instant::now();
                    windowed(n, window, |_| async {
                        rpc.request(&route, Bytes::from_static(BODY)).await.unwrap();
                    })
                    .await;
                    started.elapsed()
                })
            });
            env.rt.block_on(async {
                handle.shutdown().await.unwrap();
                caller.close().await;
                worker.close().await;
            });

            if scenarios::official_skipped(scenario, t).is_some() {
                continue;
            }
            let (caller, worker) = (env.official(t), env.official(t));
            let route = format!("rpc://bench/toff{}{window}/echo", t.name());
            let w = env.rt.block_on(async {
                worker
                    .rpc()
                    .unwrap()
                    .register_worker(&route, 1024)
                    .await
                    .unwrap()
            });
            let serving = env.rt.spawn(fitz_bench::official_echo_worker(w));
            let rpc = caller.rpc().unwrap();
            bench_batches(&mut g, id("official", t), min, N, |n| {
                env.rt.block_on(async {
                    let started = Instant::now();
                    windowed(n, window, |_| async {
                        let mut s = rpc.call(&route, BODY).await.unwrap();
                        s.next().await.unwrap().unwrap();
                    })
                    .await;
                    started.elapsed()
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
}

/// [`scenarios::TPUT_RPC_SPLIT`]: the caller's client alone on the bench
/// thread, the worker's on a thread of its own (ours only: the official
/// client cannot keep 256 calls in flight).
fn rpc_split(c: &mut Criterion, env: &Env) {
    const N: u64 = 20_000;
    let s = scenarios::TPUT_RPC_SPLIT;
    if !selected(s.group, &PAIR_IDS) {
        return;
    }
    let mut g = c.benchmark_group(s.group);
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    for t in Transport::ALL {
        let route = format!("rpc://bench/tsplit{}/echo", t.name());
        let worker = fitz_bench::ThreadWorker::start(t.url(&env.broker), &route, 1024);
        let caller = env.ours(t);
        let rpc = caller.rpc();
        bench_batches(&mut g, id("ours", t), s.param as u64 * 2, N, |n| {
            env.rt.block_on(async {
                let started = Instant::now();
                windowed(n, s.param, |_| async {
                    rpc.request(&route, Bytes::from_static(BODY)).await.unwrap();
                })
                .await;
                started.elapsed()
            })
        });
        env.rt.block_on(caller.close());
        drop(worker);
    }
    g.finish();
}

fn queue(c: &mut Criterion, env: &Env) {
    const N: u64 = 20_000;
    const WINDOW: usize = 256;
    let name = scenarios::TPUT_QUEUE.group;
    if !selected(name, &PAIR_IDS) {
        return;
    }
    let mut g = c.benchmark_group(name);
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    let mut run = 0u64;
    for t in Transport::ALL {
        let ours = env.ours(t);
        let q = ours.queue();
        bench_batches(&mut g, id("ours", t), 2 * WINDOW as u64, N, |n| {
            run += 1;
            let route = format!("queue://bench/tours{}/q{run}", t.name());
            env.rt.block_on(async {
                let started = Instant::now();
                windowed(n, WINDOW, |_| async {
                    q.enqueue(&route, Bytes::from_static(BODY)).await.unwrap();
                })
                .await;
                started.elapsed()
            })
        });
        env.rt.block_on(ours.close());
        if scenarios::official_skipped(&scenarios::TPUT_QUEUE, t).is_some() {
            continue;
        }
        let offc = env.official(t);
        let q = offc.queue().unwrap();
        bench_batches(&mut g, id("official", t), 2 * WINDOW as u64, N, |n| {
            run += 1;
            let route = format!("queue://bench/toff{}/q{run}", t.name());
            env.rt.block_on(async {
                let started = Instant::now();
                windowed(n, WINDOW, |_| async {
                    q.enqueue(&route, BODY, None).await.unwrap();
                })
                .await;
                started.elapsed()
            })
        });
        env.rt.block_on(async {
            offc.close().await.unwrap();
        });
    }
    g.finish();
}

fn stream(c: &mut Criterion, env: &Env) {
    const RECORDS: u64 = 100;
    let name = scenarios::TPUT_STREAM.group;
    if !selected(name, &PAIR_IDS) {
        return;
    }
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(RECORDS));
    for t in Transport::ALL {
        let ours = env.ours(t);
        let route = format!("stream://bench/tours{}/log", t.name());
        let streams = ours.stream();
        let mut next = 0u64;
        g.bench_function(id("ours", t), |b| {
            b.iter_custom(|n| {
                env.rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..n {
                        let mut s = streams.begin_at(&route, next).await.unwrap();
                        for _ in 0..RECORDS {
                            s.append(Bytes::from_static(BODY)).await.unwrap();
                        }
                        s.commit(fitz::stream::Durability::Buffered).await.unwrap();
                        next += RECORDS;
                    }
                    started.elapsed()
                })
            })
        });
        env.rt.block_on(ours.close());
        if scenarios::official_skipped(&scenarios::TPUT_STREAM, t).is_some() {
            continue;
        }
        let offc = env.official(t);
        let route = format!("stream://bench/toff{}/log", t.name());
        let streams = offc.stream().unwrap();
        let mut next = 0u64;
        g.bench_function(id("official", t), |b| {
            b.iter_custom(|n| {
                env.rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..n {
                        let mut s = streams.begin(&route, None).await.unwrap();
                        for i in 0..RECORDS {
                            s.append(next + i, BODY, None, None).await.unwrap();
                        }
                        s.commit(off::client_domains::stream::StreamCommitMode::Buffered)
                            .await
                            .unwrap();
                        next += RECORDS;
                    }
                    started.elapsed()
                })
            })
        });
        env.rt.block_on(async {
            offc.close().await.unwrap();
        });
    }
    g.finish();
}

fn throughput(c: &mut Criterion) {
    scenarios::write();
    let env = Env::start();
    notices(c, &env);
    rpc(c, &env);
    rpc_split(c, &env);
    queue(c, &env);
    stream(c, &env);
    env.shutdown();
}

criterion_group! {
    name = benches;
    config = fitz_bench::criterion_config();
    targets = throughput
}
criterion_main!(benches);
