//! The domain commands: each connects, does its work through the `fitz`
//! crate's public API, prints, and closes the client.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fitz::kv::{Durability, ScanOptions, TxMode};
use fitz::lease::{LeaseGuard, ObserveOptions};
use fitz::queue::{EnqueueOptions, ReserveOptions};
use fitz::rpc::{CallOptions, HandlerError};
use fitz::schedule::DeliveryMode;
use fitz::stream::{AppendOptions, Filter, ReadOptions, StreamItem, StreamRecord};
use fitz::{Client, Overflow, SubscriptionOptions};
use futures_util::{Stream, StreamExt};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use crate::cli::*;
use crate::conn::{self, Contexts, interrupted, read_body};
use crate::failure::Failure;
use crate::out::{Out, cell, put_body, timestamp};

type Res = Result<(), Failure>;

/// Notifications a live command (`sub`, `watch`) buffers while it prints.
/// A consumer further behind than this (a stalled terminal) ends with a
/// "subscription overflow" error (exit 1) rather than silently skipping.
const LIVE_BUFFER: usize = 4096;

fn live_options() -> SubscriptionOptions {
    SubscriptionOptions {
        buffer: LIVE_BUFFER,
        overflow: Overflow::Error,
    }
}

/// Runs a parsed command line (all but `fitz broker`).
pub async fn dispatch(cli: Cli) -> Res {
    let out = Out {
        json: cli.global.json,
    };
    let g = &cli.global;
    // Install the SIGINT/SIGTERM handlers now, so a Ctrl-C that arrives
    // before a command first waits for it still ends it cleanly.
    conn::install_signal_handlers();
    match cli.command {
        Commands::Context(c) => context(c, out),
        Commands::Broker(_) => Err(Failure::usage(
            "`fitz broker` runs outside the client runtime",
        )),
        Commands::Bench(b) => crate::bench::run(g, b, out).await,
        Commands::Kv(c) => with_client(g, |client| kv(client, c, out)).await,
        Commands::Queue(c) => with_client(g, |client| queue(client, c, out)).await,
        Commands::Rpc(c) => with_client(g, |client| rpc(client, c, out)).await,
        Commands::Lease(c) => with_client(g, |client| lease(client, c, out)).await,
        Commands::Notice(c) => with_client(g, |client| notice(client, c, out)).await,
        Commands::Stream(c) => with_client(g, |client| stream(client, c, out)).await,
        Commands::Schedule(c) => with_client(g, |client| schedule(client, c, out)).await,
    }
}

/// Connects, runs `f`, and closes the client whatever happened (which
/// unsubscribes, stops workers and releases what the session held).
async fn with_client<F, Fut>(g: &Global, f: F) -> Res
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = Res>,
{
    let client = conn::connect(g).await?;
    let result = f(client.clone()).await;
    client.close().await;
    result
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Prints each item of a live stream until `count` items, the stream's end,
/// or Ctrl-C (a clean stop, exit 0).
async fn follow<S, T, F>(stream: S, what: &str, count: CountArg, mut print: F) -> Res
where
    S: Stream<Item = fitz::Result<T>>,
    F: FnMut(T) -> Res,
{
    eprintln!("fitz: listening on {what} (Ctrl-C to stop)");
    let mut stream = std::pin::pin!(stream);
    let mut seen = 0u64;
    if count.count == Some(0) {
        return Ok(());
    }
    loop {
        tokio::select! {
            _ = interrupted() => return Ok(()),
            item = stream.next() => match item {
                None => return Ok(()),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(item)) => {
                    print(item)?;
                    seen += 1;
                    if count.count.is_some_and(|n| seen >= n) {
                        return Ok(());
                    }
                }
            }
        }
    }
}

