//! `MemoryStore`: the in-process twin of Redis.
//!
//! Used by the operator CLI's all-in-one mode (no Redis to run) and by unit tests.
//! It keeps Redis's semantics where the services depend on them — NX claims, TTL
//! expiry, compare-and-set, empty aggregates vanishing, WRONGTYPE, stream ids that
//! always increase — and the shared conformance suite holds it to that.
//!
//! One mutex guards the whole keyspace: every operation is a few map lookups, never
//! awaits while holding the lock, and so is atomic the way a Redis command is.
//! Expired keys are dropped lazily, when an operation touches them (Redis also
//! expires lazily, plus a sampling sweep we do not need at this size).
//! Time is `tokio::time::Instant`, so a test that pauses tokio's clock (tokio's
//! `test-util`) controls expiry too, without sleeping.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Store, StoreError, StreamEntry};

/// An in-process [`Store`]. Clones share the same data.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    keyspace: Arc<Mutex<Keyspace>>,
}

#[derive(Debug, Default)]
struct Keyspace {
    entries: HashMap<String, Entry>,
}

#[derive(Debug)]
struct Entry {
    value: Value,
    /// When the key disappears; `None` keeps it forever.
    expires_at: Option<Instant>,
}

#[derive(Debug)]
enum Value {
    Str(String),
    Hash(BTreeMap<String, String>),
    Set(BTreeSet<String>),
    /// member → score; ordering by (score, member) is done when reading.
    ZSet(BTreeMap<String, f64>),
    Stream(Stream),
}

#[derive(Debug, Default)]
struct Stream {
    entries: VecDeque<(StreamId, BTreeMap<String, String>)>,
    /// The last id handed out, kept after trimming so ids never go backwards.
    last_id: StreamId,
}

/// A Redis stream id: milliseconds since the epoch and a sequence within that ms.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct StreamId {
    millis: u64,
    seq: u64,
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.millis, self.seq)
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Drops every expired key now; returns how many keys remain. Redis expires keys
    /// by itself; this twin otherwise drops an expired key only when it is touched,
    /// so a long-running all-in-one process (`fwdwatch up`) calls this now and then
    /// to keep its memory bounded by what is live.
    pub fn purge_expired(&self) -> usize {
        let mut keyspace = self.lock();
        keyspace.purge_expired();
        keyspace.entries.len()
    }

    /// Locks the keyspace. A panic while holding the lock cannot leave an entry
    /// half-written (every mutation is a single map operation), so a poisoned lock
    /// is safe to keep using rather than a reason to fail every later call.
    fn lock(&self) -> MutexGuard<'_, Keyspace> {
        self.keyspace
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Keyspace {
    /// The live entry at `key`, dropping it first if it has expired.
    fn live(&mut self, key: &str) -> Option<&mut Entry> {
        let now = Instant::now();
        if self
            .entries
            .get(key)
            .is_some_and(|entry| entry.expires_at.is_some_and(|at| at <= now))
        {
            self.entries.remove(key);
        }
        self.entries.get_mut(key)
    }

    fn purge_expired(&mut self) {
        let now = Instant::now();
        self.entries
            .retain(|_, entry| entry.expires_at.is_none_or(|at| at > now));
    }

    /// The string at `key`, or WRONGTYPE.
    fn string(&mut self, op: &'static str, key: &str) -> Result<Option<&mut String>, StoreError> {
        match self.live(key) {
            None => Ok(None),
            Some(Entry {
                value: Value::Str(s),
                ..
            }) => Ok(Some(s)),
            Some(_) => Err(StoreError::wrong_type(op, key)),
        }
    }

    fn put_string(&mut self, key: &str, value: &str, ttl: Option<Duration>) {
        self.entries.insert(
            key.to_owned(),
            Entry {
                value: Value::Str(value.to_owned()),
                expires_at: ttl.and_then(deadline),
            },
        );
    }

    /// The aggregate at `key` picked by `pick` (`None` when absent), or WRONGTYPE.
    fn typed<T>(
        &mut self,
        op: &'static str,
        key: &str,
        pick: fn(&mut Value) -> Option<&mut T>,
    ) -> Result<Option<&mut T>, StoreError> {
        match self.live(key) {
            None => Ok(None),
            Some(entry) => pick(&mut entry.value)
                .map(Some)
                .ok_or_else(|| StoreError::wrong_type(op, key)),
        }
    }

    /// Like `typed`, but creates an empty aggregate (no TTL) when the key is absent.
    fn typed_or_insert<T>(
        &mut self,
        op: &'static str,
        key: &str,
        pick: fn(&mut Value) -> Option<&mut T>,
        make: fn() -> Value,
    ) -> Result<&mut T, StoreError> {
        if self.live(key).is_none() {
            self.entries.insert(
                key.to_owned(),
                Entry {
                    value: make(),
                    expires_at: None,
                },
            );
        }
        self.typed(op, key, pick)?
            .ok_or_else(|| StoreError::wrong_type(op, key))
    }

    /// Deletes `key` if a removal left its aggregate empty, as Redis does.
    fn remove_if_empty(&mut self, key: &str) {
        if self
            .live(key)
            .is_some_and(|entry| entry.value.is_empty_aggregate())
        {
            self.entries.remove(key);
        }
    }
}

