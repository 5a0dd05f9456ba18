//! Continuous scanning (`enumerator.mode = "continuous"`, the default): every
//! tenant rescanned on a rolling cadence, one scan in flight per tenant.
//!
//! ```text
//!            every enumerator.relist_interval: list tenants (GDAP / static, + unlisted)
//!                              │
//!  Redis Keys::schedule ◀──▶ Schedule (slots, in flight, failures) ──due──▶ ScanJob ──▶ {ns}.scan
//!                              ▲
//!  {ns}.findings ──summary──▶ {ns}.enumerator.summaries (this service's own queue)
//! ```
//!
//! The rules live in [`crate::schedule`]; this module is the I/O around them:
//!
//! - **Ticks.** A few times per slot spacing (at most once a second, at least ten
//!   times), the due tenants are published as one confirmed batch and marked in
//!   flight. Dispatch is capped at twice the nominal rate (tenants / period), so a
//!   backlog (a restart after downtime, scanners that were behind) drains over
//!   time instead of landing on the scanners as a burst.
//! - **Completion.** The scanner's per-tenant `TenantSummary` frees the tenant. The
//!   enumerator binds a queue of its own to the summaries on the findings exchange
//!   (services meet only on the queues); a summary for a job it is not waiting for
//!   (a late one, a `--once` run, an audit rescan) changes nothing.
//! - **Lost scans.** A scan with no summary after `enumerator.scan_timeout` counts
//!   as failed; the tenant is scheduled again.
//! - **Failing tenants** back off (see [`crate::schedule`]) and are reported: a
//!   warning when a tenant starts backing off, and every period a status line with
//!   the tenants in flight, overdue and backing off.
//! - **Restarts.** Every change to a tenant's schedule is written to Redis
//!   (`Keys::schedule`) before the next tick; a restarted enumerator resumes it:
//!   scans in flight stay in flight (their summaries wait on the durable queue),
//!   and no tenant is scanned early or forgotten.
//! - **Listing.** The tenant list is re-read every `enumerator.relist_interval`,
//!   not every tick. A failed listing keeps the current schedule and is retried
//!   sooner; it is never an empty schedule.
//!
//! - **One schedule keeper.** The schedule is kept by one enumerator at a time: it
//!   holds a lease in Redis (`Keys::schedule_lease`, 30 s, renewed every 10 s). A
//!   second enumerator — a replica started by mistake, an overlapping deploy —
//!   waits as a standby instead of doubling every scan, and takes over within the
//!   lease when the keeper stops or dies; a keeper that finds its lease taken
//!   stops with an error (its supervisor restarts it as the standby).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fwdwatch_shared::bus::{
    Bus, ConsumerOptions, DeliveryInfo, HandleError, Handler, QueueSpec, ROUTE_SUMMARY, Topology,
    run_consumer,
};
use fwdwatch_shared::config::Settings;
use fwdwatch_shared::contracts::{ScanJob, TenantSummary};
use fwdwatch_shared::m365::M365Client;
use fwdwatch_shared::shutdown::CancellationToken;
use fwdwatch_shared::store::{Keys, Store, StoreError};
use tokio::sync::Mutex;

use crate::schedule::{CadencePolicy, Finish, Schedule, TenantSchedule, tenant_key};
use crate::{ListPolicy, job_message, list_relationships, new_run_id, with_unlisted};

/// `{ns}.enumerator.summaries`: the enumerator's own copy of every tenant summary.
pub fn summaries_queue(topology: &Topology) -> String {
    format!("{}.enumerator.summaries", topology.namespace())
}

/// The enumerator's summaries queue, bound to `summary` on the findings exchange.
pub fn summaries_queue_spec(topology: &Topology) -> QueueSpec {
    topology
        .queue(summaries_queue(topology))
        .bind(topology.findings_exchange(), ROUTE_SUMMARY)
}

/// The cadence the settings ask for.
pub fn policy(settings: &Settings) -> CadencePolicy {
    CadencePolicy {
        period: settings.enumerator.cadence,
        scan_timeout: settings.enumerator.scan_timeout,
        backoff_max: settings.enumerator.backoff_max,
    }
}

/// The schedule a previous enumerator saved (unreadable entries are reported and
/// skipped: the next listing schedules those tenants afresh).
pub async fn saved_schedule(
    store: &dyn Store,
    keys: &Keys,
) -> Result<Vec<TenantSchedule>, StoreError> {
    let all = store.hash_get_all(&keys.schedule()).await?;
    Ok(all
        .into_iter()
        .filter_map(
            |(key, json)| match serde_json::from_str::<TenantSchedule>(&json) {
                Ok(s) => Some(s),
                Err(error) => {
                    tracing::warn!(tenant = %key, %error, "A saved schedule entry does not decode; the tenant is scheduled afresh.");
                    None
                }
            },
        )
        .collect())
}

