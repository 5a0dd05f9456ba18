//! The store contract, written once and run against every backend.
//!
//! Each case takes a `&dyn Store` and a key prefix unique to the test, and checks one
//! promise of the [`Store`] trait or of the allowlist / audit helpers. The unit tests
//! (`store::tests`) run it against `MemoryStore`; `tests/store_redis.rs` includes
//! this same file (`#[path]`) and runs it against `RedisStore` and `MemoryStore`, so
//! the in-memory twin is held to what Redis really does.
//!
//! Everything is named through `super::…` (and extern crates), which both includers
//! provide: the `store` module here, the test crate's root there.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{Duration as ChronoDuration, Utc};
use futures::future::join_all;

use super::contracts::{AuditEvent, Channel, Issuer, Signal};
use super::{Keys, Store, StoreError, allowlist, audit};

/// A store to test plus a prefix no other test uses, and whatever must be dropped
/// when the test ends (the Redis runs delete their keys from a guard's `Drop`, so a
/// failing test cleans up too).
pub struct Fixture {
    pub store: Arc<dyn Store>,
    pub prefix: String,
    _cleanup: Option<Box<dyn Send>>,
}

impl Fixture {
    pub fn new(store: Arc<dyn Store>, prefix: String) -> Self {
        Self {
            store,
            prefix,
            _cleanup: None,
        }
    }

    #[allow(
        dead_code,
        reason = "only tests/store_redis.rs has something to clean up"
    )]
    pub fn with_cleanup(mut self, guard: impl Send + 'static) -> Self {
        self._cleanup = Some(Box::new(guard));
        self
    }
}

/// Generates one `#[tokio::test]` per contract case in a module named `$module`,
/// each getting its fixture from the async fn `$setup` of the invoking module
/// (which must also have this module in scope as `conformance`).
macro_rules! contract_tests {
    ($module:ident, $setup:ident) => {
        mod $module {
            use super::conformance::contract_tests;
            contract_tests!(
                @cases $setup;
                ping_answers,
                strings_get_set_delete_exists,
                set_ttl_expires_and_no_ttl_persists,
                expire_applies_to_existing_keys_only,
                claim_is_exclusive_until_released_or_expired,
                concurrent_claims_have_exactly_one_winner,
                compare_and_set_swaps_only_on_the_expected_value,
                concurrent_compare_and_set_has_one_winner,
                hash_operations,
                set_operations,
                due_index_orders_by_score_and_limits,
                stream_reads_newest_last,
                stream_trimming_keeps_at_least_max_len,
                scan_keys_matches_the_pattern,
                wrong_type_is_reported,
                invalid_arguments_are_refused,
                allowlist_approves_the_exact_forward_only,
                allowlist_approval_expires,
                allowlist_revoke_and_list,
                audit_round_trip,
            );
        }
    };
    (@cases $setup:ident; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let fixture = super::$setup().await;
                super::conformance::$case(&*fixture.store, &fixture.prefix).await;
            }
        )+
    };
}
pub(crate) use contract_tests;

