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
    pub query: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: std::time::Instant,
    /// The status it was answered with.
    pub status: u16,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("receiver got JSON")
    }

    /// The alert id the body carries (the webhook's field, or a Slack message's
    /// metadata).
    pub fn alert_id(&self) -> String {
        let json: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
        json["alert_id"]
            .as_str()
            .or(json["metadata"]["event_payload"]["alert_id"].as_str())
            .unwrap_or("")
            .to_owned()
    }
}

/// A message the fake Slack Web API holds.
#[derive(Debug, Clone)]
pub struct SlackMessage {
    pub ts: String,
    pub alert_id: String,
    pub updates: u32,
}

#[derive(Default)]
struct ReceiverState {
    requests: Mutex<Vec<Received>>,
    statuses: Mutex<HashMap<String, u16>>,
    /// Per path: answer this many requests with 429 + `Retry-After: <secs>`.
    throttle: Mutex<HashMap<String, (u32, u64)>>,
    /// Per path: how long to take before answering.
    delays: Mutex<HashMap<String, Duration>>,
    /// Per path: requests being answered now, and the most seen at once.
    concurrent: Mutex<HashMap<String, (usize, usize)>>,
    /// Per path: answer errors with the request body echoed back.
    echo: Mutex<std::collections::HashSet<String>>,
    slack: Mutex<Vec<SlackMessage>>,
}

/// An HTTP server on a free port that records every request and answers 200 (or
/// what [`Receiver::fail`] set for a path). Paths under `/api/` answer as Slack's
/// Web API does (`chat.postMessage`, `chat.update`, `conversations.history` with
/// message metadata), keeping the messages posted.
#[derive(Clone)]
pub struct Receiver {
    state: Arc<ReceiverState>,
    pub addr: SocketAddr,
}

/// Decrements the in-flight count of a path when the answer is done.
struct Busy(Arc<ReceiverState>, String);

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(c) = self.0.concurrent.lock().expect("lock").get_mut(&self.1) {
            c.0 -= 1;
        }
    }
}

