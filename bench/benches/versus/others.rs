//! The other sides of a row: the competitor's own client (`async-nats`
//! against `nats-server`, `redis` against `redis-server`), the official
//! client (`cntryl-fitz`) against our broker, and the raw echo.

use std::time::{Duration, Instant};

use bytes::Bytes;
use fitz_bench::{Transport, official as off, official_echo_worker};
use futures_util::StreamExt;
use futures_util::future::join_all;

use crate::measure::{
    Op, err, p50, rate, raw_tcp_p50, raw_tcp_pipelined, raw_ws_p50, raw_ws_pipelined, stream,
};
use crate::rows::{
    BODY, Kind, OFFICIAL_STREAM_WINDOW, PUBLISHING, Row, STREAM_WINDOW, SUB_BUFFER, Urls, WINDOW,
    unique,
};
use crate::rows::{lanes, warmed};

async fn nats_connect(url: &str) -> Result<async_nats::Client, String> {
    async_nats::ConnectOptions::new()
        .subscription_capacity(SUB_BUFFER)
        .event_callback(|e| async move {
            // Lifecycle events are expected; anything else (a slow
            // consumer, an error) is worth seeing next to a failed window.
            if !matches!(
                e,
                async_nats::Event::Connected
                    | async_nats::Event::Draining
                    | async_nats::Event::Closed
            ) {
                eprintln!("    nats event: {e}");
            }
        })
        .request_timeout(Some(Duration::from_secs(30)))
        .connect(url)
        .await
        .map_err(err)
}

/// Waits until the server routes `subject` to `sub`: a flush only writes
/// the SUB, and messages the server sees before it has processed the SUB
/// are dropped (no interest), which would leave a window waiting for them.
async fn nats_interest(
    publisher: &async_nats::Client,
    subject: &str,
    sub: &mut async_nats::Subscriber,
) -> Result<(), String> {
    for _ in 0..100 {
        publisher
            .publish(subject.to_string(), Bytes::from_static(b"probe"))
            .await
            .map_err(err)?;
        publisher.flush().await.map_err(err)?;
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(50), sub.next()).await {
            // Probes still on their way are drained before the window.
            while let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(20), sub.next()).await
            {}
            return Ok(());
        }
    }
    Err("nats-server never routed the subject to the subscriber".to_string())
}

