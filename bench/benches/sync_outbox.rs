//! The offline-first outbox (`fitz::sync`): what one `push` costs, the
//! entry made durable before it returns. The client is never connected, so
//! nothing is flushed and only the local store is measured.
//!
//! | group | function | what |
//! |---|---|---|
//! | `sync_push` | `redb` | one KV put entry into a redb file (one write transaction, fsync) |
//! | `sync_push` | `memory` | the same into the memory store (encoding, blocking-pool hop, map insert) |
//!
//! Criterion reports the mean; p50/p99 of push are printed by the same run
//! (1,000 timed pushes per store). Run:
//! `cargo bench -p fitz-bench --bench sync_outbox -- --warm-up-time 1 --measurement-time 3`
//!
//! **Flush throughput** (`sync_flush`, printed, not a criterion group): the
//! entries/s an outbox flushes against the embedded broker (in-memory
//! storage, its own two-worker runtime, loopback TCP). Per measurement a
//! fresh store and a client that is not connected yet get N entries pushed
//! (untimed); the clock runs from `connect` until nothing is pending. The
//! shapes — one KV lane, four KV lanes, one stream lane, four stream lanes
//! — each on `RedbStore` and `MemoryStore`, are measured in interleaved
//! rounds (A B C … A B C …) and reported as median, min and max entries/s.
//! A KV entry is one put (its flush: BEGIN, marker GET, PUT, marker PUT,
//! COMMIT, then the local dequeue); a stream entry is one 16-byte record
//! (metadata and a read at its expected offset on the first attempt, BEGIN
//! at that offset, APPEND, COMMIT, dequeue). `FITZ_FLUSH_ROUNDS` (default
//! 7) and `FITZ_FLUSH_ENTRIES` (default 400) change the size. Only the
//! flush: `cargo bench -p fitz-bench --bench sync_outbox -- sync_flush`

use std::time::{Duration, Instant};

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use fitz::Client;
use fitz::sync::{KvWrite, LocalStore, MemoryStore, Mutation, Outbox, RedbStore, StreamAppend};

const ROUTE: &str = "kv://bench/sync/outbox";

fn outbox(rt: &tokio::runtime::Runtime, store: impl LocalStore) -> Outbox {
    rt.block_on(async {
        // Never connected: the port is not listened on and nobody connects.
        let client = Client::anonymous("tcp://127.0.0.1:1").expect("valid url");
        Outbox::builder(client, store)
            .max_pending(usize::MAX)
            .open()
            .await
            .expect("the outbox opens")
    })
}

fn mutation() -> Mutation {
    Mutation::Writes(vec![KvWrite::put("key", "0123456789abcdef")])
}

fn percentiles(rt: &tokio::runtime::Runtime, outbox: &Outbox, name: &str) {
    let mut samples: Vec<Duration> = rt.block_on(async {
        let mut v = Vec::with_capacity(1000);
        for _ in 0..1000 {
            let t = Instant::now();
            outbox.push(ROUTE, mutation()).await.expect("push");
            v.push(t.elapsed());
        }
        v
    });
    samples.sort();
    println!(
        "sync_push/{name}: p50 {:?}, p99 {:?} over {} pushes",
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
        samples.len()
    );
}

