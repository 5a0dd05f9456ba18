//! One trace per tenant: the W3C context rides in message headers, so the
//! enumerator's publish, the scanner's tenant scan (with its Microsoft calls) and
//! the notifier's handling of the findings are one trace, parent to child.
//!
//! Runs enumerator → scanner → notifier over the in-memory bus with an in-memory
//! span exporter and checks the links. Its own test binary: it installs the
//! global tracing subscriber.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fwdwatch_shared::bus::{Bus, MemoryBus, Topology};
use fwdwatch_shared::config::Settings;
use fwdwatch_shared::m365::M365Client;
use fwdwatch_shared::shutdown::CancellationToken;
use fwdwatch_shared::store::{MemoryStore, Store};
use opentelemetry::trace::{SpanId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt;

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_scan_is_one_trace_from_enumerator_to_notifier() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("fwdwatch-test")));
    tracing::subscriber::set_global_default(subscriber).expect("first subscriber in this binary");

    let mut args = m365_sim::SimArgs {
        tenants: 2,
        mailboxes: 4,
        ..Default::default()
    };
    args.faults.latency_ms = 5;
    let sim = m365_sim::start(args.clone(), "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("simulator");
    let mut settings = Settings::load_from(None, Vec::<(String, String)>::new()).expect("defaults");
    fwdwatch_cli::fleet::point_at(&mut settings, &sim.base_url, &args);
    settings.security.link_secret =
        secrecy::SecretString::from("trace-test-link-secret-0123456789".to_owned());

    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    bus.declare(&Topology::from_settings(&settings.amqp))
        .await
        .expect("topology");
    let client = M365Client::new(&settings.m365).expect("client");
    let stop = CancellationToken::new();
    let scanner = {
        let (bus, client, settings, stop) =
            (bus.clone(), client.clone(), settings.clone(), stop.clone());
        tokio::spawn(async move { fwdwatch_scanner::run_with(bus, client, &settings, stop).await })
    };
    let notifier = fwdwatch_notifier::Notifier::new(bus.clone(), store.clone(), settings.clone())
        .expect("notifier");
    let stats = notifier.stats();
    let notifier = {
        let stop = stop.clone();
        tokio::spawn(async move { notifier.run(stop).await })
    };

    let report = fwdwatch_enumerator::run_once(bus.clone(), Some(&client), &settings)
        .await
        .expect("enumerator run");
    let tenants = report.tenants.len() as u64;
    assert!(tenants >= 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while stats.snapshot().summaries < tenants {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pipeline did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    let _ = scanner.await;
    let _ = notifier.await;
    let _ = provider.force_flush();
    sim.shutdown().await;

    let spans = exporter.get_finished_spans().expect("spans");
    let by_id: HashMap<SpanId, &SpanData> = spans
        .iter()
        .map(|s| (s.span_context.span_id(), s))
        .collect();
    assert!(
        spans.iter().any(|s| s.name == "enumerate"),
        "the enumerator's run span"
    );

    let topology = Topology::from_settings(&settings.amqp);
    let scans: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name == format!("process {}", topology.scan_jobs_queue()))
        .collect();
    assert_eq!(
        scans.len() as u64,
        tenants,
        "one scanner span per tenant job"
    );
    let mut traces = std::collections::HashSet::new();
    for scan in &scans {
        let publish = by_id
            .get(&scan.parent_span_id)
            .expect("the scan's parent span was exported");
        assert_eq!(
            publish.name,
            format!("publish {}", topology.scan_exchange()),
            "parent: the enumerator's publish"
        );
        assert_eq!(
            publish.parent_span_id,
            SpanId::INVALID,
            "each tenant's publish is a trace root"
        );
        assert_eq!(
            scan.span_context.trace_id(),
            publish.span_context.trace_id()
        );
        traces.insert(scan.span_context.trace_id());
        // Microsoft calls are children (or grandchildren) of the tenant scan.
        let children = spans
            .iter()
            .filter(|s| s.parent_span_id == scan.span_context.span_id())
            .count();
        assert!(children > 0, "the tenant scan has child spans");
    }
    assert_eq!(traces.len() as u64, tenants, "one trace per tenant");
    // Each Microsoft call is a client span under its tenant's scan.
    let descends_from_scan = |span: &SpanData| {
        let mut cursor = by_id.get(&span.parent_span_id).copied();
        while let Some(s) = cursor {
            if scans
                .iter()
                .any(|scan| scan.span_context.span_id() == s.span_context.span_id())
            {
                return true;
            }
            cursor = by_id.get(&s.parent_span_id).copied();
        }
        false
    };
    for scan in &scans {
        let calls = spans
            .iter()
            .filter(|s| {
                s.name == "ExoBatch" && s.span_context.trace_id() == scan.span_context.trace_id()
            })
            .filter(|s| descends_from_scan(s))
            .count();
        assert!(
            calls >= 2,
            "the scan's Exchange batches are traced ({calls})"
        );
    }

    let notified: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name == format!("process {}", topology.notifier_findings_queue()))
        .collect();
    assert!(!notified.is_empty(), "the notifier's handling is traced");
    for span in &notified {
        assert!(
            traces.contains(&span.span_context.trace_id()),
            "findings continue their tenant's trace"
        );
        // Its parent is inside a scanner span of this trace.
        let mut cursor = by_id.get(&span.parent_span_id).copied();
        let mut inside_scan = false;
        while let Some(s) = cursor {
            if scans
                .iter()
                .any(|scan| scan.span_context.span_id() == s.span_context.span_id())
            {
                inside_scan = true;
                break;
            }
            cursor = by_id.get(&s.parent_span_id).copied();
        }
        assert!(
            inside_scan,
            "findings are handled as children of a tenant scan ({:?})",
            attribute(span, "messaging.rabbitmq.routing_key")
        );
    }
}
