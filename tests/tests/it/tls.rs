//! `tls://` and `wss://` with a private CA: a self-signed certificate made
//! here, served by a TLS-terminating proxy in front of the embedded broker.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fitz::{Client, ErrorKind, StaticToken, TlsConfig};
use fitz_testkit::Brokers;
use futures_util::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, ServerConfig};

struct Terminator {
    addr: SocketAddr,
    ca_pem: String,
}

/// Accepts TLS for `localhost` and forwards the plaintext to `upstream`.
async fn tls_terminator(upstream: SocketAddr) -> Terminator {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    Terminator {
        addr,
        ca_pem: ck.cert.pem(),
    }
}

#[tokio::test]
async fn tls_and_wss_with_a_custom_ca() {
    let brokers = Brokers::start().await.unwrap();
    let tcp = tls_terminator(brokers.anon_tcp_addr().unwrap()).await;
    let ws = tls_terminator(brokers.anon_ws_addr().unwrap()).await;
    let urls = [
        format!("tls://localhost:{}", tcp.addr.port()),
        format!("wss://localhost:{}/ws", ws.addr.port()),
    ];
    for (url, ca) in urls.iter().zip([&tcp.ca_pem, &ws.ca_pem]) {
        let client = Client::builder(url.as_str(), StaticToken::anonymous())
            .tls(TlsConfig::CustomCa(ca.as_bytes().to_vec()))
            .build()
            .unwrap();
        client.connect().await.unwrap();
        let mut sub = client
            .notice()
            .subscribe("notice://tls/app/*")
            .await
            .unwrap();
        let msg = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                client
                    .notice()
                    .publish("notice://tls/app/x", "secret")
                    .await
                    .unwrap();
                if let Ok(Some(m)) =
                    tokio::time::timeout(Duration::from_millis(50), sub.next()).await
                {
                    return m.unwrap();
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(&msg.payload()[..], b"secret", "{url}");
        client.close().await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn an_untrusted_certificate_fails_as_a_connection_error() {
    let brokers = Brokers::start().await.unwrap();
    let tcp = tls_terminator(brokers.anon_tcp_addr().unwrap()).await;
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let client = Client::builder(
        format!("tls://localhost:{}", tcp.addr.port()),
        StaticToken::anonymous(),
    )
    .tls(TlsConfig::CustomCa(other.cert.pem().into_bytes()))
    .build()
    .unwrap();
    let e = client.connect().await.unwrap_err();
    // Not an auth rejection: the handshake never reached CONNECT.
    assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
    assert!(e.message().contains("TLS"), "{e}");

    let e = Client::builder("tls://localhost:1", StaticToken::anonymous())
        .tls(TlsConfig::CustomCa(b"not a pem".to_vec()))
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    brokers.shutdown().await;
}
