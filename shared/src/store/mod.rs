//! The store layer: every piece of state fwdwatch keeps, behind one small trait.
//!
//! The four services keep their shared state in Redis: idempotency claims, the
//! allowlist of approved forwards, the notifier's per-detection state and reminder
//! index, the actioner's command results and single-use link nonces, and the audit
//! stream. This module is the only place that talks to Redis.
//!
//! - [`Store`] — the primitives the services need (claims, strings with TTL,
//!   compare-and-set, hashes, sets, a score-ordered "due" index, streams, key scan).
//!   Object safe, so services hold an `Arc<dyn Store>` and never name the backend.
//! - [`RedisStore`] — the production backend: one `ConnectionManager` per process,
//!   a response timeout fit for Lua scripts, and a retry of the one command that
//!   meets a dropped connection (see [`RedisStore`] for why that is needed).
//! - [`MemoryStore`] — an in-process twin with the same semantics (TTL expiry
//!   included) for the operator CLI's all-in-one mode and for unit tests.
//! - [`Keys`] — every Redis key name, in one place, built from the configured prefix.
//! - [`allowlist`] and [`audit`] — the domain operations shared by the notifier,
//!   the actioner and the CLI, written once on top of [`Store`]; [`tenants`] — the
//!   latest scan of each tenant (coverage), written by the notifier.
//!
//! Both backends are checked by one conformance suite (`conformance.rs`), which the
//! unit tests run against [`MemoryStore`] and `tests/store_redis.rs` runs against
//! both, so the twin cannot drift from Redis unnoticed.

pub mod allowlist;
pub mod audit;
mod error;
mod keys;
mod memory;
mod redis_store;
pub mod tenants;

#[cfg(test)]
mod conformance;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use error::StoreError;
pub use keys::Keys;
pub use memory::MemoryStore;
pub use redis_store::RedisStore;

use crate::config::RedisSettings;

// The conformance suite is shared with `tests/store_redis.rs` and names everything
// through `super::…`; this import makes `super::contracts` resolve here as it does there.
#[cfg(test)]
use crate::contracts;

/// One stream entry as read back: its id (`<ms>-<seq>`) and its fields.
pub type StreamEntry = (String, BTreeMap<String, String>);

