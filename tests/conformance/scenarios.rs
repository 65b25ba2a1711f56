//! CS-001 … CS-018 of `cross-language-conformance-suite.yaml` (v1.0), each
//! asserting the scenario's `expected` lines through the public API of
//! `fitz`. A scenario passes only if every assertion holds; what it observed
//! goes into its evidence either way.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fitz::kv::{Durability, TxMode};
use fitz::queue::ReserveOptions;
use fitz::rpc::{CallOptions, CancelOutcome, CancelReason, HandlerError, RpcRequest};
use fitz::schedule::DeliveryMode;
use fitz::stream::{AppendOptions, CommitEvent, Filter, ReadOptions, SelectorScope, StreamItem};
use fitz::{Client, ErrorKind, Event, State, StaticToken, codes};
use fitz_tests::Jwt;
use futures_util::future::BoxFuture;
use futures_util::{StreamExt, TryStreamExt};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::support::{Ctx, Cx, Ev, Outcome, ensure, error_json, event, within};

/// One scenario of the suite.
pub struct Scenario {
    pub id: &'static str,
    pub title: &'static str,
    pub priority: &'static str,
    /// The suite's auth mode for this scenario when it is not the cell's
    /// (CS-002 always uses an invalid JWT).
    pub auth_mode: Option<&'static str>,
    pub run: fn(Arc<Cx>, Ev) -> BoxFuture<'static, Outcome>,
}

macro_rules! scenario {
    ($id:literal, $title:literal, $prio:literal, $f:ident) => {
        Scenario {
            id: $id,
            title: $title,
            priority: $prio,
            auth_mode: None,
            run: |cx, ev| Box::pin($f(cx, ev)),
        }
    };
}

/// Every scenario, in suite order.
pub fn all() -> Vec<Scenario> {
    vec![
        scenario!("CS-001", "connect success", "P0", cs001),
        Scenario {
            auth_mode: Some("invalid_jwt"),
            ..scenario!("CS-002", "auth failure", "P0", cs002)
        },
        scenario!("CS-003", "request success", "P0", cs003),
        scenario!("CS-004", "unknown route", "P0", cs004),
        scenario!("CS-005", "invalid payload", "P0", cs005),
        scenario!("CS-006", "server error mapping", "P0", cs006),
        scenario!("CS-007", "timeout handling", "P0", cs007),
        scenario!("CS-008", "caller cancellation", "P0", cs008),
        scenario!("CS-009", "disconnect during request", "P1", cs009),
        scenario!("CS-010", "reconnect and retry behavior", "P1", cs010),
        scenario!("CS-011", "stream receive sequence", "P1", cs011),
        scenario!("CS-012", "stream completion", "P1", cs012),
        scenario!("CS-013", "stream error mid-flight", "P1", cs013),
        scenario!("CS-014", "concurrent in-flight requests", "P1", cs014),
        scenario!("CS-015", "shutdown during active work", "P1", cs015),
        scenario!("CS-016", "filtered stream replay", "P1", cs016),
        scenario!("CS-017", "global filtered multi-page replay", "P1", cs017),
        scenario!(
            "CS-018",
            "bounded concurrency under burst load",
            "P1",
            cs018
        ),
    ]
}

// ----- shared pieces -----

/// KV: write one value and read it back from a new transaction.
async fn kv_round_trip(client: &Client, route: &str) -> Result<(), String> {
    let mut tx = client
        .kv()
        .begin(route, TxMode::ReadWrite)
        .await
        .ctx("kv begin")?;
    tx.put("key", "value").await.ctx("kv put")?;
    tx.commit(Durability::Sync).await.ctx("kv commit")?;
    let mut ro = client
        .kv()
        .begin(route, TxMode::ReadOnly)
        .await
        .ctx("kv begin read-only")?;
    let got = ro.get("key").await.ctx("kv get")?;
    ro.rollback().await.ctx("kv rollback")?;
    ensure!(
        got.as_deref() == Some(&b"value"[..]),
        "read-after-commit returned {got:?}"
    );
    Ok(())
}

/// Requests the worker sees, each with a way to answer it.
type Held = mpsc::UnboundedReceiver<(RpcRequest, oneshot::Sender<Bytes>)>;

/// A worker on `pattern` that reports each request and answers when told,
/// or with an empty body once the answer is dropped or the request is
/// cancelled (so a graceful shutdown never waits on the test).
async fn holding_worker(
    client: &Client,
    pattern: &str,
    max: u32,
) -> Result<(fitz::rpc::RpcWorker, Held), String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let worker = client
        .rpc()
        .serve(pattern, max, move |req: RpcRequest| {
            let tx = tx.clone();
            async move {
                let cancelled = req.cancellation_token();
                let (answer, wait) = oneshot::channel();
                let _ = tx.send((req, answer));
                let body = tokio::select! {
                    a = wait => a.unwrap_or_default(),
                    () = cancelled.cancelled() => Bytes::new(),
                };
                Ok::<_, HandlerError>(body)
            }
        })
        .await
        .ctx("serve")?;
    Ok((worker, rx))
}

/// A graceful worker shutdown, bounded.
async fn stop(worker: fitz::rpc::RpcWorker) -> Result<(), String> {
    within("the worker's shutdown", worker.shutdown())
        .await?
        .ctx("worker shutdown")
}

/// An echo worker on `pattern`.
async fn echo_worker(client: &Client, pattern: &str) -> Result<fitz::rpc::RpcWorker, String> {
    client
        .rpc()
        .serve(pattern, 8, |req: RpcRequest| async move {
            let mut out = b"echo:".to_vec();
            out.extend_from_slice(req.body());
            Ok::<_, HandlerError>(out)
        })
        .await
        .ctx("serve echo")
}

/// An event as evidence.
fn describe(ev: &Event) -> String {
    match ev {
        Event::Connected { reconnected, .. } => format!("Connected(reconnected={reconnected})"),
        Event::Disconnected { reason } => format!("Disconnected({})", reason.kind()),
        Event::ReconnectScheduled { attempt, delay } => {
            format!(
                "ReconnectScheduled(attempt={attempt}, delay_ms={})",
                delay.as_millis()
            )
        }
        Event::Restored { count } => format!("Restored({count})"),
        Event::RestoreFailed { error, .. } => format!("RestoreFailed({error})"),
        Event::AuthRejected { .. } => "AuthRejected".into(),
        Event::Closed => "Closed".into(),
        other => format!("{other:?}"),
    }
}

/// Every event up to and including the first one matching `until`.
async fn collect_until(
    events: &mut fitz::Events,
    what: &str,
    until: impl Fn(&Event) -> bool,
) -> Result<Vec<String>, String> {
    let mut seen = Vec::new();
    let done = within(what, async {
        while let Some(ev) = events.recv().await {
            seen.push(describe(&ev));
            if until(&ev) {
                return true;
            }
        }
        false
    })
    .await;
    match done {
        Ok(true) => Ok(seen),
        Ok(false) => Err(format!("{what}: events ended; saw {seen:?}")),
        Err(e) => Err(format!("{e}; saw {seen:?}")),
    }
}

/// Collects the events of `client` from now on into a list of names.
fn record_events(
    client: &Client,
) -> (
    tokio::task::JoinHandle<()>,
    Arc<std::sync::Mutex<Vec<String>>>,
) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut events = client.events();
    let s = seen.clone();
    let task = tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            s.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(describe(&ev));
        }
    });
    (task, seen)
}

fn snapshot(seen: &std::sync::Mutex<Vec<String>>) -> Vec<String> {
    seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

// ----- CS-001 … CS-008 (P0) -----

/// CS-001: connect returns success; the state becomes Authenticated; the
/// first domain request succeeds.
async fn cs001(cx: Arc<Cx>, ev: Ev) -> Outcome {
    let client = cx
        .builder(cx.url())
        .service_name("fitz-conformance")
        .build()
        .ctx("build")?;
    ensure!(
        client.state() == State::Disconnected,
        "a new client is {:?}",
        client.state()
    );
    let mut states = client.watch_state();
    let observed = Arc::new(std::sync::Mutex::new(vec![format!("{:?}", client.state())]));
    let o = observed.clone();
    let watcher = tokio::spawn(async move {
        while states.changed().await.is_ok() {
            let s = *states.borrow_and_update();
            o.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("{s:?}"));
            if s == State::Authenticated {
                break;
            }
        }
    });
    let mut events = client.events();
    client.connect().await.ctx("connect")?;
    ensure!(
        client.state() == State::Authenticated,
        "state after connect: {:?}",
        client.state()
    );
    within("the state watcher", watcher)
        .await?
        .ctx("state watcher")?;
    ev.put("state_transitions", snapshot(&observed));
    let caps = match event(&mut events, "the Connected event", |e| {
        matches!(e, Event::Connected { .. })
    })
    .await?
    {
        Event::Connected {
            capabilities,
            reconnected,
        } => {
            ensure!(!reconnected, "a first connect reported as a reconnect");
            capabilities
        }
        _ => unreachable!(),
    };
    ev.put("capabilities", format!("{caps:?}"));
    ensure!(
        caps.contains(fitz::Capabilities::CORRELATION),
        "the broker does not correlate: {caps:?}"
    );

    // The first user request: a Notice round trip to ourselves.
    let route = format!("notice://{}/first/request", cx.realm("001"));
    let mut sub = client
        .notice()
        .subscribe(&route)
        .await
        .ctx("notice subscribe")?;
    client
        .notice()
        .publish(&route, "hello")
        .await
        .ctx("notice publish")?;
    let msg = within("our own notice", sub.next())
        .await?
        .ctx("subscription ended")?
        .ctx("notice")?;
    ensure!(
        msg.route() == route && &msg.payload()[..] == b"hello",
        "got {msg:?}"
    );
    ev.put(
        "first_domain_response",
        json!({"op": "notice subscribe + publish", "route": route, "payload": "hello"}),
    );
    client.close().await;
    Ok(())
}

