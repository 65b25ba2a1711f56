//! Shared harness for the end-to-end benchmarks (`e2e_latency`,
//! `e2e_throughput`, `baseline`): the embedded broker, our client, the
//! official client (`cntryl-fitz`) and raw TCP / WebSocket echo peers.
//!
//! # Arrangement (the same for ours, the official client and the raw peers)
//!
//! * The broker (or the raw echo server) runs on its own two-worker
//!   multi-thread runtime, as if it were a separate process on this 2-core
//!   machine ([`Env::brt`]).
//! * Every client of a scenario (caller, worker, subscriber) runs on one
//!   current-thread runtime driven by the benchmark thread ([`Env::rt`]):
//!   a client process with a single-threaded executor. The timed loop is the
//!   `block_on` future itself, so a reply reaches the caller without a
//!   cross-thread hand-off on the client side.
//!
//! Both clients talk to the same broker over loopback with `TCP_NODELAY`.
#![forbid(unsafe_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use fitz_broker::Broker;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

/// The official client crate, re-exported for the benches.
pub use cntryl_fitz as official;

/// Transport of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Length-prefixed frames over TCP.
    Tcp,
    /// Binary WebSocket messages.
    Ws,
}

impl Transport {
    /// Both transports, in report order.
    pub const ALL: [Transport; 2] = [Transport::Tcp, Transport::Ws];

    /// `tcp` / `ws`.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Ws => "ws",
        }
    }

    /// The broker URL for this transport.
    pub fn url(self, broker: &Broker) -> String {
        match self {
            Transport::Tcp => broker.tcp_url(),
            Transport::Ws => broker.ws_url(),
        }
    }
}

/// The broker runtime, the client runtime and the broker.
pub struct Env {
    /// Client side: current-thread, driven by the bench thread.
    pub rt: Runtime,
    /// Broker side: two workers.
    pub brt: Runtime,
    /// The embedded broker (anonymous, in-memory storage, loopback).
    pub broker: Broker,
}

impl Env {
    /// Starts the broker on its own runtime.
    pub fn start() -> Env {
        let brt = broker_runtime();
        let broker = brt
            .block_on(Broker::builder().start())
            .expect("broker starts");
        Env {
            rt: client_runtime(),
            brt,
            broker,
        }
    }

    /// Our client, connected over `t`.
    pub fn ours(&self, t: Transport) -> fitz::Client {
        let url = t.url(&self.broker);
        self.rt.block_on(async {
            let c = fitz::Client::builder(url, fitz::StaticToken::anonymous())
                .max_in_flight(4096)
                .request_timeout(Duration::from_secs(30))
                .build()
                .expect("client builds");
            c.connect().await.expect("ours connects");
            c
        })
    }

    /// The official client, connected over `t`.
    pub fn official(&self, t: Transport) -> official::Client {
        let url = t.url(&self.broker);
        self.rt.block_on(async {
            let c = official::Client::anonymous(url)
                .max_in_flight_requests(4096)
                .request_timeout(Duration::from_secs(30))
                .build()
                .expect("official client builds");
            c.connect().await.expect("official connects");
            c
        })
    }

    /// Runs `op` `iters` times sequentially on the client runtime and
    /// returns the elapsed time (for `iter_custom`).
    pub fn time_seq<F, Fut>(&self, iters: u64, mut op: F) -> Duration
    where
        F: FnMut(u64) -> Fut,
        Fut: Future<Output = ()>,
    {
        self.rt.block_on(async {
            let started = Instant::now();
            for i in 0..iters {
                op(i).await;
            }
            started.elapsed()
        })
    }

    /// Stops the broker.
    pub fn shutdown(self) {
        self.brt.block_on(self.broker.shutdown());
    }
}

/// The client-side runtime.
pub fn client_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The server-side runtime (broker or raw echo server).
pub fn broker_runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

pub mod scenarios;
pub mod wire;

/// Raw peers: the wire's limit without any protocol work.
pub mod raw {
    use super::*;

