//! Ledger-checked chaos: workloads on a client whose connection to the
//! broker goes through the testkit [`crate::Proxy`], while faults are thrown
//! at it one episode at a time.
//!
//! Each episode injects one fault — a cut of every connection, a cut right
//! after CONNECT (the next handshakes die too), a black hole both ways, one
//! way (the broker stops reading, or its answers stop arriving), delayed
//! delivery, a broker restart (on local storage; the binary target is
//! SIGKILLed) — heals it, and then requires the client to be
//! `Authenticated` again with its notice subscription and RPC worker alive
//! (a probe from a second client, connected directly, must reach both).
//! Meanwhile KV, Queue, Stream and Lease workloads run on the client under
//! attack and record every operation's outcome in a [`Ledger`]. At the end
//! the ledger is checked against what the broker holds (read by the direct
//! client): no acknowledged operation lost, nothing reported not applied
//! present, stream follows without gaps, repeats or reorders, no queue
//! redelivery after a confirmed completion, fencing tokens strictly
//! increasing.
//!
//! The CI form (`tests/tests/chaos.rs`) runs it for seconds against the
//! embedded broker; `scripts/soak.sh` runs it for minutes against the binary
//! (`tests/src/bin/soak.rs`).

pub mod ledger;
mod target;
mod workloads;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use fitz::{Client, State, StaticToken};
use fitz_testkit::Direction;
use futures_util::StreamExt;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use ledger::{Ledger, Outcome, Writes};
pub use target::{Target, TargetKind};
pub use workloads::Routes;

use crate::{Proxy, ProxyHandle, Transport, fast_reconnect};

/// What a run does.
#[derive(Debug, Clone)]
pub struct Config {
    /// The transport the client under attack uses.
    pub transport: Transport,
    /// How long faults are thrown (the checks come after).
    pub duration: Duration,
    /// Seeds the choice of faults and their timing.
    pub seed: u64,
    /// Which broker.
    pub target: TargetKind,
    /// Whether episodes may restart the broker.
    pub restarts: bool,
}

/// The kinds of fault an episode injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Every connection closed.
    Cut,
    /// Connections cut, then the next one or two cut right after CONNECT.
    HandshakeCut,
    /// Nothing moves either way for a while (half-open).
    Blackhole,
    /// The broker stops reading for a while.
    StallUp,
    /// The broker's answers stop arriving for a while.
    StallDown,
    /// Every chunk delayed for a while.
    Delay,
    /// The broker restarts.
    Restart,
}

const FAULTS: [Fault; 7] = [
    Fault::Cut,
    Fault::HandshakeCut,
    Fault::Blackhole,
    Fault::StallUp,
    Fault::StallDown,
    Fault::Delay,
    Fault::Restart,
];

/// What a run saw.
#[derive(Debug)]
pub struct Report {
    /// The configuration.
    pub config: Config,
    /// Episodes by fault.
    pub episodes: Vec<(Fault, u32)>,
    /// The slowest recovery after a healed fault.
    pub slowest_recovery: Duration,
    /// Broker restarts.
    pub restarts: u32,
    /// The ledger.
    pub ledger: Ledger,
    /// Every violation: seen during the run, and by the final checks.
    pub violations: Vec<String>,
    /// The broker's resident memory, sampled after each episode (binary
    /// target only).
    pub rss: Vec<u64>,
}

