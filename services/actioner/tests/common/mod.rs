//! The test harness: a real RabbitMQ and Redis (unique namespace and key prefix per
//! test), the Microsoft 365 simulator over HTTP, a local stand-in for Slack's
//! `response_url`, and the actioner spawned on `127.0.0.1:0`.
//!
//! RabbitMQ or Redis being down fails the test with a message saying how to start
//! them: a skipped security test is worse than a red one.

#![allow(dead_code)] // each test file uses its own subset

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use chrono::Utc;
use futures::FutureExt;
use hmac::{KeyInit, Mac};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use fwdwatch_actioner::{Deps, M365Exchange};
use fwdwatch_shared::bus::{Bus, RabbitBus, Subscription, Topology};
use fwdwatch_shared::config::Settings;
use fwdwatch_shared::contracts::{AuditEvent, CommandAction, CommandResult, Signal};
use fwdwatch_shared::links::{ActionClaims, LinkSigner, new_nonce};
use fwdwatch_shared::m365::{Cmdlet, M365Client};
use fwdwatch_shared::store::{self, Keys, Store};

pub const LINK_SECRET: &str = "integration-link-secret-0123456789";
pub const SLACK_SECRET: &str = "integration-slack-signing-secret";
pub const OPERATOR: &str = "U_OPS";
pub const SCOPED_OPERATOR: &str = "U_SCOPED";
pub const TEAM: &str = "T_MSP";
pub const API_CLIENT: &str = "ops-bot";
pub const API_TOKEN: &str = "api-token-for-the-ops-bot-0123";
/// A second API client whose name is a prefix of the first's, scoped to the second
/// tenant: its ids must never collide with `ops-bot`'s, nor may it read tenant 1.
pub const API_CLIENT_OPS: &str = "ops";
pub const API_TOKEN_OPS: &str = "api-token-for-the-ops-client-4567";
/// The claim lease the tests run with (an interrupted command runs again after it).
pub const COMMAND_LEASE: Duration = Duration::from_secs(2);

/// How long to wait for something asynchronous before failing.
pub const WAIT: Duration = Duration::from_secs(20);

/// One running actioner with everything around it.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub sim: m365_sim::RunningSim,
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    pub keys: Keys,
    pub bus: Arc<RabbitBus>,
    pub topology: Topology,
    pub signer: LinkSigner,
    pub client: M365Client,
    /// Messages POSTed to the `response_url` stand-in.
    pub replies: Arc<Mutex<Vec<Value>>>,
    /// A `response_url` that reaches the stand-in (under `actioner.reply_url_prefixes`).
    pub response_url: String,
    /// Everything the actioner publishes on `{ns}.events`.
    pub events: tokio::sync::Mutex<Box<dyn Subscription>>,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    reply_server: JoinHandle<()>,
}

fn events_queue(topology: &Topology) -> String {
    format!("{}.test.events", topology.namespace())
}

/// Adjusts the simulator before it starts.
pub type SimTweak = fn(&mut m365_sim::SimArgs);

