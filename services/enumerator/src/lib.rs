//! The enumerator: lists the customer tenants and publishes scan jobs —
//! continuously (the default: every tenant on a rolling cadence, see [`cadence`]),
//! one job per tenant per run on a cron schedule (`enumerator.mode = "cron"`), or
//! once (`--once`).
//!
//! ```text
//! cron tick / --once ──▶ list tenants ──▶ minus exclusions ──▶ ScanJob × N ──▶ {ns}.scan (job)
//!                        GDAP: active delegatedAdminRelationships (partner token, paged),
//!                              grouped by customer tenant
//!                        static: enumerator.tenants
//! ```
//!
//! With a store (the service always has one), the enumerator remembers every tenant
//! it listed (`Keys::known_tenants`): a tenant that drops out of the GDAP listing —
//! relationship terminated or expired, perhaps by an attacker — still gets a job,
//! marked not listed, so its lost coverage is reported instead of the tenant
//! silently vanishing (for `enumerator.unlisted_retention`). Each job carries the
//! relationship's end, so one ending soon is a warning on the tenant's summary.
//!
//! A run has an id (`run-20261128T190000Z-7f3a`) that every job, detection and
//! summary of that run carries. Jobs are published with publisher confirms, all
//! of them before the run counts as done. A listing that fails is retried with
//! back-off and then reported as an error — never turned into a silent empty run;
//! a listing that finds no tenant at all is an error too.
//!
//! With `enumerator.audit_events` on, [`audit`] also reads every tenant's Exchange
//! audit feed and publishes an immediate rescan when it records a forwarding change.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use fwdwatch_shared::bus::{Bus, Outgoing, ROUTE_JOB, RabbitBus, Topology, outgoing};
use fwdwatch_shared::config::{EnumeratorSettings, Settings};
use fwdwatch_shared::contracts::{Relationship, ScanJob, TenantRef};
use fwdwatch_shared::m365::{M365Client, M365Error};
use fwdwatch_shared::shutdown::CancellationToken;
use fwdwatch_shared::store::{Keys, Store};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

pub mod audit;
pub mod cadence;
pub mod schedule;

/// How hard one run tries to list the tenants before it is reported as failed
/// (each attempt is already retried inside the client for throttling and 5xx).
#[derive(Debug, Clone, Copy)]
pub struct ListPolicy {
    pub attempts: u32,
    /// Wait after the first failed attempt; grows linearly.
    pub wait: Duration,
}

impl Default for ListPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            wait: Duration::from_secs(5),
        }
    }
}

/// Why a run published nothing.
#[derive(Debug, thiserror::Error)]
pub enum EnumerateError {
    #[error("listing GDAP customers failed after {attempts} attempts: {source}")]
    Listing {
        attempts: u32,
        #[source]
        source: M365Error,
    },
    #[error(
        "enumerator.source = \"gdap\" needs Microsoft 365 credentials (m365.client_id and a secret, certificate or refresh token)"
    )]
    NoClient,
    #[error("no tenant to scan: {0}")]
    Empty(String),
}

/// What one run enqueued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub run_id: String,
    /// The tenants a job was published for, in order.
    pub tenants: Vec<TenantRef>,
    /// Tenants listed but skipped by `enumerator.exclude_tenants`.
    pub excluded: usize,
    /// Tenants listed before and missing now (their jobs report lost coverage).
    pub unlisted: Vec<String>,
}

/// One tenant of a run, with the relationship it was listed under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub tenant: TenantRef,
    pub relationship: Option<Relationship>,
}

/// What the enumerator remembers of a tenant it listed (`Keys::known_tenants`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Known {
    display_name: String,
    #[serde(default)]
    default_domain: Option<String>,
    last_listed: DateTime<Utc>,
    #[serde(default)]
    ends_at: Option<DateTime<Utc>>,
}

/// A fresh run id: UTC time plus 4 random hex digits (two enumerators started in
/// the same second still differ).
pub fn new_run_id(now: DateTime<Utc>) -> String {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("run-{}-{}", now.format("%Y%m%dT%H%M%SZ"), &suffix[..4])
}