impl Report {
    /// True when every check passed.
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let total: u32 = self.episodes.iter().map(|(_, n)| n).sum();
        writeln!(
            f,
            "chaos {} seed {} for {:?}: {total} episodes ({}), {} restarts, slowest recovery {:?}",
            c.transport.name(),
            c.seed,
            c.duration,
            self.episodes
                .iter()
                .map(|(k, n)| format!("{k:?} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            self.restarts,
            self.slowest_recovery,
        )?;
        let l = &self.ledger;
        let row = |f: &mut fmt::Formatter<'_>, what: &str, w: &Writes, extra: String| {
            let (a, m, n) = w.counts();
            writeln!(
                f,
                "  {what:<7} {a:>7} acked {m:>5} ambiguous {n:>6} not applied  {extra}"
            )
        };
        row(f, "kv", &l.kv, String::new())?;
        row(
            f,
            "queue",
            &l.queue,
            format!(
                "{} delivered, {} redelivered, {} completions confirmed",
                l.deliveries.len(),
                l.redelivered(),
                l.completed.len()
            ),
        )?;
        row(
            f,
            "stream",
            &l.stream,
            format!("{} records followed", l.followed.len()),
        )?;
        if l.undone_by_crash + l.lost_to_crash > 0 {
            writeln!(
                f,
                "          {} completions undone and {} enqueues lost by a SIGKILL within {:?} \
                 after (or {:?} before) their acknowledgement (queue commits are Buffered: \
                 best effort)",
                l.undone_by_crash,
                l.lost_to_crash,
                ledger::CRASH_WINDOW,
                ledger::ACK_LAG
            )?;
        }
        writeln!(f, "  lease   {:>7} grants", l.fencing.len())?;
        writeln!(
            f,
            "  probes  {:>7} (notice subscription and RPC worker alive)",
            l.probes
        )?;
        if let (Some(min), Some(max)) = (self.rss.iter().min(), self.rss.iter().max()) {
            writeln!(
                f,
                "  broker RSS {:.1}–{:.1} MiB over {} samples",
                *min as f64 / 1048576.0,
                *max as f64 / 1048576.0,
                self.rss.len()
            )?;
        }
        if self.violations.is_empty() {
            writeln!(f, "  violations: none")
        } else {
            writeln!(f, "  violations ({}):", self.violations.len())?;
            for v in &self.violations {
                writeln!(f, "    {v}")?;
            }
            Ok(())
        }
    }
}

/// How long the client may take to be whole again after a healed fault.
const RECOVERY: Duration = Duration::from_secs(20);

/// Runs one chaos run and checks it.
pub async fn run(config: Config) -> Report {
    let tag = format!("chaos{}{}", config.transport.name(), config.seed);
    let routes = Routes::new(&tag);
    let dir = std::env::temp_dir().join(format!("fitz-{tag}-{}", std::process::id()));
    let mut target = Target::start(config.target.clone(), dir).await;
    let upstream = match config.transport {
        Transport::Tcp => target.tcp_addr(),
        Transport::Ws => target.http_addr(),
    };
    let proxy = Proxy::start(upstream).await.expect("proxy starts");
    let (url, direct_url) = match config.transport {
        Transport::Tcp => (proxy.tcp_url(), format!("tcp://{}", target.tcp_addr())),
        Transport::Ws => (proxy.ws_url(), format!("ws://{}/ws", target.http_addr())),
    };
    let client = chaos_client(&url).await;
    let direct = chaos_client(&direct_url).await;

    let ledger: workloads::Shared = Arc::new(Mutex::new(Ledger::default()));
    let (probe_tx, probes) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let mut sub = client
        .notice()
        .subscribe(&routes.notice)
        .await
        .expect("liveness subscription");
    let listener = tokio::spawn(async move {
        while let Some(Ok(msg)) = sub.next().await {
            if let Some(n) = std::str::from_utf8(msg.payload())
                .ok()
                .and_then(|s| s.parse().ok())
            {
                let _ = probe_tx.send(n);
            }
        }
    });
    let worker = client
        .rpc()
        .serve(&routes.rpc, 8, |req| async move {
            Ok::<_, std::io::Error>(req.body().clone())
        })
        .await
        .expect("liveness worker");

    let stop = CancellationToken::new();
    let stop_consumer = CancellationToken::new();
    let tasks = vec![
        tokio::spawn(workloads::kv(
            client.clone(),
            routes.clone(),
            ledger.clone(),
            stop.clone(),
        )),
        tokio::spawn(workloads::produce(
            client.clone(),
            routes.clone(),
            ledger.clone(),
            stop.clone(),
        )),
        tokio::spawn(workloads::append(
            client.clone(),
            routes.clone(),
            ledger.clone(),
            stop.clone(),
        )),
        tokio::spawn(workloads::lease(
            client.clone(),
            routes.clone(),
            format!("owner-{tag}"),
            ledger.clone(),
            stop.clone(),
        )),
    ];
    let consumer = tokio::spawn(workloads::consume(
        client.clone(),
        routes.clone(),
        ledger.clone(),
        stop_consumer.clone(),
    ));
    let follower = tokio::spawn(workloads::follow(
        client.clone(),
        routes.clone(),
        ledger.clone(),
        stop_consumer.clone(),
    ));

    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut prober = Prober {
        direct: direct.clone(),
        routes: routes.clone(),
        probes,
        next: 0,
    };
    let mut violations = Vec::new();
    let mut episodes = std::collections::BTreeMap::<Fault, u32>::new();
    let mut slowest = Duration::ZERO;
    let mut rss = Vec::new();
    let end = Instant::now() + config.duration;
    while Instant::now() < end {
        let choices: Vec<Fault> = FAULTS
            .into_iter()
            .filter(|f| config.restarts || *f != Fault::Restart)
            .collect();
        let fault = choices[rng.random_range(0..choices.len())];
        *episodes.entry(fault).or_default() += 1;
        let mut events = client.events();
        inject(
            fault,
            &proxy,
            (&mut target, &ledger),
            config.transport,
            &mut rng,
        )
        .await;
        let healed = Instant::now();
        // A fault that ends the session must be followed by a new one
        // before the probes count.
        let ends_session = matches!(fault, Fault::Cut | Fault::HandshakeCut | Fault::Restart);
        if ends_session && !reconnected(&mut events).await {
            violations.push(format!(
                "after {fault:?}: no new session within {RECOVERY:?}"
            ));
        }
        match recover(&client, &mut prober).await {
            Ok(()) => {
                ledger.lock().probes += 1;
                slowest = slowest.max(healed.elapsed());
            }
            Err(e) => violations.push(format!("after {fault:?}: {e}")),
        }
        rss.extend(target.rss());
        // Normal operation between faults.
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..150))).await;
    }

    // Quiesce: the writers stop, then the consumer and follower catch up.
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    if let Err(e) = recover(&client, &mut prober).await {
        violations.push(format!("at the end: {e}"));
    }
    let checks = final_checks(&direct, &routes, &ledger).await;
    stop_consumer.cancel();
    let _ = consumer.await;
    let _ = follower.await;
    violations.extend(checks);

    drop(worker);
    listener.abort();
    client.close().await;
    direct.close().await;
    let restarts = target.restarts();
    target.stop().await;

    let ledger = Arc::try_unwrap(ledger)
        .map(Mutex::into_inner)
        .unwrap_or_else(|l| l.lock().clone());
    let mut all = ledger.violations.clone();
    all.extend(violations);
    Report {
        config,
        episodes: episodes.into_iter().collect(),
        slowest_recovery: slowest,
        restarts,
        ledger,
        violations: all,
        rss,
    }
}