fn context(c: ContextCmd, out: Out) -> Res {
    let mut ctxs = Contexts::load()?;
    match c {
        ContextCmd::Add {
            name,
            server,
            bearer,
            token_path,
            select,
        } => {
            ctxs.contexts.insert(
                name.clone(),
                conn::Context {
                    url: server.clone(),
                    token: bearer,
                    token_file: token_path,
                },
            );
            if select || ctxs.current.is_none() {
                ctxs.current = Some(name.clone());
            }
            ctxs.save()?;
            out.line(
                || format!("context `{name}` saved ({server})"),
                || json!({"context": name, "url": server, "saved": true}),
            );
        }
        ContextCmd::Use { name } => {
            if !ctxs.contexts.contains_key(&name) {
                return Err(Failure::usage(format!("no context named `{name}`")));
            }
            ctxs.current = Some(name.clone());
            ctxs.save()?;
            out.line(
                || format!("using context `{name}`"),
                || json!({"context": name, "current": true}),
            );
        }
        ContextCmd::Ls => {
            let cur = ctxs.current.clone();
            let mut rows = Vec::new();
            let mut jrows = Vec::new();
            for (name, c) in &ctxs.contexts {
                let is_cur = cur.as_deref() == Some(name);
                let auth = match (&c.token, &c.token_file) {
                    (Some(_), _) => "token".to_owned(),
                    (None, Some(p)) => format!("file {}", p.display()),
                    (None, None) => "anonymous".to_owned(),
                };
                rows.push(vec![
                    if is_cur { "*" } else { "" }.to_owned(),
                    name.clone(),
                    c.url.clone(),
                    auth.clone(),
                ]);
                jrows.push(json!({"context": name, "url": c.url, "current": is_cur, "auth": auth}));
            }
            out.table(&["", "name", "url", "auth"], rows, jrows);
        }
    }
    Ok(())
}

async fn kv(client: Client, c: KvCmd, out: Out) -> Res {
    let kv = client.kv();
    match c {
        KvCmd::Get { route, key } => {
            let mut tx = kv.begin(&route, TxMode::ReadOnly).await?;
            let value = tx.get(key.as_bytes()).await?;
            let _ = tx.rollback().await;
            match value {
                Some(v) => out.body(&v, json!({"route": route, "key": key})),
                None => return Err(Failure::domain(format!("{route}: no key `{key}`"))),
            }
        }
        KvCmd::Put { route, key, value } => kv_write(&kv, route, key, value, false, out).await?,
        KvCmd::Insert { route, key, value } => kv_write(&kv, route, key, value, true, out).await?,
        KvCmd::Del { route, key } => {
            let mut tx = kv.begin(&route, TxMode::ReadWrite).await?;
            tx.delete(key.as_bytes()).await?;
            tx.commit(Durability::Sync).await?;
            out.line(
                || format!("deleted {key} from {route}"),
                || json!({"route": route, "key": key, "deleted": true}),
            );
        }
        KvCmd::Scan {
            route,
            prefix,
            limit,
            reverse,
        } => {
            let mut opts = match &prefix {
                Some(p) => ScanOptions::prefix(p.as_bytes()),
                None => ScanOptions::all(),
            };
            if reverse {
                opts = opts.reverse();
            }
            if let Some(n) = limit {
                opts = opts.limit(n);
            }
            let mut tx = kv.begin(&route, TxMode::ReadOnly).await?;
            let mut rows = Vec::new();
            let mut jrows = Vec::new();
            {
                let mut scan = tx.scan(opts);
                while let Some(entry) = scan.next().await {
                    let (k, v) = entry?;
                    rows.push(vec![cell(&k), cell(&v)]);
                    let mut j = json!({"route": route});
                    put_body(&mut j, "key", &k);
                    put_body(&mut j, "value", &v);
                    jrows.push(j);
                }
            }
            let _ = tx.rollback().await;
            out.table(&["key", "value"], rows, jrows);
        }
        KvCmd::Watch { pattern, count } => {
            let sub = kv.subscribe_with(&pattern, live_options()).await?;
            follow(sub, &pattern, count, |ch| {
                let ts = now_millis();
                out.line(
                    || format!("{}  {}  mutations={}", timestamp(ts), ch.route(), ch.mutation_count()),
                    || json!({"route": ch.route(), "mutations": ch.mutation_count(), "received_at": ts}),
                );
                Ok(())
            })
            .await?;
        }
    }
    Ok(())
}

