//! Getting a decided alert out — to every sink that should have it, to the audit
//! stream, or to the dead-letter queue — without ever losing it.
//!
//! The lifecycle writes each alert into the outbox (`Keys::alert_outbox`, indexed by
//! `Keys::alert_outbox_due`) in the same atomic step that decides it. The notifier
//! that decided it delivers it at once ([`Dispatcher::deliver`]) and deletes it;
//! if that notifier dies first, or a sink failed and the dead-letter queue was
//! unreachable too, the entry stays, and after `notifier.outbox_lease` any
//! notifier's sweeper ([`Dispatcher::sweep`]) claims it and finishes the job. Each
//! entry records which sinks already took it, so a retry only redoes what is missing.
//!
//! Per sink: up to `notifier.sink_attempts` tries with exponential back-off and
//! jitter (honouring `Retry-After`); errors that cannot heal (400, 404, Slack's
//! `channel_not_found`) stop early. After the last try the alert is parked: its
//! `AlertEvent` is published to `{ns}.dead` with routing key `{ns}.notifier.alerts`
//! (queue `{ns}.notifier.alerts.dead`) and headers naming the sink and the reason.
//! Once every sink took or parked it, the `AlertEvent` goes to `{ns}.events`
//! (`alert.<kind>`) and the entry is deleted.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use fwdwatch_shared::bus::{
    Bus, BusError, HEADER_DEAD_AT, HEADER_DEAD_QUEUE, HEADER_DEAD_REASON, QueueSpec, Topology,
    alert_route, outgoing,
};
use fwdwatch_shared::contracts::AlertEvent;
use fwdwatch_shared::store::{Keys, Store, StoreError};
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::alert::{ActionSigner, PendingAlert, stamp};
use crate::lifecycle::{LifecycleError, Tracker, epoch};
use crate::sinks::{Sink, SinkError};
use crate::stats::Stats;

/// Header naming the sink that gave up on a parked alert.
pub const HEADER_SINK: &str = "x-fwdwatch-sink";

/// Longest pause between two attempts at a sink.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest `Retry-After` honoured (a receiver asking for more is treated as down).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Writes (or rewrites) an outbox entry, to be picked up by a sweeper after `due`.
pub async fn save(
    store: &dyn Store,
    keys: &Keys,
    alert: &PendingAlert,
    due: DateTime<Utc>,
) -> Result<(), StoreError> {
    let json = serde_json::to_string(alert).map_err(|e| StoreError::InvalidArgument {
        op: "outbox save",
        key: keys.alert_outbox(),
        reason: e.to_string(),
    })?;
    // The entry before its index: an index member without an entry is pruned by the
    // sweeper; an entry without an index member would never be retried.
    store
        .hash_set(&keys.alert_outbox(), &alert.alert_id, &json)
        .await?;
    store
        .zadd(&keys.alert_outbox_due(), &alert.alert_id, epoch(due))
        .await
}

/// Deletes a delivered entry.
pub async fn remove(store: &dyn Store, keys: &Keys, alert_id: &str) -> Result<(), StoreError> {
    store.hash_delete(&keys.alert_outbox(), alert_id).await?;
    store.zrem(&keys.alert_outbox_due(), alert_id).await?;
    Ok(())
}

/// Every undelivered alert (for status and tests).
pub async fn pending(store: &dyn Store, keys: &Keys) -> Result<Vec<PendingAlert>, StoreError> {
    let all = store.hash_get_all(&keys.alert_outbox()).await?;
    Ok(all
        .values()
        .filter_map(|json| serde_json::from_str(json).ok())
        .collect())
}

/// How a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Every routed sink took it or it was parked; the event is published; the
    /// outbox entry is gone.
    Complete {
        sinks: Vec<String>,
        parked: Vec<String>,
    },
    /// Something is left (shutdown, or the bus was down); the entry stays for a sweeper.
    Deferred(String),
}

/// Delivers alerts to the sinks, the events exchange and, failing that, the
/// dead-letter queue.
pub struct Dispatcher {
    sinks: Vec<Arc<dyn Sink>>,
    actions: Option<ActionSigner>,
    attempts: u32,
    backoff: Duration,
    lease: Duration,
    bus: Arc<dyn Bus>,
    topology: Topology,
    store: Arc<dyn Store>,
    keys: Keys,
    tracker: Arc<dyn Tracker>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("sinks", &self.sink_names())
            .field("links", &self.actions.is_some())
            .finish_non_exhaustive()
    }
}

/// What the dispatcher needs besides the sinks.
pub struct DispatcherParts {
    pub bus: Arc<dyn Bus>,
    pub topology: Topology,
    pub store: Arc<dyn Store>,
    pub keys: Keys,
    /// Clears delivered entries (one round trip on the Lua backend).
    pub tracker: Arc<dyn Tracker>,
    pub stats: Arc<Stats>,
    pub shutdown: CancellationToken,
}

