//! The queue layer: how fwdwatch services hand messages to each other.
//!
//! Services code against the object-safe [`Bus`] trait, never against lapin, so the
//! same service runs on RabbitMQ ([`RabbitBus`]) in production and on the in-memory
//! twin ([`MemoryBus`]) in the operator CLI's all-in-one mode and in tests. Both
//! follow the contract below; `shared/tests/bus_*.rs` runs the same contract tests
//! against each.
//!
//! # Topology
//!
//! Declared idempotently at start by whoever uses it ([`Bus::declare`]); every name
//! is derived from a namespace ([`Topology`], `fwdwatch` in production):
//!
//! | exchange | kind | routing keys | queue (quorum) |
//! |---|---|---|---|
//! | `{ns}.scan` | direct | `job` | `{ns}.scan.jobs` |
//! | `{ns}.findings` | topic | `detection.<signal>`, `summary` | `{ns}.notifier.findings` (bound `#`); others may bind their own |
//! | `{ns}.commands` | direct | `command` | `{ns}.actioner.commands` |
//! | `{ns}.events` | topic | `alert.<kind>`, `command.result`, `audit.<action>` | none of ours; [`Bus::declare_queue`] adds one |
//! | `{ns}.dead` | direct | the queue a message died in | `<queue>.dead` for every queue |
//!
//! Every queue is a durable quorum queue with `x-delivery-limit` (from
//! `amqp.delivery_limit`), `x-dead-letter-exchange = {ns}.dead` and
//! `x-dead-letter-routing-key = <queue>`, and has its `<queue>.dead` queue.
//!
//! # Publishing
//!
//! [`Bus::publish`] sends a persistent message (`delivery_mode` 2, `message_id`,
//! `type`, `content_type: application/json`, string headers) with the `mandatory`
//! flag and waits for the broker's confirm. A nack, or a message that no queue is
//! bound to receive (unroutable), is an error. Connection failures are retried
//! through lapin's automatic recovery a bounded number of times, so a message may
//! be published twice: consumers are idempotent (at-least-once delivery).
//! [`Bus::publish_all`] pipelines a batch and then waits for every confirm.
//! [`outgoing`] builds an [`Outgoing`] from a contract message and injects the
//! current span's W3C trace context (`traceparent`, `tracestate` headers).
//!
//! # Consuming
//!
//! [`Bus::subscribe`] yields [`Incoming`] deliveries, at most `prefetch` unsettled
//! at once. Each must be settled once: [`Incoming::ack`] (done),
//! [`Incoming::retry`] (requeue; counts towards the delivery limit),
//! [`Incoming::dead_letter`] (publish a copy to `{ns}.dead` with
//! `x-fwdwatch-dead-reason`, `x-fwdwatch-dead-queue`, `x-fwdwatch-dead-at`, then ack;
//! if that publish fails, reject without requeue so the queue's own dead-letter route
//! still takes it). A delivery that is never settled stays with its subscription;
//! when the subscription and all its deliveries are dropped (channel closed,
//! process died) it goes back to the queue with `redelivered = true` and
//! `delivery_count + 1`. After `delivery_limit` such returns the broker itself
//! dead-letters it (`x-first-death-reason: delivery_limit`).
//!
//! Services do not drive subscriptions by hand: [`run_consumer`] decodes each body
//! into a contract type, calls a [`Handler`] up to `prefetch` at a time inside a
//! `process <queue>` span whose parent is the publisher's trace context, acks on
//! success, requeues after a pause on [`HandleError::Retry`] (dead-lettering when
//! the limit is near), dead-letters on [`HandleError::Reject`] and on bodies that do
//! not decode, and on shutdown stops consuming, lets in-flight work finish and ack,
//! then returns.
//!
//! # Reading a queue in tests
//!
//! `subscribe("<queue>.dead", n)` works on both implementations; [`Bus::queue_depth`]
//! counts ready messages.

mod consumer;
mod memory;
mod rabbit;
mod topology;
mod trace;

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;

pub use consumer::{ConsumerOptions, DeliveryInfo, HandleError, Handler, run_consumer};
pub use memory::MemoryBus;
pub use rabbit::RabbitBus;
pub use topology::{
    Binding, DEFAULT_DELIVERY_LIMIT, ExchangeKind, ExchangeSpec, QueueSpec, ROUTE_COMMAND,
    ROUTE_COMMAND_RESULT, ROUTE_JOB, ROUTE_SUMMARY, Topology, alert_route, audit_route,
    detection_route,
};
pub use trace::{
    extract_trace_context, inject_trace_context, outgoing, record_trace_id, set_parent_from_headers,
};

/// The content type of every fwdwatch message.
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// Why a message was dead-lettered by fwdwatch (a human-readable sentence).
pub const HEADER_DEAD_REASON: &str = "x-fwdwatch-dead-reason";
/// The queue a dead-lettered message was taken from.
pub const HEADER_DEAD_QUEUE: &str = "x-fwdwatch-dead-queue";
/// When it was dead-lettered (RFC 3339, UTC).
pub const HEADER_DEAD_AT: &str = "x-fwdwatch-dead-at";
/// How many times it had been delivered when it was dead-lettered.
pub const HEADER_DEAD_DELIVERIES: &str = "x-fwdwatch-dead-deliveries";
/// Set by quorum queues on redeliveries: how many times the message was returned.
pub const HEADER_DELIVERY_COUNT: &str = "x-delivery-count";
/// Set by the broker when it dead-letters on its own (`delivery_limit`, `rejected`).
pub const HEADER_FIRST_DEATH_REASON: &str = "x-first-death-reason";

