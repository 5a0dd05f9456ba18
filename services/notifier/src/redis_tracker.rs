//! The lifecycle on Redis in one round trip per finding: a Lua script decides and
//! records each sighting (`lua/observe.lua`), another resolves a tenant's scan
//! (`lua/resolve.lua`).
//!
//! Why a second path next to [`crate::lifecycle::StoreTracker`]: the `Store` trait
//! offers single commands, and a sighting touches the allowlist, the detection
//! hash, the open and reminder indexes, the campaign sets and the outbox — about ten
//! round trips, under a lock. The script does the same work atomically inside Redis
//! (no lock, no interleaving with another replica), which is what lets one notifier
//! keep up with a fleet-wide scan (see `docs/performance.md`).
//!
//! The connection is a `ConnectionManager` of its own, configured like the store's
//! (response timeout long enough for a script, reconnect in the background). A call
//! that meets a dropped connection is retried with the same call token: if Redis ran
//! the first attempt and only its answer was lost, the script recognises the token
//! and answers the same decision again, so the alert is neither lost nor doubled.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fwdwatch_shared::config::RedisSettings;
use fwdwatch_shared::contracts::{Detection, TenantSummary};
use fwdwatch_shared::store::{Keys, StoreError};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RetryMethod, Script};
use secrecy::ExposeSecret;

use crate::alert::{PendingAlert, stamp};
use crate::lifecycle::{
    LifecycleConfig, LifecycleError, Observed, Tracker, covered_signals, epoch, mailboxes_not_read,
};

const OBSERVE: &str = include_str!("lua/observe.lua");
const RESOLVE: &str = include_str!("lua/resolve.lua");

/// How long to wait for a script's answer (redis-rs defaults to 500 ms).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);
const RECONNECT_RETRIES: usize = 4;
/// Attempts per call: the first plus retries after a dropped connection.
const ATTEMPTS: u32 = 3;

/// The production [`Tracker`].
#[derive(Clone)]
pub struct RedisTracker {
    conn: ConnectionManager,
    keys: Keys,
    config: LifecycleConfig,
    observe: Script,
    resolve: Script,
}

impl std::fmt::Debug for RedisTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTracker")
            .field("prefix", &self.keys.prefix())
            .finish_non_exhaustive()
    }
}

impl RedisTracker {
    /// Connects to `settings.url` (never echoed: it may hold a password).
    pub async fn connect(
        settings: &RedisSettings,
        keys: Keys,
        config: LifecycleConfig,
    ) -> Result<Self, StoreError> {
        let client = redis::Client::open(settings.url.expose_secret()).map_err(|err| {
            StoreError::InvalidUrl {
                reason: err.to_string(),
            }
        })?;
        let manager = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_max_delay(Duration::from_secs(2));
        let conn = client
            .get_connection_manager_with_config(manager)
            .await
            .map_err(|source| StoreError::Connect {
                target: "redis.url".into(),
                source,
            })?;
        Ok(Self {
            conn,
            keys,
            config,
            observe: Script::new(OBSERVE),
            resolve: Script::new(RESOLVE),
        })
    }

    /// Runs a command (or pipeline) built by `build`, retrying a dropped connection.
    /// Only for commands that are safe to repeat.
    async fn query<T, F>(&self, op: &'static str, build: F) -> Result<T, LifecycleError>
    where
        T: redis::FromRedisValue + Send,
        F: Fn() -> redis::Pipeline,
    {
        let mut attempt = 1;
        loop {
            let mut conn = self.conn.clone();
            match build().query_async::<T>(&mut conn).await {
                Ok(value) => return Ok(value),
                Err(err) if attempt < ATTEMPTS && is_transient(&err) => {
                    tracing::warn!(op, attempt, error = %err, "Redis connection problem; retrying.");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt - 1))).await;
                    attempt += 1;
                }
                Err(source) => return Err(LifecycleError::Redis { op, source }),
            }
        }
    }

    /// Runs a prepared invocation, retrying a dropped connection (see module docs).
    async fn invoke<T: redis::FromRedisValue + Send>(
        &self,
        op: &'static str,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, LifecycleError> {
        let mut attempt = 1;
        loop {
            let mut conn = self.conn.clone();
            match invocation.invoke_async::<T>(&mut conn).await {
                Ok(value) => return Ok(value),
                Err(err) if attempt < ATTEMPTS && is_transient(&err) => {
                    tracing::warn!(op, attempt, error = %err, "Redis connection problem; retrying the script.");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt - 1))).await;
                    attempt += 1;
                }
                Err(source) => return Err(LifecycleError::Redis { op, source }),
            }
        }
    }

    fn secs(d: Duration) -> u64 {
        d.as_secs().max(1)
    }
}