fn members(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

fn set_of(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

/// Long enough that a loaded CI machine (2 cores, several test binaries) still reads
/// the key before it expires; cases that wait for it run in parallel.
const SHORT_TTL: Duration = Duration::from_millis(1000);
const PAST_SHORT_TTL: Duration = Duration::from_millis(2000);

pub async fn ping_answers(store: &dyn Store, _prefix: &str) {
    store.ping().await.expect("ping");
}

pub async fn strings_get_set_delete_exists(store: &dyn Store, prefix: &str) {
    let key = format!("{prefix}string");
    assert_eq!(store.get(&key).await.expect("get absent"), None);
    assert!(!store.exists(&key).await.expect("exists absent"));
    assert!(!store.delete(&key).await.expect("delete absent"));

    store.set(&key, "one", None).await.expect("set");
    assert_eq!(store.get(&key).await.expect("get").as_deref(), Some("one"));
    assert!(store.exists(&key).await.expect("exists"));
    store.set(&key, "two", None).await.expect("overwrite");
    assert_eq!(store.get(&key).await.expect("get").as_deref(), Some("two"));

    // Values are opaque: empty strings, JSON and non-ASCII survive unchanged.
    for value in ["", "{\"a\":[1,2]}", "Zoë → ✉", "line\nbreak"] {
        store.set(&key, value, None).await.expect("set odd value");
        assert_eq!(store.get(&key).await.expect("get").as_deref(), Some(value));
    }

    assert!(store.delete(&key).await.expect("delete"));
    assert_eq!(store.get(&key).await.expect("get deleted"), None);
    assert!(!store.exists(&key).await.expect("exists deleted"));

    // `set` replaces a key of another type, as Redis SET does.
    let hash = format!("{prefix}was-a-hash");
    store.hash_set(&hash, "f", "v").await.expect("hash_set");
    store
        .set(&hash, "now a string", None)
        .await
        .expect("set over hash");
    assert_eq!(
        store.get(&hash).await.expect("get").as_deref(),
        Some("now a string")
    );
    store.delete(&hash).await.expect("cleanup");
}

pub async fn set_ttl_expires_and_no_ttl_persists(store: &dyn Store, prefix: &str) {
    let short = format!("{prefix}short");
    let kept = format!("{prefix}kept");
    store
        .set(&short, "v", Some(SHORT_TTL))
        .await
        .expect("set ttl");
    store
        .set(&kept, "v", Some(SHORT_TTL))
        .await
        .expect("set ttl");
    // A later set without TTL removes the expiry, as a plain SET does.
    store.set(&kept, "v2", None).await.expect("persist");
    assert_eq!(store.get(&short).await.expect("get").as_deref(), Some("v"));
    tokio::time::sleep(PAST_SHORT_TTL).await;
    assert_eq!(store.get(&short).await.expect("get expired"), None);
    assert!(!store.exists(&short).await.expect("exists expired"));
    assert_eq!(
        store.get(&kept).await.expect("get kept").as_deref(),
        Some("v2")
    );
    store.delete(&kept).await.expect("cleanup");
}

pub async fn expire_applies_to_existing_keys_only(store: &dyn Store, prefix: &str) {
    let set = format!("{prefix}expiring-set");
    assert!(!store.expire(&set, SHORT_TTL).await.expect("expire absent"));
    store.set_add(&set, &members(&["a"])).await.expect("sadd");
    assert!(store.expire(&set, SHORT_TTL).await.expect("expire"));
    // Adding to the set keeps its expiry.
    store.set_add(&set, &members(&["b"])).await.expect("sadd");
    assert_eq!(store.set_card(&set).await.expect("scard"), 2);
    tokio::time::sleep(PAST_SHORT_TTL).await;
    assert!(!store.exists(&set).await.expect("exists"));
    assert_eq!(store.set_card(&set).await.expect("scard expired"), 0);
}

pub async fn claim_is_exclusive_until_released_or_expired(store: &dyn Store, prefix: &str) {
    let key = format!("{prefix}claim");
    let ttl = Duration::from_secs(30);
    assert!(store.claim(&key, ttl).await.expect("first claim"));
    assert!(!store.claim(&key, ttl).await.expect("second claim"));
    assert!(!store.claim(&key, ttl).await.expect("third claim"));
    store.release(&key).await.expect("release");
    assert!(store.claim(&key, ttl).await.expect("claim after release"));
    store.release(&key).await.expect("release");
    // Releasing what nobody holds is fine (a failed handler releases unconditionally).
    store.release(&key).await.expect("release twice");

    let short = format!("{prefix}claim-short");
    assert!(store.claim(&short, SHORT_TTL).await.expect("claim"));
    assert!(!store.claim(&short, SHORT_TTL).await.expect("held"));
    tokio::time::sleep(PAST_SHORT_TTL).await;
    assert!(
        store
            .claim(&short, SHORT_TTL)
            .await
            .expect("claim after expiry")
    );
    store.release(&short).await.expect("cleanup");
}

pub async fn concurrent_claims_have_exactly_one_winner(store: &dyn Store, prefix: &str) {
    let key = format!("{prefix}contended-claim");
    let results = join_all((0..50).map(|_| store.claim(&key, Duration::from_secs(30)))).await;
    let winners = results
        .into_iter()
        .map(|result| result.expect("claim"))
        .filter(|won| *won)
        .count();
    assert_eq!(winners, 1, "exactly one of 50 concurrent claims wins");
    store.release(&key).await.expect("cleanup");
}

pub async fn compare_and_set_swaps_only_on_the_expected_value(store: &dyn Store, prefix: &str) {
    let key = format!("{prefix}cas");
    // `None` = the key must be absent.
    assert!(
        store
            .compare_and_set(&key, None, "open", None)
            .await
            .expect("create")
    );
    assert!(
        !store
            .compare_and_set(&key, None, "open", None)
            .await
            .expect("create again")
    );
    assert!(
        !store
            .compare_and_set(&key, Some("resolved"), "alerted", None)
            .await
            .expect("wrong expectation")
    );
    assert_eq!(store.get(&key).await.expect("get").as_deref(), Some("open"));
    assert!(
        store
            .compare_and_set(&key, Some("open"), "alerted", None)
            .await
            .expect("swap")
    );
    assert_eq!(
        store.get(&key).await.expect("get").as_deref(),
        Some("alerted")
    );
    // Same value again is still a compare: "open" is no longer there.
    assert!(
        !store
            .compare_and_set(&key, Some("open"), "alerted", None)
            .await
            .expect("stale swap")
    );
    // An empty string is a value, not absence.
    store.set(&key, "", None).await.expect("set empty");
    assert!(
        !store
            .compare_and_set(&key, None, "x", None)
            .await
            .expect("empty is present")
    );
    assert!(
        store
            .compare_and_set(&key, Some(""), "x", None)
            .await
            .expect("swap empty")
    );

    // The TTL applies to the new value.
    assert!(
        store
            .compare_and_set(&key, Some("x"), "short", Some(SHORT_TTL))
            .await
            .expect("swap with ttl")
    );
    tokio::time::sleep(PAST_SHORT_TTL).await;
    assert_eq!(store.get(&key).await.expect("get expired"), None);
}

pub async fn concurrent_compare_and_set_has_one_winner(store: &dyn Store, prefix: &str) {
    let key = format!("{prefix}contended-cas");
    store.set(&key, "0", None).await.expect("seed");
    let news: Vec<String> = (1..=20).map(|n| n.to_string()).collect();
    let results = join_all(
        news.iter()
            .map(|new| store.compare_and_set(&key, Some("0"), new, None)),
    )
    .await;
    let winners: Vec<&String> = news
        .iter()
        .zip(results)
        .filter_map(|(new, result)| result.expect("cas").then_some(new))
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one swap from the same value wins"
    );
    assert_eq!(
        store.get(&key).await.expect("get").as_ref(),
        Some(winners[0])
    );
    store.delete(&key).await.expect("cleanup");
}

pub async fn hash_operations(store: &dyn Store, prefix: &str) {
    let key = format!("{prefix}hash");
    assert_eq!(store.hash_get(&key, "f").await.expect("hget absent"), None);
    assert!(
        store
            .hash_get_all(&key)
            .await
            .expect("hgetall absent")
            .is_empty()
    );
    assert!(!store.hash_delete(&key, "f").await.expect("hdel absent"));

    store.hash_set(&key, "run_id", "r1").await.expect("hset");
    store.hash_set(&key, "tenants", "12").await.expect("hset");
    store
        .hash_set(&key, "run_id", "r2")
        .await
        .expect("hset overwrite");
    assert_eq!(
        store
            .hash_get(&key, "run_id")
            .await
            .expect("hget")
            .as_deref(),
        Some("r2")
    );
    assert_eq!(
        store
            .hash_get(&key, "nope")
            .await
            .expect("hget missing field"),
        None
    );
    let expected: BTreeMap<String, String> = [("run_id", "r2"), ("tenants", "12")]
        .into_iter()
        .map(|(f, v)| (f.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(store.hash_get_all(&key).await.expect("hgetall"), expected);

    assert!(store.hash_delete(&key, "run_id").await.expect("hdel"));
    assert!(!store.hash_delete(&key, "run_id").await.expect("hdel again"));
    assert!(store.hash_delete(&key, "tenants").await.expect("hdel last"));
    // The emptied hash is gone, as in Redis.
    assert!(!store.exists(&key).await.expect("exists"));
}

pub async fn set_operations(store: &dyn Store, prefix: &str) {
    let key = format!("{prefix}set");
    assert!(
        store
            .set_members(&key)
            .await
            .expect("smembers absent")
            .is_empty()
    );
    assert_eq!(store.set_card(&key).await.expect("scard absent"), 0);
    assert_eq!(store.set_add(&key, &[]).await.expect("sadd nothing"), 0);
    assert!(!store.exists(&key).await.expect("nothing added, no key"));

    assert_eq!(
        store
            .set_add(&key, &members(&["f1", "f2"]))
            .await
            .expect("sadd"),
        2
    );
    assert_eq!(
        store
            .set_add(&key, &members(&["f2", "f3"]))
            .await
            .expect("sadd"),
        1
    );
    assert_eq!(store.set_card(&key).await.expect("scard"), 3);
    assert_eq!(
        store.set_members(&key).await.expect("smembers"),
        set_of(&["f1", "f2", "f3"])
    );

    assert_eq!(
        store
            .set_remove(&key, &members(&["f1", "zz"]))
            .await
            .expect("srem"),
        1
    );
    assert_eq!(store.set_remove(&key, &[]).await.expect("srem nothing"), 0);
    assert_eq!(
        store.set_members(&key).await.expect("smembers"),
        set_of(&["f2", "f3"])
    );
    assert_eq!(
        store
            .set_remove(&key, &members(&["f2", "f3"]))
            .await
            .expect("srem all"),
        2
    );
    assert!(!store.exists(&key).await.expect("emptied set is gone"));
}

pub async fn due_index_orders_by_score_and_limits(store: &dyn Store, prefix: &str) {
    let key = format!("{prefix}due");
    assert!(
        store
            .zrange_by_score(&key, 1e12, 10)
            .await
            .expect("absent")
            .is_empty()
    );
    store.zadd(&key, "late", 300.0).await.expect("zadd");
    store.zadd(&key, "early", 100.0).await.expect("zadd");
    store.zadd(&key, "b-tie", 200.0).await.expect("zadd");
    store.zadd(&key, "a-tie", 200.0).await.expect("zadd");
    store.zadd(&key, "frac", 150.25).await.expect("zadd");

    let due = store.zrange_by_score(&key, 200.0, 10).await.expect("range");
    assert_eq!(
        due,
        vec![
            ("early".to_owned(), 100.0),
            ("frac".to_owned(), 150.25),
            ("a-tie".to_owned(), 200.0),
            ("b-tie".to_owned(), 200.0),
        ],
        "score order, ties by member, max inclusive"
    );
    assert_eq!(
        store
            .zrange_by_score(&key, 200.0, 2)
            .await
            .expect("limit")
            .len(),
        2
    );
    assert!(
        store
            .zrange_by_score(&key, 200.0, 0)
            .await
            .expect("limit 0")
            .is_empty()
    );
    assert!(
        store
            .zrange_by_score(&key, 99.0, 10)
            .await
            .expect("none due")
            .is_empty()
    );
    assert_eq!(
        store
            .zrange_by_score(&key, f64::INFINITY, 10)
            .await
            .expect("all")
            .len(),
        5
    );

    // Re-scoring moves a member (a reminder pushed back).
    store.zadd(&key, "early", 1000.0).await.expect("rescore");
    assert_eq!(
        store
            .zrange_by_score(&key, 150.25, 10)
            .await
            .expect("range"),
        vec![("frac".to_owned(), 150.25)]
    );
    // Realistic scores (Unix seconds) keep full precision.
    store
        .zadd(&key, "now", 1_764_356_400.0)
        .await
        .expect("zadd");
    assert!(
        store
            .zrange_by_score(&key, 1_764_356_400.0, 10)
            .await
            .expect("range")
            .contains(&("now".to_owned(), 1_764_356_400.0))
    );

    for member in ["late", "early", "a-tie", "b-tie", "frac", "now"] {
        assert!(store.zrem(&key, member).await.expect("zrem"), "{member}");
    }
    assert!(!store.zrem(&key, "late").await.expect("zrem again"));
    assert!(!store.exists(&key).await.expect("emptied zset is gone"));
}

pub async fn stream_reads_newest_last(store: &dyn Store, prefix: &str) {
    let key = format!("{prefix}stream");
    assert!(
        store
            .read_stream(&key, 10)
            .await
            .expect("absent")
            .is_empty()
    );
    let mut ids = Vec::new();
    for n in 0..5 {
        let fields = vec![
            ("n".to_owned(), n.to_string()),
            ("who".to_owned(), "dana".to_owned()),
        ];
        ids.push(
            store
                .append_stream(&key, &fields, 1000)
                .await
                .expect("xadd"),
        );
    }
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 5, "ids are unique");

    let last_three = store.read_stream(&key, 3).await.expect("read");
    let got: Vec<(&str, &str)> = last_three
        .iter()
        .map(|(id, fields)| (id.as_str(), fields["n"].as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (ids[2].as_str(), "2"),
            (ids[3].as_str(), "3"),
            (ids[4].as_str(), "4")
        ],
        "the newest three, newest last"
    );
    assert_eq!(last_three[0].1["who"], "dana");
    assert_eq!(
        store.read_stream(&key, 100).await.expect("read all").len(),
        5
    );
    assert!(
        store
            .read_stream(&key, 0)
            .await
            .expect("read none")
            .is_empty()
    );
    store.delete(&key).await.expect("cleanup");
}

pub async fn stream_trimming_keeps_at_least_max_len(store: &dyn Store, prefix: &str) {
    let key = format!("{prefix}trimmed");
    for n in 0..250 {
        store
            .append_stream(&key, &[("n".to_owned(), n.to_string())], 100)
            .await
            .expect("xadd");
    }
    let kept = store.read_stream(&key, 1000).await.expect("read");
    // `MAXLEN ~` trims whole nodes: somewhere between 100 and 250 remain.
    assert!(
        kept.len() >= 100 && kept.len() <= 250,
        "{} kept",
        kept.len()
    );
    assert_eq!(kept.last().map(|(_, f)| f["n"].as_str()), Some("249"));
    store.delete(&key).await.expect("cleanup");
}

pub async fn scan_keys_matches_the_pattern(store: &dyn Store, prefix: &str) {
    let a = format!("{prefix}scan:a");
    let b = format!("{prefix}scan:b");
    let other = format!("{prefix}other");
    store.set(&a, "1", None).await.expect("set");
    store.hash_set(&b, "f", "1").await.expect("hset");
    store.set(&other, "1", None).await.expect("set");
    let gone = format!("{prefix}scan:gone");
    store
        .set(&gone, "1", Some(SHORT_TTL))
        .await
        .expect("set ttl");
    tokio::time::sleep(PAST_SHORT_TTL).await;

    let found = store
        .scan_keys(&format!("{prefix}scan:*"))
        .await
        .expect("scan");
    assert_eq!(
        found,
        vec![a.clone(), b.clone()],
        "sorted, expired keys excluded"
    );
    let everything = store
        .scan_keys(&format!("{prefix}*"))
        .await
        .expect("scan all");
    assert_eq!(everything, vec![other.clone(), a.clone(), b.clone()]);
    assert!(
        store
            .scan_keys(&format!("{prefix}nothing*"))
            .await
            .expect("scan none")
            .is_empty()
    );
    for key in [a, b, other] {
        store.delete(&key).await.expect("cleanup");
    }
}

pub async fn wrong_type_is_reported(store: &dyn Store, prefix: &str) {
    let string = format!("{prefix}a-string");
    store.set(&string, "v", None).await.expect("set");
    let is_wrong_type = |result: Result<(), StoreError>, what: &str| match result {
        Err(StoreError::WrongType { key, .. }) => assert_eq!(key, string, "{what}"),
        other => panic!("{what}: expected WrongType, got {other:?}"),
    };
    is_wrong_type(
        store.set_add(&string, &members(&["m"])).await.map(drop),
        "set_add",
    );
    is_wrong_type(store.hash_get(&string, "f").await.map(drop), "hash_get");
    is_wrong_type(store.zadd(&string, "m", 1.0).await, "zadd");
    is_wrong_type(
        store
            .append_stream(&string, &[("f".to_owned(), "v".to_owned())], 10)
            .await
            .map(drop),
        "append_stream",
    );
    let hash = format!("{prefix}a-hash");
    store.hash_set(&hash, "f", "v").await.expect("hset");
    match store.get(&hash).await {
        Err(StoreError::WrongType { .. }) => {}
        other => panic!("get on a hash: expected WrongType, got {other:?}"),
    }
    match store.compare_and_set(&hash, None, "x", None).await {
        Err(StoreError::WrongType { .. }) => {}
        other => panic!("compare_and_set on a hash: expected WrongType, got {other:?}"),
    }
    match store.claim(&hash, Duration::from_secs(5)).await {
        Err(StoreError::WrongType { .. }) => {}
        other => panic!("claim on a hash: expected WrongType, got {other:?}"),
    }
    // The error names the operation and the key, for the log line.
    let message = store
        .set_members(&string)
        .await
        .expect_err("smembers on a string")
        .to_string();
    assert!(
        message.contains("set_members") && message.contains(&string),
        "{message}"
    );
    store.delete(&string).await.expect("cleanup");
    store.delete(&hash).await.expect("cleanup");
}

pub async fn invalid_arguments_are_refused(store: &dyn Store, prefix: &str) {
    let key = format!("{prefix}invalid");
    assert!(matches!(
        store.zadd(&key, "m", f64::NAN).await,
        Err(StoreError::InvalidArgument { .. })
    ));
    assert!(matches!(
        store.append_stream(&key, &[], 10).await,
        Err(StoreError::InvalidArgument { .. })
    ));
    assert!(!store.exists(&key).await.expect("nothing was written"));
}

fn issuer() -> Issuer {
    Issuer {
        channel: Channel::Slack,
        user_id: "U024BE7LH".into(),
        name: "Dana".into(),
    }
}

fn approval(
    tenant: &str,
    mailbox: Option<&str>,
    signal: Signal,
    target: &str,
) -> allowlist::Approval {
    allowlist::Approval {
        tenant_id: tenant.into(),
        mailbox: mailbox.map(str::to_owned),
        signal,
        target: target.into(),
        approved_by: issuer(),
        approved_at: Utc::now(),
        reason: Some("outsourced accounts payable".into()),
        expires_at: None,
        command_id: Some(uuid::Uuid::new_v4().to_string()),
    }
}

pub async fn allowlist_approves_the_exact_forward_only(store: &dyn Store, prefix: &str) {
    let keys = Keys::new(prefix);
    let now = Utc::now();
    let approved = approval(
        "tenant-a",
        Some("finance@contoso.com"),
        Signal::ForwardingSmtpAddress,
        "ap@partner.example",
    );
    allowlist::approve(store, &keys, approved.clone())
        .await
        .expect("approve");
    let rule = approval(
        "tenant-a",
        None,
        Signal::TransportRule,
        "archive@vault.example",
    );
    allowlist::approve(store, &keys, rule.clone())
        .await
        .expect("approve rule");

    let check =
        |tenant: &'static str, mailbox: &'static str, signal: Signal, target: &'static str| {
            let keys = keys.clone();
            async move {
                allowlist::is_approved(store, &keys, tenant, mailbox, signal, target, now)
                    .await
                    .expect("is_approved")
            }
        };
    assert_eq!(
        check(
            "tenant-a",
            "finance@contoso.com",
            Signal::ForwardingSmtpAddress,
            "ap@partner.example"
        )
        .await,
        Some(approved.clone()),
        "the exact forward is approved and the stored approval comes back"
    );
    assert_eq!(
        check(
            "tenant-a",
            "",
            Signal::TransportRule,
            "archive@vault.example"
        )
        .await,
        Some(rule),
        "transport rules are approved tenant-wide"
    );
    for (tenant, mailbox, signal, target, why) in [
        (
            "tenant-a",
            "finance@contoso.com",
            Signal::ForwardingSmtpAddress,
            "other@partner.example",
            "another target on the same mailbox",
        ),
        (
            "tenant-a",
            "finance@contoso.com",
            Signal::ForwardingSmtpAddress,
            "ap+x@partner.example",
            "a plus-addressed target is another target",
        ),
        (
            "tenant-a",
            "finance@contoso.com",
            Signal::ForwardingSmtpAddress,
            "ap@evil.example",
            "same local part, another domain",
        ),
        (
            "tenant-a",
            "ceo@contoso.com",
            Signal::ForwardingSmtpAddress,
            "ap@partner.example",
            "the same target from another mailbox",
        ),
        (
            "tenant-a",
            "finance@contoso.com",
            Signal::InboxRule,
            "ap@partner.example",
            "the same target through another signal",
        ),
        (
            "tenant-b",
            "finance@contoso.com",
            Signal::ForwardingSmtpAddress,
            "ap@partner.example",
            "another tenant",
        ),
        (
            "tenant-a",
            "finance@contoso.com",
            Signal::TransportRule,
            "archive@vault.example",
            "a mailbox does not inherit a tenant-wide approval",
        ),
    ] {
        assert_eq!(check(tenant, mailbox, signal, target).await, None, "{why}");
    }
}

pub async fn allowlist_approval_expires(store: &dyn Store, prefix: &str) {
    let keys = Keys::new(prefix);
    let now = Utc::now();
    let far = approval(
        "t",
        Some("m@contoso.com"),
        Signal::InboxRule,
        "x@evil.example",
    );
    let far = allowlist::Approval {
        expires_at: Some(now + ChronoDuration::days(30)),
        ..far
    };
    allowlist::approve(store, &keys, far.clone())
        .await
        .expect("approve");
    let is_approved_at = |at| {
        let keys = keys.clone();
        async move {
            allowlist::is_approved(
                store,
                &keys,
                "t",
                "m@contoso.com",
                Signal::InboxRule,
                "x@evil.example",
                at,
            )
            .await
            .expect("is_approved")
        }
    };
    assert_eq!(is_approved_at(now).await, Some(far.clone()));
    // Checked on read: past its expiry it approves nothing, whatever the key's TTL.
    assert_eq!(is_approved_at(now + ChronoDuration::days(31)).await, None);

    // And the key's TTL removes it from the store.
    let soon = allowlist::Approval {
        expires_at: Some(Utc::now() + ChronoDuration::milliseconds(1000)),
        ..far
    };
    allowlist::approve(store, &keys, soon.clone())
        .await
        .expect("approve again");
    assert_eq!(is_approved_at(Utc::now()).await, Some(soon.clone()));
    tokio::time::sleep(PAST_SHORT_TTL).await;
    assert!(
        !store.exists(&soon.key(&keys)).await.expect("exists"),
        "the TTL removed it"
    );
    assert_eq!(is_approved_at(Utc::now()).await, None);
    assert!(
        allowlist::list(store, &keys)
            .await
            .expect("list")
            .is_empty()
    );
    assert!(
        store
            .set_members(&keys.allowlist_index())
            .await
            .expect("index")
            .is_empty(),
        "list pruned the index"
    );
}

pub async fn allowlist_revoke_and_list(store: &dyn Store, prefix: &str) {
    let keys = Keys::new(prefix);
    let b = approval(
        "tenant-b",
        Some("a@fabrikam.example"),
        Signal::InboxRule,
        "x@evil.example",
    );
    let a2 = approval(
        "tenant-a",
        Some("z@contoso.com"),
        Signal::ForwardingAddress,
        "y@evil.example",
    );
    let a1 = approval(
        "tenant-a",
        Some("m@contoso.com"),
        Signal::InboxRule,
        "x@evil.example",
    );
    for approval in [&b, &a2, &a1] {
        allowlist::approve(store, &keys, approval.clone())
            .await
            .expect("approve");
    }
    // Approving the same forward again replaces it (one entry, the newer reason).
    let a1_again = allowlist::Approval {
        reason: Some("re-confirmed".into()),
        ..a1.clone()
    };
    allowlist::approve(store, &keys, a1_again.clone())
        .await
        .expect("re-approve");
    assert_eq!(
        allowlist::list(store, &keys).await.expect("list"),
        vec![a1_again, a2.clone(), b.clone()],
        "sorted by tenant, mailbox, signal, target"
    );

    assert!(
        allowlist::revoke(
            store,
            &keys,
            "tenant-a",
            "m@contoso.com",
            Signal::InboxRule,
            "x@evil.example"
        )
        .await
        .expect("revoke")
    );
    assert!(
        !allowlist::revoke(
            store,
            &keys,
            "tenant-a",
            "m@contoso.com",
            Signal::InboxRule,
            "x@evil.example"
        )
        .await
        .expect("revoke again")
    );
    assert_eq!(
        allowlist::is_approved(
            store,
            &keys,
            "tenant-a",
            "m@contoso.com",
            Signal::InboxRule,
            "x@evil.example",
            Utc::now()
        )
        .await
        .expect("is_approved"),
        None
    );
    assert_eq!(
        allowlist::list(store, &keys).await.expect("list"),
        vec![a2.clone(), b.clone()]
    );

    for approval in [a2, b] {
        assert!(
            allowlist::revoke(
                store,
                &keys,
                &approval.tenant_id,
                approval.mailbox_address(),
                approval.signal,
                &approval.target
            )
            .await
            .expect("revoke")
        );
    }
    assert!(
        !store
            .exists(&keys.allowlist_index())
            .await
            .expect("index emptied")
    );
}

pub async fn audit_round_trip(store: &dyn Store, prefix: &str) {
    let keys = Keys::new(prefix);
    assert!(
        audit::recent(store, &keys, 10)
            .await
            .expect("empty")
            .is_empty()
    );
    let events: Vec<AuditEvent> = (0..3)
        .map(|n| AuditEvent {
            event_id: format!("event-{n}"),
            detail: format!("decision {n}"),
            ..AuditEvent::example()
        })
        .collect();
    for event in &events {
        audit::append(store, &keys, event).await.expect("append");
    }
    assert_eq!(
        audit::recent(store, &keys, 10).await.expect("recent"),
        events
    );
    assert_eq!(
        audit::recent(store, &keys, 2).await.expect("recent 2"),
        events[1..].to_vec()
    );
    store.delete(&keys.audit()).await.expect("cleanup");
}
