//! Group commit on local storage: KV write transactions (BEGIN, then PUT and
//! COMMIT with `Durability::Sync` written together, two round trips, as
//! `fitz::kv::Kv::put` sends them) against a broker with
//! `FITZ_STORAGE_MODE=local`, over loopback TCP with the raw client.
//!
//! * `group_commit/serial`: one connection, one transaction at a time: every
//!   commit waits for its own fsync;
//! * `group_commit/concurrent_64`: 64 connections, each on its own resource,
//!   each running transactions back to back: commits that arrive while an
//!   fsync runs share the next one;
//! * `group_commit/concurrent_64_buffered`: the same with
//!   `Durability::Buffered` (no fsync to wait for): the ceiling the CPU
//!   path (two round trips per transaction) sets on this machine;
//! * `group_commit/client_serial` and `group_commit/client_concurrent_64`:
//!   the SDK as an application uses it: one `fitz::Client`, `Kv::put` with
//!   `Durability::Sync`, one writer at a time, then 64 writers (tasks) on
//!   64 resources sharing the client's one connection, so their requests
//!   travel together instead of one connection's syscalls each.
//!
//! Throughput is commits per second; the ratio concurrent ÷ serial is what
//! group commit buys (docs/PERF.md, "Group commit").

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fitz_bench::wire::Raw;
use fitz_bench::{broker_runtime, client_runtime};
use fitz_broker::{Broker, StorageMode};
use fitz_protocol::decode_reply;
use fitz_protocol::kv::{self, BeginOk, Durability, TxMode};

/// Concurrent writers, one resource and one connection each.
const WRITERS: usize = 64;

/// One write transaction on `route`.
async fn write_tx(
    conn: &mut Raw,
    route: &fitz_protocol::Str,
    value: &Bytes,
    durability: Durability,
) {
    let begin = kv::Begin {
        route: route.clone(),
        mode: TxMode::ReadWrite,
    };
    let tx_id = decode_reply::<BeginOk>(conn.call(&begin).await)
        .expect("decodable")
        .expect("begin ok")
        .tx_id;
    let put = kv::Put {
        tx_id,
        route: route.clone(),
        key: Bytes::from_static(b"key"),
        value: value.clone(),
    };
    let commit = kv::Commit {
        tx_id,
        route: route.clone(),
        durability,
    };
    // PUT and COMMIT written together, as `fitz::kv::Kv::put` sends them.
    let put = conn.queue_correlated(&put);
    let commit = conn.queue_correlated(&commit);
    conn.flush().await;
    assert_eq!(conn.reply(put).await[0], 0, "put ok");
    assert_eq!(conn.reply(commit).await[0], 0, "commit ok");
}

/// One `Kv::put` with `Durability::Sync` through the SDK.
async fn put_sync(kv: &fitz::kv::Kv, route: &str, value: &Bytes) {
    kv.put(route, b"key", value.clone(), fitz::kv::Durability::Sync)
        .await
        .expect("put");
}

fn group_commit(c: &mut Criterion) {
    let rt = client_runtime();
    let brt = broker_runtime();
    let dir = std::env::temp_dir().join(format!("fitz-bench-group-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let broker = brt.block_on(async {
        Broker::builder()
            .storage(StorageMode::Local(dir.clone()))
            .start()
            .await
            .expect("broker")
    });
    let addr = broker.tcp_addr();
    let value = Bytes::from_static(b"value-0123456789");
    let routes: Vec<fitz_protocol::Str> = (0..WRITERS)
        .map(|i| format!("kv://bench/group/r{i}").into())
        .collect();
    let mut conns: Vec<Raw> = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..WRITERS {
            v.push(Raw::connect(addr).await);
        }
        v
    });

    let mut g = c.benchmark_group("group_commit");
    g.measurement_time(Duration::from_secs(5));
    g.sample_size(10);
    g.throughput(Throughput::Elements(1));
    g.bench_function("serial", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let conn = &mut conns[0];
                let started = Instant::now();
                for _ in 0..iters {
                    write_tx(conn, &routes[0], &value, Durability::Sync).await;
                }
                started.elapsed()
            })
        });
    });
    for (id, durability) in [
        ("concurrent_64", Durability::Sync),
        ("concurrent_64_buffered", Durability::Buffered),
    ] {
        g.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let per = iters.div_ceil(WRITERS as u64);
                let taken = std::mem::take(&mut conns);
                let (back, elapsed) = rt.block_on(async {
                    let local = tokio::task::LocalSet::new();
                    local
                        .run_until(async {
                            let started = Instant::now();
                            let tasks: Vec<_> = taken
                                .into_iter()
                                .zip(routes.iter().cloned())
                                .map(|(mut conn, route)| {
                                    let value = value.clone();
                                    tokio::task::spawn_local(async move {
                                        for _ in 0..per {
                                            write_tx(&mut conn, &route, &value, durability).await;
                                        }
                                        conn
                                    })
                                })
                                .collect();
                            let mut back = Vec::with_capacity(WRITERS);
                            for t in tasks {
                                back.push(t.await.expect("writer"));
                            }
                            (back, started.elapsed())
                        })
                        .await
                });
                conns = back;
                // Normalise to `iters` commits.
                elapsed.mul_f64(iters as f64 / (per * WRITERS as u64) as f64)
            });
        });
    }
    let client = rt.block_on(async {
        let c = fitz::Client::builder(broker.tcp_url(), fitz::StaticToken::anonymous())
            .max_in_flight(4096)
            .request_timeout(Duration::from_secs(30))
            .build()
            .expect("client builds");
        c.connect().await.expect("client connects");
        c
    });
    let kv = client.kv();
    let names: Vec<String> = routes.iter().map(|r| r.to_string()).collect();
    let put = |route| put_sync(&kv, route, &value);
    g.bench_function("client_serial", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    put(&names[0]).await;
                }
                started.elapsed()
            })
        });
    });
    g.bench_function("client_concurrent_64", |b| {
        b.iter_custom(|iters| {
            let per = iters.div_ceil(WRITERS as u64);
            let elapsed = rt.block_on(async {
                let started = Instant::now();
                futures_util::future::join_all(names.iter().map(|route| async move {
                    for _ in 0..per {
                        put(route).await;
                    }
                }))
                .await;
                started.elapsed()
            });
            elapsed.mul_f64(iters as f64 / (per * WRITERS as u64) as f64)
        });
    });
    g.finish();
    rt.block_on(client.close());
    drop(conns);
    brt.block_on(broker.shutdown());
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = group_commit
}
criterion_main!(benches);