/// Parses `enumerator.schedule`: cron with seconds, e.g. `0 0 19 * * *` (daily,
/// 19:00 UTC).
pub fn parse_schedule(expression: &str) -> anyhow::Result<cron::Schedule> {
    cron::Schedule::from_str(expression.trim())
        .map_err(|e| anyhow::anyhow!("enumerator.schedule {expression:?} is not a cron expression with seconds (e.g. \"0 0 19 * * *\"): {e}"))
}

/// The next time `schedule` fires after `after`.
pub fn next_tick(schedule: &cron::Schedule, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule.after(&after).next()
}

/// Drops the excluded tenants (ids compared case-insensitively) and duplicates.
pub fn apply_exclusions(tenants: Vec<TenantRef>, exclude: &[String]) -> (Vec<TenantRef>, usize) {
    let excluded: HashSet<String> = exclude.iter().map(|t| t.trim().to_lowercase()).collect();
    let mut seen = HashSet::new();
    let before = tenants.len();
    let kept: Vec<TenantRef> = tenants
        .into_iter()
        .filter(|t| !excluded.contains(&t.id.trim().to_lowercase()))
        .filter(|t| seen.insert(t.id.trim().to_lowercase()))
        .collect();
    let dropped = before - kept.len();
    (kept, dropped)
}

/// The tenants of `enumerator.tenants` (the static source).
pub fn static_tenants(settings: &EnumeratorSettings) -> Vec<TenantRef> {
    settings
        .tenants
        .iter()
        .map(|t| TenantRef {
            id: t.id.clone(),
            display_name: t.display_name.clone(),
            default_domain: t.default_domain.clone(),
        })
        .collect()
}

/// Lists the tenants of one run from the configured source, exclusions applied.
pub async fn list_tenants(
    client: Option<&M365Client>,
    settings: &EnumeratorSettings,
    policy: ListPolicy,
) -> Result<(Vec<TenantRef>, usize), EnumerateError> {
    list_relationships(client, settings, policy)
        .await
        .map(|(listed, excluded)| (listed.into_iter().map(|l| l.tenant).collect(), excluded))
}

/// [`list_tenants`], with the relationship each tenant was listed under.
pub async fn list_relationships(
    client: Option<&M365Client>,
    settings: &EnumeratorSettings,
    policy: ListPolicy,
) -> Result<(Vec<Listed>, usize), EnumerateError> {
    let listed: Vec<Listed> = if settings.source == "static" {
        static_tenants(settings)
            .into_iter()
            .map(|tenant| Listed {
                tenant,
                relationship: None,
            })
            .collect()
    } else {
        let client = client.ok_or(EnumerateError::NoClient)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match client.list_gdap_relationships().await {
                Ok(customers) => {
                    break customers
                        .into_iter()
                        .map(|c| Listed {
                            tenant: c.tenant,
                            relationship: Some(Relationship {
                                listed: true,
                                ends_at: c.ends_at,
                                status: "active".to_owned(),
                            }),
                        })
                        .collect();
                }
                Err(e) if attempt < policy.attempts && !is_permanent(&e) => {
                    let wait = policy.wait * attempt;
                    tracing::warn!(error = %e, attempt, ?wait, "Listing GDAP customers failed; retrying.");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    return Err(EnumerateError::Listing {
                        attempts: attempt,
                        source: e,
                    });
                }
            }
        }
    };
    let total = listed.len();
    let excluded_ids: HashSet<String> = settings
        .exclude_tenants
        .iter()
        .map(|t| t.trim().to_lowercase())
        .collect();
    let mut seen = HashSet::new();
    let kept: Vec<Listed> = listed
        .into_iter()
        .filter(|l| !excluded_ids.contains(&l.tenant.id.trim().to_lowercase()))
        .filter(|l| seen.insert(l.tenant.id.trim().to_lowercase()))
        .collect();
    let excluded = total - kept.len();
    if kept.is_empty() {
        return Err(EnumerateError::Empty(format!(
            "the {} source listed {total} tenant(s), {excluded} excluded",
            settings.source
        )));
    }
    Ok((kept, excluded))
}

