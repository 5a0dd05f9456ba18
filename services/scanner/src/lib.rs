//! The scanner: consumes scan jobs, scans one tenant per job, publishes one
//! detection per external forward and one summary per tenant.
//!
//! ```text
//! {ns}.scan.jobs ──ScanJob──▶ ScanHandler ──scan_tenant()──▶ M365Client (Exchange admin API)
//!                                  │
//!                                  └──publish_all (confirmed)──▶ {ns}.findings
//!                                       detection.<signal> × N, then summary
//! ```
//!
//! - The scan of one tenant — every signal read and resolved, where a forward
//!   becomes a detection — lives in `fwdwatch_shared::forwards` ([`scan_tenant`]),
//!   shared with the actioner's re-read and the CLI's `fwdwatch report`. This crate
//!   is the queue around it.
//! - [`run`] / [`run_with`] consume the job queue: up to
//!   `scanner.concurrent_tenants` jobs at once (the prefetch), any number of
//!   scanner processes side by side on the same queue.
//! - A job is acked only after its detections and summary are confirmed by the
//!   broker. A transient failure (throttling, 5xx) requeues it; at the last allowed
//!   delivery the partial result is published instead, with the failed checks on
//!   the summary. Permanent failures (no consent, no Exchange role) are published
//!   on the summary and acked. A redelivered job yields the same fingerprints and
//!   detection ids (both derive from the run id and the forward, not the delivery).

pub use fwdwatch_shared::forwards::{ScanOptions, TenantScan, scan_tenant, scan_tenant_with};

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chrono::Utc;
use fwdwatch_shared::bus::{
    Bus, ConsumerOptions, DeliveryInfo, HandleError, Handler, ROUTE_SUMMARY, RabbitBus, Topology,
    detection_route, outgoing, run_consumer,
};
use fwdwatch_shared::config::Settings;
use fwdwatch_shared::contracts::ScanJob;
use fwdwatch_shared::m365::M365Client;
use fwdwatch_shared::shutdown::CancellationToken;
use fwdwatch_shared::telemetry::metrics::{attrs, metrics};

/// Handles one `ScanJob`: scan, publish, decide ack / retry.
pub struct ScanHandler {
    client: M365Client,
    bus: Arc<dyn Bus>,
    topology: Topology,
    /// The job queue's delivery limit: on the last delivery a transient failure is
    /// published as a partial result rather than requeued.
    delivery_limit: u32,
    options: ScanOptions,
}

impl ScanHandler {
    pub fn new(
        client: M365Client,
        bus: Arc<dyn Bus>,
        topology: Topology,
        delivery_limit: u32,
    ) -> Self {
        Self {
            client,
            bus,
            topology,
            delivery_limit,
            options: ScanOptions::default(),
        }
    }

    /// Scans with these limits instead of the defaults.
    #[must_use]
    pub fn with_options(mut self, options: ScanOptions) -> Self {
        self.options = options;
        self
    }

    /// Publishes a tenant's detections then its summary, all confirmed together.
    pub async fn publish(&self, scan: &TenantScan) -> Result<(), fwdwatch_shared::bus::BusError> {
        let findings = self.topology.findings_exchange();
        let mut messages: Vec<_> = scan
            .detections
            .iter()
            .map(|d| outgoing(&findings, &detection_route(d.signal), d))
            .collect();
        messages.push(outgoing(&findings, ROUTE_SUMMARY, &scan.summary));
        self.bus.publish_all(messages).await
    }
}

#[async_trait]
impl Handler<ScanJob> for ScanHandler {
    async fn handle(&self, job: ScanJob, delivery: &DeliveryInfo) -> Result<(), HandleError> {
        tracing::info!(
            tenant = %job.tenant.id,
            run = %job.run_id,
            delivery = delivery.delivery_count + 1,
            "Scanning tenant."
        );
        let started = std::time::Instant::now();
        let scan = scan_tenant_with(&self.client, &job, Utc::now(), &self.options).await;
        let last_chance = delivery.delivery_count.saturating_add(1) >= self.delivery_limit;
        if let Some((check, error)) = scan.transient_error()
            && !last_chance
        {
            // Requeue: another attempt (maybe on another scanner) can complete it.
            return Err(HandleError::Retry(anyhow::anyhow!(
                "{check:?} check of tenant {} failed transiently: {} ({:?})",
                job.tenant.id,
                error.message,
                error.kind
            )));
        }
        self.publish(&scan).await.map_err(|e| {
            HandleError::Retry(anyhow::Error::new(e).context("publishing findings"))
        })?;
        let failed: Vec<String> = scan
            .summary
            .checks
            .iter()
            .filter_map(|c| {
                c.error
                    .as_ref()
                    .map(|e| format!("{:?}: {:?}", c.check, e.kind))
            })
            .collect();
        record_metrics(&scan, started.elapsed());
        tracing::info!(
            tenant = %job.tenant.id,
            run = %job.run_id,
            mailboxes = scan.summary.mailboxes,
            detections = scan.detections.len(),
            failed_checks = ?failed,
            "Tenant scanned."
        );
        Ok(())
    }
}

/// Counts a published scan in the process's metrics (`/metrics`).
fn record_metrics(scan: &TenantScan, elapsed: Duration) {
    let m = metrics();
    let outcome = if scan.summary.is_complete() {
        "complete"
    } else if scan
        .summary
        .checks
        .first()
        .is_some_and(|c| c.error.is_some())
    {
        "failed"
    } else {
        "partial"
    };
    m.tenants_scanned
        .add(1, &attrs([("outcome", outcome.to_owned())]));
    m.scan_duration.record(elapsed.as_secs_f64(), &[]);
    m.mailboxes_checked.add(scan.summary.mailboxes, &[]);
    m.rules_checked.add(
        scan.summary.inbox_rules,
        &attrs([("kind", "inbox".to_owned())]),
    );
    m.rules_checked.add(
        scan.summary.transport_rules,
        &attrs([("kind", "transport".to_owned())]),
    );
    for d in &scan.detections {
        m.detections.add(
            1,
            &attrs([
                ("signal", d.signal.as_str().to_owned()),
                ("severity", d.severity.as_str().to_owned()),
            ]),
        );
    }
}

/// Consumes the scan-job queue on `bus` with `client` until `shutdown`.
pub async fn run_with(
    bus: Arc<dyn Bus>,
    client: M365Client,
    settings: &Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let topology = Topology::from_settings(&settings.amqp);
    bus.declare(&topology)
        .await
        .context("declaring the queue topology")?;
    let options = ConsumerOptions {
        // One delivery = one tenant: the prefetch is how many tenants run at once.
        prefetch: u16::try_from(settings.scanner.concurrent_tenants.max(1)).unwrap_or(u16::MAX),
        delivery_limit: settings.amqp.delivery_limit,
        retry_delay: Duration::from_secs(2),
    };
    let handler = Arc::new(
        ScanHandler::new(
            client,
            bus.clone(),
            topology.clone(),
            settings.amqp.delivery_limit,
        )
        .with_options(settings.scanner.scan_options()),
    );
    run_consumer::<ScanJob, _>(bus, &topology.scan_jobs_queue(), options, handler, shutdown)
        .await
        .context("consuming scan jobs")?;
    Ok(())
}

/// The scanner service: RabbitMQ from `amqp`, Microsoft 365 from `m365`.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let client = M365Client::new(&settings.m365).context("configuring the Microsoft 365 client")?;
    let bus: Arc<dyn Bus> = Arc::new(RabbitBus::connect(&settings.amqp).await?);
    run_with(bus, client, &settings, shutdown).await
}
