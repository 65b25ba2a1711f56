//! Telemetry (`fitz/src/telemetry.rs`): metrics reported to a `metrics`
//! recorder and spans to a `tracing` subscriber after scripted runs against
//! the embedded broker.
//!
//! Both are installed per thread (`metrics::set_default_local_recorder`,
//! `tracing::subscriber::set_default`), and each test runs on a
//! current-thread runtime (the `#[tokio::test]` default): the client's actor
//! and the workers' tasks run on the test's thread and report there, while
//! the other tests of this binary report to nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fitz::kv::{Durability, TxMode};
use fitz::rpc::{HandlerError, RpcRequest};
use fitz::telemetry::names;
use fitz::{Event, Overflow, SubscriptionOptions};
use fitz_tests::{Brokers, BrokersExt, Transport, anon_builder, realm, wait_event, within};
use futures_util::StreamExt;
use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

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

// ----- a subscriber that keeps every span and event -----

#[derive(Debug, Clone, Default)]
struct SpanRec {
    name: &'static str,
    fields: HashMap<String, String>,
}

#[derive(Debug, Clone)]
struct EventRec {
    target: String,
    span: Option<&'static str>,
    span_fields: HashMap<String, String>,
    fields: HashMap<String, String>,
}

#[derive(Default, Clone)]
struct Captured {
    spans: Arc<Mutex<Vec<(u64, SpanRec)>>>,
    events: Arc<Mutex<Vec<EventRec>>>,
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").replace('"', ""),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl Captured {
    fn span(&self, id: &Id) -> Option<SpanRec> {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .find(|(i, _)| *i == id.into_u64())
            .map(|(_, s)| s.clone())
    }

    fn find_span(&self, pred: impl Fn(&SpanRec) -> bool) -> Option<SpanRec> {
        let spans = self.spans.lock().unwrap();
        spans.iter().map(|(_, s)| s).find(|s| pred(s)).cloned()
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Captured {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut rec = SpanRec {
            name: attrs.metadata().name(),
            fields: HashMap::new(),
        };
        attrs.record(&mut Fields(&mut rec.fields));
        self.spans.lock().unwrap().push((id.into_u64(), rec));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut spans = self.spans.lock().unwrap();
        // Ids are reused after a span closes: the latest one is the live one.
        if let Some((_, rec)) = spans.iter_mut().rev().find(|(i, _)| *i == id.into_u64()) {
            values.record(&mut Fields(&mut rec.fields));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        let current = ctx.event_span(event).map(|s| s.id());
        let span = current.as_ref().and_then(|id| self.span(id));
        self.events.lock().unwrap().push(EventRec {
            target: event.metadata().target().to_owned(),
            span: span.as_ref().map(|s| s.name),
            span_fields: span.map(|s| s.fields).unwrap_or_default(),
            fields,
        });
    }
}

#[tokio::test]
async fn spans_for_requests_and_worker_deliveries() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::registry().with(captured.clone());
    let _default = tracing::subscriber::set_default(subscriber);
    let brokers = Brokers::start().await.unwrap();
    let url = brokers.anon_url(Transport::Tcp);
    // Every request is "slow": the warning is logged for each.
    let client = anon_builder(url)
        .slow_request_threshold(Duration::ZERO)
        .build()
        .unwrap();
    client.connect().await.unwrap();
    let r = realm("spans");

    // A KV get: its span names the domain, operation, route, correlation id
    // and outcome.
    let route = format!("kv://{r}/a/res");
    let mut tx = client.kv().begin(&route, TxMode::ReadWrite).await.unwrap();
    tx.put("k", "v").await.unwrap();
    tx.get("k").await.unwrap();
    let get = captured
        .find_span(|s| {
            s.name == "fitz.request"
                && s.fields.get("messaging.operation.name").map(String::as_str) == Some("get")
        })
        .expect("a span for the get");
    let f = &get.fields;
    assert_eq!(f["messaging.system"], "fitz");
    assert_eq!(f["fitz.domain"], "kv");
    assert_eq!(f["messaging.destination.name"], route);
    assert_eq!(f["fitz.outcome"], "ok");
    assert!(
        f["messaging.message.conversation_id"]
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert!(!f.contains_key("error.type"), "{f:?}");

    // An error reply: outcome and code recorded on the span.
    let e = tx.insert("k", "again").await.unwrap_err();
    let insert = captured
        .find_span(|s| {
            s.fields.get("messaging.operation.name").map(String::as_str) == Some("insert")
        })
        .expect("a span for the insert");
    assert_eq!(insert.fields["fitz.outcome"], "error");
    assert_eq!(insert.fields["error.type"], e.code().unwrap().to_string());
    tx.rollback().await.unwrap();

    // The slow-request log: domain, operation, route, duration.
    {
        let events = captured.events.lock().unwrap();
        let slow = events
            .iter()
            .find(|e| e.target == "fitz::slow" && e.fields["operation"] == "get")
            .expect("a slow-request warning");
        assert_eq!(slow.fields["domain"], "kv");
        assert_eq!(slow.fields["route"], route);
        assert!(slow.fields.contains_key("duration_ms"));
    }

    // An RPC worker's handler runs inside a span for its delivery.
    let rpc_route = format!("rpc://{r}/svc/hello");
    let worker = client
        .rpc()
        .serve(&format!("rpc://{r}/svc/*"), 2, |_req: RpcRequest| async {
            tracing::info!(target: "handler", "rpc handler");
            Ok::<_, HandlerError>("hi")
        })
        .await
        .unwrap();
    let mut call = client.rpc().call(&rpc_route, "").await.unwrap();
    within("the rpc answer", call.next())
        .await
        .unwrap()
        .unwrap();
    worker.shutdown().await.unwrap();

    // A queue worker's too.
    let queue_route = format!("queue://{r}/jobs/q");
    client.queue().enqueue(&queue_route, "job").await.unwrap();
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
    let qworker = client
        .queue()
        .worker(&queue_route, 1, move |_msg| {
            let done = done_tx.clone();
            async move {
                tracing::info!(target: "handler", "queue handler");
                let _ = done.send(());
                Ok::<_, std::convert::Infallible>(())
            }
        })
        .await
        .unwrap();
    within("the queue handler", done.recv()).await.unwrap();
    qworker.shutdown().await;

    let events = captured.events.lock().unwrap().clone();
    let in_handler = |what: &str| {
        events
            .iter()
            .find(|e| e.target == "handler" && e.fields["message"] == what)
            .unwrap_or_else(|| panic!("{what}: no event"))
            .clone()
    };
    let rpc = in_handler("rpc handler");
    assert_eq!(rpc.span, Some("fitz.process"), "{rpc:?}");
    assert_eq!(rpc.span_fields["fitz.domain"], "rpc");
    assert_eq!(rpc.span_fields["messaging.destination.name"], rpc_route);
    assert_eq!(rpc.span_fields["messaging.operation.type"], "process");
    let queue = in_handler("queue handler");
    assert_eq!(queue.span, Some("fitz.process"), "{queue:?}");
    assert_eq!(queue.span_fields["fitz.domain"], "queue");
    assert_eq!(queue.span_fields["messaging.destination.name"], queue_route);
    assert!(queue.span_fields.contains_key("messaging.message.id"));

    client.close().await;
}
