//! Test fixtures: real RabbitMQ and Redis under a unique namespace / key prefix per
//! test (removed afterwards, also when the test panics), a local HTTP receiver
//! standing in for Slack / Teams / the webhook, a TCP proxy to take Redis away, and
//! detection / summary builders.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use fwdwatch_shared::bus::{RabbitBus, Topology};
use fwdwatch_shared::config::Settings;
use fwdwatch_shared::contracts::{
    Check, CheckReport, CheckStatus, Detection, ErrorKind, Mailbox, ScanError, Signal, TenantRef,
    TenantSummary,
};
use fwdwatch_shared::store::{Keys, RedisStore, Store};

pub const LINK_SECRET: &str = "test-link-secret-0123456789";
pub const WEBHOOK_SECRET: &str = "webhook-hmac-secret";
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379/";

/// Logs to the test output when `RUST_LOG` is set (for debugging a failing test).
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

pub fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// Settings for one test: its own namespace and key prefix, plus `extra` overrides
/// (`FWDWATCH__…` names).
pub fn settings(ns: &str, prefix: &str, extra: &[(&str, String)]) -> Settings {
    init_logs();
    let mut env: Vec<(String, String)> = vec![
        ("FWDWATCH__AMQP__URL".into(), AMQP_URL.into()),
        ("FWDWATCH__AMQP__NAMESPACE".into(), ns.into()),
        ("FWDWATCH__NOTIFIER__PREFETCH".into(), "32".into()),
        ("FWDWATCH__REDIS__URL".into(), REDIS_URL.into()),
        ("FWDWATCH__REDIS__KEY_PREFIX".into(), prefix.into()),
        ("FWDWATCH__SECURITY__LINK_SECRET".into(), LINK_SECRET.into()),
        ("FWDWATCH__NOTIFIER__SINK_BACKOFF".into(), "20ms".into()),
        ("FWDWATCH__NOTIFIER__SINK_TIMEOUT".into(), "2s".into()),
        (
            "FWDWATCH__NOTIFIER__LINK_BASE_URL".into(),
            "https://fwdwatch.test".into(),
        ),
    ];
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        env.push(((*k).to_owned(), v.clone()));
    }
    Settings::load_from(None, env).expect("test settings load")
}

/// Connects to RabbitMQ or fails the test saying how to start it.
pub async fn rabbit(settings: &Settings) -> RabbitBus {
    RabbitBus::connect(&settings.amqp)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "these tests need RabbitMQ at 127.0.0.1:5672 (guest/guest): {e}\n\
             start it with `rabbitmq-server -detached && rabbitmqctl await_startup`"
            )
        })
}

/// Connects to Redis or fails the test saying how to start it.
pub async fn redis(settings: &Settings) -> RedisStore {
    RedisStore::connect(&settings.redis)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "these tests need Redis at 127.0.0.1:6379: {e}\n\
             start it with `redis-server --daemonize yes --port 6379 --save ''`"
            )
        })
}

/// Deletes every key under `prefix` (never anything else: the Redis is shared).
pub async fn wipe_keys(store: &dyn Store, keys: &Keys) {
    if let Ok(all) = store.scan_keys(&keys.all()).await {
        for key in all {
            let _ = store.delete(&key).await;
        }
    }
}

/// Removes a test's queues, exchanges and keys when dropped — also after a panic —
/// on a thread of its own (Drop cannot await).
pub struct Cleanup {
    pub settings: Settings,
    pub extra_queues: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let mut settings = self.settings.clone();
        // Straight to Redis: a test's proxy lives on the runtime this drop blocks.
        settings.redis.url = REDIS_URL.to_owned().into();
        let extra = self.extra_queues.clone();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(bus) = RabbitBus::connect(&settings.amqp).await {
                    let topology = Topology::from_settings(&settings.amqp);
                    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
                    let _ = bus.teardown(&topology, &extra).await;
                    let _ = bus.close().await;
                }
                if let Ok(store) = RedisStore::connect(&settings.redis).await {
                    wipe_keys(&store, &Keys::from_settings(&settings.redis)).await;
                }
            });
        })
        .join();
    }
}

// ---------------------------------------------------------------- HTTP receiver

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("receiver got JSON")
    }
}

#[derive(Default)]
struct ReceiverState {
    requests: Mutex<Vec<Received>>,
    statuses: Mutex<HashMap<String, u16>>,
}

/// An HTTP server on a free port that records every request and answers 200 (or
/// what [`Receiver::fail`] set for a path). Slack-ish paths answer as Slack does.
#[derive(Clone)]
pub struct Receiver {
    state: Arc<ReceiverState>,
    pub addr: SocketAddr,
}

