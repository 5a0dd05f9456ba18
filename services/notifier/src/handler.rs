//! The findings handler: one `Detection` or `TenantSummary` in, state recorded and
//! alerts delivered, then the bus acks.
//!
//! Failure policy (at-least-once, nothing lost):
//! - a detection that can never be tracked (bad fingerprint, no targets) is
//!   rejected → dead-lettered with the reason;
//! - the store unavailable → the lifecycle call is tried again for up to
//!   [`RIDE_OUT`] (a Redis restart should not burn the message's deliveries), then
//!   `Retry`: the message is not acked and comes back;
//! - once the lifecycle decided, the alert sits in the outbox, so delivery
//!   problems never fail the message: the finding is acked and the dispatcher (or,
//!   if this notifier dies, the instance that takes its outbox over) finishes the
//!   delivery or parks it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use fwdwatch_shared::bus::{DeliveryInfo, HandleError, Handler};
use fwdwatch_shared::contracts::{CommandResult, Detection, TenantSummary};
use fwdwatch_shared::store::{Keys, Store, tenants};

use crate::coverage::CoverageTracker;
use crate::finding::Finding;
use crate::lifecycle::{LifecycleError, Observed, Tracker, validate};
use crate::outbox::Dispatcher;
use crate::sinks::text::visible;
use crate::stats::Stats;

/// How long one delivery of a finding waits for Redis to come back before the
/// finding is given back to the queue (each give-back counts towards
/// `amqp.delivery_limit`, after which it would be dead-lettered).
pub const RIDE_OUT: Duration = Duration::from_secs(5);

pub struct FindingsHandler {
    tracker: Arc<dyn Tracker>,
    coverage: Arc<CoverageTracker>,
    dispatcher: Arc<Dispatcher>,
    stats: Arc<Stats>,
    /// Where each tenant's latest summary is kept for the console (`store::tenants`).
    records: Option<TenantRecords>,
}

/// Where [`FindingsHandler`] records each tenant's latest scan.
struct TenantRecords {
    store: Arc<dyn Store>,
    keys: Keys,
    ttl: std::time::Duration,
}

