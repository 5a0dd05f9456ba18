//! End to end: findings published on RabbitMQ → notifier(s) → Redis → sinks (a
//! local HTTP receiver standing in for Slack, Teams and the webhook) → the events
//! and dead-letter queues. Each test has its own AMQP namespace and Redis prefix.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::*;
use fwdwatch_notifier::outbox::{self, HEADER_SINK};
use fwdwatch_notifier::sinks::slack::{ACTION_APPROVE, ACTION_REMOVE};
use fwdwatch_notifier::sinks::webhook;
use fwdwatch_notifier::{Notifier, RedisTracker, Stats, lifecycle::LifecycleConfig};
use fwdwatch_shared::bus::{
    Bus, HEADER_DEAD_REASON, MemoryBus, Outgoing, ROUTE_SUMMARY, Topology, detection_route,
    outgoing,
};
use fwdwatch_shared::config::Settings;
use fwdwatch_shared::contracts::{
    AlertEvent, AlertKind, Channel, Check, CommandAction, Detection, Issuer, Signal, TenantSummary,
    decode,
};
use fwdwatch_shared::links::LinkSigner;
use fwdwatch_shared::store::allowlist::{self, Approval};
use fwdwatch_shared::store::{Keys, MemoryStore, Store, tenants};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(15);

/// Which lifecycle a notifier runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `run_with`: the generic tracker over the `Store`.
    Generic,
    /// `run`'s: the Lua tracker.
    Lua,
}

struct Harness {
    settings: Settings,
    bus: Arc<dyn Bus>,
    store: Arc<dyn Store>,
    keys: Keys,
    topology: Topology,
    events_queue: String,
    shutdown: CancellationToken,
    notifiers: Vec<(tokio::task::JoinHandle<anyhow::Result<()>>, Arc<Stats>)>,
    _cleanup: Cleanup,
}

impl Harness {
    /// `extra`: the sink settings and any other `FWDWATCH__…` overrides.
    async fn new(extra: Vec<(&str, String)>) -> Self {
        let ns = format!("t-{}", unique());
        let prefix = format!("{ns}:");
        let settings = settings(&ns, &prefix, &extra);
        let bus: Arc<dyn Bus> = Arc::new(rabbit(&settings).await);
        let store: Arc<dyn Store> = Arc::new(redis(&settings).await);
        let topology = Topology::from_settings(&settings.amqp);
        let events_queue = format!("{ns}.test.events");
        let cleanup = Cleanup {
            settings: settings.clone(),
            extra_queues: vec![events_queue.clone(), outbox::alerts_queue(&topology)],
        };
        bus.declare(&topology).await.expect("declare");
        bus.declare_queue(
            &topology
                .queue(events_queue.clone())
                .bind(topology.events_exchange(), "alert.#"),
        )
        .await
        .expect("declare events queue");
        // The notifier declares it too; declared here so a test can subscribe at once.
        bus.declare_queue(&outbox::alerts_queue_spec(&topology))
            .await
            .expect("declare parked-alerts queue");
        Self {
            keys: Keys::from_settings(&settings.redis),
            settings,
            bus,
            store,
            topology,
            events_queue,
            shutdown: CancellationToken::new(),
            notifiers: Vec::new(),
            _cleanup: cleanup,
        }
    }

    /// Starts one notifier process (its own RabbitMQ and Redis connections).
    async fn spawn(&mut self, mode: Mode) {
        let bus: Arc<dyn Bus> = Arc::new(rabbit(&self.settings).await);
        let store: Arc<dyn Store> = Arc::new(redis(&self.settings).await);
        let mut notifier =
            Notifier::new(bus, store, self.settings.clone()).expect("valid settings");
        if mode == Mode::Lua {
            let config =
                fwdwatch_notifier::NotifierConfig::from_settings(&self.settings).expect("config");
            let tracker = RedisTracker::connect(
                &self.settings.redis,
                self.keys.clone(),
                LifecycleConfig::from_notifier(&config),
            )
            .await
            .expect("tracker");
            notifier = notifier.with_tracker(Arc::new(tracker));
        }
        let stats = notifier.stats();
        let task = tokio::spawn(notifier.run(self.shutdown.clone()));
        self.notifiers.push((task, stats));
    }

