//! Feeds (`fitz::sync::Feed`) against a raw `follow` of the same stream, on
//! the embedded broker over loopback TCP.
//!
//! | group | function | what |
//! |---|---|---|
//! | `sync_feed_catch_up` | `raw_follow` | `Streams::follow` from 0 until 2,000 records were yielded |
//! | `sync_feed_catch_up` | `feed_memory` | a fresh `Feed` (`MemoryStore`) catching up the same 2,000 records, the handler writing one app key per record |
//! | `sync_feed_catch_up` | `feed_redb` | the same on a `RedbStore` (one write transaction + fsync per page of 256) |
//!
//! Latency (printed by the same run, not criterion): a raw follow, a memory
//! feed and a redb feed all follow one stream while 300 records are
//! committed one by one; for each record, the time from just before its
//! COMMIT to each consumer seeing it (the handler running, for the feeds;
//! the local batch is applied after it). p50 / p99 per consumer, paired per
//! record. Run:
//! `cargo bench -p fitz-bench --bench sync_feed -- --warm-up-time 1 --measurement-time 5`

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fitz::Client;
use fitz::stream::{AppendOptions, Durability, ReadOptions};
use fitz::sync::{Feed, FeedError, LocalStore, MemoryStore, RedbStore, StoreOp, Table};
use fitz_bench::{broker_runtime, client_runtime};
use fitz_broker::Broker;
use futures_util::StreamExt;
use tokio::sync::mpsc;

const RECORDS: u64 = 2_000;
const LATENCY_SAMPLES: usize = 300;
const ROUTE: &str = "stream://bench/feed/catch-up";
const LIVE: &str = "stream://bench/feed/live";

async fn fill(client: &Client) {
    let body = br#"{"n":1234567,"note":"a small JSON body"}"#;
    let mut done = 0;
    while done < RECORDS {
        let mut s = client.stream().begin(ROUTE).await.unwrap();
        for _ in 0..(RECORDS - done).min(1_000) {
            s.append_with(&body[..], AppendOptions::new().discriminator("n"))
                .await
                .unwrap();
            done += 1;
        }
        s.commit(Durability::Sync).await.unwrap();
    }
}

type Body = serde_json::Value;

async fn catch_up(client: &Client, store: std::sync::Arc<dyn LocalStore>) {
    // The same feed name each time, its cursor removed first: a fresh feed.
    store
        .apply(&[StoreOp::Delete {
            table: Table::FeedCursor,
            key: b"bench".to_vec(),
        }])
        .unwrap();
    let mut feed = Feed::<Body>::builder_shared(client.clone(), store, "bench", ROUTE)
        .open()
        .await
        .unwrap();
    feed.catch_up(|tx, env| {
        Box::pin(async move {
            tx.put("last", "offset", env.offset.to_be_bytes())?;
            Ok(())
        })
    })
    .await
    .unwrap();
    assert_eq!(feed.cursor(), RECORDS);
}

async fn raw_follow(client: &Client) {
    let mut reader = client
        .stream()
        .follow(ROUTE, 0, ReadOptions::new())
        .await
        .unwrap();
    let mut n = 0;
    while n < RECORDS {
        reader.next().await.unwrap().unwrap();
        n += 1;
    }
}

fn percentiles(name: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "sync_feed_latency/{name}: p50 {:?}, p99 {:?}, max {:?} over {} records",
        v[v.len() / 2],
        v[v.len() * 99 / 100],
        v[v.len() - 1],
        v.len()
    );
}

/// Follows `LIVE` with a feed on `store`, sending (offset, seen at).
fn spawn_feed(
    client: &Client,
    store: std::sync::Arc<dyn LocalStore>,
    tx: mpsc::UnboundedSender<(u64, Instant)>,
) {
    let client = client.clone();
    tokio::spawn(async move {
        let mut feed = Feed::<Body>::builder_shared(client, store, "live", LIVE)
            .open()
            .await
            .unwrap();
        let r = feed
            .run(move |t, env| {
                let at = Instant::now();
                let sent = tx.send((env.offset, at));
                Box::pin(async move {
                    t.put("last", "offset", env.offset.to_be_bytes())?;
                    sent.map_err(|_| FeedError::Handler("bench over".into()))
                })
            })
            .await;
        drop(r);
    });
}

fn latency(rt: &tokio::runtime::Runtime, client: &Client, redb: std::sync::Arc<dyn LocalStore>) {
    rt.block_on(async {
        let (raw_tx, mut raw_rx) = mpsc::unbounded_channel();
        let (mem_tx, mut mem_rx) = mpsc::unbounded_channel();
        let (redb_tx, mut redb_rx) = mpsc::unbounded_channel();
        let mut reader = client
            .stream()
            .follow(LIVE, 0, ReadOptions::new())
            .await
            .unwrap();
        tokio::spawn(async move {
            while let Some(Ok(item)) = reader.next().await {
                if let Some(r) = item.as_record()
                    && raw_tx.send((r.offset(), Instant::now())).is_err()
                {
                    return;
                }
            }
        });
        spawn_feed(client, std::sync::Arc::new(MemoryStore::new()), mem_tx);
        spawn_feed(client, redb, redb_tx);
        // Let the three subscribe before the first commit.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (mut raw, mut mem, mut red) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..LATENCY_SAMPLES as u64 {
            let mut s = client.stream().begin(LIVE).await.unwrap();
            s.append(&br#"{"n":1}"#[..]).await.unwrap();
            let t0 = Instant::now();
            s.commit(Durability::Sync).await.unwrap();
            for (rx, out) in [
                (&mut raw_rx, &mut raw),
                (&mut mem_rx, &mut mem),
                (&mut redb_rx, &mut red),
            ] {
                let (offset, at) = rx.recv().await.unwrap();
                assert_eq!(offset, i);
                out.push(at.saturating_duration_since(t0));
            }
        }
        percentiles("raw_follow", raw);
        percentiles("feed_memory", mem);
        percentiles("feed_redb", red);
    });
}

fn feeds(c: &mut Criterion) {
    let rt = client_runtime();
    let brt = broker_runtime();
    let broker = brt.block_on(Broker::builder().start()).unwrap();
    let client = rt.block_on(async {
        let c = Client::anonymous(broker.tcp_url()).unwrap();
        c.connect().await.unwrap();
        fill(&c).await;
        c
    });
    let dir = std::env::temp_dir().join(format!("fitz-bench-feed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let redb: std::sync::Arc<dyn LocalStore> =
        std::sync::Arc::new(RedbStore::open(dir.join("feed.redb")).unwrap());
    let memory: std::sync::Arc<dyn LocalStore> = std::sync::Arc::new(MemoryStore::new());

    latency(&rt, &client, redb.clone());

    let mut g = c.benchmark_group("sync_feed_catch_up");
    g.sample_size(10);
    g.throughput(Throughput::Elements(RECORDS));
    // Interleaved by criterion function, the same stream and broker.
    g.bench_function("raw_follow", |b| {
        b.to_async(&rt).iter(|| raw_follow(&client))
    });
    g.bench_function("feed_memory", |b| {
        b.to_async(&rt).iter(|| catch_up(&client, memory.clone()))
    });
    g.bench_function("feed_redb", |b| {
        b.to_async(&rt).iter(|| catch_up(&client, redb.clone()))
    });
    g.finish();
    rt.block_on(client.close());
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, feeds);
criterion_main!(benches);
