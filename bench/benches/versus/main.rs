//! Fitz against the brokers users would pick instead — NATS for pub/sub and
//! request/reply, Redis for key-value — on the same machine, in the same
//! run, interleaved. Built only with the `competitors` feature
//! (`scripts/bench.sh versus` turns it on):
//!
//! ```text
//! cargo bench -p fitz-bench --features competitors --bench versus
//! ```
//!
//! Every server is a child process on free loopback ports, killed after:
//! our broker (its release binary `fitz-broker`, in-memory storage),
//! `nats-server` (with a WebSocket listener), `redis-server` (no
//! persistence), the raw echo peers. Per row, four sides: ours (our client
//! with our broker), the competitor's own Rust client (`async-nats`, `redis`),
//! the official client (`cntryl-fitz`) with our broker, and the raw echo. Each
//! round measures every side of a row back to back in a fixed-duration
//! window (the order reversed every other round); the ratios per round,
//! their median and spread are computed by `bench/report.py` from
//! `target/perf/versus.json`.
//!
//! Two placements: unpinned, and the bench (every client) pinned to core 0
//! with every server under `taskset -c 1`.
//!
//! Environment: `ROUNDS` (default 5), `WINDOW_MS` (per side and round,
//! default 300), `VERSUS_PLACEMENTS` (`unpinned,split`), `VERSUS_ROWS`
//! (substrings of row ids, comma separated; default all), `VERSUS_SIDES`
//! (`ours,competitor,official,raw` or a subset), `VERSUS_MEMORY`
//! (`0` skips the memory figures), `FITZ_BROKER_BIN`.
#![forbid(unsafe_code)]

mod measure;
mod memory;
mod others;
mod rows;
mod servers;

use std::time::Duration;

use fitz_bench::scenarios::json_str;
use rows::{ROWS, Row, Urls};
use serde_json::{Value, json};
use servers::Placement;

