//! The lifecycle of one forward, per fingerprint: new → open (silent, reminded
//! every `reminder_interval`) → resolved or approved, and back to new.
//!
//! ```text
//!  (none/approved/resolved) ──sighting, not approved──▶ open  ⇒ alert "new" (episode + 1)
//!  open ──sighting, last alert ≥ interval ago──▶ open         ⇒ alert "reminder"
//!  open ──sighting, sooner──▶ open                            ⇒ nothing
//!  any ──sighting, every target approved──▶ approved          ⇒ nothing (suppressed)
//!  open ──complete scan of its tenant without it──▶ resolved  ⇒ alert "resolved"
//!  resolved ──sighting older than the scan that resolved it── ⇒ nothing (stale)
//!  open ──verified removal (command result, see `coverage`)──▶ removed
//!  removed ──sighting, still disabled──▶ removed               ⇒ nothing
//!  removed ──sighting, forwarding again──▶ open                ⇒ alert "reappeared"
//! ```
//!
//! A summary resolves only what it covered: signals whose checks all ran, minus
//! the mailboxes it names as not (completely) read.
//!
//! Exactly one alert per (fingerprint, state): deciding an alert and recording it
//! are one atomic step, so replicas, redelivered detections and a scanner's
//! redelivered job all find the state already moved on. The decided alert is
//! written to the outbox in that same step (see `outbox`), so a notifier dying
//! before it delivered loses nothing.
//!
//! Two implementations of [`Tracker`] share these semantics and one test suite:
//! - [`StoreTracker`] over any [`Store`] (the in-memory store of the CLI's all-in-one
//!   mode), atomic through a short per-fingerprint lock;
//! - [`crate::redis_tracker::RedisTracker`], one Lua script per detection (one
//!   round trip), for production.
//!
//! Times are stored as fixed-width RFC 3339 strings ([`stamp`]) so Lua can compare
//! them as strings. "Newer" is decided by scan times (`observed_at`, the summary's
//! `started_at`), never by arrival order: a late summary cannot resolve what a newer
//! scan saw, and a late detection cannot reopen what a newer scan resolved.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fwdwatch_shared::contracts::{AlertKind, Detection, Signal, TenantSummary};
use fwdwatch_shared::store::{Keys, Store, StoreError, allowlist};

use crate::alert::{PendingAlert, stamp};
use crate::campaign;

/// The hash fields of `Keys::detection` (see its docs).
pub mod field {
    pub const DETECTION: &str = "detection";
    pub const STATE: &str = "state";
    pub const FIRST_SEEN: &str = "first_seen";
    pub const LAST_SEEN: &str = "last_seen";
    pub const LAST_ALERT_AT: &str = "last_alert_at";
    pub const TENANT_ID: &str = "tenant_id";
    pub const MAILBOX: &str = "mailbox";
    pub const SIGNAL: &str = "signal";
    pub const EPISODE: &str = "episode";
    pub const REMINDERS: &str = "reminders";
    pub const RESOLVED_AT: &str = "resolved_at";
    pub const RESOLVED_SCAN: &str = "resolved_scan";
    /// The campaign sets this detection is a member of, newline-separated key names.
    pub const CAMPAIGN_KEYS: &str = "campaign_keys";
    /// When a verified removal took the forward away.
    pub const REMOVED_AT: &str = "removed_at";
}

/// Values of the `state` field.
pub mod state {
    pub const OPEN: &str = "open";
    pub const APPROVED: &str = "approved";
    pub const RESOLVED: &str = "resolved";
    /// fwdwatch removed it (verified): silent while it stays disabled or gone;
    /// forwarding again is a `reappeared` alert.
    pub const REMOVED: &str = "removed";
}

/// What a sighting of a detection led to.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// Alert (new or reminder); already in the outbox.
    Alert(Box<PendingAlert>),
    /// Open and already alerted recently.
    Silent,
    /// Every target is approved.
    Suppressed,
    /// Older than the scan that resolved it.
    Stale,
}

/// Why the lifecycle could not decide.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The Lua path talks to Redis directly.
    #[error("Redis {op} failed: {source}")]
    Redis {
        op: &'static str,
        #[source]
        source: redis::RedisError,
    },
    #[error("the state of {0} stayed locked by another notifier; will retry")]
    Busy(String),
    #[error("unexpected answer from the lifecycle script: {0}")]
    Protocol(String),
}

/// The settings the lifecycle needs.
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    pub reminder_interval: Duration,
    pub state_ttl: Duration,
    pub outbox_lease: Duration,
    pub campaign_min_tenants: usize,
    pub campaign_min_mailboxes: usize,
    pub campaign_settle: Duration,
}

