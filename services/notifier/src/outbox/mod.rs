//! Getting a decided alert out — to every sink that should have it, to the audit
//! stream, or to the dead-letter queue — without ever losing it, promptly, whatever
//! crashes, and without a storm of repeats.
//!
//! **Ownership.** The lifecycle writes each alert into the outbox
//! (`Keys::alert_outbox`) in the same atomic step that decides it, listed in the index
//! of the notifier instance that decided it (`Keys::alert_outbox_owned`): that
//! instance owns it and delivers it at once ([`Dispatcher::deliver`]). Instances prove
//! they are alive with a heartbeat every fifth of `notifier.outbox_lease` (15 s by
//! default); when one stops beating (SIGKILL, OOM, a lost node), any live instance —
//! a peer, or the restarted process itself — moves its entries into its own index in
//! one atomic step and delivers them: a dead notifier's alerts go out again within
//! the lease plus a sweep, never after a fixed five-minute lease. A graceful stop
//! (SIGTERM) finishes the requests in flight, then drops its heartbeat, so the rest is
//! taken over at once. See [`store`] for the keys and the fenced writes.
//!
//! **Progress is recorded as it happens.** As soon as a sink accepts an alert, the
//! entry is rewritten with that sink marked done (and its receipt, e.g. Slack's
//! message `ts`), before the sink's slot is given back. A crash can therefore only
//! repeat what was in flight at that instant — at most each sink's concurrency —
//! never a backlog. Every delivery of an alert carries the same alert id (the webhook
//! sends it as `Idempotency-Key`; the Slack Web API sink finds and updates its earlier
//! message), so receivers can drop the rare repeat.
//!
//! **Pace.** Each sink has a gate (`sinks::gate`): bounded concurrency, a minimum
//! interval (Slack: one message a second), and `429` / `Retry-After` honoured for
//! every delivery to that sink. A `429` is not a failure and does not count towards
//! `notifier.sink_attempts`, so a first scan of a large fleet neither drops (parks)
//! nor duplicates alerts.
//!
//! **Failures.** Per sink: up to `notifier.sink_attempts` tries with exponential
//! back-off and jitter; errors that cannot heal (400, 404, Slack's
//! `channel_not_found`) stop early. After the last try the alert is parked: its
//! `AlertEvent` is published to `{ns}.dead` with routing key `{ns}.notifier.alerts`
//! (queue `{ns}.notifier.alerts.dead`) and headers naming the sink and the reason.
//! Once every sink took or parked it, the `AlertEvent` goes to `{ns}.events`
//! (`alert.<kind>`) and the entry is deleted. Anything left (the broker or Redis
//! unreachable, a shutdown) stays in the owner's index and is retried by its owner
//! with growing pauses.

mod redis;
mod store;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use fwdwatch_shared::bus::{
    Bus, BusError, HEADER_DEAD_AT, HEADER_DEAD_QUEUE, HEADER_DEAD_REASON, Outgoing, QueueSpec,
    Topology, alert_route, outgoing,
};
use fwdwatch_shared::contracts::AlertEvent;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use redis::RedisOutbox;
pub use store::{
    OutboxError, OutboxStatus, OutboxStore, PendingEntry, Recorded, StoreOutbox, TakenOver,
    pending, save, status,
};

use crate::alert::{ActionSigner, PendingAlert, TargetActions, stamp};
use crate::sinks::{GatePass, SendContext, Sink, SinkError, SinkGate};
use crate::stats::Stats;

/// Header naming the sink that gave up on a parked alert.
pub const HEADER_SINK: &str = "x-fwdwatch-sink";

/// Longest pause between two attempts at a sink.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Longest `Retry-After` honoured as such (a receiver asking for more is asked
/// again after this).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// `429` answers per delivery that do not count as attempts.
const MAX_THROTTLED: u32 = 120;
/// Due entries an owner loads per sweep, and how many retries it runs at once.
const RETRY_BATCH: usize = 64;
const MAX_RETRIES_IN_FLIGHT: usize = 1024;
/// Pause before the owner retries an entry left undelivered, doubling to the max.
const DEFER_FIRST: Duration = Duration::from_secs(2);
const DEFER_MAX: Duration = Duration::from_secs(60);
/// How often the liveness loop looks for dead instances (and the ticker for due work).
pub const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// A notifier instance's id: host, process and a random part, from `[A-Za-z0-9._-]`
/// (it is part of Redis key names and shown by `fwdwatch status`).
pub fn instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .unwrap_or_else(|| "notifier".to_owned());
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    let random = &uuid::Uuid::new_v4().simple().to_string()[..6];
    format!("{host}-{}-{random}", std::process::id())
}

