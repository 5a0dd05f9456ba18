//! Logs and traces for every fwdwatch process, set up in one place.
//!
//! `tracing` is the only API the code uses. Output is human-readable or one JSON
//! object per line (`telemetry.log_format`), filtered by `telemetry.log_filter`
//! (`RUST_LOG` wins when set). When `telemetry.otlp_endpoint` is configured, spans
//! are also exported over OTLP/HTTP; without it no exporter exists, so tests and
//! local runs stay quiet. The W3C trace-context propagator is always installed so
//! `traceparent` headers flow through the bus either way.
//!
//! Metrics live in [`metrics`]: OpenTelemetry instruments exported to Prometheus
//! (`/metrics`) always, and over OTLP when an endpoint is configured.

pub mod metrics;

pub use metrics::{metrics, serve as serve_metrics};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::{LogFormat, TelemetrySettings};

/// Keeps the exporter alive; flushes pending spans when dropped (end of `main`).
#[must_use = "dropping the guard shuts telemetry down"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("telemetry: flushing spans at shutdown failed: {error}");
        }
        if let Some(provider) = self.meter_provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("telemetry: flushing metrics at shutdown failed: {error}");
        }
    }
}

/// Installs the global subscriber for `service` (e.g. `"scanner"`).
pub fn init(settings: &TelemetrySettings, service: &str) -> anyhow::Result<TelemetryGuard> {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.log_filter))
        .map_err(|e| anyhow::anyhow!("telemetry.log_filter {:?}: {e}", settings.log_filter))?;

    let fmt_layer = match settings.log_format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            // The enclosing spans carry tenant, run and trace id: list them all.
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };

    let (provider, tracer) = tracer_provider(settings, service)?;
    let otel_layer = tracing_opentelemetry::layer().with_tracer(tracer);

    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .map_err(|e| anyhow::anyhow!("telemetry already initialised: {e}"))?;
    let meter_provider = init_metrics(settings, service)?;
    Ok(TelemetryGuard {
        provider: Some(provider),
        meter_provider: Some(meter_provider),
    })
}

/// Like [`init`], for an interactive command whose terminal is for people
/// (`fwdwatch up`): every event `telemetry.log_filter` lets through is written to
/// `log_file` (in `telemetry.log_format`), and only warnings and errors also reach
/// `terminal`, one short line each.
pub fn init_with_log_file<W>(
    settings: &TelemetrySettings,
    service: &str,
    log_file: std::fs::File,
    terminal: W,
) -> anyhow::Result<TelemetryGuard>
where
    W: for<'writer> tracing_subscriber::fmt::MakeWriter<'writer> + Send + Sync + 'static,
{
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let filter = || {
        EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(&settings.log_filter))
            .map_err(|e| anyhow::anyhow!("telemetry.log_filter {:?}: {e}", settings.log_filter))
    };
    let log_file = std::sync::Arc::new(log_file);
    let file_layer = match settings.log_format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(false)
            .with_writer(log_file)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(log_file)
            .boxed(),
    };
    let terminal_layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .event_format(
            tracing_subscriber::fmt::format()
                .with_target(false)
                .without_time()
                .compact(),
        )
        .with_writer(terminal);
    let (provider, tracer) = tracer_provider(settings, service)?;
    let otel_layer = tracing_opentelemetry::layer().with_tracer(tracer);

    tracing_subscriber::registry()
        .with(file_layer.with_filter(filter()?))
        .with(terminal_layer.with_filter(tracing_subscriber::filter::LevelFilter::WARN))
        .with(otel_layer.with_filter(filter()?))
        .try_init()
        .map_err(|e| anyhow::anyhow!("telemetry already initialised: {e}"))?;
    let meter_provider = init_metrics(settings, service)?;
    Ok(TelemetryGuard {
        provider: Some(provider),
        meter_provider: Some(meter_provider),
    })
}

/// The tracer provider: exporting over OTLP/HTTP when `telemetry.otlp_endpoint` is
/// set, else local only.
fn tracer_provider(
    settings: &TelemetrySettings,
    service: &str,
) -> anyhow::Result<(SdkTracerProvider, opentelemetry_sdk::trace::Tracer)> {
    let provider = match settings.otlp_endpoint.as_deref() {
        Some(endpoint) if !endpoint.is_empty() => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
                .build()
                .map_err(|e| anyhow::anyhow!("telemetry.otlp_endpoint {endpoint:?}: {e}"))?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name(format!("fwdwatch-{service}"))
                        .build(),
                )
                .build();
            opentelemetry::global::set_tracer_provider(provider.clone());
            provider
        }
        // No exporter: spans still get OpenTelemetry ids, so `traceparent` flows
        // through the bus and every log line of a scan carries its trace id.
        _ => SdkTracerProvider::builder().build(),
    };
    let tracer = provider.tracer(format!("fwdwatch-{service}"));
    Ok((provider, tracer))
}

/// Installs the global meter provider: Prometheus always, OTLP when configured.
fn init_metrics(settings: &TelemetrySettings, service: &str) -> anyhow::Result<SdkMeterProvider> {
    let registry = metrics::REGISTRY
        .get_or_init(prometheus::Registry::new)
        .clone();
    let prometheus_reader = opentelemetry_prometheus::exporter()
        .with_registry(registry)
        .build()
        .map_err(|e| anyhow::anyhow!("prometheus exporter: {e}"))?;
    let mut builder = SdkMeterProvider::builder()
        .with_reader(prometheus_reader)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(format!("fwdwatch-{service}"))
                .build(),
        );
    if let Some(endpoint) = settings.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) {
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_endpoint(format!("{}/v1/metrics", endpoint.trim_end_matches('/')))
            .build()
            .map_err(|e| anyhow::anyhow!("telemetry.otlp_endpoint {endpoint:?}: {e}"))?;
        builder = builder.with_periodic_exporter(exporter);
    }
    let provider = builder.build();
    opentelemetry::global::set_meter_provider(provider.clone());
    Ok(provider)
}
