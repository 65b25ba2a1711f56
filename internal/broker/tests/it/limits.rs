//! What clients can make the broker hold is bounded (docs/ARCHITECTURE.md,
//! "Memory bounds"), and what happens at each bound:
//!
//! * a frame started and not finished within the frame timeout closes the
//!   connection (`frame timeout`), before CONNECT and after;
//! * unfinished frames across connections share one budget: a connection
//!   that would hold more waits (the kernel holds its sender) while others
//!   are served, and gets its turn when the budget frees up;
//! * a connection beyond `max_connections` is closed at accept;
//! * an uncommitted KV transaction whose writes exceed its byte budget, or
//!   the broker's across all transactions, is aborted with 1010 and its lock
//!   released;
//! * against the binary with its defaults, the attacks that found these
//!   faults keep its resident memory within its baseline + 64 MiB.

use std::time::Duration;

use crate::support::{Event, Kind, RawClient, code};
use bytes::{BufMut, Bytes, BytesMut};
use fitz_broker::{Broker, Limits};
use fitz_protocol::codes;
use fitz_protocol::kv::{self, Begin, BeginOk, TxMode};
use tokio::io::AsyncWriteExt;

async fn broker_with(limits: Limits) -> Broker {
    Broker::builder()
        .limits(limits)
        .start()
        .await
        .expect("broker starts")
}

/// A TCP frame prefix announcing `len` bytes.
fn prefix(len: u32) -> [u8; 4] {
    len.to_be_bytes()
}

async fn begin_rw(c: &mut RawClient, route: &str) -> u64 {
    let ok: BeginOk = c
        .ok(&Begin {
            route: route.into(),
            mode: TxMode::ReadWrite,
        })
        .await;
    ok.tx_id
}

fn put(route: &str, tx_id: u64, key: &str, value: Bytes) -> kv::Put {
    kv::Put {
        tx_id,
        route: route.into(),
        key: Bytes::copy_from_slice(key.as_bytes()),
        value,
    }
}

async fn stalled_frame_closes_the_connection(kind: Kind) {
    let broker = broker_with(Limits {
        frame_timeout: Duration::from_millis(200),
        ..Limits::default()
    })
    .await;
    let mut c = RawClient::anon(&broker, kind).await;
    match kind {
        Kind::Tcp => {
            c.send_raw_tcp(&[&prefix(100)[..], b"only part"].concat())
                .await
        }
        Kind::Ws => {
            // A binary message whose frame header announces 100 bytes, of
            // which 9 arrive.
            let mut head = vec![0x82u8, 0x80 | 100, 1, 2, 3, 4];
            head.extend_from_slice(b"only part");
            c.send_raw_ws_bytes(&head).await;
        }
    }
    c.expect_closed_with(kind, "frame timeout").await;
    // Others are served throughout.
    let mut other = RawClient::anon(&broker, kind).await;
    begin_rw(&mut other, "kv://a/b/c").await;
    broker.shutdown().await;
}

