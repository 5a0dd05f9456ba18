//! Coverage: is each tenant still being read? And forwards fwdwatch removed.
//!
//! An attacker with admin rights can revoke the MSP's consent, remove the Exchange
//! role or end the GDAP relationship; the tenant then quietly drops out of scans
//! (technique 28). Every `TenantSummary` updates the tenant's coverage record
//! (`Keys::tenant_coverage`):
//!
//! ```text
//!  ok ──dark scan, permanent reason (consent, role, relationship)──▶ lost ⇒ "coverage_lost"
//!  ok ──dark scans × notifier.coverage_failures, passing reason──▶ lost   ⇒ "coverage_lost"
//!  lost ──still dark, last alert ≥ reminder interval ago──▶ lost        ⇒ "coverage_lost" (reminder)
//!  lost ──complete scan──▶ ok                                           ⇒ "coverage_restored"
//! ```
//!
//! Only a tenant that was read before can lose coverage (one never read was never
//! covered: its summary says why). While a tenant is dark its open detections are
//! kept — their state TTL refreshed on every dark summary — and never resolved
//! (resolution needs a complete scan anyway).
//!
//! A verified removal (a `CommandResult` on `{ns}.events`) moves the removed
//! forward's state to `removed`: it leaves the open list, gets no reminders, and if
//! a later scan sees it forwarding again the lifecycle alerts `reappeared`.
//!
//! Both updates read and rewrite a few keys through the [`Store`], under a short
//! per-tenant (per-fingerprint) lock, so two notifiers cannot both decide.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use fwdwatch_shared::contracts::{
    AlertKind, CommandAction, CommandOutcome, CommandResult, Coverage, ErrorKind, TenantSummary,
};
use fwdwatch_shared::store::{Keys, Store, StoreError};

use crate::alert::{PendingAlert, stamp};
use crate::lifecycle::{LifecycleConfig, LifecycleError, field, state};

/// Fields of the coverage hash (see `Keys::tenant_coverage`).
pub mod cov {
    pub const STATE: &str = "state";
    pub const SINCE: &str = "since";
    pub const REASON: &str = "reason";
    pub const REMEDY: &str = "remedy";
    pub const CHECK: &str = "check";
    pub const FAILURES: &str = "failures";
    pub const LAST_READABLE_AT: &str = "last_readable_at";
    pub const LAST_COMPLETE_AT: &str = "last_complete_at";
    pub const LAST_SUMMARY_AT: &str = "last_summary_at";
    pub const LAST_ALERT_AT: &str = "last_alert_at";
    pub const EPISODE: &str = "episode";
    pub const REMINDERS: &str = "reminders";
    pub const WARNINGS: &str = "warnings";
    pub const SUMMARY: &str = "summary";
    pub const TENANT_NAME: &str = "tenant_name";
    /// Values of `state`.
    pub const OK: &str = "ok";
    pub const LOST: &str = "lost";
}

const LOCK_TTL: Duration = Duration::from_secs(10);
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// Keeps each tenant's coverage and the removed state of forwards.
#[derive(Debug, Clone)]
pub struct CoverageTracker {
    store: Arc<dyn Store>,
    keys: Keys,
    config: LifecycleConfig,
    /// Dark scans in a row, for a passing reason, before coverage counts as lost.
    failures_to_lose: u32,
}

/// Whether a failure will not pass by itself: someone must act.
fn is_permanent(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ConsentMissing
            | ErrorKind::Forbidden
            | ErrorKind::Unauthorized
            | ErrorKind::RelationshipEnded
    )
}

impl CoverageTracker {
    pub fn new(
        store: Arc<dyn Store>,
        keys: Keys,
        config: LifecycleConfig,
        failures_to_lose: u32,
    ) -> Self {
        Self {
            store,
            keys,
            config,
            failures_to_lose: failures_to_lose.max(1),
        }
    }

