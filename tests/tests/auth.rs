//! Authentication and authorization through the SDK, over TCP and
//! WebSocket, against the authenticated broker (HS256, audience `fitz`,
//! family map `dev=1`).

use fitz::{ErrorKind, State};
use fitz_tests::{Brokers, BrokersExt, Jwt, Transport, jwt, token_builder};

#[tokio::test]
async fn authenticated_broker_accepts_the_test_token_and_rejects_others() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let url = brokers.auth_url(t);
        let ok = token_builder(url, brokers.token())
            .service_name("fitz-tests")
            .build()
            .unwrap();
        ok.connect().await.unwrap();
        assert_eq!(ok.state(), State::Authenticated);
        ok.close().await;

        let dev = || Jwt::dev().secret(&brokers.secret);
        for bad in [
            jwt::wrong_secret_token(),
            dev().expires_in(-60).mint(),
            dev().tid("nobody").mint(),
            String::new(),
        ] {
            let client = token_builder(url, bad).build().unwrap();
            let e = client.connect().await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Auth, "{url}: {e}");
            assert!(!e.is_retryable());
            assert_eq!(client.state(), State::Closed);
        }
    }
    brokers.shutdown().await;
}