/// The competitor: NATS core for pub/sub and request/reply, Redis for KV.
/// `Err` when its server is not running.
pub async fn competitor(urls: &Urls, row: &Row, dur: Duration) -> Result<Option<f64>, String> {
    let u = unique();
    match row.kind {
        Kind::PubSub(size) => {
            let (tcp, ws) = urls.nats.as_ref().ok_or("nats-server not running")?;
            let url = if row.transport == Transport::Tcp {
                tcp
            } else {
                ws
            };
            let (p, s) = (nats_connect(url).await?, nats_connect(url).await?);
            let subject = format!("bench.vs{u}.ev");
            let mut sub = s.subscribe(subject.clone()).await.map_err(err)?;
            s.flush().await.map_err(err)?;
            nats_interest(&p, &subject, &mut sub).await?;
            let payload = Bytes::from(vec![7u8; size]);
            let (subject, pc, payload) = (&subject, &p, &payload);
            let v = warmed!(dur, |d| {
                stream(
                    d,
                    STREAM_WINDOW,
                    PUBLISHING,
                    || async move {
                        pc.publish(subject.clone(), payload.clone())
                            .await
                            .map_err(err)
                    },
                    || async move { pc.flush().await.map_err(err) },
                    &mut sub,
                    |_m| Ok(()),
                )
                .await
            });
            drop(sub);
            let _ = p.drain().await;
            let _ = s.drain().await;
            Ok(v)
        }
        Kind::RpcP50 | Kind::Rpc256 => {
            let (tcp, ws) = urls.nats.as_ref().ok_or("nats-server not running")?;
            let url = if row.transport == Transport::Tcp {
                tcp
            } else {
                ws
            };
            let (caller, server) = (nats_connect(url).await?, nats_connect(url).await?);
            let subject = format!("bench.vs{u}.echo");
            let mut sub = server.subscribe(subject.clone()).await.map_err(err)?;
            server.flush().await.map_err(err)?;
            let responder = server.clone();
            let serving = tokio::spawn(async move {
                while let Some(m) = sub.next().await {
                    if let Some(reply) = m.reply {
                        let _ = responder.publish(reply, m.payload).await;
                    }
                }
            });
            // Until the server routes to the responder (over WebSocket the
            // first requests can still meet "no responders").
            let mut ready = false;
            for _ in 0..100 {
                if caller
                    .request(subject.clone(), Bytes::from_static(BODY))
                    .await
                    .is_ok()
                {
                    ready = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !ready {
                return Err("the NATS responder never answered".to_string());
            }
            let (caller_ref, subject) = (&caller, &subject);
            let call = || async move {
                caller_ref
                    .request(subject.clone(), Bytes::from_static(BODY))
                    .await
                    .map(|_| ())
                    .map_err(err)
            };
            let v = if row.kind == Kind::RpcP50 {
                warmed!(dur, |d| p50(d, call).await)
            } else {
                warmed!(dur, |d| rate(d, WINDOW, |_| call()).await)
            };
            serving.abort();
            let _ = caller.drain().await;
            let _ = server.drain().await;
            Ok(v)
        }
        Kind::KvGetP50 | Kind::KvGet256 | Kind::KvPut256 => {
            let url = urls.redis.as_ref().ok_or("redis-server not running")?;
            let client = redis::Client::open(url.as_str()).map_err(err)?;
            let config =
                redis::AsyncConnectionConfig::new().set_response_timeout(Duration::from_secs(30));
            let con = client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(err)?;
            let key = format!("vs{u}");
            let mut c = con.clone();
            redis::cmd("SET")
                .arg(&key)
                .arg(BODY)
                .query_async::<()>(&mut c)
                .await
                .map_err(err)?;
            let (key, con) = (&key, &con);
            let get = || async move {
                let mut c = con.clone();
                redis::cmd("GET")
                    .arg(key)
                    .query_async::<Option<Vec<u8>>>(&mut c)
                    .await
                    .map(|_| ())
                    .map_err(err)
            };
            let set = |i: u64| async move {
                let mut c = con.clone();
                redis::cmd("SET")
                    .arg(format!("{key}.{}", i % WINDOW as u64))
                    .arg(BODY)
                    .query_async::<()>(&mut c)
                    .await
                    .map_err(err)
            };
            Ok(match row.kind {
                Kind::KvGetP50 => warmed!(dur, |d| p50(d, get).await),
                Kind::KvGet256 => warmed!(dur, |d| rate(d, WINDOW, |_| get()).await),
                _ => warmed!(dur, |d| rate(d, WINDOW, set).await),
            })
        }
    }
}

async fn official_connected(url: &str) -> Result<off::Client, String> {
    let c = off::Client::anonymous(url.to_string())
        .max_in_flight_requests(4096)
        .request_timeout(Duration::from_secs(30))
        .build()
        .map_err(err)?;
    c.connect().await.map_err(err)?;
    Ok(c)
}

/// The official client against our broker.
pub async fn official(urls: &Urls, row: &Row, dur: Duration) -> Result<Option<f64>, String> {
    if let Some(why) = row.official_skipped() {
        return Err(why.to_string());
    }
    let url = urls.fitz(row.transport);
    let u = unique();
    match row.kind {
        Kind::PubSub(size) => {
            let (p, s) = (
                official_connected(url).await?,
                official_connected(url).await?,
            );
            let route = format!("notice://bench/vso{u}/ev");
            let mut sub = s
                .notice()
                .map_err(err)?
                .subscribe(&route)
                .await
                .map_err(err)?;
            let notice = p.notice().map_err(err)?;
            let payload = vec![7u8; size];
            let (route, notice, payload) = (&route, &notice, &payload);
            let v = warmed!(dur, |d| {
                stream(
                    d,
                    OFFICIAL_STREAM_WINDOW,
                    16,
                    || async move {
                        notice
                            .publish(route, payload)
                            .await
                            .map(|_| ())
                            .map_err(err)
                    },
                    || async { Ok(()) },
                    &mut sub,
                    |n| n.map(|_| ()).map_err(err),
                )
                .await
            });
            drop(sub);
            let _ = p.close().await;
            let _ = s.close().await;
            Ok(v)
        }
        Kind::RpcP50 | Kind::Rpc256 => {
            let (caller, server) = (
                official_connected(url).await?,
                official_connected(url).await?,
            );
            let route = format!("rpc://bench/vso{u}/echo");
            let w = server
                .rpc()
                .map_err(err)?
                .register_worker(&route, 1024)
                .await
                .map_err(err)?;
            let serving = tokio::spawn(official_echo_worker(w));
            let rpc = caller.rpc().map_err(err)?;
            let (rpc, route) = (&rpc, &route);
            let call = || async move {
                let mut s = rpc.call(route, BODY).await.map_err(err)?;
                match s.next().await {
                    Some(r) => r.map(|_| ()).map_err(err),
                    None => Err("no response".to_string()),
                }
            };
            let v = warmed!(dur, |d| p50(d, call).await);
            serving.abort();
            let _ = caller.close().await;
            let _ = server.close().await;
            Ok(v)
        }
        Kind::KvGetP50 | Kind::KvGet256 => {
            let c = official_connected(url).await?;
            let kv = c.kv().map_err(err)?;
            let route = format!("kv://bench/vso{u}/res");
            let tx = kv
                .begin(&route, off::TransactionMode::ReadWrite)
                .await
                .map_err(err)?;
            tx.put(b"key", BODY).await.map_err(err)?;
            tx.commit(off::KvDurability::Buffered).await.map_err(err)?;
            let tx = kv
                .begin(&route, off::TransactionMode::ReadOnly)
                .await
                .map_err(err)?;
            let tx = &tx;
            let get = || async move { tx.get(b"key").await.map(|_| ()).map_err(err) };
            let v = if row.kind == Kind::KvGetP50 {
                warmed!(dur, |d| p50(d, get).await)
            } else {
                warmed!(dur, |d| rate(d, WINDOW, |_| get()).await)
            };
            let _ = c.close().await;
            Ok(v)
        }
        Kind::KvPut256 => {
            let c = official_connected(url).await?;
            let kv = c.kv().map_err(err)?;
            let mut routes: Vec<String> = (0..WINDOW)
                .map(|i| format!("kv://bench/vso{u}/r{i}"))
                .collect();
            let kv = &kv;
            let v = warmed!(dur, |d| lanes!(d, routes, |route, _i| async {
                let tx = kv
                    .begin(route, off::TransactionMode::ReadWrite)
                    .await
                    .map_err(err)?;
                tx.put(b"key", BODY).await.map_err(err)?;
                tx.commit(off::KvDurability::Buffered)
                    .await
                    .map(|_| ())
                    .map_err(err)
            }));
            let _ = c.close().await;
            Ok(v)
        }
    }
}

/// The raw echo: ping-pong p50 for the latency rows, pipelined echo with
/// 256 in flight (of the row's payload, 16 B for RPC and KV) for the rates.
pub async fn raw(urls: &Urls, row: &Row, dur: Duration) -> Result<Option<f64>, String> {
    let (tcp, ws) = urls.echo;
    let size = match row.kind {
        Kind::PubSub(size) => size,
        _ => BODY.len(),
    };
    let latency = matches!(row.kind, Kind::RpcP50 | Kind::KvGetP50);
    Ok(match (row.transport, latency) {
        (Transport::Tcp, true) => warmed!(dur, |d| raw_tcp_p50(tcp, size, d).await),
        (Transport::Ws, true) => warmed!(dur, |d| raw_ws_p50(ws, size, d).await),
        (Transport::Tcp, false) => {
            warmed!(dur, |d| raw_tcp_pipelined(tcp, size, WINDOW, d).await)
        }
        (Transport::Ws, false) => {
            warmed!(dur, |d| raw_ws_pipelined(ws, size, WINDOW, d).await)
        }
    })
}
