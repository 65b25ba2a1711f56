//! The README's "Testing your service" example, verbatim between the
//! markers, so it is compiled and run; `the_readme_shows_this_test` fails
//! when the two drift apart.

// README: begin
use std::time::{Duration, SystemTime};

use fitz::{Client, Event, StaticToken};
use fitz_broker::{Broker, Clock};
use fitz_testkit::Proxy;
use futures_util::StreamExt;

#[tokio::test]
async fn my_service_keeps_its_feed_across_a_cut() -> Result<(), Box<dyn std::error::Error>> {
    // An embedded broker (loopback, anonymous, in memory) on a manual clock.
    let clock = Clock::manual(SystemTime::now());
    let broker = Broker::builder().clock(clock.clone()).start().await?;

    // The service under test talks to it in memory: no socket, no port.
    let service = fitz::embedded::client(&broker, StaticToken::anonymous()).build()?;
    service.connect().await?;

    // A consumer connects over TCP through a fault-injection proxy.
    let proxy = Proxy::start(broker.tcp_addr()).await?;
    let consumer = Client::anonymous(proxy.tcp_url())?;
    consumer.connect().await?;
    let mut deploys = consumer.notice().subscribe("notice://prod/shop/*").await?;

    // Fault: cut every proxied connection. The consumer reconnects and its
    // subscription is restored before it reports `Connected` again.
    let mut events = consumer.events();
    proxy.cut_all();
    while let Some(event) = events.recv().await {
        if let Event::Connected {
            reconnected: true, ..
        } = event
        {
            break;
        }
    }
    service
        .notice()
        .publish("notice://prod/shop/deploys", "v2")
        .await?;
    let notice = deploys.next().await.expect("delivered")?;
    assert_eq!(&notice.payload()[..], b"v2");

    // Time: the service's 30 s lease expires when the test moves the clock.
    let (leases, leader) = (service.lease(), "lease://prod/shop/leader");
    let _lease = leases
        .acquire(leader, "svc-1", Duration::from_secs(30))
        .await?;
    assert!(leases.query(leader).await?.is_held());
    clock.advance(Duration::from_secs(31));
    assert!(!leases.query(leader).await?.is_held());

    consumer.close().await;
    service.close().await;
    broker.shutdown().await;
    Ok(())
}
// README: end

/// The README's code block under "Testing your service" is exactly the
/// code between this file's markers.
#[test]
fn the_readme_shows_this_test() {
    let this = include_str!("guide.rs");
    let begin = "// README: begin\n";
    let start = this.find(begin).expect("begin marker") + begin.len();
    let end = this.find("// README: end").expect("end marker");
    let code = &this[start..end];
    let readme = include_str!("../../../README.md");
    let section = readme
        .split("## Testing your service")
        .nth(1)
        .expect("a \"Testing your service\" section in README.md");
    let block = section
        .split("```rust")
        .nth(1)
        .and_then(|b| b.split_once('\n'))
        .and_then(|(_, b)| b.split("```").next())
        .expect("a rust code block in the section");
    assert_eq!(
        block, code,
        "README.md's \"Testing your service\" block must equal tests/tests/it/guide.rs between the markers"
    );
}
