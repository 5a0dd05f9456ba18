//! Who owns which undelivered alert, and the writes that record delivery progress.
//!
//! Every outbox entry (`Keys::alert_outbox`, alert id → `PendingAlert` JSON) is listed
//! in exactly one notifier instance's index (`Keys::alert_outbox_owned`, scored by
//! when its owner retries it). An instance proves it is alive with a heartbeat key
//! (`Keys::notifier_heartbeat`, TTL `notifier.outbox_lease`) and is registered in
//! `Keys::notifier_instances`. When a heartbeat is gone, any live instance moves the
//! dead one's index into its own in one atomic step ([`OutboxStore::take_over`]), so
//! a crashed notifier's alerts go out again within the lease instead of sitting there.
//!
//! Progress writes are fenced by ownership: an instance that was presumed dead (cut
//! off from Redis longer than the lease) finds it no longer owns an entry and stops,
//! instead of writing over the new owner's progress.
//!
//! Two implementations: [`StoreOutbox`] over any [`Store`] (the CLI's in-memory mode;
//! the few multi-key steps there are guarded by a short claim), and
//! `super::redis::RedisOutbox`, one Lua script or atomic pipeline per step (production).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fwdwatch_shared::store::{Keys, Store, StoreError};

use crate::alert::{PendingAlert, stamp};
use crate::lifecycle::epoch;

/// Why an outbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The Lua path talks to Redis directly.
    #[error("Redis {op} failed: {source}")]
    Redis {
        op: &'static str,
        #[source]
        source: redis::RedisError,
    },
    #[error("outbox entry {alert_id}: {reason}")]
    Invalid { alert_id: String, reason: String },
}

impl OutboxError {
    /// Whether trying again later can succeed (Redis unreachable or restarting).
    pub fn is_transient(&self) -> bool {
        match self {
            OutboxError::Store(StoreError::Redis { source, .. })
            | OutboxError::Redis { source, .. } => {
                source.is_io_error()
                    || source.is_timeout()
                    || source.is_connection_dropped()
                    || source.is_connection_refusal()
                    || matches!(source.retry_method(), redis::RetryMethod::WaitAndRetry)
                    || source.code() == Some("LOADING")
            }
            _ => false,
        }
    }
}

/// What a fenced progress write found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Saved,
    /// Another instance took the entry over: stop delivering it.
    NotOwner,
    /// The entry is gone (someone completed it).
    Gone,
}

/// One dead instance whose entries were moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenOver {
    /// The dead instance (`legacy` for entries of notifiers from before owned outboxes).
    pub from: String,
    pub alerts: u64,
    /// The alert ids moved.
    pub ids: Vec<String>,
}

/// The ownership and progress operations of the outbox. Object safe.
#[async_trait]
pub trait OutboxStore: Send + Sync + std::fmt::Debug {
    /// Refreshes `owner`'s heartbeat for `lease` and registers it. Returns whether it
    /// was registered already (false: new, or presumed dead and taken over).
    async fn heartbeat(
        &self,
        owner: &str,
        started: &str,
        lease: Duration,
    ) -> Result<bool, OutboxError>;

    /// A graceful stop: drops the heartbeat, so another instance (or this one's
    /// restart) takes the remaining entries over at its next sweep.
    async fn release(&self, owner: &str) -> Result<(), OutboxError>;

