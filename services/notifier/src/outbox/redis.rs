//! [`OutboxStore`] on Redis: each step one Lua script or one atomic pipeline, on a
//! `ConnectionManager` of its own (configured like the store's: a response timeout fit
//! for scripts, reconnects in the background).
//!
//! Every step is safe to repeat, so a call that meets a dropped connection is sent
//! again: a heartbeat or a take-over repeated after a lost reply finds the work done,
//! a progress write writes the same JSON again, a completion deletes nothing more.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fwdwatch_shared::config::RedisSettings;
use fwdwatch_shared::store::{Keys, StoreError};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RetryMethod, Script};
use secrecy::ExposeSecret;

use super::store::{OutboxError, OutboxStore, Recorded, TakenOver};
use crate::alert::stamp;
use crate::lifecycle::epoch;

const HEARTBEAT: &str = include_str!("lua/heartbeat.lua");
const TAKE_OVER: &str = include_str!("lua/take_over.lua");
const RECORD: &str = include_str!("lua/record.lua");
const ADOPT: &str = include_str!("lua/adopt.lua");

const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);
const RECONNECT_RETRIES: usize = 4;
/// Attempts per call: the first plus retries after a dropped connection.
const ATTEMPTS: u32 = 3;

/// The production [`OutboxStore`].
#[derive(Clone)]
pub struct RedisOutbox {
    conn: ConnectionManager,
    keys: Keys,
    heartbeat: Script,
    take_over: Script,
    record: Script,
    adopt: Script,
}

impl std::fmt::Debug for RedisOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOutbox")
            .field("prefix", &self.keys.prefix())
            .finish_non_exhaustive()
    }
}

impl RedisOutbox {
    /// Connects to `settings.url` (never echoed: it may hold a password).
    pub async fn connect(settings: &RedisSettings, keys: Keys) -> Result<Self, StoreError> {
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
            heartbeat: Script::new(HEARTBEAT),
            take_over: Script::new(TAKE_OVER),
            record: Script::new(RECORD),
            adopt: Script::new(ADOPT),
        })
    }

    /// Runs a prepared script, retrying a dropped connection.
    async fn invoke<T: redis::FromRedisValue + Send>(
        &self,
        op: &'static str,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, OutboxError> {
        let mut attempt = 1;
        loop {
            let mut conn = self.conn.clone();
            match invocation.invoke_async::<T>(&mut conn).await {
                Ok(value) => return Ok(value),
                Err(err) if attempt < ATTEMPTS && is_transient(&err) => {
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt - 1))).await;
                    attempt += 1;
                }
                Err(source) => return Err(OutboxError::Redis { op, source }),
            }
        }
    }

    /// Runs a pipeline built by `build`, retrying a dropped connection.
    async fn query<T, F>(&self, op: &'static str, build: F) -> Result<T, OutboxError>
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
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt - 1))).await;
                    attempt += 1;
                }
                Err(source) => return Err(OutboxError::Redis { op, source }),
            }
        }
    }
}

fn is_transient(err: &redis::RedisError) -> bool {
    err.is_io_error() || matches!(err.retry_method(), RetryMethod::WaitAndRetry)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait]
impl OutboxStore for RedisOutbox {
    async fn heartbeat(
        &self,
        owner: &str,
        started: &str,
        lease: Duration,
    ) -> Result<bool, OutboxError> {
        let mut inv = self.heartbeat.prepare_invoke();
        inv.key(self.keys.notifier_heartbeat(owner))
            .key(self.keys.notifier_instances())
            .arg(owner)
            .arg(millis(lease))
            .arg(started);
        let was: i64 = self.invoke("heartbeat", &inv).await?;
        Ok(was == 1)
    }

    async fn release(&self, owner: &str) -> Result<(), OutboxError> {
        let key = self.keys.notifier_heartbeat(owner);
        self.query::<(), _>("release", || {
            let mut pipe = redis::pipe();
            pipe.del(&key).ignore();
            pipe
        })
        .await
    }

