//! Stream benchmarks over loopback TCP with a minimal raw client built on
//! `fitz-protocol` (memory storage, so they measure the engine and the
//! session path, not a disk):
//!
//! * `stream/append_commit`: BEGIN + one APPEND + COMMIT, one request in
//!   flight (three round trips per iteration);
//! * `stream/batch100_sequential`: BEGIN + 100 APPENDs + COMMIT, one
//!   request in flight (102 round trips);
//! * `stream/batch100_pipelined`: the same 102 requests written at once,
//!   then the 102 replies read;
//! * `stream/read_page_100`: READ of a 100-record page (64-byte bodies) of
//!   one resource.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fitz_broker::Broker;
use fitz_protocol::control::Connect;
use fitz_protocol::frame::FrameDecoder;
use fitz_protocol::kv::Durability;
use fitz_protocol::record::{self, LabelledRecords, Side};
use fitz_protocol::stream::{self, BeginOk, ReadOk, ReadPage};
use fitz_protocol::{Message, decode_reply, types};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

/// A raw connection: length-prefixed, correlated frames over TCP.
struct Raw {
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    next_id: u64,
}

impl Raw {
    async fn connect(broker: &Broker) -> Raw {
        let stream = TcpStream::connect(broker.tcp_addr()).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut c = Raw {
            stream,
            rbuf: BytesMut::with_capacity(1 << 17),
            wbuf: BytesMut::with_capacity(1 << 16),
            next_id: 0,
        };
        c.queue(&Connect::default(), false);
        c.flush().await;
        let hello = c.frame().await;
        assert_eq!(hello[0] as u16, types::SERVER_HELLO);
        c
    }

    /// Appends one frame, correlated unless it is the CONNECT.
    fn queue<M: Message>(&mut self, m: &M, correlate: bool) -> u64 {
        self.next_id += 1;
        let start = self.wbuf.len();
        self.wbuf.put_u32(0);
        if correlate {
            record::put_label(&mut self.wbuf, types::CORRELATE, self.next_id);
        }
        m.encode_record(&mut self.wbuf).unwrap();
        let len = (self.wbuf.len() - start - 4) as u32;
        self.wbuf[start..start + 4].copy_from_slice(&len.to_be_bytes());
        self.next_id
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
            self.rbuf.reserve(1 << 17);
            let n = self.stream.read_buf(&mut self.rbuf).await.unwrap();
            assert!(n > 0, "broker closed");
        }
    }

    /// The reply payload of the next frame, which must answer `id`.
    async fn reply(&mut self, id: u64) -> Bytes {
        let frame = self.frame().await;
        let l = LabelledRecords::new(frame, Side::Client)
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(l.correlation, Some(id));
        l.record.payload
    }

    async fn call<M: Message>(&mut self, m: &M) -> Bytes {
        let id = self.queue(m, true);
        self.flush().await;
        self.reply(id).await
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The broker on its own two-worker runtime, like a separate process.
fn broker_runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn begin(route: &str) -> stream::Begin {
    stream::Begin {
        route: route.into(),
        ingest_metadata: None,
    }
}

fn append(session_id: u64, expected: u64, body: &Bytes) -> stream::Append {
    stream::Append {
        session_id,
        expected_offset: expected,
        body: body.clone(),
        metadata: None,
        discriminator: None,
    }
}

fn commit(session_id: u64) -> stream::Commit {
    stream::Commit {
        session_id,
        durability: Durability::Buffered,
    }
}

/// BEGIN; returns the session and the resource's next offset.
async fn open(conn: &mut Raw, route: &str) -> (u64, u64) {
    let ok = decode_reply::<BeginOk>(conn.call(&begin(route)).await)
        .unwrap()
        .unwrap();
    let next = u64::from_be_bytes(ok.data[..8].try_into().unwrap());
    (ok.session_id, next)
}

fn writes(c: &mut Criterion) {
    let rt = runtime();
    let brt = broker_runtime();
    let broker = brt.block_on(Broker::builder().start()).unwrap();
    let mut conn = rt.block_on(Raw::connect(&broker));
    let body = Bytes::from(vec![7u8; 64]);
    let mut g = c.benchmark_group("stream");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("append_commit", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let (id, next) = open(&mut conn, "stream://bench/one/res").await;
                    assert_eq!(conn.call(&append(id, next, &body)).await[0], 0);
                    assert_eq!(conn.call(&commit(id)).await[0], 0);
                }
                started.elapsed()
            })
        });
    });
    g.throughput(Throughput::Elements(100));
    g.sample_size(20);
    g.bench_function("batch100_sequential", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let (id, next) = open(&mut conn, "stream://bench/seq/res").await;
                    for i in 0..100 {
                        assert_eq!(conn.call(&append(id, next + i, &body)).await[0], 0);
                    }
                    assert_eq!(conn.call(&commit(id)).await[0], 0);
                }
                started.elapsed()
            })
        });
    });
    g.bench_function("batch100_pipelined", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let (id, next) = open(&mut conn, "stream://bench/pipe/res").await;
                    let first = conn.next_id + 1;
                    for i in 0..100 {
                        conn.queue(&append(id, next + i, &body), true);
                    }
                    let last = conn.queue(&commit(id), true);
                    conn.flush().await;
                    for want in first..=last {
                        assert_eq!(conn.reply(want).await[0], 0);
                    }
                }
                started.elapsed()
            })
        });
    });
    g.finish();
    brt.block_on(broker.shutdown());
}

fn reads(c: &mut Criterion) {
    let rt = runtime();
    let brt = broker_runtime();
    let broker = brt.block_on(Broker::builder().start()).unwrap();
    let mut conn = rt.block_on(Raw::connect(&broker));
    let route = "stream://bench/read/res";
    let body = Bytes::from(vec![7u8; 64]);
    rt.block_on(async {
        let (id, next) = open(&mut conn, route).await;
        for i in 0..100 {
            assert_eq!(conn.call(&append(id, next + i, &body)).await[0], 0);
        }
        assert_eq!(conn.call(&commit(id)).await[0], 0);
    });
    let read = stream::Read {
        selector: route.into(),
        from_offset: 0,
        limit: 100,
        max_bytes: None,
        filter: None,
        cursor_fingerprint: None,
        captured_watermark: None,
    };
    let check = rt.block_on(conn.call(&read));
    let page = decode_reply::<ReadOk>(check).unwrap().unwrap();
    assert_eq!(ReadPage::decode(page.data, false).unwrap().items.len(), 100);
    let mut g = c.benchmark_group("stream");
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(100));
    g.bench_function("read_page_100", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let reply = conn.call(&read).await;
                    assert_eq!(reply[0], 0);
                }
                started.elapsed()
            })
        });
    });
    g.finish();
    brt.block_on(broker.shutdown());
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = writes, reads
}
criterion_main!(benches);