/// Adds the tenants listed before and missing now (marked not listed), and
/// remembers this listing. Tenants missing for longer than `retention` are
/// forgotten. A store that cannot be read changes nothing (the run goes on with
/// what was listed; the next run catches up).
pub(crate) async fn with_unlisted(
    store: &dyn Store,
    keys: &Keys,
    mut listed: Vec<Listed>,
    settings: &EnumeratorSettings,
    now: DateTime<Utc>,
) -> (Vec<Listed>, Vec<String>) {
    let key = keys.known_tenants();
    let known = match store.hash_get_all(&key).await {
        Ok(known) => known,
        Err(error) => {
            tracing::warn!(%error, "Could not read the known tenants; tenants missing from the listing are not reported this run.");
            return (listed, Vec::new());
        }
    };
    let listed_ids: HashSet<String> = listed
        .iter()
        .map(|l| l.tenant.id.trim().to_lowercase())
        .collect();
    let excluded: HashSet<String> = settings
        .exclude_tenants
        .iter()
        .map(|t| t.trim().to_lowercase())
        .collect();
    let retention = chrono::Duration::from_std(settings.unlisted_retention)
        .unwrap_or(chrono::Duration::days(30));
    let mut unlisted = Vec::new();
    for (id, json) in &known {
        if listed_ids.contains(&id.to_lowercase()) || excluded.contains(&id.to_lowercase()) {
            continue;
        }
        let Ok(k) = serde_json::from_str::<Known>(json) else {
            tracing::warn!(tenant = %id, "A known tenant's record does not decode; skipping it.");
            continue;
        };
        if now - k.last_listed > retention {
            if let Err(error) = store.hash_delete(&key, id).await {
                tracing::warn!(%error, tenant = %id, "Could not forget a long-unlisted tenant.");
            }
            continue;
        }
        tracing::warn!(tenant = %id, name = %k.display_name, last_listed = %k.last_listed, "Tenant no longer in the GDAP listing: its job reports lost coverage.");
        unlisted.push(id.clone());
        listed.push(Listed {
            tenant: TenantRef {
                id: id.clone(),
                display_name: k.display_name,
                default_domain: k.default_domain,
            },
            relationship: Some(Relationship {
                listed: false,
                ends_at: k.ends_at,
                status: "not listed".to_owned(),
            }),
        });
    }
    for l in listed
        .iter()
        .filter(|l| l.relationship.as_ref().is_none_or(|r| r.listed))
    {
        let record = Known {
            display_name: l.tenant.display_name.clone(),
            default_domain: l.tenant.default_domain.clone(),
            last_listed: now,
            ends_at: l.relationship.as_ref().and_then(|r| r.ends_at),
        };
        let Ok(json) = serde_json::to_string(&record) else {
            continue;
        };
        if let Err(error) = store
            .hash_set(&key, &l.tenant.id.to_lowercase(), &json)
            .await
        {
            tracing::warn!(%error, "Could not remember a listed tenant.");
            break;
        }
    }
    (listed, unlisted)
}

/// Consent or credential problems do not go away by asking again in a minute.
fn is_permanent(e: &M365Error) -> bool {
    !e.is_transient()
}

/// One run: list the tenants and publish a confirmed `ScanJob` for each.
pub async fn run_once(
    bus: Arc<dyn Bus>,
    client: Option<&M365Client>,
    settings: &Settings,
) -> anyhow::Result<RunReport> {
    run_once_with(bus, client, settings, ListPolicy::default()).await
}

/// [`run_once`] with an explicit listing retry policy (tests use short waits).
pub async fn run_once_with(
    bus: Arc<dyn Bus>,
    client: Option<&M365Client>,
    settings: &Settings,
    policy: ListPolicy,
) -> anyhow::Result<RunReport> {
    run_once_full(bus, client, None, settings, policy).await
}

/// [`run_once`] remembering the tenants it lists in `store`, so one that drops out
/// of the listing is still scanned and reported (what the service does).
pub async fn run_once_with_store(
    bus: Arc<dyn Bus>,
    client: Option<&M365Client>,
    store: &dyn Store,
    settings: &Settings,
) -> anyhow::Result<RunReport> {
    run_once_full(bus, client, Some(store), settings, ListPolicy::default()).await
}