impl LifecycleConfig {
    pub fn from_notifier(config: &crate::settings::NotifierConfig) -> Self {
        Self {
            reminder_interval: config.reminder_interval,
            state_ttl: config.state_ttl,
            outbox_lease: config.outbox_lease,
            campaign_min_tenants: config.campaign_min_tenants,
            campaign_min_mailboxes: config.campaign_min_mailboxes,
            campaign_settle: config.campaign_settle,
        }
    }
}

/// Decides and records what each finding means. Object safe.
#[async_trait]
pub trait Tracker: Send + Sync + std::fmt::Debug {
    /// One sighting of a detection at `now`.
    async fn observe(
        &self,
        detection: &Detection,
        now: DateTime<Utc>,
    ) -> Result<Observed, LifecycleError>;

    /// A tenant's scan ended: resolve its open detections the scan would have seen
    /// and did not. Returns the "resolved" alerts (already in the outbox).
    async fn resolve(
        &self,
        summary: &TenantSummary,
        now: DateTime<Utc>,
    ) -> Result<Vec<PendingAlert>, LifecycleError>;

    /// Deletes a delivered alert's outbox entry (in one round trip where the
    /// backend can).
    async fn clear_outbox(&self, alert_id: &str) -> Result<(), LifecycleError>;
}

/// Whether a detection can be tracked at all; the reason otherwise (dead-lettered).
///
/// Fingerprints become part of key names and Lua-built keys, so they are limited
/// to a safe alphabet (the classifier emits lowercase hex).
pub fn validate(detection: &Detection) -> Result<(), String> {
    let fp = &detection.fingerprint;
    if fp.is_empty()
        || fp.len() > 128
        || !fp
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "fingerprint {fp:?} is not 1-128 characters of [A-Za-z0-9_-]"
        ));
    }
    if detection.tenant_id.trim().is_empty() {
        return Err("tenant_id is empty".into());
    }
    if detection.targets.is_empty() {
        return Err("a detection without targets forwards nowhere".into());
    }
    if detection.targets.iter().any(|t| t.is_empty()) {
        return Err("a target is empty".into());
    }
    Ok(())
}

/// The signals whose detections a summary may resolve (every check they need ran,
/// with no tenant-wide gap).
pub fn covered_signals(summary: &TenantSummary) -> Vec<Signal> {
    Signal::ALL
        .into_iter()
        .filter(|s| summary.covers(*s))
        .collect()
}

/// The mailboxes (lower-cased) whose reads a summary is missing: their open
/// detections are not resolved by it.
pub fn mailboxes_not_read(summary: &TenantSummary) -> BTreeSet<String> {
    summary
        .mailboxes_not_read()
        .map(|m| m.trim().to_lowercase())
        .collect()
}

/// Seconds since the Unix epoch, with milliseconds.
pub(crate) fn epoch(time: DateTime<Utc>) -> f64 {
    time.timestamp_millis() as f64 / 1000.0
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(365 * 100))
}

/// The lifecycle over any [`Store`]: several commands per sighting, made atomic per
/// fingerprint by a short lock (`Keys::detection_lock`).
#[derive(Debug, Clone)]
pub struct StoreTracker {
    store: Arc<dyn Store>,
    keys: Keys,
    config: LifecycleConfig,
}

/// How long a lock is held at most (a notifier that dies holding it).
const LOCK_TTL: Duration = Duration::from_secs(10);
/// How long to wait for a lock before giving the message back.
const LOCK_WAIT: Duration = Duration::from_secs(3);

impl StoreTracker {
    pub fn new(store: Arc<dyn Store>, keys: Keys, config: LifecycleConfig) -> Self {
        Self {
            store,
            keys,
            config,
        }
    }

