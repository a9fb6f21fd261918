//! One create-job as an operator's collector sees it: the three services export to a real
//! OTLP/gRPC receiver (the collector protocol, served here on port 0), and the request,
//! the events it caused and the webhooks they were delivered as form one trace of our
//! own spans, joined by real parent ids.

use std::collections::{BTreeSet, HashMap};

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use plangrep_test_support::receiver::Receiver;
use serde_json::json;

use plangrep_test_support::otlp as collector;

use crate::helpers::{Options, PATIENCE, TestApp, expect_status};

/// An exported span with the `service.name` of the resource it came under.
struct Exported {
    service: String,
    span: Span,
}

impl Exported {
    fn attribute(&self, key: &str) -> Option<String> {
        string_attribute(&self.span.attributes, key)
    }

    fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    fn describe(&self) -> String {
        format!(
            "{}:{}({})",
            self.service,
            self.span.name,
            self.attribute("target").unwrap_or_default()
        )
    }
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(AnyValue::StringValue(text)) => Some(text.clone()),
            Some(AnyValue::IntValue(number)) => Some(number.to_string()),
            _ => None,
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn one_create_job_is_one_trace_of_our_spans_joined_across_the_three_services() {
    // The span layer must be in the process's subscriber before anything logs.
    plangrep_telemetry::init_for_tests();
    let (endpoint, mut received) = collector::start().await;
    let app =
        TestApp::spawn_with(Options::default().with("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint))
            .await;
    let mut receiver = Receiver::start().await;
    let (_org, key) = app.create_customer().await;
    let project = app.create_ready_project(&key, "Traced").await;

    let created = expect_status(
        app.post_job(&key, &project, json!({ "webhookUrl": receiver.url() }))
            .await,
        202,
    )
    .await;
    let job = created["job"]["id"].as_str().unwrap().to_owned();
    // `provisioning`, then `awaiting_uploads` (the pipeline's change, same trace).
    receiver.next(PATIENCE).await;
    receiver.next(PATIENCE).await;
    // Stopping flushes every service's export.
    app.stop().await;

    let mut spans = Vec::new();
    while let Ok(request) = received.try_recv() {
        for resource_spans in request.resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|r| string_attribute(&r.attributes, "service.name"))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(Exported {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
    }

    // Nothing of h2, tonic or hyper, whatever RUST_LOG says.
    let internals: Vec<String> = spans
        .iter()
        .filter(|s| {
            !s.attribute("target")
                .is_some_and(|t| t.starts_with("plangrep_"))
                || ["poll_ready", "FramedRead::poll_next", "try_reclaim_frame"]
                    .contains(&s.span.name.as_str())
        })
        .map(Exported::describe)
        .collect();
    assert!(internals.is_empty(), "exported internals: {internals:?}");

    // The trace the gateway started for the create request.
    let path = format!("/api/open/v1/projects/{project}/jobs");
    let gateway_request = spans
        .iter()
        .find(|s| {
            s.service == "api-gateway"
                && s.span.name == "POST"
                && s.attribute("url.path").as_deref() == Some(path.as_str())
        })
        .unwrap_or_else(|| {
            panic!(
                "no gateway span for POST {path} among {:?}",
                spans.iter().map(Exported::describe).collect::<Vec<_>>()
            )
        });
    let trace_id = gateway_request.trace_id();
    let trace: Vec<&Exported> = spans.iter().filter(|s| s.trace_id() == trace_id).collect();
    let names: Vec<String> = trace.iter().map(|s| s.describe()).collect();

    // Every span of the job's events and deliveries is in that one trace.
    for s in &spans {
        let about_job = s.attribute("job_id").as_deref() == Some(job.as_str())
            || s.span.name == "JobOrchestrator/CreateJob"
            || s.span.name.ends_with(".JobOrchestrator/CreateJob");
        assert!(
            !about_job || s.trace_id() == trace_id,
            "{} is in another trace",
            s.describe()
        );
    }

    // Real parent ids: the gateway's request is the only root, every other span's parent
    // was exported too.
    let by_id: HashMap<Vec<u8>, &Exported> =
        trace.iter().map(|s| (s.span.span_id.clone(), *s)).collect();
    for s in &trace {
        if s.span.span_id == gateway_request.span.span_id {
            assert!(
                s.span.parent_span_id.is_empty(),
                "the request span is the root"
            );
        } else {
            assert!(
                by_id.contains_key(&s.span.parent_span_id),
                "{} has a parent nobody exported; trace: {names:?}",
                s.describe()
            );
        }
    }

    // The chain from a webhook attempt up to the request crosses every hop.
    let attempt = trace
        .iter()
        .find(|s| s.service == "webhook-dispatcher" && s.span.name == "webhook attempt")
        .unwrap_or_else(|| panic!("no webhook attempt in the trace: {names:?}"));
    let mut chain = vec![attempt.describe()];
    let mut hops = vec![(attempt.service.clone(), attempt.span.name.clone())];
    let mut at = *attempt;
    while let Some(parent) = by_id.get(&at.span.parent_span_id) {
        chain.push(parent.describe());
        hops.push((parent.service.clone(), parent.span.name.clone()));
        at = parent;
    }
    hops.reverse();
    let kinds: Vec<&str> = hops
        .iter()
        .map(|(service, name)| match (service.as_str(), name.as_str()) {
            ("api-gateway", "POST") => "gateway request",
            ("api-gateway", n) if n.ends_with("/CreateJob") => "grpc client",
            ("job-orchestrator", n) if n.ends_with("/CreateJob") => "orchestrator server",
            ("job-orchestrator", "outbox append") => "outbox write",
            ("job-orchestrator", n) if n.starts_with("publish ") => "relay publish",
            ("job-orchestrator", n) if n.starts_with("consume ") => "pipeline stage",
            ("webhook-dispatcher", n) if n.starts_with("consume ") => "dispatcher consume",
            ("webhook-dispatcher", "webhook attempt") => "webhook attempt",
            _ => "",
        })
        .filter(|kind| !kind.is_empty())
        .collect();
    let expected_order = [
        "gateway request",
        "grpc client",
        "orchestrator server",
        "outbox write",
        "relay publish",
        "dispatcher consume",
        "webhook attempt",
    ];
    let mut expected = expected_order.iter().peekable();
    for kind in &kinds {
        if expected.peek() == Some(&kind) {
            expected.next();
        }
    }
    assert!(
        expected.peek().is_none(),
        "the attempt's ancestry misses a hop: {kinds:?}; chain: {chain:?}"
    );
    // The second webhook (`awaiting_uploads`) went through the pipeline stage.
    assert!(
        trace
            .iter()
            .any(|s| s.service == "job-orchestrator" && s.span.name.starts_with("consume ")),
        "no pipeline stage in the trace: {names:?}"
    );

    if std::env::var_os("TEST_LOG").is_some() {
        eprintln!(
            "{} spans exported in all, {} in the create's trace: {names:#?}\nattempt chain: {chain:#?}",
            spans.len(),
            trace.len()
        );
    }
    let services: BTreeSet<&str> = trace.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(
        services,
        BTreeSet::from(["api-gateway", "job-orchestrator", "webhook-dispatcher"])
    );
    assert!(
        (8..100).contains(&trace.len()),
        "tens of spans, not hundreds: {} in {names:?}",
        trace.len()
    );
}
