//! The audit poller: every `enumerator.audit_poll_interval`, reads each tenant's
//! Exchange audit feed (Office 365 Management Activity API, `Audit.Exchange`) and
//! publishes an immediate rescan of a tenant whose feed records a forwarding change.
//!
//! ```text
//! tick ──▶ tenants (listing, else the known tenants) ──▶ per tenant, 64 at once:
//!   subscription started? (once a day) ──▶ content [watermark − overlap, now)
//!   ──▶ records ──classify──▶ forwarding changes, removals, posture, unreadable
//!   ──▶ not seen before ──▶ ScanJob { audit: [records…] } ──▶ {ns}.scan (job)
//!   ──▶ records marked seen, watermark = now
//! ```
//!
//! - **Once per record.** Each record acted on is remembered
//!   (`Keys::activity_record`, a little over the feed's 7 days) *after* its job is
//!   confirmed: a crash in between republishes it (at least once; the scanner's
//!   `audit_event` fingerprint is per record, so the notifier dedupes), a restart
//!   or an overlapping window never does.
//! - **Watermark per tenant** in Redis (`Keys::activity_watermark`): where the next
//!   read starts (minus a small overlap for clocks and late blobs), so a restart
//!   loses nothing and a long outage catches up (up to the feed's 7 days, in
//!   windows of 24 h). It only moves after the window's jobs are confirmed.
//! - **All of one poll's records for a tenant go in one job**, so a burst of
//!   changes is one rescan.
//! - **Fail closed.** A record or content blob that cannot be read (garbled, too
//!   large, a link elsewhere) travels on the job as an unreadable record (the scanner
//!   reports it as an `audit_event` detection); a blob that is throttled or failing
//!   (5xx) after every retry fails the tenant's poll instead, so the window is read
//!   again. A tenant whose feed cannot be read at all is logged, counted
//!   (`fwdwatch.audit.polls{outcome="failed"}`) and recorded in
//!   `Keys::activity_failures` with the fix; it never stops the other tenants.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use fwdwatch_shared::bus::{Bus, ROUTE_JOB, Topology, outgoing};
use fwdwatch_shared::config::Settings;
use fwdwatch_shared::contracts::{AuditRecord, ErrorKind, ScanJob, TenantRef};
use fwdwatch_shared::forwards::audit::{classify, decode_blob, unreadable_content};
use fwdwatch_shared::m365::{M365Client, M365Error};
use fwdwatch_shared::shutdown::CancellationToken;
use fwdwatch_shared::store::{Keys, Store};
use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;

use crate::{ListPolicy, Listed, list_relationships};

/// How far before the watermark each read starts again (clock skew between
/// Microsoft's `contentCreated` and ours; records read twice are deduplicated).
pub const OVERLAP: chrono::Duration = chrono::Duration::minutes(5);
/// How long a record acted on is remembered (the feed keeps 7 days).
const SEEN_TTL: Duration = Duration::from_secs(8 * 86_400);
/// How long a started subscription is trusted before it is started again
/// (Microsoft: wait 15 minutes between starts; starting twice is harmless).
const SUBSCRIBED_TTL: Duration = Duration::from_secs(86_400);
/// Tenants read at once. A read is one listing call (plus one per content blob);
/// at 1 s a call, 5,000 tenants take about 80 s. The client's per-process cap
/// (`m365.concurrency_per_process`) still bounds the calls on the wire.
const CONCURRENT_TENANTS: usize = 64;
/// The oldest window start Microsoft accepts, with a minute's margin.
const RETENTION: chrono::Duration = chrono::Duration::minutes(7 * 24 * 60 - 1);

/// What one poll did.
#[derive(Debug, Clone, Default)]
pub struct PollReport {
    /// Tenants whose feed was read.
    pub tenants_read: usize,
    /// The rescan jobs published (each with its triggering records).
    pub jobs: Vec<ScanJob>,
    /// Tenants whose feed could not be read: (tenant id, reason).
    pub failed: Vec<(String, String)>,
}

/// One tenant's outcome.
enum TenantPoll {
    Read(Option<ScanJob>),
    Failed(String),
}

fn poll_counter() -> &'static Counter<u64> {
    static C: OnceLock<Counter<u64>> = OnceLock::new();
    C.get_or_init(|| {
        opentelemetry::global::meter("fwdwatch")
            .u64_counter("fwdwatch.audit.polls")
            .with_description("Audit feed reads per tenant, by outcome (ok | triggered | failed)")
            .build()
    })
}

