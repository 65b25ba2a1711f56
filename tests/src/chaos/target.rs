//! The broker a chaos run attacks: embedded, or the `fitz-broker` binary as
//! a child process; either way on fixed loopback ports and local storage, so
//! it can be restarted under the same proxy and keep its committed data.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fitz_broker::{Broker, StorageMode};

/// Which broker to run.
#[derive(Debug, Clone)]
pub enum TargetKind {
    /// In this process; a restart is a clean shutdown and start.
    Embedded,
    /// The binary at this path; a restart is a SIGKILL and start.
    Binary(PathBuf),
}

enum Running {
    Embedded(Broker),
    Binary(Child),
    Stopped,
}

/// A restartable broker.
pub struct Target {
    kind: TargetKind,
    dir: PathBuf,
    tcp: SocketAddr,
    http: SocketAddr,
    running: Running,
    restarts: u32,
}

impl Target {
    /// Starts a broker of `kind` with its data in `dir` (created, and
    /// removed when the target is dropped).
    pub async fn start(kind: TargetKind, dir: PathBuf) -> Target {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("chaos data directory");
        let mut t = Target {
            kind,
            dir,
            tcp: free_port(),
            http: free_port(),
            running: Running::Stopped,
            restarts: 0,
        };
        t.launch().await;
        t
    }

    async fn launch(&mut self) {
        let path = self.dir.join("data");
        self.running = match &self.kind {
            TargetKind::Embedded => {
                // The ports were free a moment ago; a restart may find the
                // old socket lingering, so binding is retried briefly.
                let mut tries = 0;
                loop {
                    let started = Broker::builder()
                        .bind_addr(self.tcp.ip())
                        .tcp_port(self.tcp.port())
                        .http_port(self.http.port())
                        .storage(StorageMode::Local(path.clone()))
                        .start()
                        .await;
                    match started {
                        Ok(b) => break Running::Embedded(b),
                        Err(_) if tries < 100 => {
                            tries += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(e) => panic!("chaos broker restarts: {e}"),
                    }
                }
            }
            TargetKind::Binary(bin) => Running::Binary(spawn(bin, self.tcp, self.http, &path)),
        };
        wait_listening(self.tcp).await;
    }

    /// The raw TCP address.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp
    }

    /// The HTTP (WebSocket) address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// Restarts the broker: SIGKILL for the binary (a crash), a clean
    /// shutdown for the embedded one.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.restarts += 1;
        self.launch().await;
    }

    /// Whether a restart is a crash (SIGKILL of the binary).
    pub fn crashes_on_restart(&self) -> bool {
        matches!(self.kind, TargetKind::Binary(_))
    }

    /// Restarts so far.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// The broker's resident memory, when it is a process (`/proc`).
    pub fn rss(&self) -> Option<u64> {
        let Running::Binary(child) = &self.running else {
            return None;
        };
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    }

    /// Stops the broker.
    pub async fn stop(&mut self) {
        match std::mem::replace(&mut self.running, Running::Stopped) {
            Running::Embedded(b) => b.shutdown().await,
            Running::Binary(mut child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Running::Stopped => {}
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Running::Binary(child) = &mut self.running {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address")
}

fn spawn(bin: &Path, tcp: SocketAddr, http: SocketAddr, path: &Path) -> Child {
    Command::new(bin)
        .env_clear()
        .env("FITZ_BIND_ADDR", tcp.ip().to_string())
        .env("FITZ_TCP_PORT", tcp.port().to_string())
        .env("FITZ_HTTP_PORT", http.port().to_string())
        .env("FITZ_AUTH_REQUIRED", "false")
        .env("FITZ_STORAGE_MODE", "local")
        .env("FITZ_STORAGE_PATH", path)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the broker binary starts")
}

/// Waits (up to 30 s) until the TCP port accepts connections.
async fn wait_listening(addr: SocketAddr) {
    for _ in 0..3000 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the chaos broker never listened on {addr}");
}