    async fn lock(&self, key: String) -> Result<String, LifecycleError> {
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        let mut pause = Duration::from_millis(2);
        loop {
            if self.store.claim(&key, LOCK_TTL).await? {
                return Ok(key);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LifecycleError::Busy(key));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    async fn unlock(&self, key: &str) {
        if let Err(error) = self.store.release(key).await {
            tracing::warn!(%error, "Could not release a coverage lock; it expires on its own.");
        }
    }

    /// Records a tenant's summary; the coverage alert it calls for, if any (not
    /// yet delivered: the caller hands it to the dispatcher).
    pub async fn observe(
        &self,
        summary: &TenantSummary,
        now: DateTime<Utc>,
    ) -> Result<Option<PendingAlert>, LifecycleError> {
        let tenant = summary.tenant.id.as_str();
        let lock = self.lock(self.keys.tenant_lock(tenant)).await?;
        let result = self.observe_locked(summary, now).await;
        self.unlock(&lock).await;
        result
    }

    async fn set(&self, key: &str, fields: &[(&str, String)]) -> Result<(), StoreError> {
        for (f, v) in fields {
            self.store.hash_set(key, f, v).await?;
        }
        Ok(())
    }

    async fn observe_locked(
        &self,
        summary: &TenantSummary,
        now: DateTime<Utc>,
    ) -> Result<Option<PendingAlert>, LifecycleError> {
        let tenant = summary.tenant.id.as_str();
        let key = self.keys.tenant_coverage(tenant);
        let h = self.store.hash_get_all(&key).await?;
        let get = |f: &str| h.get(f).map(String::as_str);
        let started = stamp(summary.started_at);
        if get(cov::LAST_SUMMARY_AT).is_some_and(|last| started.as_str() < last) {
            // Older than a summary already counted: a late redelivery.
            return Ok(None);
        }
        self.store
            .set_add(&self.keys.tenants(), &[tenant.to_owned()])
            .await?;
        let summary_json = serde_json::to_string(summary)
            .map_err(|e| LifecycleError::Protocol(format!("cannot encode the summary: {e}")))?;
        self.set(
            &key,
            &[
                (cov::LAST_SUMMARY_AT, started.clone()),
                (cov::SUMMARY, summary_json),
                (cov::WARNINGS, summary.warnings.join("\n")),
                (cov::TENANT_NAME, summary.tenant.display_name.clone()),
            ],
        )
        .await?;
        let lost = get(cov::STATE) == Some(cov::LOST);
        let episode: u64 = get(cov::EPISODE).and_then(|e| e.parse().ok()).unwrap_or(0);
        let now_s = stamp(now);

        if !summary.is_dark() {
            let mut fields = vec![
                (cov::LAST_READABLE_AT, started.clone()),
                (cov::FAILURES, "0".to_owned()),
            ];
            if summary.is_complete() {
                fields.push((cov::LAST_COMPLETE_AT, started.clone()));
            }
            if lost && summary.is_complete() {
                fields.push((cov::STATE, cov::OK.to_owned()));
                self.set(&key, &fields).await?;
                let alert = self.alert(
                    AlertKind::CoverageRestored,
                    format!("coverage_restored:{tenant}:{episode}"),
                    summary,
                    Coverage {
                        tenant_name: summary.tenant.display_name.clone(),
                        reason: get(cov::REASON).unwrap_or_default().to_owned(),
                        remedy: None,
                        check: None,
                        last_complete_scan: Some(summary.started_at),
                        since: get(cov::SINCE)
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(summary.started_at),
                        open_detections: self.open_count(tenant).await?,
                    },
                    episode,
                    0,
                    now,
                );
                self.save(&alert, now).await?;
                return Ok(Some(alert));
            }
            if !lost && get(cov::STATE).is_none() {
                fields.push((cov::STATE, cov::OK.to_owned()));
            }
            self.set(&key, &fields).await?;
            return Ok(None);
        }

        // Dark: keep what is open (it must not age out while nobody can look).
        self.keep_open(tenant).await?;
        let failures: u32 = get(cov::FAILURES)
            .and_then(|f| f.parse().ok())
            .unwrap_or(0u32)
            .saturating_add(1);
        self.set(&key, &[(cov::FAILURES, failures.to_string())])
            .await?;
        let (check, error) = match summary.first_error() {
            Some((check, error)) => (Some(*check), Some(error)),
            None => (None, None),
        };
        let reason = error
            .map(|e| e.message.clone())
            .unwrap_or_else(|| "the tenant could not be read".to_owned());
        let remedy = error.and_then(|e| e.remedy.clone());
        let permanent = error.is_some_and(|e| is_permanent(e.kind));
        let read_before = get(cov::LAST_READABLE_AT).is_some();
        let last_complete_scan = get(cov::LAST_COMPLETE_AT).and_then(|s| s.parse().ok());

        if !lost {
            if !read_before || !(permanent || failures >= self.failures_to_lose) {
                return Ok(None);
            }
            let episode = episode + 1;
            self.set(
                &key,
                &[
                    (cov::STATE, cov::LOST.to_owned()),
                    (cov::SINCE, now_s.clone()),
                    (cov::REASON, reason.clone()),
                    (cov::REMEDY, remedy.clone().unwrap_or_default()),
                    (
                        cov::CHECK,
                        check
                            .map(|c| format!("{c:?}").to_lowercase())
                            .unwrap_or_default(),
                    ),
                    (cov::EPISODE, episode.to_string()),
                    (cov::REMINDERS, "0".to_owned()),
                    (cov::LAST_ALERT_AT, now_s),
                ],
            )
            .await?;
            let alert = self.alert(
                AlertKind::CoverageLost,
                format!("coverage_lost:{tenant}:{episode}"),
                summary,
                Coverage {
                    tenant_name: summary.tenant.display_name.clone(),
                    reason,
                    remedy,
                    check,
                    last_complete_scan,
                    since: now,
                    open_detections: self.open_count(tenant).await?,
                },
                episode,
                0,
                now,
            );
            self.save(&alert, now).await?;
            return Ok(Some(alert));
        }

        // Still dark: remind like any open alert.
        let remind_before = stamp(now - chrono_duration(self.config.reminder_interval));
        if get(cov::LAST_ALERT_AT).is_none_or(|last| last > remind_before.as_str()) {
            return Ok(None);
        }
        let n: u64 = get(cov::REMINDERS)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0u64)
            + 1;
        self.set(
            &key,
            &[
                (cov::REMINDERS, n.to_string()),
                (cov::LAST_ALERT_AT, now_s),
                (cov::REASON, reason.clone()),
            ],
        )
        .await?;
        let alert = self.alert(
            AlertKind::CoverageLost,
            format!("coverage_lost:{tenant}:{episode}:{n}"),
            summary,
            Coverage {
                tenant_name: summary.tenant.display_name.clone(),
                reason,
                remedy,
                check,
                last_complete_scan,
                since: get(cov::SINCE).and_then(|s| s.parse().ok()).unwrap_or(now),
                open_detections: self.open_count(tenant).await?,
            },
            episode,
            n,
            now,
        );
        self.save(&alert, now).await?;
        Ok(Some(alert))
    }

    #[allow(clippy::too_many_arguments)]
    fn alert(
        &self,
        kind: AlertKind,
        alert_id: String,
        summary: &TenantSummary,
        coverage: Coverage,
        episode: u64,
        reminder: u64,
        now: DateTime<Utc>,
    ) -> PendingAlert {
        PendingAlert {
            alert_id,
            kind,
            tenant_id: summary.tenant.id.clone(),
            fingerprint: None,
            episode,
            reminder,
            first_seen: None,
            created_at: now,
            detection: None,
            collector: None,
            victims: vec![],
            coverage: Some(coverage),
            sinks_done: vec![],
            sinks_parked: vec![],
            event_done: false,
        }
    }

    /// Writes the alert to the outbox before the caller delivers it, like every
    /// decided alert: a notifier dying in between loses nothing.
    async fn save(&self, alert: &PendingAlert, now: DateTime<Utc>) -> Result<(), StoreError> {
        crate::outbox::save(
            self.store.as_ref(),
            &self.keys,
            alert,
            now + chrono_duration(self.config.outbox_lease),
        )
        .await
    }

    async fn open_count(&self, tenant: &str) -> Result<u64, StoreError> {
        self.store
            .set_card(&self.keys.open_fingerprints(tenant))
            .await
    }

    /// Refreshes the state TTL of the tenant's open detections.
    async fn keep_open(&self, tenant: &str) -> Result<(), StoreError> {
        for fp in self
            .store
            .set_members(&self.keys.open_fingerprints(tenant))
            .await?
        {
            self.store
                .expire(&self.keys.detection(&fp), self.config.state_ttl)
                .await?;
        }
        Ok(())
    }

    /// A command's result: a verified removal moves the removed forward(s) to
    /// `removed`. Anything else changes nothing.
    pub async fn command_result(
        &self,
        result: &CommandResult,
        now: DateTime<Utc>,
    ) -> Result<usize, LifecycleError> {
        if result.action != CommandAction::Remove || result.outcome != CommandOutcome::Verified {
            return Ok(0);
        }
        let mut fingerprints: Vec<&str> = result
            .removed_fingerprints
            .iter()
            .map(String::as_str)
            .collect();
        fingerprints.push(result.fingerprint.as_str());
        fingerprints.sort_unstable();
        fingerprints.dedup();
        let mut changed = 0;
        for fp in fingerprints.into_iter().filter(|f| !f.trim().is_empty()) {
            let lock = self.lock(self.keys.detection_lock(fp)).await?;
            let outcome = self.mark_removed(fp, &result.tenant_id, now).await;
            self.unlock(&lock).await;
            if outcome? {
                changed += 1;
            }
        }
        Ok(changed)
    }

    async fn mark_removed(
        &self,
        fp: &str,
        tenant: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let det_key = self.keys.detection(fp);
        let hash = self.store.hash_get_all(&det_key).await?;
        if hash.is_empty() {
            // Never seen by this notifier: nothing to take off the open list.
            return Ok(false);
        }
        let owner = hash
            .get(field::TENANT_ID)
            .map(String::as_str)
            .unwrap_or(tenant);
        let fp_list = [fp.to_owned()];
        self.store
            .set_remove(&self.keys.open_fingerprints(owner), &fp_list)
            .await?;
        self.store.zrem(&self.keys.reminders_due(), fp).await?;
        if let Some(keys) = hash.get(field::CAMPAIGN_KEYS) {
            for key in keys.lines().filter(|k| !k.is_empty()) {
                self.store.set_remove(key, &fp_list).await?;
            }
        }
        self.store
            .hash_set(&det_key, field::REMOVED_AT, &stamp(now))
            .await?;
        self.store
            .hash_set(&det_key, field::STATE, state::REMOVED)
            .await?;
        self.store.expire(&det_key, self.config.state_ttl).await?;
        Ok(true)
    }
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(365 * 100))
}