    async fn lock(&self, fingerprint: &str) -> Result<String, LifecycleError> {
        let key = self.keys.detection_lock(fingerprint);
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        let mut pause = Duration::from_millis(2);
        loop {
            if self.store.claim(&key, LOCK_TTL).await? {
                return Ok(key);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(LifecycleError::Busy(fingerprint.to_owned()));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    async fn unlock(&self, key: &str) {
        if let Err(error) = self.store.release(key).await {
            // It expires on its own after LOCK_TTL.
            tracing::warn!(%error, "Could not release a detection lock.");
        }
    }

    async fn all_approved(&self, d: &Detection, now: DateTime<Utc>) -> Result<bool, StoreError> {
        for target in &d.targets {
            let approval = allowlist::is_approved(
                self.store.as_ref(),
                &self.keys,
                &d.tenant_id,
                d.mailbox_address(),
                d.signal,
                target,
                now,
            )
            .await;
            match approval {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(false),
                Err(StoreError::InvalidData { .. }) => {
                    // An entry nobody can read approves nothing: alert.
                    tracing::warn!(
                        tenant = %d.tenant_id,
                        mailbox = %d.mailbox_address(),
                        target = %target,
                        "Allowlist entry does not decode; treating the forward as not approved."
                    );
                    return Ok(false);
                }
                Err(error) => return Err(error),
            }
        }
        Ok(!d.targets.is_empty())
    }

    async fn hset_all(&self, key: &str, fields: &[(&str, &str)]) -> Result<(), StoreError> {
        for (f, v) in fields {
            self.store.hash_set(key, f, v).await?;
        }
        Ok(())
    }

    /// Takes an open detection out of the open indexes (approved or resolved).
    async fn close_open(
        &self,
        fingerprint: &str,
        tenant: &str,
        hash: &BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        let fp = [fingerprint.to_owned()];
        self.store
            .set_remove(&self.keys.open_fingerprints(tenant), &fp)
            .await?;
        self.store
            .zrem(&self.keys.reminders_due(), fingerprint)
            .await?;
        if let Some(keys) = hash.get(field::CAMPAIGN_KEYS) {
            for key in keys.lines().filter(|k| !k.is_empty()) {
                self.store.set_remove(key, &fp).await?;
            }
        }
        Ok(())
    }

    async fn save_outbox(
        &self,
        alert: &PendingAlert,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        crate::outbox::save(
            self.store.as_ref(),
            &self.keys,
            alert,
            now + chrono_duration(self.config.outbox_lease),
        )
        .await
    }

    async fn observe_locked(
        &self,
        d: &Detection,
        now: DateTime<Utc>,
    ) -> Result<Observed, LifecycleError> {
        let fp = d.fingerprint.as_str();
        let det_key = self.keys.detection(fp);
        let hash = self.store.hash_get_all(&det_key).await?;
        let get = |f: &str| hash.get(f).map(String::as_str);
        let current_state = get(field::STATE);
        let obs = stamp(d.observed_at);
        let now_s = stamp(now);
        let json = serde_json::to_string(d)
            .map_err(|e| LifecycleError::Protocol(format!("cannot encode the detection: {e}")))?;

        if current_state == Some(state::RESOLVED)
            && get(field::RESOLVED_SCAN).is_some_and(|scan| obs.as_str() < scan)
        {
            return Ok(Observed::Stale);
        }
        let is_current = get(field::LAST_SEEN).is_none_or(|seen| obs.as_str() >= seen);

        if self.all_approved(d, now).await? {
            if current_state == Some(state::OPEN) {
                self.close_open(fp, &d.tenant_id, &hash).await?;
            }
            if is_current {
                self.hset_all(
                    &det_key,
                    &[
                        (field::DETECTION, &json),
                        (field::LAST_SEEN, &obs),
                        (field::TENANT_ID, &d.tenant_id),
                        (field::MAILBOX, d.mailbox_address()),
                        (field::SIGNAL, d.signal.as_str()),
                    ],
                )
                .await?;
            }
            self.store
                .hash_set(&det_key, field::STATE, state::APPROVED)
                .await?;
            self.store.expire(&det_key, self.config.state_ttl).await?;
            return Ok(Observed::Suppressed);
        }

        let campaign_keys: Vec<String> = d.targets.iter().map(|t| self.keys.campaign(t)).collect();

        if current_state == Some(state::REMOVED) {
            // Removed by fwdwatch: quiet while it stays disabled (or the sighting
            // is from a scan that started before the removal).
            let before_removal = get(field::REMOVED_AT).is_some_and(|at| obs.as_str() < at);
            if before_removal || !d.enabled {
                if is_current {
                    self.hset_all(
                        &det_key,
                        &[(field::DETECTION, &json), (field::LAST_SEEN, &obs)],
                    )
                    .await?;
                }
                self.store.expire(&det_key, self.config.state_ttl).await?;
                return Ok(Observed::Silent);
            }
        }

        if current_state == Some(state::OPEN) {
            if is_current {
                self.hset_all(
                    &det_key,
                    &[(field::DETECTION, &json), (field::LAST_SEEN, &obs)],
                )
                .await?;
                for key in &campaign_keys {
                    self.store.expire(key, self.config.state_ttl).await?;
                }
            }
            self.store.expire(&det_key, self.config.state_ttl).await?;
            let remind_before = stamp(now - chrono_duration(self.config.reminder_interval));
            let due = get(field::LAST_ALERT_AT).is_some_and(|last| last <= remind_before.as_str());
            if !(is_current && due) {
                return Ok(Observed::Silent);
            }
            let episode = get(field::EPISODE)
                .and_then(|e| e.parse().ok())
                .unwrap_or(1u64);
            let n = get(field::REMINDERS)
                .and_then(|r| r.parse().ok())
                .unwrap_or(0u64)
                + 1;
            let alert = PendingAlert {
                alert_id: format!("reminder:{fp}:{episode}:{n}"),
                kind: AlertKind::Reminder,
                tenant_id: d.tenant_id.clone(),
                fingerprint: Some(fp.to_owned()),
                episode,
                reminder: n,
                first_seen: get(field::FIRST_SEEN).and_then(|t| t.parse().ok()),
                created_at: now,
                detection: Some(d.clone()),
                collector: None,
                victims: vec![],
                coverage: None,
                sinks_done: vec![],
                sinks_parked: vec![],
                event_done: false,
            };
            // Outbox first: if we die before the state says "reminded", a redelivery
            // decides the same reminder (same id) instead of losing it.
            self.save_outbox(&alert, now).await?;
            self.hset_all(
                &det_key,
                &[
                    (field::REMINDERS, &n.to_string()),
                    (field::LAST_ALERT_AT, &now_s),
                ],
            )
            .await?;
            self.store
                .zadd(
                    &self.keys.reminders_due(),
                    fp,
                    epoch(now) + self.config.reminder_interval.as_secs_f64(),
                )
                .await?;
            return Ok(Observed::Alert(Box::new(alert)));
        }

        // Not open (never seen, approved before, resolved, or removed and forwarding
        // again): a new episode.
        let episode = get(field::EPISODE)
            .and_then(|e| e.parse().ok())
            .unwrap_or(0u64)
            + 1;
        let kind = if current_state == Some(state::REMOVED) {
            AlertKind::Reappeared
        } else {
            AlertKind::New
        };
        let alert = PendingAlert {
            alert_id: format!("{}:{fp}:{episode}", kind.as_str()),
            kind,
            tenant_id: d.tenant_id.clone(),
            fingerprint: Some(fp.to_owned()),
            episode,
            reminder: 0,
            first_seen: Some(d.observed_at),
            created_at: now,
            detection: Some(d.clone()),
            collector: None,
            victims: vec![],
            coverage: None,
            sinks_done: vec![],
            sinks_parked: vec![],
            event_done: false,
        };
        self.save_outbox(&alert, now).await?;
        self.store.hash_delete(&det_key, field::RESOLVED_AT).await?;
        self.store
            .hash_delete(&det_key, field::RESOLVED_SCAN)
            .await?;
        let joined = campaign_keys.join("\n");
        self.hset_all(
            &det_key,
            &[
                (field::DETECTION, &json),
                (field::FIRST_SEEN, &obs),
                (field::LAST_SEEN, &obs),
                (field::LAST_ALERT_AT, &now_s),
                (field::TENANT_ID, &d.tenant_id),
                (field::MAILBOX, d.mailbox_address()),
                (field::SIGNAL, d.signal.as_str()),
                (field::REMINDERS, "0"),
                (field::CAMPAIGN_KEYS, &joined),
                (field::EPISODE, &episode.to_string()),
                // Last: the commit point other notifiers look at.
                (field::STATE, state::OPEN),
            ],
        )
        .await?;
        self.store.expire(&det_key, self.config.state_ttl).await?;
        self.store
            .set_add(&self.keys.open_fingerprints(&d.tenant_id), &[fp.to_owned()])
            .await?;
        self.store
            .zadd(
                &self.keys.reminders_due(),
                fp,
                epoch(now) + self.config.reminder_interval.as_secs_f64(),
            )
            .await?;
        for target in &d.targets {
            campaign::note_victim(
                self.store.as_ref(),
                &self.keys,
                &self.config,
                target,
                fp,
                now,
            )
            .await?;
        }
        Ok(Observed::Alert(Box::new(alert)))
    }

    async fn resolve_one(
        &self,
        fp: &str,
        tenant: &str,
        covered: &BTreeSet<&str>,
        not_read: &BTreeSet<String>,
        scan_started: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<PendingAlert>, LifecycleError> {
        let det_key = self.keys.detection(fp);
        let hash = self.store.hash_get_all(&det_key).await?;
        let get = |f: &str| hash.get(f).map(String::as_str);
        if get(field::STATE) != Some(state::OPEN) {
            // Approved or expired meanwhile: not open any more.
            self.store
                .set_remove(&self.keys.open_fingerprints(tenant), &[fp.to_owned()])
                .await?;
            self.store.zrem(&self.keys.reminders_due(), fp).await?;
            return Ok(None);
        }
        if get(field::SIGNAL).is_none_or(|s| !covered.contains(s)) {
            return Ok(None);
        }
        if get(field::MAILBOX).is_some_and(|m| not_read.contains(&m.to_lowercase())) {
            // This mailbox was not (completely) read: its forwards stay open.
            return Ok(None);
        }
        if get(field::LAST_SEEN).is_none_or(|seen| seen >= scan_started) {
            // Seen by this scan or a newer one: this summary is late.
            return Ok(None);
        }
        let episode = get(field::EPISODE)
            .and_then(|e| e.parse().ok())
            .unwrap_or(1u64);
        let alert = PendingAlert {
            alert_id: format!("resolved:{fp}:{episode}"),
            kind: AlertKind::Resolved,
            tenant_id: tenant.to_owned(),
            fingerprint: Some(fp.to_owned()),
            episode,
            reminder: 0,
            first_seen: get(field::FIRST_SEEN).and_then(|t| t.parse().ok()),
            created_at: now,
            detection: get(field::DETECTION).and_then(|j| serde_json::from_str(j).ok()),
            collector: None,
            victims: vec![],
            coverage: None,
            sinks_done: vec![],
            sinks_parked: vec![],
            event_done: false,
        };
        self.save_outbox(&alert, now).await?;
        self.close_open(fp, tenant, &hash).await?;
        let now_s = stamp(now);
        self.hset_all(
            &det_key,
            &[
                (field::RESOLVED_AT, &now_s),
                (field::RESOLVED_SCAN, scan_started),
                (field::STATE, state::RESOLVED),
            ],
        )
        .await?;
        self.store.expire(&det_key, self.config.state_ttl).await?;
        Ok(Some(alert))
    }
}

#[async_trait]
impl Tracker for StoreTracker {
    async fn observe(
        &self,
        detection: &Detection,
        now: DateTime<Utc>,
    ) -> Result<Observed, LifecycleError> {
        let lock = self.lock(&detection.fingerprint).await?;
        let result = self.observe_locked(detection, now).await;
        self.unlock(&lock).await;
        result
    }

    async fn resolve(
        &self,
        summary: &TenantSummary,
        now: DateTime<Utc>,
    ) -> Result<Vec<PendingAlert>, LifecycleError> {
        let covered = covered_signals(summary);
        if covered.is_empty() {
            return Ok(Vec::new());
        }
        let covered: BTreeSet<&str> = covered.iter().map(|s| s.as_str()).collect();
        let tenant = summary.tenant.id.as_str();
        let present: BTreeSet<&str> = summary.fingerprints.iter().map(String::as_str).collect();
        let scan_started = stamp(summary.started_at);
        let not_read = mailboxes_not_read(summary);
        let open = self
            .store
            .set_members(&self.keys.open_fingerprints(tenant))
            .await?;
        let mut alerts = Vec::new();
        for fp in open.iter().filter(|fp| !present.contains(fp.as_str())) {
            let lock = self.lock(fp).await?;
            let result = self
                .resolve_one(fp, tenant, &covered, &not_read, &scan_started, now)
                .await;
            self.unlock(&lock).await;
            if let Some(alert) = result? {
                alerts.push(alert);
            }
        }
        Ok(alerts)
    }

    async fn clear_outbox(&self, alert_id: &str) -> Result<(), LifecycleError> {
        Ok(crate::outbox::remove(self.store.as_ref(), &self.keys, alert_id).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_refuses_what_cannot_be_keyed() {
        let mut d = Detection::example();
        assert!(validate(&d).is_ok());
        d.fingerprint = "a:b".into();
        assert!(validate(&d).is_err());
        d.fingerprint = String::new();
        assert!(validate(&d).is_err());
        let mut d = Detection::example();
        d.targets.clear();
        assert!(validate(&d).unwrap_err().contains("targets"));
        let mut d = Detection::example();
        d.tenant_id = " ".into();
        assert!(validate(&d).is_err());
    }

    #[test]
    fn stamps_sort_as_times() {
        let a: DateTime<Utc> = "2026-11-28T19:00:04Z".parse().expect("t");
        let b: DateTime<Utc> = "2026-11-28T19:00:04.5Z".parse().expect("t");
        let c: DateTime<Utc> = "2026-11-28T19:00:10Z".parse().expect("t");
        assert!(stamp(a) < stamp(b) && stamp(b) < stamp(c));
        assert_eq!(stamp(a).len(), stamp(b).len());
        assert_eq!(stamp(a).parse::<DateTime<Utc>>().expect("parses back"), a);
    }
}
