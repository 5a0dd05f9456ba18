//! W3C trace context in message headers, so one trace follows a tenant's scan from
//! the enumerator through the scanner and notifier to the actioner.
//!
//! The publisher side ([`outgoing`], [`inject_trace_context`]) writes `traceparent`
//! and `tracestate` from the current `tracing` span (through tracing-opentelemetry);
//! the consumer side ([`extract_trace_context`], [`set_parent_from_headers`]) reads
//! them back and makes the processing span a child of the publisher's span.
//! The propagator is used directly rather than through the global one, so the
//! headers are written the same way whether or not telemetry was initialised; with
//! no OpenTelemetry layer installed the context is empty and nothing is written.

use std::collections::BTreeMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::Outgoing;
use crate::contracts::{Message, encode};

/// Builds the message to publish: the encoded contract message, its id and type
/// tag, and the current span's trace context in the headers.
pub fn outgoing<M: Message>(exchange: &str, routing_key: &str, message: &M) -> Outgoing {
    let mut headers = BTreeMap::new();
    inject_trace_context(&mut headers);
    Outgoing {
        exchange: exchange.to_owned(),
        routing_key: routing_key.to_owned(),
        message_id: message.message_id(),
        message_type: M::TYPE.to_owned(),
        body: encode(message),
        headers,
    }
}

/// Writes the current span's trace context (`traceparent`, `tracestate`) into `headers`.
pub fn inject_trace_context(headers: &mut BTreeMap<String, String>) {
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
}

/// Reads the trace context a publisher put in `headers` (empty if none).
pub fn extract_trace_context(headers: &BTreeMap<String, String>) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Makes `span` a child of the trace context carried by `headers`. Call it before
/// the span is first entered. A missing or invalid context leaves the span a root.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &BTreeMap<String, String>) {
    let context = extract_trace_context(headers);
    if let Err(error) = span.set_parent(context) {
        // Only fails when the span is disabled or already started: tracing is
        // best-effort and must never stop a message from being processed.
        tracing::debug!(%error, "Cannot attach the publisher's trace context.");
    }
}

/// Records the span's OpenTelemetry trace id in its `trace_id` field (declared
/// `tracing::field::Empty`), so every log line inside it names the trace — JSON
/// logs list the enclosing spans' fields. A no-op without a trace context.
pub fn record_trace_id(span: &tracing::Span) {
    use opentelemetry::trace::TraceContextExt as _;
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.record("trace_id", span_context.trace_id().to_string());
    }
}

struct HeaderInjector<'a>(&'a mut BTreeMap<String, String>);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct HeaderExtractor<'a>(&'a BTreeMap<String, String>);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt;

    #[test]
    fn round_trips_a_traceparent() {
        let mut headers = BTreeMap::new();
        headers.insert(
            "traceparent".to_owned(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
        );
        let context = extract_trace_context(&headers);
        let span = context.span();
        let span_context = span.span_context();
        assert!(span_context.is_valid());
        assert_eq!(
            span_context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(span_context.is_remote());
    }

    #[test]
    fn no_span_no_headers() {
        let mut headers = BTreeMap::new();
        inject_trace_context(&mut headers);
        assert!(headers.is_empty(), "{headers:?}");
    }
}