/// CS-002: an invalid JWT makes connect fail as an authentication error and
/// the client does not continue as authenticated. Runs against the
/// authenticated broker over this cell's transport in every cell.
async fn cs002(cx: Arc<Cx>, ev: Ev) -> Outcome {
    use fitz_tests::BrokersExt;
    let url = cx.brokers.auth_url(cx.transport).to_owned();
    ev.put("broker", url.clone());
    ev.put(
        "note",
        "the suite's invalid_jwt mode: run in every cell against the authenticated broker",
    );
    let dev = || Jwt::dev().secret(&cx.brokers.secret);
    for (what, token) in [
        ("wrong_signature", fitz_tests::jwt::wrong_secret_token()),
        ("expired", dev().expires_in(-60).mint()),
        ("wrong_audience", dev().claim("aud", "nobody".into()).mint()),
        ("malformed", "not.a.jwt".to_owned()),
    ] {
        let client = fitz::Client::builder(url.as_str(), StaticToken::new(token))
            .build()
            .ctx("build")?;
        let mut events = client.events();
        let e = match client.connect().await {
            Ok(()) => return Err(format!("{what}: connect succeeded")),
            Err(e) => e,
        };
        ensure!(e.kind() == ErrorKind::Auth, "{what}: {e}");
        ensure!(!e.is_retryable(), "{what}: an auth failure is final");
        event(&mut events, "AuthRejected", |e| {
            matches!(e, Event::AuthRejected { .. })
        })
        .await?;
        let state = client.state();
        ensure!(state == State::Closed, "{what}: state {state:?}");
        let after = client
            .kv()
            .begin(&format!("kv://{}/a/r", cx.realm("002")), TxMode::ReadOnly)
            .await;
        let after_kind = match &after {
            Ok(_) => return Err(format!("{what}: a request succeeded after the rejection")),
            Err(e) => e.kind(),
        };
        ensure!(
            after_kind == ErrorKind::Closed,
            "{what}: later request {after_kind:?}"
        );
        ev.push(
            "rejections",
            json!({
                "token": what,
                "error": error_json(&e),
                "state": format!("{state:?}"),
                "event": "AuthRejected",
                "next_request": format!("{after_kind:?}"),
            }),
        );
    }
    Ok(())
}

/// CS-003: a KV transaction begin/put/commit succeeds and a read after the
/// commit returns the value.
async fn cs003(cx: Arc<Cx>, ev: Ev) -> Outcome {
    let client = cx.client().await?;
    let route = format!("kv://{}/a/r", cx.realm("003"));
    let mut tx = client
        .kv()
        .begin(&route, TxMode::ReadWrite)
        .await
        .ctx("begin")?;
    tx.put("greeting", "hello").await.ctx("put")?;
    let inside = tx.get("greeting").await.ctx("get in the transaction")?;
    tx.commit(Durability::Sync).await.ctx("commit")?;
    let mut ro = client
        .kv()
        .begin(&route, TxMode::ReadOnly)
        .await
        .ctx("begin read-only")?;
    let after = ro.get("greeting").await.ctx("get after commit")?;
    ro.rollback().await.ctx("rollback")?;
    ensure!(
        inside.as_deref() == Some(&b"hello"[..]),
        "own write not visible: {inside:?}"
    );
    ensure!(
        after.as_deref() == Some(&b"hello"[..]),
        "read-after-commit: {after:?}"
    );
    ev.put(
        "kv",
        json!({"route": route, "committed": "Sync", "read_after_commit": "hello"}),
    );
    client.close().await;
    Ok(())
}

/// CS-004: an operation on a route nothing serves returns a domain error
/// the client can map.
async fn cs004(cx: Arc<Cx>, ev: Ev) -> Outcome {
    let client = cx.client().await?;
    let route = format!("rpc://{}/nobody/serves/this", cx.realm("004"));
    let e = match client.rpc().request(&route, "").await {
        Ok(body) => return Err(format!("answered: {body:?}")),
        Err(e) => e,
    };
    ev.put("route", &route);
    ev.put("error", error_json(&e));
    ensure!(e.kind() == ErrorKind::Broker, "not a broker error: {e}");
    ensure!(
        e.code() == Some(codes::RPC_NO_WORKER),
        "code {:?}, want 6004",
        e.code()
    );
    ensure!(
        e.is_retryable() && !e.maybe_applied(),
        "6004 is retryable and never applied: {e:?}"
    );
    // Still usable.
    kv_round_trip(&client, &format!("kv://{}/a/r", cx.realm("004"))).await?;
    ev.put("after", "kv round trip ok");
    client.close().await;
    Ok(())
}

/// CS-005: a malformed request returns a protocol/domain error and the
/// client stays usable. The broker refuses two requests the client sends
/// as asked (a zero READ bound, a lease over the broker's limit); a cron
/// expression the broker's grammar rejects is refused before it is sent.
async fn cs005(cx: Arc<Cx>, ev: Ev) -> Outcome {
    let client = cx.client().await?;
    let (events_task, events) = record_events(&client);
    let r = cx.realm("005");

    let e = client
        .stream()
        .read_page(
            &format!("stream://{r}/a/x"),
            0,
            &ReadOptions::new().limit(0),
        )
        .await
        .err()
        .ctx("a READ with limit 0 succeeded")?;
    ev.push(
        "errors",
        json!({"op": "stream read limit=0", "error": error_json(&e)}),
    );
    ensure!(
        e.kind() == ErrorKind::Broker && e.code() == Some(codes::STREAM_INVALID_READ_BOUND),
        "stream read: {e}"
    );

    let e = client
        .queue()
        .reserve(
            &format!("queue://{r}/a/jobs"),
            ReserveOptions {
                lease: Duration::from_secs(8 * 86_400),
                ..ReserveOptions::default()
            },
        )
        .await
        .err()
        .ctx("a RESERVE with an 8-day lease succeeded")?;
    ev.push(
        "errors",
        json!({"op": "queue reserve lease=8d", "error": error_json(&e)}),
    );
    ensure!(
        e.kind() == ErrorKind::Broker && e.code() == Some(codes::QUEUE_BAD_REQUEST),
        "queue reserve: {e}"
    );

    let e = client
        .schedule()
        .create(
            &format!("schedule://{r}/a/b/run"),
            "not-a-cron",
            DeliveryMode::Single,
            "",
        )
        .await
        .err()
        .ctx("an invalid cron was accepted")?;
    ev.push(
        "errors",
        json!({"op": "schedule create cron=not-a-cron", "error": error_json(&e), "sent": false}),
    );
    ensure!(e.kind() == ErrorKind::InvalidArgument, "invalid cron: {e}");

    kv_round_trip(&client, &format!("kv://{r}/a/r")).await?;
    ensure!(
        client.state() == State::Authenticated,
        "state {:?}",
        client.state()
    );
    let seen = snapshot(&events);
    ensure!(
        !seen.iter().any(|e| e.starts_with("Disconnected")),
        "the connection dropped: {seen:?}"
    );
    ev.put(
        "client_usable_after",
        "kv round trip ok on the same session",
    );
    client.close().await;
    events_task.abort();
    Ok(())
}

/// CS-006: known broker codes map to typed errors with retryable/terminal
/// classification.
async fn cs006(cx: Arc<Cx>, ev: Ev) -> Outcome {
    let a = cx.client().await?;
    let b = cx.client().await?;
    let r = cx.realm("006");
    let ttl = Duration::from_secs(30);
    let mut checks = Vec::new();

    // 5001 held: retryable.
    let route = format!("lease://{r}/a/held");
    let held = a.lease().acquire(&route, "a", ttl).await.ctx("acquire")?;
    let e = b
        .lease()
        .acquire(&route, "b", ttl)
        .await
        .err()
        .ctx("contended acquire")?;
    checks.push(("lease acquire (held elsewhere)", e, codes::LEASE_HELD, true));
    // 5004 not found: terminal.
    let twin = a
        .lease()
        .acquire(&route, "a", ttl)
        .await
        .ctx("re-acquire")?;
    twin.release().await.ctx("release")?;
    let e = held
        .release()
        .await
        .err()
        .ctx("release of a released lease")?;
    checks.push(("lease release (not held)", e, codes::LEASE_NOT_FOUND, false));
    // 1006 key exists: terminal.
    let route = format!("kv://{r}/a/r");
    let mut tx = a.kv().begin(&route, TxMode::ReadWrite).await.ctx("begin")?;
    tx.put("k", "v").await.ctx("put")?;
    let e = tx
        .insert("k", "w")
        .await
        .err()
        .ctx("insert of an existing key")?;
    checks.push(("kv insert (key exists)", e, codes::KV_KEY_EXISTS, false));
    // 1004 isolation conflict: retryable.
    let e = b
        .kv()
        .begin(&route, TxMode::ReadWrite)
        .await
        .err()
        .ctx("second writer")?;
    checks.push((
        "kv begin (resource locked)",
        e,
        codes::KV_ISOLATION_CONFLICT,
        true,
    ));
    tx.rollback().await.ctx("rollback")?;

    for (op, e, code, retryable) in &checks {
        ev.push("mappings", json!({"op": op, "error": error_json(e)}));
        ensure!(e.kind() == ErrorKind::Broker, "{op}: {e}");
        ensure!(
            e.code() == Some(*code),
            "{op}: code {:?}, want {code}",
            e.code()
        );
        ensure!(
            e.is_retryable() == *retryable,
            "{op}: retryable {}",
            e.is_retryable()
        );
        ensure!(
            codes::is_retryable(*code) == *retryable,
            "{op}: the registry disagrees"
        );
        ensure!(!e.maybe_applied(), "{op}: refused means not applied");
    }
    a.close().await;
    b.close().await;
    Ok(())
}