/// The sides of a row, in measurement order (reversed on odd rounds).
const SIDES: [&str; 4] = ["ours", "competitor", "official", "raw"];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    match std::env::var("VERSUS_ROLE").as_deref() {
        Ok("echo") => servers::run_echo(),
        Ok("memprobe") => memory::run_probe(),
        _ => run(),
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

fn run() {
    // Criterion-style arguments (`--bench`, filters) are accepted and
    // ignored: `cargo bench` passes `--bench`.
    let rounds: usize = env_or("ROUNDS", 5);
    let window = Duration::from_millis(env_or("WINDOW_MS", 300));
    let placements: String = env_or("VERSUS_PLACEMENTS", "unpinned,split".to_string());
    let filter: String = env_or("VERSUS_ROWS", String::new());
    let rows: Vec<Row> = ROWS
        .iter()
        .filter(|r| filter.is_empty() || filter.split(',').any(|f| r.id.contains(f)))
        .copied()
        .collect();
    let mut skipped = serde_json::Map::new();
    let nats_ok = servers::available("nats-server");
    let redis_ok = servers::available("redis-server");
    if !nats_ok {
        skipped.insert("NATS".into(), json!("nats-server is not installed"));
    }
    if !redis_ok {
        skipped.insert("Redis".into(), json!("redis-server is not installed"));
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load_before = load();
    let started = std::time::Instant::now();
    let mut out_placements = Vec::new();
    let mut memory = Value::Null;
    for name in placements.split(',') {
        let placement = match name {
            "unpinned" => Placement::Unpinned,
            "split" => Placement::Split,
            other => {
                eprintln!("unknown placement {other:?}");
                continue;
            }
        };
        if placement == Placement::Split {
            if cores < 2 || !servers::available("taskset") {
                skipped.insert(placement.name().into(), json!("needs 2 cores and taskset"));
                continue;
            }
            // Threads inherit the mask: every client runtime made from
            // here on runs on core 0.
            if !core_affinity::set_for_current(core_affinity::CoreId { id: 0 }) {
                skipped.insert(placement.name().into(), json!("cannot pin to core 0"));
                continue;
            }
        }
        println!("== placement {}", placement.name());
        match run_placement(placement, &rows, rounds, window, nats_ok, redis_ok) {
            Ok((p, m)) => {
                out_placements.push(p);
                if memory.is_null() {
                    memory = m;
                }
            }
            Err(e) => {
                eprintln!("placement {} failed: {e}", placement.name());
                skipped.insert(placement.name().into(), json!(e));
            }
        }
    }
    let out = json!({
        "rounds": rounds,
        "window_ms": window.as_millis() as u64,
        "load_before": load_before,
        "load_after": load(),
        "duration_s": started.elapsed().as_secs(),
        "cores": cores,
        "skipped": skipped,
        "placements": out_placements,
        "memory": memory,
    });
    fitz_bench::write_perf_json(
        "versus.json",
        &serde_json::to_string_pretty(&out).unwrap_or_default(),
    );
    println!(
        "wrote target/perf/versus.json in {} s (load {} -> {})",
        started.elapsed().as_secs(),
        out["load_before"],
        out["load_after"]
    );
}

/// One placement: start the servers, run the rounds, take the memory
/// figures (first placement only), stop the servers.
fn run_placement(
    placement: Placement,
    rows: &[Row],
    rounds: usize,
    window: Duration,
    nats_ok: bool,
    redis_ok: bool,
) -> Result<(Value, Value), String> {
    let (fitz, fitz_tcp, fitz_ws) = servers::fitz(placement)?;
    let nats = if nats_ok {
        Some(servers::nats(placement)?)
    } else {
        None
    };
    let redis = if redis_ok {
        Some(servers::redis(placement)?)
    } else {
        None
    };
    let (_echo, echo_tcp, echo_ws) = servers::echo(placement)?;
    let urls = Urls {
        fitz_tcp,
        fitz_ws,
        nats: nats.as_ref().map(|(_, t, w)| (t.clone(), w.clone())),
        redis: redis.as_ref().map(|(_, u)| u.clone()),
        echo: (echo_tcp, echo_ws),
    };
    let rt = fitz_bench::client_runtime();
    // values[row][side][round]
    let mut values = vec![vec![Vec::<Option<f64>>::new(); SIDES.len()]; rows.len()];
    let mut why: Vec<serde_json::Map<String, Value>> = vec![serde_json::Map::new(); rows.len()];
    let sides: String = env_or("VERSUS_SIDES", String::new());
    let limit = window * 3 + Duration::from_secs(10);
    for round in 0..rounds {
        for (ri, row) in rows.iter().enumerate() {
            let mut order: Vec<usize> = (0..SIDES.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for si in order {
                if !sides.is_empty() && !sides.split(',').any(|s| s == SIDES[si]) {
                    values[ri][si].push(None);
                    continue;
                }
                let fut = async {
                    match SIDES[si] {
                        "ours" => rows::ours(&urls, row, window).await,
                        "competitor" => others::competitor(&urls, row, window).await,
                        "official" => others::official(&urls, row, window).await,
                        _ => others::raw(&urls, row, window).await,
                    }
                };
                let v = match rt.block_on(async { tokio::time::timeout(limit, fut).await }) {
                    Ok(Ok(v)) => v,
                    Ok(Err(e)) => {
                        why[ri].insert(SIDES[si].into(), json!(e));
                        None
                    }
                    Err(_) => {
                        eprintln!("    {} {} timed out", row.id, SIDES[si]);
                        why[ri].insert(SIDES[si].into(), json!("timed out"));
                        None
                    }
                };
                values[ri][si].push(v);
            }
            let cell = |si: usize| {
                values[ri][si]
                    .last()
                    .copied()
                    .flatten()
                    .map_or("—".to_string(), |v| format!("{v:.1}"))
            };
            println!(
                "round {round} {}/{} ({}): ours {} | {} {} | official {} | raw {}",
                row.id,
                row.transport.name(),
                row.unit(),
                cell(0),
                row.competitor(),
                cell(1),
                cell(2),
                cell(3)
            );
        }
        println!("-- round {round} done (load {})", load());
    }
    let rows_json: Vec<Value> = rows
        .iter()
        .enumerate()
        .map(|(ri, row)| {
            let mut sides = serde_json::Map::new();
            for (si, side) in SIDES.iter().enumerate() {
                sides.insert((*side).into(), json!(values[ri][si]));
            }
            json!({
                "id": row.id,
                "transport": row.transport.name(),
                "title": row.title,
                "unit": row.unit(),
                "higher_is_better": row.higher_is_better(),
                "competitor": row.competitor(),
                "values": sides,
                "not_measured": why[ri],
            })
        })
        .collect();
    let memory = if placement == Placement::Unpinned && env_or("VERSUS_MEMORY", 1) == 1 {
        println!("== memory figures");
        let m = rt.block_on(memory::figures(
            (&fitz, &urls.fitz_tcp),
            nats.as_ref().map(|(s, u, _)| (s, u.as_str())),
            redis.as_ref().map(|(s, u)| (s, u.as_str())),
        ));
        println!("{m}");
        serde_json::from_str(&m).unwrap_or_else(|_| json!({"error": json_str(&m)}))
    } else {
        Value::Null
    };
    Ok((
        json!({"placement": placement.name(), "rows": rows_json}),
        memory,
    ))
}
