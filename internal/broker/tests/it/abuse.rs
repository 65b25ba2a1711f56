//! Hostile input against the broker binary, one class at a time. For each:
//! the bad connection is closed (or answered with the spec's code where the
//! input is a well-framed request), a bystander session opened before the
//! first attack is still served after it, and the broker's resident memory
//! (from `/proc`) stays within its baseline + 64 MiB throughout.
//!
//! The binary runs with a 1 s connect and frame timeout so the slow attacks
//! (slowloris, idle floods, stalled frames) resolve in seconds; everything
//! else uses the defaults.
#![cfg(target_os = "linux")]

use std::time::Duration;

use crate::support::binary::BrokerProcess;
use bytes::{BufMut, Bytes, BytesMut};
use fitz_protocol::control::Connect;
use fitz_protocol::frame::FrameDecoder;
use fitz_protocol::kv::{self, TxMode};
use fitz_protocol::record::{self, LabelledRecords, Side, put_label};
use fitz_protocol::{Message, WireError, codes, types};
use rand::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The bound every attack is held to.
const HEADROOM: u64 = 64 << 20;
/// Longer than the binary's 1 s connect/frame timeouts.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);

fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// `[u32 len][records]`.
fn framed(records: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + records.len());
    b.extend_from_slice(&(records.len() as u32).to_be_bytes());
    b.extend_from_slice(records);
    b
}

fn record_of(correlation: Option<u64>, m: &impl Message) -> BytesMut {
    let mut b = BytesMut::new();
    if let Some(id) = correlation {
        put_label(&mut b, types::CORRELATE, id);
    }
    m.encode_record(&mut b).unwrap();
    b
}

fn connect_frame() -> Vec<u8> {
    framed(&record_of(
        None,
        &Connect {
            token: Bytes::new(),
        },
    ))
}

/// A raw TCP connection to the binary.
struct Conn {
    s: TcpStream,
    buf: BytesMut,
}

impl Conn {
    async fn open(addr: &str) -> Conn {
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        Conn {
            s,
            buf: BytesMut::new(),
        }
    }

    /// Past CONNECT and SERVER_HELLO.
    async fn session(addr: &str) -> Conn {
        let mut c = Conn::open(addr).await;
        c.send(&connect_frame()).await;
        assert!(c.frame().await.is_some(), "SERVER_HELLO");
        c
    }

    async fn send(&mut self, bytes: &[u8]) {
        // The broker may close mid-write: that is what some attacks expect.
        let _ = self.s.write_all(bytes).await;
    }

