//! The real `fitz` binary against embedded brokers started by this test
//! process: one test (at least) per leaf command, checked by
//! `every_leaf_command_has_a_test`, which walks clap's command tree.
//!
//! Waits are on events the binary reports (its "listening on …" line on
//! stderr, its output lines, its exit); the timeouts only bound a broken
//! run, they never synchronise.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::LazyLock;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant, SystemTime};

use assert_cmd::cargo::CommandCargoExt;
use clap::CommandFactory;
use fitz_broker::clock::Clock;
use fitz_broker::{AuthConfig, Broker};
use fitz_testkit::fixture::Brokers;
use fitz_testkit::jwt;
use predicates::prelude::*;
use serde_json::Value;

/// Bounds every wait on the binary (a broken run fails instead of hanging).
const BOUND: Duration = Duration::from_secs(30);

struct Env {
    anon: String,
    anon_ws: String,
    auth: String,
    /// A broker on a manual clock, for schedule fires.
    manual: String,
    clock: Clock,
}

static ENV: LazyLock<Env> = LazyLock::new(|| {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async move {
            let brokers = Brokers::start().await.expect("brokers");
            let clock = Clock::manual(SystemTime::now());
            let manual = Broker::builder()
                .bind_addr(IpAddr::V4(Ipv4Addr::LOCALHOST))
                .tcp_port(0)
                .http_port(0)
                .auth(AuthConfig::anonymous())
                .clock(clock.clone())
                .start()
                .await
                .expect("manual-clock broker");
            tx.send(Env {
                anon: brokers.anon_tcp.clone(),
                anon_ws: brokers.anon_ws.clone(),
                auth: brokers.auth_tcp.clone(),
                manual: manual.tcp_url(),
                clock,
            })
            .expect("send env");
            // Keep the brokers alive for the whole test process.
            let _keep = (brokers, manual);
            std::future::pending::<()>().await;
        });
    });
    rx.recv_timeout(BOUND).expect("brokers started")
});

/// A config directory of the test's own (contexts never touch the user's).
fn config_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fitz-cli-test-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn base(url: &str) -> Command {
    let mut cmd = Command::cargo_bin("fitz").expect("fitz binary");
    cmd.env("FITZ_URL", url)
        .env_remove("FITZ_TOKEN")
        .env("FITZ_CONFIG_DIR", config_dir("shared"));
    cmd
}

/// `fitz` against the anonymous broker, as an assert_cmd command.
fn fitz(args: &[&str]) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::from_std(base(&ENV.anon));
    cmd.args(args).timeout(BOUND);
    cmd
}

fn json_lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

fn stdout_of(args: &[&str]) -> String {
    let out = fitz(args).assert().success().get_output().stdout.clone();
    String::from_utf8_lossy(&out).into_owned()
}

fn json_of(args: &[&str]) -> Vec<Value> {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    json_lines(&fitz(&a).assert().success().get_output().stdout)
}

