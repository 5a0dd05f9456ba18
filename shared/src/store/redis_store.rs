//! `RedisStore`: the [`Store`] on Redis, through one `ConnectionManager` per process.
//!
//! Why it is built this way (facts checked with redis-rs 1.8 on Redis 7.0):
//!
//! - **One multiplexed connection.** `ConnectionManager` pipelines every task's
//!   commands over one socket and is cheap to clone, so there is no pool. (Blocking
//!   commands such as `XREAD BLOCK` would stall everyone; fwdwatch uses none.)
//! - **Response timeout of a few seconds.** redis-rs 1.x gives up on an answer after
//!   500 ms by default — too tight for a Lua script or `SCAN` under load, and a
//!   timed-out command may still have run. We wait [`RESPONSE_TIMEOUT`].
//! - **A retry for the one command that meets a reconnect.** When the connection
//!   drops (Redis restarted, a proxy or `CLIENT KILL` cut it), the manager fails the
//!   command in flight with an I/O error and reconnects in the background; later
//!   commands wait for the new connection. Without a retry that one command's error
//!   would reach a service and, say, nack a message for nothing. So every operation
//!   is retried on I/O errors (and on `LOADING`/`TRYAGAIN`) up to [`MAX_ATTEMPTS`]
//!   times with a short back-off. The operations are written to be safe to retry:
//!   [`claim`](Store::claim) writes a per-call token and a retry recognises it;
//!   [`compare_and_set`](Store::compare_and_set) tells its script it is a retry (see
//!   the trait docs for what each operation reports after a lost reply).
//! - **Scripts** run by SHA (`EVALSHA`), and redis-rs loads them on `NOSCRIPT`, so a
//!   restarted Redis needs nothing from us.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, RedisError, RedisResult, RetryMethod, Script};
use secrecy::ExposeSecret;

use super::{Store, StoreError, StreamEntry, ttl_millis};
use crate::config::RedisSettings;

/// How long to wait for Redis to answer one command (redis-rs defaults to 500 ms).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one attempt to (re)connect may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// Reconnect attempts the manager makes (exponential back-off from 100 ms, capped at
/// 2 s) before failing the commands waiting on it: a few seconds of outage are
/// ridden out, and a CLI facing a stopped Redis still gives up within seconds.
const RECONNECT_RETRIES: usize = 4;

/// Attempts per operation: the first plus retries after a dropped connection.
pub const MAX_ATTEMPTS: u32 = 3;

/// Pause before retry `n` (1-based). The first retry goes at once — it waits for the
/// manager's reconnect anyway; later ones back off a little.
fn backoff(retry: u32) -> Duration {
    match retry {
        0 | 1 => Duration::ZERO,
        n => Duration::from_millis(100 * 4u64.pow(n - 2)),
    }
}

/// `SET NX PX` with a per-call token. Returns 1 when this call holds the claim —
/// including when a retry finds the token its own lost first attempt wrote.
const CLAIM_SCRIPT: &str = r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return 1
end
return 0
"#;

/// Compare-and-set. ARGV: expect_present ('1'/'0'), expected, new, ttl_ms ('0' = no
/// expiry), is_retry ('1'/'0'). A retry also succeeds when the key already holds
/// `new`: the lost first attempt most likely wrote it.
const CAS_SCRIPT: &str = r#"
local current = redis.call('GET', KEYS[1])
local matches
if ARGV[1] == '1' then
  matches = (current == ARGV[2])
else
  matches = (current == false)
end
if not matches then
  if ARGV[5] == '1' and current == ARGV[3] then
    return 1
  end
  return 0
