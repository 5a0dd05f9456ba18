//! The findings handler: one `Detection` or `TenantSummary` in, state recorded and
//! alerts delivered, then the bus acks.
//!
//! Failure policy (at-least-once, nothing lost):
//! - a detection that can never be tracked (bad fingerprint, no targets) is
//!   rejected → dead-lettered with the reason;
//! - the store unavailable → `Retry`: the message is not acked and comes back;
//! - once the lifecycle decided, the alert sits in the outbox, so delivery
//!   problems never fail the message: the finding is acked and the dispatcher (or a
//!   sweeper) finishes the delivery or parks it.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use fwdwatch_shared::bus::{DeliveryInfo, HandleError, Handler};
use fwdwatch_shared::contracts::{CommandResult, Detection, TenantSummary};
use fwdwatch_shared::store::{Keys, Store, tenants};

use crate::coverage::CoverageTracker;
use crate::finding::Finding;
use crate::lifecycle::{LifecycleError, Observed, Tracker, validate};
use crate::outbox::Dispatcher;
use crate::stats::Stats;

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
            .tracker
            .observe(&detection, Utc::now())
            .await
            .map_err(retry)?;
        match observed {
            Observed::Alert(alert) => {
                self.dispatcher.deliver(*alert).await;
            }
            Observed::Silent => self.stats.silent(),
            Observed::Suppressed => {
                self.stats.suppressed();
                tracing::debug!(
                    tenant = %detection.tenant_id,
                    mailbox = %detection.mailbox_address(),
                    signal = %detection.signal,
                    targets = %detection.targets.join(","),
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
            .tracker
            .resolve(&summary, Utc::now())
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
