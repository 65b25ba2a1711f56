//! Memory as a figure: resident set sizes (`VmRSS`) of
//!
//! * a client process with 10 k subscriptions: this binary re-executed with
//!   `VERSUS_ROLE=memprobe`, reading its own `/proc/self/status` before and
//!   after subscribing (our client and `async-nats`). Our broker admits
//!   1,024 subscriptions per session, so the probe opens 10 connections of
//!   1,000 subscriptions each, for both clients;
//! * each server per 1 k idle sessions (1,000 connected clients opened by
//!   the bench) and per 1 k subscriptions (1,000 on one session), read
//!   from the child's `/proc/<pid>/status`.
//!
//! RSS counts pages touched, so a freed-but-kept allocator arena still
//! counts: these are upper bounds of what the state costs, read once.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::measure::err;
use crate::servers::{Server, rss_kib};

/// Sessions opened for the per-1 k-sessions figure.
const SESSIONS: usize = 1000;
/// Subscriptions of the client probe.
const SUBS: usize = 10_000;
/// Subscriptions per connection (our broker's limit is 1,024 per session),
/// and the broker's per-subscription figure.
const SUBS_PER_CONNECTION: usize = 1000;

/// The `memprobe` role: `VERSUS_PROBE` = `ours` | `nats`, `VERSUS_URL`.
/// Prints one JSON object: KiB after connecting and after subscribing.
pub fn run_probe() {
    let rt = fitz_bench::client_runtime();
    let kind = std::env::var("VERSUS_PROBE").unwrap_or_default();
    let url = std::env::var("VERSUS_URL").unwrap_or_default();
    let me = "/proc/self/status";
    let result: Result<(u64, u64, u64), String> = rt.block_on(async {
        let before = rss_kib(me).ok_or("no VmRSS")?;
        let connections = SUBS / SUBS_PER_CONNECTION;
        if kind == "ours" {
            let mut clients = Vec::with_capacity(connections);
            for _ in 0..connections {
                let c = fitz::Client::builder(url.clone(), fitz::StaticToken::anonymous())
                    .request_timeout(Duration::from_secs(30))
                    .build()
                    .map_err(err)?;
                c.connect().await.map_err(err)?;
                clients.push(c);
            }
            let connected = rss_kib(me).ok_or("no VmRSS")?;
            let mut subs = Vec::with_capacity(SUBS);
            for i in 0..SUBS {
                let notice = clients[i / SUBS_PER_CONNECTION].notice();
                subs.push(
                    notice
                        .subscribe(&format!("notice://bench/m{i}/ev"))
                        .await
                        .map_err(err)?,
                );
            }
            let after = rss_kib(me).ok_or("no VmRSS")?;
            drop(subs);
            for c in clients {
                c.close().await;
            }
            Ok((before, connected, after))
        } else {
            let mut clients = Vec::with_capacity(connections);
            for _ in 0..connections {
                clients.push(async_nats::connect(url.as_str()).await.map_err(err)?);
            }
            let connected = rss_kib(me).ok_or("no VmRSS")?;
            let mut subs = Vec::with_capacity(SUBS);
            for i in 0..SUBS {
                let c = &clients[i / SUBS_PER_CONNECTION];
                subs.push(c.subscribe(format!("bench.m{i}")).await.map_err(err)?);
            }
            for c in &clients {
                c.flush().await.map_err(err)?;
            }
            let after = rss_kib(me).ok_or("no VmRSS")?;
            drop(subs);
            Ok((before, connected, after))
        }
    });
    match result {
        Ok((before, connected, after)) => println!(
            "{{\"start_kib\":{before},\"connected_kib\":{connected},\"subscribed_kib\":{after},\"subscriptions\":{SUBS},\"connections\":{}}}",
            SUBS / SUBS_PER_CONNECTION
        ),
        Err(e) => println!("{{\"error\":{}}}", fitz_bench::scenarios::json_str(&e)),
    }
}

/// Runs the probe child for `kind` against `url`; its JSON line.
fn probe(kind: &str, url: &str) -> String {
    let out = std::env::current_exe().and_then(|exe| {
        Command::new(exe)
            .env("VERSUS_ROLE", "memprobe")
            .env("VERSUS_PROBE", kind)
            .env("VERSUS_URL", url)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
    });
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Err(e) => format!(
            "{{\"error\":{}}}",
            fitz_bench::scenarios::json_str(&e.to_string())
        ),
    }
}

