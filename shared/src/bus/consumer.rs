//! The consumer loop every service runs: decode, handle, settle — concurrently up
//! to the prefetch, traced, and stopping cleanly on shutdown.
//!
//! A service implements [`Handler`] for its message type and calls [`run_consumer`];
//! everything about acknowledgements, retries, poison messages and trace context
//! lives here once, so the four services behave the same way.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::{Bus, BusError, Incoming, set_parent_from_headers};
use crate::config::AmqpSettings;
use crate::contracts::{Message, decode};

/// Why a handler did not finish its work.
#[derive(Debug)]
pub enum HandleError {
    /// Transient (Microsoft throttling, Redis down, a 5xx): requeue after
    /// [`ConsumerOptions::retry_delay`]. On the delivery that reaches the delivery
    /// limit the message is dead-lettered with this error as the reason instead.
    Retry(anyhow::Error),
    /// Permanent (the message can never succeed): dead-letter now with this reason.
    Reject(anyhow::Error),
}

impl std::fmt::Display for HandleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandleError::Retry(error) => write!(f, "transient failure: {error:#}"),
            HandleError::Reject(error) => write!(f, "permanent failure: {error:#}"),
        }
    }
}

/// What a handler knows about a delivery besides its decoded body.
#[derive(Debug, Clone)]
pub struct DeliveryInfo {
    pub queue: String,
    pub exchange: String,
    pub routing_key: String,
    pub message_id: Option<String>,
    /// The broker's hint that the message was delivered before (idempotency!).
    pub redelivered: bool,
    /// Times the message went back to the queue before this delivery.
    pub delivery_count: u32,
    pub headers: BTreeMap<String, String>,
}

/// Processes one decoded message. Must be idempotent: delivery is at-least-once.
#[async_trait]
pub trait Handler<M: Message>: Send + Sync + 'static {
    async fn handle(&self, message: M, delivery: &DeliveryInfo) -> Result<(), HandleError>;
}

/// How [`run_consumer`] consumes a queue.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Deliveries handled at once (and unacknowledged at the broker).
    pub prefetch: u16,
    /// The queue's delivery limit: on the delivery numbered `delivery_limit`, a
    /// `Retry` dead-letters (with our reason) instead of requeueing, one step
    /// before the broker would dead-letter it without a reason.
    pub delivery_limit: u32,
    /// Pause before a requeue, so a failing message doesn't hot-loop.
    pub retry_delay: Duration,
}

impl ConsumerOptions {
    /// `prefetch` and `delivery_limit` from the settings, a 1 s retry delay.
    pub fn from_settings(settings: &AmqpSettings) -> Self {
        Self {
            prefetch: settings.prefetch,
            delivery_limit: settings.delivery_limit,
            retry_delay: Duration::from_secs(1),
        }
    }
}

/// Consumes `queue` until `shutdown` is cancelled.
///
/// Each delivery is decoded as `M` and given to `handler` in its own task (at most
/// `prefetch` at once), inside a `process <queue>` span that continues the
/// publisher's trace. Handler `Ok` → ack; `Retry` → requeue after a pause (or
/// dead-letter at the delivery limit); `Reject`, a panic at the limit, or a body
/// that does not decode → dead-letter with the reason.
///
/// On shutdown it cancels the subscription, waits for in-flight handlers to finish
/// and settle, and returns `Ok`. If the subscription fails beyond lapin's recovery
/// (or the broker cancels it) it still lets in-flight work finish, then returns
/// `Err`: the service exits non-zero, its supervisor restarts it, and anything
/// unacknowledged is redelivered.
pub async fn run_consumer<M: Message, H: Handler<M>>(
    bus: Arc<dyn Bus>,
    queue: &str,
    options: ConsumerOptions,
    handler: Arc<H>,
    shutdown: CancellationToken,
) -> Result<(), BusError> {
    let mut subscription = bus.subscribe(queue, options.prefetch).await?;
    let tracker = TaskTracker::new();
    tracing::info!(queue, prefetch = options.prefetch, "Consuming.");
    // Ends with the loop below, whether by shutdown or by a failed subscription.
    let depth_stop = shutdown.child_token();
    tracker.spawn(report_depth(
        bus.clone(),
        queue.to_owned(),
        depth_stop.clone(),
    ));

    let outcome = loop {
        tokio::select! {
            // Shutdown wins over a ready delivery: once asked to stop, take nothing new.
            biased;
            () = shutdown.cancelled() => break Ok(()),
            next = subscription.next() => match next {
                Some(Ok(incoming)) => {
                    // The span is made here, not inside the task: a spawned task does not
                    // inherit the caller's subscriber context, a span keeps its own.
                    let span = process_span(&incoming);
                    let task = settle::<M, H>(incoming, handler.clone(), options.clone(), shutdown.clone());
                    tracker.spawn(task.instrument(span));
                }
                Some(Err(error)) => break Err(error),
                None if shutdown.is_cancelled() => break Ok(()),
                None => break Err(BusError::SubscriptionEnded { queue: queue.to_owned() }),
            },
        }
    };

    // Stop deliveries first, then let what we hold finish and settle on the still
    // open channel; only then drop the subscription (which closes the channel and
    // returns anything left unsettled to the queue).
    subscription.cancel().await;
    depth_stop.cancel();
    tracker.close();
    tracker.wait().await;
    drop(subscription);
    match &outcome {
        Ok(()) => tracing::info!(queue, "Stopped consuming."),
        Err(error) => tracing::error!(queue, %error, "Consumer failed."),
    }
    outcome
}

