//! A live, byte-level TCP proxy that can cut, stall, slow down or refuse
//! connections between a client and a broker. Byte-level, so it carries raw
//! Fitz TCP and WebSocket (and TLS) alike.
//!
//! ```no_run
//! # async fn demo(upstream: std::net::SocketAddr) -> std::io::Result<()> {
//! let proxy = fitz_testkit::Proxy::start(upstream).await?;
//! let url = format!("tcp://{}", proxy.addr());
//! // … connect a client to `url` …
//! proxy.cut_all();             // every live connection is closed now
//! proxy.blackhole(true);       // half-open: sockets stay, nothing moves
//! proxy.stall(fitz_testkit::Direction::Up, true); // the broker "stops reading"
//! proxy.cut_handshakes(1, 1);  // the next connection dies right after CONNECT
//! proxy.upstream_down(true);   // accept, then drop: a proxy whose broker is down
//! proxy.refuse_new(true);      // the port stops listening (connection refused)
//! # Ok(()) }
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A direction of traffic through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client → broker.
    Up,
    /// Broker → client.
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Knobs {
    /// Nothing is read client → broker (the broker looks like a peer that
    /// stopped reading).
    stall_up: bool,
    /// Nothing is read broker → client.
    stall_down: bool,
    refuse: bool,
    /// Accept, then close at once without connecting upstream.
    upstream_down: bool,
    delay: Duration,
    /// Bumped by `cut_all`: connections of an older epoch close.
    epoch: u64,
    /// The next this-many new connections are cut right after their
    /// `cut_after`-th client chunk has been forwarded.
    cut_handshakes: u32,
    cut_after: u32,
}

impl Knobs {
    fn stalled(&self, dir: Direction) -> bool {
        match dir {
            Direction::Up => self.stall_up,
            Direction::Down => self.stall_down,
        }
    }
}

struct Inner {
    addr: SocketAddr,
    knobs: watch::Sender<Knobs>,
    accept_task: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.accept_task.abort();
        // Ends every connection task too.
        self.knobs.send_modify(|k| k.epoch += 1);
    }
}

/// Starts proxies.
pub struct Proxy;

impl Proxy {
    /// Listens on `127.0.0.1:0` and forwards each connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> io::Result<ProxyHandle> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (knobs, _) = watch::channel(Knobs::default());
        let live = Arc::new(AtomicUsize::new(0));
        let accept_task = tokio::spawn(accept_loop(
            listener,
            addr,
            upstream,
            knobs.clone(),
            live.clone(),
        ));
        Ok(ProxyHandle {
            inner: Arc::new(Inner {
                addr,
                knobs,
                accept_task,
            }),
            live,
        })
    }
}

/// Controls a running proxy. Dropping the last handle stops it and closes
/// every connection.
#[derive(Clone)]
pub struct ProxyHandle {
    inner: Arc<Inner>,
    live: Arc<AtomicUsize>,
}

impl ProxyHandle {
    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `tcp://addr`.
    pub fn tcp_url(&self) -> String {
        format!("tcp://{}", self.inner.addr)
    }