/// Before CONNECT the connect timeout bounds the first frame; a slow first
/// frame is closed just the same.
async fn a_stalled_connect_frame_is_closed(kind: Kind) {
    let broker = Broker::builder()
        .connect_timeout(Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    let mut c = RawClient::open(&broker, kind).await;
    match kind {
        Kind::Tcp => c.send_raw_tcp(&[&prefix(50)[..], &[0u8; 3]].concat()).await,
        Kind::Ws => {
            c.send_raw_ws_bytes(&[0x82u8, 0x80 | 50, 0, 0, 0, 0, 1])
                .await
        }
    }
    match c.next_event().await {
        Event::Closed(_) => {}
        Event::Frame(f) => panic!("expected close, got {f:?}"),
    }
    broker.shutdown().await;
}

both_transports!(
    stalled_frame_closes_the_connection,
    a_stalled_connect_frame_is_closed
);

#[tokio::test]
async fn unfinished_frames_share_one_budget_and_others_are_served() {
    const BUDGET: usize = 1 << 20;
    let broker = broker_with(Limits {
        max_pending_input: BUDGET,
        frame_timeout: Duration::from_secs(2),
        ..Limits::default()
    })
    .await;
    // Eight connections each start a 1 MiB frame and send 512 KiB of it:
    // together four times the budget.
    let mut attackers = Vec::new();
    for _ in 0..8 {
        let c = RawClient::anon(&broker, Kind::Tcp).await;
        let mut stream = c.into_tcp();
        let task = tokio::spawn(async move {
            let mut b = BytesMut::new();
            b.put_slice(&prefix(1 << 20));
            b.put_slice(&vec![0u8; 512 * 1024]);
            let _ = stream.write_all(&b).await;
            stream
        });
        attackers.push(task);
    }
    // The budget runs dry and stays at zero: nobody holds more.
    crate::support::until("the budget is spent", || {
        broker.input_budget_available() == 0
    })
    .await;
    // A normal client (small frames) is still served meanwhile.
    let mut other = RawClient::anon(&broker, Kind::Tcp).await;
    let tx = begin_rw(&mut other, "kv://a/b/c").await;
    other
        .ok::<_, kv::PutOk>(&put("kv://a/b/c", tx, "k", Bytes::from_static(b"v")))
        .await;
    // The frame timeout closes the stalled attackers and returns the budget.
    crate::support::until("the budget is back", || {
        broker.input_budget_available() == BUDGET
    })
    .await;
    for a in attackers {
        a.abort();
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn a_budget_that_cannot_hold_a_frame_is_refused_at_start() {
    let e = Broker::builder()
        .limits(Limits {
            max_pending_input: 64 * 1024,
            ..Limits::default()
        })
        .start()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("must hold a whole frame"), "{e}");
}

#[tokio::test]
async fn a_connection_beyond_the_limit_is_closed_at_accept() {
    let broker = broker_with(Limits {
        max_connections: 2,
        ..Limits::default()
    })
    .await;
    let first = RawClient::anon(&broker, Kind::Tcp).await;
    let _second = RawClient::anon(&broker, Kind::Ws).await;
    let mut third = RawClient::open(&broker, Kind::Tcp).await;
    third
        .send(
            None,
            &fitz_protocol::control::Connect {
                token: Bytes::new(),
            },
        )
        .await;
    assert!(matches!(third.next_event().await, Event::Closed(_)));
    assert_eq!(broker.refused_connections(), 1);
    // A slot frees when a connection ends.
    drop(first);
    broker.wait_for_session_count(1).await;
    // The connection task gives its slot back just after the session ends.
    let mut fourth = loop {
        let mut c = RawClient::open(&broker, Kind::Tcp).await;
        c.send(
            None,
            &fitz_protocol::control::Connect {
                token: Bytes::new(),
            },
        )
        .await;
        if let Event::Frame(_) = c.next_event().await {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    begin_rw(&mut fourth, "kv://a/b/c").await;
    broker.shutdown().await;
}

#[tokio::test]
async fn a_transaction_over_its_byte_budget_is_aborted_with_1010() {
    let broker = broker_with(Limits {
        kv_tx_max_bytes: 10_000,
        kv_tx_total_bytes: 15_000,
        ..Limits::default()
    })
    .await;
    let mut c = RawClient::anon(&broker, Kind::Tcp).await;
    let route = "kv://a/b/big";
    let tx = begin_rw(&mut c, route).await;
    let value = Bytes::from(vec![1u8; 3_000]);
    for i in 0..3 {
        c.ok::<_, kv::PutOk>(&put(route, tx, &format!("k{i}"), value.clone()))
            .await;
    }
    // The fourth write would stage ~12 KB: the transaction is aborted.
    let e = c.fails(&put(route, tx, "k3", value.clone())).await;
    assert_eq!(code(&e), codes::KV_ABORTED, "{e:?}");
    // Gone, lock released, nothing applied.
    let e = c.fails(&put(route, tx, "k4", value.clone())).await;
    assert_eq!(code(&e), codes::KV_TX_NOT_FOUND);
    let again = begin_rw(&mut c, route).await;
    let got: kv::GetOk = c
        .ok(&kv::Get {
            tx_id: again,
            route: route.into(),
            key: Bytes::from_static(b"k0"),
        })
        .await;
    assert_eq!(got.value, None);
    assert_eq!(broker.engines().kv.stats().transactions, 1);

    // Across transactions: two of 8 KB fit the 15 KB total only once.
    let (r1, r2) = ("kv://a/b/one", "kv://a/b/two");
    let (t1, t2) = (begin_rw(&mut c, r1).await, begin_rw(&mut c, r2).await);
    let eight = Bytes::from(vec![2u8; 8_000]);
    c.ok::<_, kv::PutOk>(&put(r1, t1, "k", eight.clone())).await;
    let e = c.fails(&put(r2, t2, "k", eight.clone())).await;
    assert_eq!(code(&e), codes::KV_ABORTED);
    // Committing the first returns its bytes: a new one fits again.
    c.ok::<_, kv::CommitOk>(&kv::Commit {
        tx_id: t1,
        route: r1.into(),
        durability: kv::Durability::Buffered,
    })
    .await;
    let t3 = begin_rw(&mut c, r2).await;
    c.ok::<_, kv::PutOk>(&put(r2, t3, "k", eight)).await;
    broker.shutdown().await;
}

#[cfg(target_os = "linux")]
mod rss {
    //! The attacks that found the faults, against the binary with its
    //! default limits, its resident memory read from `/proc`.

    use std::time::Duration;

    use bytes::{BufMut, Bytes, BytesMut};
    use fitz_protocol::control::{Connect, ServerHello};
    use fitz_protocol::frame::FrameDecoder;
    use fitz_protocol::kv::{self, TxMode};
    use fitz_protocol::record::{self, put_label};
    use fitz_protocol::{Message, types};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use crate::support::binary::BrokerProcess;

    /// What the issue that found the faults allowed above the baseline.
    const HEADROOM: u64 = 64 << 20;

    fn rss(pid: u32) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kb * 1024
    }

    /// The highest RSS seen over `d`, sampled every 20 ms.
    async fn peak(pid: u32, d: Duration) -> u64 {
        let end = tokio::time::Instant::now() + d;
        let mut max = rss(pid);
        while tokio::time::Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(20)).await;
            max = max.max(rss(pid));
        }
        max
    }

    fn frame(correlation: Option<u64>, m: &impl Message) -> BytesMut {
        let mut body = BytesMut::new();
        if let Some(id) = correlation {
            put_label(&mut body, types::CORRELATE, id);
        }
        m.encode_record(&mut body).unwrap();
        let mut b = BytesMut::new();
        b.put_u32(body.len() as u32);
        b.put_slice(&body);
        b
    }

    async fn session(addr: &str) -> (TcpStream, BytesMut) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        s.write_all(&frame(
            None,
            &Connect {
                token: Bytes::new(),
            },
        ))
        .await
        .unwrap();
        let mut buf = BytesMut::new();
        let hello = next_frame(&mut s, &mut buf).await.expect("hello");
        let rec = record::decode_single_record(hello).unwrap();
        ServerHello::decode(rec.payload).unwrap();
        (s, buf)
    }

    async fn next_frame(
        s: &mut (impl tokio::io::AsyncRead + Unpin),
        buf: &mut BytesMut,
    ) -> Option<Bytes> {
        loop {
            if let Some(f) = FrameDecoder::new(usize::MAX).decode(buf).unwrap() {
                return Some(f);
            }
            buf.reserve(64 * 1024);
            match tokio::time::timeout(Duration::from_secs(10), s.read_buf(buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }

    /// The broker still serves a normal client.
    async fn still_serves(addr: &str) {
        let (mut s, mut buf) = session(addr).await;
        s.write_all(&frame(
            Some(1),
            &kv::Begin {
                route: "kv://ok/ok/ok".into(),
                mode: TxMode::ReadOnly,
            },
        ))
        .await
        .unwrap();
        assert!(next_frame(&mut s, &mut buf).await.is_some(), "served");
    }

    /// A fresh broker binary per attack (freed memory stays with the
    /// allocator, so attacks in one process would add up): its baseline
    /// after serving one client, then its peak RSS while `attack` runs, and
    /// a normal client served afterwards.
    async fn measure<F, Fut>(what: &str, attack: F)
    where
        F: FnOnce(String, u32) -> Fut,
        Fut: std::future::Future<Output = u64>,
    {
        let broker = BrokerProcess::spawn(&[
            ("FITZ_AUTH_REQUIRED", "false"),
            ("FITZ_STORAGE_MODE", "memory"),
        ]);
        let pid = broker.id();
        let addr = broker.tcp_url.trim_start_matches("tcp://").to_owned();
        still_serves(&addr).await;
        let baseline = rss(pid);
        let peak = attack(addr.clone(), pid).await;
        still_serves(&addr).await;
        println!(
            "RSS under {what}: {:.1} MiB (baseline {:.1} MiB, +{:.1} MiB)",
            peak as f64 / 1048576.0,
            baseline as f64 / 1048576.0,
            peak.saturating_sub(baseline) as f64 / 1048576.0
        );
        assert!(
            peak <= baseline + HEADROOM,
            "{what}: RSS {peak} over baseline {baseline} + 64 MiB"
        );
        broker.kill();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stalled_frames_keep_the_binary_within_its_baseline_plus_64_mib() {
        measure(
            "200 sessions stalled one byte short of a 1 MiB frame",
            |addr, pid| async move {
                let mut held = Vec::new();
                for _ in 0..200 {
                    let (mut s, _) = session(&addr).await;
                    held.push(tokio::spawn(async move {
                        let mut b = BytesMut::with_capacity(1 << 20);
                        b.put_u32(1 << 20);
                        b.put_slice(&vec![0u8; (1 << 20) - 1]);
                        let _ = s.write_all(&b).await;
                        // Keep the connection open until aborted.
                        std::future::pending::<()>().await;
                    }));
                }
                let peak = peak(pid, Duration::from_millis(1500)).await;
                still_serves(&addr).await;
                for h in held {
                    h.abort();
                }
                peak
            },
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_huge_transaction_keeps_the_binary_within_its_baseline_plus_64_mib() {
        measure(
            "one transaction of 2,000 PUTs of 60 KiB",
            |addr, pid| async move {
                let (mut s, mut buf) = session(&addr).await;
                s.write_all(&frame(
                    Some(1),
                    &kv::Begin {
                        route: "kv://big/tx/r".into(),
                        mode: TxMode::ReadWrite,
                    },
                ))
                .await
                .unwrap();
                let begin = next_frame(&mut s, &mut buf).await.expect("begin reply");
                let reply = record::LabelledRecords::new(begin, record::Side::Client)
                    .next()
                    .unwrap()
                    .unwrap();
                let ok: kv::BeginOk = fitz_protocol::decode_reply(reply.record.payload)
                    .unwrap()
                    .unwrap();
                let (mut rd, mut wr) = s.into_split();
                let writer = tokio::spawn(async move {
                    let value = Bytes::from(vec![9u8; 60 * 1024]);
                    for i in 0..2_000u64 {
                        let f = frame(
                            Some(10 + i),
                            &kv::Put {
                                tx_id: ok.tx_id,
                                route: "kv://big/tx/r".into(),
                                key: Bytes::from(format!("k{i}")),
                                value: value.clone(),
                            },
                        );
                        if wr.write_all(&f).await.is_err() {
                            break;
                        }
                    }
                    wr
                });
                let reader = tokio::spawn(async move {
                    let mut replies = 0;
                    let mut aborted = false;
                    while replies < 2_000 {
                        let Some(f) = next_frame(&mut rd, &mut buf).await else {
                            break;
                        };
                        replies += 1;
                        let rec = record::LabelledRecords::new(f, record::Side::Client)
                            .next()
                            .unwrap()
                            .unwrap();
                        if let Ok(Err(e)) =
                            fitz_protocol::decode_reply::<kv::PutOk>(rec.record.payload)
                        {
                            aborted |= e.code() == Some(fitz_protocol::codes::KV_ABORTED);
                        }
                    }
                    (replies, aborted)
                });
                let peak = peak(pid, Duration::from_millis(1500)).await;
                let _ = writer.await;
                let (replies, aborted) = reader.await.unwrap();
                assert_eq!(replies, 2_000, "every PUT answered");
                assert!(aborted, "the transaction was aborted with 1010");
                peak
            },
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_sessions_cost_little() {
        measure("1,000 idle sessions", |addr, pid| async move {
            let mut idle = Vec::new();
            for _ in 0..1_000 {
                idle.push(session(&addr).await);
            }
            let peak = peak(pid, Duration::from_millis(300)).await;
            still_serves(&addr).await;
            peak
        })
        .await;
    }
}
