//! KV write probe: `LANES` lanes, each on its own resource, each running
//! BEGIN(ReadWrite) + PUT + COMMIT(Buffered) back to back against the
//! embedded broker over loopback TCP (the `versus` `kv_put_256` row's
//! client side, without the competitor).
//!
//! `cargo run --release -p fitz-bench --example kv_probe -- LANES TXS [one]`
//! (defaults 256, 20,000; `one`: the one-key write `Kv::put`, which sends
//! the PUT and the COMMIT together). Profile with callgrind: instructions per
//! transaction = (Ir(2N) − Ir(N)) ÷ N, every thread (client and broker).
use fitz::kv::{Durability, TxMode};
use fitz_bench::{Env, Transport};
use futures_util::future::join_all;
use std::time::{Duration, Instant};

fn main() {
    let env = Env::start();
    let arg = |i: usize, default: u64| -> u64 {
        std::env::args()
            .nth(i)
            .map(|s| s.parse().expect("a number"))
            .unwrap_or(default)
    };
    let lanes = arg(1, 256) as usize;
    let txs = arg(2, 20_000);
    let per = txs.div_ceil(lanes as u64);
    let one = std::env::args().nth(3).as_deref() == Some("one");
    let client = env.ours(Transport::Tcp);
    let kv = client.kv();
    let routes: Vec<String> = (0..lanes)
        .map(|i| format!("kv://bench/probe/r{i}"))
        .collect();
    let value = bytes::Bytes::from_static(b"value-0123456789");
    let (ok, elapsed) = env.rt.block_on(async {
        let started = Instant::now();
        let all = join_all(routes.iter().map(|route| {
            let (kv, value) = (&kv, value.clone());
            async move {
                for _ in 0..per {
                    if one {
                        kv.put(route, b"key", value.clone(), Durability::Buffered)
                            .await?;
                        continue;
                    }
                    let mut tx = kv.begin(route, TxMode::ReadWrite).await?;
                    tx.put(b"key", value.clone()).await?;
                    tx.commit(Durability::Buffered).await?;
                }
                Ok::<(), fitz::Error>(())
            }
        }));
        let res = tokio::time::timeout(Duration::from_secs(10 + txs / 5_000), all).await;
        let ok = matches!(&res, Ok(v) if v.iter().all(Result::is_ok));
        (ok, started.elapsed())
    });
    let n = per * lanes as u64;
    println!(
        "lanes {lanes}: ok={ok} {n} transactions in {elapsed:?} ({:.0} tx/s)",
        n as f64 / elapsed.as_secs_f64()
    );
}