impl Dispatcher {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        sinks: Vec<Arc<dyn Sink>>,
        actions: Option<ActionSigner>,
        attempts: u32,
        backoff: Duration,
        lease: Duration,
        parts: DispatcherParts,
    ) -> Self {
        Self {
            sinks,
            actions,
            attempts: attempts.max(1),
            backoff,
            lease,
            bus: parts.bus,
            topology: parts.topology,
            store: parts.store,
            keys: parts.keys,
            tracker: parts.tracker,
            stats: parts.stats,
            shutdown: parts.shutdown,
        }
    }

    pub fn sink_names(&self) -> Vec<String> {
        self.sinks.iter().map(|s| s.name().to_owned()).collect()
    }

    /// `{ns}.notifier.alerts`: its `.dead` queue holds parked alerts.
    pub fn alerts_queue(&self) -> String {
        alerts_queue(&self.topology)
    }

    /// Delivers `alert` as far as it can; see the module docs.
    pub async fn deliver(&self, mut alert: PendingAlert) -> Delivery {
        let now = Utc::now();
        let mut jobs = Vec::new();
        for sink in &self.sinks {
            let name = sink.name();
            if alert.sinks_done.iter().any(|s| s == name)
                || alert.sinks_parked.iter().any(|s| s == name)
            {
                continue;
            }
            let route = sink.route();
            if !route.accepts_severity(alert.severity()) {
                continue;
            }
            let Some(view) = alert.for_tenants(|t| route.accepts_tenant(t)) else {
                continue;
            };
            let actions = self
                .actions
                .as_ref()
                .map(|a| a.actions(&view, name, now))
                .unwrap_or_default();
            jobs.push(async move {
                let result = self.send_with_retries(sink.as_ref(), &view, &actions).await;
                (sink.clone(), result)
            });
        }
        let mut left = Vec::new();
        for (sink, result) in futures::future::join_all(jobs).await {
            let name = sink.name().to_owned();
            match result {
                Ok(()) => {
                    self.stats.sink_sent(alert.kind, &name);
                    alert.sinks_done.push(name);
                }
                Err(Outcome::Cancelled) => left.push(format!("{name}: shutting down")),
                Err(Outcome::Failed { error, attempts }) => {
                    self.stats.sink_failed();
                    let reason = format!("sink {name} failed after {attempts} attempt(s): {error}");
                    tracing::warn!(alert_id = %alert.alert_id, sink = %name, %reason, "Parking the alert on the dead-letter queue.");
                    match self.park(&alert, &name, &reason).await {
                        Ok(()) => {
                            self.stats.parked();
                            alert.sinks_parked.push(name);
                        }
                        Err(error) => {
                            tracing::error!(alert_id = %alert.alert_id, sink = %name, %error, "Could not park the alert; it stays in the outbox.");
                            left.push(format!("{name}: {reason}; parking failed: {error}"));
                        }
                    }
                }
            }
        }

        if left.is_empty() && !alert.event_done {
            let event = alert.to_event(alert.sinks_done.clone(), Utc::now());
            match self.publish_event(&event).await {
                Ok(()) => alert.event_done = true,
                Err(error) => left.push(format!("event: {error}")),
            }
        }

        if left.is_empty() {
            self.stats.alert_sent(alert.kind);
            if let Err(error) = self.remove_with_retry(&alert.alert_id).await {
                // The sweeper will find it and deliver again: a rare duplicate, never a loss.
                tracing::warn!(alert_id = %alert.alert_id, %error, "Delivered, but could not clear the outbox entry.");
            }
            return Delivery::Complete {
                sinks: alert.sinks_done,
                parked: alert.sinks_parked,
            };
        }
        let why = left.join("; ");
        let due = Utc::now()
            + chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::minutes(5));
        if let Err(error) = save(self.store.as_ref(), &self.keys, &alert, due).await {
            tracing::warn!(alert_id = %alert.alert_id, %error, "Could not record delivery progress; a retry may resend to some sinks.");
        }
        tracing::info!(alert_id = %alert.alert_id, %why, "Alert not fully delivered; it stays in the outbox for a retry.");
        Delivery::Deferred(why)
    }

    async fn remove_with_retry(&self, alert_id: &str) -> Result<(), LifecycleError> {
        let mut result = Ok(());
        for pause in [0u64, 200, 1000] {
            tokio::time::sleep(Duration::from_millis(pause)).await;
            result = self.tracker.clear_outbox(alert_id).await;
            if result.is_ok() {
                break;
            }
        }
        result
    }

    async fn send_with_retries(
        &self,
        sink: &dyn Sink,
        alert: &PendingAlert,
        actions: &[crate::alert::TargetActions],
    ) -> Result<(), Outcome> {
        let mut attempt = 1;
        loop {
            match sink.send(alert, actions).await {
                Ok(()) => return Ok(()),
                Err(error) if attempt >= self.attempts || !error.is_retryable() => {
                    return Err(Outcome::Failed {
                        error,
                        attempts: attempt,
                    });
                }
                Err(error) => {
                    let pause = self.pause(attempt, &error);
                    tracing::info!(sink = sink.name(), alert_id = %alert.alert_id, attempt, %error, ?pause, "Sink failed; retrying.");
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = self.shutdown.cancelled() => return Err(Outcome::Cancelled),
                    }
                    attempt += 1;
                }
            }
        }
    }

    /// Exponential back-off from `sink_backoff` with ±25 % jitter, at least the
    /// receiver's `Retry-After`.
    fn pause(&self, attempt: u32, error: &SinkError) -> Duration {
        let base = self
            .backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
            .min(MAX_BACKOFF);
        let jitter = rand::rng().random_range(0.75..1.25);
        let pause = base.mul_f64(jitter);
        match error.retry_after() {
            Some(wait) => pause.max(wait.min(MAX_RETRY_AFTER)),
            None => pause,
        }
    }

    async fn park(&self, alert: &PendingAlert, sink: &str, reason: &str) -> Result<(), BusError> {
        let event = alert.to_event(vec![], Utc::now());
        let queue = self.alerts_queue();
        let mut message = outgoing(&self.topology.dead_exchange(), &queue, &event);
        message.message_id = format!("{}:{sink}", alert.alert_id);
        message
            .headers
            .insert(HEADER_DEAD_REASON.into(), reason.to_owned());
        message.headers.insert(HEADER_DEAD_QUEUE.into(), queue);
        message
            .headers
            .insert(HEADER_DEAD_AT.into(), stamp(Utc::now()));
        message.headers.insert(HEADER_SINK.into(), sink.to_owned());
        self.bus.publish(message).await
    }

    async fn publish_event(&self, event: &AlertEvent) -> Result<(), BusError> {
        let message = outgoing(
            &self.topology.events_exchange(),
            &alert_route(event.alert.as_str()),
            event,
        );
        match self.bus.publish(message).await {
            // Nobody listens to the events exchange (the alerts queue was deleted
            // by hand): the alert is still sent, and the log line is its record.
            Err(BusError::Unroutable { .. }) => {
                tracing::debug!(alert_id = %event.alert_id, "No queue is bound to the events exchange for this alert.");
                Ok(())
            }
            other => other,
        }
    }

    /// Picks up outbox entries whose lease ran out and delivers them. Returns how many.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let due = self
            .store
            .zrange_by_score(&self.keys.alert_outbox_due(), epoch(now), 32)
            .await?;
        let mut delivered = 0;
        for (id, _) in due {
            if self.shutdown.is_cancelled() {
                break;
            }
            if !self
                .store
                .claim(&self.keys.alert_outbox_claim(&id), self.lease)
                .await?
            {
                continue;
            }
            let json = self.store.hash_get(&self.keys.alert_outbox(), &id).await?;
            let Some(alert) = json.and_then(|j| match serde_json::from_str::<PendingAlert>(&j) {
                Ok(alert) => Some(alert),
                Err(error) => {
                    tracing::error!(alert_id = %id, %error, "Outbox entry does not decode; dropping it from the index.");
                    None
                }
            }) else {
                self.store.zrem(&self.keys.alert_outbox_due(), &id).await?;
                continue;
            };
            tracing::info!(alert_id = %id, "Retrying an alert left in the outbox.");
            if matches!(self.deliver(alert).await, Delivery::Complete { .. }) {
                delivered += 1;
            }
        }
        Ok(delivered)
    }
}

/// `{ns}.notifier.alerts` (see [`Dispatcher::alerts_queue`]).
pub fn alerts_queue(topology: &Topology) -> String {
    format!("{}.notifier.alerts", topology.namespace())
}

/// The alerts queue as the notifier declares it: bound to `alert.#` on the events
/// exchange, so every `AlertEvent` has a durable home (the audit trail of alerts,
/// for the CLI or a SIEM to read) and is never returned unroutable; its `.dead`
/// queue holds the alerts a sink gave up on. Cap it with a policy if nothing
/// consumes it (see `docs/notifier.md`).
pub fn alerts_queue_spec(topology: &Topology) -> QueueSpec {
    topology
        .queue(alerts_queue(topology))
        .bind(topology.events_exchange(), "alert.#")
}

/// Why a sink did not take an alert.
enum Outcome {
    Failed { error: SinkError, attempts: u32 },
    Cancelled,
}
