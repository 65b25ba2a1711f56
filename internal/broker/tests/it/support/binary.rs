//! The built `fitz-broker` binary as a child process, configured by
//! environment alone (as the real image is), on ephemeral loopback ports.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running broker process; killed when dropped.
pub struct BrokerProcess {
    child: Child,
    /// `tcp://127.0.0.1:port`.
    pub tcp_url: String,
    /// `ws://127.0.0.1:port/ws`.
    pub ws_url: String,
}

impl BrokerProcess {
    /// Starts the binary with only `env` (plus loopback and port 0) set and
    /// waits for its "listening" line.
    pub fn spawn(env: &[(&str, &str)]) -> BrokerProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fitz-broker"));
        cmd.env_clear()
            .env("FITZ_BIND_ADDR", "127.0.0.1")
            .env("FITZ_TCP_PORT", "0")
            .env("FITZ_HTTP_PORT", "0")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("broker binary starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        // Keep draining stdout (logs go there) so the child never blocks.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("fitz-broker listening: ") {
                    let _ = tx.send(rest.to_string());
                }
            }
        });
        let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            panic!("broker binary did not start: {:?}", child.wait());
        };
        let mut urls = line.split_whitespace().map(str::to_string);
        let tcp_url = urls.next().expect("tcp url");
        let ws_url = urls.next().expect("ws url");
        BrokerProcess {
            child,
            tcp_url,
            ws_url,
        }
    }

    /// SIGKILL: no shutdown code runs (a crash).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a graceful exit; returns its success.
    pub fn terminate(mut self) -> bool {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    // Unique within the process too: every test shares one binary.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!(
        "fitz-test-{name}-{}-{}-{n}",
        std::process::id(),
        super::now_secs()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
