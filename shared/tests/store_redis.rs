//! The store layer against a real Redis.
//!
//! Runs the store contract (`src/store/conformance.rs`, the same file the unit tests
//! use) against `RedisStore` and `MemoryStore` side by side, then what only a real
//! server can show: claims exclusive across processes, a command surviving a killed
//! connection, and connect errors that say what to do.
//!
//! Needs Redis at `FWDWATCH_TEST_REDIS_URL` (default `redis://127.0.0.1:6379/`). When
//! it is not reachable the tests fail and say how to start it — they never skip.
//! Redis is shared with other test runs: every test works under its own
//! `t-<uuid>:` prefix and deletes its keys when it ends (even on failure), and
//! nothing here flushes or restarts the server.

use std::sync::Arc;
use std::time::Duration;

use fwdwatch_shared::config::RedisSettings;
use fwdwatch_shared::contracts;
use fwdwatch_shared::store::{
    self, Keys, MemoryStore, RedisStore, Store, StoreError, allowlist, audit,
};
use secrecy::SecretString;

#[path = "../src/store/conformance.rs"]
mod conformance;

const DEFAULT_URL: &str = "redis://127.0.0.1:6379/";
const HOW_TO_START: &str = "start it with: redis-server --daemonize yes --bind 127.0.0.1 -::1 \
     --port 6379 --save \"\" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log \
     (or set FWDWATCH_TEST_REDIS_URL)";

