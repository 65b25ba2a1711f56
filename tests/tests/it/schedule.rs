//! The Schedule client against the embedded broker (or an external one),
//! over TCP and WebSocket; fires are driven by a broker on a manual clock,
//! so no test waits for a real minute (unless `FITZ_REALTIME=1` runs them
//! against an external broker).

use fitz::schedule::{DeliveryMode, ScheduleEntry, ScheduleFire, ScheduleSubscription};
use fitz::{ErrorKind, codes};
use fitz_tests::{
    Brokers, BrokersExt, Proxy, Timed, Transport, connected, connected_with, next_item, realm,
};
use futures_util::{FutureExt, StreamExt, TryStreamExt};

const FIRES: &str = "schedule fires happen on the broker's minute boundaries";

async fn next_fire(sub: &mut ScheduleSubscription) -> ScheduleFire {
    next_item(sub).await
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

/// Only the entries under `realm`.
fn ours<'a>(entries: &'a [ScheduleEntry], realm: &str) -> Vec<&'a ScheduleEntry> {
    let prefix = format!("schedule://{realm}/");
    entries
        .iter()
        .filter(|e| e.route().starts_with(&prefix))
        .collect()
}

#[tokio::test]
async fn create_list_cancel_and_batches_over_tcp_and_websocket() {
    let brokers = Brokers::start().await.unwrap();
    // Listing totals are per route family: against a shared broker every
    // test here writes alone.
    let _serial = brokers.exclusive().await;
    for t in Transport::BOTH {
        let url = brokers.anon_url(t);
        let client = connected(url).await;
        let schedule = client.schedule();
        let realm = realm("sched");
        let route = |n: u32| format!("schedule://{realm}/jobs/j{n}/run");
        // Other tests' schedules on a shared (external) broker; 0 embedded.
        let base = schedule.list(0, 0).await.unwrap().total();
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
        assert_eq!((page.total(), page.entries().len()), (base + 7, 2), "{url}");
        assert!(!page.is_last());
        let rest = schedule.list(page.next_offset(), 0).await.unwrap();
        assert!(rest.is_last());

        let all: Vec<ScheduleEntry> = schedule.list_all().try_collect().await.unwrap();
        let mut routes: Vec<&str> = ours(&all, &realm).iter().map(|e| e.route()).collect();
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
        let cursor_routes: Vec<&str> = ours(&by_cursor, &realm).iter().map(|e| e.route()).collect();
        assert_eq!(cursor_routes, want);
        let page = schedule.list_after(None, 3).await.unwrap();
        assert!(page.has_more());
        let after = schedule.list_after(page.next_cursor(), 1000).await.unwrap();
        assert_eq!(after.entries().len() as u64, base + 4);
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
        assert_eq!(schedule.list(0, 0).await.unwrap().total(), base + 6);
        // Both transports share the broker: leave it as it was for the next.
        for e in matched {
            schedule.cancel(e.route()).await.unwrap();
        }
        assert_eq!(schedule.list(0, 0).await.unwrap().total(), base);
        client.close().await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn invalid_input_is_rejected_typed() {
    let brokers = Brokers::start().await.unwrap();
    // Listing totals are per route family: against a shared broker every
    // test here writes alone.
    let _serial = brokers.exclusive().await;
    let client = connected(&brokers.anon_tcp).await;
    let schedule = client.schedule();
    let base = schedule.list(0, 0).await.unwrap().total();
    let v = realm("v");
    let route = &format!("schedule://{v}/jobs/j/run");
    // Local: nothing is sent.
    for bad in [
        format!("schedule://{v}/jobs/j"),
        format!("schedule://{v}/jobs/*/run"),
        format!("stream://{v}/jobs/j/run"),
    ] {
        let e = schedule
            .create(&bad, "* * * * *", DeliveryMode::Broadcast, "")
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
    assert_eq!(schedule.list(0, 0).await.unwrap().total(), base);
    client.close().await;
    brokers.shutdown().await;
}

/// The Schedule domain's own refusals travel in the uncoded envelope
/// (`[1][message]`, protocol §3.4): the SDK reports them as
/// [`ErrorKind::Broker`] without a code. A definition that fits its CREATE
/// record but not one LIST_V2 page is such a refusal.
#[tokio::test]
async fn the_domains_own_refusals_are_uncoded_broker_errors() {
    let brokers = Brokers::start().await.unwrap();
    // Listing totals are per route family: against a shared broker every
    // test here writes alone.
    let _serial = brokers.exclusive().await;
    for t in Transport::BOTH {
        let client = connected(brokers.anon_url(t)).await;
        let schedule = client.schedule();
        let route = format!("schedule://{}/jobs/big/run", realm("big"));
        let cron = "* * * * *";
        // Entry = 4 + route + 4 + cron + 1 + 4 + payload: exactly one record.
        let payload = vec![b'x'; 65_535 - 13 - route.len() - cron.len()];
        let e = schedule
            .create(&route, cron, DeliveryMode::Single, payload)
            .await
            .unwrap_err();
        assert_eq!((e.kind(), e.code()), (ErrorKind::Broker, None), "{e}");
        assert!(e.message().contains("too large"), "{e}");
        assert!(!e.is_retryable() && !e.maybe_applied());
        // Nothing was stored, and the session goes on.
        let none: Vec<ScheduleEntry> = schedule
            .list_matching(&route)
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert!(none.is_empty());
        schedule
            .create(&route, cron, DeliveryMode::Single, "small")
            .await
            .unwrap();
        schedule.cancel(&route).await.unwrap();
        client.close().await;
    }
    brokers.shutdown().await;
}

#[tokio::test]
async fn unauthorized_writes_are_7009() {
    let brokers = Brokers::start().await.unwrap();
    // Listing totals are per route family: against a shared broker every
    // test here writes alone.
    let _serial = brokers.exclusive().await;
    for t in Transport::BOTH {
        let url = brokers.auth_url(t);
        let token = brokers.scoped_token(&["schedule://**#read"]);
        let client = connected_with(url, token).await;
        let schedule = client.schedule();
        let listed = schedule.list(0, 10).await.unwrap();
        if !brokers.is_external() {
            assert_eq!(listed.total(), 0);
        }
        let route = format!("schedule://{}/b/c/d", realm("a"));
        for e in [
            schedule
                .create(&route, "* * * * *", DeliveryMode::Single, "")
                .await
                .unwrap_err(),
            schedule.cancel(&route).await.unwrap_err(),
            schedule
                .create_batch([ScheduleEntry::new(
                    &route,
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
    let Some(broker) = Timed::start(FIRES).await else {
        return;
    };
    let _serial = fitz_tests::exclusive().await;
    let a = connected(&broker.tcp).await;
    let b = connected(&broker.ws).await;
    let prod = realm("prod");
    let at = |job: &str| format!("schedule://{prod}/jobs/{job}/run");
    let pattern = format!("schedule://{prod}/jobs/*/run");
    let mut sub_a = a.schedule().subscribe(&pattern).await.unwrap();
    let mut sub_b = b.schedule().subscribe(&pattern).await.unwrap();
    let schedule = a.schedule();
    schedule
        .create(&at("all"), "* * * * *", DeliveryMode::Broadcast, "to-all")
        .await
        .unwrap();
    broker.clock.next_minute().await;
    for sub in [&mut sub_a, &mut sub_b] {
        let fire = next_fire(sub).await;
        assert_eq!(
            (fire.route(), &fire.payload()[..]),
            (at("all").as_str(), &b"to-all"[..])
        );
    }
    schedule.cancel(&at("all")).await.unwrap();

    schedule
        .create(&at("one"), "* * * * *", DeliveryMode::Single, "to-one")
        .await
        .unwrap();
    broker.clock.next_minute().await;
    broker.clock.next_minute().await;
    schedule.cancel(&at("one")).await.unwrap();
    // A broadcast marker: whatever single fires each side got came first.
    schedule
        .create(&at("marker"), "* * * * *", DeliveryMode::Broadcast, "")
        .await
        .unwrap();
    broker.clock.next_minute().await;
    let marker = at("marker");
    let got_a = fires_until(&mut sub_a, &marker).await;
    let got_b = fires_until(&mut sub_b, &marker).await;
    assert_eq!(
        (got_a.len(), got_b.len()),
        (1, 1),
        "two single fires rotate over the two subscriptions"
    );
    assert!(got_a.iter().chain(&got_b).all(|r| *r == at("one")));
    assert!(sub_a.next().now_or_never().is_none());
    schedule.cancel(&marker).await.unwrap();
    a.close().await;
    b.close().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn json_payloads_round_trip_through_a_fire() {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Job {
        name: String,
    }
    let Some(broker) = Timed::start(FIRES).await else {
        return;
    };
    let _serial = fitz_tests::exclusive().await;
    let client = connected(&broker.tcp).await;
    let schedule = client.schedule();
    let j = realm("j");
    let mut sub = schedule
        .subscribe(&format!("schedule://{j}/**"))
        .await
        .unwrap();
    let job = Job {
        name: "report".into(),
    };
    let route = format!("schedule://{j}/a/b/run");
    schedule
        .create_json(&route, "* * * * *", DeliveryMode::Single, &job)
        .await
        .unwrap();
    let listed: Vec<ScheduleEntry> = schedule
        .list_matching(&route)
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(listed[0].json::<Job>().unwrap(), job);
    broker.clock.next_minute().await;
    assert_eq!(next_fire(&mut sub).await.json::<Job>().unwrap(), job);
    schedule.cancel(&route).await.unwrap();
    client.close().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn a_subscription_survives_a_cut_on_the_same_handle() {
    let Some(broker) = Timed::start(FIRES).await else {
        return;
    };
    let _serial = fitz_tests::exclusive().await;
    let proxy = Proxy::start(broker.addr(Transport::Tcp)).await.unwrap();
    let client = connected(&proxy.tcp_url()).await;
    let admin = connected(&broker.tcp).await;
    let mut events = client.events();
    let prod = realm("prod");
    let mut sub = client
        .schedule()
        .subscribe(&format!("schedule://{prod}/**"))
        .await
        .unwrap();
    let route = format!("schedule://{prod}/a/b/run");
    admin
        .schedule()
        .create(&route, "* * * * *", DeliveryMode::Single, "x")
        .await
        .unwrap();
    broker.clock.next_minute().await;
    assert_eq!(next_fire(&mut sub).await.route(), route);

    proxy.cut_all();
    fitz_tests::restored(&mut events).await;
    broker.clock.next_minute().await;
    assert_eq!(next_fire(&mut sub).await.route(), route);
    sub.unsubscribe().await.unwrap();
    admin.schedule().cancel(&route).await.unwrap();
    client.close().await;
    admin.close().await;
    broker.shutdown().await;
}
