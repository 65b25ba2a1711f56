//! Fixed-duration measurement windows: a rate with a bounded number of
//! operations in flight, a median latency with one in flight, a one-way
//! stream (publisher → subscriber), and the raw echo baselines.

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fitz_bench::raw;
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, Semaphore};
use tokio_tungstenite::tungstenite::Message;

/// What one side's operation returns: an error is reported, not unwrapped,
/// so one failing client leaves a gap in its row instead of ending the run.
pub type Op = Result<(), String>;

/// Turns any error into the [`Op`] error.
pub fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Operations per second: keeps `window` operations from `make` in flight
/// until `dur` has passed, then waits for those in flight. `None` if one
/// failed.
pub async fn rate<F, Fut>(dur: Duration, window: usize, mut make: F) -> Option<f64>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Op>,
{
    let started = Instant::now();
    let mut inflight = FuturesUnordered::new();
    let (mut issued, mut done) = (0u64, 0u64);
    while inflight.len() < window {
        inflight.push(make(issued));
        issued += 1;
    }
    while let Some(r) = inflight.next().await {
        if let Err(e) = r {
            eprintln!("    operation failed: {e}");
            return None;
        }
        done += 1;
        if started.elapsed() < dur {
            inflight.push(make(issued));
            issued += 1;
        }
    }
    Some(done as f64 / started.elapsed().as_secs_f64())
}