impl Value {
    fn is_empty_aggregate(&self) -> bool {
        match self {
            Value::Hash(h) => h.is_empty(),
            Value::Set(s) => s.is_empty(),
            Value::ZSet(z) => z.is_empty(),
            // Redis keeps an emptied stream (XTRIM/XDEL leave the key); we never empty one.
            Value::Stream(_) | Value::Str(_) => false,
        }
    }

    fn hash(&mut self) -> Option<&mut BTreeMap<String, String>> {
        match self {
            Value::Hash(h) => Some(h),
            _ => None,
        }
    }

    fn set(&mut self) -> Option<&mut BTreeSet<String>> {
        match self {
            Value::Set(s) => Some(s),
            _ => None,
        }
    }

    fn zset(&mut self) -> Option<&mut BTreeMap<String, f64>> {
        match self {
            Value::ZSet(z) => Some(z),
            _ => None,
        }
    }

    fn stream(&mut self) -> Option<&mut Stream> {
        match self {
            Value::Stream(s) => Some(s),
            _ => None,
        }
    }
}

/// When a key set now with `ttl` expires; `None` (never) for a TTL beyond the clock's
/// range, which no real caller asks for but which must not panic.
fn deadline(ttl: Duration) -> Option<Instant> {
    // Same rounding as the Redis backend (`PX`), so both expire at the same moment.
    Instant::now().checked_add(Duration::from_millis(super::ttl_millis(ttl)))
}