    /// Moves the entries of every registered instance without a heartbeat (and the
    /// legacy index's due entries) into `owner`'s index, due at `now`.
    async fn take_over(
        &self,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<TakenOver>, OutboxError>;

    /// Adopts entries no index lists, created before `created_before`. Returns how many.
    async fn adopt_orphans(
        &self,
        owner: &str,
        created_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64, OutboxError>;

    /// Up to `limit` of `owner`'s entries due at `now`, earliest first.
    async fn due(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<String>, OutboxError>;

    /// One entry's JSON.
    async fn load(&self, alert_id: &str) -> Result<Option<String>, OutboxError>;

    /// Saves an entry's JSON (its progress) if `owner` still owns it; with
    /// `retry_at`, also when its owner retries it.
    async fn record(
        &self,
        owner: &str,
        alert_id: &str,
        entry: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<Recorded, OutboxError>;

    /// Deletes a delivered entry (whoever owns it: it is delivered).
    async fn complete(&self, owner: &str, alert_id: &str) -> Result<(), OutboxError>;

    /// Drops an id from `owner`'s index (its entry is gone).
    async fn forget(&self, owner: &str, alert_id: &str) -> Result<(), OutboxError>;
}

/// Writes (or rewrites) an outbox entry owned by `owner`, retried by it after `due`
/// (the generic path; the Lua lifecycle writes the same two things atomically).
pub async fn save(
    store: &dyn Store,
    keys: &Keys,
    owner: &str,
    alert: &PendingAlert,
    due: DateTime<Utc>,
) -> Result<(), StoreError> {
    let json = serde_json::to_string(alert).map_err(|e| StoreError::InvalidArgument {
        op: "outbox save",
        key: keys.alert_outbox(),
        reason: e.to_string(),
    })?;
    // The entry before its index: an index member without an entry is dropped by its
    // owner; an entry without an index member is adopted later by the safety net.
    store
        .hash_set(&keys.alert_outbox(), &alert.alert_id, &json)
        .await?;
    store
        .zadd(&keys.alert_outbox_owned(owner), &alert.alert_id, epoch(due))
        .await
}

/// Every undelivered alert (for tests; `status` for operators).
pub async fn pending(store: &dyn Store, keys: &Keys) -> Result<Vec<PendingAlert>, StoreError> {
    let all = store.hash_get_all(&keys.alert_outbox()).await?;
    Ok(all
        .values()
        .filter_map(|json| serde_json::from_str(json).ok())
        .collect())
}

/// One undelivered alert as `fwdwatch status` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEntry {
    pub alert_id: String,
    /// `new`, `reminder`… (`?` when the entry does not decode).
    pub kind: String,
    pub created_at: Option<DateTime<Utc>>,
    /// The instance whose index lists it; `None`: nobody (adopted by the safety net).
    pub owner: Option<String>,
    /// Whether the owner's heartbeat is there (false: it is taken over at the next sweep).
    pub owner_alive: bool,
    /// When its owner tries it next.
    pub retry_at: Option<DateTime<Utc>>,
    pub sinks_done: Vec<String>,
}

/// The outbox at one moment: what is pending, who owns it, which instances live.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutboxStatus {
    /// Oldest first.
    pub pending: Vec<PendingEntry>,
    /// Registered notifier instances and whether each is alive.
    pub instances: Vec<(String, bool)>,
}

/// Reads the outbox for `fwdwatch status` (and tests), through any [`Store`].
pub async fn status(store: &dyn Store, keys: &Keys) -> Result<OutboxStatus, StoreError> {
    let entries = store.hash_get_all(&keys.alert_outbox()).await?;
    let mut instances = Vec::new();
    let mut owners: BTreeMap<String, (String, f64)> = BTreeMap::new();
    let mut alive: BTreeMap<String, bool> = BTreeMap::new();
    let registered = store.set_members(&keys.notifier_instances()).await?;
    // Indexes of unregistered instances too (taken over mid-way, or written by hand).
    let prefix = keys.alert_outbox_owned("");
    let mut names: BTreeSet<String> = registered.clone();
    for key in store.scan_keys(&format!("{}*", glob(&prefix))).await? {
        if let Some(name) = key.strip_prefix(&prefix) {
            names.insert(name.to_owned());
        }
    }
    for name in &names {
        let live = store.exists(&keys.notifier_heartbeat(name)).await?;
        alive.insert(name.clone(), live);
        if registered.contains(name) {
            instances.push((name.clone(), live));
        }
        for (id, score) in store
            .zrange_by_score(&keys.alert_outbox_owned(name), f64::INFINITY, ALL)
            .await?
        {
            owners.insert(id, (name.clone(), score));
        }
    }
    for (id, score) in store
        .zrange_by_score(&keys.alert_outbox_due(), f64::INFINITY, ALL)
        .await?
    {
        owners
            .entry(id)
            .or_insert_with(|| ("legacy".to_owned(), score));
    }
    let mut pending: Vec<PendingEntry> = entries
        .iter()
        .map(|(id, json)| {
            let alert = serde_json::from_str::<PendingAlert>(json).ok();
            let owner = owners.get(id);
            PendingEntry {
                alert_id: id.clone(),
                kind: alert
                    .as_ref()
                    .map_or_else(|| "?".to_owned(), |a| a.kind.as_str().to_owned()),
                created_at: alert.as_ref().map(|a| a.created_at),
                owner: owner.map(|(o, _)| o.clone()),
                owner_alive: owner.is_some_and(|(o, _)| alive.get(o).copied().unwrap_or(false)),
                retry_at: owner.and_then(|(_, score)| from_epoch(*score)),
                sinks_done: alert.map(|a| a.sinks_done).unwrap_or_default(),
            }
        })
        .collect();
    pending.sort_by(|a, b| (a.created_at, &a.alert_id).cmp(&(b.created_at, &b.alert_id)));
    Ok(OutboxStatus { pending, instances })
}

fn from_epoch(seconds: f64) -> Option<DateTime<Utc>> {
    if !seconds.is_finite() {
        return None;
    }
    DateTime::from_timestamp_millis((seconds * 1000.0) as i64)
}

/// Escapes glob metacharacters (instance ids never hold any; the prefix might).
fn glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// "No limit" for `zrange_by_score` (Redis takes a count up to `i64::MAX`).
const ALL: usize = 1 << 40;

/// How long the generic take-over holds its claim.
const TAKEOVER_CLAIM: Duration = Duration::from_secs(10);

/// [`OutboxStore`] over any [`Store`]: several commands per step, the take-over
/// guarded by a claim. For the CLI's in-memory mode and tests; production uses the
/// Lua twin.
#[derive(Debug, Clone)]
pub struct StoreOutbox {
    store: Arc<dyn Store>,
    keys: Keys,
}

impl StoreOutbox {
    pub fn new(store: Arc<dyn Store>, keys: Keys) -> Self {
        Self { store, keys }
    }

    async fn owns(&self, owner: &str, alert_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .store
            .zrange_by_score(&self.keys.alert_outbox_owned(owner), f64::INFINITY, ALL)
            .await?
            .iter()
            .any(|(id, _)| id == alert_id))
    }
}

#[async_trait]
impl OutboxStore for StoreOutbox {
    async fn heartbeat(
        &self,
        owner: &str,
        started: &str,
        lease: Duration,
    ) -> Result<bool, OutboxError> {
        let registry = self.keys.notifier_instances();
        let was = self.store.set_members(&registry).await?.contains(owner);
        self.store
            .set(&self.keys.notifier_heartbeat(owner), started, Some(lease))
            .await?;
        self.store.set_add(&registry, &[owner.to_owned()]).await?;
        Ok(was)
    }