async fn run_once_full(
    bus: Arc<dyn Bus>,
    client: Option<&M365Client>,
    store: Option<&dyn Store>,
    settings: &Settings,
    policy: ListPolicy,
) -> anyhow::Result<RunReport> {
    let topology = Topology::from_settings(&settings.amqp);
    bus.declare(&topology)
        .await
        .context("declaring the queue topology")?;
    let now = Utc::now();
    let run_id = new_run_id(now);
    let span = tracing::info_span!("enumerate", run = %run_id, trace_id = tracing::field::Empty);
    fwdwatch_shared::bus::record_trace_id(&span);
    enqueue(
        bus,
        client,
        store,
        settings,
        policy,
        &topology,
        run_id.clone(),
        now,
    )
    .instrument(span)
    .await
    .with_context(|| format!("run {run_id}"))
}

#[allow(clippy::too_many_arguments)]
async fn enqueue(
    bus: Arc<dyn Bus>,
    client: Option<&M365Client>,
    store: Option<&dyn Store>,
    settings: &Settings,
    policy: ListPolicy,
    topology: &Topology,
    run_id: String,
    now: DateTime<Utc>,
) -> anyhow::Result<RunReport> {
    let (listed, excluded) = list_relationships(client, &settings.enumerator, policy).await?;
    let (listed, unlisted) = match store {
        Some(store) => {
            let keys = Keys::from_settings(&settings.redis);
            with_unlisted(store, &keys, listed, &settings.enumerator, now).await
        }
        None => (listed, Vec::new()),
    };
    let exchange = topology.scan_exchange();
    let messages = listed
        .iter()
        .map(|l| {
            let mut job = ScanJob::new(&run_id, l.tenant.clone(), now);
            job.relationship = l.relationship.clone();
            job_message(&exchange, &job)
        })
        .collect();
    bus.publish_all(messages)
        .await
        .context("publishing the scan jobs")?;
    tracing::info!(
        run = %run_id,
        jobs = listed.len(),
        excluded,
        unlisted = unlisted.len(),
        source = %settings.enumerator.source,
        "Enqueued one scan job per tenant."
    );
    Ok(RunReport {
        run_id,
        tenants: listed.into_iter().map(|l| l.tenant).collect(),
        excluded,
        unlisted,
    })
}

/// The Microsoft 365 client, when the source needs one.
pub fn client_for(settings: &Settings) -> anyhow::Result<Option<M365Client>> {
    if settings.enumerator.source == "static" {
        return Ok(None);
    }
    M365Client::new(&settings.m365)
        .map(Some)
        .context("configuring the Microsoft 365 client")
}

/// Runs [`run_once`] at every tick of `enumerator.schedule` until `shutdown`. A
/// failed run is logged as an error and the next tick runs as usual.
pub async fn run_scheduled(
    bus: Arc<dyn Bus>,
    client: Option<M365Client>,
    settings: &Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_scheduled_with(bus, client, None, settings, shutdown).await
}

/// [`run_scheduled`], remembering listed tenants in `store` (see [`run_once_with_store`]).
pub async fn run_scheduled_with(
    bus: Arc<dyn Bus>,
    client: Option<M365Client>,
    store: Option<Arc<dyn Store>>,
    settings: &Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let schedule = parse_schedule(&settings.enumerator.schedule)?;
    // Declared at start, not at the first tick, so scanners can attach now.
    bus.declare(&Topology::from_settings(&settings.amqp))
        .await
        .context("declaring the queue topology")?;
    loop {
        let Some(next) = next_tick(&schedule, Utc::now()) else {
            tracing::warn!("The schedule never fires again; stopping.");
            return Ok(());
        };
        tracing::info!(next = %next, "Waiting for the next scheduled run.");
        let wait = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(wait) => {}
        }
        let run = match &store {
            Some(store) => {
                run_once_with_store(bus.clone(), client.as_ref(), store.as_ref(), settings).await
            }
            None => run_once(bus.clone(), client.as_ref(), settings).await,
        };
        if let Err(error) = run {
            tracing::error!(error = %format!("{error:#}"), "Enumeration run failed; no jobs were published.");
        }
    }
}

