//! RPC in one file: a worker, a caller, a streamed response, a cancelled
//! call, and a call nobody serves.
//!
//! ```text
//! cargo run -p fitz --example rpc
//! FITZ_URL=tcp://127.0.0.1:4191 cargo run -p fitz --example rpc
//! FITZ_URL=tcp://127.0.0.1:4091 FITZ_TOKEN=$(scripts/dev-token.sh) cargo run -p fitz --example rpc
//! ```
//!
//! Without `FITZ_URL` it starts the embedded broker in this process.

use std::error::Error;
use std::time::Duration;

use fitz::rpc::{CallOptions, HandlerError, RpcRequest};
use fitz::{Client, StaticToken};
use fitz_broker::Broker;
use futures_util::StreamExt;
use tokio::sync::mpsc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let (url, broker) = broker_url().await?;
    // Workers and callers are usually different processes: two clients.
    let workers = connect(&url, "rpc-example-worker").await?;
    let caller = connect(&url, "rpc-example-caller").await?;

    // The worker: one answer, a stream, and a slow job that stops when asked.
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (stopped_tx, mut stopped) = mpsc::unbounded_channel();
    let worker = workers
        .rpc()
        .serve("rpc://demo/greeter/*", 8, move |req: RpcRequest| {
            let (started, stopped) = (started_tx.clone(), stopped_tx.clone());
            async move {
                match req.route() {
                    "rpc://demo/greeter/hello" => {
                        let name = String::from_utf8_lossy(req.body()).into_owned();
                        Ok(format!("hello, {name}"))
                    }
                    "rpc://demo/greeter/count" => {
                        let out = req.stream();
                        for n in 1..=3 {
                            out.send(format!("{n}")).await?;
                        }
                        Ok(String::new()) // an empty final chunk ends the stream
                    }
                    "rpc://demo/greeter/slow" => {
                        let _ = started.send(());
                        req.cancelled().await;
                        let _ = stopped.send(req.cancel_reason());
                        Err(HandlerError::failed("stopped"))
                    }
                    other => Err(HandlerError::failed(format!("no such greeting: {other}"))),
                }
            }
        })
        .await?;
    println!(
        "worker serving {} (cancellation support: {})",
        worker.pattern(),
        worker.supports_cancellation()
    );

    let rpc = caller.rpc();
    let answer = rpc.request("rpc://demo/greeter/hello", "fitz").await?;
    println!("request → {}", String::from_utf8_lossy(&answer));

    let mut stream = rpc.call("rpc://demo/greeter/count", "").await?;
    while let Some(chunk) = stream.next().await {
        println!("stream chunk → {}", String::from_utf8_lossy(&chunk?));
    }

    let options = CallOptions::timeout(Duration::from_secs(30));
    let mut slow = rpc
        .call_with("rpc://demo/greeter/slow", "", options)
        .await?;
    // Once the worker is on it, change our mind.
    started.recv().await;
    println!("cancel → {:?}", slow.cancel().await);
    if worker.supports_cancellation() {
        println!("worker saw → {:?}", stopped.recv().await.flatten());
    }

    // Typed calls (feature `serde`): JSON in, JSON out.
    let adder = workers
        .rpc()
        .serve_json(
            "rpc://demo/math/add",
            8,
            |(a, b): (i64, i64), _req| async move { Ok::<_, HandlerError>(a + b) },
        )
        .await?;
    let sum: i64 = rpc.request_json("rpc://demo/math/add", &(2, 3)).await?;
    println!("request_json (2, 3) → {sum}");
    adder.shutdown().await?;

    match rpc.request("rpc://demo/nobody/home", "").await {
        Err(e) => println!(
            "no worker → {e} (retryable: {}, maybe applied: {})",
            e.is_retryable(),
            e.maybe_applied()
        ),
        Ok(_) => println!("no worker → unexpectedly answered"),
    }

    worker.shutdown().await?;
    caller.close().await;
    workers.close().await;
    if let Some(broker) = broker {
        broker.shutdown().await;
    }
    Ok(())
}

/// `FITZ_URL`, or the address of an embedded broker started here.
async fn broker_url() -> Result<(String, Option<Broker>), Box<dyn Error>> {
    if let Ok(url) = std::env::var("FITZ_URL") {
        return Ok((url, None));
    }
    let broker = Broker::builder().start().await?;
    println!("embedded broker on {}", broker.tcp_url());
    Ok((broker.tcp_url(), Some(broker)))
}

/// A client of the broker at `url`, presenting `FITZ_TOKEN` if set, named
/// `name` in the broker's session list.
async fn connect(url: &str, name: &str) -> Result<Client, Box<dyn Error>> {
    let token = std::env::var("FITZ_TOKEN").unwrap_or_default();
    let client = Client::builder(url, StaticToken::new(token))
        .service_name(name)
        .build()?;
    client.connect_when_ready(Duration::from_secs(10)).await?;
    Ok(client)
}
