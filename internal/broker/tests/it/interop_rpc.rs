//! RPC between official `cntryl-fitz` 0.2.0 clients through the embedded
//! broker: workers and callers are both the official client (anonymous and
//! JWT, TCP and WebSocket), including streamed responses, the no-worker
//! domain error, explicit cancellation, deadline expiry and a chained call.

use std::time::Duration;

use crate::support::{ALL, token};
use cntryl_fitz::client_domains::rpc::RpcCancellationOutcome;
use cntryl_fitz::{Client, FitzError};
use fitz_broker::Broker;
use futures_util::StreamExt;

const T: Duration = Duration::from_secs(5);

fn urls(broker: &Broker) -> [(String, &'static str); 2] {
    [(broker.tcp_url(), "tcp"), (broker.ws_url(), "ws")]
}

fn anonymous(url: &str) -> Client {
    Client::anonymous(url).build().unwrap()
}

fn with_jwt(url: &str) -> Client {
    Client::builder(url, || async { Ok(token("dev", ALL)) })
        .build()
        .unwrap()
}

async fn connected(make: fn(&str) -> Client, url: &str) -> Client {
    let c = make(url);
    c.connect().await.expect("connects");
    assert_ne!(c.server_capabilities().1 & (1 << 3), 0, "RPC cancellation");
    c
}

async fn wait_idle(broker: &Broker) {
    for _ in 0..300 {
        if broker.engines().rpc.live_calls() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("calls still live: {}", broker.engines().rpc.live_calls());
}

/// Streamed round trip, no-worker error, explicit cancel: one pair of
/// official clients.
async fn exercise(broker: &Broker, make: fn(&str) -> Client) {
    for (url, tag) in urls(broker) {
        let caller = connected(make, &url).await;
        let worker_client = connected(make, &url).await;
        let route = format!("rpc://interop/{tag}/echo");
        let mut worker = worker_client
            .rpc()
            .unwrap()
            .register_worker(&format!("rpc://interop/{tag}/*"), 4)
            .await
            .unwrap();
        let serving = tokio::spawn(async move {
            let mut request = worker.next().await.unwrap().unwrap();
            assert_eq!(request.body, b"ping");
            for part in [&b"one"[..], b"two"] {
                request.respond(part, false).await.unwrap();
            }
            request.respond(b"three", true).await.unwrap();
            worker
        });
        let mut stream = caller.rpc().unwrap().call(&route, b"ping").await.unwrap();
        let mut got = Vec::new();
        while let Some(frame) = tokio::time::timeout(T, stream.next()).await.unwrap() {
            let frame = frame.unwrap();
            got.push((frame.sequence, frame.body));
        }
        assert_eq!(
            got,
            [
                (0, b"one".to_vec()),
                (1, b"two".to_vec()),
                (2, b"three".to_vec())
            ]
        );
        let mut worker = serving.await.unwrap();

        // No worker on the route: domain error 6004.
        let mut missing = caller
            .rpc()
            .unwrap()
            .call(&format!("rpc://nobody/{tag}/x"), b"")
            .await
            .unwrap();
        match tokio::time::timeout(T, missing.next()).await.unwrap() {
            Some(Err(FitzError::Domain { code, .. })) => assert_eq!(code, 6004),
            other => panic!("expected 6004, got {other:?}"),
        }

        // Explicit cancel of a dispatched call: Forwarded, and the worker's
        // handler sees its cancellation token fire.
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let handler = tokio::spawn(async move {
            let request = worker.next().await.unwrap().unwrap();
            started_tx.send(()).unwrap();
            tokio::time::timeout(T, request.cancellation.cancelled())
                .await
                .expect("worker cancelled");
            // Dropping the request sends the cleanup acknowledgement.
            drop(request);
            worker
        });
        let mut call = caller
            .rpc()
            .unwrap()
            .call_with_timeout(&route, b"slow", Some(Duration::from_secs(20)))
            .await
            .unwrap();
        // Cancel once the handler holds the request.
        tokio::time::timeout(T, started_rx).await.unwrap().unwrap();
        assert_eq!(call.cancel().await, RpcCancellationOutcome::Forwarded);
        let worker = tokio::time::timeout(T, handler).await.unwrap().unwrap();
        // The acknowledgement released the call and its credit.
        wait_idle(broker).await;
        worker.deregister().await.unwrap();
        caller.close().await.unwrap();
        worker_client.close().await.unwrap();
    }
}

#[tokio::test]
async fn official_clients_anonymous_over_tcp_and_ws() {
    let broker = crate::support::anon().await;
    exercise(&broker, anonymous).await;
}

#[tokio::test]
async fn official_clients_with_jwt_over_tcp_and_ws() {
    let broker = crate::support::jwt().await;
    exercise(&broker, with_jwt).await;
}

/// A → B → C with an inherited budget: the caller's deadline expires, the
/// client cancels with reason 2 and both workers see their handlers
/// cancelled; then a fresh call still works (credit came back).
#[tokio::test]
async fn official_clients_chain_expires_within_the_inherited_deadline() {
    let broker = crate::support::anon().await;
    for (url, tag) in urls(&broker) {
        let a = connected(anonymous, &url).await;
        let b = connected(anonymous, &url).await;
        let c = connected(anonymous, &url).await;
        let route_b = format!("rpc://chain/{tag}/b");
        let route_c = format!("rpc://chain/{tag}/c");
        let b_rpc = b.rpc().unwrap();
        let mut b_worker = b_rpc.register_worker(&route_b, 1).await.unwrap();
        let mut c_worker = c.rpc().unwrap().register_worker(&route_c, 1).await.unwrap();
        let route = route_c.clone();
        let b_task = tokio::spawn(async move {
            let parent = b_worker.next().await.unwrap().unwrap();
            let budget = parent.remaining_time().expect("budget forwarded");
            assert!(budget <= Duration::from_millis(800), "{budget:?}");
            let mut child = b_rpc
                .call_from_request(&parent, &route, b"child")
                .await
                .unwrap();
            while child.next().await.is_some() {}
            tokio::time::timeout(T, parent.cancellation.cancelled())
                .await
                .expect("B cancelled");
            drop(child);
            drop(parent);
            b_worker
        });
        let c_task = tokio::spawn(async move {
            let child = c_worker.next().await.unwrap().unwrap();
            assert!(child.remaining_time().is_some());
            tokio::time::timeout(T, child.cancellation.cancelled())
                .await
                .expect("C cancelled");
            drop(child);
            c_worker
        });
        let started = tokio::time::Instant::now();
        let mut call = a
            .rpc()
            .unwrap()
            .call_with_timeout(&route_b, b"parent", Some(Duration::from_millis(800)))
            .await
            .unwrap();
        match tokio::time::timeout(T, call.next()).await.unwrap() {
            Some(Err(FitzError::Timeout | FitzError::Domain { code: 6001, .. })) => {}
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_millis(3_000));
        let mut b_worker = tokio::time::timeout(T, b_task).await.unwrap().unwrap();
        let _c_worker = tokio::time::timeout(T, c_task).await.unwrap().unwrap();
        wait_idle(&broker).await;
        // B has its credit back.
        let serve = tokio::spawn(async move {
            let request = b_worker.next().await.unwrap().unwrap();
            request.finish().await.unwrap();
        });
        let mut again = a.rpc().unwrap().call(&route_b, b"again").await.unwrap();
        let last = tokio::time::timeout(T, again.next()).await.unwrap();
        assert!(
            matches!(last, Some(Ok(ref f)) if f.body.is_empty()),
            "{last:?}"
        );
        serve.await.unwrap();
        for client in [a, b, c] {
            client.close().await.unwrap();
        }
    }
}