/// Records the queue's ready depth (consumer lag) every few seconds until shutdown.
async fn report_depth(bus: Arc<dyn Bus>, queue: String, shutdown: CancellationToken) {
    let attrs = crate::telemetry::metrics::attrs([("queue", queue.clone())]);
    loop {
        if let Ok(depth) = bus.queue_depth(&queue).await {
            crate::telemetry::metrics()
                .queue_depth
                .record(depth, &attrs);
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(15)) => {}
        }
    }
}

/// The `process <queue>` span of one delivery, child of the publisher's trace context.
fn process_span(incoming: &Incoming) -> tracing::Span {
    let span = tracing::info_span!(
        "process",
        otel.name = %format!("process {}", incoming.queue),
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.operation = "process",
        messaging.destination = %incoming.queue,
        messaging.message.id = incoming.message_id.as_deref().unwrap_or(""),
        messaging.rabbitmq.routing_key = %incoming.routing_key,
        messaging.delivery_count = incoming.delivery_count,
        trace_id = tracing::field::Empty,
    );
    set_parent_from_headers(&span, &incoming.headers);
    super::trace::record_trace_id(&span);
    span
}

/// Decodes, handles and settles one delivery.
async fn settle<M: Message, H: Handler<M>>(
    incoming: Incoming,
    handler: Arc<H>,
    options: ConsumerOptions,
    shutdown: CancellationToken,
) {
    let message = match decode::<M>(&incoming.body) {
        Ok(message) => message,
        Err(error) => {
            tracing::warn!(%error, queue = %incoming.queue, "Undecodable message; dead-lettering it.");
            let reason = format!("undecodable message: {error}");
            if let Err(error) = incoming.dead_letter(&reason).await {
                tracing::warn!(%error, "Could not dead-letter an undecodable message.");
            }
            return;
        }
    };

    let info = incoming.info();
    // A panicking handler is a bug, but it must not leave the delivery unsettled
    // (stuck until the channel closes) nor kill the consumer: treat it as a retry,
    // so it ends in the dead-letter queue if it keeps panicking.
    let result = AssertUnwindSafe(handler.handle(message, &info))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            Err(HandleError::Retry(anyhow::anyhow!(
                "handler panicked: {what}"
            )))
        });

    let settled = match result {
        Ok(()) => incoming.ack().await,
        Err(HandleError::Reject(error)) => {
            tracing::warn!(error = %format!("{error:#}"), "Message rejected; dead-lettering it.");
            incoming.dead_letter(&format!("{error:#}")).await
        }
        Err(HandleError::Retry(error)) => {
            let deliveries = u64::from(info.delivery_count) + 1;
            if deliveries >= u64::from(options.delivery_limit) {
                tracing::warn!(
                    error = %format!("{error:#}"),
                    deliveries,
                    "Still failing at the delivery limit; dead-lettering it."
                );
                let reason = format!("gave up after {deliveries} deliveries: {error:#}");
                incoming.dead_letter(&reason).await
            } else {
                tracing::info!(error = %format!("{error:#}"), deliveries, "Transient failure; will retry.");
                // On shutdown, requeue at once rather than hold the process up.
                tokio::select! {
                    () = tokio::time::sleep(options.retry_delay) => {}
                    () = shutdown.cancelled() => {}
                }
                incoming.retry().await
            }
        }
    };
    if let Err(error) = settled {
        // Nothing is lost: an unsettled delivery goes back to the queue when its
        // channel closes, and handlers are idempotent.
        tracing::warn!(%error, "Could not settle a delivery; it will be redelivered.");
    }
}