end
if ARGV[4] == '0' then
  redis.call('SET', KEYS[1], ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
end
return 1
"#;

/// The production [`Store`]. Clones share the connection and the retry counter.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    /// `redis://host:port/db` without credentials, for messages and `Debug`.
    target: Arc<str>,
    /// Commands retried after a dropped connection, since start (a health signal,
    /// and how tests prove a retry happened).
    retried: Arc<AtomicU64>,
    claim_script: Arc<Script>,
    cas_script: Arc<Script>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("target", &self.target)
            .field("retried", &self.retried.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `settings.url` and checks the connection.
    ///
    /// # Errors
    /// [`StoreError::InvalidUrl`] when the URL does not parse, [`StoreError::Connect`]
    /// (with how to start Redis) when nothing answers there. Neither repeats the
    /// password.
    pub async fn connect(settings: &RedisSettings) -> Result<Self, StoreError> {
        let url = settings.url.expose_secret();
        let target = redacted(url);
        let client = redis::Client::open(url).map_err(|err| StoreError::InvalidUrl {
            // redis-rs describes what is wrong without echoing the URL.
            reason: err.to_string(),
        })?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_max_delay(Duration::from_secs(2));
        let connect_error = |source| StoreError::Connect {
            target: target.clone(),
            source,
        };
        let mut conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(connect_error)?;
        // The manager has connected; a PING also proves we may talk (AUTH, ACLs).
        redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(connect_error)?;
        tracing::debug!(target = %target, "Connected to Redis.");
        Ok(Self {
            conn,
            target: target.into(),
            retried: Arc::new(AtomicU64::new(0)),
            claim_script: Arc::new(Script::new(CLAIM_SCRIPT)),
            cas_script: Arc::new(Script::new(CAS_SCRIPT)),
        })
    }

    /// Where this store is connected, without credentials (`redis://host:port/db`).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// How many commands were retried after a dropped connection since start.
    pub fn retried_commands(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }

    /// The id Redis gives the managed connection (`CLIENT ID`); it shows in
    /// `CLIENT LIST` and changes after a reconnect.
    pub async fn client_id(&self) -> Result<i64, StoreError> {
        self.query("client_id", "", redis::cmd("CLIENT").arg("ID"))
            .await
    }

    /// Runs one operation, retrying it while the failure is a dropped connection or a
    /// transient server state. `attempt` gets a fresh handle on the (possibly
    /// reconnected) connection and whether this is a retry.
    async fn run<T, F, Fut>(&self, op: &'static str, key: &str, attempt: F) -> Result<T, StoreError>
    where
        F: Fn(ConnectionManager, bool) -> Fut + Send,
        Fut: Future<Output = RedisResult<T>> + Send,
        T: Send,
    {
        let mut tries = 1;
        loop {
            match attempt(self.conn.clone(), tries > 1).await {
                Ok(value) => return Ok(value),
                Err(err) if tries < MAX_ATTEMPTS && is_transient(&err) => {
                    self.retried.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        op,
                        key,
                        attempt = tries,
                        error = %err,
                        "Redis connection problem; retrying the command."
                    );
                    tokio::time::sleep(backoff(tries)).await;
                    tries += 1;
                }
                Err(err) => return Err(StoreError::redis(op, key, err)),
            }
        }
    }

    /// Runs one plain command with retries and parses its reply as `T`.
    async fn query<T>(&self, op: &'static str, key: &str, cmd: &Cmd) -> Result<T, StoreError>
    where
        T: redis::FromRedisValue + Send,
    {
        self.run(op, key, |mut conn, _| async move {
            cmd.query_async::<T>(&mut conn).await
        })
        .await
    }
}

/// Whether a failed command is worth sending again: the connection dropped or timed
/// out (I/O), or the server asked us to wait (`LOADING`, `TRYAGAIN`, `MASTERDOWN`).
fn is_transient(err: &RedisError) -> bool {
    err.is_io_error() || matches!(err.retry_method(), RetryMethod::WaitAndRetry)
}

/// `redis://host:port/db` of a Redis URL, without user, password or query, for
/// messages. Falls back to a placeholder rather than risk echoing a secret.
fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => {
            let host = parsed.host_str().unwrap_or("");
            let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{host}{port}{}", parsed.scheme(), parsed.path())
        }
        Err(_) => "<unparsable redis.url>".to_owned(),
    }
}

