use bytes::Bytes;
use fitz_bench::{Env, Transport, windowed};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let env = Env::start();
    let window: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(256);
    let max: u32 = std::env::args()
        .nth(2)
        .map(|s| s.parse().unwrap())
        .unwrap_or(1024);
    let calls: u64 = std::env::args()
        .nth(3)
        .map(|s| s.parse().unwrap())
        .unwrap_or(20_000);
    // `split`: the worker client on its own current-thread runtime on a
    // second thread, so the caller's client cost is measured alone.
    let split = std::env::args().nth(4).as_deref() == Some("split");
    // `PROBE_TRANSPORT=ws`: both clients over WebSocket.
    let t = match std::env::var("PROBE_TRANSPORT").as_deref() {
        Ok("ws") => Transport::Ws,
        _ => Transport::Tcp,
    };
    let route = "rpc://bench/probe/echo";
    let caller = env.ours(t);
    let (worker, _h, _worker_thread) = if split {
        let thread = fitz_bench::ThreadWorker::start(t.url(&env.broker), route, max);
        (None, None, Some(thread))
    } else {
        let worker = env.ours(t);
        let h = env
            .rt
            .block_on(fitz_bench::ours_echo_worker(&worker, route, max));
        (Some(worker), Some(h), None)
    };
    let rpc = caller.rpc();
    let done = AtomicU64::new(0);
    let r = env.rt.block_on(async {
        let started = Instant::now();
        let res = tokio::time::timeout(
            Duration::from_secs(5 + calls / 10_000),
            windowed(calls, window, |_| async {
                rpc.request(route, Bytes::from_static(b"0123456789abcdef"))
                    .await
                    .unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }),
        )
        .await;
        (res.is_ok(), started.elapsed())
    });
    let n = done.load(Ordering::Relaxed);
    println!(
        "window {window} max {max} split {split}: ok={} done={n} in {:?} ({:.0} calls/s)",
        r.0,
        r.1,
        n as f64 / r.1.as_secs_f64()
    );
    if !r.0 {
        let snap = env.rt.block_on(caller.debug_snapshot());
        println!("caller: {snap:?}");
        if let Some(worker) = &worker {
            let snap = env.rt.block_on(worker.debug_snapshot());
            println!("worker: {snap:?}");
        }
        println!(
            "broker live_calls={} dropped={}",
            env.broker.engines().rpc.live_calls(),
            env.broker.dropped_notifications()
        );
    }
}