/// CS-007: a long-running call times out by the client's timeout, the
/// timeout is not a cancellation, and the connection stays healthy.
async fn cs007(cx: Arc<Cx>, ev: Ev) -> Outcome {
    let server = cx.client().await?;
    let caller = cx.client().await?;
    let (events_task, events) = record_events(&caller);
    let base = format!("rpc://{}/svc", cx.realm("007"));
    let (reasons_tx, mut reasons) = mpsc::unbounded_channel();
    let worker = server
        .rpc()
        .serve(&format!("{base}/*"), 4, move |req: RpcRequest| {
            let reasons = reasons_tx.clone();
            async move {
                if req.route().ends_with("/echo") {
                    return Ok::<_, HandlerError>(Bytes::from_static(b"healthy"));
                }
                // Never answers on its own: runs until told to stop, and
                // then answers only once the scenario has seen the caller's
                // timeout (when the worker's copy of the budget runs out
                // first, an answer sent at once could still reach the caller
                // before its own deadline).
                req.cancelled().await;
                let (release, released) = oneshot::channel::<()>();
                let _ = reasons.send((req.cancel_reason(), release));
                let _ = released.await;
                Ok(Bytes::new())
            }
        })
        .await
        .ctx("serve")?;
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let mut call = caller
        .rpc()
        .call_with(&format!("{base}/slow"), "", CallOptions::timeout(timeout))
        .await
        .ctx("call")?;
    let e = match within("the call's end", call.next()).await? {
        Some(Err(e)) => e,
        other => return Err(format!("the call ended with {other:?}")),
    };
    let elapsed = started.elapsed();
    ev.put("timeout_ms", timeout.as_millis() as u64);
    ev.put("observed_ms", elapsed.as_millis() as u64);
    ev.put("error", error_json(&e));
    ensure!(e.kind() == ErrorKind::Timeout, "not a timeout: {e}");
    ensure!(
        e.kind() != ErrorKind::Cancelled,
        "a timeout must not look like a cancellation"
    );
    ensure!(elapsed >= timeout, "ended before its timeout: {elapsed:?}");
    ensure!(call.next().await.is_none(), "items after the timeout");
    let (reason, release) = within("the worker's signal", reasons.recv())
        .await?
        .ctx("worker channel")?;
    drop(release);
    ev.put("worker_cancel_reason", format!("{reason:?}"));
    ensure!(
        reason == Some(CancelReason::Deadline),
        "the worker saw {reason:?}, want Deadline"
    );
    // Healthy: same session, more requests go through.
    let answer = caller
        .rpc()
        .request(&format!("{base}/echo"), "")
        .await
        .ctx("a call after the timeout")?;
    ensure!(&answer[..] == b"healthy", "got {answer:?}");
    kv_round_trip(&caller, &format!("kv://{}/a/r", cx.realm("007"))).await?;
    ensure!(
        caller.state() == State::Authenticated,
        "state {:?}",
        caller.state()
    );
    let seen = snapshot(&events);
    ensure!(
        !seen.iter().any(|e| e.starts_with("Disconnected")),
        "the connection dropped: {seen:?}"
    );
    ev.put(
        "connection_after",
        json!({"state": "Authenticated", "reconnects": 0, "rpc_after": "ok", "kv_after": "ok"}),
    );
    stop(worker).await?;
    events_task.abort();
    server.close().await;
    caller.close().await;
    Ok(())
}

/// CS-008: a caller cancels an in-flight request; it is surfaced as a
/// cancellation (not a timeout); later requests succeed.
async fn cs008(cx: Arc<Cx>, ev: Ev) -> Outcome {
    let server = cx.client().await?;
    let caller = cx.client().await?;
    let base = format!("rpc://{}/svc", cx.realm("008"));
    let (worker, mut held) = holding_worker(&server, &format!("{base}/held"), 4).await?;

    // 1. RpcCall::cancel.
    let mut call = caller
        .rpc()
        .call(&format!("{base}/held"), "one")
        .await
        .ctx("call")?;
    let (req, _answer) = within("the delivery", held.recv())
        .await?
        .ctx("worker channel")?;
    let outcome = within("cancel", call.cancel()).await?;
    ev.put("explicit_cancel_outcome", format!("{outcome:?}"));
    ensure!(outcome == CancelOutcome::Forwarded, "cancel: {outcome:?}");
    let rest = call.next().await;
    ensure!(rest.is_none(), "the cancelled call yielded {rest:?}");
    within("the worker's signal", req.cancelled()).await?;
    ev.put(
        "explicit_worker_reason",
        format!("{:?}", req.cancel_reason()),
    );
    ensure!(
        req.cancel_reason() == Some(CancelReason::CallerCancelled),
        "worker saw {:?}",
        req.cancel_reason()
    );
    drop(req);

    // 2. Dropping the request future (Rust's cancellation primitive).
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let rpc = caller.rpc();
    let route = format!("{base}/held");
    let dropped = tokio::spawn(async move {
        tokio::select! {
            r = rpc.request(&route, "two") => Some(r),
            _ = stop_rx => None,
        }
    });
    let (req, _answer) = within("the second delivery", held.recv())
        .await?
        .ctx("worker channel")?;
    let _ = stop_tx.send(());
    let result = within("the dropped request", dropped).await?.ctx("task")?;
    ensure!(result.is_none(), "the request finished first: {result:?}");
    within("the worker's signal after the drop", req.cancelled()).await?;
    ev.put(
        "dropped_future_worker_reason",
        format!("{:?}", req.cancel_reason()),
    );
    ensure!(
        req.cancel_reason() == Some(CancelReason::CallerCancelled),
        "worker saw {:?}",
        req.cancel_reason()
    );
    drop(req);

    // 3. A cancellation surfaced as an error: a request's own call
    // downstream ends with Cancelled when its parent is cancelled.
    let (child_tx, mut child_rx) = mpsc::unbounded_channel();
    let b_rpc = server.rpc();
    let child_route = format!("{base}/held");
    let middle = server
        .rpc()
        .serve(&format!("{base}/middle"), 1, move |req: RpcRequest| {
            let (rpc, route, out) = (b_rpc.clone(), child_route.clone(), child_tx.clone());
            async move {
                let mut child = rpc.call_from_request(&req, &route, "child").await?;
                let end = child.next().await;
                let _ = out.send(end.map(|r| r.map_err(|e| e.kind())));
                Ok::<_, HandlerError>(())
            }
        })
        .await
        .ctx("serve middle")?;
    let mut call = caller
        .rpc()
        .call(&format!("{base}/middle"), "")
        .await
        .ctx("call middle")?;
    let (child_req, _answer) = within("the child delivery", held.recv())
        .await?
        .ctx("worker channel")?;
    let outcome = within("cancel the parent", call.cancel()).await?;
    ensure!(
        outcome == CancelOutcome::Forwarded,
        "parent cancel: {outcome:?}"
    );
    let child_end = within("the child's end", child_rx.recv())
        .await?
        .ctx("middle channel")?;
    ev.put("child_call_end", format!("{child_end:?}"));
    ensure!(
        child_end == Some(Err(ErrorKind::Cancelled)),
        "the child call ended with {child_end:?}, want Err(Cancelled)"
    );
    within("the child's signal", child_req.cancelled()).await?;
    drop(child_req);

    // Later requests succeed.
    let echo = echo_worker(&server, &format!("{base}/echo")).await?;
    let answer = caller
        .rpc()
        .request(&format!("{base}/echo"), "after")
        .await
        .ctx("request after the cancellations")?;
    ensure!(&answer[..] == b"echo:after", "got {answer:?}");
    ev.put("request_after", "echo ok");
    for w in [worker, middle, echo] {
        stop(w).await?;
    }
    server.close().await;
    caller.close().await;
    Ok(())
}

// ----- CS-009 … CS-010: connection loss -----

