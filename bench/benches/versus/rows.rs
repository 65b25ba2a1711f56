//! The rows of the comparison and how each side measures one: our client
//! against our broker, the competitor's own Rust client against its
//! server, the official client against our broker, and the raw echo.
//!
//! Every measurement connects its clients, runs a warm-up of a fifth of the
//! window, then the window, and closes them: set-up is never timed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fitz_bench::{Transport, ours_echo_worker};
use futures_util::future::join_all;

use crate::measure::{Op, err, p50, rate, stream};

/// The body of RPC calls and KV values.
pub const BODY: &[u8] = b"0123456789abcdef";
/// Operations in flight in the "256 in flight" rows.
pub const WINDOW: usize = 256;
/// Published and not yet received, for clients whose subscription buffer
/// is set to [`SUB_BUFFER`] (ours, `async-nats`): the publisher never
/// overruns the subscriber, so neither side drops.
pub const STREAM_WINDOW: usize = 4096;
/// Our client's subscription buffer in the pub/sub rows.
pub const SUB_BUFFER: usize = 8192;
/// The official client buffers 64 notifications per subscription.
pub const OFFICIAL_STREAM_WINDOW: usize = 48;
/// Publishes awaiting their acknowledgement at once (ours, official; NATS
/// core publishes are not acknowledged).
pub const PUBLISHING: usize = 256;

/// What a row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One publisher → one subscriber, payload bytes; msg/s.
    PubSub(usize),
    /// Request/reply, one in flight; p50 µs.
    RpcP50,
    /// Request/reply, 256 in flight; calls/s.
    Rpc256,
    /// KV read (get in an open read-only tx vs GET), one in flight; p50 µs.
    KvGetP50,
    /// KV read, 256 in flight; ops/s.
    KvGet256,
    /// KV write (`Kv::put`: BEGIN, then PUT + COMMIT together, vs SET), 256
    /// in flight; ops/s.
    KvPut256,
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    /// Stable id (JSON, summary).
    pub id: &'static str,
    /// What the report calls it.
    pub title: &'static str,
    /// What it measures.
    pub kind: Kind,
    /// TCP or WebSocket (for every side that has it).
    pub transport: Transport,
}

impl Row {
    /// `msg/s`, `calls/s`, `ops/s` or `us`.
    pub fn unit(&self) -> &'static str {
        match self.kind {
            Kind::PubSub(_) => "msg/s",
            Kind::Rpc256 => "calls/s",
            Kind::KvGet256 | Kind::KvPut256 => "ops/s",
            Kind::RpcP50 | Kind::KvGetP50 => "us",
        }
    }

    /// Whether a larger value is better (rates) or smaller (latencies).
    pub fn higher_is_better(&self) -> bool {
        self.unit() != "us"
    }

    /// The competitor of this row.
    pub fn competitor(&self) -> &'static str {
        match self.kind {
            Kind::PubSub(_) | Kind::RpcP50 | Kind::Rpc256 => "NATS",
            Kind::KvGetP50 | Kind::KvGet256 | Kind::KvPut256 => "Redis",
        }
    }

    /// Why the official client is not measured here, if it is not.
    pub fn official_skipped(&self) -> Option<&'static str> {
        match (self.kind, self.transport) {
            (Kind::Rpc256, _) => Some(
                "the official client's RPC responses share one 64-slot channel: more than 64 \
                 calls in flight fail with Backpressure",
            ),
            (Kind::KvGet256 | Kind::KvPut256, Transport::Tcp) => Some(
                "over TCP the official client leaves Nagle's algorithm on (~40 ms per round \
                 trip): 256 transactions in flight hit its 30 s request timeout",
            ),
            _ => None,
        }
    }
}

const fn row(id: &'static str, title: &'static str, kind: Kind, transport: Transport) -> Row {
    Row {
        id,
        title,
        kind,
        transport,
    }
}

