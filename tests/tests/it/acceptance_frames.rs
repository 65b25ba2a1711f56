//! AC-PERF-001 through the SDK against the embedded broker
//! (docs/ACCEPTANCE.md): a value over one 65,535-byte record never leaves
//! the client, in any domain, and the session goes on; the client's frame
//! limit (`ClientBuilder::max_frame`) is its own and configurable: a request
//! over it is refused before sending, and a frame from the broker over it
//! drops the connection (which then comes back) instead of being read.

use fitz::kv::{Durability, TxMode};
use fitz::{ErrorKind, Event};
use fitz_tests::{Brokers, BrokersExt, Transport, anon_builder, connected, realm, wait_event};

/// One byte more than a record value may hold.
const OVER_A_RECORD: usize = 65_536;
/// The small client's frame limit.
const SMALL_FRAME: usize = 8 * 1024;

#[tokio::test]
async fn oversized_values_never_leave_and_the_frame_limit_is_configurable() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let url = brokers.anon_url(t);
        let client = connected(url).await;
        let test = realm("frames");
        let big = vec![b'x'; OVER_A_RECORD];

        // Over a record: refused locally in every domain, not retryable,
        // certainly not applied.
        let kv_route = format!("kv://{test}/big/r");
        let mut tx = client
            .kv()
            .begin(&kv_route, TxMode::ReadWrite)
            .await
            .unwrap();
        let errors = [
            tx.put("k", big.clone()).await.unwrap_err(),
            client
                .notice()
                .publish(&format!("notice://{test}/big/r"), big.clone())
                .await
                .unwrap_err(),
            client
                .queue()
                .enqueue(&format!("queue://{test}/big/r"), big.clone())
                .await
                .unwrap_err(),
        ];
        for e in errors {
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{url}: {e}");
            assert!(!e.is_retryable() && !e.maybe_applied(), "{url}: {e}");
        }
        // The session and the transaction go on: a 20 KiB value fits.
        tx.put("k", vec![b'v'; 20 * 1024]).await.unwrap();
        tx.commit(Durability::Sync).await.unwrap();

        // A client whose frame limit is 8 KiB.
        let small = anon_builder(url).max_frame(SMALL_FRAME).build().unwrap();
        small.connect().await.unwrap();
        let mut events = small.events();
        // Sending over it: refused before it leaves.
        let e = small
            .notice()
            .publish(&format!("notice://{test}/big/r"), vec![b'x'; SMALL_FRAME])
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{url}: {e}");
        assert!(!e.maybe_applied(), "{url}: {e}");
        // Receiving over it: the 20 KiB value's reply is not read; the
        // connection drops as a protocol failure and is re-established.
        let mut ro = small.kv().begin(&kv_route, TxMode::ReadOnly).await.unwrap();
        let e = ro.get("k").await.unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::Connection | ErrorKind::Protocol),
            "{url}: {e}"
        );
        match wait_event(&mut events, |e| matches!(e, Event::Disconnected { .. })).await {
            Event::Disconnected { reason } => {
                assert_eq!(reason.kind(), ErrorKind::Protocol, "{url}: {reason}")
            }
            _ => unreachable!(),
        }
        wait_event(&mut events, fitz_tests::reconnected).await;
        // Small replies still pass on the new session.
        let mut ro = small.kv().begin(&kv_route, TxMode::ReadOnly).await.unwrap();
        assert_eq!(ro.get("missing").await.unwrap(), None, "{url}");
        drop(ro);
        small.close().await;
        client.close().await;
    }
    brokers.shutdown().await;
}
