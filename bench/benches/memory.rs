//! The in-memory transport (`fitz::embedded`: a `tokio::io::duplex` pipe the
//! broker serves through `Broker::serve_stream`) against loopback TCP, with
//! our client, against the same embedded broker in the same run (the
//! runtime arrangement of `fitz_bench`: broker on two workers, the client on
//! the bench thread's current-thread runtime).
//!
//! | group | operation | round trips |
//! |---|---|---|
//! | `mem_kv_get` | KV get of a 16 B value in an open read-write tx | 1 |
//! | `mem_rpc_echo` | RPC call with 16 B, a worker on a second client of the same transport echoes it | 2 (two broker hops each way) |
//!
//! Functions are `memory` and `tcp`. Run:
//! `cargo bench -p fitz-bench --bench memory -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use fitz_bench::Env;

const BODY: &[u8] = b"0123456789abcdef";

/// The two transports compared.
#[derive(Clone, Copy)]
enum Via {
    Memory,
    Tcp,
}

impl Via {
    const ALL: [Via; 2] = [Via::Memory, Via::Tcp];

    fn name(self) -> &'static str {
        match self {
            Via::Memory => "memory",
            Via::Tcp => "tcp",
        }
    }

    /// Our client, connected over this transport, with the settings of
    /// `Env::ours`.
    fn client(self, env: &Env) -> fitz::Client {
        env.rt.block_on(async {
            let builder = match self {
                Via::Memory => fitz::embedded::client(&env.broker, fitz::StaticToken::anonymous()),
                Via::Tcp => {
                    fitz::Client::builder(env.broker.tcp_url(), fitz::StaticToken::anonymous())
                }
            };
            let c = builder
                .max_in_flight(4096)
                .request_timeout(Duration::from_secs(30))
                .build()
                .expect("client builds");
            c.connect().await.expect("connects");
            c
        })
    }
}

fn kv_get(c: &mut Criterion, env: &Env) {
    let mut g = c.benchmark_group("mem_kv_get");
    for via in Via::ALL {
        let client = via.client(env);
        let route = format!("kv://bench/mem{}/res", via.name());
        let mut tx = env.rt.block_on(async {
            let mut tx = client
                .kv()
                .begin(&route, fitz::kv::TxMode::ReadWrite)
                .await
                .unwrap();
            tx.put(b"key", Bytes::from_static(BODY)).await.unwrap();
            tx
        });
        g.bench_function(via.name(), |b| {
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
        env.rt.block_on(async {
            tx.rollback().await.unwrap();
            client.close().await;
        });
    }
    g.finish();
}

fn rpc_echo(c: &mut Criterion, env: &Env) {
    let mut g = c.benchmark_group("mem_rpc_echo");
    for via in Via::ALL {
        let caller = via.client(env);
        let server = via.client(env);
        let pattern = format!("rpc://bench/mem{}/*", via.name());
        let route = format!("rpc://bench/mem{}/echo", via.name());
        let worker = env
            .rt
            .block_on(fitz_bench::ours_echo_worker(&server, &pattern, 64));
        let rpc = caller.rpc();
        g.bench_function(via.name(), |b| {
            b.iter_custom(|n| {
                env.time_seq(n, |_| async {
                    black_box(rpc.request(&route, Bytes::from_static(BODY)).await.unwrap());
                })
            })
        });
        env.rt.block_on(async {
            worker.shutdown().await.unwrap();
            caller.close().await;
            server.close().await;
        });
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    let env = Env::start();
    kv_get(c, &env);
    rpc_echo(c, &env);
    env.shutdown();
}

criterion_group! {
    name = memory;
    config = fitz_bench::criterion_config();
    targets = benches
}
criterion_main!(memory);