/// An outbox entry: the decided alert and how far its delivery got. The lifecycle
/// writes the bare `PendingAlert` (these fields default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    #[serde(flatten)]
    pub alert: PendingAlert,
    /// Per sink, what it answered about the message it holds (Slack: `channel/ts`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub receipts: BTreeMap<String, String>,
    /// Times its owner left it undelivered (for the back-off of its retries).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deferrals: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl OutboxEntry {
    pub fn new(alert: PendingAlert) -> Self {
        Self {
            alert,
            receipts: BTreeMap::new(),
            deferrals: 0,
        }
    }
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
    /// Something is left (shutdown, the bus or Redis down, another instance took it
    /// over); the entry stays with its owner.
    Deferred(String),
}

/// This notifier instance as the owner of outbox entries.
#[derive(Debug)]
struct Owner {
    id: String,
    started: String,
    /// Bumped when this instance learns it was presumed dead and its entries were
    /// taken over: deliveries begun before stop sending.
    generation: AtomicU64,
}

impl Owner {
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn is_current(&self, generation: u64) -> bool {
        self.generation() == generation
    }
}

/// One sink and its gate (none for in-process sinks).
#[derive(Debug)]
struct Slot {
    sink: Arc<dyn Sink>,
    gate: Option<SinkGate>,
}

/// Marks an alert as being delivered by this instance until dropped, so the
/// owner's sweeper does not start a second delivery of it.
struct InFlight<'a> {
    set: &'a Mutex<HashSet<String>>,
    id: String,
}

impl<'a> InFlight<'a> {
    fn claim(set: &'a Mutex<HashSet<String>>, id: &str) -> Option<Self> {
        let mut guard = set.lock().unwrap_or_else(|p| p.into_inner());
        guard.insert(id.to_owned()).then(|| InFlight {
            set,
            id: id.to_owned(),
        })
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// Delivers alerts to the sinks, the events exchange and, failing that, the
/// dead-letter queue.
pub struct Dispatcher {
    sinks: Vec<Slot>,
    actions: Option<ActionSigner>,
    attempts: u32,
    backoff: Duration,
    lease: Duration,
    owner: Owner,
    outbox: Arc<dyn OutboxStore>,
    in_flight: Mutex<HashSet<String>>,
    /// Entries taken over from dead instances → when: anything their old owner sent
    /// was sent before then (lets one read of a receiver serve the whole batch).
    taken_at: Mutex<HashMap<String, std::time::Instant>>,
    retries: TaskTracker,
    bus: Arc<dyn Bus>,
    topology: Topology,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("owner", &self.owner.id)
            .field("sinks", &self.sink_names())
            .field("links", &self.actions.is_some())
            .finish_non_exhaustive()
    }
}

/// What the dispatcher needs besides the sinks.
pub struct DispatcherParts {
    pub bus: Arc<dyn Bus>,
    pub topology: Topology,
    /// Ownership and progress of outbox entries.
    pub outbox: Arc<dyn OutboxStore>,
    /// This instance's id: the owner the lifecycle writes new entries for.
    pub owner: String,
    /// `notifier.outbox_lease`.
    pub lease: Duration,
    pub stats: Arc<Stats>,
    pub shutdown: CancellationToken,
}

/// Why a sink did not take an alert.
enum Outcome {
    Failed {
        error: SinkError,
        attempts: u32,
    },
    Cancelled,
    /// This instance no longer owns the alert.
    NotOwner,
}

impl Dispatcher {
    pub fn new(
        sinks: Vec<Arc<dyn Sink>>,
        actions: Option<ActionSigner>,
        attempts: u32,
        backoff: Duration,
        parts: DispatcherParts,
    ) -> Self {
        let sinks = sinks
            .into_iter()
            .map(|sink| {
                let gate = (!sink.is_local()).then(|| SinkGate::new(sink.limits()));
                Slot { sink, gate }
            })
            .collect();
        Self {
            sinks,
            actions,
            attempts: attempts.max(1),
            backoff,
            lease: parts.lease,
            owner: Owner {
                id: parts.owner,
                started: stamp(Utc::now()),
                generation: AtomicU64::new(0),
            },
            outbox: parts.outbox,
            in_flight: Mutex::new(HashSet::new()),
            taken_at: Mutex::new(HashMap::new()),
            retries: TaskTracker::new(),
            bus: parts.bus,
            topology: parts.topology,
            stats: parts.stats,
            shutdown: parts.shutdown,
        }
    }