/// A long-running `fitz` (sub, watch, serve, …): ready once it said so on
/// stderr; its stdout lines arrive on a channel.
struct Live {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Live {
    fn spawn(mut cmd: Command, ready: &str) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fitz");
        let stdin = child.stdin.take();
        let (tx, lines) = channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (etx, erx) = channel();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[fitz stderr] {line}");
                let _ = etx.send(line);
            }
        });
        let mut live = Self {
            child,
            stdin,
            lines,
        };
        let deadline = Instant::now() + BOUND;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match erx.recv_timeout(left) {
                Ok(line) if line.contains(ready) => break,
                Ok(_) => {}
                Err(_) => {
                    let _ = live.child.kill();
                    panic!("fitz never said `{ready}`");
                }
            }
        }
        live
    }

    fn line(&self) -> String {
        self.lines.recv_timeout(BOUND).expect("a line from fitz")
    }

    fn json(&self) -> Value {
        let l = self.line();
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}"))
    }

    fn interrupt(&self) {
        let ok = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill -INT");
        assert!(ok.success());
    }

    fn wait(mut self) -> ExitStatus {
        drop(self.stdin.take());
        let deadline = Instant::now() + BOUND;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("fitz did not exit");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn live(args: &[&str], ready: &str) -> Live {
    let mut cmd = base(&ENV.anon);
    cmd.args(args);
    Live::spawn(cmd, ready)
}

// ---------------------------------------------------------------- coverage

macro_rules! leaf_tests {
    ($($path:literal => $test:ident),* $(,)?) => {
        /// Leaf command path → the test that covers it.
        const LEAF_TESTS: &[(&str, &str)] = &[$(($path, stringify!($test))),*];
        /// Naming each test here makes a missing test a compile error.
        const _LEAF_TEST_FNS: &[fn()] = &[$($test),*];
    };
}

leaf_tests! {
    "context add" => context_add_use_ls,
    "context use" => context_add_use_ls,
    "context ls" => context_add_use_ls,
    "broker" => broker_runs_in_the_foreground_and_stops_on_ctrl_c,
    "kv get" => kv_put_get_del,
    "kv put" => kv_put_get_del,
    "kv insert" => kv_insert_refuses_an_existing_key_with_the_code_name,
    "kv del" => kv_put_get_del,
    "kv scan" => kv_scan_json,
    "kv watch" => kv_watch,
    "queue enqueue" => queue_enqueue_and_consume,
    "queue watch" => queue_watch,
    "queue consume" => queue_consume_exec_completes_on_success,
    "rpc call" => rpc_call_and_serve,
    "rpc serve" => rpc_serve_stops_cleanly_on_ctrl_c,
    "lease acquire" => lease_acquire_runs_a_command_under_the_lease,
    "lease query" => lease_hold_query_ls,
    "lease ls" => lease_hold_query_ls,
    "lease observe" => lease_observe_follows_acquire_and_release,
    "notice pub" => notice_pub_sub_json,
    "notice sub" => notice_sub_stops_cleanly_on_ctrl_c,
    "stream append" => stream_append_read_last_meta,
    "stream read" => stream_append_read_last_meta,
    "stream tail" => stream_tail_follows_with_the_filter,
    "stream last" => stream_append_read_last_meta,
    "stream meta" => stream_append_read_last_meta,
    "schedule create" => schedule_create_ls_cancel,
    "schedule ls" => schedule_create_ls_cancel,
    "schedule cancel" => schedule_create_ls_cancel,
    "schedule watch" => schedule_watch_prints_fires,
    "bench notice" => bench_notice_json,
    "bench rpc" => bench_rpc_json,
    "bench kv" => bench_kv_and_queue_json,
    "bench queue" => bench_kv_and_queue_json,
}

fn leaves(cmd: &clap::Command, prefix: &str, out: &mut BTreeSet<String>) {
    let subs: Vec<_> = cmd
        .get_subcommands()
        .filter(|c| c.get_name() != "help")
        .collect();
    if subs.is_empty() {
        out.insert(prefix.trim().to_owned());
    }
    for sub in subs {
        leaves(sub, &format!("{prefix} {}", sub.get_name()), out);
    }
}

#[test]
fn every_leaf_command_has_a_test() {
    let mut tree = BTreeSet::new();
    let root = fitz_cli::Cli::command();
    for sub in root.get_subcommands().filter(|c| c.get_name() != "help") {
        leaves(sub, sub.get_name(), &mut tree);
    }
    let tested: BTreeSet<String> = LEAF_TESTS.iter().map(|(p, _)| (*p).to_owned()).collect();
    let untested: Vec<_> = tree.difference(&tested).collect();
    assert!(
        untested.is_empty(),
        "leaf commands without a test: {untested:?}"
    );
    let stale: Vec<_> = tested.difference(&tree).collect();
    assert!(
        stale.is_empty(),
        "tests for commands that do not exist: {stale:?}"
    );
}

// ---------------------------------------------------------------- failures

#[test]
fn bad_arguments_exit_2_with_a_helpful_message() {
    fitz(&["kv", "get", "kv://cli/t/bad"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("<KEY>"));
    fitz(&["kv", "frobnicate"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("unrecognized subcommand"));
    fitz(&["queue", "consume", "queue://cli/t/q", "--lease", "soon"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("not a duration"));
    // A malformed route is refused locally: a usage error too.
    fitz(&["notice", "pub", "not-a-route", "x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("invalid argument"));
}

#[test]
fn an_unreachable_broker_exits_3_promptly() {
    // A port nothing listens on: bound the attempt with --connect-timeout.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let started = Instant::now();
    let mut cmd = assert_cmd::Command::from_std(base(&format!("tcp://127.0.0.1:{port}")));
    cmd.args([
        "--connect-timeout",
        "500ms",
        "notice",
        "pub",
        "notice://cli/t/x",
        "hi",
    ])
    .timeout(BOUND)
    .assert()
    .code(3)
    .stderr(predicate::str::contains("cannot connect"));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn an_expired_token_exits_3_and_a_valid_one_works() {
    let mut cmd = assert_cmd::Command::from_std(base(&ENV.auth));
    cmd.env("FITZ_TOKEN", jwt::expired_token())
        .args(["notice", "pub", "notice://dev/cli/expired", "x"])
        .timeout(BOUND)
        .assert()
        .code(3)
        .stderr(predicate::str::contains("cannot connect"));
    // The same command with a valid token from --token-file succeeds.
    let dir = config_dir("token-file");
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("token");
    std::fs::write(&file, jwt::test_token()).expect("token file");
    let mut cmd = assert_cmd::Command::from_std(base(&ENV.auth));
    cmd.arg("--token-file")
        .arg(&file)
        .args(["notice", "pub", "notice://dev/cli/expired", "x"])
        .timeout(BOUND)
        .assert()
        .success();
}

// ---------------------------------------------------------------- context

#[test]
fn context_add_use_ls() {
    let dir = config_dir("contexts");
    let run = |args: &[&str]| {
        let mut cmd = Command::cargo_bin("fitz").expect("fitz binary");
        cmd.env_remove("FITZ_URL")
            .env_remove("FITZ_TOKEN")
            .env("FITZ_CONFIG_DIR", &dir)
            .args(args);
        let mut cmd = assert_cmd::Command::from_std(cmd);
        cmd.timeout(BOUND);
        cmd
    };
    run(&["context", "add", "local", "--server", &ENV.anon])
        .assert()
        .success()
        .stdout(predicate::str::contains("context `local` saved"));
    run(&["context", "add", "nowhere", "--server", "tcp://127.0.0.1:1"])
        .assert()
        .success();
    // The first context became current: commands use its URL.
    run(&["notice", "pub", "notice://cli/ctx/a", "x"])
        .assert()
        .success();
    run(&["context", "use", "nowhere"]).assert().success();
    run(&[
        "--connect-timeout",
        "500ms",
        "notice",
        "pub",
        "notice://cli/ctx/a",
        "x",
    ])
    .assert()
    .code(3);
    // --context picks another one for one command.
    run(&[
        "--context",
        "local",
        "notice",
        "pub",
        "notice://cli/ctx/a",
        "x",
    ])
    .assert()
    .success();
    run(&["context", "use", "missing"]).assert().code(2);
    let out = run(&["--json", "context", "ls"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let rows = json_lines(&out);
    assert_eq!(rows.len(), 2);
    let current: Vec<_> = rows.iter().filter(|r| r["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["context"], "nowhere");
    let human = run(&["context", "ls"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let human = String::from_utf8_lossy(&human);
    assert!(human.contains("NAME"), "{human}");
    assert!(
        human
            .lines()
            .any(|l| l.starts_with('*') && l.contains("nowhere")),
        "{human}"
    );
}

// ---------------------------------------------------------------- broker

#[test]
fn broker_runs_in_the_foreground_and_stops_on_ctrl_c() {
    let mut cmd = Command::cargo_bin("fitz").expect("fitz binary");
    cmd.env("FITZ_AUTH_REQUIRED", "false")
        .env("FITZ_STORAGE_MODE", "memory")
        .env("RUST_LOG", "warn")
        .args([
            "broker",
            "--bind-addr",
            "127.0.0.1",
            "--tcp-port",
            "0",
            "--http-port",
            "0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().expect("spawn broker");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("listening line");
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("tcp://"))
        .unwrap_or_else(|| panic!("no tcp url in {first:?}"))
        .to_owned();
    let mut pubcmd = assert_cmd::Command::from_std(base(&url));
    pubcmd
        .args(["notice", "pub", "notice://cli/broker/x", "hi"])
        .timeout(BOUND)
        .assert()
        .success();
    let live = Live {
        child,
        stdin: None,
        lines: channel().1,
    };
    live.interrupt();
    assert!(live.wait().success());
    // Its own help comes from fitz-broker's parser.
    let mut help = assert_cmd::Command::cargo_bin("fitz").expect("fitz binary");
    help.args(["broker", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("FITZ_TCP_PORT"));
}

// ---------------------------------------------------------------- kv

#[test]
fn kv_put_get_del() {
    let r = "kv://cli/kv/putget";
    fitz(&["kv", "put", r, "a", "apple"]).assert().success();
    assert_eq!(stdout_of(&["kv", "get", r, "a"]), "apple\n");
    let got = json_of(&["kv", "get", r, "a"]);
    assert_eq!(got[0]["body"], "apple");
    assert_eq!(got[0]["key"], "a");
    // Binary-safe: from a file and from stdin.
    let dir = config_dir("kvbin");
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("bin");
    std::fs::write(&file, [0u8, 0xff, 0x10]).expect("write");
    fitz(&[
        "kv",
        "put",
        r,
        "bin",
        "--file",
        file.to_str().expect("path"),
    ])
    .assert()
    .success();
    let got = json_of(&["kv", "get", r, "bin"]);
    assert_eq!(got[0]["body_hex"], "00ff10");
    fitz(&["kv", "put", r, "in"])
        .write_stdin(vec![1u8, 2, 3])
        .assert()
        .success();
    let raw = fitz(&["kv", "get", r, "in"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert_eq!(raw, vec![1u8, 2, 3, b'\n']);
    let del = json_of(&["kv", "del", r, "a"]);
    assert_eq!(del[0]["deleted"], true);
    fitz(&["kv", "get", r, "a"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no key `a`"));
}

#[test]
fn kv_insert_refuses_an_existing_key_with_the_code_name() {
    let r = "kv://cli/kv/insert";
    fitz(&["kv", "insert", r, "k", "one"]).assert().success();
    fitz(&["kv", "insert", r, "k", "two"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("KV_KEY_EXISTS"));
    assert_eq!(stdout_of(&["kv", "get", r, "k"]), "one\n");
}

#[test]
fn kv_scan_json() {
    let r = "kv://cli/kv/scan";
    for (k, v) in [("a1", "x"), ("a2", "y"), ("b1", "z")] {
        fitz(&["kv", "put", r, k, v]).assert().success();
    }
    let rows = json_of(&["kv", "scan", r, "--prefix", "a"]);
    let keys: Vec<_> = rows
        .iter()
        .map(|r| r["key"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(keys, ["a1", "a2"]);
    let rows = json_of(&["kv", "scan", r, "--reverse", "--limit", "1"]);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["key"], "b1");
    assert_eq!(rows[0]["value"], "z");
    let human = stdout_of(&["kv", "scan", r]);
    assert!(human.starts_with("KEY"), "{human}");
    assert!(
        human.lines().any(|l| l.split_whitespace().eq(["a2", "y"])),
        "{human}"
    );
}

#[test]
fn kv_watch() {
    let w = live(
        &["--json", "kv", "watch", "kv://cli/kvwatch/*", "-n", "1"],
        "listening on",
    );
    fitz(&["kv", "put", "kv://cli/kvwatch/r1", "k", "v"])
        .assert()
        .success();
    let change = w.json();
    assert_eq!(change["route"], "kv://cli/kvwatch/r1");
    assert_eq!(change["mutations"], 1);
    assert!(w.wait().success());
}

// ---------------------------------------------------------------- queue

#[test]
fn queue_enqueue_and_consume() {
    let r = "queue://cli/q/plain";
    let e = json_of(&["queue", "enqueue", r, "job-1"]);
    assert_eq!(e[0]["route"], r);
    assert!(e[0]["id"].is_string());
    let got = json_of(&["queue", "consume", r, "-n", "1"]);
    assert_eq!(got[0]["body"], "job-1");
}

#[test]
fn queue_consume_stops_cleanly_on_ctrl_c() {
    // Idle, waiting for work.
    let c = live(&["queue", "consume", "queue://cli/q/idle"], "consuming");
    c.interrupt();
    assert_eq!(c.wait().code(), Some(0));
    // In the middle of a message's command: the command is killed, the
    // message is not completed and comes back after its lease.
    let r = "queue://cli/q/busy";
    fitz(&["queue", "enqueue", r, "slow"]).assert().success();
    let dir = config_dir("busy");
    std::fs::create_dir_all(&dir).expect("dir");
    let marker = dir.join("started");
    let exec = format!("touch {}; sleep 60", marker.display());
    let started = Instant::now();
    let c = live(
        &["queue", "consume", r, "--lease", "1s", "--exec", &exec],
        "consuming",
    );
    while !marker.exists() {
        assert!(started.elapsed() < BOUND, "the command never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    c.interrupt();
    assert_eq!(c.wait().code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "waited for the command"
    );
    let again = json_of(&["queue", "consume", r, "-n", "1"]);
    assert_eq!(again[0]["body"], "slow");
}

#[test]
fn commands_work_over_websocket_too() {
    let mut sub = base(&ENV.anon_ws);
    sub.args(["--json", "notice", "sub", "notice://cli/ws/*", "-n", "1"]);
    let s = Live::spawn(sub, "listening on");
    let mut publish = assert_cmd::Command::from_std(base(&ENV.anon_ws));
    publish
        .args(["notice", "pub", "notice://cli/ws/a", "over ws"])
        .timeout(BOUND)
        .assert()
        .success();
    assert_eq!(s.json()["body"], "over ws");
    assert!(s.wait().success());
}

#[test]
fn queue_consume_exec_completes_on_success() {
    let r = "queue://cli/q/exec";
    fitz(&["queue", "enqueue", r, "fail"]).assert().success();
    fitz(&["queue", "enqueue", r, "ok"]).assert().success();
    // The failing message is not completed; the command's stdout passes through.
    let out = stdout_of(&[
        "queue",
        "consume",
        r,
        "-n",
        "1",
        "--lease",
        "1s",
        "--exec",
        "read b; [ \"$b\" = ok ] && echo done:$b",
    ]);
    assert_eq!(out, "done:ok\n");
    // The failed one comes back once its lease runs out.
    let again = json_of(&["queue", "consume", r, "-n", "1"]);
    assert_eq!(again[0]["body"], "fail");
}

#[test]
fn queue_watch() {
    let w = live(
        &[
            "--json",
            "queue",
            "watch",
            "queue://cli/qwatch/*",
            "-n",
            "1",
        ],
        "listening on",
    );
    fitz(&["queue", "enqueue", "queue://cli/qwatch/a", "x"])
        .assert()
        .success();
    let a = w.json();
    assert_eq!(a["route"], "queue://cli/qwatch/a");
    assert!(w.wait().success());
}

// ---------------------------------------------------------------- rpc

#[test]
fn rpc_call_and_serve() {
    let s = live(
        &[
            "rpc",
            "serve",
            "rpc://cli/rpc/upper",
            "--exec",
            "tr a-z A-Z",
            "-n",
            "2",
        ],
        "serving",
    );
    assert_eq!(
        stdout_of(&["rpc", "call", "rpc://cli/rpc/upper", "hello"]),
        "HELLO\n"
    );
    let j = json_of(&["rpc", "call", "rpc://cli/rpc/upper", "json"]);
    assert_eq!(j[0]["body"], "JSON");
    assert!(s.line().contains("hello"));
    assert!(s.wait().success());
    // No worker: a domain error, exit 1.
    fitz(&[
        "rpc",
        "call",
        "rpc://cli/rpc/nobody",
        "x",
        "--timeout",
        "2s",
    ])
    .assert()
    .code(1);
}

#[test]
fn rpc_serve_stops_cleanly_on_ctrl_c() {
    let s = live(&["--json", "rpc", "serve", "rpc://cli/rpc/echo"], "serving");
    assert_eq!(
        stdout_of(&["rpc", "call", "rpc://cli/rpc/echo", "ping"]),
        "ping\n"
    );
    assert_eq!(s.json()["body"], "ping");
    s.interrupt();
    assert_eq!(s.wait().code(), Some(0));
    // The worker is gone: nobody answers now.
    fitz(&["rpc", "call", "rpc://cli/rpc/echo", "x", "--timeout", "2s"])
        .assert()
        .code(1);
}

// ---------------------------------------------------------------- lease

#[test]
fn lease_acquire_runs_a_command_under_the_lease() {
    let r = "lease://cli/lease/cmd";
    let out = fitz(&[
        "lease",
        "acquire",
        r,
        "--owner",
        "me",
        "--",
        "sh",
        "-c",
        "echo inside; exit 7",
    ])
    .assert()
    .code(7)
    .get_output()
    .stdout
    .clone();
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.contains("acquired lease://cli/lease/cmd as me"),
        "{out}"
    );
    assert!(out.contains("inside"), "{out}");
    // Released after the command: free again.
    let q = json_of(&["lease", "query", r]);
    assert_eq!(q[0]["held"], false);
    // A probe (no --hold, no command) acquires, prints the token, releases.
    let p = json_of(&["lease", "acquire", r]);
    assert!(p[0]["fencing_token"].as_u64().is_some());
}

#[test]
fn lease_hold_query_ls() {
    let r = "lease://cli/lease/held";
    let h = live(
        &[
            "lease", "acquire", r, "--owner", "holder", "--hold", "--ttl", "10s",
        ],
        "holding",
    );
    let q = json_of(&["lease", "query", r]);
    assert_eq!(q[0]["held"], true);
    assert_eq!(q[0]["owner"], "holder");
    let ls = json_of(&["lease", "ls", "lease://cli/lease/*"]);
    assert!(
        ls.iter().any(|l| l["route"] == r && l["owner"] == "holder"),
        "{ls:?}"
    );
    let human = stdout_of(&["lease", "ls", "lease://cli/lease/*"]);
    assert!(human.starts_with("ROUTE"), "{human}");
    // Someone else cannot take it.
    fitz(&["lease", "acquire", r, "--owner", "other"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("LEASE_HELD"));
    h.interrupt();
    assert_eq!(h.wait().code(), Some(0));
    let q = json_of(&["lease", "query", r]);
    assert_eq!(q[0]["held"], false);
}

/// Reads snapshots until one satisfies `want` (the observer may install a
/// few in between: every clean LIST pass is one).
fn snapshot_until(s: &Live, want: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..20 {
        let v = s.json();
        if want(&v) {
            return v;
        }
    }
    panic!("no such snapshot in 20");
}

#[test]
fn lease_observe_follows_acquire_and_release() {
    let r = "lease://cli/observe/x";
    let held = |v: &Value| {
        v["leases"].as_array().is_some_and(|ls| {
            ls.iter()
                .any(|l| l["route"] == r && l["owner"] == "watched")
        })
    };
    let obs = live(
        &[
            "--json",
            "lease",
            "observe",
            "lease://cli/observe/*",
            "--expected-ttl",
            "10s",
        ],
        "listening on",
    );
    let first = obs.json();
    assert_eq!(first["version"], 1, "{first}");
    assert!(!held(&first), "{first}");
    let h = live(
        &[
            "lease", "acquire", r, "--owner", "watched", "--hold", "--ttl", "10s",
        ],
        "holding",
    );
    snapshot_until(&obs, held);
    h.interrupt();
    assert_eq!(h.wait().code(), Some(0));
    snapshot_until(&obs, |v| !held(v));
    obs.interrupt();
    assert_eq!(obs.wait().code(), Some(0));
}

// ---------------------------------------------------------------- notice

#[test]
fn notice_pub_sub_json() {
    let s = live(
        &["--json", "notice", "sub", "notice://cli/n/*", "-n", "2"],
        "listening on",
    );
    let p = json_of(&["notice", "pub", "notice://cli/n/a", "hello"]);
    assert_eq!(p[0]["bytes"], 5);
    fitz(&["notice", "pub", "notice://cli/n/b"])
        .write_stdin(vec![0xffu8])
        .assert()
        .success();
    let first = s.json();
    assert_eq!(first["route"], "notice://cli/n/a");
    assert_eq!(first["body"], "hello");
    let second = s.json();
    assert_eq!(second["body_hex"], "ff");
    assert!(s.wait().success());
}

#[test]
fn notice_sub_stops_cleanly_on_ctrl_c() {
    let s = live(&["notice", "sub", "notice://cli/nint/*"], "listening on");
    fitz(&["notice", "pub", "notice://cli/nint/a", "one"])
        .assert()
        .success();
    assert!(s.line().ends_with("notice://cli/nint/a  one"));
    s.interrupt();
    assert_eq!(s.wait().code(), Some(0));
}

// ---------------------------------------------------------------- stream

#[test]
fn stream_append_read_last_meta() {
    let r = "stream://cli/s/orders";
    for (body, d) in [("created", "c"), ("paid", "p"), ("shipped", "s")] {
        fitz(&["stream", "append", r, body, "-d", d])
            .assert()
            .success();
    }
    let a = json_of(&["stream", "append", r, "done"]);
    assert_eq!(a[0]["offset"], 3);
    let rows = json_of(&["stream", "read", r, "--from", "1", "--limit", "2"]);
    let bodies: Vec<_> = rows
        .iter()
        .map(|r| r["body"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(bodies, ["paid", "shipped"]);
    let filtered = json_of(&["stream", "read", r, "--eq", "p"]);
    assert_eq!(filtered.len(), 1);
    assert_eq!(filtered[0]["body"], "paid");
    let human = stdout_of(&["stream", "read", r]);
    assert!(human.starts_with("OFFSET"), "{human}");
    let last = json_of(&["stream", "last", r]);
    assert_eq!(last[0]["offset"], 3);
    assert_eq!(last[0]["body"], "done");
    let meta = json_of(&["stream", "meta", r]);
    assert_eq!(meta[0]["record_count"], 4);
    assert_eq!(meta[0]["next_offset"], 4);
    fitz(&["stream", "last", "stream://cli/s/empty"])
        .assert()
        .code(1);
}

#[test]
fn stream_tail_follows_with_the_filter() {
    let r = "stream://cli/stail/orders";
    fitz(&["stream", "append", r, "old", "-d", "keep"])
        .assert()
        .success();
    // From the end (the default for a resource), only "keep" records.
    let t = live(
        &["--json", "stream", "tail", r, "--eq", "keep", "-n", "1"],
        "listening on",
    );
    fitz(&["stream", "append", r, "skip-me", "-d", "drop"])
        .assert()
        .success();
    fitz(&["stream", "append", r, "new", "-d", "keep"])
        .assert()
        .success();
    let rec = t.json();
    assert_eq!(rec["body"], "new");
    assert_eq!(rec["offset"], 2);
    assert!(t.wait().success());
}

// ---------------------------------------------------------------- schedule

#[test]
fn schedule_create_ls_cancel() {
    let r = "schedule://cli/sch/daily/run";
    fitz(&[
        "schedule",
        "create",
        r,
        "0 6 * * *",
        "{}",
        "--mode",
        "broadcast",
    ])
    .assert()
    .success();
    let ls = json_of(&["schedule", "ls", "schedule://cli/sch/**"]);
    assert!(
        ls.iter()
            .any(|e| e["route"] == r && e["cron"] == "0 6 * * *" && e["mode"] == "broadcast"),
        "{ls:?}"
    );
    let human = stdout_of(&["schedule", "ls"]);
    assert!(human.contains(r), "{human}");
    fitz(&["schedule", "cancel", r]).assert().success();
    let ls = json_of(&["schedule", "ls", "schedule://cli/sch/**"]);
    assert!(!ls.iter().any(|e| e["route"] == r), "{ls:?}");
    fitz(&["schedule", "create", r, "not cron", "{}"])
        .assert()
        .code(2);
}

#[test]
fn schedule_watch_prints_fires() {
    let manual = |args: &[&str]| {
        let mut cmd = base(&ENV.manual);
        cmd.args(args);
        cmd
    };
    let w = Live::spawn(
        manual(&[
            "--json",
            "schedule",
            "watch",
            "schedule://cli/w/**",
            "-n",
            "1",
        ]),
        "listening on",
    );
    let mut create = assert_cmd::Command::from_std(manual(&[
        "schedule",
        "create",
        "schedule://cli/w/tick/run",
        "* * * * *",
        "tick",
    ]));
    create.timeout(BOUND).assert().success();
    // The broker's clock is manual: a minute passes when the test says so.
    ENV.clock.advance(Duration::from_secs(61));
    let fire = w.json();
    assert_eq!(fire["route"], "schedule://cli/w/tick/run");
    assert_eq!(fire["payload"], "tick");
    assert!(w.wait().success());
}

// ---------------------------------------------------------------- bench

fn bench(domain: &str) -> Value {
    let rows = json_of(&[
        "bench",
        domain,
        "--count",
        "200",
        "--clients",
        "2",
        "--depth",
        "4",
        "--size",
        "16",
    ]);
    assert_eq!(rows.len(), 1);
    let r = rows[0].clone();
    assert_eq!(r["bench"], domain);
    assert_eq!(r["ops"], 200);
    assert_eq!(r["errors"], 0);
    let l = &r["latency_us"];
    let p = |k: &str| l[k].as_u64().unwrap_or(0);
    assert!(
        p("p50") >= 1 && p("p50") <= p("p90") && p("p90") <= p("p99") && p("p99") <= p("p999"),
        "{l}"
    );
    assert!(r["ops_per_sec"].as_f64().unwrap_or(0.0) > 0.0);
    r
}

#[test]
fn bench_notice_json() {
    let r = bench("notice");
    assert!(r["delivered"].as_u64().is_some());
}

#[test]
fn bench_rpc_json() {
    bench("rpc");
}

#[test]
fn bench_kv_and_queue_json() {
    bench("kv");
    bench("queue");
    // Human output has the percentiles.
    let out = stdout_of(&["bench", "queue", "--count", "50"]);
    assert!(out.contains("p99.9"), "{out}");
    fitz(&["bench", "kv", "--clients", "0"]).assert().code(2);
}