/// The state primitives fwdwatch's services are built from.
///
/// Semantics follow Redis (the production backend); [`MemoryStore`] reproduces them.
/// In particular:
///
/// - A TTL of `None` means "no expiry" and, on writes that replace a value
///   ([`set`](Store::set), [`compare_and_set`](Store::compare_and_set)), removes any
///   earlier expiry, as a plain Redis `SET` does. TTLs have millisecond resolution;
///   a zero TTL is rounded up to 1 ms (the key expires at once) rather than refused.
/// - Emptied hashes, sets and sorted sets disappear (Redis deletes empty aggregates),
///   so [`exists`](Store::exists) and [`scan_keys`](Store::scan_keys) agree across backends.
/// - Using a key as the wrong type (e.g. [`set_add`](Store::set_add) on a string) is
///   [`StoreError::WrongType`]. [`set`](Store::set) overwrites a key of any type.
/// - Every error names the operation and the key.
///
/// Retries: [`RedisStore`] retries a command that met a dropped connection. Where a
/// command's *answer* (not its effect) can then be lost — the connection died after
/// Redis executed it but before the reply arrived — the method says what a retry
/// reports. [`claim`](Store::claim) is exact even then.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Checks the store answers (`PING`). For readiness probes and `fwdwatch status`.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Takes the idempotency / lock key `key` for `ttl` if nobody holds it
    /// (`SET key <token> NX PX ttl`). Returns true when this caller got it.
    ///
    /// Exactly one of any number of concurrent callers wins. Each call writes its own
    /// random token, which lets a retry after a lost reply recognise its own claim and
    /// still answer true. A key that holds another type is [`StoreError::WrongType`].
    async fn claim(&self, key: &str, ttl: Duration) -> Result<bool, StoreError>;

    /// Gives a claim back (deletes the key) so a redelivered message can try again.
    async fn release(&self, key: &str) -> Result<(), StoreError>;

    /// The string at `key`, or `None` when absent or expired.
    async fn get(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Stores `value` at `key`, replacing any value of any type.
    async fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> Result<(), StoreError>;

    /// Deletes `key` (any type). True when it existed.
    ///
    /// A retry after a lost reply answers false although the key was deleted.
    async fn delete(&self, key: &str) -> Result<bool, StoreError>;

    /// Whether `key` exists (any type).
    async fn exists(&self, key: &str) -> Result<bool, StoreError>;

    /// Sets a new expiry on an existing key of any type. False when there is no key.
    async fn expire(&self, key: &str, ttl: Duration) -> Result<bool, StoreError>;

    /// Atomically replaces the string at `key` with `new` if it currently holds
    /// `expected` (`None`: the key must be absent). True when the swap happened.
    ///
    /// A retry after a lost reply also answers true when the key already holds `new`:
    /// fwdwatch prefers a rare duplicate over a lost state change (at-least-once, as
    /// everywhere else). A first attempt never does that.
    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&str>,
        new: &str,
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError>;

    /// Sets one field of the hash at `key` (keeps the key's TTL).
    async fn hash_set(&self, key: &str, field: &str, value: &str) -> Result<(), StoreError>;

    /// One field of the hash at `key`.
    async fn hash_get(&self, key: &str, field: &str) -> Result<Option<String>, StoreError>;

    /// Every field of the hash at `key` (empty when absent).
    async fn hash_get_all(&self, key: &str) -> Result<BTreeMap<String, String>, StoreError>;

    /// Deletes one field. True when it existed.
    async fn hash_delete(&self, key: &str, field: &str) -> Result<bool, StoreError>;

    /// Adds members to the set at `key`; returns how many were new.
    /// A retry after a lost reply may under-count.
    async fn set_add(&self, key: &str, members: &[String]) -> Result<u64, StoreError>;

    /// Removes members from the set at `key`; returns how many were there.
    async fn set_remove(&self, key: &str, members: &[String]) -> Result<u64, StoreError>;

    /// Every member of the set at `key` (empty when absent).
    async fn set_members(&self, key: &str) -> Result<BTreeSet<String>, StoreError>;

    /// Number of members of the set at `key`.
    async fn set_card(&self, key: &str) -> Result<u64, StoreError>;

    /// Adds or re-scores `member` in the sorted set at `key` (the reminder "due" index:
    /// score = when it is due, in Unix seconds). NaN is refused.
    async fn zadd(&self, key: &str, member: &str, score: f64) -> Result<(), StoreError>;

    /// Removes `member` from the sorted set. True when it was there.
    async fn zrem(&self, key: &str, member: &str) -> Result<bool, StoreError>;

    /// Up to `limit` members with score ≤ `max`, lowest score first (ties by member),
    /// with their scores: "what is due now".
    async fn zrange_by_score(
        &self,
        key: &str,
        max: f64,
        limit: usize,
    ) -> Result<Vec<(String, f64)>, StoreError>;

    /// Appends an entry to the stream at `key` and returns its id
    /// (`XADD key MAXLEN ~ max_len * …`). Trimming is approximate, as in Redis: at least
    /// the newest `max_len` entries are kept. An entry needs at least one field.
    /// A retry after a lost reply may append the entry twice.
    async fn append_stream(
        &self,
        key: &str,
        fields: &[(String, String)],
        max_len: usize,
    ) -> Result<String, StoreError>;

    /// The newest `count` entries of the stream at `key`, oldest first (newest last).
    async fn read_stream(&self, key: &str, count: usize) -> Result<Vec<StreamEntry>, StoreError>;

    /// Every key matching the glob `pattern` (Redis `SCAN MATCH` syntax: `*`, `?`,
    /// `[…]`, `\`), sorted. Walks the whole keyspace: for the CLI, not for hot paths.
    async fn scan_keys(&self, pattern: &str) -> Result<Vec<String>, StoreError>;
}

/// Connects to Redis as configured and returns it as a shared [`Store`].
///
/// One per process: the connection is multiplexed, so every task shares it.
pub async fn connect(settings: &RedisSettings) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(RedisStore::connect(settings).await?))
}

/// Converts a TTL to whole milliseconds for `PX`/`PEXPIRE`, never 0 (Redis refuses a
/// zero expiry) and never so large that Redis's `now + ttl` would overflow (it refuses
/// those too); half the `i64` range is millions of years.
pub(crate) fn ttl_millis(ttl: Duration) -> u64 {
    // Round up so a sub-millisecond TTL still expires rather than erroring.
    let millis = ttl.as_nanos().div_ceil(1_000_000);
    u64::try_from(millis)
        .unwrap_or(u64::MAX)
        .clamp(1, i64::MAX as u64 / 2)
}

#[cfg(test)]
mod tests {
    //! Runs the conformance suite against [`MemoryStore`] (the Redis run lives in
    //! `tests/store_redis.rs`).

    use std::sync::Arc;
    use std::time::Duration;

    use super::conformance;
    use super::{MemoryStore, Store};

    /// A fresh in-memory store; the prefix only mirrors the Redis fixture.
    async fn memory_fixture() -> conformance::Fixture {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        conformance::Fixture::new(store, "t-memory:".to_owned())
    }

    conformance::contract_tests!(on_memory, memory_fixture);

    #[test]
    fn ttl_millis_rounds_up_and_never_returns_zero() {
        assert_eq!(super::ttl_millis(Duration::ZERO), 1);
        assert_eq!(super::ttl_millis(Duration::from_micros(1)), 1);
        assert_eq!(super::ttl_millis(Duration::from_micros(1_500)), 2);
        assert_eq!(super::ttl_millis(Duration::from_secs(90)), 90_000);
        assert!(super::ttl_millis(Duration::MAX) < u64::MAX);
    }
}