#[async_trait]
impl Store for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn claim(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut keyspace = self.lock();
        if keyspace.live(key).is_some() {
            // Mirror the Redis script: a held claim is `false`, a non-string is WRONGTYPE.
            keyspace.string("claim", key)?;
            return Ok(false);
        }
        keyspace.put_string(key, "claimed", Some(ttl));
        Ok(true)
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        self.lock().entries.remove(key);
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.lock().string("get", key)?.cloned())
    }

    async fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> Result<(), StoreError> {
        self.lock().put_string(key, value, ttl);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let mut keyspace = self.lock();
        let existed = keyspace.live(key).is_some();
        keyspace.entries.remove(key);
        Ok(existed)
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.lock().live(key).is_some())
    }

    async fn expire(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        Ok(match self.lock().live(key) {
            Some(entry) => {
                entry.expires_at = deadline(ttl);
                true
            }
            None => false,
        })
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&str>,
        new: &str,
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let mut keyspace = self.lock();
        let current = keyspace.string("compare_and_set", key)?;
        if current.as_deref().map(String::as_str) != expected {
            return Ok(false);
        }
        keyspace.put_string(key, new, ttl);
        Ok(true)
    }

    async fn hash_set(&self, key: &str, field: &str, value: &str) -> Result<(), StoreError> {
        self.lock()
            .typed_or_insert(
                "hash_set",
                key,
                Value::hash,
                || Value::Hash(BTreeMap::new()),
            )?
            .insert(field.to_owned(), value.to_owned());
        Ok(())
    }

    async fn hash_get(&self, key: &str, field: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .lock()
            .typed("hash_get", key, Value::hash)?
            .and_then(|hash| hash.get(field).cloned()))
    }

    async fn hash_get_all(&self, key: &str) -> Result<BTreeMap<String, String>, StoreError> {
        Ok(self
            .lock()
            .typed("hash_get_all", key, Value::hash)?
            .map(|hash| hash.clone())
            .unwrap_or_default())
    }

    async fn hash_delete(&self, key: &str, field: &str) -> Result<bool, StoreError> {
        let mut keyspace = self.lock();
        let removed = keyspace
            .typed("hash_delete", key, Value::hash)?
            .is_some_and(|hash| hash.remove(field).is_some());
        keyspace.remove_if_empty(key);
        Ok(removed)
    }

    async fn set_add(&self, key: &str, members: &[String]) -> Result<u64, StoreError> {
        if members.is_empty() {
            return Ok(0);
        }
        let mut keyspace = self.lock();
        let set =
            keyspace.typed_or_insert("set_add", key, Value::set, || Value::Set(BTreeSet::new()))?;
        Ok(members
            .iter()
            .filter(|member| set.insert((*member).clone()))
            .count() as u64)
    }

    async fn set_remove(&self, key: &str, members: &[String]) -> Result<u64, StoreError> {
        let mut keyspace = self.lock();
        let removed = match keyspace.typed("set_remove", key, Value::set)? {
            Some(set) => members.iter().filter(|member| set.remove(*member)).count() as u64,
            None => 0,
        };
        keyspace.remove_if_empty(key);
        Ok(removed)
    }

    async fn set_members(&self, key: &str) -> Result<BTreeSet<String>, StoreError> {
        Ok(self
            .lock()
            .typed("set_members", key, Value::set)?
            .map(|set| set.clone())
            .unwrap_or_default())
    }

    async fn set_card(&self, key: &str) -> Result<u64, StoreError> {
        Ok(self
            .lock()
            .typed("set_card", key, Value::set)?
            .map_or(0, |set| set.len() as u64))
    }

    async fn zadd(&self, key: &str, member: &str, score: f64) -> Result<(), StoreError> {
        if score.is_nan() {
            return Err(StoreError::invalid_argument("zadd", key, "score is NaN"));
        }
        self.lock()
            .typed_or_insert("zadd", key, Value::zset, || Value::ZSet(BTreeMap::new()))?
            .insert(member.to_owned(), score);
        Ok(())
    }

    async fn zrem(&self, key: &str, member: &str) -> Result<bool, StoreError> {
        let mut keyspace = self.lock();
        let removed = keyspace
            .typed("zrem", key, Value::zset)?
            .is_some_and(|zset| zset.remove(member).is_some());
        keyspace.remove_if_empty(key);
        Ok(removed)
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
        let mut keyspace = self.lock();
        let Some(zset) = keyspace.typed("zrange_by_score", key, Value::zset)? else {
            return Ok(Vec::new());
        };
        let mut due: Vec<(String, f64)> = zset
            .iter()
            .filter(|(_, score)| **score <= max)
            .map(|(member, score)| (member.clone(), *score))
            .collect();
        // Redis orders by score, then by member bytes.
        due.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        due.truncate(limit);
        Ok(due)
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
        let mut keyspace = self.lock();
        let stream = keyspace.typed_or_insert("append_stream", key, Value::stream, || {
            Value::Stream(Stream::default())
        })?;
        let now_millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        // Like Redis: never go backwards, even if the wall clock does.
        let id = if now_millis > stream.last_id.millis {
            StreamId {
                millis: now_millis,
                seq: 0,
            }
        } else {
            StreamId {
                millis: stream.last_id.millis,
                seq: stream.last_id.seq + 1,
            }
        };
        stream.last_id = id;
        stream
            .entries
            .push_back((id, fields.iter().cloned().collect()));
        // Exact trimming keeps the promise of "at least the newest max_len".
        while stream.entries.len() > max_len.max(1) {
            stream.entries.pop_front();
        }
        Ok(id.to_string())
    }

    async fn read_stream(&self, key: &str, count: usize) -> Result<Vec<StreamEntry>, StoreError> {
        let mut keyspace = self.lock();
        let Some(stream) = keyspace.typed("read_stream", key, Value::stream)? else {
            return Ok(Vec::new());
        };
        let skip = stream.entries.len().saturating_sub(count);
        Ok(stream
            .entries
            .iter()
            .skip(skip)
            .map(|(id, fields)| (id.to_string(), fields.clone()))
            .collect())
    }

    async fn scan_keys(&self, pattern: &str) -> Result<Vec<String>, StoreError> {
        let mut keyspace = self.lock();
        keyspace.purge_expired();
        let mut keys: Vec<String> = keyspace
            .entries
            .keys()
            .filter(|key| glob_match(pattern.as_bytes(), key.as_bytes()))
            .cloned()
            .collect();
        keys.sort();
        Ok(keys)
    }
}