async fn save(store: &dyn Store, keys: &Keys, s: &TenantSchedule) {
    let Ok(json) = serde_json::to_string(s) else {
        return;
    };
    if let Err(error) = store
        .hash_set(&keys.schedule(), &tenant_key(&s.tenant.id), &json)
        .await
    {
        // The schedule in memory stays right; the next change writes it again.
        tracing::warn!(%error, tenant = %s.tenant.id, "Could not save the tenant's schedule.");
    }
}

/// Frees a tenant when the summary of its in-flight scan arrives.
struct SummaryHandler {
    schedule: Arc<Mutex<Schedule>>,
    store: Arc<dyn Store>,
    keys: Keys,
}

#[async_trait]
impl Handler<TenantSummary> for SummaryHandler {
    async fn handle(&self, summary: TenantSummary, _: &DeliveryInfo) -> Result<(), HandleError> {
        let mut schedule = self.schedule.lock().await;
        match schedule.finished(&summary, Utc::now()) {
            Finish::Finished {
                outcome,
                backed_off_until,
                recovered,
            } => {
                let Some(state) = schedule.get(&summary.tenant.id).cloned() else {
                    return Ok(());
                };
                save(self.store.as_ref(), &self.keys, &state).await;
                if let Some(until) = backed_off_until {
                    tracing::warn!(
                        tenant = %state.tenant.id,
                        name = %state.tenant.display_name,
                        failures = state.failures,
                        next_scan = %until,
                        error = state.last_error.as_deref().unwrap_or(""),
                        "Tenant keeps failing; backing off."
                    );
                } else if recovered {
                    tracing::info!(tenant = %state.tenant.id, ?outcome, "Tenant readable again; back on the cadence.");
                } else {
                    tracing::debug!(tenant = %state.tenant.id, ?outcome, next = %state.next_due, "Scan finished.");
                }
            }
            Finish::NotOurs => {
                tracing::debug!(tenant = %summary.tenant.id, job = %summary.job_id, "Summary of a scan this schedule is not waiting for.");
            }
            Finish::UnknownTenant => {
                tracing::debug!(tenant = %summary.tenant.id, "Summary of a tenant not on the schedule.");
            }
        }
        Ok(())
    }
}

/// Drops summaries: what the cron mode does with the queue continuous mode left behind.
struct Discard;

#[async_trait]
impl Handler<TenantSummary> for Discard {
    async fn handle(&self, _: TenantSummary, _: &DeliveryInfo) -> Result<(), HandleError> {
        Ok(())
    }
}

/// In cron mode: if an earlier continuous enumerator left its summaries queue, keep
/// it empty (nothing else reads it, and a quorum queue nobody consumes grows without
/// bound). Returns at once when there is no such queue.
pub async fn drain_left_queue(bus: Arc<dyn Bus>, settings: &Settings, shutdown: CancellationToken) {
    let topology = Topology::from_settings(&settings.amqp);
    let queue = summaries_queue(&topology);
    if bus.queue_depth(&queue).await.is_err() {
        return;
    }
    tracing::info!(%queue, "Emptying the summaries queue left by continuous mode (delete it to stop this).");
    let options = ConsumerOptions::from_settings(&settings.amqp);
    if let Err(error) = run_consumer(bus, &queue, options, Arc::new(Discard), shutdown).await {
        tracing::warn!(%error, %queue, "Stopped emptying the summaries queue left by continuous mode.");
    }
}

/// Dispatch budget: twice the nominal rate of the cadence, so a backlog drains
/// without a burst.
struct Budget {
    tokens: f64,
    last: tokio::time::Instant,
}

impl Budget {
    fn take(&mut self, tenants: usize, period: Duration) -> usize {
        let rate = 2.0 * tenants as f64 / period.as_secs_f64().max(0.001);
        let now = tokio::time::Instant::now();
        let cap = rate.max(2.0);
        self.tokens = (self.tokens + rate * (now - self.last).as_secs_f64()).min(cap);
        self.last = now;
        let n = self.tokens.floor();
        self.tokens -= n;
        n as usize
    }

    fn give_back(&mut self, n: usize) {
        self.tokens += n as f64;
    }
}