/// Every row, in report order. The KV rows have no WebSocket variant:
/// Redis has no WebSocket listener.
pub const ROWS: [Row; 11] = [
    row(
        "pubsub_32",
        "pub/sub 32 B, one publisher → one subscriber",
        Kind::PubSub(32),
        Transport::Tcp,
    ),
    row(
        "pubsub_1024",
        "pub/sub 1 KiB, one publisher → one subscriber",
        Kind::PubSub(1024),
        Transport::Tcp,
    ),
    row(
        "rpc_p50",
        "request/reply p50, one in flight",
        Kind::RpcP50,
        Transport::Tcp,
    ),
    row(
        "rpc_256",
        "request/reply, 256 in flight",
        Kind::Rpc256,
        Transport::Tcp,
    ),
    row(
        "kv_get_p50",
        "KV read p50 (get in an open read-only tx vs GET)",
        Kind::KvGetP50,
        Transport::Tcp,
    ),
    row(
        "kv_get_256",
        "KV read, 256 in flight",
        Kind::KvGet256,
        Transport::Tcp,
    ),
    row(
        "kv_put_256",
        "KV write, 256 in flight (one-key write: begin, then put+commit together, vs SET)",
        Kind::KvPut256,
        Transport::Tcp,
    ),
    row(
        "pubsub_32",
        "pub/sub 32 B, one publisher → one subscriber",
        Kind::PubSub(32),
        Transport::Ws,
    ),
    row(
        "pubsub_1024",
        "pub/sub 1 KiB, one publisher → one subscriber",
        Kind::PubSub(1024),
        Transport::Ws,
    ),
    row(
        "rpc_p50",
        "request/reply p50, one in flight",
        Kind::RpcP50,
        Transport::Ws,
    ),
    row(
        "rpc_256",
        "request/reply, 256 in flight",
        Kind::Rpc256,
        Transport::Ws,
    ),
];

/// Where every server of a placement listens.
#[derive(Debug, Clone)]
pub struct Urls {
    /// Our broker, `tcp://`.
    pub fitz_tcp: String,
    /// Our broker, `ws://`.
    pub fitz_ws: String,
    /// `nats-server` (`nats://`, `ws://`), if it runs.
    pub nats: Option<(String, String)>,
    /// `redis-server`, if it runs.
    pub redis: Option<String>,
    /// The raw echo peers (TCP, WS).
    pub echo: (SocketAddr, SocketAddr),
}

impl Urls {
    /// Our broker's URL for `t`.
    pub fn fitz(&self, t: Transport) -> &str {
        match t {
            Transport::Tcp => &self.fitz_tcp,
            Transport::Ws => &self.fitz_ws,
        }
    }
}

/// Measures twice — a warm-up of `dur / 5`, then `dur` — and returns the
/// second.
macro_rules! warmed {
    ($dur:expr, |$d:ident| $body:expr) => {{
        let $d = $dur / 5;
        let _ = $body;
        let $d = $dur;
        $body
    }};
}
pub(crate) use warmed;

