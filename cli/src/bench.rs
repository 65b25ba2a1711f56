//! `fitz bench <domain>`: a load generator in the spirit of `nats bench`.
//!
//! `--clients` connections each run `--depth` operations at once (one task
//! per slot, so at most `clients × depth` are in flight) until `--count`
//! operations have been issued or `--duration` has passed. Each operation's
//! latency (call to reply) goes into an HDR histogram per task, merged at
//! the end; the report is throughput and p50/p90/p99/p99.9/max.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fitz::kv::{Durability, TxMode};
use fitz::rpc::HandlerError;
use fitz::{Client, Overflow, SubscriptionOptions};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::cli::{BenchArgs, BenchCmd, Global};
use crate::conn;
use crate::failure::Failure;
use crate::out::Out;

/// Highest latency the histograms track (longer ones are clamped): 60 s.
const MAX_LATENCY_US: u64 = 60_000_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Domain {
    Notice,
    Rpc,
    Kv,
    Queue,
}

impl Domain {
    fn name(self) -> &'static str {
        match self {
            Self::Notice => "notice",
            Self::Rpc => "rpc",
            Self::Kv => "kv",
            Self::Queue => "queue",
        }
    }
}

/// When to stop issuing operations.
#[derive(Clone, Copy)]
enum Until {
    Count(u64),
    Deadline(Instant),
}

/// What one load task needs.
#[derive(Clone)]
struct Load {
    domain: Domain,
    route: String,
    body: Bytes,
    until: Until,
    issued: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    progress: ProgressBar,
}

impl Load {
    fn claim(&self) -> bool {
        match self.until {
            Until::Count(n) => self.issued.fetch_add(1, Ordering::Relaxed) < n,
            Until::Deadline(d) => {
                self.issued.fetch_add(1, Ordering::Relaxed);
                Instant::now() < d
            }
        }
    }
}

fn new_histogram() -> Result<Histogram<u64>, Failure> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .map_err(|e| Failure::domain(format!("histogram: {e}")))
}

async fn op(client: &Client, load: &Load, task: usize, seq: u64) -> fitz::Result<()> {
    match load.domain {
        Domain::Notice => {
            client
                .notice()
                .publish(&load.route, load.body.clone())
                .await
        }
        Domain::Queue => client
            .queue()
            .enqueue(&load.route, load.body.clone())
            .await
            .map(drop),
        Domain::Rpc => client
            .rpc()
            .request(&load.route, load.body.clone())
            .await
            .map(drop),
        Domain::Kv => {
            // One resource per task: a read-write transaction locks its
            // resource, so tasks sharing one would only measure the lock.
            let route = format!("{}-{task}", load.route);
            let mut tx = client.kv().begin(&route, TxMode::ReadWrite).await?;
            tx.put(format!("k{}", seq % 1024), load.body.clone())
                .await?;
            tx.commit(Durability::Buffered).await
        }
    }
}

async fn task(client: Client, load: Load, task: usize) -> Result<Histogram<u64>, Failure> {
    let mut hist = new_histogram()?;
    let mut seq = 0u64;
    while load.claim() {
        let start = Instant::now();
        let result = op(&client, &load, task, seq).await;
        seq += 1;
        match result {
            Ok(()) => {
                let us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
                hist.saturating_record(us.clamp(1, MAX_LATENCY_US));
            }
            Err(e) => {
                if load.errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    load.progress
                        .println(format!("fitz bench: first error: {e}"));
                }
                if !e.is_retryable() && e.kind() != fitz::ErrorKind::Timeout {
                    return Err(e.into());
                }
            }
        }
        if let Until::Count(_) = load.until {
            load.progress.inc(1);
        }
    }
    Ok(hist)
}

/// Runs one benchmark and prints its report.
pub async fn run(g: &Global, cmd: BenchCmd, out: Out) -> Result<(), Failure> {
    let (domain, args) = match cmd {
        BenchCmd::Notice(a) => (Domain::Notice, a),
        BenchCmd::Rpc(a) => (Domain::Rpc, a),
        BenchCmd::Kv(a) => (Domain::Kv, a),
        BenchCmd::Queue(a) => (Domain::Queue, a),
    };
    bench(g, domain, args, out).await
}

async fn bench(g: &Global, domain: Domain, args: BenchArgs, out: Out) -> Result<(), Failure> {
    if args.clients == 0 || args.depth == 0 {
        return Err(Failure::usage("--clients and --depth must be at least 1"));
    }
    let route = args.route.clone().unwrap_or_else(|| {
        format!(
            "{}://bench/fitz-cli/run-{}",
            domain.name(),
            std::process::id()
        )
    });
    let mut clients = Vec::new();
    for _ in 0..args.clients {
        clients.push(conn::connect(g).await?);
    }
    let result = drive(g, domain, &args, route, &clients, out).await;
    for c in &clients {
        c.close().await;
    }
    result
}