impl Receiver {
    pub async fn start() -> Self {
        let state = Arc::new(ReceiverState::default());
        let app = axum::Router::new().fallback({
            let state = state.clone();
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let state = state.clone();
                async move {
                    let path = uri.path().to_owned();
                    let headers = headers
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.as_str().to_ascii_lowercase(),
                                v.to_str().unwrap_or("").to_owned(),
                            )
                        })
                        .collect();
                    state.requests.lock().expect("lock").push(Received {
                        path: path.clone(),
                        headers,
                        body: body.to_vec(),
                    });
                    let status = state
                        .statuses
                        .lock()
                        .expect("lock")
                        .get(&path)
                        .copied()
                        .unwrap_or(200);
                    let body = if path.ends_with("chat.postMessage") {
                        r#"{"ok":true,"ts":"1.2"}"#
                    } else {
                        "ok"
                    };
                    (
                        axum::http::StatusCode::from_u16(status).expect("status"),
                        body,
                    )
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { state, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Makes `path` answer `status`.
    pub fn fail(&self, path: &str, status: u16) {
        self.state
            .statuses
            .lock()
            .expect("lock")
            .insert(path.to_owned(), status);
    }

    pub fn requests(&self, path: &str) -> Vec<Received> {
        self.state
            .requests
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `path` got at least `n` requests; returns them.
    pub async fn wait(&self, path: &str, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.requests(path);
            if got.len() >= n {
                return got;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{path}: expected {n} request(s) within {timeout:?}, got {}",
                    got.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

// ---------------------------------------------------------------- TCP proxy

/// A TCP proxy to Redis that a test can take down (existing connections cut, new
/// ones refused) and bring back, without touching the shared Redis.
#[derive(Clone)]
pub struct Proxy {
    pub addr: SocketAddr,
    down: Arc<std::sync::atomic::AtomicBool>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    pub async fn start(upstream: &'static str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let proxy = Self {
            addr,
            down: Arc::default(),
            tasks: Arc::default(),
        };
        let p = proxy.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if p.down.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                p.tasks.lock().expect("lock").push(task);
            }
        });
        proxy
    }

    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
        if down {
            for task in self.tasks.lock().expect("lock").drain(..) {
                task.abort();
            }
        }
    }
}

// ---------------------------------------------------------------- builders

pub fn tenant_id(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// A detection of `signal` in tenant `n`, mailbox `mailbox`, to `targets`.
pub fn detection(
    n: u32,
    mailbox: &str,
    signal: Signal,
    targets: &[&str],
    observed_at: DateTime<Utc>,
) -> Detection {
    let mut d = Detection::example();
    d.tenant_id = tenant_id(n);
    d.tenant_name = format!("Customer {n}");
    d.signal = signal;
    d.mailbox = signal.is_per_mailbox().then(|| Mailbox {
        primary_smtp_address: mailbox.to_owned(),
        display_name: format!("User {mailbox}"),
        recipient_type: "UserMailbox".into(),
    });
    if signal == Signal::TransportRule {
        d.rule_id = Some("b0c1d2e3-0000-4000-8000-000000000001".into());
        d.rule_name = Some("Copy finance".into());
    }
    let mut targets: Vec<String> = targets.iter().map(|t| (*t).to_owned()).collect();
    targets.sort();
    d.targets = targets.clone();
    d.raw_targets = targets.clone();
    d.fingerprint = fingerprint(&d.tenant_id, d.mailbox_address(), signal, &targets);
    d.run_id = format!("run-{}", observed_at.timestamp_millis());
    d.detection_id = format!("{}:{}", d.run_id, d.fingerprint);
    d.observed_at = observed_at;
    d
}

/// A stand-in for classify's fingerprint: stable per (tenant, mailbox, signal, targets).
pub fn fingerprint(tenant: &str, mailbox: &str, signal: Signal, targets: &[String]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(format!("{tenant}|{mailbox}|{signal}|{}", targets.join(",")));
    hex::encode(&h.finalize()[..16])
}

/// A summary of tenant `n`'s scan started at `started_at`, listing `fingerprints`;
/// `failed` checks failed (the others are ok).
pub fn summary(
    n: u32,
    started_at: DateTime<Utc>,
    fingerprints: &[&str],
    failed: &[Check],
) -> TenantSummary {
    let mut s = TenantSummary::example();
    s.tenant = TenantRef {
        id: tenant_id(n),
        display_name: format!("Customer {n}"),
        default_domain: None,
    };
    s.run_id = format!("run-{}", started_at.timestamp_millis());
    s.job_id = format!("{}:{}", s.run_id, s.tenant.id);
    s.started_at = started_at;
    s.finished_at = started_at + chrono::Duration::seconds(1);
    s.checks = [
        Check::Access,
        Check::AcceptedDomains,
        Check::Mailboxes,
        Check::Recipients,
        Check::InboxRules,
        Check::TransportRules,
        Check::Posture,
        Check::GroupMembers,
        Check::JournalRules,
        Check::OutboundConnectors,
    ]
    .into_iter()
    .map(|check| {
        let fail = failed.contains(&check);
        CheckReport {
            check,
            status: if fail {
                CheckStatus::Failed
            } else {
                CheckStatus::Ok
            },
            items: 1,
            error: fail.then(|| ScanError {
                kind: ErrorKind::Throttled,
                message: "429 after every retry".into(),
                remedy: None,
                code: Some("429".into()),
            }),
        }
    })
    .collect();
    s.fingerprints = fingerprints.iter().map(|f| (*f).to_owned()).collect();
    s.detections = s.fingerprints.len() as u64;
    s
}