/// Median latency (µs) of `$op` (an `Op` future expression) for `$dur`.
macro_rules! p50_inline {
    ($dur:expr, $op:expr) => {{
        let started = Instant::now();
        let mut times = Vec::with_capacity(4096);
        let mut failed = false;
        while started.elapsed() < $dur || times.len() < 5 {
            let t = Instant::now();
            let r: Op = $op.await;
            if let Err(e) = r {
                eprintln!("    operation failed: {e}");
                failed = true;
                break;
            }
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
        times.sort_by(f64::total_cmp);
        if failed {
            None
        } else {
            times.get(times.len() / 2).copied()
        }
    }};
}

/// Operations per second of `lanes` each running `$op` back to back (one
/// in flight per lane) for `$dur`.
macro_rules! lanes {
    ($dur:expr, $states:expr, |$s:ident, $i:ident| $op:expr) => {{
        let started = Instant::now();
        let dur = $dur;
        let counts = join_all($states.iter_mut().enumerate().map(|($i, $s)| async move {
            let mut n = 0u64;
            while started.elapsed() < dur {
                let r: Op = $op.await;
                r?;
                n += 1;
            }
            Ok::<u64, String>(n)
        }))
        .await;
        let elapsed = started.elapsed().as_secs_f64();
        let mut total = 0u64;
        let mut failed = false;
        for c in counts {
            match c {
                Ok(n) => total += n,
                Err(e) => {
                    eprintln!("    operation failed: {e}");
                    failed = true;
                }
            }
        }
        (!failed).then(|| total as f64 / elapsed)
    }};
}
pub(crate) use lanes;

fn ours_client(url: &str) -> Result<fitz::Client, String> {
    fitz::Client::builder(url.to_string(), fitz::StaticToken::anonymous())
        .max_in_flight(4096)
        .subscription_buffer(SUB_BUFFER)
        .request_timeout(Duration::from_secs(30))
        .build()
        .map_err(err)
}

async fn ours_connected(url: &str) -> Result<fitz::Client, String> {
    let c = ours_client(url)?;
    c.connect().await.map_err(err)?;
    Ok(c)
}

/// A unique suffix for routes, so no two measurements share a resource.
pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Our client against our broker.
pub async fn ours(urls: &Urls, row: &Row, dur: Duration) -> Result<Option<f64>, String> {
    let url = urls.fitz(row.transport);
    let u = unique();
    match row.kind {
        Kind::PubSub(size) => {
            let (p, s) = (ours_connected(url).await?, ours_connected(url).await?);
            let route = format!("notice://bench/vs{u}/ev");
            let mut sub = s.notice().subscribe(&route).await.map_err(err)?;
            let notice = p.notice();
            let payload = Bytes::from(vec![7u8; size]);
            let (route, notice, payload) = (&route, &notice, &payload);
            let v = warmed!(dur, |d| {
                stream(
                    d,
                    STREAM_WINDOW,
                    PUBLISHING,
                    || async move { notice.publish(route, payload.clone()).await.map_err(err) },
                    || async { Ok(()) },
                    &mut sub,
                    |n| n.map(|_| ()).map_err(err),
                )
                .await
            });
            drop(sub);
            p.close().await;
            s.close().await;
            Ok(v)
        }
        Kind::RpcP50 | Kind::Rpc256 => {
            let (caller, server) = (ours_connected(url).await?, ours_connected(url).await?);
            let route = format!("rpc://bench/vs{u}/echo");
            let worker = ours_echo_worker(&server, &route, 1024).await;
            let rpc = caller.rpc();
            let (rpc, route) = (&rpc, &route);
            let call = || async move {
                rpc.request(route, Bytes::from_static(BODY))
                    .await
                    .map(|_| ())
                    .map_err(err)
            };
            let v = if row.kind == Kind::RpcP50 {
                warmed!(dur, |d| p50(d, call).await)
            } else {
                warmed!(dur, |d| rate(d, WINDOW, |_| call()).await)
            };
            let _ = worker.shutdown().await;
            caller.close().await;
            server.close().await;
            Ok(v)
        }
        Kind::KvGetP50 | Kind::KvGet256 => {
            use fitz::kv::{Durability, TxMode};
            let c = ours_connected(url).await?;
            let route = format!("kv://bench/vs{u}/res");
            let mut tx = c.kv().begin(&route, TxMode::ReadWrite).await.map_err(err)?;
            tx.put(b"key", Bytes::from_static(BODY))
                .await
                .map_err(err)?;
            tx.commit(Durability::Buffered).await.map_err(err)?;
            let n = if row.kind == Kind::KvGetP50 {
                1
            } else {
                WINDOW
            };
            let mut txs = Vec::with_capacity(n);
            for _ in 0..n {
                txs.push(c.kv().begin(&route, TxMode::ReadOnly).await.map_err(err)?);
            }
            let v = if row.kind == Kind::KvGetP50 {
                let tx = &mut txs[0];
                warmed!(dur, |d| p50_inline!(d, async {
                    tx.get(b"key").await.map(|_| ()).map_err(err)
                }))
            } else {
                warmed!(dur, |d| lanes!(d, txs, |tx, _i| async {
                    tx.get(b"key").await.map(|_| ()).map_err(err)
                }))
            };
            for tx in txs {
                let _ = tx.rollback().await;
            }
            c.close().await;
            Ok(v)
        }
        Kind::KvPut256 => {
            use fitz::kv::Durability;
            let c = ours_connected(url).await?;
            let kv = c.kv();
            let mut routes: Vec<String> = (0..WINDOW)
                .map(|i| format!("kv://bench/vs{u}/r{i}"))
                .collect();
            let kv = &kv;
            // The one-key write: BEGIN, then PUT and COMMIT written
            // together (what `Kv::put` sends).
            let v = warmed!(dur, |d| lanes!(d, routes, |route, _i| async {
                kv.put(
                    route,
                    b"key",
                    Bytes::from_static(BODY),
                    Durability::Buffered,
                )
                .await
                .map_err(err)
            }));
            c.close().await;
            Ok(v)
        }
    }
}
