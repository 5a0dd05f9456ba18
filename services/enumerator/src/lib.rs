//! The enumerator: lists the customer tenants and publishes one scan job per
//! tenant per run, on a cron schedule or once.
//!
//! ```text
//! cron tick / --once ──▶ list tenants ──▶ minus exclusions ──▶ ScanJob × N ──▶ {ns}.scan (job)
//!                        GDAP: active delegatedAdminRelationships (partner token, paged),
//!                              grouped by customer tenant
//!                        static: enumerator.tenants
//! ```
//!
//! A run has an id (`run-20261128T190000Z-7f3a`) that every job, detection and
//! summary of that run carries. Jobs are published with publisher confirms, all
//! of them before the run counts as done. A listing that fails is retried with
//! back-off and then reported as an error — never turned into a silent empty run;
//! a listing that finds no tenant at all is an error too.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use fwdwatch_shared::bus::{Bus, ROUTE_JOB, RabbitBus, Topology, outgoing};
use fwdwatch_shared::config::{EnumeratorSettings, Settings};
use fwdwatch_shared::contracts::{ScanJob, TenantRef};
use fwdwatch_shared::m365::{M365Client, M365Error};
use fwdwatch_shared::shutdown::CancellationToken;
use tracing::Instrument;

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
    let listed = if settings.source == "static" {
        static_tenants(settings)
    } else {
        let client = client.ok_or(EnumerateError::NoClient)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match client.list_gdap_customers().await {
                Ok(tenants) => break tenants,
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
    let (tenants, excluded) = apply_exclusions(listed, &settings.exclude_tenants);
    if tenants.is_empty() {
        return Err(EnumerateError::Empty(format!(
            "the {} source listed {total} tenant(s), {excluded} excluded",
            settings.source
        )));
    }
    Ok((tenants, excluded))
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

async fn enqueue(
    bus: Arc<dyn Bus>,
    client: Option<&M365Client>,
    settings: &Settings,
    policy: ListPolicy,
    topology: &Topology,
    run_id: String,
    now: DateTime<Utc>,
) -> anyhow::Result<RunReport> {
    let (tenants, excluded) = list_tenants(client, &settings.enumerator, policy).await?;
    let exchange = topology.scan_exchange();
    let messages = tenants
        .iter()
        .map(|tenant| {
            let job = ScanJob::new(&run_id, tenant.clone(), now);
            // One trace per tenant: each job starts its own root span, and the scan,
            // its findings, the alerts and any decision on them continue it.
            let span = tracing::info_span!(
                parent: None,
                "publish",
                otel.name = %format!("publish {exchange}"),
                otel.kind = "producer",
                messaging.system = "rabbitmq",
                tenant = %tenant.id,
                run = %run_id,
                trace_id = tracing::field::Empty,
            );
            fwdwatch_shared::bus::record_trace_id(&span);
            let _entered = span.enter();
            tracing::debug!(tenant = %tenant.id, name = %tenant.display_name, job = %job.job_id, "Enqueuing.");
            outgoing(&exchange, ROUTE_JOB, &job)
        })
        .collect();
    bus.publish_all(messages)
        .await
        .context("publishing the scan jobs")?;
    tracing::info!(
        run = %run_id,
        jobs = tenants.len(),
        excluded,
        source = %settings.enumerator.source,
        "Enqueued one scan job per tenant."
    );
    Ok(RunReport {
        run_id,
        tenants,
        excluded,
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
        if let Err(error) = run_once(bus.clone(), client.as_ref(), settings).await {
            tracing::error!(error = %format!("{error:#}"), "Enumeration run failed; no jobs were published.");
        }
    }
}

/// The enumerator service on its schedule: RabbitMQ from `amqp`, Microsoft 365
/// from `m365` (GDAP source).
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    parse_schedule(&settings.enumerator.schedule)?;
    let client = client_for(&settings)?;
    let bus: Arc<dyn Bus> = Arc::new(RabbitBus::connect(&settings.amqp).await?);
    run_scheduled(bus, client, &settings, shutdown).await
}

/// One run and exit (`--once`).
pub async fn run_single(settings: Settings) -> anyhow::Result<RunReport> {
    let client = client_for(&settings)?;
    let bus: Arc<dyn Bus> = Arc::new(RabbitBus::connect(&settings.amqp).await?);
    run_once(bus, client.as_ref(), &settings).await
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
