//! Telemetry metrics (`fitz/src/telemetry.rs`) reported to a `metrics`
//! recorder after a scripted run against the embedded broker.
//!
//! The recorder is installed for this thread only
//! (`metrics::set_default_local_recorder`) and the test runs on a
//! current-thread runtime (the `#[tokio::test]` default): the client's actor
//! runs on the test's thread and reports there, while the other tests of
//! this binary report to nothing. The spans are tested in their own binary
//! (`tests/tests/telemetry_spans.rs`): `tracing` caches callsite interest
//! process-wide, which races with thread-local subscribers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fitz::kv::{Durability, TxMode};
use fitz::telemetry::names;
use fitz::{Event, Overflow, SubscriptionOptions};
use fitz_tests::{Brokers, BrokersExt, Transport, anon_builder, realm, wait_event};
use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

// ----- a recorder that keeps every value -----

#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

/// Counters and gauges as atomics (`metrics` implements the handle traits
/// for `AtomicU64`), histograms as every sample.
#[derive(Default)]
struct TestRecorder {
    counters: Mutex<HashMap<Key, Arc<AtomicU64>>>,
    gauges: Mutex<HashMap<Key, Arc<AtomicU64>>>,
    histograms: Mutex<HashMap<Key, Arc<Samples>>>,
}

fn matches(key: &Key, name: &str, labels: &[(&str, &str)]) -> bool {
    key.name() == name
        && key.labels().count() == labels.len()
        && labels
            .iter()
            .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
}

impl TestRecorder {
    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let map = self.counters.lock().unwrap();
        map.iter()
            .find(|(k, _)| matches(k, name, labels))
            .map_or(0, |(_, v)| v.load(Ordering::SeqCst))
    }

    fn gauge(&self, name: &str) -> Option<f64> {
        let map = self.gauges.lock().unwrap();
        map.iter()
            .find(|(k, _)| matches(k, name, &[]))
            .map(|(_, v)| f64::from_bits(v.load(Ordering::SeqCst)))
    }

    fn samples(&self, name: &str, labels: &[(&str, &str)]) -> usize {
        let map = self.histograms.lock().unwrap();
        map.iter()
            .find(|(k, _)| matches(k, name, labels))
            .map_or(0, |(_, v)| v.0.lock().unwrap().len())
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut map = self.counters.lock().unwrap();
        Counter::from_arc(map.entry(key.clone()).or_default().clone())
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let mut map = self.gauges.lock().unwrap();
        Gauge::from_arc(map.entry(key.clone()).or_default().clone())
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let mut map = self.histograms.lock().unwrap();
        Histogram::from_arc(map.entry(key.clone()).or_default().clone())
    }
}

#[tokio::test]
async fn metrics_after_a_scripted_run() {
    let recorder = TestRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let brokers = Brokers::start().await.unwrap();
    let (proxy, url) = brokers.anon_proxy(Transport::Tcp).await;
    let client = anon_builder(&url).build().unwrap();
    client.connect().await.unwrap();
    assert_eq!(recorder.gauge(names::CONNECTION_STATE), Some(4.0));
    let r = realm("telemetry");

    // N KV gets → N samples labelled kv/get/ok.
    const N: usize = 7;
    let route = format!("kv://{r}/a/res");
    let mut tx = client.kv().begin(&route, TxMode::ReadWrite).await.unwrap();
    tx.put("k", "v").await.unwrap();
    for _ in 0..N {
        tx.get("k").await.unwrap();
    }
    tx.commit(Durability::Buffered).await.unwrap();
    let get_ok = [("domain", "kv"), ("operation", "get"), ("outcome", "ok")];
    assert_eq!(recorder.samples(names::REQUEST_DURATION, &get_ok), N);
    let begin_ok = [("domain", "kv"), ("operation", "begin"), ("outcome", "ok")];
    assert_eq!(recorder.samples(names::REQUEST_DURATION, &begin_ok), 1);

    // An error reply → the errors counter by its code, and an error sample.
    let mut tx = client.kv().begin(&route, TxMode::ReadWrite).await.unwrap();
    let e = tx.insert("k", "again").await.unwrap_err();
    let code = e.code().expect("a coded broker error").to_string();
    tx.rollback().await.unwrap();
    let insert = [("domain", "kv"), ("operation", "insert"), ("code", &code)];
    assert_eq!(recorder.counter(names::REQUEST_ERRORS, &insert), 1);
    let insert_err = [
        ("domain", "kv"),
        ("operation", "insert"),
        ("outcome", "error"),
    ];
    assert_eq!(recorder.samples(names::REQUEST_DURATION, &insert_err), 1);

    // A subscription → active 1; a mailbox of one overflowing → dropped.
    let mut events = client.events();
    let pattern = format!("notice://{r}/a/*");
    let options = SubscriptionOptions {
        buffer: 1,
        overflow: Overflow::DropOldest,
    };
    let sub = client
        .notice()
        .subscribe_with(&pattern, options)
        .await
        .unwrap();
    assert_eq!(recorder.gauge(names::SUBSCRIPTIONS_ACTIVE), Some(1.0));
    for n in 0..3 {
        let route = format!("notice://{r}/a/n");
        client
            .notice()
            .publish(&route, format!("{n}"))
            .await
            .unwrap();
    }
    wait_event(&mut events, |e| matches!(e, Event::SlowConsumer { .. })).await;
    assert!(recorder.counter(names::MAILBOX_DROPPED, &[]) >= 1);
    assert_eq!(recorder.gauge(names::MAILBOX_BUFFERED), Some(1.0));
    // Answered once the actor let go of the mailbox: its item leaves the
    // buffered gauge with it.
    sub.unsubscribe().await.unwrap();
    assert_eq!(recorder.gauge(names::SUBSCRIPTIONS_ACTIVE), Some(0.0));
    assert_eq!(recorder.gauge(names::MAILBOX_BUFFERED), Some(0.0));

    // A reconnect → the reconnects counter.
    assert_eq!(recorder.counter(names::RECONNECTS, &[]), 0);
    proxy.cut_all();
    wait_event(&mut events, |e| {
        matches!(
            e,
            Event::Connected {
                reconnected: true,
                ..
            }
        )
    })
    .await;
    assert_eq!(recorder.counter(names::RECONNECTS, &[]), 1);
    assert_eq!(recorder.gauge(names::CONNECTION_STATE), Some(4.0));
    assert_eq!(recorder.gauge(names::IN_FLIGHT), Some(0.0));

    client.close().await;
    assert_eq!(recorder.gauge(names::CONNECTION_STATE), Some(6.0));
}
