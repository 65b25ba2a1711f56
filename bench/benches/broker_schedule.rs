//! Schedule and storage benchmarks over loopback TCP with a minimal raw
//! client on `fitz-protocol` (one connection, one request in flight):
//!
//! * `schedule/create_cancel/{memory,local}`: a CREATE and a CANCEL round
//!   trip; on local storage each is one fsync'd commit;
//! * `kv_commit/{sync,buffered}_{memory,local}`: BEGIN, PUT, COMMIT with the
//!   given durability: the cost of an fsync on the request path.

use fitz_bench::wire::Raw;
use fitz_bench::{broker_runtime, client_runtime};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use fitz_broker::{Broker, StorageMode};
use fitz_protocol::decode_reply;
use fitz_protocol::kv::{self, BeginOk, Durability, TxMode};
use fitz_protocol::schedule::{self, DeliveryMode, Entry};
use tokio::runtime::Runtime;

/// Client on the bench thread; the broker on its own two workers.
fn runtimes() -> (Runtime, Runtime) {
    (client_runtime(), broker_runtime())
}

fn data_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fitz-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Runs `f` against a broker of each storage mode.
fn with_modes(mut f: impl FnMut(&str, &Runtime, &mut Raw)) {
    for mode in ["memory", "local"] {
        let (rt, brt) = runtimes();
        let dir = data_dir(mode);
        let storage = if mode == "local" {
            StorageMode::Local(dir.clone())
        } else {
            StorageMode::Memory
        };
        let broker = brt
            .block_on(Broker::builder().storage(storage).start())
            .unwrap();
        let mut conn = rt.block_on(Raw::connect(broker.tcp_addr()));
        f(mode, &rt, &mut conn);
        drop(conn);
        brt.block_on(broker.shutdown());
        drop(broker);
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn schedule_create_cancel(c: &mut Criterion) {
    let mut g = c.benchmark_group("schedule");
    g.measurement_time(Duration::from_secs(3));
    g.sample_size(30);
    with_modes(|mode, rt, conn| {
        let create = schedule::Create {
            entry: Entry {
                route: "schedule://bench/a/job/run".into(),
                cron: "*/5 * * * 1-5".into(),
                mode: DeliveryMode::Single,
                payload: Bytes::from_static(b"0123456789abcdef"),
            },
        };
        let cancel = schedule::Cancel::new("schedule://bench/a/job/run");
        g.bench_function(format!("create_cancel/{mode}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        assert_eq!(&conn.call(&create).await[..], &[0]);
                        assert_eq!(&conn.call(&cancel).await[..], &[0]);
                    }
                    started.elapsed()
                })
            });
        });
    });
    g.finish();
}

async fn kv_commit(conn: &mut Raw, durability: Durability) {
    let route: fitz_protocol::Str = "kv://bench/area/res".into();
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
        key: Bytes::from_static(b"key"),
        value: Bytes::from_static(b"value-0123456789"),
    };
    assert_eq!(conn.call(&put).await[0], 0);
    let commit = kv::Commit {
        tx_id,
        route,
        durability,
    };
    assert_eq!(conn.call(&commit).await[0], 0);
}

fn kv_commits(c: &mut Criterion) {
    let mut g = c.benchmark_group("kv_commit");
    g.measurement_time(Duration::from_secs(3));
    g.sample_size(30);
    with_modes(|mode, rt, conn| {
        for (name, durability) in [
            ("sync", Durability::Sync),
            ("buffered", Durability::Buffered),
        ] {
            g.bench_function(format!("{name}_{mode}"), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let started = Instant::now();
                        for _ in 0..iters {
                            kv_commit(conn, durability).await;
                        }
                        started.elapsed()
                    })
                });
            });
        }
    });
    g.finish();
}

criterion_group!(benches, schedule_create_cancel, kv_commits);
criterion_main!(benches);
