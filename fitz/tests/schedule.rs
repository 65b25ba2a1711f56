//! The Schedule client against the embedded broker, over TCP and WebSocket;
//! fires are driven by a broker on a manual clock, so no test waits for a
//! real minute.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, UNIX_EPOCH};

use fitz::schedule::{DeliveryMode, ScheduleEntry, ScheduleFire, ScheduleSubscription};
use fitz::{Client, ErrorKind, Event, ReconnectPolicy, StaticToken, codes};
use fitz_broker::{Broker, Clock};
use fitz_testkit::{Brokers, Proxy, jwt};
use futures_util::{FutureExt, StreamExt, TryStreamExt};

const WAIT: Duration = Duration::from_secs(10);
const MINUTE: Duration = Duration::from_secs(60);

async fn connected(url: &str) -> Client {
    let c = Client::builder(url, StaticToken::anonymous())
        .reconnect(ReconnectPolicy {
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            ..ReconnectPolicy::default()
        })
        .build()
        .unwrap();
    c.connect().await.unwrap();
    c
}

/// An anonymous broker whose clock stands on a minute boundary until advanced.
async fn manual_broker() -> Broker {
    Broker::builder()
        .bind_addr(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .tcp_port(0)
        .http_port(0)
        .clock(Clock::manual(
            UNIX_EPOCH + Duration::from_secs(1_700_000_040),
        ))
        .start()
        .await
        .unwrap()
}

async fn next_fire(sub: &mut ScheduleSubscription) -> ScheduleFire {
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("no fire within 10 s")
        .expect("stream ended")
        .expect("stream error")
}

/// Fires until `marker` arrives and returns what came before it: every
/// earlier fire to this connection has arrived by then (one ordered session).
async fn fires_until(sub: &mut ScheduleSubscription, marker: &str) -> Vec<String> {
    let mut before = Vec::new();
    loop {
        let fire = next_fire(sub).await;
        if fire.route() == marker {
            return before;
        }
        before.push(fire.route().to_owned());
    }
}

#[tokio::test]
async fn create_list_cancel_and_batches_over_tcp_and_websocket() {
    let brokers = Brokers::start().await.unwrap();
    for (url, realm) in [(&brokers.anon_tcp, "tcp"), (&brokers.anon_ws, "ws")] {
        let client = connected(url).await;
        let schedule = client.schedule();
        let route = |n: u32| format!("schedule://{realm}/jobs/j{n}/run");
        for n in 0..3 {
            schedule
                .create(
                    &route(n),
                    "*/5 * * * *",
                    DeliveryMode::Broadcast,
                    format!("p{n}"),
                )
                .await
                .unwrap();
        }
        // CREATE is an upsert.
        schedule
            .create(&route(0), "0 6 * * 1-5", DeliveryMode::Single, "p0-v2")
            .await
            .unwrap();
        schedule
            .create_batch(
                (3..7).map(|n| {
                    ScheduleEntry::new(route(n), "0 * * * *", DeliveryMode::Single, "batch")
                }),
            )
            .await
            .unwrap();

        let page = schedule.list(0, 2).await.unwrap();
        assert_eq!((page.total(), page.entries().len()), (7, 2), "{url}");
        assert!(!page.is_last());
        let rest = schedule.list(page.next_offset(), 0).await.unwrap();
        assert!(rest.is_last());

        let all: Vec<ScheduleEntry> = schedule.list_all().try_collect().await.unwrap();
        let mut routes: Vec<&str> = all.iter().map(ScheduleEntry::route).collect();
        routes.sort_unstable();
        let want: Vec<String> = (0..7).map(route).collect();
        assert_eq!(routes, want);
        let first = all.iter().find(|e| e.route() == route(0)).unwrap();
        assert_eq!(
            (first.cron(), first.mode(), &first.payload()[..]),
            ("0 6 * * 1-5", DeliveryMode::Single, &b"p0-v2"[..])
        );

        // The cursor listing sees the same set, in route order, and resumes.
        let by_cursor: Vec<ScheduleEntry> =
            schedule.list_all_after(None).try_collect().await.unwrap();
        let cursor_routes: Vec<&str> = by_cursor.iter().map(ScheduleEntry::route).collect();
        assert_eq!(cursor_routes, want);
        let page = schedule.list_after(None, 3).await.unwrap();
        assert!(page.has_more());
        let after = schedule.list_after(page.next_cursor(), 1000).await.unwrap();
        assert_eq!(after.entries().len(), 4);
        assert!(!after.has_more());

        let matched: Vec<ScheduleEntry> = schedule
            .list_matching(&format!("schedule://{realm}/jobs/*/run"))
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(matched.len(), 7);

        schedule.cancel(&route(1)).await.unwrap();
        schedule.cancel(&route(1)).await.unwrap();
        assert_eq!(schedule.list(0, 0).await.unwrap().total(), 6);
        // Both transports share the broker: leave it empty for the next.
        for e in schedule.list_all().try_collect::<Vec<_>>().await.unwrap() {
            schedule.cancel(e.route()).await.unwrap();
        }
        client.close().await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn invalid_input_is_rejected_typed() {
    let brokers = Brokers::start().await.unwrap();
    let client = connected(&brokers.anon_tcp).await;
    let schedule = client.schedule();
    let route = "schedule://v/jobs/j/run";
    // Local: nothing is sent.
    for bad in [
        "schedule://v/jobs/j",
        "schedule://v/jobs/*/run",
        "stream://v/jobs/j/run",
    ] {
        let e = schedule
            .create(bad, "* * * * *", DeliveryMode::Broadcast, "")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}");
    }
    assert_eq!(
        schedule.list(0, 1001).await.unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    // Cron is checked locally with the broker's own grammar: nothing is sent
    // for an expression the broker would refuse (its envelope for that is
    // covered by the broker's tests), and one it accepts is accepted here.
    for cron in [
        "61 * * * *",
        "* * * *",
        "0 0 31 2 *",
        "every minute",
        "0 0 * * 7",
    ] {
        let e = schedule
            .create(route, cron, DeliveryMode::Broadcast, "")
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{cron}: {e}");
        assert!(e.message().contains("cron"), "{cron}: {e}");
        assert!(!e.is_retryable() && !e.maybe_applied(), "{cron}");
        let batch = schedule
            .create_batch([ScheduleEntry::new(route, cron, DeliveryMode::Single, "")])
            .await
            .unwrap_err();
        assert_eq!(batch.kind(), ErrorKind::InvalidArgument, "{cron}: {batch}");
    }
    assert_eq!(schedule.list(0, 0).await.unwrap().total(), 0);
    client.close().await;
    brokers.shutdown().await;
}

#[tokio::test]
async fn unauthorized_writes_are_7009() {
    let brokers = Brokers::start().await.unwrap();
    for url in [&brokers.auth_tcp, &brokers.auth_ws] {
        let token = jwt::scoped_token(&["schedule://**#read"]);
        let client = Client::builder(url.as_str(), StaticToken::new(token))
            .build()
            .unwrap();
        client.connect().await.unwrap();
        let schedule = client.schedule();
        assert_eq!(schedule.list(0, 10).await.unwrap().total(), 0);
        for e in [
            schedule
                .create("schedule://a/b/c/d", "* * * * *", DeliveryMode::Single, "")
                .await
                .unwrap_err(),
            schedule.cancel("schedule://a/b/c/d").await.unwrap_err(),
            schedule
                .create_batch([ScheduleEntry::new(
                    "schedule://a/b/c/d",
                    "* * * * *",
                    DeliveryMode::Single,
                    "",
                )])
                .await
                .unwrap_err(),
        ] {
            assert_eq!(
                (e.kind(), e.code()),
                (ErrorKind::Broker, Some(codes::SCHEDULE_UNAUTHORIZED)),
                "{url}: {e}"
            );
        }
        client.close().await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn fires_reach_subscriptions_broadcast_to_all_single_to_one() {
    let broker = manual_broker().await;
    let a = connected(&broker.tcp_url()).await;
    let b = connected(&broker.ws_url()).await;
    let pattern = "schedule://prod/jobs/*/run";
    let mut sub_a = a.schedule().subscribe(pattern).await.unwrap();
    let mut sub_b = b.schedule().subscribe(pattern).await.unwrap();
    let schedule = a.schedule();
    schedule
        .create(
            "schedule://prod/jobs/all/run",
            "* * * * *",
            DeliveryMode::Broadcast,
            "to-all",
        )
        .await
        .unwrap();
    broker.clock().advance(MINUTE);
    for sub in [&mut sub_a, &mut sub_b] {
        let fire = next_fire(sub).await;
        assert_eq!(
            (fire.route(), &fire.payload()[..]),
            ("schedule://prod/jobs/all/run", &b"to-all"[..])
        );
    }
    schedule
        .cancel("schedule://prod/jobs/all/run")
        .await
        .unwrap();

    schedule
        .create(
            "schedule://prod/jobs/one/run",
            "* * * * *",
            DeliveryMode::Single,
            "to-one",
        )
        .await
        .unwrap();
    broker.clock().advance(MINUTE);
    broker.clock().advance(MINUTE);
    schedule
        .cancel("schedule://prod/jobs/one/run")
        .await
        .unwrap();
    // A broadcast marker: whatever single fires each side got came first.
    schedule
        .create(
            "schedule://prod/jobs/marker/run",
            "* * * * *",
            DeliveryMode::Broadcast,
            "",
        )
        .await
        .unwrap();
    broker.clock().advance(MINUTE);
    let marker = "schedule://prod/jobs/marker/run";
    let got_a = fires_until(&mut sub_a, marker).await;
    let got_b = fires_until(&mut sub_b, marker).await;
    assert_eq!(
        (got_a.len(), got_b.len()),
        (1, 1),
        "two single fires rotate over the two subscriptions"
    );
    assert!(
        got_a
            .iter()
            .chain(&got_b)
            .all(|r| r == "schedule://prod/jobs/one/run")
    );
    assert!(sub_a.next().now_or_never().is_none());
    a.close().await;
    b.close().await;
    broker.shutdown().await;
}

#[cfg(feature = "serde")]
#[tokio::test]
async fn json_payloads_round_trip_through_a_fire() {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Job {
        name: String,
    }
    let broker = manual_broker().await;
    let client = connected(&broker.tcp_url()).await;
    let schedule = client.schedule();
    let mut sub = schedule.subscribe("schedule://**").await.unwrap();
    let job = Job {
        name: "report".into(),
    };
    schedule
        .create_json(
            "schedule://j/a/b/run",
            "* * * * *",
            DeliveryMode::Single,
            &job,
        )
        .await
        .unwrap();
    let listed = schedule.list(0, 10).await.unwrap();
    assert_eq!(listed.entries()[0].payload_json::<Job>().unwrap(), job);
    broker.clock().advance(MINUTE);
    assert_eq!(next_fire(&mut sub).await.json::<Job>().unwrap(), job);
    client.close().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn a_subscription_survives_a_cut_on_the_same_handle() {
    let broker = manual_broker().await;
    let proxy = Proxy::start(broker.tcp_addr()).await.unwrap();
    let client = connected(&proxy.tcp_url()).await;
    let admin = connected(&broker.tcp_url()).await;
    let mut events = client.events();
    let mut sub = client
        .schedule()
        .subscribe("schedule://prod/**")
        .await
        .unwrap();
    admin
        .schedule()
        .create(
            "schedule://prod/a/b/run",
            "* * * * *",
            DeliveryMode::Single,
            "x",
        )
        .await
        .unwrap();
    broker.clock().advance(MINUTE);
    assert_eq!(next_fire(&mut sub).await.route(), "schedule://prod/a/b/run");

    proxy.cut_all();
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(Event::Restored { .. }) = events.recv().await {
                return;
            }
        }
    })
    .await
    .expect("never restored");
    broker.clock().advance(MINUTE);
    assert_eq!(next_fire(&mut sub).await.route(), "schedule://prod/a/b/run");
    sub.unsubscribe().await.unwrap();
    client.close().await;
    admin.close().await;
    broker.shutdown().await;
}
