//! Queue and Lease benchmarks against the embedded broker over loopback TCP,
//! with a minimal raw client on `fitz-protocol`:
//!
//! * `queue/enqueue_reserve_complete`: one connection, one request in
//!   flight, three correlated round trips per iteration;
//! * `lease/acquire_release`: one connection, two round trips per iteration;
//! * `queue/enqueue_pipelined`: 20,000 ENQUEUEs written in batches while
//!   their replies are read on the same connection (messages per second).

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fitz_broker::Broker;
use fitz_protocol::control::Connect;
use fitz_protocol::frame::FrameDecoder;
use fitz_protocol::lease::{self, AcquireKind, AcquireOk};
use fitz_protocol::queue::{self, EnqueueOk, ReserveOk};
use fitz_protocol::record::{self, LabelledRecords, Side};
use fitz_protocol::{Message, decode_reply, decode_reply_with, types};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::runtime::Runtime;

/// One TCP connection speaking length-prefixed frames.
struct Conn {
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    rbuf: BytesMut,
    wbuf: BytesMut,
    last_id: u64,
}

impl Conn {
    async fn open(broker: &Broker) -> Conn {
        let stream = TcpStream::connect(broker.tcp_addr()).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (reader, writer) = stream.into_split();
        let mut c = Conn {
            reader,
            writer,
            rbuf: BytesMut::with_capacity(1 << 16),
            wbuf: BytesMut::with_capacity(1 << 16),
            last_id: 0,
        };
        c.push(None, &Connect::default());
        c.send().await;
        let hello = c.read_frame().await;
        assert_eq!(u16::from(hello[0]), types::SERVER_HELLO);
        c
    }

    /// Appends one frame holding `m`, labelled when `correlation` is given.
    fn push<M: Message>(&mut self, correlation: Option<u64>, m: &M) {
        let at = self.wbuf.len();
        self.wbuf.put_u32(0);
        if let Some(id) = correlation {
            record::put_label(&mut self.wbuf, types::CORRELATE, id);
        }
        m.encode_record(&mut self.wbuf).unwrap();
        let len = u32::try_from(self.wbuf.len() - at - 4).unwrap();
        self.wbuf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }

    async fn send(&mut self) {
        self.writer.write_all(&self.wbuf).await.unwrap();
        self.wbuf.clear();
    }

    async fn read_frame(&mut self) -> Bytes {
        let decoder = FrameDecoder::default();
        loop {
            if let Some(f) = decoder.decode(&mut self.rbuf).unwrap() {
                return f;
            }
            self.rbuf.reserve(1 << 16);
            assert!(
                self.reader.read_buf(&mut self.rbuf).await.unwrap() > 0,
                "broker closed"
            );
        }
    }

    /// One correlated round trip; the reply payload.
    async fn call<M: Message>(&mut self, m: &M) -> Bytes {
        self.last_id += 1;
        let id = self.last_id;
        self.push(Some(id), m);
        self.send().await;
        let frame = self.read_frame().await;
        let l = LabelledRecords::new(frame, Side::Client)
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(l.correlation, Some(id));
        l.record.payload
    }
}

/// The bench's side of the wire runs on the bench thread.
fn client_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The broker gets two workers of its own, like a separate process.
fn broker_runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn queue_round_trips(c: &mut Criterion) {
    let rt = client_runtime();
    let brt = broker_runtime();
    let broker = brt.block_on(Broker::builder().start()).unwrap();
    let mut conn = rt.block_on(Conn::open(&broker));
    let route: fitz_protocol::Str = "queue://bench/area/jobs".into();
    let body = Bytes::from_static(b"job-0123456789ab");
    let mut g = c.benchmark_group("queue");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("enqueue_reserve_complete", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let enqueue = queue::Enqueue {
                        route: route.clone(),
                        body: body.clone(),
                        delay_seconds: None,
                    };
                    let id = decode_reply::<EnqueueOk>(conn.call(&enqueue).await)
                        .unwrap()
                        .unwrap()
                        .message_id;
                    let reserve = queue::Reserve {
                        route: route.clone(),
                        lease_seconds: 30,
                        batch_size: Some(1),
                        wait_seconds: None,
                    };
                    let reply = conn.call(&reserve).await;
                    let item = decode_reply_with(reply, |r| ReserveOk::decode_body(r, false))
                        .unwrap()
                        .unwrap()
                        .items
                        .pop()
                        .unwrap();
                    assert_eq!(item.message_id, id);
                    let complete = queue::Complete {
                        route: route.clone(),
                        message_id: id,
                        lease_token: item.lease_token,
                    };
                    assert_eq!(&conn.call(&complete).await[..], &[0]);
                }
                started.elapsed()
            })
        });
    });
    g.finish();
    brt.block_on(broker.shutdown());
}

