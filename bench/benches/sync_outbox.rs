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

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use fitz::Client;
use fitz::sync::{KvWrite, LocalStore, MemoryStore, Mutation, Outbox, RedbStore};

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

criterion_group!(benches, push);
criterion_main!(benches);