    /// A TCP echo server on `brt`: writes back whatever it reads.
    pub fn tcp_echo_server(brt: &Runtime) -> std::net::SocketAddr {
        brt.block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = l.local_addr().expect("addr");
            tokio::spawn(async move {
                while let Ok((mut s, _)) = l.accept().await {
                    s.set_nodelay(true).expect("nodelay");
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => {
                                    if s.write_all(&buf[..n]).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    });
                }
            });
            addr
        })
    }

    /// A WebSocket echo server on `brt`: returns every binary message.
    pub fn ws_echo_server(brt: &Runtime) -> std::net::SocketAddr {
        brt.block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = l.local_addr().expect("addr");
            tokio::spawn(async move {
                while let Ok((s, _)) = l.accept().await {
                    s.set_nodelay(true).expect("nodelay");
                    tokio::spawn(async move {
                        let Ok(ws) = tokio_tungstenite::accept_async(s).await else {
                            return;
                        };
                        let (mut tx, mut rx) = ws.split();
                        while let Some(Ok(m)) = rx.next().await {
                            if m.is_binary() && tx.send(m).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            });
            addr
        })
    }

    /// A raw TCP client of [`tcp_echo_server`].
    pub async fn tcp_client(addr: std::net::SocketAddr) -> TcpStream {
        let s = TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        s
    }

    /// One TCP ping-pong of `payload`.
    pub async fn tcp_ping(s: &mut TcpStream, payload: &[u8], back: &mut [u8]) {
        s.write_all(payload).await.expect("write");
        s.read_exact(&mut back[..payload.len()])
            .await
            .expect("read");
    }

    /// A raw WebSocket client of [`ws_echo_server`].
    pub type WsClient =
        tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

    /// Connects a WebSocket client.
    pub async fn ws_client(addr: std::net::SocketAddr) -> WsClient {
        let s = TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        let (ws, _) = tokio_tungstenite::client_async(
            format!("ws://{addr}/"),
            tokio_tungstenite::MaybeTlsStream::Plain(s),
        )
        .await
        .expect("ws handshake");
        ws
    }

    /// One WebSocket ping-pong of `payload`.
    pub async fn ws_ping(ws: &mut WsClient, payload: &bytes::Bytes) {
        ws.send(tokio_tungstenite::tungstenite::Message::Binary(
            payload.clone(),
        ))
        .await
        .expect("send");
        loop {
            match ws.next().await.expect("open").expect("message") {
                m if m.is_binary() => return,
                _ => continue,
            }
        }
    }
}

/// Criterion settings shared by the end-to-end benches: short by default
/// (the script shortens them further from the command line).
pub fn criterion_config() -> criterion::Criterion {
    criterion::Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10)
}

/// The function ids of a scenario measured with both clients.
pub const PAIR_IDS: [&str; 4] = ["ours_tcp", "official_tcp", "ours_ws", "official_ws"];

/// Whether criterion's command-line filter (a regex; none = all) selects
/// any of `group/id` for `ids`, so a bench can skip the setup of groups it
/// will not run.
pub fn selected(group: &str, ids: &[&str]) -> bool {
    let Some(filter) = filter_arg() else {
        return true;
    };
    let Ok(re) = regex::Regex::new(&filter) else {
        return true;
    };
    ids.iter().any(|id| re.is_match(&format!("{group}/{id}")))
}

fn filter_arg() -> Option<String> {
    // Criterion's options that take a value.
    const VALUED: [&str; 16] = [
        "--warm-up-time",
        "--measurement-time",
        "--sample-size",
        "--save-baseline",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--nresamples",
        "--profile-time",
        "--output-format",
        "--color",
        "--plotting-backend",
        "--format",
    ];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if VALUED.contains(&a.as_str()) {
            args.next();
        } else if !a.starts_with('-') {
            return Some(a);
        }
    }
    None
}

/// The official client's RPC worker loop: each request answered (echoing its
/// body as the final chunk) in its own task, as our `serve` runs each
/// handler in its own task.
pub async fn official_echo_worker(mut w: official::client_domains::rpc::RpcWorker) {
    while let Some(Ok(mut req)) = w.next().await {
        tokio::spawn(async move {
            let body = std::mem::take(&mut req.body);
            let _ = req.respond(&body, true).await;
        });
    }
}

/// Our RPC worker: echoes the body as the final chunk.
pub async fn ours_echo_worker(
    client: &fitz::Client,
    route: &str,
    max: u32,
) -> fitz::rpc::RpcWorker {
    client
        .rpc()
        .serve(route, max, |req: fitz::rpc::RpcRequest| async move {
            Ok::<bytes::Bytes, std::io::Error>(req.body().clone())
        })
        .await
        .expect("serve")
}

/// An echo worker ([`ours_echo_worker`]) on a client of its own, on its own
/// current-thread runtime on a second thread: a pipelined RPC run then
/// measures the caller's client alone on the bench thread. Stopped (worker
/// and client closed, thread joined) when dropped.
pub struct ThreadWorker {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ThreadWorker {
    /// Connects a client to `url` on a new thread and serves `route` with
    /// at most `max` calls at once; returns once the worker is registered.
    pub fn start(url: String, route: &str, max: u32) -> Self {
        let route = route.to_owned();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            client_runtime().block_on(async move {
                let c = fitz::Client::builder(url, fitz::StaticToken::anonymous())
                    .max_in_flight(4096)
                    .build()
                    .expect("worker client builds");
                c.connect().await.expect("worker client connects");
                let worker = ours_echo_worker(&c, &route, max).await;
                ready_tx.send(()).expect("bench thread waits");
                let _ = stopped.await;
                let _ = worker.shutdown().await;
                c.close().await;
            });
        });
        ready_rx.recv().expect("worker thread starts");
        ThreadWorker {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for ThreadWorker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `n` operations made by `make` with at most `window` in flight, all
/// polled by the calling task.
pub async fn windowed<F, Fut>(n: u64, window: usize, mut make: F)
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut inflight = futures_util::stream::FuturesUnordered::new();
    let mut issued = 0u64;
    while issued < n && inflight.len() < window {
        inflight.push(make(issued));
        issued += 1;
    }
    while inflight.next().await.is_some() {
        if issued < n {
            inflight.push(make(issued));
            issued += 1;
        }
    }
}

/// Writes `contents` to `target/perf/<name>`, where `scripts/bench.sh` and
/// `bench/report.py` look for what the benches measured besides time.
pub fn write_perf_json(name: &str, contents: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/perf");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(name), contents);
}