/// Redis's glob (`stringmatchlen`): `*` any run, `?` one byte, `[abc]`, `[a-z]`,
/// `[^…]` negation, `\x` a literal `x`. Byte-wise, as Redis matches.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => {
            // Collapse runs of '*' and try every split point.
            let rest = trim_leading_stars(rest);
            if rest.is_empty() {
                return true;
            }
            (0..=text.len()).any(|i| glob_match(rest, &text[i..]))
        }
        Some((b'?', rest)) => !text.is_empty() && glob_match(rest, &text[1..]),
        Some((b'[', rest)) => {
            let Some((&c, text_rest)) = text.split_first() else {
                return false;
            };
            match match_class(rest, c) {
                Some((true, after)) => glob_match(after, text_rest),
                Some((false, _)) => false,
                // No closing ']': Redis treats the class as running to the end.
                None => false,
            }
        }
        Some((b'\\', rest)) if !rest.is_empty() => {
            text.first() == Some(&rest[0]) && glob_match(&rest[1..], &text[1..])
        }
        Some((&p, rest)) => text.first() == Some(&p) && glob_match(rest, &text[1..]),
    }
}

fn trim_leading_stars(mut pattern: &[u8]) -> &[u8] {
    while let Some((b'*', rest)) = pattern.split_first() {
        pattern = rest;
    }
    pattern
}

/// Matches byte `c` against the class whose body starts at `pattern` (just after
/// `[`). Returns whether it matched and the pattern after the closing `]`.
fn match_class(pattern: &[u8], c: u8) -> Option<(bool, &[u8])> {
    let (negate, mut p) = match pattern.split_first() {
        Some((b'^', rest)) => (true, rest),
        _ => (false, pattern),
    };
    let mut matched = false;
    loop {
        match p {
            [] => return None,
            [b']', rest @ ..] => return Some((matched != negate, rest)),
            [b'\\', escaped, rest @ ..] => {
                matched |= *escaped == c;
                p = rest;
            }
            [low, b'-', high, rest @ ..] if *high != b']' => {
                let (low, high) = if low <= high {
                    (*low, *high)
                } else {
                    (*high, *low)
                };
                matched |= (low..=high).contains(&c);
                p = rest;
            }
            [single, rest @ ..] => {
                matched |= *single == c;
                p = rest;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_redis() {
        let m = |p: &str, t: &str| glob_match(p.as_bytes(), t.as_bytes());
        assert!(m("*", ""));
        assert!(m("p:*", "p:allowlist:t"));
        assert!(!m("p:*", "q:allowlist:t"));
        assert!(m("p:*:t", "p:a:b:t"));
        assert!(m("h?llo", "hello"));
        assert!(!m("h?llo", "hllo"));
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-c]llo", "hbllo"));
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(m("**a**", "xxaxx"));
        assert!(!m("[abc", "a"));
    }

    #[tokio::test]
    async fn purge_drops_expired_keys_nobody_touches() {
        let store = MemoryStore::new();
        store
            .set("short", "v", Some(std::time::Duration::from_millis(1)))
            .await
            .expect("set");
        store.set("kept", "v", None).await.expect("set");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        assert_eq!(store.lock().entries.len(), 2, "expired but still held");
        assert_eq!(store.purge_expired(), 1);
        assert_eq!(store.get("kept").await.expect("get").as_deref(), Some("v"));
    }

    #[tokio::test]
    async fn clones_share_data() {
        let a = MemoryStore::new();
        let b = a.clone();
        a.set("k", "v", None).await.expect("set");
        assert_eq!(b.get("k").await.expect("get").as_deref(), Some("v"));
    }

    #[tokio::test]
    async fn stream_ids_increase_within_one_millisecond() {
        let store = MemoryStore::new();
        let fields = [("a".to_owned(), "1".to_owned())];
        let mut last = String::new();
        for _ in 0..50 {
            let id = store.append_stream("s", &fields, 1000).await.expect("xadd");
            let parse = |id: &str| -> (u64, u64) {
                let (ms, seq) = id.split_once('-').expect("id has a dash");
                (ms.parse().expect("ms"), seq.parse().expect("seq"))
            };
            if !last.is_empty() {
                assert!(parse(&id) > parse(&last), "{id} after {last}");
            }
            last = id;
        }
    }
}