    async fn publish(&self, d: &Detection) {
        self.bus
            .publish(outgoing(
                &self.topology.findings_exchange(),
                &detection_route(d.signal),
                d,
            ))
            .await
            .expect("publish detection");
    }

    async fn publish_summary(&self, s: &TenantSummary) {
        self.bus
            .publish(outgoing(
                &self.topology.findings_exchange(),
                ROUTE_SUMMARY,
                s,
            ))
            .await
            .expect("publish summary");
    }

    fn handled(&self) -> u64 {
        self.notifiers
            .iter()
            .map(|(_, s)| s.snapshot().handled)
            .sum()
    }

    /// Waits until the notifiers handled `n` findings in total.
    async fn wait_handled(&self, n: u64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.handled() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "handled {} of {n} findings",
                self.handled()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Reads `n` alert events (fails after `WAIT`), then checks no more arrive within `quiet`.
    async fn events(&self, n: usize, quiet: Duration) -> Vec<AlertEvent> {
        let mut sub = self
            .bus
            .subscribe(&self.events_queue, 100)
            .await
            .expect("subscribe");
        let mut events = Vec::new();
        while events.len() < n {
            let next = tokio::time::timeout(WAIT, sub.next())
                .await
                .unwrap_or_else(|_| panic!("expected {n} alert events, got {}", events.len()));
            let incoming = next.expect("subscription open").expect("delivery");
            events.push(decode::<AlertEvent>(&incoming.body).expect("AlertEvent"));
            incoming.ack().await.expect("ack");
        }
        if let Ok(Some(Ok(extra))) = tokio::time::timeout(quiet, sub.next()).await {
            panic!(
                "unexpected extra alert event: {}",
                String::from_utf8_lossy(&extra.body)
            );
        }
        sub.cancel().await;
        events
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        for (task, _) in self.notifiers.drain(..) {
            let outcome = tokio::time::timeout(WAIT, task)
                .await
                .expect("notifier stops");
            outcome.expect("join").expect("notifier ends cleanly");
        }
        let pending = outbox::pending(self.store.as_ref(), &self.keys)
            .await
            .expect("outbox");
        assert!(pending.is_empty(), "alerts left undelivered: {pending:?}");
    }
}

fn signer() -> LinkSigner {
    LinkSigner::new(LINK_SECRET)
}

fn webhook_sink(receiver: &Receiver, path: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "FWDWATCH__NOTIFIER__SINKS__WEBHOOK__URL",
            receiver.url(path),
        ),
        (
            "FWDWATCH__NOTIFIER__SINKS__WEBHOOK__SECRET",
            WEBHOOK_SECRET.into(),
        ),
    ]
}

fn hook_alerts(receiver: &Receiver, path: &str) -> Vec<serde_json::Value> {
    receiver.requests(path).iter().map(Received::json).collect()
}

