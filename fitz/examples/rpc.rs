//! RPC in one file: a worker, a caller, a streamed response, a cancelled call.
//!
//! ```text
//! cargo run -p fitz --example rpc
//! FITZ_URL=tcp://127.0.0.1:4191 cargo run -p fitz --example rpc
//! FITZ_URL=tcp://127.0.0.1:4091 FITZ_TOKEN=<jwt> cargo run -p fitz --example rpc
//! ```
//!
//! Without `FITZ_URL` it starts the embedded broker in this process.

use std::error::Error;
use std::time::Duration;

use fitz::rpc::{CallOptions, HandlerError, RpcRequest};
use fitz::{Client, StaticToken};
use futures_util::StreamExt;
use tokio::sync::mpsc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let (url, token, embedded) = match std::env::var("FITZ_URL") {
        Ok(url) => (url, std::env::var("FITZ_TOKEN").unwrap_or_default(), None),
        Err(_) => {
            let broker = fitz_broker::Broker::builder()
                .tcp_port(0)
                .http_port(0)
                .auth(fitz_broker::AuthConfig::anonymous())
                .start()
                .await?;
            (broker.tcp_url(), String::new(), Some(broker))
        }
    };
    println!("broker: {url}");
    let connect = |name: &'static str| {
        let client = Client::builder(url.as_str(), StaticToken::new(token.clone()))
            .service_name(name)
            .build();
        async move {
            let client = client?;
            client.connect_when_ready(Duration::from_secs(10)).await?;
            Ok::<_, fitz::Error>(client)
        }
    };
    let workers = connect("rpc-example-worker").await?;
    let caller = connect("rpc-example-caller").await?;

    // The worker: one answer, a stream, and a slow job that stops when asked.
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (stopped_tx, mut stopped) = mpsc::unbounded_channel();
    let worker = workers
        .rpc()
        .serve("rpc://example/greeter/*", 8, move |req: RpcRequest| {
            let (started, stopped) = (started_tx.clone(), stopped_tx.clone());
            async move {
                match req.route() {
                    "rpc://example/greeter/hello" => {
                        let name = String::from_utf8_lossy(req.body()).into_owned();
                        Ok(format!("hello, {name}"))
                    }
                    "rpc://example/greeter/count" => {
                        let out = req.stream();
                        for n in 1..=3 {
                            out.send(format!("{n}")).await?;
                        }
                        Ok(String::new()) // an empty final chunk ends the stream
                    }
                    "rpc://example/greeter/slow" => {
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
    let answer = rpc.request("rpc://example/greeter/hello", "fitz").await?;
    println!("request → {}", String::from_utf8_lossy(&answer));

    let mut stream = rpc.call("rpc://example/greeter/count", "").await?;
    while let Some(chunk) = stream.next().await {
        println!("stream chunk → {}", String::from_utf8_lossy(&chunk?));
    }

    let options = CallOptions::timeout(Duration::from_secs(30));
    let mut slow = rpc
        .call_with("rpc://example/greeter/slow", "", options)
        .await?;
    // Once the worker is on it, change our mind.
    started.recv().await;
    println!("cancel → {:?}", slow.cancel().await);
    if worker.supports_cancellation() {
        println!("worker saw → {:?}", stopped.recv().await.flatten());
    }

    match rpc.request("rpc://example/nobody/home", "").await {
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
    if let Some(broker) = embedded {
        broker.shutdown().await;
    }
    Ok(())
}
