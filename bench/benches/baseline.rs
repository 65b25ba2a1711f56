//! The wire's limit on this machine, measured in the same arrangement as the
//! end-to-end scenarios (server on a two-worker runtime, client on a
//! current-thread runtime, loopback, `TCP_NODELAY`):
//!
//! * `raw_pingpong/{tcp,ws}_{32,1024}`: one message of 32 B or 1 KiB to an
//!   echo server and back, one in flight (a plain tokio TCP echo; a
//!   tokio-tungstenite binary-message echo);
//! * `raw_pipelined/{tcp,ws}_32`: 20,000 echoes of 32 B with 256 in flight
//!   (messages per second through a raw echo).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use fitz_bench::{broker_runtime, client_runtime, raw};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

const SIZES: [usize; 2] = [32, 1024];
const PIPELINED: u64 = 20_000;
const WINDOW: usize = 256;

fn pingpong(c: &mut Criterion) {
    let brt = broker_runtime();
    let rt = client_runtime();
    let tcp = raw::tcp_echo_server(&brt);
    let ws = raw::ws_echo_server(&brt);
    let mut g = c.benchmark_group("raw_pingpong");
    for size in SIZES {
        let payload = vec![7u8; size];
        let mut back = vec![0u8; size];
        let mut s = rt.block_on(raw::tcp_client(tcp));
        g.bench_function(format!("tcp_{size}"), |b| {
            b.iter_custom(|n| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..n {
                        raw::tcp_ping(&mut s, &payload, &mut back).await;
                    }
                    started.elapsed()
                })
            })
        });
        let payload = Bytes::from(payload);
        let mut w = rt.block_on(raw::ws_client(ws));
        g.bench_function(format!("ws_{size}"), |b| {
            b.iter_custom(|n| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..n {
                        raw::ws_ping(&mut w, &payload).await;
                    }
                    started.elapsed()
                })
            })
        });
    }
    g.finish();
}

fn pipelined(c: &mut Criterion) {
    let brt = broker_runtime();
    let rt = client_runtime();
    let tcp = raw::tcp_echo_server(&brt);
    let ws = raw::ws_echo_server(&brt);
    let mut g = c.benchmark_group("raw_pipelined");
    g.throughput(Throughput::Elements(PIPELINED));
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    let payload = [7u8; 32];
    g.bench_function("tcp_32", |b| {
        b.iter_custom(|n| {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                total += rt.block_on(async {
                    let s = raw::tcp_client(tcp).await;
                    let (mut r, mut w) = s.into_split();
                    let window = Arc::new(Semaphore::new(WINDOW));
                    let started = Instant::now();
                    let win = window.clone();
                    let writer = tokio::spawn(async move {
                        // Writes every message the window allows at once.
                        let batch = payload.repeat(WINDOW);
                        let mut sent = 0u64;
                        while sent < PIPELINED {
                            win.acquire().await.unwrap().forget();
                            let mut k = 1u64;
                            while sent + k < PIPELINED
                                && let Ok(p) = win.try_acquire()
                            {
                                p.forget();
                                k += 1;
                            }
                            w.write_all(&batch[..k as usize * payload.len()])
                                .await
                                .unwrap();
                            sent += k;
                        }
                        w
                    });
                    let mut buf = vec![0u8; 64 * 1024];
                    let (mut got, want) = (0usize, PIPELINED as usize * payload.len());
                    while got < want {
                        let k = r.read(&mut buf).await.unwrap();
                        let before = got / payload.len();
                        got += k;
                        window.add_permits(got / payload.len() - before);
                    }
                    let elapsed = started.elapsed();
                    drop(writer.await.unwrap());
                    elapsed
                });
            }
            total
        })
    });
    let payload = Bytes::from_static(&[7u8; 32]);
    g.bench_function("ws_32", |b| {
        b.iter_custom(|n| {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                let payload = payload.clone();
                total += rt.block_on(async move {
                    let (mut tx, mut rx) = raw::ws_client(ws).await.split();
                    let window = Arc::new(Semaphore::new(WINDOW));
                    let started = Instant::now();
                    let win = window.clone();
                    let writer = tokio::spawn(async move {
                        for _ in 0..PIPELINED {
                            win.acquire().await.unwrap().forget();
                            // Flushes only when nothing more is ready: the
                            // sink batches like a pipelining client would.
                            tx.feed(Message::Binary(payload.clone())).await.unwrap();
                            if win.available_permits() == 0 {
                                tx.flush().await.unwrap();
                            }
                        }
                        tx.flush().await.unwrap();
                        tx
                    });
                    let mut got = 0u64;
                    while got < PIPELINED {
                        if rx.next().await.unwrap().unwrap().is_binary() {
                            got += 1;
                            window.add_permits(1);
                        }
                    }
                    let elapsed = started.elapsed();
                    let _ = writer.await.unwrap().close().await;
                    elapsed
                });
            }
            total
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = fitz_bench::criterion_config();
    targets = pingpong, pipelined
}
criterion_main!(benches);