#[tokio::test]
async fn new_forward_alerts_once_on_every_sink_with_valid_actions() {
    let receiver = Receiver::start().await;
    let mut extra = webhook_sink(&receiver, "/hook");
    extra.push((
        "FWDWATCH__NOTIFIER__SINKS__SLACK__WEBHOOK_URL",
        receiver.url("/slack"),
    ));
    extra.push((
        "FWDWATCH__NOTIFIER__SINKS__TEAMS__WEBHOOK_URL",
        receiver.url("/teams"),
    ));
    let mut h = Harness::new(extra).await;
    h.spawn(Mode::Lua).await;

    let now = Utc::now();
    let d = detection(
        1,
        "bob@c1.example",
        Signal::InboxRule,
        &["eve@evil.example"],
        now,
    );
    h.publish(&d).await;
    let slack = receiver.wait("/slack", 1, WAIT).await;
    let teams = receiver.wait("/teams", 1, WAIT).await;
    let hook = receiver.wait("/hook", 1, WAIT).await;
    let check = |token: &str, action: CommandAction, channel: &str| {
        let claims = signer()
            .verify(token, Utc::now())
            .expect("token verifies with the link secret");
        assert_eq!(claims.action, action);
        assert_eq!(claims.tenant_id, d.tenant_id);
        assert_eq!(claims.mailbox, "bob@c1.example");
        assert_eq!(claims.fingerprint, d.fingerprint);
        assert_eq!(claims.target, "eve@evil.example");
        assert_eq!(claims.signal, Signal::InboxRule);
        assert_eq!(claims.channel, channel);
        let ttl = claims.exp - Utc::now().timestamp();
        assert!(
            (71 * 3600..=72 * 3600).contains(&ttl),
            "link_ttl 72h, got {ttl}s"
        );
    };

    // Slack: Block Kit with the facts and two signed buttons.
    let body = slack[0].json();
    let text = body.to_string();
    for needle in [
        "Customer 1",
        "bob@c1.example",
        "eve@evil.example",
        "Inbox rule",
        "hidden rule",
    ] {
        assert!(text.contains(needle), "slack lacks {needle}: {text}");
    }
    let actions = body["blocks"]
        .as_array()
        .expect("blocks")
        .iter()
        .find(|b| b["type"] == "actions")
        .expect("an actions block");
    assert_eq!(actions["elements"][0]["action_id"], ACTION_APPROVE);
    assert_eq!(actions["elements"][1]["action_id"], ACTION_REMOVE);
    check(
        actions["elements"][0]["value"].as_str().expect("value"),
        CommandAction::Approve,
        "slack",
    );
    check(
        actions["elements"][1]["value"].as_str().expect("value"),
        CommandAction::Remove,
        "slack",
    );

    // Teams: an Adaptive Card message with OpenUrl links to the confirmation page.
    let body = teams[0].json();
    assert_eq!(body["type"], "message");
    let card = &body["attachments"][0]["content"];
    assert_eq!(
        body["attachments"][0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(card["type"], "AdaptiveCard");
    let links = card["actions"].as_array().expect("card actions");
    assert_eq!(links.len(), 2);
    for (link, action) in links
        .iter()
        .zip([CommandAction::Approve, CommandAction::Remove])
    {
        assert_eq!(link["type"], "Action.OpenUrl");
        let url = link["url"].as_str().expect("url");
        let token = url
            .strip_prefix("https://fwdwatch.test/act/")
            .expect("link_base_url/act/");
        check(token, action, "teams");
    }

    // Webhook: the 2018 fields at the top, ours beside them, signed.
    let req = &hook[0];
    let sig = req
        .headers
        .get("x-fwdwatch-signature")
        .expect("signature header");
    assert!(
        webhook::verify(WEBHOOK_SECRET.as_bytes(), &req.body, sig),
        "signature verifies"
    );
    assert!(!webhook::verify(b"wrong", &req.body, sig));
    assert!(
        req.headers
            .get("x-fwdwatch-timestamp")
            .is_some_and(|t| t.parse::<i64>().is_ok())
    );
    let body = req.json();
    assert_eq!(body["Customer"], "Customer 1");
    assert_eq!(body["TenantId"], d.tenant_id);
    assert_eq!(body["PrimarySmtpAddress"], "bob@c1.example");
    assert_eq!(body["DisplayName"], "User bob@c1.example");
    assert_eq!(body["ExternalRecipient"], "eve@evil.example");
    assert_eq!(body["alert"], "new");
    assert_eq!(body["fingerprint"], d.fingerprint);
    let approve = body["approve_url"].as_str().expect("approve_url");
    check(
        approve.rsplit('/').next().expect("token"),
        CommandAction::Approve,
        "webhook",
    );

    // Recorded on the events exchange, naming every sink that took it.
    let events = h.events(1, Duration::from_millis(100)).await;
    assert_eq!(events[0].alert, AlertKind::New);
    assert_eq!(
        events[0].fingerprint.as_deref(),
        Some(d.fingerprint.as_str())
    );
    let sinks: BTreeSet<&str> = events[0].sinks.iter().map(String::as_str).collect();
    assert_eq!(sinks, BTreeSet::from(["log", "slack", "teams", "webhook"]));

    // The same detection again: redelivered (identical message), and from a later scan.
    h.publish(&d).await;
    h.publish(&d).await;
    let mut later = d.clone();
    later.observed_at = now + chrono::Duration::seconds(5);
    h.publish(&later).await;
    // An undecodable body is dead-lettered with the reason, not retried forever.
    h.bus
        .publish(Outgoing {
            exchange: h.topology.findings_exchange(),
            routing_key: "detection.inbox_rule".into(),
            message_id: "garbage-1".into(),
            message_type: "detection".into(),
            body: b"{\"type\":\"detection\",\"version\":1}".to_vec(),
            headers: Default::default(),
        })
        .await
        .expect("publish garbage");
    h.wait_handled(4).await;
    let dead_queue = h.topology.dead_queue(&h.topology.notifier_findings_queue());
    let mut dead = h
        .bus
        .subscribe(&dead_queue, 1)
        .await
        .expect("subscribe dead");
    let letter = tokio::time::timeout(WAIT, dead.next())
        .await
        .expect("dead letter")
        .expect("open")
        .expect("ok");
    let reason = letter
        .headers
        .get(HEADER_DEAD_REASON)
        .cloned()
        .unwrap_or_default();
    assert!(reason.contains("missing field"), "{reason}");
    letter.ack().await.expect("ack");
    dead.cancel().await;

    assert!(h.events(0, Duration::from_millis(300)).await.is_empty());
    for path in ["/slack", "/teams", "/hook"] {
        assert_eq!(
            receiver.requests(path).len(),
            1,
            "{path}: one alert per fingerprint"
        );
    }
    // The state the actioner and CLI read.
    let hash = h
        .store
        .hash_get_all(&h.keys.detection(&d.fingerprint))
        .await
        .expect("hash");
    assert_eq!(hash.get("state").map(String::as_str), Some("open"));
    let stored: Detection = serde_json::from_str(&hash["detection"]).expect("detection JSON");
    assert_eq!(
        stored.observed_at, later.observed_at,
        "latest sighting kept"
    );
    h.stop().await;
}

#[tokio::test]
async fn approved_forwards_are_silent_until_expiry_and_changed_targets_alert() {
    let receiver = Receiver::start().await;
    let mut h = Harness::new(webhook_sink(&receiver, "/hook")).await;
    h.spawn(Mode::Lua).await;
    let now = Utc::now();
    let approved = detection(
        2,
        "ap@c2.example",
        Signal::ForwardingSmtpAddress,
        &["books@acct.example"],
        now,
    );
    let temporary = detection(
        2,
        "tmp@c2.example",
        Signal::InboxRule,
        &["temp@partner.example"],
        now,
    );
    let approval = |d: &Detection, expires| Approval {
        tenant_id: d.tenant_id.clone(),
        mailbox: d.mailbox.as_ref().map(|m| m.primary_smtp_address.clone()),
        signal: d.signal,
        target: d.targets[0].clone(),
        approved_by: Issuer {
            channel: Channel::Slack,
            user_id: "U123".into(),
            name: "Dana".into(),
        },
        approved_at: Utc::now(),
        reason: Some("outsourced bookkeeping".into()),
        expires_at: expires,
        command_id: None,
    };
    allowlist::approve(h.store.as_ref(), &h.keys, approval(&approved, None))
        .await
        .expect("approve");
    allowlist::approve(
        h.store.as_ref(),
        &h.keys,
        approval(
            &temporary,
            Some(Utc::now() + chrono::Duration::milliseconds(800)),
        ),
    )
    .await
    .expect("approve");
    h.publish(&approved).await;
    h.publish(&temporary).await;
    h.wait_handled(2).await;
    assert_eq!(h.notifiers[0].1.snapshot().suppressed, 2);
    assert!(
        receiver.requests("/hook").is_empty(),
        "approved forwards never alert"
    );

    // The temporary approval expires: the forward alerts at the next scan.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let mut rescan = temporary.clone();
    rescan.observed_at = Utc::now();
    h.publish(&rescan).await;
    // The approved mailbox starts forwarding somewhere else: a new forward.
    let changed = detection(
        2,
        "ap@c2.example",
        Signal::ForwardingSmtpAddress,
        &["eve@evil.example"],
        Utc::now(),
    );
    h.publish(&changed).await;
    h.wait_handled(4).await;
    let alerts = receiver.wait("/hook", 2, WAIT).await;
    let fps: BTreeSet<String> = alerts
        .iter()
        .map(|r| r.json()["fingerprint"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        fps,
        BTreeSet::from([temporary.fingerprint.clone(), changed.fingerprint.clone()])
    );
    h.events(2, Duration::from_millis(200)).await;
    h.stop().await;
}

#[tokio::test]
async fn open_forwards_are_reminded_after_the_interval_via_slack_api() {
    let receiver = Receiver::start().await;
    let extra = vec![
        ("FWDWATCH__NOTIFIER__REMINDER_INTERVAL", "1s".to_owned()),
        (
            "FWDWATCH__NOTIFIER__SINKS__SLACK__BOT_TOKEN",
            "xoxb-test-token".to_owned(),
        ),
        (
            "FWDWATCH__NOTIFIER__SINKS__SLACK__CHANNEL",
            "#alerts".to_owned(),
        ),
        (
            "FWDWATCH__NOTIFIER__SINKS__SLACK__API_URL",
            receiver.url("/api"),
        ),
    ];
    let mut h = Harness::new(extra).await;
    h.spawn(Mode::Lua).await;
    let d = detection(
        4,
        "r@c4.example",
        Signal::ForwardingSmtpAddress,
        &["eve@evil.example"],
        Utc::now(),
    );
    h.publish(&d).await;
    h.wait_handled(1).await;
    let mut soon = d.clone();
    soon.observed_at = Utc::now();
    h.publish(&soon).await;
    h.wait_handled(2).await;
    assert_eq!(
        receiver.requests("/api/chat.postMessage").len(),
        1,
        "not due yet"
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut later = d.clone();
    later.observed_at = Utc::now();
    h.publish(&later).await;
    h.publish(&later).await;
    h.wait_handled(4).await;
    let posts = receiver.wait("/api/chat.postMessage", 2, WAIT).await;
    assert_eq!(posts.len(), 2, "one reminder, even with a duplicate");
    assert_eq!(
        posts[0].headers.get("authorization").map(String::as_str),
        Some("Bearer xoxb-test-token")
    );
    let reminder = posts[1].json();
    assert_eq!(reminder["channel"], "#alerts");
    assert!(
        reminder["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap_or("")
            .contains("Reminder"),
        "{reminder}"
    );
    let events = h.events(2, Duration::from_millis(200)).await;
    assert_eq!(
        events.iter().map(|e| e.alert).collect::<Vec<_>>(),
        vec![AlertKind::New, AlertKind::Reminder]
    );
    h.stop().await;
}

#[tokio::test]
async fn complete_scans_resolve_and_partial_or_late_ones_do_not() {
    let receiver = Receiver::start().await;
    let mut h = Harness::new(webhook_sink(&receiver, "/hook")).await;
    h.spawn(Mode::Lua).await;
    let seen = Utc::now();
    let rule = detection(
        3,
        "r@c3.example",
        Signal::InboxRule,
        &["eve@evil.example"],
        seen,
    );
    let transport = detection(3, "", Signal::TransportRule, &["copy@evil.example"], seen);
    h.publish(&rule).await;
    h.publish(&transport).await;
    h.wait_handled(2).await;

    // Late: a scan that started before these were seen.
    let late = summary(3, seen - chrono::Duration::minutes(5), &[], &[]);
    h.publish_summary(&late).await;
    // Partial: inbox rules failed, so only the transport rule can be resolved.
    let next = seen + chrono::Duration::seconds(1);
    h.publish_summary(&summary(3, next, &[], &[Check::InboxRules]))
        .await;
    h.wait_handled(4).await;
    // The console's coverage: the newest scan (partial), and when the tenant was
    // last read completely (the late scan, which is older but was complete).
    let coverage = tenants::get(h.store.as_ref(), &h.keys, &rule.tenant_id)
        .await
        .expect("redis")
        .expect("the tenant's latest scan is kept");
    assert_eq!(coverage.summary.started_at, next);
    assert!(!coverage.summary.is_complete());
    assert_eq!(coverage.last_complete_at, Some(late.finished_at));
    let events = h.events(3, Duration::from_millis(200)).await;
    let resolved: Vec<&AlertEvent> = events
        .iter()
        .filter(|e| e.alert == AlertKind::Resolved)
        .collect();
    assert_eq!(resolved.len(), 1);
    assert_eq!(
        resolved[0].fingerprint.as_deref(),
        Some(transport.fingerprint.as_str())
    );

    // Complete: the rule is gone too.
    h.publish_summary(&summary(3, next + chrono::Duration::seconds(1), &[], &[]))
        .await;
    h.wait_handled(5).await;
    let events = h.events(1, Duration::from_millis(200)).await;
    assert_eq!(events[0].alert, AlertKind::Resolved);
    assert_eq!(
        events[0].fingerprint.as_deref(),
        Some(rule.fingerprint.as_str())
    );
    let kinds: Vec<String> = hook_alerts(&receiver, "/hook")
        .iter()
        .map(|a| a["alert"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(kinds, vec!["new", "new", "resolved", "resolved"]);
    let coverage = tenants::get(h.store.as_ref(), &h.keys, &rule.tenant_id)
        .await
        .expect("redis")
        .expect("kept");
    assert!(coverage.summary.is_complete(), "the newest scan is kept");
    assert_eq!(
        coverage.last_complete_at,
        Some(coverage.summary.finished_at)
    );
    assert!(
        coverage.summary.fingerprints.is_empty(),
        "without the fingerprint list"
    );
    let open = h
        .store
        .set_members(&h.keys.open_fingerprints(&rule.tenant_id))
        .await
        .expect("open");
    assert!(open.is_empty());
    h.stop().await;
}

#[tokio::test]
async fn one_collector_in_three_tenants_is_one_campaign_alert() {
    let receiver = Receiver::start().await;
    let mut extra = webhook_sink(&receiver, "/hook");
    extra.push(("FWDWATCH__NOTIFIER__CAMPAIGN_SETTLE", "300ms".into()));
    let mut h = Harness::new(extra).await;
    h.spawn(Mode::Lua).await;
    let now = Utc::now();
    for tenant in 1..=3 {
        h.publish(&detection(
            tenant,
            &format!("u{tenant}@c{tenant}.example"),
            Signal::InboxRule,
            &["drop@evil.example"],
            now,
        ))
        .await;
    }
    h.wait_handled(3).await;
    let events = h.events(4, Duration::from_millis(1200)).await;
    let campaigns: Vec<&AlertEvent> = events
        .iter()
        .filter(|e| e.alert == AlertKind::Campaign)
        .collect();
    assert_eq!(campaigns.len(), 1, "{events:?}");
    assert_eq!(campaigns[0].collector.as_deref(), Some("drop@evil.example"));
    let tenants: BTreeSet<&str> = campaigns[0]
        .victims
        .iter()
        .map(|v| v.tenant_id.as_str())
        .collect();
    assert_eq!(tenants.len(), 3);
    let hook = hook_alerts(&receiver, "/hook");
    let campaign = hook
        .iter()
        .find(|a| a["alert"] == "campaign")
        .expect("campaign on the webhook");
    assert_eq!(campaign["victims"].as_array().map(Vec::len), Some(3));
    h.stop().await;
}

async fn two_notifiers(mode: Mode) {
    let receiver = Receiver::start().await;
    let mut h = Harness::new(webhook_sink(&receiver, "/hook")).await;
    h.spawn(mode).await;
    h.spawn(mode).await;
    // Both consumers must be subscribed before the first publish, or a loaded
    // machine lets the first one take every message and the race is never run.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let now = Utc::now();
    let detections: Vec<Detection> = (0..20)
        .map(|i| {
            detection(
                5,
                &format!("m{i}@c5.example"),
                Signal::InboxRule,
                &[&format!("x{i}@evil.example")],
                now,
            )
        })
        .collect();
    // Every detection twice: a redelivered scan job publishes the same findings again.
    for d in detections.iter().chain(detections.iter()) {
        h.publish(d).await;
    }
    h.wait_handled(40).await;
    let alerts = receiver.wait("/hook", 20, WAIT).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let alerts_after = receiver.requests("/hook");
    assert_eq!(alerts_after.len(), 20, "exactly one alert per fingerprint");
    let ids: BTreeSet<String> = alerts
        .iter()
        .map(|a| a.json()["alert_id"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(ids.len(), 20);
    assert!(
        h.notifiers.iter().all(|(_, s)| s.snapshot().handled > 0),
        "both notifiers took part"
    );
    h.events(20, Duration::from_millis(100)).await;
    h.stop().await;
}

#[tokio::test]
async fn two_notifiers_on_one_queue_send_one_alert_per_fingerprint_lua() {
    two_notifiers(Mode::Lua).await;
}

#[tokio::test]
async fn two_notifiers_on_one_queue_send_one_alert_per_fingerprint_run_with() {
    two_notifiers(Mode::Generic).await;
}

#[tokio::test]
async fn redis_outage_mid_stream_loses_no_detection() {
    let receiver = Receiver::start().await;
    let proxy = Proxy::start("127.0.0.1:6379").await;
    let mut extra = webhook_sink(&receiver, "/hook");
    extra.push(("FWDWATCH__REDIS__URL", proxy.url()));
    extra.push(("FWDWATCH__AMQP__DELIVERY_LIMIT", "50".into()));
    let mut h = Harness::new(extra).await;
    h.spawn(Mode::Lua).await;
    let now = Utc::now();
    let detections: Vec<Detection> = (0..15)
        .map(|i| {
            detection(
                6,
                &format!("o{i}@c6.example"),
                Signal::ForwardingSmtpAddress,
                &[&format!("y{i}@evil.example")],
                now,
            )
        })
        .collect();
    for d in &detections[..5] {
        h.publish(d).await;
    }
    receiver.wait("/hook", 5, WAIT).await;

    proxy.set_down(true);
    for d in &detections[5..] {
        h.publish(d).await;
    }
    // Keep Redis away longer than the connection manager rides out, until the
    // notifier has given findings back to the queue instead of acking them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while h.notifiers[0].1.snapshot().retried == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no finding was given back while Redis was down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        receiver.requests("/hook").len() < 15,
        "Redis was down: the rest must wait"
    );
    proxy.set_down(false);

    let alerts = receiver.wait("/hook", 15, Duration::from_secs(40)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ids: BTreeSet<String> = alerts
        .iter()
        .map(|a| a.json()["fingerprint"].as_str().unwrap_or("").to_owned())
        .collect();
    let expected: BTreeSet<String> = detections.iter().map(|d| d.fingerprint.clone()).collect();
    assert_eq!(ids, expected, "every detection alerted");
    assert_eq!(receiver.requests("/hook").len(), 15, "and none twice");
    let dead = h
        .bus
        .queue_depth(&h.topology.dead_queue(&h.topology.notifier_findings_queue()))
        .await
        .expect("depth");
    assert_eq!(dead, 0, "nothing dead-lettered");
    h.events(15, Duration::from_millis(100)).await;
    h.stop().await;
}

#[tokio::test]
async fn a_failing_sink_is_retried_then_parked_with_the_reason() {
    let receiver = Receiver::start().await;
    receiver.fail("/down", 500);
    let mut extra = webhook_sink(&receiver, "/down");
    extra.push(("FWDWATCH__NOTIFIER__SINK_ATTEMPTS", "3".into()));
    let mut h = Harness::new(extra).await;
    h.spawn(Mode::Lua).await;
    let d = detection(
        7,
        "p@c7.example",
        Signal::InboxRule,
        &["eve@evil.example"],
        Utc::now(),
    );
    h.publish(&d).await;

    let parked_queue = h.topology.dead_queue(&outbox::alerts_queue(&h.topology));
    let mut parked = h
        .bus
        .subscribe(&parked_queue, 1)
        .await
        .expect("subscribe parked");
    let letter = tokio::time::timeout(WAIT, parked.next())
        .await
        .expect("parked alert")
        .expect("open")
        .expect("ok");
    assert_eq!(receiver.requests("/down").len(), 3, "sink_attempts = 3");
    let reason = letter
        .headers
        .get(HEADER_DEAD_REASON)
        .cloned()
        .unwrap_or_default();
    assert!(
        reason.contains("HTTP 500") && reason.contains("3 attempt"),
        "{reason}"
    );
    assert_eq!(
        letter.headers.get(HEADER_SINK).map(String::as_str),
        Some("webhook")
    );
    let event = decode::<AlertEvent>(&letter.body).expect("parked body is the AlertEvent");
    assert_eq!(event.alert_id, format!("new:{}:1", d.fingerprint));
    letter.ack().await.expect("ack");
    parked.cancel().await;

    h.wait_handled(1).await;
    let events = h.events(1, Duration::from_millis(100)).await;
    assert_eq!(
        events[0].sinks,
        vec!["log".to_owned()],
        "only the log took it"
    );
    let findings_dead = h
        .bus
        .queue_depth(&h.topology.dead_queue(&h.topology.notifier_findings_queue()))
        .await
        .expect("depth");
    assert_eq!(findings_dead, 0, "the finding itself was acked");
    h.stop().await;
}

#[tokio::test]
async fn all_in_one_mode_without_link_secret_alerts_without_actions() {
    // MemoryBus + MemoryStore, as the operator CLI runs it; no secret configured.
    let receiver = Receiver::start().await;
    let ns = format!("t-{}", unique());
    let mut extra = webhook_sink(&receiver, "/hook");
    extra.push(("FWDWATCH__SECURITY__LINK_SECRET", String::new()));
    let settings = settings(&ns, "mem:", &extra);
    let bus = Arc::new(MemoryBus::new());
    let topology = Topology::from_settings(&settings.amqp);
    bus.declare(&topology).await.expect("declare");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(fwdwatch_notifier::run_with(
        bus.clone(),
        Arc::new(MemoryStore::new()),
        settings,
        shutdown.clone(),
    ));
    let d = detection(
        8,
        "solo@c8.example",
        Signal::ForwardingSmtpAddress,
        &["eve@evil.example"],
        Utc::now(),
    );
    for _ in 0..2 {
        bus.publish(outgoing(
            &topology.findings_exchange(),
            &detection_route(d.signal),
            &d,
        ))
        .await
        .expect("publish");
    }
    let alerts = receiver.wait("/hook", 1, WAIT).await;
    let body = alerts[0].json();
    assert_eq!(body["PrimarySmtpAddress"], "solo@c8.example");
    assert!(
        body["approve_url"].is_null() && body["remove_url"].is_null(),
        "no secret → no links"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.requests("/hook").len(), 1);
    shutdown.cancel();
    task.await.expect("join").expect("clean stop");
}
