//! RPC acceptance criteria through the SDK, against the embedded broker
//! (docs/ACCEPTANCE.md): AC-RPC-004 (calls are spread across the workers of
//! a route, not all given to one) and AC-RPC-006 (a worker that unregistered
//! gets nothing more; calls go to the workers left).

use bytes::Bytes;
use fitz::rpc::{HandlerError, RpcRequest};
use fitz_tests::{Brokers, BrokersExt, Transport, connected, realm};

const CALLS: usize = 10;

#[tokio::test]
async fn calls_alternate_between_two_sdk_workers_and_skip_one_that_left() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let url = brokers.anon_url(t);
        let route = format!("rpc://{}/tasks/process", realm("lb"));
        let (first, second, caller) = (
            connected(url).await,
            connected(url).await,
            connected(url).await,
        );
        let mut workers = Vec::new();
        for (client, name) in [(&first, "a"), (&second, "b")] {
            let worker = client
                .rpc()
                .serve(&route, 32, move |_req: RpcRequest| async move {
                    Ok::<_, HandlerError>(Bytes::from_static(name.as_bytes()))
                })
                .await
                .unwrap();
            workers.push(worker);
        }

        // AC-RPC-004: ten sequential calls, both workers served ~half.
        let mut served = [0usize; 2];
        for _ in 0..CALLS {
            let answer = caller.rpc().request(&route, "job").await.unwrap();
            match &answer[..] {
                b"a" => served[0] += 1,
                b"b" => served[1] += 1,
                other => panic!("{url}: answer {other:?}"),
            }
        }
        assert!(
            served.iter().all(|&n| (4..=6).contains(&n)),
            "{url}: served {served:?}, not 5:5 or 4:6"
        );

        // AC-RPC-006: once `a` unregistered, every call goes to `b`.
        let a = workers.remove(0);
        a.shutdown().await.unwrap();
        for _ in 0..CALLS {
            let answer = caller.rpc().request(&route, "job").await.unwrap();
            assert_eq!(
                &answer[..],
                b"b",
                "{url}: an unregistered worker was called"
            );
        }
        for w in workers {
            w.shutdown().await.unwrap();
        }
        for c in [first, second, caller] {
            c.close().await;
        }
    }
    brokers.shutdown().await;
}