    pub fn sink_names(&self) -> Vec<String> {
        self.sinks
            .iter()
            .map(|s| s.sink.name().to_owned())
            .collect()
    }

    /// Cancelled when the notifier is asked to stop.
    pub fn stopping(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// This instance's id (the owner of the entries it decides).
    pub fn owner(&self) -> &str {
        &self.owner.id
    }

    /// `{ns}.notifier.alerts`: its `.dead` queue holds parked alerts.
    pub fn alerts_queue(&self) -> String {
        alerts_queue(&self.topology)
    }

    // ------------------------------------------------------------ liveness

    /// Registers this instance (its first heartbeat). Must succeed before it decides
    /// any alert, so that its entries always belong to a known instance.
    pub async fn register(&self) -> Result<(), OutboxError> {
        self.outbox
            .heartbeat(&self.owner.id, &self.owner.started, self.lease)
            .await?;
        tracing::info!(instance = %self.owner.id, lease = ?self.lease, "Notifier instance registered.");
        Ok(())
    }

    /// Heartbeats and take-overs until `stop`: runs on its own task, so a slow sink
    /// never delays a heartbeat.
    pub async fn keep_alive(self: Arc<Self>, stop: CancellationToken) {
        let beat_every = (self.lease / 5).max(Duration::from_millis(200));
        let audit_every = self.lease.max(Duration::from_secs(1));
        let mut last_beat = tokio::time::Instant::now();
        let mut last_audit = tokio::time::Instant::now();
        let mut failing_since: Option<tokio::time::Instant> = None;
        let mut interval = tokio::time::interval(SWEEP_EVERY);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = interval.tick() => {}
            }
            if last_beat.elapsed() >= beat_every {
                match self
                    .outbox
                    .heartbeat(&self.owner.id, &self.owner.started, self.lease)
                    .await
                {
                    Ok(registered) => {
                        last_beat = tokio::time::Instant::now();
                        if let Some(since) = failing_since.take() {
                            tracing::info!(down_for = ?since.elapsed(), "Heartbeats reach Redis again.");
                        }
                        if !registered {
                            // Our entries went to another instance: whatever we were
                            // still delivering is now theirs.
                            self.owner.generation.fetch_add(1, Ordering::SeqCst);
                            tracing::warn!(instance = %self.owner.id, "This notifier was presumed dead (no heartbeat for longer than notifier.outbox_lease); another instance took over its pending alerts.");
                        }
                    }
                    Err(error) => {
                        if failing_since.is_none() {
                            failing_since = Some(tokio::time::Instant::now());
                            tracing::warn!(%error, "Heartbeat failed; will retry.");
                        }
                    }
                }
            }
            if failing_since.is_some() {
                continue;
            }
            let asked = std::time::Instant::now();
            match self.outbox.take_over(&self.owner.id, Utc::now()).await {
                Ok(taken) => {
                    for t in taken {
                        if let Ok(mut at) = self.taken_at.lock() {
                            at.extend(t.ids.iter().map(|id| (id.clone(), asked)));
                        }
                        if t.alerts == 0 {
                            tracing::debug!(from = %t.from, "A notifier instance stopped with nothing pending.");
                            continue;
                        }
                        self.stats.taken_over(t.alerts);
                        tracing::warn!(from = %t.from, alerts = t.alerts, "Took over the pending alerts of a notifier that stopped before delivering them.");
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "Looking for dead notifiers failed; will retry.")
                }
            }
            if last_audit.elapsed() >= audit_every {
                last_audit = tokio::time::Instant::now();
                let now = Utc::now();
                let cutoff = now - chrono::Duration::from_std(self.lease).unwrap_or_default();
                match self.outbox.adopt_orphans(&self.owner.id, cutoff, now).await {
                    Ok(0) => {}
                    Ok(n) => {
                        self.stats.taken_over(n);
                        tracing::warn!(
                            alerts = n,
                            "Adopted outbox entries that no notifier owned."
                        );
                    }
                    Err(error) => {
                        tracing::warn!(%error, "Checking the outbox for unowned entries failed; will retry.")
                    }
                }
            }
        }
    }

