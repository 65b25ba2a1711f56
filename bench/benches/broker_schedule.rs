//! Schedule and storage benchmarks over loopback TCP with a minimal raw
//! client on `fitz-protocol` (one connection, one request in flight):
//!
//! * `schedule/create_cancel/{memory,local}`: a CREATE and a CANCEL round
//!   trip; on local storage each is one fsync'd commit;
//! * `kv_commit/{sync,buffered}_{memory,local}`: BEGIN, PUT, COMMIT with the
//!   given durability: the cost of an fsync on the request path.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{Criterion, criterion_group, criterion_main};
use fitz_broker::{Broker, StorageMode};
use fitz_protocol::control::Connect;
use fitz_protocol::frame::FrameDecoder;
use fitz_protocol::kv::{self, BeginOk, Durability, TxMode};
use fitz_protocol::record::{self, LabelledRecords, Side};
use fitz_protocol::schedule::{self, DeliveryMode, Entry};
use fitz_protocol::{Message, decode_reply, types};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

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
            rbuf: BytesMut::with_capacity(1 << 16),
            wbuf: BytesMut::with_capacity(1 << 16),
            next_id: 0,
        };
        c.send(None, &Connect::default()).await;
        let hello = c.frame().await;
        assert_eq!(u16::from(hello[0]), types::SERVER_HELLO);
        c
    }

    async fn send<M: Message>(&mut self, correlation: Option<u64>, m: &M) {
        self.wbuf.clear();
        self.wbuf.put_u32(0);
        if let Some(id) = correlation {
            record::put_label(&mut self.wbuf, types::CORRELATE, id);
        }
        m.encode_record(&mut self.wbuf).unwrap();
        let len = (self.wbuf.len() - 4) as u32;
        self.wbuf[..4].copy_from_slice(&len.to_be_bytes());
        self.stream.write_all(&self.wbuf).await.unwrap();
    }

    async fn frame(&mut self) -> Bytes {
        let dec = FrameDecoder::default();
        loop {
            if let Some(f) = dec.decode(&mut self.rbuf).unwrap() {
                return f;
            }
            self.rbuf.reserve(1 << 16);
            let n = self.stream.read_buf(&mut self.rbuf).await.unwrap();
            assert!(n > 0, "broker closed");
        }
    }

    async fn call<M: Message>(&mut self, m: &M) -> Bytes {
        self.next_id += 1;
        let id = self.next_id;
        self.send(Some(id), m).await;
        let l = LabelledRecords::new(self.frame().await, Side::Client)
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(l.correlation, Some(id));
        l.record.payload
    }
}

/// Client on the bench thread; the broker on its own two workers.
fn runtimes() -> (Runtime, Runtime) {
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let broker = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    (client, broker)
}

fn data_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fitz-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Runs `f` against a broker of each storage mode.
fn with_modes(mut f: impl FnMut(&str, &Runtime, &mut Raw)) {
    for mode in ["memory", "local"] {
        let (rt, brt) = runtimes();
        let dir = data_dir(mode);
        let storage = if mode == "local" {
            StorageMode::Local(dir.clone())
        } else {
            StorageMode::Memory
        };
        let broker = brt
            .block_on(Broker::builder().storage(storage).start())
            .unwrap();
        let mut conn = rt.block_on(Raw::connect(&broker));
        f(mode, &rt, &mut conn);
        drop(conn);
        brt.block_on(broker.shutdown());
        drop(broker);
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn schedule_create_cancel(c: &mut Criterion) {
    let mut g = c.benchmark_group("schedule");
    g.measurement_time(Duration::from_secs(3));
    g.sample_size(30);
    with_modes(|mode, rt, conn| {
        let create = schedule::Create {
            entry: Entry {
                route: "schedule://bench/a/job/run".into(),
                cron: "*/5 * * * 1-5".into(),
                mode: DeliveryMode::Single,
                payload: Bytes::from_static(b"0123456789abcdef"),
            },
        };
        let cancel = schedule::Cancel::new("schedule://bench/a/job/run");
        g.bench_function(format!("create_cancel/{mode}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        assert_eq!(&conn.call(&create).await[..], &[0]);
                        assert_eq!(&conn.call(&cancel).await[..], &[0]);
                    }
                    started.elapsed()
                })
            });
        });
    });
    g.finish();
}

async fn kv_commit(conn: &mut Raw, durability: Durability) {
    let route: fitz_protocol::Str = "kv://bench/area/res".into();
    let begin = kv::Begin {
        route: route.clone(),
        mode: TxMode::ReadWrite,
    };
    let tx_id = decode_reply::<BeginOk>(conn.call(&begin).await)
        .unwrap()
        .unwrap()
        .tx_id;
    let put = kv::Put {
        tx_id,
        route: route.clone(),
        key: Bytes::from_static(b"key"),
        value: Bytes::from_static(b"value-0123456789"),
    };
    assert_eq!(conn.call(&put).await[0], 0);
    let commit = kv::Commit {
        tx_id,
        route,
        durability,
    };
    assert_eq!(conn.call(&commit).await[0], 0);
}

fn kv_commits(c: &mut Criterion) {
    let mut g = c.benchmark_group("kv_commit");
    g.measurement_time(Duration::from_secs(3));
    g.sample_size(30);
    with_modes(|mode, rt, conn| {
        for (name, durability) in [
            ("sync", Durability::Sync),
            ("buffered", Durability::Buffered),
        ] {
            g.bench_function(format!("{name}_{mode}"), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let started = Instant::now();
                        for _ in 0..iters {
                            kv_commit(conn, durability).await;
                        }
                        started.elapsed()
                    })
                });
            });
        }
    });
    g.finish();
}

criterion_group!(benches, schedule_create_cancel, kv_commits);
criterion_main!(benches);