/// A message ready to publish. Build it with [`outgoing`] for contract messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    /// The AMQP `message_id`: the message's idempotency key.
    pub message_id: String,
    /// The AMQP `type` property: the contract's type tag (e.g. `scan_job`).
    pub message_type: String,
    /// The JSON body.
    pub body: Vec<u8>,
    /// String headers (trace context, dead-letter reason, …).
    pub headers: BTreeMap<String, String>,
}

/// A delivery from a queue. Settle it exactly once: [`ack`](Incoming::ack),
/// [`retry`](Incoming::retry) or [`dead_letter`](Incoming::dead_letter).
pub struct Incoming {
    pub body: Vec<u8>,
    /// The message headers rendered as strings; values that are not scalars
    /// (RabbitMQ's `x-death` list, nested tables) are left out.
    pub headers: BTreeMap<String, String>,
    pub message_id: Option<String>,
    pub message_type: Option<String>,
    /// The exchange it was published to (for a dead letter: the dead exchange).
    pub exchange: String,
    pub routing_key: String,
    /// The broker's hint that this message was delivered before.
    pub redelivered: bool,
    /// Times the message went back to the queue before this delivery
    /// (`x-delivery-count`; 0 on the first delivery).
    pub delivery_count: u32,
    /// The queue it was consumed from.
    pub queue: String,
    /// Implementation-specific handle that settles the delivery.
    acker: Box<dyn Settle>,
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("queue", &self.queue)
            .field("exchange", &self.exchange)
            .field("routing_key", &self.routing_key)
            .field("message_id", &self.message_id)
            .field("message_type", &self.message_type)
            .field("redelivered", &self.redelivered)
            .field("delivery_count", &self.delivery_count)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl Incoming {
    /// Done: the broker forgets the message.
    pub async fn ack(mut self) -> Result<(), BusError> {
        self.acker.ack().await
    }

    /// Transient failure: back to the queue (reject with requeue), to be delivered
    /// again with `delivery_count + 1`. Counts towards the delivery limit, after which
    /// the broker dead-letters it (reason `delivery_limit`, without ours).
    pub async fn retry(mut self) -> Result<(), BusError> {
        self.acker.requeue().await
    }

    /// Permanent failure: a copy goes to `<queue>.dead` carrying `reason`, then the
    /// original is acked. If that copy cannot be published, the original is rejected
    /// without requeue and the queue's dead-letter route takes it (without our reason).
    pub async fn dead_letter(mut self, reason: &str) -> Result<(), BusError> {
        crate::telemetry::metrics().messages_dead_lettered.add(
            1,
            &crate::telemetry::metrics::attrs([("queue", self.queue.clone())]),
        );
        let mut headers = self.headers.clone();
        // Broker-managed: the dead queue counts its own deliveries.
        headers.remove(HEADER_DELIVERY_COUNT);
        headers.insert(
            HEADER_DEAD_REASON.into(),
            truncate(reason, MAX_REASON_BYTES),
        );
        headers.insert(HEADER_DEAD_QUEUE.into(), self.queue.clone());
        headers.insert(
            HEADER_DEAD_AT.into(),
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        );
        headers.insert(
            HEADER_DEAD_DELIVERIES.into(),
            (u64::from(self.delivery_count) + 1).to_string(),
        );
        let copy = DeadLetter {
            queue: self.queue.clone(),
            body: std::mem::take(&mut self.body),
            headers,
            message_id: self.message_id.clone(),
            message_type: self.message_type.clone(),
        };
        self.acker.dead_letter(copy).await
    }

    /// What a handler may know about the delivery besides the decoded body.
    pub fn info(&self) -> DeliveryInfo {
        DeliveryInfo {
            queue: self.queue.clone(),
            exchange: self.exchange.clone(),
            routing_key: self.routing_key.clone(),
            message_id: self.message_id.clone(),
            redelivered: self.redelivered,
            delivery_count: self.delivery_count,
            headers: self.headers.clone(),
        }
    }
}

/// The copy [`Incoming::dead_letter`] publishes to the dead exchange.
pub(crate) struct DeadLetter {
    /// The queue the original came from: the routing key on the dead exchange.
    pub(crate) queue: String,
    pub(crate) body: Vec<u8>,
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) message_id: Option<String>,
    pub(crate) message_type: Option<String>,
}

/// Settles one delivery; each bus implementation provides its own.
#[async_trait]
pub(crate) trait Settle: Send + Sync {
    async fn ack(&mut self) -> Result<(), BusError>;
    async fn requeue(&mut self) -> Result<(), BusError>;
    /// Publishes `copy` to the queue's dead exchange (confirmed), then acks; on a
    /// failed publish, rejects without requeue instead.
    async fn dead_letter(&mut self, copy: DeadLetter) -> Result<(), BusError>;
}

