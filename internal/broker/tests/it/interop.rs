//! The official client, `cntryl-fitz` 0.2.0, against the embedded broker:
//! anonymous and JWT, TCP and WebSocket.

use std::time::Duration;

use crate::support::{ALL, token};
use cntryl_fitz::client_domains::kv::KvGetResult;
use cntryl_fitz::{Client, KvDurability, TransactionMode};
use fitz_broker::Broker;
use futures_util::StreamExt;

async fn exercise(client: &Client, tag: &str) {
    client.connect().await.expect("connects");
    let kv = client.kv().unwrap();
    let route = format!("kv://interop/{tag}/users");
    let tx = kv.begin(&route, TransactionMode::ReadWrite).await.unwrap();
    tx.put(b"alice", b"1").await.unwrap();
    assert_eq!(
        tx.get(b"alice").await.unwrap(),
        KvGetResult::Found(b"1".to_vec())
    );
    tx.commit(KvDurability::Sync).await.unwrap();
    let tx = kv.begin(&route, TransactionMode::ReadOnly).await.unwrap();
    assert_eq!(
        tx.get(b"alice").await.unwrap(),
        KvGetResult::Found(b"1".to_vec())
    );
    assert_eq!(tx.get(b"bob").await.unwrap(), KvGetResult::NotFound);
    tx.commit(KvDurability::Buffered).await.unwrap();

    let notice = client.notice().unwrap();
    let pattern = format!("notice://interop/{tag}/*");
    let mut sub = notice.subscribe(&pattern).await.unwrap();
    notice
        .publish(&format!("notice://interop/{tag}/orders"), b"hello")
        .await
        .unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("notification in time")
        .expect("stream open")
        .unwrap();
    assert_eq!(msg.route, format!("notice://interop/{tag}/orders"));
    assert_eq!(msg.body, b"hello");
    client.close().await.unwrap();
}

fn urls(broker: &Broker) -> [(String, &'static str); 2] {
    [(broker.tcp_url(), "tcp"), (broker.ws_url(), "ws")]
}

#[tokio::test]
async fn official_client_anonymous_over_tcp_and_ws() {
    let broker = crate::support::anon().await;
    for (url, tag) in urls(&broker) {
        let client = Client::anonymous(url)
            .service_name("interop")
            .build()
            .unwrap();
        exercise(&client, tag).await;
    }
}

#[tokio::test]
async fn official_client_with_its_test_jwt_over_tcp_and_ws() {
    let broker = crate::support::jwt().await;
    for (url, tag) in urls(&broker) {
        let client = Client::builder(url, || async { Ok(token("dev", ALL)) })
            .build()
            .unwrap();
        exercise(&client, tag).await;
    }
}

#[tokio::test]
async fn official_client_reports_a_rejected_token_as_authentication_failure() {
    let broker = crate::support::jwt().await;
    for (url, _) in urls(&broker) {
        let client = Client::builder(url, || async { Ok(token("unmapped", ALL)) })
            .build()
            .unwrap();
        let err = client.connect().await.unwrap_err();
        assert_eq!(
            err.kind(),
            cntryl_fitz::FitzErrorKind::Authentication,
            "{err}"
        );
    }
}
