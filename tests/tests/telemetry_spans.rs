//! Telemetry spans (`fitz/src/telemetry.rs`) captured by a `tracing` layer
//! after a scripted run against the embedded broker.
//!
//! Its own test binary with one test and a global subscriber: `tracing`
//! caches each callsite's interest process-wide, and a thread-local
//! subscriber (`set_default`) racing with other threads that hit the same
//! callsites first can find them cached as disabled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fitz::kv::TxMode;
use fitz::rpc::{HandlerError, RpcRequest};
use fitz_tests::{Brokers, BrokersExt, Transport, anon_builder, realm, within};
use futures_util::StreamExt;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

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
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
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