fn redis_url() -> String {
    std::env::var("FWDWATCH_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn settings(url: &str, prefix: &str) -> RedisSettings {
    RedisSettings {
        url: SecretString::from(url.to_owned()),
        key_prefix: prefix.to_owned(),
    }
}

fn unique_prefix() -> String {
    format!("t-{}:", uuid::Uuid::new_v4())
}

/// Connects to the test Redis, failing the test (never skipping it) when it is down.
async fn connect(prefix: &str) -> RedisStore {
    let url = redis_url();
    match RedisStore::connect(&settings(&url, prefix)).await {
        Ok(store) => store,
        Err(err) => panic!(
            "these tests need Redis at {url}, which is not reachable ({err}); {HOW_TO_START}"
        ),
    }
}

/// Deletes every key under a test's prefix when dropped — also when the test panics,
/// which is why it uses a plain blocking connection rather than the async store.
struct Cleanup {
    prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(redis_url()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let pattern = Keys::new(self.prefix.clone()).all();
        let mut cursor: u64 = 0;
        loop {
            let Ok((next, keys)): Result<(u64, Vec<String>), _> = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query(&mut conn)
            else {
                return;
            };
            if !keys.is_empty() {
                let _: Result<u64, _> = redis::cmd("DEL").arg(&keys).query(&mut conn);
            }
            if next == 0 {
                return;
            }
            cursor = next;
        }
    }
}

async fn redis_fixture() -> conformance::Fixture {
    let prefix = unique_prefix();
    let store: Arc<dyn Store> = Arc::new(connect(&prefix).await);
    conformance::Fixture::new(store, prefix.clone()).with_cleanup(Cleanup { prefix })
}

async fn memory_fixture() -> conformance::Fixture {
    conformance::Fixture::new(Arc::new(MemoryStore::new()), unique_prefix())
}

conformance::contract_tests!(on_redis, redis_fixture);
conformance::contract_tests!(on_memory, memory_fixture);

/// Claims are exclusive across tasks on every worker thread *and* across processes
/// (two stores = two connections, as two notifier replicas would have).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_from_many_tasks_and_two_processes_have_one_winner() {
    let prefix = unique_prefix();
    let _cleanup = Cleanup {
        prefix: prefix.clone(),
    };
    let replicas: [Arc<dyn Store>; 2] = [
        Arc::new(connect(&prefix).await),
        Arc::new(connect(&prefix).await),
    ];
    let key = Keys::new(prefix.as_str()).command_claim("cmd-1");
    let tasks: Vec<_> = (0..50)
        .map(|n| {
            let store = replicas[n % 2].clone();
            let key = key.clone();
            tokio::spawn(async move { store.claim(&key, Duration::from_secs(60)).await })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        if task.await.expect("task").expect("claim") {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

/// Kills the store's connection from another client, as a Redis restart or a proxy
/// would, and checks that the next operations still succeed: the manager fails the
/// one command that meets the dead connection, and the store retries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_survives_a_killed_connection() {
    let prefix = unique_prefix();
    let _cleanup = Cleanup {
        prefix: prefix.clone(),
    };
    let store = connect(&prefix).await;
    let keys = Keys::new(prefix.as_str());
    let key = format!("{prefix}survivor");
    store.set(&key, "still here", None).await.expect("set");

    let killer = redis::Client::open(redis_url()).expect("url");
    let mut killer = killer
        .get_multiplexed_async_connection()
        .await
        .expect("a second connection");

    // 1. A plain read.
    let before = kill(&store, &mut killer).await;
    assert_eq!(
        store
            .get(&key)
            .await
            .expect("get after the kill")
            .as_deref(),
        Some("still here")
    );
    assert_retried_on_a_new_connection(&store, before).await;

    // 2. A claim (a Lua script): retried, and still exactly one winner.
    let claim = keys.command_claim("after-kill");
    let before = kill(&store, &mut killer).await;
    assert!(
        store
            .claim(&claim, Duration::from_secs(60))
            .await
            .expect("claim after the kill")
    );
    assert_retried_on_a_new_connection(&store, before).await;
    assert!(
        !store
            .claim(&claim, Duration::from_secs(60))
            .await
            .expect("second claim")
    );

    // 3. A compare-and-set: the retry swaps once.
    let before = kill(&store, &mut killer).await;
    assert!(
        store
            .compare_and_set(&key, Some("still here"), "swapped", None)
            .await
            .expect("cas after the kill")
    );
    assert_retried_on_a_new_connection(&store, before).await;
    assert_eq!(
        store.get(&key).await.expect("get").as_deref(),
        Some("swapped")
    );
}

/// State before a kill: the connection's id and the retry count.
struct BeforeKill {
    client_id: i64,
    retried: u64,
}

async fn kill(store: &RedisStore, killer: &mut redis::aio::MultiplexedConnection) -> BeforeKill {
    let before = BeforeKill {
        client_id: store.client_id().await.expect("CLIENT ID"),
        retried: store.retried_commands(),
    };
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(before.client_id)
        .query_async(killer)
        .await
        .expect("CLIENT KILL");
    assert_eq!(killed, 1, "the store's connection was killed");
    // Let the close reach the client, so the next command meets a dead connection
    // rather than racing the kill.
    tokio::time::sleep(Duration::from_millis(100)).await;
    before
}

async fn assert_retried_on_a_new_connection(store: &RedisStore, before: BeforeKill) {
    assert!(
        store.retried_commands() > before.retried,
        "the command that met the dead connection was retried ({} → {})",
        before.retried,
        store.retried_commands()
    );
    let after = store.client_id().await.expect("CLIENT ID after reconnect");
    assert_ne!(after, before.client_id, "the store reconnected");
}

/// A store with nothing behind it fails at connect, says how to start Redis and
/// does not repeat the password.
#[tokio::test]
async fn unreachable_redis_fails_with_how_to_start_it() {
    // Port 1 on localhost: nothing listens there; connection refused at once.
    let err = RedisStore::connect(&settings("redis://:s3cret-pw@127.0.0.1:1/0", "t:"))
        .await
        .expect_err("nothing listens on port 1");
    let message = err.to_string();
    assert!(matches!(err, StoreError::Connect { .. }), "{message}");
    assert!(
        message.contains("redis-server"),
        "says how to start Redis: {message}"
    );
    assert!(
        message.contains("127.0.0.1:1"),
        "says where it tried: {message}"
    );
    assert!(
        !message.contains("s3cret-pw"),
        "never prints the password: {message}"
    );
    assert!(
        !format!("{err:?}").contains("s3cret-pw"),
        "not even in Debug: {err:?}"
    );
}

#[tokio::test]
async fn an_invalid_url_is_refused_without_echoing_it() {
    let err = RedisStore::connect(&settings("rediss//:s3cret-pw@nowhere", "t:"))
        .await
        .expect_err("not a URL");
    let message = err.to_string();
    assert!(matches!(err, StoreError::InvalidUrl { .. }), "{message}");
    assert!(!message.contains("s3cret-pw"), "{message}");
}

/// `store::connect` is what services call: one shared, object-safe store.
#[tokio::test]
async fn connect_gives_a_shared_store_whose_debug_hides_the_url() {
    let prefix = unique_prefix();
    let _cleanup = Cleanup {
        prefix: prefix.clone(),
    };
    let shared = store::connect(&settings(&redis_url(), &prefix))
        .await
        .unwrap_or_else(|err| panic!("Redis is not reachable ({err}); {HOW_TO_START}"));
    shared.ping().await.expect("ping");
    let debug = format!("{shared:?}");
    assert!(debug.contains("RedisStore"), "{debug}");

    // The domain helpers work through the trait object as the services use them.
    let keys = Keys::new(prefix.as_str());
    let event = contracts::AuditEvent::example();
    audit::append(&*shared, &keys, &event)
        .await
        .expect("append");
    assert_eq!(
        audit::recent(&*shared, &keys, 5).await.expect("recent"),
        vec![event]
    );
    assert!(
        allowlist::list(&*shared, &keys)
            .await
            .expect("list")
            .is_empty()
    );
}
