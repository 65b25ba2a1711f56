//! `Client::flush` and `Client::drain` against the embedded broker.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fitz::rpc::{HandlerError, RpcRequest};
use fitz::{ErrorKind, State};
use fitz_testkit::Direction;
use fitz_tests::{
    Brokers, BrokersExt, Transport, WAIT, addr_of, connected, proxy_to, realm, within,
};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{Notify, mpsc};

const PUBLISHES: usize = 200;

#[tokio::test]
async fn flush_returns_once_the_broker_processed_every_publish() {
    let brokers = Brokers::start().await.unwrap();
    let url = brokers.anon_url(Transport::Tcp);
    let app = realm("flush");
    let subscriber = connected(url).await;
    let mut sub = subscriber
        .notice()
        .subscribe(&format!("notice://{app}/a/*"))
        .await
        .unwrap();
    let (proxy, proxied) = proxy_to(addr_of(url), Transport::Tcp).await;
    let publisher = connected(&proxied).await;

    // The broker "stops reading" the publisher: every publish returns (it is
    // in the outbound buffer) but none is processed yet.
    proxy.stall(Direction::Up, true);
    let route = format!("notice://{app}/a/n");
    for i in 0..PUBLISHES {
        publisher
            .notice()
            .publish(&route, i.to_string())
            .await
            .unwrap();
    }
    let p = publisher.clone();
    let flushing = tokio::spawn(async move { p.flush().await });
    tokio::task::yield_now().await;
    assert!(
        !flushing.is_finished(),
        "a flush cannot end while the broker reads nothing"
    );
    proxy.stall(Direction::Up, false);
    within("the flush", flushing).await.unwrap().unwrap();

    // Every publish was fanned out before the barrier was answered, so the
    // subscriber's own round trip now comes back behind all of them.
    subscriber
        .lease()
        .query(&format!("lease://{app}/a/probe"))
        .await
        .unwrap();
    for i in 0..PUBLISHES {
        let m = sub
            .next()
            .now_or_never()
            .unwrap_or_else(|| panic!("publish {i} not delivered after the flush"))
            .unwrap()
            .unwrap();
        assert_eq!(m.payload(), i.to_string().as_bytes());
    }
}

#[tokio::test]
async fn a_flush_with_nothing_sent_since_the_last_sends_nothing() {
    let brokers = Brokers::start().await.unwrap();
    let url = brokers.anon_url(Transport::Tcp);
    let (proxy, proxied) = proxy_to(addr_of(url), Transport::Tcp).await;
    let client = connected(&proxied).await;
    client
        .notice()
        .publish(&format!("notice://{}/a/n", realm("flush")), "x")
        .await
        .unwrap();
    within("the first flush", client.flush()).await.unwrap();
    // A barrier now would wait on the stalled broker for the whole request
    // timeout; none is sent, so this returns at once.
    proxy.stall(Direction::Up, true);
    within("an empty flush", client.flush()).await.unwrap();
}

#[tokio::test]
async fn drain_lets_a_running_rpc_handler_answer_then_closes() {
    let brokers = Brokers::start().await.unwrap();
    let url = brokers.anon_url(Transport::Tcp);
    let route = format!("rpc://{}/a/slow", realm("drain"));
    let server = connected(url).await;
    let caller = connected(url).await;
    let (started_tx, mut started) = mpsc::channel(1);
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let _worker = server
        .rpc()
        .serve(&route, 4, move |_req: RpcRequest| {
            let started = started_tx.clone();
            let gate = g.clone();
            async move {
                let _ = started.send(()).await;
                gate.notified().await;
                Ok::<_, HandlerError>(Bytes::from_static(b"done"))
            }
        })
        .await
        .unwrap();
    let mut call = caller.rpc().call(&route, "x").await.unwrap();
    within("the handler starts", started.recv()).await.unwrap();

    let drain = server.drain(WAIT);
    tokio::pin!(drain);
    assert!(
        drain.as_mut().now_or_never().is_none(),
        "waits for the handler"
    );
    // Draining: no new subscription or worker is taken.
    let refused = server
        .notice()
        .subscribe("notice://x/y/*")
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Closed);
    assert!(refused.to_string().contains("draining"), "{refused}");

    gate.notify_one();
    let report = within("the drain", drain).await;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(server.state(), State::Closed);
    let answer = within("the answer", call.next()).await.unwrap().unwrap();
    assert_eq!(answer.as_ref(), b"done");
}

#[tokio::test]
async fn drain_completes_the_message_a_queue_handler_is_working_on() {
    let brokers = Brokers::start().await.unwrap();
    let url = brokers.anon_url(Transport::Tcp);
    let route = format!("queue://{}/a/jobs", realm("drain"));
    let client = connected(url).await;
    client.queue().enqueue(&route, "job").await.unwrap();
    let (started_tx, mut started) = mpsc::channel(1);
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let worker = client
        .queue()
        .worker(&route, 1, move |_msg| {
            let started = started_tx.clone();
            let gate = g.clone();
            async move {
                let _ = started.send(()).await;
                gate.notified().await;
                Ok::<_, std::io::Error>(())
            }
        })
        .await
        .unwrap();
    within("the handler starts", started.recv()).await.unwrap();
    let drain = client.drain(WAIT);
    tokio::pin!(drain);
    assert!(
        drain.as_mut().now_or_never().is_none(),
        "waits for the handler"
    );
    gate.notify_one();
    let report = within("the drain", drain).await;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(worker.stats().completed, 1);
    assert!(worker.is_finished());

    // Completed, not abandoned: nothing left to reserve.
    let other = connected(url).await;
    let left = other
        .queue()
        .reserve(&route, fitz::queue::ReserveOptions::default())
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn drain_ends_every_subscription_cleanly() {
    let brokers = Brokers::start().await.unwrap();
    let url = brokers.anon_url(Transport::Tcp);
    let app = realm("drain");
    let client = connected(url).await;
    let mut notices = client
        .notice()
        .subscribe(&format!("notice://{app}/a/*"))
        .await
        .unwrap();
    let mut changes = client
        .kv()
        .subscribe(&format!("kv://{app}/a/*"))
        .await
        .unwrap();
    let report = within("the drain", client.drain(WAIT)).await;
    assert!(report.is_complete(), "{report:?}");
    assert!(within("notice end", notices.next()).await.is_none());
    assert!(within("kv watch end", changes.next()).await.is_none());
}

#[tokio::test]
async fn drain_reports_a_handler_that_did_not_finish_in_time() {
    let brokers = Brokers::start().await.unwrap();
    let url = brokers.anon_url(Transport::Tcp);
    let route = format!("rpc://{}/a/stuck", realm("drain"));
    let server = connected(url).await;
    let caller = connected(url).await;
    let (started_tx, mut started) = mpsc::channel(1);
    let _worker = server
        .rpc()
        .serve(&route, 1, move |_req: RpcRequest| {
            let started = started_tx.clone();
            async move {
                let _ = started.send(()).await;
                std::future::pending::<()>().await;
                Ok::<_, HandlerError>(Bytes::new())
            }
        })
        .await
        .unwrap();
    let _call = caller.rpc().call(&route, "x").await.unwrap();
    within("the handler starts", started.recv()).await.unwrap();
    let report = within("the drain", server.drain(Duration::from_millis(200))).await;
    assert_eq!(report.workers_unfinished, 1, "{report:?}");
    assert!(!report.is_complete());
    assert_eq!(server.state(), State::Closed);
}
