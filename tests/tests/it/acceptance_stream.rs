//! Stream acceptance criteria through the SDK against the embedded broker
//! (docs/ACCEPTANCE.md): AC-STREAM-002/003 (reads from an offset, and past
//! the end) and AC-STREAM-014 (a client that goes away — closed, or cut off
//! with its handles still open and unable to reconnect — leaves none of its
//! Stream watches, exact or wildcard, nor an open append session; read from
//! the broker's statistics, which nothing can be awaited on, so polled with
//! `until`).

use fitz::stream::{Durability, ReadOptions};
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

/// AC-STREAM-002 and AC-STREAM-003: a read from offset 1 returns offsets 1
/// and 2 in order, with the concrete route; a read far past the end of the
/// stream (highest offset 5) is an empty page, not an error, and the
/// connection goes on.
#[tokio::test]
async fn reads_start_at_their_offset_and_past_the_end_are_empty() {
    let brokers = fitz_tests::Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let client = connected(fitz_tests::BrokersExt::anon_url(&brokers, t)).await;
        let route = format!("stream://{}/logs/events", realm("acc-read"));
        let mut session = client.stream().begin(&route).await.unwrap();
        for i in 0..6 {
            session.append(format!("event{i}")).await.unwrap();
        }
        session.commit(Durability::Sync).await.unwrap();

        let page = client
            .stream()
            .read_page(&route, 1, &ReadOptions::new().limit(2))
            .await
            .unwrap();
        let got: Vec<(u64, String, Vec<u8>)> = page
            .records()
            .map(|r| (r.offset(), r.route().to_owned(), r.body().to_vec()))
            .collect();
        assert_eq!(
            got,
            [
                (1, route.clone(), b"event1".to_vec()),
                (2, route.clone(), b"event2".to_vec())
            ],
            "{t:?}"
        );

        let past = client
            .stream()
            .read_page(&route, 100, &ReadOptions::new().limit(10))
            .await
            .unwrap();
        assert!(past.is_empty(), "{t:?}");
        // The connection is fine: the last record is still there.
        let last = client
            .stream()
            .read_page(&route, 5, &ReadOptions::new())
            .await
            .unwrap();
        assert_eq!(last.len(), 1, "{t:?}");
        client.close().await;
    }
    brokers.shutdown().await;
}
