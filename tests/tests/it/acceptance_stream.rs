//! AC-STREAM-014 through the SDK against an embedded broker
//! (docs/ACCEPTANCE.md): a client that goes away — closed, or cut off with
//! its handles still open and unable to reconnect — leaves none of its
//! Stream watches (exact or wildcard) on the broker, nor an open append
//! session. Read from the broker's statistics, which nothing can be awaited
//! on, so polled with `until`.

use fitz_tests::{Timed, Transport, connected, proxy_to, realm, refuse_new, until};

#[tokio::test]
async fn a_closed_or_cut_off_client_leaves_no_stream_watch_behind() {
    let Some(timed) = Timed::start("reads the embedded broker's statistics").await else {
        return;
    };
    let Some(broker) = timed.broker() else {
        fitz_tests::report_skip("the external broker's statistics cannot be read");
        return;
    };
    let stats = || broker.engines().stream.stats();
    let test = realm("acc-stream");
    for (graceful, t) in [(true, Transport::Tcp), (false, Transport::Ws)] {
        let (proxy, url) = proxy_to(timed.addr(t), t).await;
        let client = connected(&url).await;
        let stream = client.stream();
        let exact = stream
            .subscribe(&format!("stream://{test}/orders/x"))
            .await
            .unwrap();
        let wild = stream
            .subscribe(&format!("stream://{test}/orders/*"))
            .await
            .unwrap();
        let session = stream
            .begin(&format!("stream://{test}/orders/x"))
            .await
            .unwrap();
        assert_eq!((stats().watches, stats().append_sessions), (2, 1), "{t:?}");
        if graceful {
            client.close().await;
        } else {
            // Ungraceful: the connection is cut and the client cannot come
            // back to restore anything; only the broker can clean up.
            refuse_new(&proxy).await;
            proxy.cut_all();
        }
        until(
            "the session's watches and append session are gone",
            || async {
                let s = stats();
                s.watches == 0 && s.append_sessions == 0
            },
        )
        .await;
        drop((exact, wild, session));
        client.close().await;
    }
    timed.shutdown().await;
}