/// A dropped connection or a server asking to wait: worth sending again.
fn is_transient(err: &redis::RedisError) -> bool {
    err.is_io_error() || matches!(err.retry_method(), RetryMethod::WaitAndRetry)
}

#[async_trait]
impl Tracker for RedisTracker {
    async fn observe(&self, d: &Detection, now: DateTime<Utc>) -> Result<Observed, LifecycleError> {
        let fp = d.fingerprint.as_str();
        let json = serde_json::to_string(d)
            .map_err(|e| LifecycleError::Protocol(format!("cannot encode the detection: {e}")))?;
        let interval = chrono::Duration::from_std(self.config.reminder_interval)
            .unwrap_or(chrono::Duration::days(1));
        let lease = chrono::Duration::from_std(self.config.outbox_lease)
            .unwrap_or(chrono::Duration::minutes(5));
        let detection_prefix = self.keys.detection("");

        let mut inv = self.observe.prepare_invoke();
        inv.key(self.keys.detection(fp))
            .key(self.keys.open_fingerprints(&d.tenant_id))
            .key(self.keys.reminders_due())
            .key(self.keys.alert_outbox())
            .key(self.keys.alert_outbox_due())
            .key(self.keys.campaigns_due());
        for target in &d.targets {
            inv.key(
                self.keys
                    .allowlist(&d.tenant_id, d.mailbox_address(), d.signal, target),
            )
            .key(self.keys.campaign(target))
            .key(self.keys.campaign_alerted(target));
        }
        inv.arg(fp)
            .arg(&d.tenant_id)
            .arg(d.mailbox_address())
            .arg(d.signal.as_str())
            .arg(json)
            .arg(stamp(d.observed_at))
            .arg(stamp(now))
            .arg(epoch(now))
            .arg(stamp(now - interval))
            .arg(self.config.reminder_interval.as_secs_f64())
            .arg(Self::secs(self.config.state_ttl))
            .arg(epoch(now + lease))
            .arg(epoch(now) + self.config.campaign_settle.as_secs_f64())
            .arg(self.config.campaign_min_tenants)
            .arg(self.config.campaign_min_mailboxes)
            .arg(detection_prefix)
            .arg(uuid::Uuid::new_v4().simple().to_string())
            .arg(Self::secs(self.config.reminder_interval))
            .arg(if d.enabled { "1" } else { "0" });
        for target in &d.targets {
            inv.arg(target);
        }
        let (status, entry): (String, String) = self.invoke("observe", &inv).await?;
        match status.as_str() {
            "alert" => serde_json::from_str(&entry)
                .map(|alert| Observed::Alert(Box::new(alert)))
                .map_err(|e| LifecycleError::Protocol(format!("outbox entry: {e}"))),
            "silent" => Ok(Observed::Silent),
            "suppressed" => Ok(Observed::Suppressed),
            "stale" => Ok(Observed::Stale),
            other => Err(LifecycleError::Protocol(format!("status {other:?}"))),
        }
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
        let lease = chrono::Duration::from_std(self.config.outbox_lease)
            .unwrap_or(chrono::Duration::minutes(5));
        let covered: Vec<&str> = covered.iter().map(|s| s.as_str()).collect();
        let mut inv = self.resolve.prepare_invoke();
        inv.key(self.keys.open_fingerprints(&summary.tenant.id))
            .key(self.keys.reminders_due())
            .key(self.keys.alert_outbox())
            .key(self.keys.alert_outbox_due())
            .arg(self.keys.detection(""))
            .arg(stamp(summary.started_at))
            .arg(stamp(now))
            .arg(epoch(now + lease))
            .arg(Self::secs(self.config.state_ttl))
            .arg(covered.join(" "))
            .arg(
                mailboxes_not_read(summary)
                    .into_iter()
                    .collect::<Vec<_>>()
                    .join("\n"),
            );
        for fp in &summary.fingerprints {
            inv.arg(fp);
        }
        let entries: Vec<String> = self.invoke("resolve", &inv).await?;
        entries
            .iter()
            .map(|e| {
                serde_json::from_str(e)
                    .map_err(|err| LifecycleError::Protocol(format!("outbox entry: {err}")))
            })
            .collect()
    }

    async fn clear_outbox(&self, alert_id: &str) -> Result<(), LifecycleError> {
        let (outbox, due) = (self.keys.alert_outbox(), self.keys.alert_outbox_due());
        self.query::<(), _>("clear_outbox", || {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .hdel(&outbox, alert_id)
                .ignore()
                .zrem(&due, alert_id)
                .ignore();
            pipe
        })
        .await
    }
}