fn lease_round_trips(c: &mut Criterion) {
    let rt = client_runtime();
    let brt = broker_runtime();
    let broker = brt.block_on(Broker::builder().start()).unwrap();
    let mut conn = rt.block_on(Conn::open(&broker));
    let route: fitz_protocol::Str = "lease://bench/area/leader".into();
    let owner: fitz_protocol::Str = "bench-owner".into();
    let mut g = c.benchmark_group("lease");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("acquire_release", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let acquire = lease::Acquire {
                        route: route.clone(),
                        owner: owner.clone(),
                        ttl_secs: 30,
                        wait_seconds: Some(0),
                    };
                    let ok = decode_reply::<AcquireOk>(conn.call(&acquire).await)
                        .unwrap()
                        .unwrap();
                    assert_eq!(ok.kind, AcquireKind::Acquired);
                    let release = lease::Release {
                        route: route.clone(),
                        owner: owner.clone(),
                        fencing_token: ok.fencing_token,
                    };
                    assert_eq!(&conn.call(&release).await[..], &[0]);
                }
                started.elapsed()
            })
        });
    });
    g.finish();
    brt.block_on(broker.shutdown());
}

fn queue_pipelined(c: &mut Criterion) {
    const N: u64 = 20_000;
    const BATCH: u64 = 256;
    let rt = client_runtime();
    let brt = broker_runtime();
    let broker = brt.block_on(Broker::builder().start()).unwrap();
    let conn = rt.block_on(Conn::open(&broker));
    let Conn {
        mut reader,
        writer,
        mut rbuf,
        ..
    } = conn;
    let mut writer = Some(writer);
    let body = Bytes::from_static(b"job-0123456789ab");
    let mut run = 0u64;
    let mut g = c.benchmark_group("queue");
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("enqueue_pipelined", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                run += 1;
                // A fresh queue per run keeps every queue's size bounded by N.
                let msg = queue::Enqueue {
                    route: format!("queue://bench/pipe/q{run}").into(),
                    body: body.clone(),
                    delay_seconds: None,
                };
                let mut w = writer.take().unwrap();
                let (w_back, elapsed) = rt.block_on(async {
                    let started = Instant::now();
                    let sender = tokio::spawn(async move {
                        let mut buf = BytesMut::with_capacity(1 << 16);
                        let mut sent = 0;
                        while sent < N {
                            let n = BATCH.min(N - sent);
                            for _ in 0..n {
                                let at = buf.len();
                                buf.put_u32(0);
                                msg.encode_record(&mut buf).unwrap();
                                let len = u32::try_from(buf.len() - at - 4).unwrap();
                                buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
                            }
                            w.write_all(&buf).await.unwrap();
                            buf.clear();
                            sent += n;
                        }
                        w
                    });
                    let decoder = FrameDecoder::default();
                    let mut got = 0u64;
                    while got < N {
                        while let Some(f) = decoder.decode(&mut rbuf).unwrap() {
                            debug_assert_eq!(f[0], 200);
                            got += 1;
                        }
                        if got < N {
                            rbuf.reserve(1 << 18);
                            assert!(reader.read_buf(&mut rbuf).await.unwrap() > 0);
                        }
                    }
                    let elapsed = started.elapsed();
                    (sender.await.unwrap(), elapsed)
                });
                writer = Some(w_back);
                total += elapsed;
            }
            total
        });
    });
    g.finish();
    brt.block_on(broker.shutdown());
}

criterion_group!(
    benches,
    queue_round_trips,
    lease_round_trips,
    queue_pipelined
);
criterion_main!(benches);