/// A score as Redis reads it: `+inf`/`-inf` spelled out, finite values in full.
fn score_arg(score: f64) -> String {
    if score == f64::INFINITY {
        "+inf".to_owned()
    } else if score == f64::NEG_INFINITY {
        "-inf".to_owned()
    } else {
        score.to_string()
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.query("ping", "", &redis::cmd("PING")).await
    }

    async fn claim(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        // A fresh token per call (not per attempt): a retry must recognise the claim
        // its lost first attempt may have taken.
        let token = uuid::Uuid::new_v4().to_string();
        let ttl = ttl_millis(ttl);
        let script = &self.claim_script;
        let token = &token;
        let won: i64 = self
            .run("claim", key, |mut conn, _| async move {
                script
                    .key(key)
                    .arg(token)
                    .arg(ttl)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(won == 1)
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        self.query::<u64>("release", key, redis::cmd("DEL").arg(key))
            .await
            .map(drop)
    }

    async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.query("get", key, redis::cmd("GET").arg(key)).await
    }

    async fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(ttl_millis(ttl));
        }
        self.query("set", key, &cmd).await
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let deleted: u64 = self
            .query("delete", key, redis::cmd("DEL").arg(key))
            .await?;
        Ok(deleted > 0)
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        let found: u64 = self
            .query("exists", key, redis::cmd("EXISTS").arg(key))
            .await?;
        Ok(found > 0)
    }

    async fn expire(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let set: u64 = self
            .query(
                "expire",
                key,
                redis::cmd("PEXPIRE").arg(key).arg(ttl_millis(ttl)),
            )
            .await?;
        Ok(set == 1)
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&str>,
        new: &str,
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let script = &self.cas_script;
        let ttl = ttl.map_or(0, ttl_millis);
        let swapped: i64 = self
            .run("compare_and_set", key, |mut conn, is_retry| async move {
                script
                    .key(key)
                    .arg(if expected.is_some() { "1" } else { "0" })
                    .arg(expected.unwrap_or(""))
                    .arg(new)
                    .arg(ttl)
                    .arg(if is_retry { "1" } else { "0" })
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        Ok(swapped == 1)
    }

    async fn hash_set(&self, key: &str, field: &str, value: &str) -> Result<(), StoreError> {
        self.query::<u64>(
            "hash_set",
            key,
            redis::cmd("HSET").arg(key).arg(field).arg(value),
        )
        .await
        .map(drop)
    }

    async fn hash_get(&self, key: &str, field: &str) -> Result<Option<String>, StoreError> {
        self.query("hash_get", key, redis::cmd("HGET").arg(key).arg(field))
            .await
    }

    async fn hash_get_all(&self, key: &str) -> Result<BTreeMap<String, String>, StoreError> {
        self.query("hash_get_all", key, redis::cmd("HGETALL").arg(key))
            .await
    }

    async fn hash_delete(&self, key: &str, field: &str) -> Result<bool, StoreError> {
        let removed: u64 = self
            .query("hash_delete", key, redis::cmd("HDEL").arg(key).arg(field))
            .await?;
        Ok(removed > 0)
    }

    async fn set_add(&self, key: &str, members: &[String]) -> Result<u64, StoreError> {
        // `SADD key` with no members is a syntax error; adding nothing adds nothing.
        if members.is_empty() {
            return Ok(0);
        }
        self.query("set_add", key, redis::cmd("SADD").arg(key).arg(members))
            .await
    }

    async fn set_remove(&self, key: &str, members: &[String]) -> Result<u64, StoreError> {
        if members.is_empty() {
            return Ok(0);
        }
        self.query("set_remove", key, redis::cmd("SREM").arg(key).arg(members))
            .await
    }

    async fn set_members(&self, key: &str) -> Result<BTreeSet<String>, StoreError> {
        self.query("set_members", key, redis::cmd("SMEMBERS").arg(key))
            .await
    }

    async fn set_card(&self, key: &str) -> Result<u64, StoreError> {
        self.query("set_card", key, redis::cmd("SCARD").arg(key))
            .await
    }

    async fn zadd(&self, key: &str, member: &str, score: f64) -> Result<(), StoreError> {
        if score.is_nan() {
            return Err(StoreError::invalid_argument("zadd", key, "score is NaN"));
        }
        self.query::<u64>(
            "zadd",
            key,
            redis::cmd("ZADD")
                .arg(key)
                .arg(score_arg(score))
                .arg(member),
        )
        .await
        .map(drop)
    }

    async fn zrem(&self, key: &str, member: &str) -> Result<bool, StoreError> {
        let removed: u64 = self
            .query("zrem", key, redis::cmd("ZREM").arg(key).arg(member))
            .await?;
        Ok(removed > 0)
    }

    async fn zrange_by_score(
        &self,
        key: &str,
        max: f64,
        limit: usize,
    ) -> Result<Vec<(String, f64)>, StoreError> {
        if max.is_nan() {
            return Err(StoreError::invalid_argument(
                "zrange_by_score",
                key,
                "max score is NaN",
            ));
        }
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.query(
            "zrange_by_score",
            key,
            redis::cmd("ZRANGEBYSCORE")
                .arg(key)
                .arg("-inf")
                .arg(score_arg(max))
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(limit),
        )
        .await
    }

    async fn append_stream(
        &self,
        key: &str,
        fields: &[(String, String)],
        max_len: usize,
    ) -> Result<String, StoreError> {
        if fields.is_empty() {
            return Err(StoreError::invalid_argument(
                "append_stream",
                key,
                "a stream entry needs at least one field",
            ));
        }
        let mut cmd = redis::cmd("XADD");
        // `~` lets Redis trim whole nodes only, which keeps XADD O(1).
        cmd.arg(key).arg("MAXLEN").arg("~").arg(max_len).arg("*");
        for (field, value) in fields {
            cmd.arg(field).arg(value);
        }
        self.query("append_stream", key, &cmd).await
    }

    async fn read_stream(&self, key: &str, count: usize) -> Result<Vec<StreamEntry>, StoreError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        // Newest first from Redis, then reversed: callers want reading order.
        let mut entries: Vec<StreamEntry> = self
            .query(
                "read_stream",
                key,
                redis::cmd("XREVRANGE")
                    .arg(key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(count),
            )
            .await?;
        entries.reverse();
        Ok(entries)
    }

    async fn scan_keys(&self, pattern: &str) -> Result<Vec<String>, StoreError> {
        // SCAN may return a key more than once; the set dedupes and sorts.
        let mut keys = BTreeSet::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .query(
                    "scan_keys",
                    pattern,
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000),
                )
                .await?;
            keys.extend(batch);
            if next == 0 {
                return Ok(keys.into_iter().collect());
            }
            cursor = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_url_drops_credentials_and_query() {
        assert_eq!(
            redacted("redis://user:s3cret@cache.internal:6380/2?protocol=resp3"),
            "redis://cache.internal:6380/2"
        );
        assert_eq!(redacted("redis://:pw@127.0.0.1/"), "redis://127.0.0.1/");
        assert!(!redacted("not a url with s3cret").contains("s3cret"));
    }

    #[test]
    fn backoff_retries_at_once_then_waits() {
        assert_eq!(backoff(1), Duration::ZERO);
        assert_eq!(backoff(2), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(400));
    }

    #[test]
    fn scores_are_spelled_as_redis_reads_them() {
        assert_eq!(score_arg(f64::INFINITY), "+inf");
        assert_eq!(score_arg(f64::NEG_INFINITY), "-inf");
        assert_eq!(score_arg(1_700_000_000.5), "1700000000.5");
    }
}