    /// Starts retries of this instance's due entries (each on its own task; the
    /// gates bound what reaches the sinks). Returns how many were started.
    pub async fn retry_due(self: &Arc<Self>, now: DateTime<Utc>) -> Result<usize, OutboxError> {
        if self.in_flight_count() >= MAX_RETRIES_IN_FLIGHT || self.shutdown.is_cancelled() {
            return Ok(0);
        }
        let due = self.outbox.due(&self.owner.id, now, RETRY_BATCH).await?;
        let mut started = 0;
        for id in due {
            if self.is_in_flight(&id) {
                continue;
            }
            let taken_at = self.taken_at.lock().ok().and_then(|mut at| at.remove(&id));
            let Some(json) = self.outbox.load(&id).await? else {
                // Delivered by someone else meanwhile.
                self.outbox.forget(&self.owner.id, &id).await?;
                continue;
            };
            match serde_json::from_str::<OutboxEntry>(&json) {
                Ok(entry) => {
                    tracing::info!(alert_id = %id, "Delivering an alert left in the outbox.");
                    self.spawn_entry(
                        entry,
                        Some(taken_at.unwrap_or_else(std::time::Instant::now)),
                    );
                    started += 1;
                }
                Err(error) => self.park_undecodable(&id, &json, &error.to_string()).await,
            }
        }
        Ok(started)
    }

    /// Delivers `alert` on a task of its own (campaigns found by the ticker).
    pub fn spawn(self: &Arc<Self>, alert: PendingAlert) {
        self.spawn_entry(OutboxEntry::new(alert), None);
    }

    /// `sent_before`: for an entry delivered before (by its dead owner, or by this
    /// instance earlier), when every such earlier send had happened by.
    fn spawn_entry(self: &Arc<Self>, entry: OutboxEntry, sent_before: Option<std::time::Instant>) {
        let dispatcher = self.clone();
        self.retries.spawn(async move {
            dispatcher.deliver_entry(entry, sent_before).await;
        });
    }

    /// After the consumer stopped: lets the retries settle (a request in flight
    /// finishes; a pause ends at once and leaves the alert in the outbox).
    pub async fn settle(&self) {
        self.retries.close();
        self.retries.wait().await;
    }

    /// The last step of a graceful stop, after [`keep_alive`](Self::keep_alive)
    /// ended: drops the heartbeat, so whatever is still pending is taken over by
    /// another notifier (or this one's next start) at its next sweep.
    pub async fn release(&self) {
        match self.outbox.release(&self.owner.id).await {
            Ok(()) => {
                tracing::info!(instance = %self.owner.id, "Heartbeat dropped: any alert still pending is taken over by another notifier (or the next start) at once.");
            }
            Err(error) => {
                tracing::warn!(%error, "Could not drop the heartbeat; pending alerts are taken over when it expires.");
            }
        }
    }

    fn in_flight_count(&self) -> usize {
        self.in_flight.lock().map_or(0, |s| s.len())
    }

    fn is_in_flight(&self, id: &str) -> bool {
        self.in_flight.lock().is_ok_and(|s| s.contains(id))
    }

    // ------------------------------------------------------------ delivery

    /// Delivers a just-decided `alert` as far as it can; see the module docs.
    pub async fn deliver(&self, alert: PendingAlert) -> Delivery {
        self.deliver_entry(OutboxEntry::new(alert), None).await
    }