/// How often the loop looks for due tenants: half a slot spacing, within 100 ms–1 s.
fn tick_for(tenants: usize, period: Duration) -> Duration {
    (period / (2 * tenants.max(1)).try_into().unwrap_or(u32::MAX))
        .clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// Lists the tenants (with the unlisted ones remembered in the store) and puts them
/// on the schedule. Returns false when the listing failed.
async fn relist(
    client: Option<&M365Client>,
    store: &dyn Store,
    keys: &Keys,
    settings: &Settings,
    schedule: &Mutex<Schedule>,
    policy: ListPolicy,
) -> bool {
    let now = Utc::now();
    let listed = match list_relationships(client, &settings.enumerator, policy).await {
        Ok((listed, _excluded)) => {
            with_unlisted(store, keys, listed, &settings.enumerator, now)
                .await
                .0
        }
        Err(error) => {
            tracing::error!(error = %error, "Listing the tenants failed; the schedule keeps the tenants it has.");
            return false;
        }
    };
    let mut schedule = schedule.lock().await;
    let dropped = schedule.set_tenants(listed, now);
    for key in &dropped {
        if let Err(error) = store.hash_delete(&keys.schedule(), key).await {
            tracing::warn!(%error, tenant = %key, "Could not delete a dropped tenant's schedule.");
        }
    }
    // New tenants get their first slot; save them so a restart keeps it.
    for s in schedule.iter() {
        if s.last_dispatched.is_none() {
            save(store, keys, s).await;
        }
    }
    tracing::info!(
        tenants = schedule.len(),
        dropped = dropped.len(),
        cadence = %humantime::format_duration(schedule.policy().period),
        "Tenants listed; each is scanned once per cadence."
    );
    true
}

/// Publishes the due tenants as one confirmed batch and marks them in flight.
async fn dispatch(
    bus: &dyn Bus,
    store: &dyn Store,
    keys: &Keys,
    topology: &Topology,
    schedule: &mut Schedule,
    budget: &mut Budget,
    now: DateTime<Utc>,
) {
    let limit = budget.take(schedule.len(), schedule.policy().period);
    let due = schedule.due(now, limit);
    budget.give_back(limit - due.len());
    if due.is_empty() {
        return;
    }
    let run_id = new_run_id(now);
    let exchange = topology.scan_exchange();
    let mut jobs = Vec::with_capacity(due.len());
    for key in &due {
        let Some(s) = schedule.get(key) else { continue };
        let mut job = ScanJob::new(&run_id, s.tenant.clone(), now);
        job.relationship = s.relationship.clone();
        jobs.push((key.clone(), job));
    }
    let messages = jobs
        .iter()
        .map(|(_, job)| job_message(&exchange, job))
        .collect();
    if let Err(error) = bus.publish_all(messages).await {
        // Not marked in flight: due again at the next tick. Some may have gone out;
        // the scanner is idempotent and at worst this tenant is scanned twice.
        budget.give_back(jobs.len());
        tracing::error!(%error, jobs = jobs.len(), "Publishing scan jobs failed; retrying at the next tick.");
        return;
    }
    for (key, job) in &jobs {
        schedule.dispatched(key, &job.job_id, now);
        if let Some(s) = schedule.get(key) {
            save(store, keys, s).await;
        }
    }
    tracing::debug!(run = %run_id, jobs = jobs.len(), "Dispatched due tenants.");
}

fn log_report(schedule: &Schedule, now: DateTime<Utc>) {
    let r = schedule.report(now);
    tracing::info!(
        tenants = r.tenants,
        in_flight = r.in_flight,
        overdue = r.overdue,
        most_overdue_s = r.most_overdue.as_secs(),
        backing_off = r.backing_off.len(),
        "Continuous scanning status."
    );
    if r.overdue > 0 && r.most_overdue > schedule.policy().period / 2 {
        tracing::warn!(
            overdue = r.overdue,
            most_overdue_s = r.most_overdue.as_secs(),
            "Scans are behind the cadence: add scanners or lengthen enumerator.cadence."
        );
    }
    if !r.backing_off.is_empty() {
        let names: Vec<String> = r
            .backing_off
            .iter()
            .take(20)
            .map(|s| {
                format!(
                    "{} ({}, {} failures, next {}: {})",
                    s.tenant.display_name,
                    s.tenant.id,
                    s.failures,
                    s.next_due.format("%H:%M:%SZ"),
                    s.last_error.as_deref().unwrap_or("unknown")
                )
            })
            .collect();
        tracing::warn!(
            count = r.backing_off.len(),
            tenants = %names.join("; "),
            "Tenants backed off for failing scans."
        );
    }
}

/// Continuous scanning until `shutdown` (see the module docs).
pub async fn run_continuous(
    bus: Arc<dyn Bus>,
    client: Option<M365Client>,
    store: Arc<dyn Store>,
    settings: &Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_continuous_with(
        bus,
        client,
        store,
        settings,
        ListPolicy::default(),
        shutdown,
    )
    .await
}

/// [`run_continuous`] with an explicit listing retry policy (tests use short waits).
pub async fn run_continuous_with(
    bus: Arc<dyn Bus>,
    client: Option<M365Client>,
    store: Arc<dyn Store>,
    settings: &Settings,
    list_policy: ListPolicy,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let topology = Topology::from_settings(&settings.amqp);
    bus.declare(&topology)
        .await
        .context("declaring the queue topology")?;
    bus.declare_queue(&summaries_queue_spec(&topology))
        .await
        .context("declaring the enumerator's summaries queue")?;
    let keys = Keys::from_settings(&settings.redis);
    let Some(lease) = Lease::acquire(store.clone(), &keys, &shutdown).await else {
        return Ok(()); // shut down while waiting as the standby
    };
    let outcome = keep_schedule(
        bus,
        client,
        store,
        settings,
        list_policy,
        shutdown,
        &topology,
        &keys,
        &lease,
    )
    .await;
    lease.release().await;
    outcome
}

/// How long the schedule lease lasts without renewal, and how often it is renewed.
const LEASE_TTL: Duration = Duration::from_secs(30);
const LEASE_RENEW: Duration = Duration::from_secs(10);

/// The right to keep the schedule (see the module's doc): `Keys::schedule_lease`
/// holding this enumerator's id.
struct Lease {
    store: Arc<dyn Store>,
    key: String,
    holder: String,
}

impl Lease {
    /// Waits until the lease is free and takes it; `None` when shut down first.
    async fn acquire(
        store: Arc<dyn Store>,
        keys: &Keys,
        shutdown: &CancellationToken,
    ) -> Option<Lease> {
        let lease = Lease {
            store,
            key: keys.schedule_lease(),
            holder: format!("pid {} {}", std::process::id(), uuid::Uuid::new_v4()),
        };
        let mut told = false;
        loop {
            match lease
                .store
                .compare_and_set(&lease.key, None, &lease.holder, Some(LEASE_TTL))
                .await
            {
                Ok(true) => {
                    if told {
                        tracing::info!(
                            "The other enumerator is gone; this one keeps the schedule now."
                        );
                    }
                    return Some(lease);
                }
                Ok(false) if !told => {
                    let other = lease.store.get(&lease.key).await.ok().flatten();
                    tracing::warn!(
                        holder = other.as_deref().unwrap_or("?"),
                        "Another enumerator keeps the continuous schedule; this one waits as a standby (run one enumerator per deployment)."
                    );
                    told = true;
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, "Could not take the schedule lease; trying again.");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(LEASE_RENEW) => {}
            }
        }
    }

    /// Extends the lease. `Ok(false)`: another enumerator holds it now.
    async fn renew(&self) -> Result<bool, StoreError> {
        self.store
            .compare_and_set(&self.key, Some(&self.holder), &self.holder, Some(LEASE_TTL))
            .await
    }

    /// Gives the lease back (if still ours) so a standby takes over at once.
    async fn release(&self) {
        if let Ok(Some(holder)) = self.store.get(&self.key).await
            && holder == self.holder
            && let Err(error) = self.store.delete(&self.key).await
        {
            tracing::debug!(%error, "Could not give the schedule lease back; it expires.");
        }
    }
}

/// The schedule's life while this enumerator holds the lease.
#[allow(clippy::too_many_arguments)]
async fn keep_schedule(
    bus: Arc<dyn Bus>,
    client: Option<M365Client>,
    store: Arc<dyn Store>,
    settings: &Settings,
    list_policy: ListPolicy,
    shutdown: CancellationToken,
    topology: &Topology,
    keys: &Keys,
    lease: &Lease,
) -> anyhow::Result<()> {
    let topology = topology.clone();
    let keys = keys.clone();
    let policy = policy(settings);
    let mut initial = Schedule::new(policy);
    let saved = saved_schedule(store.as_ref(), &keys)
        .await
        .context("reading the saved schedule from Redis")?;
    let resumed = saved.len();
    initial.restore(saved);
    let schedule = Arc::new(Mutex::new(initial));
    tracing::info!(
        resumed,
        cadence = %humantime::format_duration(policy.period),
        "Continuous scanning starts."
    );

    // The listing comes first: with nothing saved there is nothing to scan yet.
    let retry = (settings.enumerator.relist_interval / 10)
        .clamp(Duration::from_secs(1), Duration::from_secs(300));
    while !relist(
        client.as_ref(),
        store.as_ref(),
        &keys,
        settings,
        &schedule,
        list_policy,
    )
    .await
        && schedule.lock().await.is_empty()
    {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(retry) => {}
        }
    }
    let mut next_relist = tokio::time::Instant::now() + settings.enumerator.relist_interval;

    let consumer_stop = shutdown.child_token();
    let consumer = tokio::spawn({
        let bus = bus.clone();
        let queue = summaries_queue(&topology);
        let options = ConsumerOptions {
            prefetch: 64,
            ..ConsumerOptions::from_settings(&settings.amqp)
        };
        let handler = Arc::new(SummaryHandler {
            schedule: schedule.clone(),
            store: store.clone(),
            keys: keys.clone(),
        });
        let stop = consumer_stop.clone();
        async move { run_consumer(bus, &queue, options, handler, stop).await }
    });

    let mut budget = Budget {
        tokens: 0.0,
        last: tokio::time::Instant::now(),
    };
    let mut next_report = tokio::time::Instant::now() + policy.period;
    let mut next_renew = tokio::time::Instant::now() + LEASE_RENEW;
    let outcome = loop {
        let tick = tick_for(schedule.lock().await.len(), policy.period);
        tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            () = tokio::time::sleep(tick) => {}
        }
        if tokio::time::Instant::now() >= next_renew {
            match lease.renew().await {
                Ok(true) => next_renew = tokio::time::Instant::now() + LEASE_RENEW,
                Ok(false) => {
                    break Err(anyhow::anyhow!(
                        "another enumerator took the schedule lease over (this one could not renew it in time); stopping so that tenants are not scanned twice"
                    ));
                }
                // Redis is briefly away: keep going, try again at the next tick.
                Err(error) => tracing::warn!(%error, "Could not renew the schedule lease."),
            }
        }
        if consumer.is_finished() {
            break Err(anyhow::anyhow!(
                "the consumer of {} stopped; restarting the enumerator resumes the schedule",
                summaries_queue(&topology)
            ));
        }
        if tokio::time::Instant::now() >= next_relist {
            let ok = relist(
                client.as_ref(),
                store.as_ref(),
                &keys,
                settings,
                &schedule,
                list_policy,
            )
            .await;
            next_relist = tokio::time::Instant::now()
                + if ok {
                    settings.enumerator.relist_interval
                } else {
                    retry
                };
        }
        let now = Utc::now();
        let mut s = schedule.lock().await;
        for (key, _) in s.time_out(now) {
            if let Some(state) = s.get(&key).cloned() {
                tracing::warn!(
                    tenant = %state.tenant.id,
                    failures = state.failures,
                    timeout = %humantime::format_duration(policy.scan_timeout),
                    "No summary for the tenant's scan in time; counted as failed and rescheduled."
                );
                save(store.as_ref(), &keys, &state).await;
            }
        }
        dispatch(
            bus.as_ref(),
            store.as_ref(),
            &keys,
            &topology,
            &mut s,
            &mut budget,
            now,
        )
        .await;
        if tokio::time::Instant::now() >= next_report {
            log_report(&s, now);
            next_report = tokio::time::Instant::now() + policy.period;
        }
    };
    consumer_stop.cancel();
    match consumer.await {
        Ok(Err(error)) if outcome.is_ok() => {
            return Err(anyhow::Error::new(error).context("consuming tenant summaries"));
        }
        Err(join) if outcome.is_ok() => {
            return Err(anyhow::anyhow!("the summaries consumer panicked: {join}"));
        }
        _ => {}
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_follow_the_slot_spacing_within_bounds() {
        let p = Duration::from_secs(480);
        assert_eq!(tick_for(5000, p), Duration::from_millis(100));
        assert_eq!(tick_for(1, p), Duration::from_secs(1));
        assert_eq!(tick_for(1000, p), Duration::from_millis(240));
    }

    #[test]
    fn the_budget_allows_twice_the_nominal_rate() {
        let mut b = Budget {
            tokens: 0.0,
            last: tokio::time::Instant::now() - Duration::from_secs(10),
        };
        // 600 tenants / 60 s = 10 per second nominal; 20 per second allowed, capped at 1 s worth.
        assert_eq!(b.take(600, Duration::from_secs(60)), 20);
        assert_eq!(b.take(600, Duration::from_secs(60)), 0);
    }
}
