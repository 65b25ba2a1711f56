//! The lease inventory observer's bootstrap (`Leases::observe` until
//! `Observer::ready`) over 10,000 held leases on the embedded broker,
//! loopback TCP: one SUBSCRIBE round trip plus a 20-page LIST of 500 leases
//! each, decoded, sorted and installed.
//!
//! `cargo bench -p fitz-bench --bench lease_observer`

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fitz::Client;
use fitz::lease::ObserveOptions;
use fitz_bench::{broker_runtime, client_runtime};
use fitz_broker::Broker;
use futures_util::{StreamExt, stream};

const LEASES: usize = 10_000;

fn observer_bootstrap(c: &mut Criterion) {
    let rt = client_runtime();
    let brt = broker_runtime();
    let broker = brt.block_on(Broker::builder().start()).unwrap();
    let url = broker.tcp_url();
    let (holder, held) = rt.block_on(async {
        let holder = Client::anonymous(&url).unwrap();
        holder.connect().await.unwrap();
        let leases = holder.lease();
        // Acquired 256 at a time; held (not dropped) for the whole run.
        let held: Vec<_> = stream::iter(0..LEASES)
            .map(|n| {
                let leases = leases.clone();
                async move {
                    leases
                        .acquire(
                            &format!("lease://bench/fleet/r{n:05}"),
                            "holder",
                            Duration::from_secs(3600),
                        )
                        .await
                        .unwrap()
                }
            })
            .buffer_unordered(256)
            .collect()
            .await;
        (holder, held)
    });
    let watcher = rt.block_on(async {
        let c = Client::anonymous(&url).unwrap();
        c.connect().await.unwrap();
        c
    });
    let mut g = c.benchmark_group("lease_observer");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(LEASES as u64));
    g.bench_function("bootstrap_10k", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let obs = watcher
                        .lease()
                        .observe("lease://bench/fleet/*", ObserveOptions::default())
                        .unwrap();
                    let view = obs.ready().await.unwrap();
                    total += started.elapsed();
                    assert_eq!(view.len(), LEASES);
                    drop(obs);
                }
                total
            })
        });
    });
    g.finish();
    rt.block_on(async {
        drop(held);
        watcher.close().await;
        holder.close().await;
    });
    brt.block_on(broker.shutdown());
}

criterion_group!(benches, observer_bootstrap);
criterion_main!(benches);