    /// `sent_before`: `Some` for an entry that may have been sent before (see
    /// [`spawn_entry`](Self::spawn_entry)); `None` for one just decided.
    async fn deliver_entry(
        &self,
        mut entry: OutboxEntry,
        sent_before: Option<std::time::Instant>,
    ) -> Delivery {
        let id = entry.alert.alert_id.clone();
        let Some(_flight) = InFlight::claim(&self.in_flight, &id) else {
            return Delivery::Deferred("already being delivered by this notifier".into());
        };
        let generation = self.owner.generation();
        let now = Utc::now();
        let alert = entry.alert.clone();
        let mut jobs = FuturesUnordered::new();
        for slot in &self.sinks {
            let name = slot.sink.name();
            if alert.sinks_done.iter().any(|s| s == name)
                || alert.sinks_parked.iter().any(|s| s == name)
            {
                continue;
            }
            let route = slot.sink.route();
            if !route.accepts_severity(alert.severity()) {
                continue;
            }
            let Some(view) = alert.for_tenants(|t| route.accepts_tenant(t)) else {
                continue;
            };
            // A token reaches only the channel it was signed for.
            let actions = match (&self.actions, slot.sink.takes_actions()) {
                (Some(signer), true) => signer.actions(&view, name, now),
                _ => Vec::new(),
            };
            jobs.push(async move {
                let result = self
                    .send_with_retries(slot, &view, &actions, sent_before, generation)
                    .await;
                (slot, result)
            });
        }

        let mut left = Vec::new();
        let mut lost = None;
        while let Some((slot, result)) = jobs.next().await {
            let name = slot.sink.name().to_owned();
            match result {
                Ok((receipt, pass)) => {
                    self.stats.sink_sent(entry.alert.kind, &name);
                    entry.alert.sinks_done.push(name.clone());
                    if let Some(receipt) = receipt {
                        entry.receipts.insert(name, receipt);
                    }
                    if !slot.sink.is_local() {
                        // Recorded before the slot is given back (`pass`): at most the
                        // sink's concurrency is ever sent and not yet recorded.
                        match self.save_progress(&entry, None).await {
                            Some(Recorded::Saved) | None => {}
                            Some(gone) => lost = Some(gone),
                        }
                    }
                    drop(pass);
                }
                Err(Outcome::Cancelled) => left.push(format!("{name}: shutting down")),
                Err(Outcome::NotOwner) => lost = Some(Recorded::NotOwner),
                Err(Outcome::Failed { error, attempts }) => {
                    self.stats.sink_failed();
                    let reason = format!("sink {name} failed after {attempts} attempt(s): {error}");
                    tracing::warn!(alert_id = %id, sink = %name, %reason, "Parking the alert on the dead-letter queue.");
                    match self.park(&entry.alert, &name, &reason).await {
                        Ok(()) => {
                            self.stats.parked();
                            entry.alert.sinks_parked.push(name);
                            if let Some(gone @ (Recorded::NotOwner | Recorded::Gone)) =
                                self.save_progress(&entry, None).await
                            {
                                lost = Some(gone);
                            }
                        }
                        Err(error) => {
                            tracing::error!(alert_id = %id, sink = %name, %error, "Could not park the alert; it stays in the outbox.");
                            left.push(format!("{name}: {reason}; parking failed: {error}"));
                        }
                    }
                }
            }
            if lost.is_some() {
                break;
            }
        }
        drop(jobs);
        if let Some(lost) = lost {
            let why = match lost {
                Recorded::NotOwner => "another notifier took it over",
                _ => "another notifier delivered it",
            };
            tracing::info!(alert_id = %id, why, "Stopped delivering an alert this notifier no longer owns.");
            return Delivery::Deferred(why.to_owned());
        }

        if left.is_empty() && !entry.alert.event_done {
            let event = entry
                .alert
                .to_event(entry.alert.sinks_done.clone(), Utc::now());
            match self.publish_event(&event).await {
                Ok(()) => entry.alert.event_done = true,
                Err(error) => left.push(format!("event: {error}")),
            }
        }

        if left.is_empty() {
            self.stats.alert_sent(entry.alert.kind);
            self.complete(&id).await;
            return Delivery::Complete {
                sinks: entry.alert.sinks_done,
                parked: entry.alert.sinks_parked,
            };
        }
        let why = left.join("; ");
        entry.deferrals = entry.deferrals.saturating_add(1);
        let pause = DEFER_FIRST
            .saturating_mul(2u32.saturating_pow(entry.deferrals.saturating_sub(1).min(16)))
            .min(DEFER_MAX);
        let retry_at = Utc::now() + chrono::Duration::from_std(pause).unwrap_or_default();
        self.stats.deferred();
        self.save_progress(&entry, Some(retry_at)).await;
        tracing::info!(alert_id = %id, %why, retry_in = ?pause, "Alert not fully delivered; its owner retries it.");
        Delivery::Deferred(why)
    }