/// The enumerator service in its configured mode (`enumerator.mode`): continuous
/// scanning, or runs on the cron `enumerator.schedule`. RabbitMQ from `amqp`,
/// Microsoft 365 from `m365` (GDAP source), state in Redis.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let continuous = settings.enumerator.mode == "continuous";
    if !continuous {
        parse_schedule(&settings.enumerator.schedule)?;
    }
    let client = client_for(&settings)?;
    let bus: Arc<dyn Bus> = Arc::new(RabbitBus::connect(&settings.amqp).await?);
    let store = fwdwatch_shared::store::connect(&settings.redis)
        .await
        .context("connecting to Redis")?;
    // The poller stops with the service, also when the schedule fails on its own.
    let poller_stop = shutdown.child_token();
    let poller =
        audit::spawn_if_enabled(bus.clone(), store.clone(), &settings, poller_stop.clone())?;
    let result = if continuous {
        cadence::run_continuous(bus, client, store, &settings, shutdown).await
    } else {
        tokio::spawn({
            let (bus, settings, shutdown) = (bus.clone(), settings.clone(), shutdown.clone());
            async move { cadence::drain_left_queue(bus, &settings, shutdown).await }
        });
        run_scheduled_with(bus, client, Some(store), &settings, shutdown).await
    };
    poller_stop.cancel();
    if let Some(poller) = poller {
        let _ = poller.await;
    }
    result
}

/// One run and exit (`--once`).
pub async fn run_single(settings: Settings) -> anyhow::Result<RunReport> {
    let client = client_for(&settings)?;
    let bus: Arc<dyn Bus> = Arc::new(RabbitBus::connect(&settings.amqp).await?);
    let store = fwdwatch_shared::store::connect(&settings.redis)
        .await
        .context("connecting to Redis")?;
    run_once_with_store(bus, client.as_ref(), store.as_ref(), &settings).await
}

/// The message of one scan job, made under a root `publish` span of its own: one trace
/// per tenant scan, which the scan, its findings, the alerts and any decision on them
/// continue.
pub(crate) fn job_message(exchange: &str, job: &ScanJob) -> Outgoing {
    let span = tracing::info_span!(
        parent: None,
        "publish",
        otel.name = %format!("publish {exchange}"),
        otel.kind = "producer",
        messaging.system = "rabbitmq",
        tenant = %job.tenant.id,
        run = %job.run_id,
        trace_id = tracing::field::Empty,
    );
    fwdwatch_shared::bus::record_trace_id(&span);
    let _entered = span.enter();
    tracing::debug!(tenant = %job.tenant.id, name = %job.tenant.display_name, job = %job.job_id, "Enqueuing.");
    outgoing(exchange, ROUTE_JOB, job)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(id: &str) -> TenantRef {
        TenantRef {
            id: id.into(),
            display_name: id.into(),
            default_domain: None,
        }
    }

    #[test]
    fn schedule_parses_and_ticks() {
        let s = parse_schedule("0 0 19 * * *").expect("valid");
        let after = Utc
            .with_ymd_and_hms(2026, 11, 28, 18, 0, 0)
            .single()
            .expect("time");
        let next = next_tick(&s, after).expect("next");
        assert_eq!(
            next,
            Utc.with_ymd_and_hms(2026, 11, 28, 19, 0, 0)
                .single()
                .expect("time")
        );
        let after = Utc
            .with_ymd_and_hms(2026, 11, 28, 19, 0, 0)
            .single()
            .expect("time");
        assert_eq!(
            next_tick(&s, after).expect("next"),
            Utc.with_ymd_and_hms(2026, 11, 29, 19, 0, 0)
                .single()
                .expect("time")
        );
        let err = parse_schedule("every day").expect_err("invalid");
        assert!(err.to_string().contains("enumerator.schedule"));
        assert!(parse_schedule("0 */15 * * * *").is_ok());
    }

    #[test]
    fn exclusions_are_case_insensitive_and_dedupe() {
        let (kept, dropped) = apply_exclusions(
            vec![t("A"), t("b"), t("a"), t("C")],
            &["B".to_owned(), " c ".to_owned()],
        );
        assert_eq!(
            kept.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
            vec!["A"]
        );
        assert_eq!(dropped, 3);
    }

    #[test]
    fn run_ids_are_sortable_and_unique() {
        let now = Utc
            .with_ymd_and_hms(2026, 11, 28, 19, 0, 0)
            .single()
            .expect("time");
        let a = new_run_id(now);
        let b = new_run_id(now);
        assert!(a.starts_with("run-20261128T190000Z-"));
        assert_eq!(a.len(), "run-20261128T190000Z-7f3a".len());
        assert_ne!(a, b);
    }
}
