//! Schedule acceptance criteria through the SDK on the broker's manual clock
//! (docs/ACCEPTANCE.md): AC-SCHEDULE-003 (a fire reaches a wildcard
//! subscription with the exact route and the job's payload), AC-SCHEDULE-006
//! (`* * * * *` fires at every minute boundary, none missed, none doubled)
//! and AC-SCHEDULE-004 (a cancelled job fires no more).
//!
//! "No more" is proved by order: fires reach the subscription in the order
//! the broker made them, so when the next fire after a boundary is another
//! job's, the cancelled one did not fire there.

use fitz::schedule::DeliveryMode;
use fitz_tests::{Timed, connected, next_item, realm};

const MINUTES: usize = 3;

#[tokio::test]
async fn an_every_minute_job_fires_at_each_boundary_until_cancelled() {
    let Some(broker) =
        Timed::start("schedule fires happen on the broker's minute boundaries").await
    else {
        return;
    };
    let _serial = fitz_tests::exclusive().await;
    let client = connected(&broker.tcp).await;
    let prod = realm("prod");
    let job = format!("schedule://{prod}/app/reminders/send");
    let marker = format!("schedule://{prod}/app/reminders/marker");
    let schedule = client.schedule();
    let mut sub = schedule
        .subscribe(&format!("schedule://{prod}/app/reminders/*"))
        .await
        .unwrap();
    schedule
        .create(&job, "* * * * *", DeliveryMode::Broadcast, "remind")
        .await
        .unwrap();
    for minute in 0..MINUTES {
        broker.clock.next_minute().await;
        let fire: fitz::schedule::ScheduleFire = next_item(&mut sub).await;
        assert_eq!(
            (fire.route(), &fire.payload()[..]),
            (job.as_str(), &b"remind"[..]),
            "minute {minute}"
        );
    }
    // Cancelled: a boundary passes with no fire, then a marker job's fire
    // is the next thing the subscription sees.
    schedule.cancel(&job).await.unwrap();
    broker.clock.next_minute().await;
    schedule
        .create(&marker, "* * * * *", DeliveryMode::Broadcast, "")
        .await
        .unwrap();
    broker.clock.next_minute().await;
    let fire: fitz::schedule::ScheduleFire = next_item(&mut sub).await;
    assert_eq!(
        fire.route(),
        marker,
        "a doubled or cancelled fire came before the marker"
    );
    schedule.cancel(&marker).await.unwrap();
    client.close().await;
    broker.shutdown().await;
}