/// Runs `test` against a fresh app, then cleans up (queues, keys) whatever happened.
pub async fn with_app(tweak: SimTweak, test: impl AsyncFnOnce(&TestApp)) {
    let app = TestApp::spawn(tweak).await;
    let outcome = AssertUnwindSafe(test(&app)).catch_unwind().await;
    app.stop().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// A small, clean fleet (no generated forwards: every forward is planted by the test).
pub fn clean(args: &mut m365_sim::SimArgs) {
    args.tenants = 3;
    args.mailboxes = 6;
    args.rates.clean = true;
}

async fn reply_sink(State(replies): State<Arc<Mutex<Vec<Value>>>>, Json(body): Json<Value>) {
    replies.lock().expect("lock").push(body);
}

impl TestApp {
    async fn spawn(tweak: SimTweak) -> Self {
        let mut sim_args = m365_sim::SimArgs::default();
        tweak(&mut sim_args);
        let sim = m365_sim::start(sim_args, "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("the simulator starts");

        // Slack's response_url, played by a local server.
        let replies = Arc::new(Mutex::new(Vec::new()));
        let reply_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let reply_addr = reply_listener.local_addr().expect("addr");
        let reply_app = axum::Router::new()
            .route("/hooks/{*rest}", axum::routing::post(reply_sink))
            .with_state(replies.clone());
        let reply_server = tokio::spawn(async move {
            let _ = axum::serve(reply_listener, reply_app).await;
        });

        // Bound first: the console's public URL (its sign-in redirect) names the port.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the actioner");
        let addr: SocketAddr = listener.local_addr().expect("addr");

        let id = uuid::Uuid::new_v4().simple().to_string();
        let env = [
            ("FWDWATCH__AMQP__NAMESPACE", format!("t-{id}")),
            ("FWDWATCH__AMQP__DELIVERY_LIMIT", "3".to_owned()),
            ("FWDWATCH__REDIS__KEY_PREFIX", format!("t-{id}:")),
            ("FWDWATCH__SECURITY__LINK_SECRET", LINK_SECRET.to_owned()),
            (
                "FWDWATCH__ACTIONER__SLACK__SIGNING_SECRET",
                SLACK_SECRET.to_owned(),
            ),
            (
                "FWDWATCH__ACTIONER__OPERATORS__SLACK_USER_IDS",
                format!("{OPERATOR},{SCOPED_OPERATOR}"),
            ),
            (
                "FWDWATCH__ACTIONER__OPERATORS__SLACK_TEAM_ID",
                TEAM.to_owned(),
            ),
            (
                "FWDWATCH__ACTIONER__REPLY_URL_PREFIXES",
                format!("http://{reply_addr}/hooks/"),
            ),
            ("FWDWATCH__TELEMETRY__LOG_FILTER", "warn".to_owned()),
            ("FWDWATCH__ACTIONER__COMMAND_LEASE", "2s".to_owned()),
            // The console signs operators in with the simulator's Entra ID.
            ("FWDWATCH__CONSOLE__PUBLIC_URL", format!("http://{addr}")),
            (
                "FWDWATCH__CONSOLE__CLIENT_ID",
                m365_sim::DEFAULT_CLIENT_ID.to_owned(),
            ),
            (
                "FWDWATCH__CONSOLE__CLIENT_SECRET",
                m365_sim::DEFAULT_CLIENT_SECRET.to_owned(),
            ),
            (
                "FWDWATCH__CONSOLE__OPERATOR_GROUPS",
                format!(
                    "{},{}",
                    m365_sim::OPERATOR_GROUP_ID,
                    m365_sim::SCOPED_OPERATOR_GROUP_ID
                ),
            ),
            (
                "FWDWATCH__CONSOLE__OPERATOR_ROLES",
                m365_sim::OPERATOR_ROLE.to_owned(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .chain(sim.fwdwatch_env());
        // The broker and Redis are the machine's (127.0.0.1 by default); CI may point
        // elsewhere with the usual variables.
        let env = env.into_iter().chain(
            ["FWDWATCH__AMQP__URL", "FWDWATCH__REDIS__URL"]
                .into_iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_owned(), v))),
        );
        let mut settings = Settings::load_from(None, env).expect("test settings load");
        // The scoped operator may act on the first tenant only.
        let first_tenant = sim.tenants()[0].tenant_id.clone();
        settings
            .actioner
            .operators
            .tenant_scopes
            .insert(SCOPED_OPERATOR.to_owned(), vec![first_tenant.clone()]);
        // So are the members of the simulator's scoped operator group in the console.
        settings.actioner.operators.tenant_scopes.insert(
            m365_sim::SCOPED_OPERATOR_GROUP_ID.to_owned(),
            vec![first_tenant],
        );
        settings
            .actioner
            .api_tokens
            .insert(API_CLIENT.to_owned(), SecretString::from(API_TOKEN));
        settings
            .actioner
            .api_tokens
            .insert(API_CLIENT_OPS.to_owned(), SecretString::from(API_TOKEN_OPS));
        settings.actioner.operators.tenant_scopes.insert(
            API_CLIENT_OPS.to_owned(),
            vec![sim.tenants()[1].tenant_id.clone()],
        );

        let bus = Arc::new(RabbitBus::connect(&settings.amqp).await.unwrap_or_else(|e| {
            panic!(
                "RabbitMQ is required for these tests and is not usable: {e}\n\
                 Start it with `rabbitmq-server -detached && rabbitmqctl await_startup` (or `bash .ci/run`)."
            )
        }));
        let store = store::connect(&settings.redis).await.unwrap_or_else(|e| {
            panic!(
                "Redis is required for these tests and is not usable: {e}\n\
                 Start it with `redis-server --daemonize yes --save ''` (or `bash .ci/run`)."
            )
        });
        store.ping().await.unwrap_or_else(|e| {
            panic!("Redis does not answer PING: {e}. Start it with `redis-server --daemonize yes --save ''`.")
        });
        let keys = Keys::from_settings(&settings.redis);
        let topology = Topology::from_settings(&settings.amqp);
        bus.declare(&topology).await.expect("declare topology");
        bus.declare_queue(
            &topology
                .queue(events_queue(&topology))
                .bind(topology.events_exchange(), "#"),
        )
        .await
        .expect("declare the events observer");
        let events = bus
            .subscribe(&events_queue(&topology), 50)
            .await
            .expect("subscribe to events");

        let client = M365Client::new(&settings.m365).expect("M365 client");
        let shutdown = CancellationToken::new();
        let deps = Deps {
            settings: settings.clone(),
            bus: bus.clone(),
            store: store.clone(),
            exchange: Arc::new(M365Exchange::new(client.clone())),
        };
        let task = tokio::spawn(fwdwatch_actioner::run_with(
            deps,
            listener,
            shutdown.clone(),
        ));

        let app = TestApp {
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("http client"),
            sim,
            signer: LinkSigner::new(LINK_SECRET),
            settings,
            store,
            keys,
            bus,
            topology,
            client,
            replies,
            response_url: format!("http://{reply_addr}/hooks/actions/{TEAM}/1/abc"),
            events: tokio::sync::Mutex::new(events),
            shutdown,
            task,
            reply_server,
        };
        app.wait_ready().await;
        app
    }

    async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(response) = self.http.get(format!("{}/readyz", self.base)).send().await
                && response.status() == 200
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the actioner never became ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(15), self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => eprintln!("the actioner stopped with an error: {error:#}"),
            Ok(Err(join)) => eprintln!("the actioner task failed: {join}"),
            Err(_) => eprintln!("the actioner did not stop within 15 s"),
        }
        drop(self.events);
        let extra = events_queue(&self.topology);
        if let Err(error) = self.bus.teardown(&self.topology, &[extra.as_str()]).await {
            eprintln!("cleanup of {} failed: {error}", self.topology.namespace());
        }
        let _ = self.bus.close().await;
        if let Ok(keys) = self.store.scan_keys(&self.keys.all()).await {
            for key in keys {
                let _ = self.store.delete(&key).await;
            }
        }
        self.reply_server.abort();
        self.sim.shutdown().await;
    }

    /// The ids of the simulator's customer tenants that answer (no injected faults).
    pub fn tenants(&self) -> Vec<String> {
        self.sim
            .tenants()
            .into_iter()
            .filter(|t| !t.consent_missing && !t.exchange_role_missing)
            .map(|t| t.tenant_id)
            .collect()
    }

    /// The mailboxes of `tenant` (primary SMTP addresses), read from "Exchange".
    pub async fn mailboxes(&self, tenant: &str) -> Vec<String> {
        let rows = self
            .client
            .invoke(
                tenant,
                &Cmdlet::new("Get-Mailbox")
                    .param("ResultSize", "Unlimited")
                    .select(&["PrimarySmtpAddress", "RecipientTypeDetails"]),
            )
            .await
            .expect("Get-Mailbox on the simulator");
        rows.iter()
            .filter(|r| r["RecipientTypeDetails"] == json!("UserMailbox"))
            .filter_map(|r| r["PrimarySmtpAddress"].as_str())
            .map(str::to_lowercase)
            .collect()
    }

    /// `POST /_sim/forwards`: plants a forward, returns the truth entry.
    pub async fn plant(&self, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}/_sim/forwards", self.sim.base_url))
            .json(&body)
            .send()
            .await
            .expect("plant");
        assert_eq!(response.status(), 201, "planting {body}");
        response.json().await.expect("truth entry")
    }

    /// `DELETE /_sim/forwards`.
    pub async fn unplant(&self, body: Value) {
        let response = self
            .http
            .delete(format!("{}/_sim/forwards", self.sim.base_url))
            .json(&body)
            .send()
            .await
            .expect("delete forward");
        assert_eq!(response.status(), 200, "deleting {body}");
    }

    /// `GET /_sim/truth`, one tenant's entries.
    pub async fn truth(&self, tenant: &str) -> Vec<Value> {
        let all: Vec<Value> = self
            .http
            .get(format!("{}/_sim/truth", self.sim.base_url))
            .send()
            .await
            .expect("truth")
            .json()
            .await
            .expect("truth json");
        all.into_iter()
            .filter(|e| e["tenant_id"] == json!(tenant))
            .collect()
    }

    /// The truth entries of one mailbox and signal.
    pub async fn truth_of(&self, tenant: &str, mailbox: &str, signal: Signal) -> Vec<Value> {
        self.truth(tenant)
            .await
            .into_iter()
            .filter(|e| e["mailbox"] == json!(mailbox) && e["signal"] == json!(signal.as_str()))
            .collect()
    }

    /// A token as the notifier signs it.
    pub fn token(&self, claims: &ActionClaims) -> String {
        self.signer.sign(claims)
    }

    /// The result of `command_id`, waiting for it.
    pub async fn result(&self, command_id: &str) -> CommandResult {
        let key = self.keys.command_result(command_id);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(json) = self.store.get(&key).await.expect("redis") {
                return serde_json::from_str(&json).expect("a CommandResult");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no result for {command_id} within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The audit trail so far.
    /// Executed decisions and refused attempts at the edge (kept in their own stream).
    pub async fn audit(&self) -> Vec<AuditEvent> {
        let mut all = store::audit::recent(self.store.as_ref(), &self.keys, 1000)
            .await
            .expect("audit");
        all.extend(
            store::audit::recent_refused(self.store.as_ref(), &self.keys, 1000)
                .await
                .expect("refusals"),
        );
        all
    }

    /// The audit trail once `command_id`'s execution is in it: the executor stores
    /// the result (what [`result`](Self::result) waits for) before it audits, so a
    /// test that reads the audit right after the result can be a moment early.
    pub async fn audit_after(&self, command_id: &str) -> Vec<AuditEvent> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let all = self.audit().await;
            if all
                .iter()
                .any(|e| e.command_id.as_deref() == Some(command_id))
            {
                return all;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no audit entry for {command_id} within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Executed decisions only (the main audit stream).
    pub async fn decisions(&self) -> Vec<AuditEvent> {
        store::audit::recent(self.store.as_ref(), &self.keys, 1000)
            .await
            .expect("audit")
    }

    /// Waits until `n` messages reached the `response_url` stand-in; returns them.
    pub async fn replies(&self, n: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let replies = self.replies.lock().expect("lock").clone();
            if replies.len() >= n {
                return replies;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {n} Slack replies, got {replies:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for a `response_url` message matching `wanted`; returns it.
    pub async fn reply_where(&self, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let replies = self.replies.lock().expect("lock").clone();
            if let Some(found) = replies.into_iter().find(|r| wanted(r)) {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no matching Slack reply within {WAIT:?}: {:?}",
                self.replies.lock().expect("lock")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Routing keys of the events published so far (waits for at least `n`).
    pub async fn event_keys(&self, n: usize) -> Vec<String> {
        let mut events = self.events.lock().await;
        let mut keys = Vec::new();
        while keys.len() < n {
            let next = tokio::time::timeout(WAIT, events.next())
                .await
                .unwrap_or_else(|_| panic!("expected {n} events, got {keys:?}"));
            let incoming = next.expect("subscription open").expect("delivery");
            keys.push(incoming.routing_key.clone());
            incoming.ack().await.expect("ack");
        }
        keys
    }

    /// POSTs a Slack interaction signed with `secret` at `timestamp`.
    pub async fn slack(&self, body: &str, timestamp: i64, secret: &str) -> reqwest::Response {
        let signature = slack_signature(secret, timestamp, body);
        self.http
            .post(format!("{}/slack/interactions", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", timestamp.to_string())
            .header("x-slack-signature", signature)
            .body(body.to_owned())
            .send()
            .await
            .expect("slack request")
    }
}

/// Claims for a forward, valid for an hour, issued to `channel`.
pub fn claims(
    action: CommandAction,
    tenant: &str,
    mailbox: &str,
    signal: Signal,
    target: &str,
    rule_id: Option<&str>,
    channel: &str,
) -> ActionClaims {
    let targets = vec![target.to_owned()];
    let mailbox_part = if mailbox.is_empty() {
        None
    } else {
        Some(mailbox)
    };
    ActionClaims {
        v: 1,
        action,
        tenant_id: tenant.to_owned(),
        mailbox: mailbox.to_owned(),
        signal,
        fingerprint: fwdwatch_shared::classify::fingerprint(
            tenant,
            mailbox_part,
            signal,
            rule_id,
            &targets,
        ),
        target: target.to_owned(),
        rule_id: rule_id.map(str::to_owned),
        exp: Utc::now().timestamp() + 3600,
        nonce: new_nonce(),
        channel: channel.to_owned(),
    }
}

/// `v0=<hex>` for Slack's basestring `v0:{ts}:{body}`.
pub fn slack_signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("any key length");
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// A `block_actions` interaction body (form-encoded `payload`).
pub fn slack_body(
    user: &str,
    team: &str,
    action_id: &str,
    token: &str,
    trigger_id: &str,
    response_url: &str,
) -> String {
    let payload = json!({
        "type": "block_actions",
        "user": {"id": user, "username": "dana", "name": "dana", "team_id": team},
        "api_app_id": "A0FWDWATCH",
        "token": "deprecated-verification-token",
        "container": {"type": "message", "message_ts": "1700000000.000100", "channel_id": "C0ALERTS", "is_ephemeral": false},
        "trigger_id": trigger_id,
        "team": {"id": team, "domain": "msp"},
        "channel": {"id": "C0ALERTS", "name": "fwdwatch-alerts"},
        "response_url": response_url,
        "actions": [{
            "action_id": action_id,
            "block_id": "fwdwatch-actions",
            "text": {"type": "plain_text", "text": "Go"},
            "value": token,
            "type": "button",
            "action_ts": "1700000001.000200"
        }]
    });
    serde_urlencoded::to_string([("payload", payload.to_string())]).expect("form")
}

/// A fresh Slack trigger id.
pub fn trigger() -> String {
    format!(
        "{}.{}",
        Utc::now().timestamp_micros(),
        uuid::Uuid::new_v4().simple()
    )
}