impl Receiver {
    pub async fn start() -> Self {
        let state = Arc::new(ReceiverState::default());
        let app = axum::Router::new().fallback({
            let state = state.clone();
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let state = state.clone();
                async move { Receiver::answer(state, uri, headers, body).await }
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

    async fn answer(
        state: Arc<ReceiverState>,
        uri: axum::http::Uri,
        headers: axum::http::HeaderMap,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let path = uri.path().to_owned();
        let at = std::time::Instant::now();
        let _busy = {
            let mut c = state.concurrent.lock().expect("lock");
            let entry = c.entry(path.clone()).or_insert((0, 0));
            entry.0 += 1;
            entry.1 = entry.1.max(entry.0);
            Busy(state.clone(), path.clone())
        };
        let delay = state.delays.lock().expect("lock").get(&path).copied();
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let throttled = {
            let mut t = state.throttle.lock().expect("lock");
            match t.get_mut(&path) {
                Some((left, secs)) if *left > 0 => {
                    *left -= 1;
                    Some(*secs)
                }
                _ => None,
            }
        };
        let status = throttled.map_or_else(
            || {
                state
                    .statuses
                    .lock()
                    .expect("lock")
                    .get(&path)
                    .copied()
                    .unwrap_or(200)
            },
            |_| 429,
        );
        let headers: HashMap<String, String> = headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        let query = uri.query().unwrap_or("").to_owned();
        state.requests.lock().expect("lock").push(Received {
            path: path.clone(),
            query: query.clone(),
            headers,
            body: body.to_vec(),
            at,
            status,
        });
        let code = axum::http::StatusCode::from_u16(status).expect("status");
        if let Some(secs) = throttled {
            return (
                code,
                [(axum::http::header::RETRY_AFTER, secs.to_string())],
                "slow down",
            )
                .into_response();
        }
        if status >= 400 && state.echo.lock().expect("lock").contains(&path) {
            // A receiver that quotes what it got in its error (tokens included).
            return (code, body.to_vec()).into_response();
        }
        let answer = if path.starts_with("/api/") && status == 200 {
            Receiver::slack_api(&state, &path, &query, &body)
        } else {
            "ok".to_owned()
        };
        (code, answer).into_response()
    }

    /// Slack's Web API, as far as the notifier uses it.
    fn slack_api(state: &ReceiverState, path: &str, query: &str, body: &[u8]) -> String {
        let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let mut messages = state.slack.lock().expect("lock");
        if path.ends_with("chat.postMessage") {
            let ts = format!("1795870800.{:06}", messages.len() + 1);
            messages.push(SlackMessage {
                ts: ts.clone(),
                alert_id: json["metadata"]["event_payload"]["alert_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                updates: 0,
            });
            return serde_json::json!({"ok": true, "channel": "C0FWDWATCH", "ts": ts}).to_string();
        }
        if path.ends_with("chat.update") {
            let ts = json["ts"].as_str().unwrap_or("");
            return match messages.iter_mut().find(|m| m.ts == ts) {
                Some(m) => {
                    m.updates += 1;
                    serde_json::json!({"ok": true, "channel": "C0FWDWATCH", "ts": ts}).to_string()
                }
                None => r#"{"ok":false,"error":"message_not_found"}"#.to_owned(),
            };
        }
        if path.ends_with("conversations.history") {
            let cursor: usize = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("cursor="))
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            // Newest first, 200 a page.
            let newest_first: Vec<&SlackMessage> = messages.iter().rev().collect();
            let page: Vec<serde_json::Value> = newest_first
                .iter()
                .skip(cursor)
                .take(200)
                .map(|m| {
                    serde_json::json!({"type": "message", "ts": m.ts, "metadata": {
                        "event_type": "fwdwatch_alert",
                        "event_payload": {"alert_id": m.alert_id}}})
                })
                .collect();
            let more = cursor + 200 < newest_first.len();
            return serde_json::json!({
                "ok": true,
                "messages": page,
                "has_more": more,
                "response_metadata": {"next_cursor": if more { (cursor + 200).to_string() } else { String::new() }},
            })
            .to_string();
        }
        r#"{"ok":true}"#.to_owned()
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

    /// Makes `path` answer its next `n` requests with 429 and `Retry-After: secs`.
    pub fn throttle(&self, path: &str, n: u32, secs: u64) {
        self.state
            .throttle
            .lock()
            .expect("lock")
            .insert(path.to_owned(), (n, secs));
    }

    /// Makes `path` take `delay` before answering.
    pub fn slow(&self, path: &str, delay: Duration) {
        self.state
            .delays
            .lock()
            .expect("lock")
            .insert(path.to_owned(), delay);
    }

    /// Makes `path` quote the request body in its error answers.
    pub fn echo_errors(&self, path: &str) {
        self.state
            .echo
            .lock()
            .expect("lock")
            .insert(path.to_owned());
    }

    /// The most requests `path` was answering at once.
    pub fn max_concurrent(&self, path: &str) -> usize {
        self.state
            .concurrent
            .lock()
            .expect("lock")
            .get(path)
            .map_or(0, |c| c.1)
    }

    /// The messages the fake Slack Web API holds.
    pub fn slack_messages(&self) -> Vec<SlackMessage> {
        self.state.slack.lock().expect("lock").clone()
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

    /// Every request, whatever its path.
    pub fn all_requests(&self) -> Vec<Received> {
        self.state.requests.lock().expect("lock").clone()
    }

    /// The distinct alert ids `path` accepted (answered 2xx).
    pub fn accepted_ids(&self, path: &str) -> std::collections::BTreeSet<String> {
        self.requests(path)
            .iter()
            .filter(|r| r.status < 300)
            .map(Received::alert_id)
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

    /// Waits until `path` accepted `n` distinct alert ids or `timeout` passed; returns
    /// how many it had.
    pub async fn wait_accepted(&self, path: &str, n: usize, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.accepted_ids(path).len();
            if got >= n || tokio::time::Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
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

// ---------------------------------------------------------------- processes

/// A free TCP port on 127.0.0.1 (bound and released; good enough for a test).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits until something accepts connections on `port`.
pub async fn wait_for_port(port: u16, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing listens on {port} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `signal` (`-KILL`, `-TERM`) to a process.
pub fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(signal)
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {signal} {pid}");
}

/// A throwaway Redis of this test's own (never the shared one on 6379), with an
/// append-only file fsynced on every write, as production runs it: it can be killed
/// and started again on the same port and data.
pub struct RedisServer {
    pub port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl RedisServer {
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("fwdwatch-redis-{}", unique()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut server = Self {
            port: free_port(),
            dir,
            child: None,
        };
        server.up().await;
        server
    }

    async fn up(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
            ])
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts (is it installed?)");
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(10)).await;
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// SIGKILL: what a crash or an OOM kill does.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data.
    pub async fn restart(&mut self) {
        self.kill();
        self.up().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A throwaway RabbitMQ node of this test's own (never the shared one on 5672): its
/// own node name, ports, data directory and Erlang cookie. Starting one takes a few
/// seconds.
pub struct RabbitNode {
    pub port: u16,
    node: String,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

const RABBIT_BIN: &str = "/usr/lib/rabbitmq/bin";

impl RabbitNode {
    pub async fn start() -> Self {
        let id = unique();
        let dir = std::env::temp_dir().join(format!("fwdwatch-rabbit-{id}"));
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(dir.join(sub)).expect("temp dir");
        }
        std::fs::write(dir.join("enabled_plugins"), "[].\n").expect("plugins file");
        let port = free_port();
        let node = format!("fwdwatch-test-{id}@localhost");
        let child = std::process::Command::new(format!("{RABBIT_BIN}/rabbitmq-server"))
            .current_dir(&dir)
            .envs(Self::env(&dir, &node, port))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("rabbitmq-server starts (is RabbitMQ installed?)");
        let node = Self {
            port,
            node,
            dir,
            child: Some(child),
        };
        wait_for_port(port, Duration::from_secs(90)).await;
        node
    }

    fn env(dir: &std::path::Path, node: &str, port: u16) -> Vec<(String, String)> {
        let d = dir.display();
        vec![
            ("HOME".into(), d.to_string()),
            ("RABBITMQ_NODENAME".into(), node.to_owned()),
            ("RABBITMQ_NODE_PORT".into(), port.to_string()),
            ("RABBITMQ_DIST_PORT".into(), free_port().to_string()),
            ("RABBITMQ_MNESIA_BASE".into(), format!("{d}/mnesia")),
            ("RABBITMQ_LOG_BASE".into(), format!("{d}/log")),
            (
                "RABBITMQ_ENABLED_PLUGINS_FILE".into(),
                format!("{d}/enabled_plugins"),
            ),
            ("RABBITMQ_CONFIG_FILE".into(), format!("{d}/rabbitmq")),
            (
                "RABBITMQ_ADVANCED_CONFIG_FILE".into(),
                format!("{d}/advanced.config"),
            ),
            ("RABBITMQ_PID_FILE".into(), format!("{d}/pid")),
        ]
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn ctl(&self, args: &[&str]) {
        let status = std::process::Command::new(format!("{RABBIT_BIN}/rabbitmqctl"))
            .env("HOME", &self.dir)
            .arg("-n")
            .arg(&self.node)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("rabbitmqctl runs");
        assert!(status.success(), "rabbitmqctl {args:?}");
    }

    /// `rabbitmqctl stop_app`: the broker closes every connection and stops
    /// listening, as in a restart; `start_app` brings it back with its queues.
    pub fn stop_app(&self) {
        self.ctl(&["stop_app"]);
    }

    pub async fn start_app(&self) {
        self.ctl(&["start_app"]);
        wait_for_port(self.port, Duration::from_secs(60)).await;
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        let _ = std::process::Command::new(format!("{RABBIT_BIN}/rabbitmqctl"))
            .env("HOME", &self.dir)
            .args(["-n", &self.node, "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The real `fwdwatch-notifier` binary (built by cargo for these tests) as a child
/// process, configured through `FWDWATCH__…` variables, everything it prints kept
/// in a file.
pub struct NotifierProcess {
    child: std::process::Child,
    pub output: std::path::PathBuf,
}

impl NotifierProcess {
    pub fn start(env: &[(String, String)]) -> Self {
        let output = std::env::temp_dir().join(format!("fwdwatch-notifier-{}.log", unique()));
        let file = std::fs::File::create(&output).expect("output file");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_fwdwatch-notifier"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone().expect("clone"))
            .stderr(file)
            .spawn()
            .expect("the notifier binary starts");
        Self { child, output }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no clean-up of any kind.
    pub fn kill(&mut self) {
        signal(self.pid(), "-KILL");
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for it to exit; returns whether it exited cleanly.
    pub async fn terminate(&mut self, timeout: Duration) -> bool {
        signal(self.pid(), "-TERM");
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = self.child.kill();
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Everything it printed so far.
    pub fn printed(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }
}

impl Drop for NotifierProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // FWDWATCH_TEST_KEEP_OUTPUT=1 keeps what it printed, for debugging a test.
        if std::env::var_os("FWDWATCH_TEST_KEEP_OUTPUT").is_none() {
            let _ = std::fs::remove_file(&self.output);
        } else {
            eprintln!("notifier output kept in {}", self.output.display());
        }
    }
}

/// `Settings` as `FWDWATCH__…` variables for a child process: the same namespace,
/// key prefix and overrides as [`settings`].
pub fn process_env(ns: &str, prefix: &str, extra: &[(&str, String)]) -> Vec<(String, String)> {
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
        ("FWDWATCH__TELEMETRY__LOG_FORMAT".into(), "json".into()),
    ];
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        env.push(((*k).to_owned(), v.clone()));
    }
    env
}

// ---------------------------------------------------------------- token audit

/// Fails when `printed` (everything a service wrote, at any level) holds an approve /
/// remove token signed with [`LINK_SECRET`], or a link to the actioner's `/act/`
/// page with (the start of) a token. Reusable for any service: capture what it prints, then call this. `issued`
/// are tokens known to have been made (e.g. what the sinks received), looked for
/// verbatim as well, so a token cut short in a log line is still found.
pub fn assert_no_link_tokens(what: &str, printed: &str, issued: &[String]) {
    let found = fwdwatch_shared::links::LinkSigner::new(LINK_SECRET).find_tokens(printed);
    assert!(
        found.is_empty(),
        "{what} printed {} signed token(s), e.g. {:.60}…",
        found.len(),
        found[0]
    );
    for token in issued {
        // The signature part alone is enough to find a token that was cut or wrapped.
        let signature = token.rsplit('.').next().unwrap_or(token);
        assert!(
            !printed.contains(signature),
            "{what} printed (part of) an issued token"
        );
    }
    // A link is `/act/` and a token; `/act/<redacted>` in a quoted error is not one.
    let link = printed.match_indices("/act/").map(|(at, _)| at).find(|at| {
        printed[at + 5..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    });
    if let Some(at) = link {
        let start = printed[..at]
            .char_indices()
            .rev()
            .nth(160)
            .map_or(0, |(i, _)| i);
        let end = printed[at..]
            .char_indices()
            .nth(40)
            .map_or(printed.len(), |(i, _)| at + i);
        panic!("{what} printed an /act/ link: …{}…", &printed[start..end]);
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
