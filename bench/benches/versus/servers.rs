//! The servers of the comparison, each a child process on free loopback
//! ports, killed when dropped: our broker (its release binary, in-memory
//! storage, anonymous), `nats-server` (TCP and a WebSocket listener),
//! `redis-server` (no persistence) and the raw echo peers (this binary
//! re-executed with `VERSUS_ROLE=echo`). With [`Placement::Split`] every
//! child runs under `taskset -c 1` while the bench pins itself to core 0.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the client and the servers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Wherever the scheduler puts them.
    Unpinned,
    /// The bench (every client) on core 0, every server on core 1.
    Split,
}

impl Placement {
    /// The name in the JSON and the report.
    pub fn name(self) -> &'static str {
        match self {
            Placement::Unpinned => "unpinned",
            Placement::Split => "client_core0_servers_core1",
        }
    }
}

/// A child server process, killed (and reaped) on drop.
pub struct Server {
    child: Child,
}

impl Server {
    /// The child's process id (for its `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child's resident set size in KiB, from `/proc/<pid>/status`.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(&format!("/proc/{}/status", self.pid()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmRSS` in KiB from a `/proc/.../status` file.
pub fn rss_kib(path: &str) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A free loopback port (bound, read, released: another process could take
/// it in between, which a failing start then reports).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn command(placement: Placement, program: &str) -> Command {
    match placement {
        Placement::Unpinned => Command::new(program),
        Placement::Split => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg("1").arg(program);
            c
        }
    }
}

/// Whether `program` can be run (found on `PATH` or as a path).
pub fn available(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Waits until `addr` accepts a TCP connection.
fn wait_listening(addr: SocketAddr, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("{what} did not listen on {addr} within 10 s"))
}

/// The `fitz-broker` release binary: `FITZ_BROKER_BIN`, else next to this
/// bench's own directory (`target/release/fitz-broker`).
pub fn broker_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("FITZ_BROKER_BIN") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("fitz-broker");
    p.exists().then_some(p)
}

/// Our broker: in-memory storage, no auth, ephemeral TCP and HTTP ports.
/// Returns the server and its `tcp://` and `ws://` URLs.
pub fn fitz(placement: Placement) -> Result<(Server, String, String), String> {
    let bin = broker_binary().ok_or("no fitz-broker binary (set FITZ_BROKER_BIN)")?;
    let mut child = command(placement, &bin.to_string_lossy())
        .args([
            "--bind-addr",
            "127.0.0.1",
            "--tcp-port",
            "0",
            "--http-port",
            "0",
        ])
        .args(["--auth-required", "false", "--storage-mode", "memory"])
        .args(["--log", "error"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let server = Server { child };
    let line = first_line(out)?;
    // "fitz-broker listening: tcp://127.0.0.1:P ws://127.0.0.1:Q/ws"
    let mut urls = line.split_whitespace().skip(2);
    let (Some(tcp), Some(ws)) = (urls.next(), urls.next()) else {
        return Err(format!("fitz-broker said {line:?}"));
    };
    Ok((server, tcp.to_string(), ws.to_string()))
}

/// Reads the first line of a child's stdout, then keeps draining it on a
/// thread so the child never blocks on a full pipe.
fn first_line(out: impl Read + Send + 'static) -> Result<String, String> {
    let mut r = BufReader::new(out);
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = r.read_to_end(&mut sink);
    });
    Ok(line.trim().to_string())
}

/// `nats-server` with a TCP and a (plain) WebSocket listener. Returns the
/// server, `nats://` and `ws://` URLs.
pub fn nats(placement: Placement) -> Result<(Server, String, String), String> {
    let (port, ws) = (
        free_port().map_err(|e| e.to_string())?,
        free_port().map_err(|e| e.to_string())?,
    );
    let conf = std::env::temp_dir().join(format!("fitz-versus-nats-{}.conf", std::process::id()));
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:{port}\nmax_payload: 1MB\nwebsocket {{\n  listen: \"127.0.0.1:{ws}\"\n  no_tls: true\n}}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let child = command(placement, "nats-server")
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("VERSUS_NATS_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .map_err(|e| format!("cannot start nats-server: {e}"))?;
    let server = Server { child };
    wait_listening(([127, 0, 0, 1], port).into(), "nats-server")?;
    wait_listening(([127, 0, 0, 1], ws).into(), "nats-server (websocket)")?;
    // Read at start-up only.
    let _ = std::fs::remove_file(&conf);
    Ok((
        server,
        format!("nats://127.0.0.1:{port}"),
        format!("ws://127.0.0.1:{ws}"),
    ))
}

/// `redis-server` without persistence. Returns the server and its URL.
pub fn redis(placement: Placement) -> Result<(Server, String), String> {
    let port = free_port().map_err(|e| e.to_string())?;
    let child = command(placement, "redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
        .args(["--maxclients", "4096"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start redis-server: {e}"))?;
    let server = Server { child };
    wait_listening(([127, 0, 0, 1], port).into(), "redis-server")?;
    Ok((server, format!("redis://127.0.0.1:{port}/")))
}

/// The raw echo peers (`fitz_bench::raw`) in a child process: this binary
/// with `VERSUS_ROLE=echo`. Returns the server, the TCP and WS addresses.
pub fn echo(placement: Placement) -> Result<(Server, SocketAddr, SocketAddr), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = command(placement, &exe.to_string_lossy())
        .env("VERSUS_ROLE", "echo")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start the echo peer: {e}"))?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let server = Server { child };
    let line = first_line(out)?;
    let mut it = line
        .split_whitespace()
        .skip(1)
        .map(|a| a.parse::<SocketAddr>());
    match (it.next(), it.next()) {
        (Some(Ok(tcp)), Some(Ok(ws))) => Ok((server, tcp, ws)),
        _ => Err(format!("echo peer said {line:?}")),
    }
}

/// The echo role's body: serves until its stdin closes (the parent died or
/// dropped it).
pub fn run_echo() {
    let brt = fitz_bench::broker_runtime();
    let tcp = fitz_bench::raw::tcp_echo_server(&brt);
    let ws = fitz_bench::raw::ws_echo_server(&brt);
    println!("echo {tcp} {ws}");
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}