async fn kv_write(
    kv: &fitz::Kv,
    route: String,
    key: String,
    value: BodyArgs,
    insert: bool,
    out: Out,
) -> Res {
    let value = read_body(&value).await?;
    let len = value.len();
    let mut tx = kv.begin(&route, TxMode::ReadWrite).await?;
    if insert {
        tx.insert(key.as_bytes(), value).await?;
    } else {
        tx.put(key.as_bytes(), value).await?;
    }
    tx.commit(Durability::Sync).await?;
    out.line(
        || {
            format!(
                "{} {key} in {route} ({len} bytes)",
                if insert { "inserted" } else { "put" }
            )
        },
        || json!({"route": route, "key": key, "bytes": len, "ok": true}),
    );
    Ok(())
}

/// Runs `sh -c cmd` with `input` on stdin; returns its stdout, or its
/// stderr and status as an error message.
async fn run_shell(cmd: &str, input: Bytes) -> Result<Vec<u8>, String> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run `{cmd}`: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input closes the pipe early.
        let _ = stdin.write_all(&input).await;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| format!("`{cmd}`: {e}"))?;
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(format!(
            "`{cmd}` exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

async fn queue(client: Client, c: QueueCmd, out: Out) -> Res {
    let q = client.queue();
    match c {
        QueueCmd::Enqueue { route, body, delay } => {
            let body = read_body(&body).await?;
            let len = body.len();
            let id = match delay {
                Some(d) => {
                    q.enqueue_with(&route, body, EnqueueOptions::delay(d))
                        .await?
                }
                None => q.enqueue(&route, body).await?,
            };
            out.line(
                || format!("enqueued {id} to {route} ({len} bytes)"),
                || json!({"route": route, "id": id.to_string(), "bytes": len}),
            );
        }
        QueueCmd::Watch { pattern, count } => {
            let sub = q.subscribe_with(&pattern, live_options()).await?;
            follow(sub, &pattern, count, |a| {
                let ts = now_millis();
                match a.counters() {
                    Some(c) => out.line(
                        || {
                            format!(
                                "{}  {}  ready={} delayed={} inflight={}",
                                timestamp(ts),
                                a.route(),
                                c.ready,
                                c.delayed,
                                c.inflight
                            )
                        },
                        || {
                            json!({"route": a.route(), "ready": c.ready, "delayed": c.delayed,
                                   "inflight": c.inflight, "received_at": ts})
                        },
                    ),
                    None => out.line(
                        || format!("{}  {}  available", timestamp(ts), a.route()),
                        || json!({"route": a.route(), "received_at": ts}),
                    ),
                }
                Ok(())
            })
            .await?;
        }
        QueueCmd::Consume {
            route,
            exec,
            lease,
            count,
        } => {
            let opts = ReserveOptions {
                lease,
                batch: 1,
                wait: Duration::from_secs(5),
            };
            eprintln!("fitz: consuming {route} (Ctrl-C to stop)");
            let mut done = 0u64;
            while count.count.is_none_or(|n| done < n) {
                let batch = tokio::select! {
                    _ = interrupted() => return Ok(()),
                    r = q.reserve(&route, opts) => r?,
                };
                for r in batch {
                    let body = r.body().clone();
                    let id = r.id();
                    if let Some(cmd) = &exec {
                        // Ctrl-C kills the command (kill_on_drop) and leaves the
                        // message uncompleted: redelivered when its lease ends.
                        let ran = tokio::select! {
                            r = run_shell(cmd, body.clone()) => r,
                            _ = interrupted() => return Ok(()),
                        };
                        match ran {
                            Ok(stdout) => {
                                let mut o = std::io::stdout().lock();
                                let _ = std::io::Write::write_all(&mut o, &stdout);
                                let _ = std::io::Write::flush(&mut o);
                            }
                            Err(msg) => {
                                // Not completed: redelivered when the lease ends.
                                eprintln!("fitz: message {id} not completed: {msg}");
                                continue;
                            }
                        }
                    } else {
                        out.body(&body, json!({"route": route, "id": id.to_string()}));
                    }
                    r.complete()
                        .await
                        .map_err(|e| Failure::from(e.error().clone()))?;
                    done += 1;
                }
            }
        }
    }
    Ok(())
}

async fn rpc(client: Client, c: RpcCmd, out: Out) -> Res {
    let rpc = client.rpc();
    match c {
        RpcCmd::Call {
            route,
            body,
            timeout,
        } => {
            let body = read_body(&body).await?;
            let reply = match timeout {
                Some(t) => {
                    rpc.request_with(&route, body, CallOptions::timeout(t))
                        .await?
                }
                None => rpc.request(&route, body).await?,
            };
            out.body(&reply, json!({"route": route}));
        }
        RpcCmd::Serve {
            pattern,
            exec,
            max_concurrent,
            count,
        } => {
            let served = Arc::new(AtomicU64::new(0));
            let enough = Arc::new(Notify::new());
            let exec = exec.map(Arc::<str>::from);
            let (s2, e2) = (served.clone(), enough.clone());
            let limit = count.count;
            let worker = rpc
                .serve(&pattern, max_concurrent, move |req| {
                    let exec = exec.clone();
                    let (served, enough) = (s2.clone(), e2.clone());
                    async move {
                        let body = req.body().clone();
                        let route = req.route().to_owned();
                        let reply = match &exec {
                            None => Ok(body.to_vec()),
                            Some(cmd) => run_shell(cmd, body.clone()).await,
                        };
                        out.line(
                            || format!("{}  {}  {}", timestamp(now_millis()), route, cell(&body)),
                            || {
                                let mut j = json!({"route": route, "ok": reply.is_ok()});
                                put_body(&mut j, "body", &body);
                                j
                            },
                        );
                        let n = served.fetch_add(1, Ordering::SeqCst) + 1;
                        if limit.is_some_and(|l| n >= l) {
                            enough.notify_one();
                        }
                        reply.map_err(HandlerError::failed)
                    }
                })
                .await?;
            eprintln!("fitz: serving {pattern} (Ctrl-C to stop)");
            if limit != Some(0) {
                tokio::select! {
                    _ = interrupted() => {}
                    _ = enough.notified() => {}
                }
            }
            worker.shutdown().await?;
        }
    }
    Ok(())
}

async fn lease(client: Client, c: LeaseCmd, out: Out) -> Res {
    let leases = client.lease();
    match c {
        LeaseCmd::Acquire {
            route,
            owner,
            ttl,
            wait,
            hold,
            command,
        } => {
            let owner = owner.unwrap_or_else(|| format!("fitz-cli-{}", std::process::id()));
            let lease = match wait {
                Some(w) => leases.acquire_wait(&route, &owner, ttl, w).await?,
                None => leases.acquire(&route, &owner, ttl).await?,
            };
            let token = lease.fencing_token();
            out.line(
                || format!("acquired {route} as {owner}, fencing token {token}"),
                || json!({"route": route, "owner": owner, "fencing_token": token, "acquired": true}),
            );
            if command.is_empty() && !hold {
                lease.release().await?;
                return Ok(());
            }
            let guard = lease.into_guard()?;
            if hold {
                eprintln!("fitz: holding {route} (Ctrl-C to release)");
                tokio::select! {
                    _ = interrupted() => {}
                    lost = guard.lost() => return Err(Failure::domain(format!("lease lost: {}", lost.to_error()))),
                }
                guard.release().await?;
                out.line(
                    || format!("released {route}"),
                    || json!({"route": route, "released": true}),
                );
                return Ok(());
            }
            run_under(guard, &command).await?;
        }
        LeaseCmd::Query { route } => {
            let st = leases.query(&route).await?;
            match st.holder() {
                Some(h) => out.line(
                    || {
                        format!(
                            "{route}  held by {}  ttl {}s  waiters {}",
                            h.owner(),
                            h.ttl_remaining().as_secs(),
                            st.waiters()
                        )
                    },
                    || {
                        json!({"route": route, "held": true, "owner": h.owner(),
                               "ttl_remaining_secs": h.ttl_remaining().as_secs(), "waiters": st.waiters()})
                    },
                ),
                None => out.line(
                    || format!("{route}  free  waiters {}", st.waiters()),
                    || json!({"route": route, "held": false, "waiters": st.waiters()}),
                ),
            }
        }
        LeaseCmd::Observe {
            selector,
            expected_ttl,
            count,
        } => {
            let mut options = ObserveOptions::default();
            if let Some(ttl) = expected_ttl {
                options = options.expected_ttl(ttl);
            }
            let observer = leases.observe(&selector, options)?;
            // Every installed snapshot, beginning with the first.
            let snapshots = futures_util::stream::unfold(observer, |o| async move {
                let next = o.changed().await;
                Some((next, o))
            });
            follow(snapshots, &selector, count, |view| {
                let leases = view.leases();
                out.line(
                    || {
                        let mut text = format!(
                            "{}  snapshot {}: {} held",
                            timestamp(now_millis()),
                            view.version(),
                            leases.len()
                        );
                        for l in leases {
                            text.push_str(&format!(
                                "\n  {}  {}  expires in {}s",
                                l.route(),
                                l.owner(),
                                l.expires_in().as_secs()
                            ));
                        }
                        text
                    },
                    || {
                        let rows: Vec<_> = leases
                            .iter()
                            .map(|l| {
                                json!({"route": l.route(), "owner": l.owner(),
                                            "expires_in_secs": l.expires_in().as_secs()})
                            })
                            .collect();
                        json!({"version": view.version(), "leases": rows})
                    },
                );
                Ok(())
            })
            .await?;
        }
        LeaseCmd::Ls { pattern } => {
            let mut list = leases.list(&pattern);
            let mut rows = Vec::new();
            let mut jrows = Vec::new();
            while let Some(l) = list.next().await {
                let l = l?;
                rows.push(vec![
                    l.route().to_owned(),
                    l.owner().to_owned(),
                    l.acquired_at().to_owned(),
                    format!("{}s", l.expires_in().as_secs()),
                    l.renewals().to_string(),
                ]);
                jrows.push(json!({"route": l.route(), "owner": l.owner(), "acquired_at": l.acquired_at(),
                                  "expires_in_secs": l.expires_in().as_secs(), "renewals": l.renewals()}));
            }
            out.table(
                &["route", "owner", "acquired", "expires in", "renewals"],
                rows,
                jrows,
            );
        }
    }
    Ok(())
}

/// Runs `command` while `guard` holds the lease (like `flock`): the lease is
/// released when the command exits; if ownership is lost first the command
/// is killed. Exits with the command's status.
async fn run_under(guard: LeaseGuard, command: &[String]) -> Res {
    let Some((prog, args)) = command.split_first() else {
        return Err(Failure::usage("no command given after `--`"));
    };
    let mut child = tokio::process::Command::new(prog)
        .args(args)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Failure::usage(format!("cannot run `{prog}`: {e}")))?;
    let status = tokio::select! {
        s = child.wait() => s?,
        lost = guard.lost() => {
            let _ = child.kill().await;
            return Err(Failure::domain(format!("lease lost, command killed: {}", lost.to_error())));
        }
    };
    guard.release().await?;
    if status.success() {
        Ok(())
    } else {
        let code = status
            .code()
            .and_then(|c| u8::try_from(c).ok())
            .unwrap_or(1);
        Err(Failure::Child(code))
    }
}

async fn notice(client: Client, c: NoticeCmd, out: Out) -> Res {
    let n = client.notice();
    match c {
        NoticeCmd::Pub { route, body } => {
            let body = read_body(&body).await?;
            let len = body.len();
            n.publish(&route, body).await?;
            out.line(
                || format!("published to {route} ({len} bytes)"),
                || json!({"route": route, "bytes": len}),
            );
        }
        NoticeCmd::Sub { pattern, count } => {
            let sub = n.subscribe_with(&pattern, live_options()).await?;
            follow(sub, &pattern, count, |m| {
                let ts = now_millis();
                out.line(
                    || format!("{}  {}  {}", timestamp(ts), m.route(), cell(m.payload())),
                    || {
                        let mut j = json!({"route": m.route(), "received_at": ts});
                        put_body(&mut j, "body", m.payload());
                        j
                    },
                );
                Ok(())
            })
            .await?;
        }
    }
    Ok(())
}

fn filter_of(f: &FilterArgs) -> Filter {
    let mut filter = Filter::new();
    if !f.equals.is_empty() {
        filter = filter.any_of(f.equals.iter().cloned());
    }
    if let Some(p) = &f.prefix {
        filter = filter.starts_with(p.clone());
    }
    if let Some(v) = &f.not_equals {
        filter = filter.not_equals(v.clone());
    }
    filter
}

fn record_json(r: &StreamRecord) -> serde_json::Value {
    let mut j = json!({
        "route": r.route(),
        "offset": r.offset(),
        "created_at": r.created_at_millis(),
    });
    if let Some(o) = r.area_offset() {
        j["area_offset"] = json!(o);
    }
    if let Some(o) = r.realm_offset() {
        j["realm_offset"] = json!(o);
    }
    if let Some(o) = r.global_offset() {
        j["global_offset"] = json!(o);
    }
    put_body(&mut j, "body", r.body());
    j
}

fn record_row(r: &StreamRecord) -> Vec<String> {
    vec![
        r.offset().to_string(),
        r.route().to_owned(),
        timestamp(r.created_at_millis()),
        cell(r.body()),
    ]
}

const RECORD_HEADERS: [&str; 4] = ["offset", "route", "created", "body"];

async fn stream(client: Client, c: StreamCmd, out: Out) -> Res {
    let s = client.stream();
    match c {
        StreamCmd::Append {
            route,
            body,
            discriminator,
        } => {
            let body = read_body(&body).await?;
            let mut session = s.begin(&route).await?;
            let mut opts = AppendOptions::new();
            if let Some(d) = discriminator {
                opts = opts.discriminator(d);
            }
            let offset = session.append_with(body, opts).await?;
            session.commit(Durability::Sync).await?;
            out.line(
                || format!("appended to {route} at offset {offset}"),
                || json!({"route": route, "offset": offset}),
            );
        }
        StreamCmd::Read {
            selector,
            from,
            limit,
            filter,
        } => {
            let opts = ReadOptions::new().filter(filter_of(&filter));
            let mut reader = s.read(&selector, from, opts)?;
            let mut rows = Vec::new();
            let mut jrows = Vec::new();
            while limit.is_none_or(|l| (rows.len() as u64) < l) {
                match reader.next().await {
                    None => break,
                    Some(item) => {
                        if let StreamItem::Record(r) = item? {
                            rows.push(record_row(&r));
                            jrows.push(record_json(&r));
                        }
                    }
                }
            }
            out.table(&RECORD_HEADERS, rows, jrows);
        }
        StreamCmd::Tail {
            selector,
            from,
            filter,
            count,
        } => {
            let from = match from {
                Some(f) => f,
                None if !selector.contains('*') => s.metadata(&selector).await?.next_offset(),
                None => 0,
            };
            let opts = ReadOptions::new().filter(filter_of(&filter));
            let reader = s.follow(&selector, from, opts).await?;
            let records = reader.filter_map(|item| async move {
                match item {
                    Ok(StreamItem::Record(r)) => Some(Ok(r)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                }
            });
            follow(records, &selector, count, |r| {
                out.line(
                    || {
                        format!(
                            "{}  {}  {}  {}",
                            r.offset(),
                            r.route(),
                            timestamp(r.created_at_millis()),
                            cell(r.body())
                        )
                    },
                    || record_json(&r),
                );
                Ok(())
            })
            .await?;
        }
        StreamCmd::Last { route } => match s.last(&route).await? {
            Some(r) => out.table(&RECORD_HEADERS, vec![record_row(&r)], vec![record_json(&r)]),
            None => return Err(Failure::domain(format!("{route}: no records"))),
        },
        StreamCmd::Meta { route } => {
            let m = s.metadata(&route).await?;
            let opt = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
            let rows = vec![
                vec!["first offset".into(), opt(m.first_offset)],
                vec!["last offset".into(), opt(m.last_offset)],
                vec!["records".into(), m.record_count.to_string()],
                vec!["next offset".into(), m.next_offset().to_string()],
                vec!["max batch events".into(), m.max_batch_events.to_string()],
                vec!["max batch bytes".into(), m.max_batch_bytes.to_string()],
                vec!["ttl seconds".into(), opt(m.ttl_seconds)],
                vec!["area watermark".into(), m.area_watermark.to_string()],
                vec!["realm watermark".into(), m.realm_watermark.to_string()],
            ];
            let j = json!({
                "route": route, "first_offset": m.first_offset, "last_offset": m.last_offset,
                "record_count": m.record_count, "next_offset": m.next_offset(),
                "max_batch_events": m.max_batch_events, "max_batch_bytes": m.max_batch_bytes,
                "ttl_seconds": m.ttl_seconds, "area_watermark": m.area_watermark,
                "realm_watermark": m.realm_watermark,
            });
            out.table(&["field", "value"], rows, vec![j]);
        }
    }
    Ok(())
}

async fn schedule(client: Client, c: ScheduleCmd, out: Out) -> Res {
    let s = client.schedule();
    match c {
        ScheduleCmd::Create {
            route,
            cron,
            payload,
            mode,
        } => {
            let payload = read_body(&payload).await?;
            let mode = match mode {
                Mode::Single => DeliveryMode::Single,
                Mode::Broadcast => DeliveryMode::Broadcast,
            };
            s.create(&route, &cron, mode, payload).await?;
            out.line(
                || format!("scheduled {route} at `{cron}`"),
                || json!({"route": route, "cron": cron, "created": true}),
            );
        }
        ScheduleCmd::Ls { pattern } => {
            let mut list = match &pattern {
                Some(p) => s.list_matching(p)?,
                None => s.list_all(),
            };
            let mut rows = Vec::new();
            let mut jrows = Vec::new();
            while let Some(e) = list.next().await {
                let e = e?;
                let mode = match e.mode() {
                    DeliveryMode::Single => "single",
                    DeliveryMode::Broadcast => "broadcast",
                };
                rows.push(vec![
                    e.route().to_owned(),
                    e.cron().to_owned(),
                    mode.to_owned(),
                    cell(e.payload()),
                ]);
                let mut j = json!({"route": e.route(), "cron": e.cron(), "mode": mode});
                put_body(&mut j, "payload", e.payload());
                jrows.push(j);
            }
            out.table(&["route", "cron", "mode", "payload"], rows, jrows);
        }
        ScheduleCmd::Cancel { route } => {
            s.cancel(&route).await?;
            out.line(
                || format!("cancelled {route}"),
                || json!({"route": route, "cancelled": true}),
            );
        }
        ScheduleCmd::Watch { pattern, count } => {
            let sub = s.subscribe_with(&pattern, live_options()).await?;
            follow(sub, &pattern, count, |f| {
                let ts = now_millis();
                out.line(
                    || format!("{}  {}  {}", timestamp(ts), f.route(), cell(f.payload())),
                    || {
                        let mut j = json!({"route": f.route(), "received_at": ts});
                        put_body(&mut j, "payload", f.payload());
                        j
                    },
                );
                Ok(())
            })
            .await?;
        }
    }
    Ok(())
}