    async fn take_over(
        &self,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<TakenOver>, OutboxError> {
        let mut inv = self.take_over.prepare_invoke();
        inv.key(self.keys.notifier_instances())
            .key(self.keys.alert_outbox_owned(owner))
            .key(self.keys.alert_outbox_due())
            .arg(owner)
            .arg(self.keys.notifier_heartbeat(""))
            .arg(self.keys.alert_outbox_owned(""))
            .arg(epoch(now));
        let flat: Vec<redis::Value> = self.invoke("take_over", &inv).await?;
        let mut out = Vec::new();
        let mut rest = flat.as_slice();
        while let [from, count, tail @ ..] = rest {
            let from: String = redis::from_redis_value_ref(from).unwrap_or_default();
            let alerts: u64 = redis::from_redis_value_ref(count).unwrap_or_default();
            let n = usize::try_from(alerts)
                .unwrap_or(usize::MAX)
                .min(tail.len());
            let ids = tail[..n]
                .iter()
                .filter_map(|id| redis::from_redis_value_ref::<String>(id).ok())
                .collect();
            out.push(TakenOver { from, alerts, ids });
            rest = &tail[n..];
        }
        Ok(out)
    }

    async fn adopt_orphans(
        &self,
        owner: &str,
        created_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64, OutboxError> {
        let mut inv = self.adopt.prepare_invoke();
        inv.key(self.keys.alert_outbox())
            .key(self.keys.notifier_instances())
            .key(self.keys.alert_outbox_owned(owner))
            .key(self.keys.alert_outbox_due())
            .arg(self.keys.alert_outbox_owned(""))
            .arg(stamp(created_before))
            .arg(epoch(now));
        self.invoke("adopt_orphans", &inv).await
    }

    async fn due(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<String>, OutboxError> {
        let key = self.keys.alert_outbox_owned(owner);
        let max = epoch(now);
        let (ids,): (Vec<String>,) = self
            .query("due", || {
                let mut pipe = redis::pipe();
                pipe.cmd("ZRANGE")
                    .arg(&key)
                    .arg("-inf")
                    .arg(max)
                    .arg("BYSCORE")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit);
                pipe
            })
            .await?;
        Ok(ids)
    }

    async fn load(&self, alert_id: &str) -> Result<Option<String>, OutboxError> {
        let key = self.keys.alert_outbox();
        let (json,): (Option<String>,) = self
            .query("load", || {
                let mut pipe = redis::pipe();
                pipe.hget(&key, alert_id);
                pipe
            })
            .await?;
        Ok(json)
    }

    async fn record(
        &self,
        owner: &str,
        alert_id: &str,
        entry: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<Recorded, OutboxError> {
        let mut inv = self.record.prepare_invoke();
        inv.key(self.keys.alert_outbox())
            .key(self.keys.alert_outbox_owned(owner))
            .arg(alert_id)
            .arg(entry)
            .arg(retry_at.map(|at| epoch(at).to_string()).unwrap_or_default());
        let status: i64 = self.invoke("record", &inv).await?;
        Ok(match status {
            1 => Recorded::Saved,
            0 => Recorded::NotOwner,
            _ => Recorded::Gone,
        })
    }

    async fn complete(&self, owner: &str, alert_id: &str) -> Result<(), OutboxError> {
        let (outbox, mine) = (
            self.keys.alert_outbox(),
            self.keys.alert_outbox_owned(owner),
        );
        self.query::<(), _>("complete", || {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .hdel(&outbox, alert_id)
                .ignore()
                .zrem(&mine, alert_id)
                .ignore();
            pipe
        })
        .await
    }

    async fn forget(&self, owner: &str, alert_id: &str) -> Result<(), OutboxError> {
        let mine = self.keys.alert_outbox_owned(owner);
        self.query::<(), _>("forget", || {
            let mut pipe = redis::pipe();
            pipe.zrem(&mine, alert_id).ignore();
            pipe
        })
        .await
    }
}