/// Dead-letter reasons are headers: keep them well below frame limits.
const MAX_REASON_BYTES: usize = 2048;

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The queue layer every service codes against (object-safe: `Arc<dyn Bus>`).
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Declares the topology's exchanges, work queues and their dead-letter queues.
    /// Idempotent; fails if an existing queue was declared with other arguments.
    async fn declare(&self, topology: &Topology) -> Result<(), BusError>;

    /// Declares one more queue (quorum, delivery limit, `<name>.dead`) and its
    /// bindings. The exchanges must exist: call [`Bus::declare`] first.
    async fn declare_queue(&self, queue: &QueueSpec) -> Result<(), BusError>;

    /// Publishes one persistent message and waits for the broker's confirm; a nack
    /// or an unroutable message is an error. Retries through connection recovery a
    /// bounded number of times.
    async fn publish(&self, message: Outgoing) -> Result<(), BusError>;

    /// Publishes all messages back to back, then waits for every confirm (the
    /// scanner's detections and summary of one tenant). Same guarantees as
    /// [`Bus::publish`] for each message; on error some may have been published.
    async fn publish_all(&self, messages: Vec<Outgoing>) -> Result<(), BusError>;

    /// Starts consuming `queue` with manual acks, at most `prefetch` unsettled.
    async fn subscribe(
        &self,
        queue: &str,
        prefetch: u16,
    ) -> Result<Box<dyn Subscription>, BusError>;

    /// Messages ready for delivery in `queue` (not counting unacked ones).
    async fn queue_depth(&self, queue: &str) -> Result<u64, BusError>;

    /// Whether the bus can currently talk to its broker.
    async fn health(&self) -> Result<(), BusError>;
}

/// A stream of deliveries from one queue.
#[async_trait]
pub trait Subscription: Send {
    /// The next delivery; `None` once cancelled (or the broker cancelled the
    /// consumer); `Some(Err)` when the subscription broke beyond recovery.
    async fn next(&mut self) -> Option<Result<Incoming, BusError>>;

    /// Stops new deliveries. Deliveries already handed out can still be settled;
    /// unsettled ones return to the queue once the subscription and they are dropped.
    async fn cancel(&mut self);
}

/// What went wrong in the queue layer.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The broker's TCP port did not answer.
    #[error(
        "cannot reach RabbitMQ at {url} (is it running? start it with `rabbitmq-server -detached`, then `rabbitmqctl await_startup`): {reason}"
    )]
    Unreachable { url: String, reason: String },
    /// The connection is down: lapin is recovering it, or gave up (then the
    /// process should exit and be restarted).
    #[error("the connection to RabbitMQ at {url} is not open ({state})")]
    Disconnected { url: String, state: String },
    /// The broker answered but the AMQP handshake failed (credentials, vhost, TLS).
    #[error(
        "RabbitMQ at {url} refused the connection (check amqp.url credentials and vhost): {reason}"
    )]
    Handshake { url: String, reason: String },
    /// `amqp.url` is not an AMQP URL (the URL itself is not repeated: it holds the password).
    #[error("amqp.url is not a valid AMQP URL (expected amqp://user:pass@host:5672/%2f): {0}")]
    InvalidUrl(String),
    /// An exchange, queue, routing key, message id or argument cannot be used.
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    /// A broker operation failed.
    #[error("{operation}: {source}")]
    Amqp {
        operation: String,
        #[source]
        source: lapin::Error,
    },
    /// The broker refused responsibility for a published message.
    #[error(
        "RabbitMQ nacked message {message_id} to exchange {exchange:?} (routing key {routing_key:?})"
    )]
    Nacked {
        exchange: String,
        routing_key: String,
        message_id: String,
    },
    /// No queue is bound to receive the message (`mandatory` returned it).
    #[error(
        "message {message_id} to exchange {exchange:?} with routing key {routing_key:?} is unroutable: no queue is bound for it"
    )]
    Unroutable {
        exchange: String,
        routing_key: String,
        message_id: String,
    },
    /// An exchange or queue does not exist.
    #[error("{what} {name:?} does not exist (declare the topology first)")]
    NotFound { what: &'static str, name: String },
    /// A delivery can no longer be settled (its channel closed or it was already
    /// settled); the broker redelivers it.
    #[error(
        "delivery from {queue} can no longer be settled ({reason}); the broker will redeliver it"
    )]
    Unsettled { queue: String, reason: String },
    /// The broker cancelled our consumer (queue deleted) while we were not shutting down.
    #[error("{operation}: RabbitMQ did not answer within {after:?}")]
    TimedOut {
        operation: String,
        after: std::time::Duration,
    },

    #[error("the subscription to {queue} ended unexpectedly (was the queue deleted?)")]
    SubscriptionEnded { queue: String },
}

impl BusError {
    pub(crate) fn amqp(operation: impl Into<String>, source: lapin::Error) -> Self {
        BusError::Amqp {
            operation: operation.into(),
            source,
        }
    }
}