fn records_counter() -> &'static Counter<u64> {
    static C: OnceLock<Counter<u64>> = OnceLock::new();
    C.get_or_init(|| {
        opentelemetry::global::meter("fwdwatch")
            .u64_counter("fwdwatch.audit.records")
            .with_description(
                "Audit records that triggered a rescan, by kind (change | unreadable)",
            )
            .build()
    })
}

/// The tenants to read: the configured listing, else (when it fails) every tenant
/// the enumerator has listed before.
async fn tenants(
    client: &M365Client,
    store: &dyn Store,
    keys: &Keys,
    settings: &Settings,
) -> anyhow::Result<Vec<Listed>> {
    let policy = ListPolicy {
        attempts: 1,
        wait: Duration::ZERO,
    };
    match list_relationships(Some(client), &settings.enumerator, policy).await {
        Ok((listed, _)) => Ok(listed),
        Err(error) => {
            tracing::warn!(%error, "Listing tenants for the audit poll failed; reading the known tenants' feeds.");
            let known = store
                .hash_get_all(&keys.known_tenants())
                .await
                .context("reading the known tenants")?;
            Ok(known
                .into_iter()
                .map(|(id, json)| {
                    let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
                    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
                    Listed {
                        tenant: TenantRef {
                            display_name: text("display_name").unwrap_or_else(|| id.clone()),
                            default_domain: text("default_domain"),
                            id,
                        },
                        relationship: None,
                    }
                })
                .collect())
        }
    }
}

/// One poll of every tenant's feed. Per-tenant failures are in the report; only
/// a store or bus that cannot be used at all fails the poll.
pub async fn poll_once(
    bus: Arc<dyn Bus>,
    client: &M365Client,
    store: &dyn Store,
    settings: &Settings,
    now: DateTime<Utc>,
) -> anyhow::Result<PollReport> {
    let keys = Keys::from_settings(&settings.redis);
    let listed = tenants(client, store, &keys, settings).await?;
    poll_tenants(bus, client, store, settings, &listed, now).await
}

/// [`poll_once`] over a given list of tenants.
pub async fn poll_tenants(
    bus: Arc<dyn Bus>,
    client: &M365Client,
    store: &dyn Store,
    settings: &Settings,
    listed: &[Listed],
    now: DateTime<Utc>,
) -> anyhow::Result<PollReport> {
    let keys = Keys::from_settings(&settings.redis);
    let topology = Topology::from_settings(&settings.amqp);
    let run_id = format!(
        "audit-{}-{}",
        now.format("%Y%m%dT%H%M%SZ"),
        &uuid::Uuid::new_v4().simple().to_string()[..4]
    );
    // The futures are built first (not inside a stream combinator's closure) so the
    // poller stays a `Send` future that `tokio::spawn` takes.
    let polls: Vec<_> = listed
        .iter()
        .map(|l| {
            let (bus, keys, topology, run_id) = (bus.clone(), &keys, &topology, &run_id);
            Box::pin(async move {
                let outcome =
                    poll_tenant(bus, client, store, keys, topology, settings, run_id, l, now).await;
                (l.tenant.id.clone(), outcome)
            })
        })
        .collect();
    let results: Vec<(String, TenantPoll)> = futures::stream::iter(polls)
        .buffer_unordered(CONCURRENT_TENANTS)
        .collect()
        .await;
    let mut report = PollReport::default();
    for (tenant, outcome) in results {
        match outcome {
            TenantPoll::Read(job) => {
                report.tenants_read += 1;
                poll_counter().add(
                    1,
                    &[KeyValue::new(
                        "outcome",
                        if job.is_some() { "triggered" } else { "ok" },
                    )],
                );
                report.jobs.extend(job);
            }
            TenantPoll::Failed(reason) => {
                poll_counter().add(1, &[KeyValue::new("outcome", "failed")]);
                report.failed.push((tenant, reason));
            }
        }
    }
    tracing::info!(
        tenants = listed.len(),
        read = report.tenants_read,
        rescans = report.jobs.len(),
        failed = report.failed.len(),
        "Audit feeds read."
    );
    Ok(report)
}

