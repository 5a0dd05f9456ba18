//! The product's metrics, defined once, exported two ways.
//!
//! Instruments are OpenTelemetry instruments on the global meter provider that
//! [`super::init`] installs: a Prometheus reader (scraped at `/metrics`, see
//! [`router`]) and, when `telemetry.otlp_endpoint` is set, an OTLP exporter.
//! Names follow OpenTelemetry conventions (dotted, unit in the metadata);
//! Prometheus shows them with underscores and a `_total` suffix on counters.
//! Before `init` (unit tests) the instruments are no-ops.

use std::sync::OnceLock;

use axum::{Router, http::header, response::IntoResponse, routing::get};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter};

/// Every instrument a fwdwatch service records to.
pub struct Metrics {
    /// Tenants whose scan finished, by `outcome` (`complete` | `partial` | `failed`).
    pub tenants_scanned: Counter<u64>,
    /// Mailboxes whose forwarding and inbox rules were read.
    pub mailboxes_checked: Counter<u64>,
    /// Rules read, by `kind` (`inbox` | `transport`).
    pub rules_checked: Counter<u64>,
    /// Detections published, by `signal` and `severity`.
    pub detections: Counter<u64>,
    /// Wall time of one tenant's scan, seconds.
    pub scan_duration: Histogram<f64>,
    /// HTTP calls to Microsoft 365, by `api` (`token` | `graph` | `exchange`) and
    /// `outcome` (`ok` | `throttled` | `error`).
    pub m365_calls: Counter<u64>,
    /// Alerts delivered, by `kind` (`new` | `reminder` | `resolved` | `campaign`) and `sink`.
    pub alerts_sent: Counter<u64>,
    /// Findings not alerted, by `reason` (`approved` | `duplicate` | `not_due`).
    pub alerts_suppressed: Counter<u64>,
    /// Alerts parked on the dead-letter queue after every sink attempt failed.
    pub alerts_parked: Counter<u64>,
    /// Commands finished, by `action` and `outcome`.
    pub commands_executed: Counter<u64>,
    /// Ready messages waiting in a queue, by `queue` (consumer lag).
    pub queue_depth: Gauge<u64>,
    /// Messages dead-lettered by a consumer, by `queue`.
    pub messages_dead_lettered: Counter<u64>,
}

impl Metrics {
    fn new(meter: &Meter) -> Self {
        Self {
            tenants_scanned: meter
                .u64_counter("fwdwatch.tenants.scanned")
                .with_description("Tenant scans finished, by outcome")
                .build(),
            mailboxes_checked: meter
                .u64_counter("fwdwatch.mailboxes.checked")
                .with_description("Mailboxes whose forwarding and inbox rules were read")
                .build(),
            rules_checked: meter
                .u64_counter("fwdwatch.rules.checked")
                .with_description("Inbox and transport rules read")
                .build(),
            detections: meter
                .u64_counter("fwdwatch.detections")
                .with_description("External forwards detected, by signal and severity")
                .build(),
            scan_duration: meter
                .f64_histogram("fwdwatch.scan.duration")
                .with_unit("s")
                .with_description("Wall time of one tenant scan")
                .with_boundaries(vec![0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0])
                .build(),
            m365_calls: meter
                .u64_counter("fwdwatch.m365.calls")
                .with_description("HTTP calls to Microsoft 365, by api and outcome")
                .build(),
            alerts_sent: meter
                .u64_counter("fwdwatch.alerts.sent")
                .with_description("Alerts delivered, by kind and sink")
                .build(),
            alerts_suppressed: meter
                .u64_counter("fwdwatch.alerts.suppressed")
                .with_description("Findings not alerted, by reason")
                .build(),
            alerts_parked: meter
                .u64_counter("fwdwatch.alerts.parked")
                .with_description(
                    "Alerts parked on the dead-letter queue after every attempt failed",
                )
                .build(),
            commands_executed: meter
                .u64_counter("fwdwatch.commands.executed")
                .with_description(
                    "Approve / remove / revoke commands finished, by action and outcome",
                )
                .build(),
            queue_depth: meter
                .u64_gauge("messaging.queue.depth")
                .with_description("Ready messages waiting in a queue (consumer lag)")
                .build(),
            messages_dead_lettered: meter
                .u64_counter("fwdwatch.messages.dead_lettered")
                .with_description("Messages a consumer dead-lettered, by queue")
                .build(),
        }
    }
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process's instruments (created on first use from the global meter).
pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(|| Metrics::new(&opentelemetry::global::meter("fwdwatch")))
}

/// Shorthand for an attribute list.
pub fn attrs<const N: usize>(pairs: [(&'static str, String); N]) -> [KeyValue; N] {
    pairs.map(|(k, v)| KeyValue::new(k, v))
}

pub(super) static REGISTRY: OnceLock<prometheus::Registry> = OnceLock::new();

/// Renders the Prometheus text exposition of every metric recorded so far.
pub fn render() -> String {
    use prometheus::Encoder as _;
    let Some(registry) = REGISTRY.get() else {
        return String::new();
    };
    let mut out = Vec::new();
    if let Err(error) = prometheus::TextEncoder::new().encode(&registry.gather(), &mut out) {
        tracing::warn!(%error, "Encoding metrics failed.");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// `GET /metrics` (Prometheus) and `GET /healthz` (process is up), for services to
/// serve on `telemetry.metrics_listen` or merge into their own router.
pub fn router() -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    render(),
                )
                    .into_response()
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
}

/// Serves [`router`] on `listen` until `shutdown`; logs and returns on bind errors.
pub async fn serve(
    listen: &str,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("telemetry.metrics_listen {listen}: {e}"))?;
    tracing::info!(address = %listen, "Serving /metrics and /healthz.");
    axum::serve(listener, router())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}