async fn chaos_client(url: &str) -> Client {
    let client = Client::builder(url, StaticToken::anonymous())
        .reconnect(fast_reconnect())
        .request_timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .expect("valid options");
    client
        .connect_when_ready(Duration::from_secs(30))
        .await
        .expect("the chaos client connects");
    client
}

async fn inject(
    fault: Fault,
    proxy: &ProxyHandle,
    (target, ledger): (&mut Target, &workloads::Shared),
    transport: Transport,
    rng: &mut StdRng,
) {
    let hold = Duration::from_millis(rng.random_range(50..400));
    match fault {
        Fault::Cut => proxy.cut_all(),
        Fault::HandshakeCut => {
            let chunk = match transport {
                Transport::Tcp => 1,
                Transport::Ws => 2,
            };
            // Fewer than the client's three refusals in a row.
            proxy.cut_handshakes(rng.random_range(1..=2), chunk);
            proxy.cut_all();
        }
        Fault::Blackhole => {
            proxy.blackhole(true);
            tokio::time::sleep(hold).await;
            proxy.blackhole(false);
        }
        Fault::StallUp | Fault::StallDown => {
            let dir = if fault == Fault::StallUp {
                Direction::Up
            } else {
                Direction::Down
            };
            proxy.stall(dir, true);
            tokio::time::sleep(hold).await;
            proxy.stall(dir, false);
        }
        Fault::Delay => {
            proxy.set_delay(Duration::from_millis(rng.random_range(1..20)));
            tokio::time::sleep(hold).await;
            proxy.set_delay(Duration::ZERO);
        }
        Fault::Restart => restart(target, ledger).await,
    }
}

/// Restarts the target, noting the moment of a crash (a SIGKILL) in the
/// ledger first.
async fn restart(target: &mut Target, ledger: &workloads::Shared) {
    if target.crashes_on_restart() {
        ledger.lock().crashes.push(std::time::Instant::now());
    }
    target.restart().await;
}