async fn drive(
    g: &Global,
    domain: Domain,
    args: &BenchArgs,
    route: String,
    clients: &[Client],
    out: Out,
) -> Result<(), Failure> {
    // The other side: an echo worker for RPC, a counting subscriber for
    // notices, each on a connection of its own.
    let helper = match domain {
        Domain::Rpc | Domain::Notice => Some(conn::connect(g).await?),
        _ => None,
    };
    let delivered = Arc::new(AtomicU64::new(0));
    let mut worker = None;
    let mut counter = None;
    if let Some(h) = &helper {
        if domain == Domain::Rpc {
            let slots = args.clients.saturating_mul(args.depth).max(1);
            worker = Some(
                h.rpc()
                    .serve(&route, slots, |req| async move {
                        Ok::<Bytes, HandlerError>(req.body().clone())
                    })
                    .await?,
            );
        } else {
            // Counting only: a large buffer, and drops (visible as
            // `delivered` < `ops`) rather than an error under a burst.
            let opts = SubscriptionOptions {
                buffer: 1 << 16,
                overflow: Overflow::DropOldest,
            };
            let mut sub = h.notice().subscribe_with(&route, opts).await?;
            let d = delivered.clone();
            counter = Some(tokio::spawn(async move {
                while let Some(Ok(_)) = sub.next().await {
                    d.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }

    let until = match args.duration {
        Some(d) => Until::Deadline(Instant::now() + d),
        None => Until::Count(args.count),
    };
    let progress = if out.json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let len = match until {
            Until::Count(n) => n,
            Until::Deadline(_) => args
                .duration
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        };
        let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        let template = match until {
            Until::Count(_) => "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} ops {per_sec}",
            Until::Deadline(_) => "{spinner} [{elapsed_precise}] {wide_bar} {msg}",
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            pb.set_style(style);
        }
        pb
    };
    let load = Load {
        domain,
        route: route.clone(),
        body: Bytes::from(vec![b'x'; args.size]),
        until,
        issued: Arc::new(AtomicU64::new(0)),
        errors: Arc::new(AtomicU64::new(0)),
        progress: progress.clone(),
    };
    let started = Instant::now();
    let ticker = match until {
        Until::Deadline(_) => {
            let pb = progress.clone();
            let issued = load.issued.clone();
            Some(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    pb.set_position(
                        u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    );
                    pb.set_message(format!("{} ops", issued.load(Ordering::Relaxed)));
                }
            }))
        }
        Until::Count(_) => None,
    };
    let mut tasks = Vec::new();
    for (ci, client) in clients.iter().enumerate() {
        for slot in 0..args.depth as usize {
            let id = ci * args.depth as usize + slot;
            tasks.push(tokio::spawn(task(client.clone(), load.clone(), id)));
        }
    }
    let mut hist = new_histogram()?;
    let mut failure = None;
    for t in tasks {
        match t.await {
            Ok(Ok(h)) => {
                let _ = hist.add(&h);
            }
            Ok(Err(f)) => failure = Some(f),
            Err(e) => failure = Some(Failure::domain(format!("bench task failed: {e}"))),
        }
    }
    let elapsed = started.elapsed();
    if let Some(t) = ticker {
        t.abort();
    }
    progress.finish_and_clear();
    if let Some(f) = failure {
        return Err(f);
    }
    let ok = hist.len();
    // Give the subscriber a moment to receive what is still in flight.
    if domain == Domain::Notice {
        let grace = Instant::now() + Duration::from_secs(2);
        while delivered.load(Ordering::Relaxed) < ok && Instant::now() < grace {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    if let Some(w) = worker {
        let _ = w.shutdown().await;
    }
    if let Some(c) = counter {
        c.abort();
    }
    if let Some(h) = helper {
        h.close().await;
    }
    report(
        domain,
        args,
        &route,
        &hist,
        elapsed,
        load.errors.load(Ordering::Relaxed),
        delivered.load(Ordering::Relaxed),
        out,
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)] // reason: one flat report of one run
fn report(
    domain: Domain,
    args: &BenchArgs,
    route: &str,
    hist: &Histogram<u64>,
    elapsed: Duration,
    errors: u64,
    delivered: u64,
    out: Out,
) {
    let ok = hist.len();
    let secs = elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    let rate = ok as f64 / secs;
    let mb = rate * args.size as f64 / 1_000_000.0;
    let q = |p: f64| hist.value_at_quantile(p);
    if out.json {
        let mut j = json!({
            "bench": domain.name(), "route": route, "clients": args.clients, "depth": args.depth,
            "size": args.size, "ops": ok, "errors": errors, "elapsed_secs": secs,
            "ops_per_sec": rate, "mb_per_sec": mb,
            "latency_us": {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p999": q(0.999),
                           "max": hist.max(), "mean": hist.mean()},
        });
        if domain == Domain::Notice {
            j["delivered"] = json!(delivered);
        }
        println!("{j}");
        return;
    }
    println!(
        "{} bench: {ok} ops in {secs:.2}s, {} clients x {} in flight, {} B bodies",
        domain.name(),
        args.clients,
        args.depth,
        args.size
    );
    println!("throughput: {rate:.0} ops/s ({mb:.2} MB/s), errors: {errors}");
    if domain == Domain::Notice {
        println!("delivered to the subscriber: {delivered}");
    }
    let us = |v: u64| format!("{:.1} us", v as f64);
    println!(
        "latency: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        us(q(0.5)),
        us(q(0.9)),
        us(q(0.99)),
        us(q(0.999)),
        us(hist.max())
    );
}