/// Records a tenant whose feed cannot be read (for operators and `fwdwatch status`).
async fn note_failure(store: &dyn Store, keys: &Keys, tenant: &str, error: &M365Error) {
    let key = keys.activity_failures();
    let since = match store.hash_get(&key, tenant).await {
        Ok(Some(json)) => serde_json::from_str::<serde_json::Value>(&json)
            .ok()
            .and_then(|v| v.get("since").and_then(|s| s.as_str()).map(str::to_owned)),
        _ => None,
    }
    .unwrap_or_else(|| Utc::now().to_rfc3339());
    let value = serde_json::json!({
        "since": since,
        "last_error": error.to_string(),
        "remedy": error.remedy,
    });
    if let Err(e) = store.hash_set(&key, tenant, &value.to_string()).await {
        tracing::warn!(error = %e, tenant, "Could not record the audit feed failure.");
    }
}

#[allow(clippy::too_many_arguments)]
async fn poll_tenant(
    bus: Arc<dyn Bus>,
    client: &M365Client,
    store: &dyn Store,
    keys: &Keys,
    topology: &Topology,
    settings: &Settings,
    run_id: &str,
    listed: &Listed,
    now: DateTime<Utc>,
) -> TenantPoll {
    let tenant = listed.tenant.id.as_str();
    if listed.relationship.as_ref().is_some_and(|r| !r.listed) {
        return TenantPoll::Failed("the tenant is no longer listed".into());
    }
    let failed = |e: M365Error, what: &str| {
        tracing::warn!(tenant, error = %e, remedy = ?e.remedy, "{what}");
        e
    };
    // 1. The subscription (Microsoft keeps no content without one).
    let sub_key = keys.activity_subscribed(tenant);
    if !store.exists(&sub_key).await.unwrap_or(false) {
        if let Err(e) = client.start_activity_subscription(tenant).await {
            let e = failed(e, "Could not start the tenant's audit subscription.");
            note_failure(store, keys, tenant, &e).await;
            return TenantPoll::Failed(e.to_string());
        }
        if let Err(e) = store.set(&sub_key, "1", Some(SUBSCRIBED_TTL)).await {
            tracing::warn!(tenant, error = %e, "Could not remember the audit subscription.");
        }
    }
    // 2. The window: from the watermark (minus the overlap) to now, rounded up to
    // the second (Microsoft's times have whole seconds and the end is exclusive).
    let now = chrono::DateTime::from_timestamp(
        now.timestamp() + i64::from(now.timestamp_subsec_nanos() > 0),
        0,
    )
    .unwrap_or(now);
    let wm_key = keys.activity_watermark(tenant);
    let watermark = match store.get(&wm_key).await {
        Ok(v) => v.and_then(|s| {
            DateTime::parse_from_rfc3339(&s)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        }),
        Err(e) => return TenantPoll::Failed(format!("reading the audit watermark: {e}")),
    };
    let lookback = chrono::Duration::from_std(settings.enumerator.audit_lookback)
        .unwrap_or(chrono::Duration::hours(1));
    let mut start = watermark.map_or(now - lookback, |w| w - OVERLAP);
    if start < now - RETENTION {
        tracing::warn!(tenant, since = %start, "The audit watermark is older than the feed keeps; records in between are lost.");
        start = now - RETENTION;
    }
    if start >= now {
        return TenantPoll::Read(None);
    }
    // 3. Read and decode. Blobs that cannot be read travel as unreadable records.
    let read = match client.read_activity(tenant, start, now).await {
        Ok(r) => r,
        Err(e) => {
            if e.message.contains("AF20022") {
                // The subscription is gone (stopped, or never took): start it again
                // at the next poll.
                let _ = store.delete(&sub_key).await;
            }
            let e = failed(e, "Could not read the tenant's audit feed.");
            note_failure(store, keys, tenant, &e).await;
            return TenantPoll::Failed(e.to_string());
        }
    };
    let mut records: Vec<AuditRecord> = Vec::new();
    for blob in &read.blobs {
        match &blob.records {
            Ok(values) => records.extend(decode_blob(&blob.content_id, values)),
            // Throttled or 5xx after every retry: read the whole window again next
            // time (the watermark stays; records already acted on are skipped).
            Err(e) if matches!(e.kind, ErrorKind::Throttled | ErrorKind::Upstream) => {
                let e = failed(
                    e.clone(),
                    "An audit content blob could not be fetched; the window is read again next poll.",
                );
                note_failure(store, keys, tenant, &e).await;
                return TenantPoll::Failed(e.to_string());
            }
            // Garbled, too large, or pointing elsewhere: reading it again will not
            // help, so it travels as an unreadable record and is reported.
            Err(e) => {
                tracing::warn!(tenant, content = %blob.content_id, error = %e, "An audit content blob could not be read; reporting it.");
                records.push(unreadable_content(&blob.content_id, &e.to_string()));
            }
        }
    }
    for reason in &read.unreadable {
        tracing::warn!(tenant, reason = %reason, "Part of the audit content listing could not be read; reporting it.");
        let digest = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            reason.hash(&mut h);
            h.finish()
        };
        records.push(unreadable_content(
            &format!("listing-{digest:016x}"),
            reason,
        ));
    }
    // 4. Forwarding changes (and what could not be read) not acted on before.
    let mut fresh: Vec<AuditRecord> = Vec::new();
    for r in records {
        if !classify(&r).triggers_rescan() || fresh.iter().any(|f| f.key() == r.key()) {
            continue;
        }
        match store.exists(&keys.activity_record(tenant, &r.key())).await {
            Ok(true) => {}
            Ok(false) => fresh.push(r),
            Err(e) => return TenantPoll::Failed(format!("checking audit records seen: {e}")),
        }
    }
    let mut job = None;
    if !fresh.is_empty() {
        // Oldest first: the order the changes were made in (a stable sort: records
        // of one second keep the feed's order).
        fresh.sort_by_key(|r| r.created_at);
        let mut j = ScanJob::new(run_id, listed.tenant.clone(), now);
        j.relationship = listed.relationship.clone();
        j.audit = fresh.clone();
        let message = outgoing(&topology.scan_exchange(), ROUTE_JOB, &j);
        if let Err(e) = bus.publish_all(vec![message]).await {
            return TenantPoll::Failed(format!("publishing the rescan: {e}"));
        }
        for r in &fresh {
            let kind = if r.unreadable.is_some() {
                "unreadable"
            } else {
                "change"
            };
            records_counter().add(1, &[KeyValue::new("kind", kind)]);
            if let Err(e) = store
                .set(&keys.activity_record(tenant, &r.key()), "1", Some(SEEN_TTL))
                .await
            {
                tracing::warn!(tenant, error = %e, "Could not remember an audit record; it may trigger again.");
            }
        }
        tracing::info!(
            tenant,
            job = %j.job_id,
            records = fresh.len(),
            operations = ?fresh.iter().map(|r| r.operation.as_str()).collect::<Vec<_>>(),
            "Audit records of forwarding changes: rescanning the tenant now."
        );
        job = Some(j);
    }
    // 5. Done with this window.
    if let Err(e) = store.set(&wm_key, &now.to_rfc3339(), None).await {
        tracing::warn!(tenant, error = %e, "Could not store the audit watermark; the window is read again.");
    }
    let _ = store.hash_delete(&keys.activity_failures(), tenant).await;
    TenantPoll::Read(job)
}