fn delta(server: &Server, before: Option<u64>) -> String {
    match (before, server.rss_kib()) {
        (Some(b), Some(a)) => format!("{}", a as i64 - b as i64),
        _ => "null".to_string(),
    }
}

/// Every memory figure as one JSON object (KiB).
pub async fn figures(
    fitz: (&Server, &str),
    nats: Option<(&Server, &str)>,
    redis: Option<(&Server, &str)>,
) -> String {
    let mut parts = Vec::new();
    parts.push(format!("\"client_ours\":{}", probe("ours", fitz.1)));
    if let Some((_, url)) = nats {
        parts.push(format!("\"client_nats\":{}", probe("nats", url)));
    }
    parts.push(format!(
        "\"broker_fitz\":{}",
        fitz_broker(fitz.0, fitz.1).await
    ));
    if let Some((server, url)) = nats {
        parts.push(format!(
            "\"broker_nats\":{}",
            nats_server(server, url).await
        ));
    }
    if let Some((server, url)) = redis {
        parts.push(format!(
            "\"broker_redis\":{}",
            redis_server(server, url).await
        ));
    }
    format!(
        "{{\"sessions\":{SESSIONS},\"subscriptions\":{SUBS},\"broker_subscriptions\":{SUBS_PER_CONNECTION},{}}}",
        parts.join(",")
    )
}

async fn fitz_broker(server: &Server, url: &str) -> String {
    let r0 = server.rss_kib();
    let mut clients = Vec::with_capacity(SESSIONS);
    for _ in 0..SESSIONS {
        let Ok(c) = fitz::Client::builder(url.to_string(), fitz::StaticToken::anonymous()).build()
        else {
            break;
        };
        if c.connect().await.is_err() {
            break;
        }
        clients.push(c);
    }
    let sessions = clients.len();
    let per_sessions = delta(server, r0);
    let r1 = server.rss_kib();
    let mut subs = Vec::with_capacity(SUBS);
    if let Some(c) = clients.first() {
        let notice = c.notice();
        for i in 0..SUBS_PER_CONNECTION {
            match notice.subscribe(&format!("notice://bench/bm{i}/ev")).await {
                Ok(s) => subs.push(s),
                Err(_) => break,
            }
        }
    }
    let per_subs = delta(server, r1);
    let n = subs.len();
    drop(subs);
    for c in clients {
        c.close().await;
    }
    format!(
        "{{\"sessions_opened\":{sessions},\"sessions_delta_kib\":{per_sessions},\"subscriptions_made\":{n},\"subscriptions_delta_kib\":{per_subs}}}"
    )
}

async fn nats_server(server: &Server, url: &str) -> String {
    let r0 = server.rss_kib();
    let mut clients = Vec::with_capacity(SESSIONS);
    for _ in 0..SESSIONS {
        match async_nats::connect(url).await {
            Ok(c) => clients.push(c),
            Err(_) => break,
        }
    }
    let sessions = clients.len();
    let per_sessions = delta(server, r0);
    let r1 = server.rss_kib();
    let mut subs = Vec::with_capacity(SUBS);
    if let Some(c) = clients.first() {
        for i in 0..SUBS_PER_CONNECTION {
            match c.subscribe(format!("bench.bm{i}")).await {
                Ok(s) => subs.push(s),
                Err(_) => break,
            }
        }
        let _ = c.flush().await;
    }
    let per_subs = delta(server, r1);
    let n = subs.len();
    drop(subs);
    drop(clients);
    format!(
        "{{\"sessions_opened\":{sessions},\"sessions_delta_kib\":{per_sessions},\"subscriptions_made\":{n},\"subscriptions_delta_kib\":{per_subs}}}"
    )
}

async fn redis_server(server: &Server, url: &str) -> String {
    let r0 = server.rss_kib();
    let mut clients = Vec::with_capacity(SESSIONS);
    if let Ok(client) = redis::Client::open(url) {
        for _ in 0..SESSIONS {
            match client.get_multiplexed_async_connection().await {
                Ok(c) => clients.push(c),
                Err(_) => break,
            }
        }
    }
    let sessions = clients.len();
    let per_sessions = delta(server, r0);
    drop(clients);
    format!("{{\"sessions_opened\":{sessions},\"sessions_delta_kib\":{per_sessions}}}")
}