    async fn release(&self, owner: &str) -> Result<(), OutboxError> {
        self.store
            .delete(&self.keys.notifier_heartbeat(owner))
            .await?;
        Ok(())
    }

    async fn take_over(
        &self,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<TakenOver>, OutboxError> {
        let mine = self.keys.alert_outbox_owned(owner);
        let mut out = Vec::new();
        for dead in self
            .store
            .set_members(&self.keys.notifier_instances())
            .await?
        {
            if dead == owner
                || self
                    .store
                    .exists(&self.keys.notifier_heartbeat(&dead))
                    .await?
            {
                continue;
            }
            let lock = self.keys.notifier_takeover_lock(&dead);
            if !self.store.claim(&lock, TAKEOVER_CLAIM).await? {
                continue;
            }
            let source = self.keys.alert_outbox_owned(&dead);
            let ids = self
                .store
                .zrange_by_score(&source, f64::INFINITY, ALL)
                .await?;
            for (id, _) in &ids {
                self.store.zadd(&mine, id, epoch(now)).await?;
            }
            self.store.delete(&source).await?;
            self.store
                .set_remove(&self.keys.notifier_instances(), std::slice::from_ref(&dead))
                .await?;
            self.store.release(&lock).await?;
            out.push(TakenOver {
                from: dead,
                alerts: ids.len() as u64,
                ids: ids.into_iter().map(|(id, _)| id).collect(),
            });
        }
        let legacy = self
            .store
            .zrange_by_score(&self.keys.alert_outbox_due(), epoch(now), 1000)
            .await?;
        let mut moved = Vec::new();
        for (id, _) in legacy {
            // Whoever removes it from the legacy index owns it.
            if self.store.zrem(&self.keys.alert_outbox_due(), &id).await? {
                self.store.zadd(&mine, &id, epoch(now)).await?;
                moved.push(id);
            }
        }
        if !moved.is_empty() {
            out.push(TakenOver {
                from: "legacy".into(),
                alerts: moved.len() as u64,
                ids: moved,
            });
        }
        Ok(out)
    }

    async fn adopt_orphans(
        &self,
        owner: &str,
        created_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64, OutboxError> {
        let entries = self.store.hash_get_all(&self.keys.alert_outbox()).await?;
        if entries.is_empty() {
            return Ok(0);
        }
        let mut indexes = vec![
            self.keys.alert_outbox_owned(owner),
            self.keys.alert_outbox_due(),
        ];
        for inst in self
            .store
            .set_members(&self.keys.notifier_instances())
            .await?
        {
            if inst != owner {
                indexes.push(self.keys.alert_outbox_owned(&inst));
            }
        }
        let mut listed = BTreeSet::new();
        for index in &indexes {
            for (id, _) in self
                .store
                .zrange_by_score(index, f64::INFINITY, ALL)
                .await?
            {
                listed.insert(id);
            }
        }
        let cutoff = stamp(created_before);
        let mut adopted = 0;
        for (id, json) in entries {
            if listed.contains(&id) {
                continue;
            }
            let created = serde_json::from_str::<PendingAlert>(&json)
                .ok()
                .map(|a| stamp(a.created_at));
            if created.is_none_or(|c| c < cutoff) {
                self.store
                    .zadd(&self.keys.alert_outbox_owned(owner), &id, epoch(now))
                    .await?;
                adopted += 1;
            }
        }
        Ok(adopted)
    }

    async fn due(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<String>, OutboxError> {
        Ok(self
            .store
            .zrange_by_score(&self.keys.alert_outbox_owned(owner), epoch(now), limit)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    async fn load(&self, alert_id: &str) -> Result<Option<String>, OutboxError> {
        Ok(self
            .store
            .hash_get(&self.keys.alert_outbox(), alert_id)
            .await?)
    }

    async fn record(
        &self,
        owner: &str,
        alert_id: &str,
        entry: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<Recorded, OutboxError> {
        if !self.owns(owner, alert_id).await? {
            return Ok(Recorded::NotOwner);
        }
        if self
            .store
            .hash_get(&self.keys.alert_outbox(), alert_id)
            .await?
            .is_none()
        {
            self.forget(owner, alert_id).await?;
            return Ok(Recorded::Gone);
        }
        self.store
            .hash_set(&self.keys.alert_outbox(), alert_id, entry)
            .await?;
        if let Some(at) = retry_at {
            self.store
                .zadd(&self.keys.alert_outbox_owned(owner), alert_id, epoch(at))
                .await?;
        }
        Ok(Recorded::Saved)
    }

    async fn complete(&self, owner: &str, alert_id: &str) -> Result<(), OutboxError> {
        self.store
            .hash_delete(&self.keys.alert_outbox(), alert_id)
            .await?;
        self.forget(owner, alert_id).await
    }

    async fn forget(&self, owner: &str, alert_id: &str) -> Result<(), OutboxError> {
        self.store
            .zrem(&self.keys.alert_outbox_owned(owner), alert_id)
            .await?;
        Ok(())
    }
}
