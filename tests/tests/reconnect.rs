//! Connection loss and recovery through the disconnect proxy, against the
//! embedded broker (or an external one).

use std::time::Duration;

use fitz::{Client, ErrorKind, State};
use fitz_tests::{Brokers, Proxy};

#[tokio::test]
async fn refused_connections_are_retried_until_ready() {
    let brokers = Brokers::start().await.unwrap();
    let proxy = Proxy::start(brokers.anon_tcp_addr().unwrap())
        .await
        .unwrap();
    proxy.refuse_new_for(Duration::from_millis(300));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let client = Client::anonymous(proxy.tcp_url()).unwrap();
    let e = client.connect().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    assert!(e.is_retryable() && !e.maybe_applied());
    assert_eq!(client.state(), State::Disconnected);
    client
        .connect_when_ready(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(client.state(), State::Authenticated);
    client.close().await;
    brokers.shutdown().await;
}