/// Median latency in µs of `op` run back to back for `dur` (at least 5
/// times). `None` if one failed.
pub async fn p50<F, Fut>(dur: Duration, mut op: F) -> Option<f64>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Op>,
{
    let started = Instant::now();
    let mut times = Vec::with_capacity(4096);
    while started.elapsed() < dur || times.len() < 5 {
        let t = Instant::now();
        if let Err(e) = op().await {
            eprintln!("    operation failed: {e}");
            return None;
        }
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    Some(times[times.len() / 2])
}

/// How long a published message may take to arrive before the stream
/// counts it lost and fails the window.
const LOST: Duration = Duration::from_secs(5);

/// A one-way stream measured at the receiver, in messages per second.
/// `publish` is called with at most `window` messages published and not yet
/// received (and at most `publishing` publishes pending at once) until
/// `dur` has passed; `sub` yields one item per published message, which
/// `check` turns into an [`Op`]. `kick` runs when the window is full and
/// once at the end: a client that buffers publishes until a flush (NATS)
/// flushes there, others do nothing.
#[allow(clippy::too_many_arguments)] // one call shape for three clients
pub async fn stream<P, PF, K, KF, S, T>(
    dur: Duration,
    window: usize,
    publishing: usize,
    mut publish: P,
    kick: K,
    sub: &mut S,
    check: impl Fn(T) -> Op,
) -> Option<f64>
where
    P: FnMut() -> PF,
    PF: Future<Output = Op>,
    K: Fn() -> KF,
    KF: Future<Output = Op>,
    S: futures_util::Stream<Item = T> + Unpin,
{
    let room = Semaphore::new(window);
    let sent = Cell::new(0u64);
    let finished = Cell::new(false);
    let kicking = Cell::new(false);
    let progress = Notify::new();
    let started = Instant::now();
    let publisher = async {
        let r = rate(dur, publishing, |_| {
            let publish = publish();
            let (room, sent, progress, kick, kicking) = (&room, &sent, &progress, &kick, &kicking);
            async move {
                let permit = match room.try_acquire() {
                    Ok(p) => p,
                    Err(_) => {
                        if !kicking.replace(true) {
                            let k = kick().await;
                            if let Err(e) = &k {
                                eprintln!("    flush failed: {e}");
                            }
                            kicking.set(false);
                            k?;
                        }
                        room.acquire().await.map_err(err)?
                    }
                };
                permit.forget();
                sent.set(sent.get() + 1);
                progress.notify_one();
                publish.await
            }
        })
        .await;
        let kicked = kick().await;
        if let Err(e) = &kicked {
            eprintln!("    final flush failed: {e}");
        }
        finished.set(true);
        progress.notify_one();
        r.filter(|_| kicked.is_ok())
    };
    let receiver = async {
        let mut got = 0u64;
        loop {
            if got < sent.get() {
                let r = match tokio::time::timeout(LOST, sub.next()).await {
                    Ok(Some(item)) => check(item),
                    Ok(None) => Err("subscription ended".to_string()),
                    Err(_) => Err(format!(
                        "message {got} of {} not delivered within {LOST:?} (publishing {})",
                        sent.get(),
                        if finished.get() {
                            "finished"
                        } else {
                            "blocked"
                        }
                    )),
                };
                if let Err(e) = r {
                    eprintln!("    receive failed: {e}");
                    return None;
                }
                got += 1;
                room.add_permits(1);
            } else if finished.get() {
                return Some(got as f64 / started.elapsed().as_secs_f64());
            } else {
                progress.notified().await;
            }
        }
    };
    let (published, received) = tokio::join!(publisher, receiver);
    published.and(received)
}

/// Raw TCP ping-pong p50 (µs) of `size` bytes against the echo peer.
pub async fn raw_tcp_p50(addr: SocketAddr, size: usize, dur: Duration) -> Option<f64> {
    let mut s = raw::tcp_client(addr).await;
    let payload = vec![7u8; size];
    let mut back = vec![0u8; size];
    let s = &mut s;
    let back = &mut back;
    let payload = &payload;
    let started = Instant::now();
    let mut times = Vec::with_capacity(4096);
    while started.elapsed() < dur {
        let t = Instant::now();
        s.write_all(payload).await.ok()?;
        s.read_exact(back).await.ok()?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    times.get(times.len() / 2).copied()
}

/// Raw WebSocket ping-pong p50 (µs) of `size` bytes.
pub async fn raw_ws_p50(addr: SocketAddr, size: usize, dur: Duration) -> Option<f64> {
    let mut w = raw::ws_client(addr).await;
    let payload = Bytes::from(vec![7u8; size]);
    let started = Instant::now();
    let mut times = Vec::with_capacity(4096);
    while started.elapsed() < dur {
        let t = Instant::now();
        raw::ws_ping(&mut w, &payload).await;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    times.get(times.len() / 2).copied()
}

/// Raw pipelined TCP echo of `size`-byte messages with `window` in flight,
/// messages per second (the writer batches what the window allows into one
/// write, as `baseline`'s `raw_pipelined` does).
pub async fn raw_tcp_pipelined(
    addr: SocketAddr,
    size: usize,
    window: usize,
    dur: Duration,
) -> Option<f64> {
    let s = raw::tcp_client(addr).await;
    let (mut r, mut w) = s.into_split();
    let room = Semaphore::new(window);
    let sent = Cell::new(0u64);
    let finished = Cell::new(false);
    let progress = Notify::new();
    let batch = vec![7u8; size * window];
    let started = Instant::now();
    let writer = async {
        while started.elapsed() < dur {
            let Ok(p) = room.acquire().await else { break };
            p.forget();
            let mut k = 1;
            while let Ok(p) = room.try_acquire() {
                p.forget();
                k += 1;
            }
            if w.write_all(&batch[..k * size]).await.is_err() {
                break;
            }
            sent.set(sent.get() + k as u64);
            progress.notify_one();
        }
        finished.set(true);
        progress.notify_one();
    };
    let reader = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0usize;
        loop {
            let msgs = (got / size) as u64;
            if finished.get() && msgs >= sent.get() {
                return Some(msgs as f64 / started.elapsed().as_secs_f64());
            }
            tokio::select! {
                k = r.read(&mut buf) => {
                    let k = k.ok()?;
                    if k == 0 {
                        return None;
                    }
                    let before = got / size;
                    got += k;
                    room.add_permits(got / size - before);
                }
                _ = progress.notified() => {}
            }
        }
    };
    let ((), rate) = tokio::join!(writer, reader);
    rate
}

/// Raw pipelined WebSocket echo of `size`-byte messages with `window` in
/// flight, messages per second.
pub async fn raw_ws_pipelined(
    addr: SocketAddr,
    size: usize,
    window: usize,
    dur: Duration,
) -> Option<f64> {
    let (mut tx, mut rx) = raw::ws_client(addr).await.split();
    let room = Semaphore::new(window);
    let sent = Cell::new(0u64);
    let finished = Cell::new(false);
    let progress = Notify::new();
    let payload = Bytes::from(vec![7u8; size]);
    let started = Instant::now();
    let writer = async {
        while started.elapsed() < dur {
            let Ok(p) = room.acquire().await else { break };
            p.forget();
            if tx.feed(Message::Binary(payload.clone())).await.is_err() {
                break;
            }
            let mut k = 1u64;
            while let Ok(p) = room.try_acquire() {
                p.forget();
                if tx.feed(Message::Binary(payload.clone())).await.is_err() {
                    break;
                }
                k += 1;
            }
            if tx.flush().await.is_err() {
                break;
            }
            sent.set(sent.get() + k);
            progress.notify_one();
        }
        finished.set(true);
        progress.notify_one();
    };
    let reader = async {
        let mut got = 0u64;
        loop {
            if finished.get() && got >= sent.get() {
                return Some(got as f64 / started.elapsed().as_secs_f64());
            }
            tokio::select! {
                m = rx.next() => {
                    match m {
                        Some(Ok(m)) if m.is_binary() => {
                            got += 1;
                            room.add_permits(1);
                        }
                        Some(Ok(_)) => {}
                        _ => return None,
                    }
                }
                _ = progress.notified() => {}
            }
        }
    };
    let ((), rate) = tokio::join!(writer, reader);
    rate
}