fn push(c: &mut Criterion) {
    if !fitz_bench::selected("sync_push", &["redb", "memory"]) {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("fitz-bench-sync-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let redb = outbox(
        &rt,
        RedbStore::open(dir.join("outbox.redb")).expect("store"),
    );
    let memory = outbox(&rt, MemoryStore::new());
    percentiles(&rt, &redb, "redb");
    percentiles(&rt, &memory, "memory");

    let mut group = c.benchmark_group("sync_push");
    group.bench_function("redb", |b| {
        b.to_async(&rt)
            .iter(|| async { redb.push(ROUTE, mutation()).await.expect("push") })
    });
    group.bench_function("memory", |b| {
        b.to_async(&rt)
            .iter(|| async { memory.push(ROUTE, mutation()).await.expect("push") })
    });
    group.finish();
    rt.block_on(async {
        redb.close().await;
        memory.close().await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// A flush benchmark shape: how many lanes, of which kind.
#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    lanes: usize,
    stream: bool,
}

const SHAPES: [Shape; 4] = [
    Shape {
        name: "kv_1lane",
        lanes: 1,
        stream: false,
    },
    Shape {
        name: "kv_4lanes",
        lanes: 4,
        stream: false,
    },
    Shape {
        name: "stream_1lane",
        lanes: 1,
        stream: true,
    },
    Shape {
        name: "stream_4lanes",
        lanes: 4,
        stream: true,
    },
];

/// Pushes `n` entries of `shape` into a fresh outbox on `store` while its
/// client is not connected, then times connect + flush until idle.
async fn flush_once(
    url: &str,
    store: Arc<dyn LocalStore>,
    shape: Shape,
    n: usize,
    tag: usize,
) -> Duration {
    let client = Client::builder(url, fitz::StaticToken::anonymous())
        .max_in_flight(4096)
        .request_timeout(Duration::from_secs(30))
        .build()
        .expect("client builds");
    let outbox = Outbox::builder_shared(client.clone(), store)
        .max_pending(usize::MAX)
        .open()
        .await
        .expect("the outbox opens");
    let kind = if shape.stream { "stream" } else { "kv" };
    let lanes: Vec<String> = (0..shape.lanes)
        .map(|l| format!("{kind}://bench/flush-{}-{tag}/l{l}", shape.name))
        .collect();
    for i in 0..n {
        let lane = &lanes[i % lanes.len()];
        let m = if shape.stream {
            Mutation::Append(vec![StreamAppend::new("0123456789abcdef")])
        } else {
            Mutation::Writes(vec![KvWrite::put(format!("k{i}"), "0123456789abcdef")])
        };
        outbox.push(lane, m).await.expect("push");
    }
    let started = Instant::now();
    client.connect().await.expect("connects");
    outbox.wait_idle().await;
    let took = started.elapsed();
    assert!(
        outbox
            .dead_letters()
            .await
            .expect("dead letters")
            .is_empty(),
        "nothing dead-lettered"
    );
    outbox.close().await;
    client.close().await;
    took
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Interleaved rounds of every (shape, store); prints median/min/max
/// entries/s. Not a criterion group (see the module docs).
fn flush(_c: &mut Criterion) {
    let ids: Vec<String> = SHAPES
        .iter()
        .flat_map(|s| [format!("{}/redb", s.name), format!("{}/memory", s.name)])
        .collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    if !fitz_bench::selected("sync_flush", &id_refs) {
        return;
    }
    let rounds = env_usize("FITZ_FLUSH_ROUNDS", 7).max(1);
    let n = env_usize("FITZ_FLUSH_ENTRIES", 400).max(1);
    let env = fitz_bench::Env::start();
    let url = env.broker.tcp_url();
    let dir = std::env::temp_dir().join(format!("fitz-bench-flush-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // rates[shape][store] = entries/s per round.
    let mut rates = vec![[Vec::new(), Vec::new()]; SHAPES.len()];
    let mut tag = 0;
    for _ in 0..rounds {
        for (si, shape) in SHAPES.iter().enumerate() {
            for (ki, rate) in rates[si].iter_mut().enumerate() {
                tag += 1;
                let store: Arc<dyn LocalStore> = if ki == 0 {
                    Arc::new(RedbStore::open(dir.join(format!("s{tag}.redb"))).expect("store"))
                } else {
                    Arc::new(MemoryStore::new())
                };
                let took = env.rt.block_on(flush_once(&url, store, *shape, n, tag));
                rate.push(n as f64 / took.as_secs_f64());
            }
        }
    }
    for (si, shape) in SHAPES.iter().enumerate() {
        for (ki, store) in ["redb", "memory"].iter().enumerate() {
            let v = &mut rates[si][ki];
            v.sort_by(f64::total_cmp);
            println!(
                "sync_flush/{}/{store}: median {:.0} entries/s (min {:.0}, max {:.0}) over {rounds} interleaved rounds of {n} entries",
                shape.name,
                v[v.len() / 2],
                v[0],
                v[v.len() - 1],
            );
        }
    }
    env.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, push, flush);
criterion_main!(benches);