/// Waits for the client's next session (`Connected { reconnected: true }`).
async fn reconnected(events: &mut fitz::Events) -> bool {
    tokio::time::timeout(RECOVERY, async {
        while let Some(e) = events.recv().await {
            if matches!(
                e,
                fitz::Event::Connected {
                    reconnected: true,
                    ..
                }
            ) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false)
}

/// Probes through a client that does not go through the proxy.
struct Prober {
    direct: Client,
    routes: Routes,
    probes: tokio::sync::mpsc::UnboundedReceiver<u64>,
    next: u64,
}

/// Waits for the client to be `Authenticated`, then proves its notice
/// subscription and its RPC worker alive with one probe each.
async fn recover(client: &Client, prober: &mut Prober) -> Result<(), String> {
    let deadline = Instant::now() + RECOVERY;
    let mut state = client.watch_state();
    tokio::time::timeout_at(deadline, state.wait_for(|s| *s == State::Authenticated))
        .await
        .map_err(|_| {
            format!(
                "not Authenticated within {RECOVERY:?} ({:?})",
                client.state()
            )
        })?
        .map_err(|_| "the client's state ended".to_owned())?;
    prober.next += 1;
    let n = prober.next;
    // The RPC worker answers the probe (the direct client retries while the
    // worker's registration is being restored).
    loop {
        match prober
            .direct
            .rpc()
            .request(&prober.routes.rpc, n.to_string())
            .await
        {
            Ok(body) if body == n.to_string().as_bytes() => break,
            Ok(body) => return Err(format!("RPC probe {n} echoed {body:?}")),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(format!("RPC worker not alive: {e}")),
        }
    }
    // The subscription receives a notice published after the recovery.
    loop {
        let _ = prober
            .direct
            .notice()
            .publish(&prober.routes.notice, n.to_string())
            .await;
        let got = tokio::time::timeout(Duration::from_millis(500), async {
            while let Some(seen) = prober.probes.recv().await {
                if seen == n {
                    return true;
                }
            }
            false
        })
        .await;
        match got {
            Ok(true) => return Ok(()),
            Ok(false) => return Err("the notice subscription ended".to_owned()),
            Err(_) if Instant::now() < deadline => {}
            Err(_) => return Err("notice subscription not alive".to_owned()),
        }
    }
}

/// After the writers stopped: the ledger against what the broker holds.
async fn final_checks(direct: &Client, routes: &Routes, ledger: &workloads::Shared) -> Vec<String> {
    let mut v = Vec::new();
    let snapshot = ledger.lock().clone();
    match workloads::kv_present(direct, routes).await {
        Ok(present) => v.extend(snapshot.kv.check("kv", &present)),
        Err(e) => v.push(format!("kv: final read failed: {e}")),
    }
    match workloads::stream_present(direct, routes).await {
        Ok(records) => {
            let ids: std::collections::BTreeSet<u64> = records.iter().map(|(_, id)| *id).collect();
            if ids.len() != records.len() {
                v.push("stream: an id appears twice".to_owned());
            }
            if records.iter().enumerate().any(|(i, (o, _))| *o != i as u64) {
                v.push("stream: offsets are not 0, 1, 2, …".to_owned());
            }
            v.extend(snapshot.stream.check("stream", &ids));
            // The follower catches up to the same sequence.
            let deadline = Instant::now() + RECOVERY;
            while ledger.lock().followed.len() < records.len() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let followed = ledger.lock().followed.clone();
            if followed != records {
                v.push(format!(
                    "stream follow: saw {} records, the stream holds {} (or they differ)",
                    followed.len(),
                    records.len()
                ));
            }
        }
        Err(e) => v.push(format!("stream: final read failed: {e}")),
    }
    // Every acknowledged message is delivered (the consumer keeps going).
    let deadline = Instant::now() + RECOVERY;
    while !ledger.lock().undelivered().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut l = ledger.lock();
    let lost = l.undelivered();
    if !lost.is_empty() {
        let gaps: Vec<String> = lost
            .iter()
            .take(8)
            .map(|id| format!("{id}{}", l.when(l.enqueued_at.get(id))))
            .collect();
        v.push(format!(
            "queue: {} acknowledged messages never delivered: {}",
            lost.len(),
            gaps.join(", ")
        ));
    }
    let delivered: std::collections::BTreeSet<u64> = l.deliveries.keys().copied().collect();
    // Lost acknowledged ones are reported above, with the crash allowance.
    let mut writes = l.queue.clone();
    writes.acked.retain(|id| delivered.contains(id));
    v.extend(writes.check("queue (delivered)", &delivered));
    v
}