    /// Records `entry`'s progress, riding out a Redis restart (the caller holds the
    /// sink's slot meanwhile, so nothing more is sent unrecorded). `None`: could not.
    async fn save_progress(
        &self,
        entry: &OutboxEntry,
        retry_at: Option<DateTime<Utc>>,
    ) -> Option<Recorded> {
        let json = match serde_json::to_string(entry) {
            Ok(json) => json,
            Err(error) => {
                tracing::error!(alert_id = %entry.alert.alert_id, %error, "Cannot encode an outbox entry.");
                return None;
            }
        };
        let id = &entry.alert.alert_id;
        self.until_recorded("record delivery progress", id, || {
            self.outbox.record(&self.owner.id, id, &json, retry_at)
        })
        .await
    }

    /// Deletes a delivered entry, riding out a Redis restart.
    async fn complete(&self, alert_id: &str) {
        self.until_recorded("clear the delivered alert", alert_id, || {
            self.outbox.complete(&self.owner.id, alert_id)
        })
        .await;
    }

    /// Runs `op` until it succeeds, fails for good, or the notifier stops.
    async fn until_recorded<T, F, Fut>(&self, what: &str, alert_id: &str, op: F) -> Option<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, OutboxError>>,
    {
        let mut pause = Duration::from_millis(100);
        let mut warned = false;
        loop {
            match op().await {
                Ok(value) => {
                    if warned {
                        tracing::info!(%alert_id, "Recorded after all.");
                    }
                    return Some(value);
                }
                Err(error) if error.is_transient() && !self.shutdown.is_cancelled() => {
                    if !warned {
                        warned = true;
                        tracing::warn!(%alert_id, %error, "Could not {what} yet (Redis unreachable); retrying until it is back.");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = self.shutdown.cancelled() => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(error) => {
                    tracing::warn!(%alert_id, %error, "Could not {what}; a later delivery may repeat a sink.");
                    return None;
                }
            }
        }
    }

    async fn send_with_retries(
        &self,
        slot: &Slot,
        alert: &PendingAlert,
        actions: &[TargetActions],
        earlier: Option<std::time::Instant>,
        generation: u64,
    ) -> Result<(Option<String>, Option<GatePass>), Outcome> {
        let sink = slot.sink.as_ref();
        let secrets: Vec<&str> = actions
            .iter()
            .flat_map(|a| {
                [
                    a.approve.token.as_str(),
                    a.approve.url.as_str(),
                    a.remove.token.as_str(),
                    a.remove.url.as_str(),
                ]
            })
            .collect();
        let mut attempt = 1;
        let mut throttled = 0;
        // A retried entry may have been sent by an earlier delivery (its dead owner,
        // or this instance before), all of it before `earlier`.
        let mut maybe_sent = earlier.is_some();
        let mut sent_before = earlier;
        loop {
            let pass = match &slot.gate {
                Some(gate) => match gate.enter(&self.shutdown).await {
                    Some(pass) => Some(pass),
                    None => return Err(Outcome::Cancelled),
                },
                None => None,
            };
            if !self.owner.is_current(generation) {
                return Err(Outcome::NotOwner);
            }
            let context = SendContext {
                maybe_sent_before: maybe_sent,
                sent_before,
            };
            let error = match sink.deliver(alert, actions, &context).await {
                Ok(receipt) => return Ok((receipt, pass)),
                Err(error) => error.redacted(&secrets),
            };
            // A timeout or a dropped connection may have reached the receiver, just now.
            if matches!(error, SinkError::Transport(_)) {
                maybe_sent = true;
                sent_before = None;
            }
            drop(pass);
            if error.is_throttled() && throttled < MAX_THROTTLED {
                throttled += 1;
                self.stats.throttled();
                let wait = error
                    .retry_after()
                    .unwrap_or_else(|| self.backoff_for(throttled))
                    .min(MAX_RETRY_AFTER);
                tracing::info!(sink = sink.name(), alert_id = %alert.alert_id, ?wait, "The receiver asked us to slow down; waiting.");
                match &slot.gate {
                    Some(gate) => gate.hold_off(wait).await,
                    None => {
                        if self.pause_or_stop(wait).await {
                            return Err(Outcome::Cancelled);
                        }
                    }
                }
                continue;
            }
            if attempt >= self.attempts || !error.is_retryable() {
                return Err(Outcome::Failed {
                    error,
                    attempts: attempt,
                });
            }
            let pause = self.pause(attempt, &error);
            if let (Some(gate), Some(wait)) = (&slot.gate, error.retry_after()) {
                gate.hold_off(wait.min(MAX_RETRY_AFTER)).await;
            }
            tracing::info!(sink = sink.name(), alert_id = %alert.alert_id, attempt, %error, ?pause, "Sink failed; retrying.");
            if self.pause_or_stop(pause).await {
                return Err(Outcome::Cancelled);
            }
            attempt += 1;
        }
    }

    /// Sleeps `pause`; true when the notifier is stopping instead.
    async fn pause_or_stop(&self, pause: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(pause) => false,
            () = self.shutdown.cancelled() => true,
        }
    }

    fn backoff_for(&self, attempt: u32) -> Duration {
        self.backoff
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(16)))
            .min(MAX_BACKOFF)
    }

    /// Exponential back-off from `sink_backoff` with ±25 % jitter, at least the
    /// receiver's `Retry-After`.
    fn pause(&self, attempt: u32, error: &SinkError) -> Duration {
        let jitter = rand::rng().random_range(0.75..1.25);
        let pause = self.backoff_for(attempt).mul_f64(jitter);
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

    /// An entry that does not decode (written by another version or by hand) goes to
    /// the parked-alerts queue as it is, with the reason, and leaves the outbox.
    async fn park_undecodable(&self, alert_id: &str, json: &str, error: &str) {
        let queue = self.alerts_queue();
        let mut headers = BTreeMap::new();
        headers.insert(
            HEADER_DEAD_REASON.to_owned(),
            format!("outbox entry does not decode: {error}"),
        );
        headers.insert(HEADER_DEAD_QUEUE.to_owned(), queue.clone());
        headers.insert(HEADER_DEAD_AT.to_owned(), stamp(Utc::now()));
        let message = Outgoing {
            exchange: self.topology.dead_exchange(),
            routing_key: queue,
            message_id: alert_id.to_owned(),
            message_type: "outbox_entry".to_owned(),
            body: json.as_bytes().to_vec(),
            headers,
        };
        match self.bus.publish(message).await {
            Ok(()) => {
                tracing::error!(%alert_id, %error, "Outbox entry does not decode; parked it as it is.");
                self.complete(alert_id).await;
            }
            Err(publish) => {
                tracing::error!(%alert_id, %error, %publish, "Outbox entry does not decode and could not be parked; it stays.");
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::tests::pending;
    use fwdwatch_shared::contracts::AlertKind;

    #[test]
    fn entries_read_what_the_lifecycle_writes_and_keep_progress() {
        let alert = pending(AlertKind::New);
        let bare = serde_json::to_string(&alert).expect("json");
        let entry: OutboxEntry = serde_json::from_str(&bare).expect("a bare alert decodes");
        assert_eq!(entry.alert, alert);
        assert!(entry.receipts.is_empty() && entry.deferrals == 0);

        let mut entry = entry;
        entry.receipts.insert("slack".into(), "C1/1.2".into());
        entry.deferrals = 2;
        let json = serde_json::to_string(&entry).expect("json");
        let back: OutboxEntry = serde_json::from_str(&json).expect("decodes");
        assert_eq!(back, entry);
        // Status and tests read entries as plain alerts.
        let plain: PendingAlert = serde_json::from_str(&json).expect("still an alert");
        assert_eq!(plain, alert);
    }

    #[test]
    fn instance_ids_fit_in_key_names() {
        let id = instance_id();
        assert!(
            id.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')),
            "{id}"
        );
        assert_ne!(id, instance_id(), "unique per call");
    }
}