    async fn frame(&mut self) -> Option<Bytes> {
        loop {
            if let Ok(Some(f)) = FrameDecoder::new(usize::MAX).decode(&mut self.buf) {
                return Some(f);
            }
            self.buf.reserve(64 * 1024);
            match tokio::time::timeout(CLOSE_WITHIN, self.s.read_buf(&mut self.buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }

    /// The broker closed the connection (anything it sent first is skipped).
    async fn closed(&mut self) -> bool {
        let mut sink = [0u8; 4096];
        loop {
            match tokio::time::timeout(CLOSE_WITHIN, self.s.read(&mut sink)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }

    /// The coded error answering correlation `id`.
    async fn error_for(&mut self, id: u64) -> WireError {
        loop {
            let f = self.frame().await.expect("an answer");
            for l in LabelledRecords::new(f, Side::Client) {
                let l = l.unwrap();
                if l.correlation == Some(id) {
                    return WireError::decode(l.record.payload).expect("an error reply");
                }
            }
        }
    }
}

/// A session that must keep being served: one KV BEGIN per check.
struct Bystander {
    c: Conn,
    next: u64,
}

impl Bystander {
    async fn served(&mut self, after: &str) {
        self.next += 1;
        let id = self.next;
        self.c
            .send(&framed(&record_of(
                Some(id),
                &kv::Begin {
                    route: "kv://by/stander/r".into(),
                    mode: TxMode::ReadOnly,
                },
            )))
            .await;
        let f = self.c.frame().await;
        assert!(f.is_some(), "bystander not served after {after}");
    }
}

/// An HTTP request head to the binary's HTTP port; the status line back.
async fn http(addr: &str, head: &str) -> String {
    let mut c = Conn::open(addr).await;
    c.send(head.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(CLOSE_WITHIN, c.s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// An upgraded WebSocket connection, raw (frames written by hand).
async fn ws_raw(addr: &str) -> Conn {
    let mut c = Conn::open(addr).await;
    c.send(UPGRADE.as_bytes()).await;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        c.s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    c
}

/// A masked client WebSocket frame.
fn ws_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![(u8::from(fin) << 7) | opcode];
    let len = payload.len();
    if len < 126 {
        f.push(0x80 | len as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    }
    let mask = [1u8, 2, 3, 4];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_input_class_is_contained() {
    let broker = BrokerProcess::spawn(&[
        ("FITZ_AUTH_REQUIRED", "false"),
        ("FITZ_STORAGE_MODE", "memory"),
        ("FITZ_CONNECT_TIMEOUT_SECS", "1"),
        ("FITZ_FRAME_TIMEOUT_SECS", "1"),
    ]);
    let pid = broker.id();
    let tcp = broker.tcp_url.trim_start_matches("tcp://").to_owned();
    let web = broker
        .ws_url
        .trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .to_owned();
    let mut by = Bystander {
        c: Conn::session(&tcp).await,
        next: 0,
    };
    by.served("start").await;
    let baseline = rss(pid);
    let mut peak = baseline;
    let check = |what: &str, peak: &mut u64| {
        let now = rss(pid);
        *peak = (*peak).max(now);
        assert!(
            now <= baseline + HEADROOM,
            "{what}: RSS {now} over {baseline} + 64 MiB"
        );
    };

    // Random bytes, before and after CONNECT.
    let mut noise = vec![0u8; 64 * 1024];
    rand::rng().fill_bytes(&mut noise);
    let mut c = Conn::open(&tcp).await;
    c.send(&noise).await;
    assert!(c.closed().await, "random bytes before CONNECT");
    let mut c = Conn::session(&tcp).await;
    c.send(&noise).await;
    assert!(c.closed().await, "random bytes after CONNECT");
    by.served("random bytes").await;
    check("random bytes", &mut peak);

    // Huge and zero length prefixes; a truncated prefix (then silence).
    for prefix in [[0xFFu8, 0xFF, 0xFF, 0xFF], [0, 0x20, 0, 1], [0, 0, 0, 0]] {
        let mut c = Conn::session(&tcp).await;
        c.send(&prefix).await;
        assert!(c.closed().await, "prefix {prefix:?}");
    }
    let mut c = Conn::session(&tcp).await;
    c.send(&[0, 0]).await;
    assert!(c.closed().await, "truncated prefix");
    by.served("length prefixes").await;
    check("length prefixes", &mut peak);

    // A domain frame before CONNECT.
    let mut c = Conn::open(&tcp).await;
    c.send(&framed(&record_of(
        Some(1),
        &kv::Begin {
            route: "kv://a/b/c".into(),
            mode: TxMode::ReadOnly,
        },
    )))
    .await;
    assert!(c.closed().await, "a frame before CONNECT");

    // Chained labels: two CORRELATEs before one record.
    let mut c = Conn::session(&tcp).await;
    let mut body = BytesMut::new();
    put_label(&mut body, types::CORRELATE, 1);
    body.extend_from_slice(&record_of(
        Some(2),
        &kv::Begin {
            route: "kv://a/b/c".into(),
            mode: TxMode::ReadOnly,
        },
    ));
    c.send(&framed(&body)).await;
    assert!(c.closed().await, "chained labels");
    by.served("chained labels").await;

    // A count claiming millions: CREATE_BATCH of u32::MAX entries, none
    // present. Well framed, so it is answered, not closed.
    let mut c = Conn::session(&tcp).await;
    let mut body = BytesMut::new();
    put_label(&mut body, types::CORRELATE, 7);
    record::encode_raw_record(
        &mut body,
        types::SCHEDULE_CREATE_BATCH,
        &u32::MAX.to_be_bytes(),
    )
    .unwrap();
    c.send(&framed(&body)).await;
    let e = c.error_for(7).await;
    assert!(
        e.code == 0 || codes::name(e.code).starts_with("SCHEDULE"),
        "a schedule-domain error: {e:?}"
    );
    by.served("counts claiming millions").await;
    check("counts", &mut peak);

    // Slowloris: before CONNECT, after CONNECT, on the HTTP head. Each drips
    // a byte every 100 ms and is closed by its deadline all the same.
    let connect = connect_frame();
    let mut before = Conn::open(&tcp).await;
    let mut after = Conn::session(&tcp).await;
    let mut head = Conn::open(&web).await;
    let partial = framed(&[0u8; 200]);
    let drip = async {
        for i in 0..30 {
            before.send(&connect[i % connect.len()..][..1]).await;
            after.send(&partial[i..i + 1]).await;
            head.send(&UPGRADE.as_bytes()[i..i + 1]).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(4), drip)
        .await
        .ok();
    assert!(before.closed().await, "slowloris before CONNECT");
    assert!(after.closed().await, "slowloris after CONNECT");
    assert!(head.closed().await, "slowloris on the HTTP head");
    by.served("slowloris").await;
    check("slowloris", &mut peak);

    // An idle flood: 500 connections that never speak.
    let mut idle = Vec::new();
    for _ in 0..500 {
        idle.push(Conn::open(&tcp).await);
    }
    check("idle flood", &mut peak);
    by.served("an idle flood").await;
    for mut c in idle {
        assert!(c.closed().await, "an idle connection");
    }

    // Stalled partial frames: 50 sessions each 256 KiB into a 1 MiB frame.
    let mut stalled = Vec::new();
    for _ in 0..50 {
        let mut c = Conn::session(&tcp).await;
        let mut b = BytesMut::new();
        b.put_u32(1 << 20);
        b.put_slice(&vec![0u8; 256 * 1024]);
        c.send(&b).await;
        stalled.push(c);
    }
    check("stalled frames", &mut peak);
    by.served("stalled frames").await;
    for mut c in stalled {
        assert!(c.closed().await, "a stalled frame");
    }

    // Bad WebSocket upgrades.
    for (what, head) in [
        (
            "no key",
            "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
        ),
        (
            "wrong version",
            "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: eA==\r\nSec-WebSocket-Version: 8\r\n\r\n",
        ),
        ("not an upgrade", "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("garbage", "\x16\x03\x01\x02\x00 not http at all\r\n\r\n"),
    ] {
        let status = http(&web, head).await;
        assert!(
            status.is_empty() || status.starts_with("HTTP/1.1 4"),
            "{what}: {status:?}"
        );
    }
    let huge = format!("GET /ws HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(16 * 1024));
    let status = http(&web, &huge).await;
    assert!(
        !status.starts_with("HTTP/1.1 101"),
        "a 16 KiB head: {status:?}"
    );
    by.served("bad upgrades").await;

    // Bad WebSocket frames after the upgrade (and CONNECT).
    let connect_msg = ws_frame(
        2,
        true,
        &record_of(
            None,
            &Connect {
                token: Bytes::new(),
            },
        ),
    );
    for (what, frame) in [
        ("a text frame", ws_frame(1, true, b"hello")),
        ("a reserved opcode", ws_frame(3, true, b"x")),
        ("a fragmented ping", ws_frame(9, false, b"x")),
        ("an unmasked frame", vec![0x82, 0x01, 0x00]),
        ("an empty binary frame", ws_frame(2, true, b"")),
    ] {
        let mut c = ws_raw(&web).await;
        c.send(&connect_msg).await;
        c.send(&frame).await;
        assert!(c.closed().await, "{what}");
    }
    by.served("bad WebSocket frames").await;
    check("WebSocket", &mut peak);

    // An oversize transaction: answered 1010, the session lives.
    let mut c = Conn::session(&tcp).await;
    c.send(&framed(&record_of(
        Some(1),
        &kv::Begin {
            route: "kv://big/tx/r".into(),
            mode: TxMode::ReadWrite,
        },
    )))
    .await;
    let f = c.frame().await.unwrap();
    let rec = LabelledRecords::new(f, Side::Client)
        .next()
        .unwrap()
        .unwrap();
    let ok: kv::BeginOk = fitz_protocol::decode_reply(rec.record.payload)
        .unwrap()
        .unwrap();
    let value = Bytes::from(vec![1u8; 60 * 1024]);
    let mut aborted = false;
    for i in 0..200u64 {
        c.send(&framed(&record_of(
            Some(10 + i),
            &kv::Put {
                tx_id: ok.tx_id,
                route: "kv://big/tx/r".into(),
                key: Bytes::from(format!("k{i}")),
                value: value.clone(),
            },
        )))
        .await;
        let f = c.frame().await.expect("answered");
        let rec = LabelledRecords::new(f, Side::Client)
            .next()
            .unwrap()
            .unwrap();
        if let Ok(Err(e)) = fitz_protocol::decode_reply::<kv::PutOk>(rec.record.payload) {
            assert_eq!(e.code(), Some(codes::KV_ABORTED), "{e:?}");
            aborted = true;
            break;
        }
    }
    assert!(aborted, "the transaction hit its budget");
    by.served("an oversize transaction").await;
    check("oversize transaction", &mut peak);

    println!(
        "abuse: RSS baseline {:.1} MiB, peak {:.1} MiB (+{:.1} MiB)",
        baseline as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        peak.saturating_sub(baseline) as f64 / 1048576.0
    );
    broker.kill();
}
