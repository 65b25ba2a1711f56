//! RPC through the broker over loopback TCP, with the caller and the worker
//! on separate connections of a minimal raw client built on `fitz-protocol`:
//!
//! * `rpc/round_trip`: one call in flight: REQUEST → delivery to the worker
//!   → RESPONSE (end) → delivery to the caller (target ≤ 60 µs);
//! * `rpc/throughput_256`, `rpc/throughput_1024`: 20,000 calls with 256 or
//!   1,024 in flight, the worker answering everything it reads at once
//!   (target ≥ 100,000 calls/s with 256 in flight).

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fitz_broker::Broker;
use fitz_protocol::control::Connect;
use fitz_protocol::frame::FrameDecoder;
use fitz_protocol::record::{self, LabelledRecords, Side};
use fitz_protocol::rpc::{Request, Response, RpcId, SubscribeWorker};
use fitz_protocol::{Message, Str, types};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

const ROUTE: &str = "rpc://bench/app/echo";

/// A raw connection: length-prefixed frames over TCP.
struct Raw {
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
}

impl Raw {
    async fn connect(broker: &Broker) -> Raw {
        let stream = TcpStream::connect(broker.tcp_addr()).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut c = Raw {
            stream,
            rbuf: BytesMut::with_capacity(1 << 16),
            wbuf: BytesMut::with_capacity(1 << 16),
        };
        c.queue(None, &Connect::default());
        c.flush().await;
        let hello = c.frame().await;
        assert_eq!(hello[0] as u16, types::SERVER_HELLO);
        c
    }

    fn queue<M: Message>(&mut self, correlation: Option<u64>, m: &M) {
        let start = self.wbuf.len();
        self.wbuf.put_u32(0);
        if let Some(id) = correlation {
            record::put_label(&mut self.wbuf, types::CORRELATE, id);
        }
        m.encode_record(&mut self.wbuf).unwrap();
        let len = (self.wbuf.len() - start - 4) as u32;
        self.wbuf[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    async fn flush(&mut self) {
        self.stream.write_all(&self.wbuf).await.unwrap();
        self.wbuf.clear();
    }

    async fn frame(&mut self) -> Bytes {
        let dec = FrameDecoder::default();
        loop {
            if let Some(f) = dec.decode(&mut self.rbuf).unwrap() {
                return f;
            }
            self.fill().await;
        }
    }

    async fn fill(&mut self) {
        self.rbuf.reserve(1 << 16);
        let n = self.stream.read_buf(&mut self.rbuf).await.unwrap();
        assert!(n > 0, "broker closed");
    }

    /// Registers a legacy worker for [`ROUTE`] with `max` credit.
    async fn register(&mut self, max: u32) {
        self.queue(
            Some(1),
            &SubscribeWorker {
                pattern: ROUTE.into(),
                max_concurrent: max,
                extension_flags: None,
            },
        );
        self.flush().await;
        let f = self.frame().await;
        let l = LabelledRecords::new(f, Side::Client)
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(l.record.payload[0], 0);
    }
}

fn id(n: u64) -> RpcId {
    let mut id = [0u8; 16];
    id[8..].copy_from_slice(&n.to_be_bytes());
    RpcId(id)
}

fn request(route: &Str, body: &Bytes, n: u64) -> Request {
    Request {
        id: id(n),
        route: route.clone(),
        body: body.clone(),
        budget_ms: None,
    }
}

/// Answers every delivery in a frame with one terminal chunk echoing it.
fn answer(worker: &mut Raw, frame: Bytes) {
    let rec = record::decode_single_record(frame).unwrap();
    assert_eq!(rec.ty, types::RPC_REQUEST);
    let req = Request::decode(rec.payload).unwrap();
    worker.queue(
        None,
        &Response {
            id: req.id,
            sequence: 0,
            end: true,
            body: req.body,
        },
    );
}

/// The client side: a current-thread runtime on the bench thread.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The broker side: its own two-worker runtime, like a separate process.
fn broker_runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn round_trip(c: &mut Criterion) {
    let rt = runtime();
    let brt = broker_runtime();
    let broker = brt.block_on(Broker::builder().start()).unwrap();
    let (mut caller, mut worker) = rt.block_on(async {
        let caller = Raw::connect(&broker).await;
        let mut worker = Raw::connect(&broker).await;
        worker.register(1).await;
        (caller, worker)
    });
    let route: Str = ROUTE.into();
    let body = Bytes::from_static(b"0123456789abcdef");
    let mut n = 0u64;
    let mut g = c.benchmark_group("rpc");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("round_trip", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    n += 1;
                    caller.queue(None, &request(&route, &body, n));
                    caller.flush().await;
                    let f = worker.frame().await;
                    answer(&mut worker, f);
                    worker.flush().await;
                    let f = caller.frame().await;
                    assert_eq!(&f[..3], &[0xFF, 0x01, 0x2F]);
                }
                started.elapsed()
            })
        });
    });
    g.finish();
    brt.block_on(broker.shutdown());
}

fn throughput(c: &mut Criterion) {
    const N: u64 = 20_000;
    let rt = runtime();
    let brt = broker_runtime();
    let broker = brt.block_on(Broker::builder().start()).unwrap();
    let route: Str = ROUTE.into();
    let body = Bytes::from_static(b"0123456789abcdef");
    let mut g = c.benchmark_group("rpc");
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    for window in [256u64, 1024] {
        let (mut caller, worker) = rt.block_on(async {
            let caller = Raw::connect(&broker).await;
            let mut worker = Raw::connect(&broker).await;
            worker.register(1024).await;
            (caller, worker)
        });
        let mut worker = Some(worker);
        let mut next = 0u64;
        g.bench_function(format!("throughput_{window}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut w = worker.take().unwrap();
                    let (w_back, elapsed) = rt.block_on(async {
                        let started = Instant::now();
                        // The worker answers whatever it has read, in batches.
                        let serving = tokio::spawn(async move {
                            let dec = FrameDecoder::default();
                            let mut served = 0;
                            while served < N {
                                w.fill().await;
                                while let Some(f) = dec.decode(&mut w.rbuf).unwrap() {
                                    answer(&mut w, f);
                                    served += 1;
                                }
                                w.flush().await;
                            }
                            w
                        });
                        let dec = FrameDecoder::default();
                        let (mut sent, mut done) = (0u64, 0u64);
                        while sent < window.min(N) {
                            next += 1;
                            caller.queue(None, &request(&route, &body, next));
                            sent += 1;
                        }
                        caller.flush().await;
                        while done < N {
                            caller.fill().await;
                            while let Some(f) = dec.decode(&mut caller.rbuf).unwrap() {
                                debug_assert_eq!(&f[..3], &[0xFF, 0x01, 0x2F]);
                                done += 1;
                                if sent < N {
                                    next += 1;
                                    caller.queue(None, &request(&route, &body, next));
                                    sent += 1;
                                }
                            }
                            if !caller.wbuf.is_empty() {
                                caller.flush().await;
                            }
                        }
                        let elapsed = started.elapsed();
                        (serving.await.unwrap(), elapsed)
                    });
                    worker = Some(w_back);
                    total += elapsed;
                }
                total
            });
        });
    }
    g.finish();
    assert_eq!(broker.engines().rpc.live_calls(), 0);
    brt.block_on(broker.shutdown());
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = round_trip, throughput
}
criterion_main!(benches);
