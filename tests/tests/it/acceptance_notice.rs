//! Notice acceptance criteria through the SDK, one client per subscriber,
//! against the embedded broker (docs/ACCEPTANCE.md): AC-NOTICE-003 (`*`),
//! AC-NOTICE-004 (`**`), AC-NOTICE-007 (realm isolation) and AC-NOTICE-008
//! (fan-out to every matching subscriber, each on its own subscription).
//!
//! "Does not receive" is proved by order, not by waiting: the broker keeps
//! each subscriber's notices in publish order, so when the next notice a
//! subscriber sees is one published *after* the one it must not see, the
//! earlier one never reached it.

use fitz::Client;
use fitz::notice::{NoticeMessage, NoticeSubscription};
use fitz_tests::{Brokers, BrokersExt, Transport, connected, next_item, realm};

async fn next(sub: &mut NoticeSubscription) -> (String, Vec<u8>) {
    let m: NoticeMessage = next_item(sub).await;
    (m.route().to_owned(), m.payload().to_vec())
}

fn seen(route: &str, payload: &str) -> (String, Vec<u8>) {
    (route.to_owned(), payload.as_bytes().to_vec())
}

#[tokio::test]
async fn every_matching_subscriber_gets_the_notice_and_other_realms_do_not() {
    let brokers = Brokers::start().await.unwrap();
    for t in Transport::BOTH {
        let url = brokers.anon_url(t);
        let (prod, staging) = (realm("prod"), realm("staging"));
        let clients: Vec<Client> =
            futures_util::future::join_all((0..5).map(|_| connected(url))).await;
        let [a, b, c, d, publisher] = &clients[..] else {
            unreachable!("five clients")
        };
        let create = format!("notice://{prod}/orders/create");
        let update = format!("notice://{prod}/orders/update");
        let stock = format!("notice://{prod}/inventory/update");
        let elsewhere = format!("notice://{staging}/orders/create");

        let mut exact = a.notice().subscribe(&create).await.unwrap();
        let mut single = b
            .notice()
            .subscribe(&format!("notice://{prod}/orders/*"))
            .await
            .unwrap();
        let mut deep = c
            .notice()
            .subscribe(&format!("notice://{prod}/**"))
            .await
            .unwrap();
        let mut other_realm = d
            .notice()
            .subscribe(&format!("notice://{staging}/**"))
            .await
            .unwrap();

        let p = publisher.notice();
        p.publish(&create, "order:456").await.unwrap();
        p.publish(&update, "order:457").await.unwrap();
        p.publish(&stock, "sku:1").await.unwrap();
        p.publish(&elsewhere, "staging").await.unwrap();
        p.publish(&create, "order:458").await.unwrap();

        // AC-NOTICE-008: all three subscribers of the prod create route.
        // AC-NOTICE-003: `*` matches `create` and `update`, not another area.
        // AC-NOTICE-004: `**` matches every area under the realm.
        assert_eq!(next(&mut exact).await, seen(&create, "order:456"), "{url}");
        assert_eq!(next(&mut exact).await, seen(&create, "order:458"), "{url}");
        for want in [seen(&create, "order:456"), seen(&update, "order:457")] {
            assert_eq!(next(&mut single).await, want, "{url}");
        }
        assert_eq!(next(&mut single).await, seen(&create, "order:458"), "{url}");
        for want in [
            seen(&create, "order:456"),
            seen(&update, "order:457"),
            seen(&stock, "sku:1"),
            seen(&create, "order:458"),
        ] {
            assert_eq!(next(&mut deep).await, want, "{url}");
        }
        // AC-NOTICE-007: the staging subscriber saw none of prod's notices,
        // which were published before its own.
        assert_eq!(
            next(&mut other_realm).await,
            seen(&elsewhere, "staging"),
            "{url}"
        );
        for client in &clients {
            client.close().await;
        }
    }
    brokers.shutdown().await;
}