/// CS-009: a request in flight when the transport is cut fails promptly as
/// a disconnect, and the client goes into its reconnect flow.
async fn cs009(cx: Arc<Cx>, ev: Ev) -> Outcome {
    let (proxy, url) = cx.proxy().await;
    let client = cx.builder(&url).build().ctx("build")?;
    client.connect().await.ctx("connect")?;
    let mut events = client.events();
    let route = format!("queue://{}/a/jobs", cx.realm("009"));
    proxy.blackhole(true);
    let q = client.queue();
    let r = route.clone();
    let running = tokio::spawn(async move { q.enqueue(&r, "x").await });
    within("the request is written", async {
        while client
            .debug_snapshot()
            .await
            .map(|s| s.pending)
            .unwrap_or(0)
            == 0
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await?;
    let cut = Instant::now();
    proxy.cut_all();
    proxy.blackhole(false);
    let result = within("the in-flight request", running)
        .await?
        .ctx("task")?;
    let failed_after = cut.elapsed();
    let e = match result {
        Ok(id) => return Err(format!("enqueued as {id} despite the cut")),
        Err(e) => e,
    };
    ev.put("error", error_json(&e));
    ev.put("failed_ms_after_cut", failed_after.as_millis() as u64);
    ensure!(e.kind() == ErrorKind::Connection, "not a disconnect: {e}");
    ensure!(e.maybe_applied(), "written before the cut: outcome unknown");
    ensure!(e.is_retryable(), "a disconnect is retryable");
    ensure!(
        failed_after < Duration::from_secs(30),
        "failed only at the request timeout"
    );
    let seen = collect_until(&mut events, "the reconnect", fitz_tests::reconnected).await?;
    ev.put("events", &seen);
    ensure!(
        seen.iter().any(|e| e.starts_with("Disconnected"))
            && seen.iter().any(|e| e.starts_with("ReconnectScheduled"))
            && seen.iter().any(|e| e == "Connected(reconnected=true)"),
        "no reconnect flow: {seen:?}"
    );
    client
        .queue()
        .enqueue(&route, "y")
        .await
        .ctx("a request after the reconnect")?;
    client.close().await;
    Ok(())
}

/// CS-010: the same client observes a real transport loss (the proxy cuts
/// it), reconnects with its backoff, re-creates subscriptions and worker
/// registrations, invalidates session-bound handles, and serves new
/// requests.
async fn cs010(cx: Arc<Cx>, ev: Ev) -> Outcome {
    let r = cx.realm("010");
    let (proxy, url) = cx.proxy().await;
    let tokens = Arc::new(AtomicUsize::new(0));
    let (t, token) = (tokens.clone(), cx.token());
    let base = Duration::from_millis(50);
    let client = fitz::Client::builder(url.as_str(), move || {
        t.fetch_add(1, Ordering::SeqCst);
        let token = token.clone();
        async move { Ok::<_, std::io::Error>(token) }
    })
    .reconnect(fitz::ReconnectPolicy {
        base_delay: base,
        max_delay: Duration::from_millis(400),
        ..fitz::ReconnectPolicy::default()
    })
    .build()
    .ctx("build")?;
    client.connect().await.ctx("connect")?;
    let other = cx.client().await?;
    let ttl = Duration::from_secs(30);

    // Seven restorable registrations.
    let mut notice = client
        .notice()
        .subscribe(&format!("notice://{r}/n/*"))
        .await
        .ctx("notice subscribe")?;
    let mut kv_watch = client
        .kv()
        .subscribe(&format!("kv://{r}/w/*"))
        .await
        .ctx("kv watch")?;
    let mut queue_watch = client
        .queue()
        .subscribe(&format!("queue://{r}/*/jobs"))
        .await
        .ctx("queue subscribe")?;
    let mut lease_watch = client
        .lease()
        .subscribe(&format!("lease://{r}/l/*"))
        .await
        .ctx("lease subscribe")?;
    let mut stream_watch = client
        .stream()
        .subscribe(&format!("stream://{r}/s/*"))
        .await
        .ctx("stream subscribe")?;
    let schedule_watch = client
        .schedule()
        .subscribe(&format!("schedule://{r}/**"))
        .await
        .ctx("schedule subscribe")?;
    let worker = echo_worker(&client, &format!("rpc://{r}/svc/*")).await?;

    // Session-bound handles.
    let mut tx = client
        .kv()
        .begin(&format!("kv://{r}/tx/r"), TxMode::ReadWrite)
        .await
        .ctx("kv begin")?;
    tx.put("k", "v").await.ctx("kv put")?;
    let mut append = client
        .stream()
        .begin(&format!("stream://{r}/s/append"))
        .await
        .ctx("stream begin")?;
    append.append("x").await.ctx("append")?;
    let job_route = format!("queue://{r}/held/jobs");
    other
        .queue()
        .enqueue(&job_route, "job")
        .await
        .ctx("enqueue")?;
    let reservation = client
        .queue()
        .reserve(&job_route, ReserveOptions::default())
        .await
        .ctx("reserve")?
        .pop()
        .ctx("a reservation")?;
    let mut lease = client
        .lease()
        .acquire(&format!("lease://{r}/held/r"), "me", ttl)
        .await
        .ctx("acquire")?;
    let (held_worker, mut held) = holding_worker(&other, &format!("rpc://{r}/held/*"), 1).await?;
    let mut pending_call = client
        .rpc()
        .call(&format!("rpc://{r}/held/op"), "")
        .await
        .ctx("call")?;
    let (held_req, _answer) = within("the held call's delivery", held.recv())
        .await?
        .ctx("worker channel")?;
    // The queue watch reports the held queue once it has ready work; drain
    // that report so later items are the post-reconnect ones.
    let first = within("the queue hint", queue_watch.next())
        .await?
        .ctx("queue watch ended")?
        .ctx("queue watch")?;
    ensure!(first.route() == job_route, "unexpected hint {first:?}");

    let snapshot_before = client.debug_snapshot().await.ctx("snapshot")?;
    ev.put("registrations_before", snapshot_before.registrations);
    let mut events = client.events();
    proxy.cut_all();
    let sequence = collect_until(&mut events, "the new session", fitz_tests::reconnected).await?;
    let restored: usize = sequence
        .iter()
        .find_map(|e| e.strip_prefix("Restored(")?.strip_suffix(')')?.parse().ok())
        .ctx("no Restored event before the new session")?;
    ev.put("events", &sequence);
    ev.put("restored", restored);
    ev.put("token_requests", tokens.load(Ordering::SeqCst));
    ensure!(restored == 7, "restored {restored} registrations, want 7");
    ensure!(
        tokens.load(Ordering::SeqCst) == 2,
        "a fresh token per session: {} requests",
        tokens.load(Ordering::SeqCst)
    );
    // Backoff: the first attempt was scheduled within the policy's ceiling.
    let scheduled = sequence
        .iter()
        .find(|e| e.starts_with("ReconnectScheduled(attempt=1"))
        .ctx("no ReconnectScheduled for attempt 1")?
        .clone();
    let delay_ms: u64 = scheduled
        .rsplit("delay_ms=")
        .next()
        .and_then(|s| s.trim_end_matches(')').parse().ok())
        .ctx("delay")?;
    ensure!(
        delay_ms <= base.as_millis() as u64,
        "attempt 1 waited {delay_ms} ms, over the {base:?} ceiling"
    );
    ensure!(
        sequence
            .first()
            .is_some_and(|e| e.starts_with("Disconnected")),
        "the loss was not observed first: {sequence:?}"
    );

    // Stale handles.
    let mut stale = Vec::new();
    let e = tx.get("k").await.err().ctx("kv tx still usable")?;
    stale.push(("kv transaction", e));
    let e = append
        .append("y")
        .await
        .err()
        .ctx("append session still usable")?;
    stale.push(("stream append session", e));
    let e = reservation
        .complete()
        .await
        .err()
        .ctx("reservation still usable")?;
    stale.push(("queue reservation", e.error().clone()));
    let e = lease.renew(ttl).await.err().ctx("lease still usable")?;
    stale.push(("lease", e));
    for (what, e) in &stale {
        ev.push(
            "stale_handles",
            json!({"handle": what, "error": error_json(e)}),
        );
        ensure!(e.kind() == ErrorKind::Stale, "{what}: {e}");
    }
    let e = match within("the pending call's end", pending_call.next()).await? {
        Some(Err(e)) => e,
        other => return Err(format!("the pending call ended with {other:?}")),
    };
    ev.push(
        "stale_handles",
        json!({"handle": "pending rpc call", "error": error_json(&e)}),
    );
    ensure!(
        e.kind() == ErrorKind::Connection && e.maybe_applied(),
        "pending call: {e:?}"
    );
    within("the held request's cancellation", held_req.cancelled()).await?;
    drop(held_req);

    // The same handles receive again.
    let mut received = Vec::new();
    let route = format!("notice://{r}/n/after");
    other.notice().publish(&route, "x").await.ctx("publish")?;
    let m = within("notice", notice.next())
        .await?
        .ctx("ended")?
        .ctx("notice")?;
    ensure!(m.route() == route, "notice got {m:?}");
    received.push("notice");
    let route = format!("kv://{r}/w/after");
    let mut wtx = other
        .kv()
        .begin(&route, TxMode::ReadWrite)
        .await
        .ctx("begin")?;
    wtx.put("k", "v").await.ctx("put")?;
    wtx.commit(Durability::Sync).await.ctx("commit")?;
    let c = within("kv change", kv_watch.next())
        .await?
        .ctx("ended")?
        .ctx("kv watch")?;
    ensure!(c.route() == route, "kv watch got {c:?}");
    received.push("kv watch");
    let route = format!("queue://{r}/after/jobs");
    other.queue().enqueue(&route, "x").await.ctx("enqueue")?;
    let mut hints = HashSet::new();
    while !hints.contains(&route) {
        let h = within("queue hint", queue_watch.next())
            .await?
            .ctx("ended")?
            .ctx("queue")?;
        hints.insert(h.route().to_owned());
    }
    received.push("queue availability");
    let route = format!("lease://{r}/l/after");
    let l = other
        .lease()
        .acquire(&route, "o", ttl)
        .await
        .ctx("acquire")?;
    let c = within("lease change", lease_watch.next())
        .await?
        .ctx("ended")?
        .ctx("lease")?;
    ensure!(c.route() == route, "lease watch got {c:?}");
    l.release().await.ctx("release")?;
    received.push("lease");
    let route = format!("stream://{r}/s/after");
    let mut s = other.stream().begin(&route).await.ctx("begin")?;
    s.append("x").await.ctx("append")?;
    s.commit(fitz::stream::Durability::Sync)
        .await
        .ctx("commit")?;
    loop {
        let c = within("stream event", stream_watch.next())
            .await?
            .ctx("ended")?
            .ctx("stream")?;
        if c.route() == route {
            break;
        }
    }
    received.push("stream");
    let answer = other
        .rpc()
        .request(&format!("rpc://{r}/svc/op"), "after")
        .await
        .ctx("a call to the restored worker")?;
    ensure!(&answer[..] == b"echo:after", "worker answered {answer:?}");
    received.push("rpc worker");
    ev.put("received_after_reconnect", &received);
    ev.put(
        "schedule",
        "restored (counted in Restored(7)); its fires need broker time, proven in tests/tests/reconnect.rs",
    );

    // New requests succeed.
    kv_round_trip(&client, &format!("kv://{r}/after/r")).await?;
    ev.put("new_requests", "kv round trip ok");
    drop(schedule_watch);
    stop(worker).await?;
    stop(held_worker).await?;
    client.close().await;
    other.close().await;
    Ok(())
}

// ----- CS-011 … CS-013: streams -----

/// CS-011: stream records arrive in offset order, without duplicates or
/// gaps, both to a following reader and as commit notifications.
async fn cs011(cx: Arc<Cx>, ev: Ev) -> Outcome {
    let reader_client = cx.client().await?;
    let writer = cx.client().await?;
    let route = format!("stream://{}/orders/o", cx.realm("011"));
    let mut events = reader_client
        .stream()
        .subscribe(&route)
        .await
        .ctx("subscribe")?;
    let mut reader = reader_client
        .stream()
        .follow(&route, 0, ReadOptions::new().limit(3))
        .await
        .ctx("follow")?;
    let batches = [1usize, 4, 2, 3, 1];
    let total: usize = batches.iter().sum();
    let mut n = 0;
    for size in batches {
        let mut s = writer.stream().begin(&route).await.ctx("begin")?;
        for _ in 0..size {
            s.append(format!("r{n}")).await.ctx("append")?;
            n += 1;
        }
        s.commit(fitz::stream::Durability::Sync)
            .await
            .ctx("commit")?;
    }
    let mut offsets = Vec::new();
    let mut bodies = Vec::new();
    while offsets.len() < total {
        let item = within("the next record", reader.next())
            .await?
            .ctx("reader ended")?
            .ctx("reader")?;
        let rec = item.as_record().ctx("a marker on an unfiltered read")?;
        offsets.push(rec.offset());
        bodies.push(String::from_utf8_lossy(rec.body()).into_owned());
    }
    // Notifications are debounced: one may cover several commits.
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    while ranges.last().is_none_or(|(_, end)| *end + 1 < total as u64) {
        match within("the next commit event", events.next())
            .await?
            .ctx("subscription ended")?
            .ctx("subscription")?
        {
            CommitEvent::Committed(c) => {
                let o = c.resource_offsets();
                ranges.push((*o.start(), *o.end()));
            }
            other => ev.push("other_events", format!("{other:?}")),
        }
    }
    ev.put("reader_offsets", &offsets);
    ev.put("commit_ranges", &ranges);
    let want: Vec<u64> = (0..total as u64).collect();
    ensure!(offsets == want, "reader offsets {offsets:?}");
    let want_bodies: Vec<String> = (0..total).map(|i| format!("r{i}")).collect();
    ensure!(bodies == want_bodies, "bodies out of order: {bodies:?}");
    let mut next = 0;
    for (start, end) in &ranges {
        ensure!(
            *start == next && end >= start,
            "notification {start}..={end} does not continue at {next}: {ranges:?}"
        );
        next = end + 1;
    }
    ensure!(
        next == total as u64,
        "notifications cover 0..{next}, want 0..{total}"
    );
    ev.put("duplicates", 0);
    ev.put("gaps", 0);
    drop(reader);
    events.unsubscribe().await.ctx("unsubscribe")?;
    reader_client.close().await;
    writer.close().await;
    Ok(())
}

/// CS-012: the end of a replay is observable and subscriptions close
/// cleanly.
async fn cs012(cx: Arc<Cx>, ev: Ev) -> Outcome {
    let client = cx.client().await?;
    let route = format!("stream://{}/orders/o", cx.realm("012"));
    let baseline = client.debug_snapshot().await.ctx("snapshot")?;
    let mut s = client.stream().begin(&route).await.ctx("begin")?;
    for body in ["a", "b", "c"] {
        s.append(body).await.ctx("append")?;
    }
    let info = s
        .commit(fitz::stream::Durability::Sync)
        .await
        .ctx("commit")?;
    ev.put("committed_offsets", format!("{:?}", info.offsets()));

    let mut reader = client
        .stream()
        .read(&route, 0, ReadOptions::new().limit(2))
        .ctx("read")?;
    let mut got = Vec::new();
    while let Some(item) = within("the replay", reader.next()).await? {
        got.push(item.ctx("replay item")?.as_record().ctx("record")?.offset());
    }
    ev.put("replay_offsets", &got);
    ev.put("replay_end", "the reader yielded None once caught up");
    ensure!(got == [0, 1, 2], "replay {got:?}");
    ensure!(reader.next().await.is_none(), "items after the end");
    let pages: Vec<_> = client
        .stream()
        .read_pages(&route, 0, ReadOptions::new().limit(2))
        .ctx("read_pages")?
        .try_collect()
        .await
        .ctx("pages")?;
    let flags: Vec<bool> = pages.iter().map(|p| p.caught_up()).collect();
    ev.put("pages_caught_up", &flags);
    ensure!(
        flags.last() == Some(&true) && flags[..flags.len() - 1].iter().all(|c| !c),
        "caught-up flags {flags:?}"
    );
    let meta = client.stream().metadata(&route).await.ctx("metadata")?;
    let last = client
        .stream()
        .last(&route)
        .await
        .ctx("last")?
        .ctx("a last record")?;
    ev.put(
        "metadata",
        json!({"record_count": meta.record_count, "last_offset": meta.last_offset}),
    );
    ensure!(
        meta.record_count >= 2 && meta.last_offset == Some(2),
        "{meta:?}"
    );
    ensure!(
        last.offset() == 2 && &last.body()[..] == b"c",
        "last {last:?}"
    );

    // Subscriptions and followers end cleanly, leaving nothing behind.
    let sub = client.stream().subscribe(&route).await.ctx("subscribe")?;
    let follower = client
        .stream()
        .follow(&route, 3, ReadOptions::new())
        .await
        .ctx("follow")?;
    let during = client.debug_snapshot().await.ctx("snapshot")?;
    sub.unsubscribe().await.ctx("unsubscribe")?;
    drop(follower);
    within("the registrations to go", async {
        loop {
            match client.debug_snapshot().await {
                Ok(s) if s.registrations == baseline.registrations && s.sinks == baseline.sinks => {
                    return Ok(s);
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(2)).await,
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await??;
    ev.put(
        "registrations",
        json!({"before": baseline.registrations, "during": during.registrations, "after": baseline.registrations}),
    );
    ensure!(
        during.registrations > baseline.registrations,
        "nothing was registered"
    );
    client.close().await;
    Ok(())
}

/// CS-013: a server error in the middle of a streamed response reaches the
/// consumer after the chunks before it, and nothing leaks.
async fn cs013(cx: Arc<Cx>, ev: Ev) -> Outcome {
    let server = cx.client().await?;
    let caller = cx.client().await?;
    let r = cx.realm("013");
    let route = format!("rpc://{r}/svc/stream");
    let worker = server
        .rpc()
        .serve(&route, 2, |req: RpcRequest| async move {
            let out = req.stream();
            out.send("chunk-1").await?;
            out.send("chunk-2").await?;
            Err::<(), _>(HandlerError::new(
                codes::RPC_UNAVAILABLE,
                "failed mid-stream",
            ))
        })
        .await
        .ctx("serve")?;
    let baseline = caller.debug_snapshot().await.ctx("snapshot")?;
    let mut call = caller.rpc().call(&route, "").await.ctx("call")?;
    let mut items = Vec::new();
    let mut failure = None;
    while let Some(item) = within("the next chunk", call.next()).await? {
        match item {
            Ok(chunk) => items.push(String::from_utf8_lossy(&chunk).into_owned()),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    ensure!(call.next().await.is_none(), "items after the error");
    drop(call);
    let e = failure.ctx("no error after the chunks")?;
    ev.put("rpc_chunks_before_error", &items);
    ev.put("rpc_error", error_json(&e));
    ensure!(items == ["chunk-1", "chunk-2"], "chunks {items:?}");
    ensure!(
        e.kind() == ErrorKind::Broker && e.code() == Some(codes::RPC_UNAVAILABLE),
        "error {e}"
    );

    // A stream append session that meets a conflict mid-session.
    let sroute = format!("stream://{r}/orders/o");
    let writer = cx.client().await?;
    let mut s = writer.stream().begin(&sroute).await.ctx("begin")?;
    s.append("r0").await.ctx("append")?;
    s.append("r1").await.ctx("append")?;
    s.commit(fitz::stream::Durability::Sync)
        .await
        .ctx("commit")?;
    let mut stale = caller
        .stream()
        .begin_at(&sroute, 0)
        .await
        .ctx("begin at 0")?;
    let e = stale
        .append("late")
        .await
        .err()
        .ctx("a stale append succeeded")?;
    ev.put("stream_error", error_json(&e));
    ensure!(
        e.code() == Some(codes::STREAM_CONCURRENCY_CONFLICT),
        "stale append: {e}"
    );
    stale.rollback().await.ctx("rollback")?;
    // The resource is free again.
    writer
        .stream()
        .begin(&sroute)
        .await
        .ctx("begin after the rollback")?
        .rollback()
        .await
        .ctx("rollback")?;

    // Nothing left behind, on either side.
    let after = within("the books to settle", async {
        loop {
            match caller.debug_snapshot().await {
                Ok(s) if s.pending == 0 && s.push_handlers == baseline.push_handlers => {
                    return Ok(s);
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(2)).await,
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await??;
    ev.put("caller_after", json!({"pending": after.pending, "push_handlers": after.push_handlers, "free_permits": after.free_permits}));
    ensure!(
        worker.in_flight() == 0,
        "the worker still runs {}",
        worker.in_flight()
    );
    ev.put("worker_in_flight_after", worker.in_flight());
    if let Some(broker) = cx.broker() {
        let sessions = broker.engines().stream.stats().append_sessions;
        ev.put("broker_append_sessions_after", sessions);
    }
    stop(worker).await?;
    server.close().await;
    caller.close().await;
    writer.close().await;
    Ok(())
}

// ----- CS-014 … CS-015: concurrency and shutdown -----

/// CS-014: cross-domain requests proceed while another is in flight, a
/// later request of the same type overtakes a parked one, and concurrent
/// responses correlate to their requests.
async fn cs014(cx: Arc<Cx>, ev: Ev) -> Outcome {
    let client = cx.client().await?;
    let producer = cx.client().await?;
    let r = cx.realm("014");
    let parked_route = format!("queue://{r}/parked/jobs");
    let q = client.queue();
    let pr = parked_route.clone();
    let parked = tokio::spawn(async move {
        q.reserve(
            &pr,
            ReserveOptions {
                wait: Duration::from_secs(20),
                ..ReserveOptions::default()
            },
        )
        .await
    });
    within("the long poll is in flight", async {
        while client
            .debug_snapshot()
            .await
            .map(|s| s.pending)
            .unwrap_or(0)
            == 0
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await?;
    if let Some(broker) = cx.broker() {
        within("the broker parks it", async {
            while broker.engines().queue.stats().parked == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await?;
    }

    // Every other domain, at once, while the RESERVE waits.
    let echo = echo_worker(&producer, &format!("rpc://{r}/svc/*")).await?;
    let started = Instant::now();
    let kv_route = format!("kv://{r}/a/r");
    let (kv, lease, notice, stream, schedule, rpc, queue) = tokio::join!(
        kv_round_trip(&client, &kv_route),
        async {
            let l = client
                .lease()
                .acquire(&format!("lease://{r}/a/r"), "me", Duration::from_secs(30))
                .await
                .ctx("acquire")?;
            l.release().await.ctx("release")
        },
        async {
            client
                .notice()
                .publish(&format!("notice://{r}/a/b"), "x")
                .await
                .ctx("publish")
        },
        async {
            client
                .stream()
                .read_page(&format!("stream://{r}/a/x"), 0, &ReadOptions::new())
                .await
                .ctx("read")
                .map(drop)
        },
        async {
            client
                .schedule()
                .list_after(None, 1)
                .await
                .ctx("list")
                .map(drop)
        },
        async {
            client
                .rpc()
                .request(&format!("rpc://{r}/svc/op"), "x")
                .await
                .ctx("rpc")
                .map(drop)
        },
        async {
            client
                .queue()
                .enqueue(&format!("queue://{r}/other/jobs"), "x")
                .await
                .ctx("enqueue")
                .map(drop)
        },
    );
    let cross = [
        ("kv", kv),
        ("lease", lease),
        ("notice", notice),
        ("stream", stream),
        ("schedule", schedule),
        ("rpc", rpc),
        ("queue enqueue", queue),
    ];
    for (what, result) in &cross {
        ensure!(result.is_ok(), "{what}: {result:?}");
    }
    ensure!(!parked.is_finished(), "the parked RESERVE returned early");
    ev.put(
        "cross_domain",
        json!({"completed_while_parked": cross.iter().map(|(w, _)| *w).collect::<Vec<_>>(), "elapsed_ms": started.elapsed().as_millis() as u64}),
    );

    // Same type: a RESERVE with work ready overtakes the parked one.
    let ready_route = format!("queue://{r}/ready/jobs");
    let id = producer
        .queue()
        .enqueue(&ready_route, "ready")
        .await
        .ctx("enqueue")?;
    let got = client
        .queue()
        .reserve(&ready_route, ReserveOptions::default())
        .await
        .ctx("second reserve")?;
    ensure!(
        got.len() == 1 && got[0].id() == id,
        "the overtaking RESERVE got {got:?}"
    );
    ensure!(!parked.is_finished(), "the parked RESERVE returned early");
    for res in got {
        res.complete().await.ctx("complete")?;
    }
    ev.put(
        "same_type_overtake",
        "RESERVE(ready) answered while RESERVE(wait=20s) stayed parked",
    );

    // Correlation: 32 concurrent GETs, 16 concurrent QUERYs.
    let route = format!("kv://{r}/many/r");
    let mut tx = producer
        .kv()
        .begin(&route, TxMode::ReadWrite)
        .await
        .ctx("begin")?;
    for i in 0..32 {
        tx.put(format!("k{i}"), format!("v{i}")).await.ctx("put")?;
    }
    tx.commit(Durability::Sync).await.ctx("commit")?;
    let mut leases = Vec::new();
    for i in 0..16 {
        leases.push(
            producer
                .lease()
                .acquire(
                    &format!("lease://{r}/many/l{i}"),
                    &format!("owner-{i}"),
                    Duration::from_secs(30),
                )
                .await
                .ctx("acquire")?,
        );
    }
    // One transaction's GETs go one by one (&mut): many transactions at once.
    let mut gets = Vec::new();
    for i in 0..32 {
        let c = client.clone();
        let route = route.clone();
        gets.push(tokio::spawn(async move {
            let mut t = c.kv().begin(&route, TxMode::ReadOnly).await?;
            let v = t.get(format!("k{i}")).await?;
            t.rollback().await?;
            Ok::<_, fitz::Error>((i, v))
        }));
    }
    let mut queries = Vec::new();
    for i in 0..16 {
        let c = client.clone();
        let route = format!("lease://{r}/many/l{i}");
        queries.push(tokio::spawn(async move {
            let s = c.lease().query(&route).await?;
            Ok::<_, fitz::Error>((i, s.holder().map(|h| h.owner().to_owned())))
        }));
    }
    let mut mismatches = Vec::new();
    for g in gets {
        let (i, v) = within("a GET", g).await?.ctx("task")?.ctx("get")?;
        if v.as_deref() != Some(format!("v{i}").as_bytes()) {
            mismatches.push(format!("k{i} -> {v:?}"));
        }
    }
    for q in queries {
        let (i, owner) = within("a QUERY", q).await?.ctx("task")?.ctx("query")?;
        if owner.as_deref() != Some(format!("owner-{i}").as_str()) {
            mismatches.push(format!("l{i} -> {owner:?}"));
        }
    }
    ev.put(
        "correlated",
        json!({"kv_gets": 32, "lease_queries": 16, "mismatches": &mismatches}),
    );
    ensure!(mismatches.is_empty(), "mismatched replies: {mismatches:?}");

    // Within one domain the protocol's order holds: FIFO per queue.
    let fifo = format!("queue://{r}/fifo/jobs");
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            producer
                .queue()
                .enqueue(&fifo, format!("{i}"))
                .await
                .ctx("enqueue")?,
        );
    }
    let batch = client
        .queue()
        .reserve(
            &fifo,
            ReserveOptions {
                batch: 5,
                ..ReserveOptions::default()
            },
        )
        .await
        .ctx("reserve batch")?;
    let got: Vec<_> = batch.iter().map(|r| r.id()).collect();
    ensure!(got == ids, "FIFO broken: {got:?} vs {ids:?}");
    for res in batch {
        res.complete().await.ctx("complete")?;
    }
    ev.put("within_domain_order", "queue FIFO held for 5 messages");

    // Finally the parked RESERVE gets its message.
    let id = producer
        .queue()
        .enqueue(&parked_route, "late")
        .await
        .ctx("enqueue")?;
    let got = within("the parked RESERVE", parked)
        .await?
        .ctx("task")?
        .ctx("parked reserve")?;
    ensure!(
        got.len() == 1 && got[0].id() == id,
        "the parked RESERVE got {got:?}"
    );
    for res in got {
        res.complete().await.ctx("complete")?;
    }
    for l in leases {
        l.release().await.ctx("release")?;
    }
    stop(echo).await?;
    client.close().await;
    producer.close().await;
    Ok(())
}

/// CS-015: closing the client during active requests and streams ends them
/// predictably with `Closed`, and closing twice is safe.
async fn cs015(cx: Arc<Cx>, ev: Ev) -> Outcome {
    let client = cx.client().await?;
    let other = cx.client().await?;
    let r = cx.realm("015");
    let (worker, mut held) = holding_worker(&other, &format!("rpc://{r}/svc/*"), 1).await?;
    let q = client.queue();
    let route = format!("queue://{r}/a/jobs");
    let parked = tokio::spawn(async move {
        q.reserve(
            &route,
            ReserveOptions {
                wait: Duration::from_secs(20),
                ..ReserveOptions::default()
            },
        )
        .await
    });
    let mut call = client
        .rpc()
        .call(&format!("rpc://{r}/svc/op"), "")
        .await
        .ctx("call")?;
    let (req, _answer) = within("the delivery", held.recv()).await?.ctx("worker")?;
    let mut sub = client
        .notice()
        .subscribe(&format!("notice://{r}/**"))
        .await
        .ctx("subscribe")?;
    let mut follower = client
        .stream()
        .follow(&format!("stream://{r}/a/x"), 0, ReadOptions::new())
        .await
        .ctx("follow")?;
    let mut tx = client
        .kv()
        .begin(&format!("kv://{r}/a/r"), TxMode::ReadWrite)
        .await
        .ctx("begin")?;
    within("the long poll is in flight", async {
        while client
            .debug_snapshot()
            .await
            .map(|s| s.pending)
            .unwrap_or(0)
            == 0
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await?;
    let mut events = client.events();

    within("close()", client.close()).await?;
    ensure!(
        client.state() == State::Closed,
        "state {:?}",
        client.state()
    );
    event(&mut events, "the Closed event", |e| {
        matches!(e, Event::Closed)
    })
    .await?;

    let mut ends = Vec::new();
    let e = within("the parked RESERVE", parked)
        .await?
        .ctx("task")?
        .err()
        .ctx("reserve succeeded")?;
    ends.push(("queue reserve (parked)", e));
    match within("the call", call.next()).await? {
        Some(Err(e)) => ends.push(("rpc call", e)),
        other => return Err(format!("the call ended with {other:?}")),
    }
    match within("the subscription", sub.next()).await? {
        Some(Err(e)) => ends.push(("notice subscription", e)),
        other => return Err(format!("the subscription yielded {other:?}")),
    }
    ensure!(sub.next().await.is_none(), "the subscription goes on");
    match within("the follower", follower.next()).await? {
        Some(Err(e)) => ends.push(("stream follow", e)),
        other => return Err(format!("the follower yielded {other:?}")),
    }
    let e = tx.put("k", "v").await.err().ctx("kv put after close")?;
    ends.push(("kv transaction", e));
    let e = client
        .kv()
        .begin(&format!("kv://{r}/b/r"), TxMode::ReadOnly)
        .await
        .err()
        .ctx("a request after close")?;
    ends.push(("new request", e));
    for (what, e) in &ends {
        ev.push(
            "active_work_ended",
            json!({"work": what, "error": error_json(e)}),
        );
        ensure!(
            matches!(e.kind(), ErrorKind::Closed | ErrorKind::Stale),
            "{what}: {e}"
        );
    }
    // The broker let the worker know its caller is gone.
    within("the worker's signal", req.cancelled()).await?;
    ev.put("worker_cancel_reason", format!("{:?}", req.cancel_reason()));
    drop(req);

    within("a second close()", client.close()).await?;
    ensure!(client.state() == State::Closed, "state after double close");
    ev.put("double_close", "returned at once; still Closed");
    stop(worker).await?;
    other.close().await;
    Ok(())
}

// ----- CS-016 … CS-017: filtered replay -----

/// CS-016: records carry optional discriminators; a filtered read returns
/// the matching records and filtered markers in offset order, with a
/// cursor that moves monotonically past filtered offsets.
async fn cs016(cx: Arc<Cx>, ev: Ev) -> Outcome {
    let client = cx.client().await?;
    let route = format!("stream://{}/events/e", cx.realm("016"));
    let tags = [
        Some("a"),
        Some("b"),
        None,
        Some("a"),
        Some("c"),
        Some("b"),
        Some("a"),
    ];
    let mut s = client.stream().begin(&route).await.ctx("begin")?;
    for (i, tag) in tags.iter().enumerate() {
        let opts = match tag {
            Some(t) => AppendOptions::new().discriminator(*t),
            None => AppendOptions::new(),
        };
        s.append_with(format!("e{i}"), opts).await.ctx("append")?;
    }
    s.commit(fitz::stream::Durability::Sync)
        .await
        .ctx("commit")?;

    for (name, filter, want) in [
        ("equals(a)", Filter::new().equals("a"), vec![0u64, 3, 6]),
        (
            "any_of(b,c)",
            Filter::new().any_of(["b", "c"]),
            vec![1, 4, 5],
        ),
    ] {
        let mut offsets_seen = Vec::new();
        let mut matched = Vec::new();
        let mut markers = Vec::new();
        let mut cursor = Vec::new();
        let mut from = 0;
        loop {
            let page = client
                .stream()
                .read_page(
                    &route,
                    from,
                    &ReadOptions::new().limit(2).filter(filter.clone()),
                )
                .await
                .ctx("filtered read")?;
            for item in page.items() {
                match item {
                    StreamItem::Record(r) => {
                        matched.push(r.offset());
                        offsets_seen.push(r.offset());
                    }
                    StreamItem::Filtered(f) => {
                        markers.push((f.first_offset(), f.last_offset()));
                        offsets_seen.extend(f.offsets());
                    }
                }
            }
            ensure!(page.next_offset() >= from, "the cursor moved back");
            cursor.push(page.next_offset());
            from = page.next_offset();
            if page.caught_up() {
                break;
            }
        }
        ev.push(
            "reads",
            json!({"filter": name, "records": &matched, "markers": &markers, "cursor": &cursor}),
        );
        ensure!(
            matched == want,
            "{name}: records {matched:?}, want {want:?}"
        );
        let all: Vec<u64> = (0..tags.len() as u64).collect();
        ensure!(
            offsets_seen == all,
            "{name}: records and markers do not cover the offsets in order: {offsets_seen:?}"
        );
        ensure!(!markers.is_empty(), "{name}: no filtered markers");
        ensure!(
            cursor.windows(2).all(|w| w[0] < w[1]) || cursor.len() == 1,
            "{name}: cursor not strictly advancing: {cursor:?}"
        );
        ensure!(
            cursor.last() == Some(&(tags.len() as u64)),
            "{name}: cursor ends at {cursor:?}"
        );
    }
    // Discriminators round-trip on unfiltered reads too.
    let page = client
        .stream()
        .read_page(&route, 0, &ReadOptions::new())
        .await
        .ctx("read")?;
    ensure!(
        page.records().count() == tags.len(),
        "unfiltered read lost records"
    );
    client.close().await;
    Ok(())
}

/// CS-017: `stream://**` filtered replay over three realms and many pages:
/// filtered-only pages show up, records keep their concrete routes and
/// global offsets, the cursor moves on the global axis, and the replay
/// completes after the caught-up page.
async fn cs017(cx: Arc<Cx>, ev: Ev) -> Outcome {
    let client = cx.client().await?;
    // Where the family's log ends now: the replay starts there.
    let before: Vec<_> = client
        .stream()
        .read_pages("stream://**", 0, ReadOptions::new())
        .ctx("read_pages")?
        .try_collect()
        .await
        .ctx("pages")?;
    let base = before.last().map_or(0, |p| p.next_offset());
    let realms = [cx.realm("017a"), cx.realm("017b"), cx.realm("017c")];
    let mut keep = Vec::new();
    let mut n = 0u64;
    // Round one withholds everything: runs of different routes back to back
    // fill pages with markers only. Round two keeps two of three.
    for tags in [&["drop", "drop"][..], &["keep", "drop", "keep"][..]] {
        for (i, realm) in realms.iter().enumerate() {
            let route = format!("stream://{realm}/events/e{i}");
            let mut s = client.stream().begin(&route).await.ctx("begin")?;
            for tag in tags {
                let body = format!("{realm}-{n}");
                s.append_with(body.clone(), AppendOptions::new().discriminator(*tag))
                    .await
                    .ctx("append")?;
                if *tag == "keep" {
                    keep.push((route.clone(), body));
                }
                n += 1;
            }
            s.commit(fitz::stream::Durability::Sync)
                .await
                .ctx("commit")?;
        }
    }
    let mut pages = client
        .stream()
        .read_pages(
            "stream://**",
            base,
            ReadOptions::new()
                .limit(2)
                .filter(Filter::new().equals("keep")),
        )
        .ctx("read_pages")?;
    let mut got = Vec::new();
    let mut globals = Vec::new();
    let mut cursor = vec![base];
    let mut filtered_only = 0;
    let mut scopes = BTreeSet::new();
    let mut caught_up_seen = false;
    while let Some(page) = within("the next page", pages.next()).await? {
        let page = page.ctx("page")?;
        ensure!(!caught_up_seen, "a page after the caught-up one");
        scopes.insert(format!("{:?}", page.scope()));
        if page.records().next().is_none() && !page.is_empty() {
            filtered_only += 1;
        }
        for rec in page.records() {
            ensure!(
                !rec.route().contains('*'),
                "a record without a concrete route"
            );
            got.push((
                rec.route().to_owned(),
                String::from_utf8_lossy(rec.body()).into_owned(),
            ));
            globals.push(
                rec.global_offset()
                    .ctx("a global offset on a global read")?,
            );
        }
        ensure!(
            page.next_offset() > *cursor.last().unwrap_or(&0) || page.caught_up(),
            "the global cursor did not move: {cursor:?} -> {}",
            page.next_offset()
        );
        cursor.push(page.next_offset());
        caught_up_seen = page.caught_up();
    }
    let ours: Vec<_> = got
        .iter()
        .filter(|(route, _)| {
            realms
                .iter()
                .any(|r| route.starts_with(&format!("stream://{r}/")))
        })
        .cloned()
        .collect();
    let realms_seen: BTreeSet<&str> = ours
        .iter()
        .filter_map(|(route, _)| route.split('/').nth(2))
        .collect();
    ev.put("base_global_offset", base);
    ev.put("pages", cursor.len() - 1);
    ev.put("filtered_only_pages", filtered_only);
    ev.put(
        "records",
        ours.iter()
            .map(|(r, b)| format!("{r} {b}"))
            .collect::<Vec<_>>(),
    );
    ev.put("global_offsets", &globals);
    ev.put("cursor", &cursor);
    ev.put("realms", realms_seen.len());
    ev.put("scope", scopes.into_iter().collect::<Vec<_>>());
    ensure!(caught_up_seen, "the replay ended without a caught-up page");
    ensure!(ours == keep, "records {ours:?}, want {keep:?}");
    ensure!(realms_seen.len() >= 2, "only {} realms", realms_seen.len());
    ensure!(cursor.len() > 3, "not multi-page: {cursor:?}");
    ensure!(filtered_only >= 1, "no filtered-only page");
    ensure!(
        globals.windows(2).all(|w| w[0] < w[1]),
        "global offsets {globals:?}"
    );
    ensure!(
        globals.iter().all(|g| *g >= base && *g < base + n),
        "global offsets outside {base}..{}",
        base + n
    );
    ensure!(
        cursor.last() == Some(&(base + n)),
        "cursor ends at {cursor:?}, want {}",
        base + n
    );
    let scope = client
        .stream()
        .read("stream://**", base, ReadOptions::new())
        .ctx("read")?
        .scope();
    ensure!(scope == SelectorScope::Global, "scope {scope:?}");
    client.close().await;
    Ok(())
}

// ----- CS-018: bounded concurrency -----

/// CS-018: with `max_in_flight(16)`, a burst of 64 long polls never has
/// more than 16 requests in flight; the rest queue (and a plain request
/// with a short timeout is backpressured); everything drains once messages
/// arrive; closing the client returns the runtime to its baseline.
async fn cs018(cx: Arc<Cx>, ev: Ev) -> Outcome {
    const LIMIT: usize = 16;
    const BURST: usize = 64;
    let producer = cx.client().await?;
    let route = format!("queue://{}/burst/jobs", cx.realm("018"));
    let runtime = tokio::runtime::Handle::current().metrics();
    let baseline_tasks = runtime.num_alive_tasks();
    let client = cx
        .builder(cx.url())
        .max_in_flight(LIMIT)
        .request_timeout(Duration::from_millis(500))
        .build()
        .ctx("build")?;
    client.connect().await.ctx("connect")?;

    // Samples the client's books (and the broker's parked count) until told
    // to stop.
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let sampler = {
        let client = client.clone();
        let cx = cx.clone();
        tokio::spawn(async move {
            let (mut max_inflight, mut max_pending, mut max_parked, mut samples) = (0, 0, 0, 0u64);
            loop {
                if let Ok(s) = client.debug_snapshot().await {
                    max_inflight = max_inflight.max(LIMIT - s.free_permits);
                    max_pending = max_pending.max(s.pending);
                    samples += 1;
                }
                if let Some(broker) = cx.broker() {
                    max_parked = max_parked.max(broker.engines().queue.stats().parked);
                }
                if stop_rx.try_recv().is_ok() {
                    return (max_inflight, max_pending, max_parked, samples);
                }
                tokio::task::yield_now().await;
            }
        })
    };

    let mut burst = Vec::new();
    for _ in 0..BURST {
        let q = client.queue();
        let route = route.clone();
        burst.push(tokio::spawn(async move {
            q.reserve(
                &route,
                ReserveOptions {
                    wait: Duration::from_secs(20),
                    ..ReserveOptions::default()
                },
            )
            .await
        }));
    }
    // The ceiling holds: 16 out, the rest wait for a slot.
    let at_ceiling = within("16 requests in flight", async {
        loop {
            match client.debug_snapshot().await {
                Ok(s) if s.pending >= LIMIT && s.free_permits == 0 => return Ok(s),
                Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await??;
    let unfinished = burst.iter().filter(|t| !t.is_finished()).count();
    ev.put(
        "at_ceiling",
        json!({"pending": at_ceiling.pending, "free_permits": at_ceiling.free_permits, "unfinished_tasks": unfinished, "queued_locally": unfinished.saturating_sub(at_ceiling.pending)}),
    );
    ensure!(
        at_ceiling.pending == LIMIT,
        "{} requests out at once, limit {LIMIT}",
        at_ceiling.pending
    );
    ensure!(
        unfinished == BURST,
        "{} of the burst already finished",
        BURST - unfinished
    );

    // One more, plain, with a 500 ms timeout: no slot frees, so it is
    // backpressured instead of sent.
    let e = client
        .kv()
        .begin(&format!("kv://{}/x/r", cx.realm("018")), TxMode::ReadOnly)
        .await
        .err()
        .ctx("a request beyond the ceiling went through")?;
    ev.put("backpressure_or_queueing_event", json!({
        "queued": format!("{} requests waited for a slot while {LIMIT} were in flight", unfinished - LIMIT),
        "backpressured": error_json(&e),
    }));
    ensure!(
        e.kind() == ErrorKind::Backpressure,
        "beyond the ceiling: {e}"
    );
    ensure!(e.is_retryable() && !e.maybe_applied(), "{e:?}");

    // Capacity frees as messages arrive: everything drains.
    let mut sent = HashSet::new();
    for i in 0..BURST {
        sent.insert(
            producer
                .queue()
                .enqueue(&route, format!("{i}"))
                .await
                .ctx("enqueue")?,
        );
    }
    let mut got = HashSet::new();
    let mut reservations = Vec::new();
    for task in burst {
        let batch = within("a burst request", task)
            .await?
            .ctx("task")?
            .ctx("reserve")?;
        ensure!(batch.len() == 1, "a long poll got {} messages", batch.len());
        for res in batch {
            got.insert(res.id());
            reservations.push(res);
        }
    }
    let _ = stop_tx.send(());
    let (max_inflight, max_pending, max_parked, samples) =
        within("the sampler", sampler).await?.ctx("sampler")?;
    ev.put("observed_max_inflight", max_inflight);
    ev.put("observed_max_pending", max_pending);
    ev.put("snapshot_samples", samples);
    if cx.broker().is_some() {
        ev.put("broker_max_parked", max_parked);
    }
    ensure!(
        max_inflight == LIMIT,
        "observed {max_inflight} in flight, limit {LIMIT}"
    );
    ensure!(
        max_pending <= LIMIT,
        "observed {max_pending} pending, limit {LIMIT}"
    );
    ensure!(max_parked <= LIMIT, "the broker parked {max_parked}");
    ensure!(
        got == sent,
        "drained {} of {} messages",
        got.len(),
        sent.len()
    );
    ev.put("drained", json!({"requests": BURST, "messages": got.len()}));
    for res in reservations {
        res.complete().await.ctx("complete")?;
    }

    // Close returns the client's background work to the baseline.
    let during = runtime.num_alive_tasks();
    client.close().await;
    drop(client);
    let after = within("the tasks to end", async {
        loop {
            let n = runtime.num_alive_tasks();
            if n <= baseline_tasks {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    let after = after.unwrap_or_else(|_| runtime.num_alive_tasks());
    let post_close = after.saturating_sub(baseline_tasks);
    ev.put(
        "runtime_tasks",
        json!({"baseline": baseline_tasks, "while_open": during, "after_close": after}),
    );
    ev.put("post_close_active_work_count", post_close);
    ensure!(post_close == 0, "{post_close} tasks outlived close()");
    producer.close().await;
    Ok(())
}