    /// `ws://addr/ws` (when the upstream is a broker's HTTP port).
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.inner.addr)
    }

    /// Closes every live connection (both sides see FIN). New connections
    /// are still accepted.
    pub fn cut_all(&self) {
        self.inner.knobs.send_modify(|k| k.epoch += 1);
    }

    /// Half-open mode: sockets stay open but no byte moves in either
    /// direction until switched off (bytes in flight are then delivered).
    pub fn blackhole(&self, on: bool) {
        self.inner.knobs.send_modify(|k| {
            k.stall_up = on;
            k.stall_down = on;
        });
    }

    /// One-way black hole: nothing is read in `direction` until switched off
    /// (then everything buffered moves on). `Up` makes the broker look like a
    /// peer that stopped reading: the client's writes back up into its own
    /// buffers. `Down` is a half-open link whose replies never arrive.
    pub fn stall(&self, direction: Direction, on: bool) {
        self.inner.knobs.send_modify(|k| match direction {
            Direction::Up => k.stall_up = on,
            Direction::Down => k.stall_down = on,
        });
    }

    /// Cuts each of the next `connections` new connections right after its
    /// `chunk`-th client write has been forwarded to the broker, before
    /// anything more comes back: with `chunk = 1` on raw TCP that is just
    /// after CONNECT (the client sees an orderly close and no SERVER_HELLO);
    /// on WebSocket the first chunk is the HTTP upgrade, so `chunk = 2`.
    pub fn cut_handshakes(&self, connections: u32, chunk: u32) {
        self.inner.knobs.send_modify(|k| {
            k.cut_handshakes = connections;
            k.cut_after = chunk.max(1);
        });
    }

    /// While on, new connections are accepted and closed at once without
    /// connecting upstream: an L4 proxy or load balancer whose broker is down
    /// or restarting.
    pub fn upstream_down(&self, on: bool) {
        self.inner.knobs.send_modify(|k| k.upstream_down = on);
    }

    /// Delays every forwarded chunk by `delay` (order is kept).
    pub fn set_delay(&self, delay: Duration) {
        self.inner.knobs.send_modify(|k| k.delay = delay);
    }

    /// Stops listening (new connections are refused) or resumes on the same
    /// port. Live connections are unaffected.
    pub fn refuse_new(&self, on: bool) {
        self.inner.knobs.send_modify(|k| k.refuse = on);
    }

    /// Refuses new connections for `duration`, then listens again.
    pub fn refuse_new_for(&self, duration: Duration) {
        self.refuse_new(true);
        let knobs = self.inner.knobs.clone();
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            knobs.send_modify(|k| k.refuse = false);
        });
    }

    /// Connections currently forwarded.
    pub fn connection_count(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Waits until `connection_count() == n` (polling every 5 ms), up to
    /// `timeout`. True on success.
    pub async fn wait_for_connections(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.connection_count() != n {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    upstream: SocketAddr,
    knobs: watch::Sender<Knobs>,
    live: Arc<AtomicUsize>,
) {
    let mut rx = knobs.subscribe();
    let mut listener = Some(listener);
    loop {
        // Knobs may have changed before this task first ran.
        if rx.borrow_and_update().refuse {
            listener = None;
        }
        let Some(l) = &listener else {
            // Refusing: wait until told to listen again, then rebind the port.
            if rx.wait_for(|k| !k.refuse).await.is_err() {
                return;
            }
            listener = rebind(addr).await;
            if listener.is_none() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            continue;
        };
        tokio::select! {
            accepted = l.accept() => {
                let Ok((client, _)) = accepted else { continue };
                let _ = client.set_nodelay(true);
                let mut cut_after = None;
                let mut down = false;
                knobs.send_if_modified(|k| {
                    down = k.upstream_down;
                    if down || k.cut_handshakes == 0 {
                        return false;
                    }
                    k.cut_handshakes -= 1;
                    cut_after = Some(k.cut_after);
                    true
                });
                if down {
                    drop(client);
                    continue;
                }
                tokio::spawn(forward(client, upstream, knobs.subscribe(), live.clone(), cut_after));
            }
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
                if rx.borrow_and_update().refuse {
                    listener = None;
                }
            }
        }
    }
}

async fn rebind(addr: SocketAddr) -> Option<TcpListener> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.set_reuseaddr(true).ok()?;
    socket.bind(addr).ok()?;
    socket.listen(1024).ok()
}

async fn forward(
    client: TcpStream,
    upstream: SocketAddr,
    mut knobs: watch::Receiver<Knobs>,
    live: Arc<AtomicUsize>,
    cut_after: Option<u32>,
) {
    let epoch = knobs.borrow_and_update().epoch;
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    live.fetch_add(1, Ordering::AcqRel);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    // `up` ends after its `cut_after`-th chunk; polled in this one task, so
    // nothing more moves down once it has.
    let up = pump(cr, sw, knobs.clone(), Direction::Up, cut_after);
    let down = pump(sr, cw, knobs.clone(), Direction::Down, None);
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = knobs.wait_for(|k| k.epoch != epoch) => {}
    }
    live.fetch_sub(1, Ordering::AcqRel);
    // Both halves drop here: the peers see the connection close.
}

async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut knobs: watch::Receiver<Knobs>,
    dir: Direction,
    mut chunks_left: Option<u32>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if knobs.wait_for(|k| !k.stalled(dir)).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let delay = knobs.borrow().delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if knobs.wait_for(|k| !k.stalled(dir)).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        if let Some(left) = &mut chunks_left {
            *left -= 1;
            if *left == 0 {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.into_split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn forwards_cuts_and_refuses() {
        let proxy = Proxy::start(echo().await).await.unwrap();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi");
        assert!(proxy.wait_for_connections(1, Duration::from_secs(2)).await);
        proxy.cut_all();
        assert_eq!(c.read(&mut buf).await.unwrap(), 0);
        assert!(proxy.wait_for_connections(0, Duration::from_secs(2)).await);

        proxy.refuse_new(true);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(TcpStream::connect(proxy.addr()).await.is_err());
        proxy.refuse_new(false);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();

        proxy.blackhole(true);
        c.write_all(b"yo").await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(100), c.read(&mut buf))
                .await
                .is_err()
        );
        proxy.blackhole(false);
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"yo");
    }
}