/// Polls every `enumerator.audit_poll_interval` until `shutdown` (the first poll
/// right away). A poll that fails as a whole is logged; the next one runs as usual.
pub async fn run_poller(
    bus: Arc<dyn Bus>,
    client: M365Client,
    store: Arc<dyn Store>,
    settings: Settings,
    shutdown: CancellationToken,
) {
    let interval = settings
        .enumerator
        .audit_poll_interval
        .max(Duration::from_secs(1));
    tracing::info!(?interval, "Reading the tenants' Exchange audit feeds.");
    // Declared here too, so rescans can be published before the first scheduled run.
    if let Err(error) = bus.declare(&Topology::from_settings(&settings.amqp)).await {
        tracing::warn!(%error, "Could not declare the queue topology; the first poll may fail to publish.");
    }
    loop {
        if let Err(error) =
            poll_once(bus.clone(), &client, store.as_ref(), &settings, Utc::now()).await
        {
            tracing::error!(error = %format!("{error:#}"), "Audit poll failed.");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Starts [`run_poller`] in the background when `enumerator.audit_events` is on.
pub fn spawn_if_enabled(
    bus: Arc<dyn Bus>,
    store: Arc<dyn Store>,
    settings: &Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    if !settings.enumerator.audit_events {
        return Ok(None);
    }
    let client = M365Client::new(&settings.m365)
        .context("configuring the Microsoft 365 client for the audit feeds")?;
    Ok(Some(tokio::spawn(run_poller(
        bus,
        client,
        store,
        settings.clone(),
        shutdown,
    ))))
}