impl FindingsHandler {
    pub fn new(
        tracker: Arc<dyn Tracker>,
        coverage: Arc<CoverageTracker>,
        dispatcher: Arc<Dispatcher>,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            tracker,
            coverage,
            dispatcher,
            stats,
            records: None,
        }
    }

    /// Also records every tenant's latest summary in `store` (`store::tenants`),
    /// kept for `ttl` after the tenant's last scan: the console's Tenants page and
    /// `fwdwatch up`'s summary read it.
    #[must_use]
    pub fn with_tenant_records(
        mut self,
        store: Arc<dyn Store>,
        keys: Keys,
        ttl: std::time::Duration,
    ) -> Self {
        self.records = Some(TenantRecords { store, keys, ttl });
        self
    }

    async fn command_result(&self, result: CommandResult) -> Result<(), HandleError> {
        let removed = self
            .coverage
            .command_result(&result, Utc::now())
            .await
            .map_err(retry)?;
        if removed > 0 {
            tracing::info!(
                tenant = %result.tenant_id,
                fingerprint = %result.fingerprint,
                command_id = %result.command_id,
                "Forward removed (verified): off the open list; it alerts again only if it comes back."
            );
        }
        Ok(())
    }

    async fn detection(&self, detection: Detection) -> Result<(), HandleError> {
        self.stats.detection();
        validate(&detection).map_err(|reason| {
            HandleError::Reject(anyhow::anyhow!(
                "detection {}: {reason}",
                detection.detection_id
            ))
        })?;
        let observed = self
            .ride_out(|| self.tracker.observe(&detection, Utc::now()))
            .await
            .map_err(retry)?;
        match observed {
            Observed::Alert(alert) => {
                self.dispatcher.deliver(*alert).await;
            }
            Observed::Silent => self.stats.silent(),
            Observed::Suppressed => {
                self.stats.suppressed();
                // Tenant text: invisible characters written out (no forged lines).
                tracing::debug!(
                    tenant = %visible(&detection.tenant_id),
                    mailbox = %visible(detection.mailbox_address()),
                    signal = %detection.signal,
                    targets = %visible(&detection.targets.join(",")),
                    fingerprint = %detection.fingerprint,
                    "Approved forward; not alerting."
                );
            }
            Observed::Stale => {
                self.stats.stale();
                tracing::debug!(fingerprint = %detection.fingerprint, observed_at = %detection.observed_at, "Detection older than the scan that resolved it; ignored.");
            }
        }
        Ok(())
    }

    async fn summary(&self, summary: TenantSummary) -> Result<(), HandleError> {
        self.stats.summary();
        if summary.tenant.id.trim().is_empty() {
            return Err(HandleError::Reject(anyhow::anyhow!(
                "summary {} has no tenant id",
                summary.job_id
            )));
        }
        if let Some((check, error)) = summary.first_error() {
            tracing::info!(
                tenant = %summary.tenant.id,
                check = ?check,
                error = %error.message,
                "Partial scan: detections its failed checks would have seen stay open."
            );
        }
        // Coverage first: a dark tenant's open detections are kept (not resolved:
        // resolution needs a complete scan anyway).
        if let Some(alert) = self
            .coverage
            .observe(&summary, Utc::now())
            .await
            .map_err(retry)?
        {
            self.dispatcher.deliver(alert).await;
        }
        let alerts = self
            .ride_out(|| self.tracker.resolve(&summary, Utc::now()))
            .await
            .map_err(retry)?;
        if let Some(records) = &self.records {
            // After resolving: a retry of this message resolves again (idempotent)
            // and then records; recording first could show a scan as done whose
            // resolutions were lost.
            tenants::record(
                records.store.as_ref(),
                &records.keys,
                &summary,
                records.ttl,
                Utc::now(),
            )
            .await
            .map_err(|error| {
                HandleError::Retry(
                    anyhow::Error::new(error).context("recording the tenant's latest scan"),
                )
            })?;
        }
        for alert in alerts {
            self.dispatcher.deliver(alert).await;
        }
        Ok(())
    }
}

impl FindingsHandler {
    /// Runs a lifecycle call, trying again while Redis is unreachable, for up to
    /// [`RIDE_OUT`] (not past shutdown). A repeated call is safe: a decision the
    /// lost attempt made is already in this notifier's outbox, which delivers it.
    async fn ride_out<T, F, Fut>(&self, call: F) -> Result<T, LifecycleError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, LifecycleError>>,
    {
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            match call().await {
                Err(error)
                    if is_unreachable(&error)
                        && started.elapsed() + pause < RIDE_OUT
                        && !self.dispatcher.stopping().is_cancelled() =>
                {
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = self.dispatcher.stopping().cancelled() => return Err(error),
                    }
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }
}

/// Redis is down or restarting (not: a script error, a decode error, a busy lock).
fn is_unreachable(error: &LifecycleError) -> bool {
    let source = match error {
        LifecycleError::Redis { source, .. } => source,
        LifecycleError::Store(fwdwatch_shared::store::StoreError::Redis { source, .. }) => source,
        _ => return false,
    };
    source.is_io_error()
        || source.is_connection_dropped()
        || source.is_connection_refusal()
        || source.is_timeout()
        || source.code() == Some("LOADING")
}

fn retry(error: LifecycleError) -> HandleError {
    HandleError::Retry(anyhow::Error::new(error).context("recording the finding"))
}

#[async_trait]
impl Handler<Finding> for FindingsHandler {
    async fn handle(&self, message: Finding, _delivery: &DeliveryInfo) -> Result<(), HandleError> {
        let result = match message {
            Finding::Detection(d) => self.detection(*d).await,
            Finding::Summary(s) => self.summary(*s).await,
            Finding::CommandResult(r) => self.command_result(*r).await,
        };
        match &result {
            Ok(()) => self.stats.handled(),
            Err(HandleError::Retry(_)) => self.stats.retried(),
            Err(HandleError::Reject(_)) => {}
        }
        result
    }
}
