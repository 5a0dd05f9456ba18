//! Alerts survive crashes: the notifier killed mid-scan (SIGKILL of the real
//! binary), stopped with SIGTERM, RabbitMQ restarted, Redis restarted — every
//! expected alert reaches the local receiver within 60 s of the restart, at most the
//! sink's concurrency twice, each repeat with the same alert id. And sinks are
//! pushed no harder than they accept (`429` / `Retry-After`, concurrency, pace).
//!
//! Restarts use throwaway servers of each test's own (a Redis with an append-only
//! file, a second RabbitMQ node): the machine's shared RabbitMQ and Redis are never
//! restarted.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::*;
use fwdwatch_notifier::lifecycle::LifecycleConfig;
use fwdwatch_notifier::outbox;
use fwdwatch_notifier::sinks::{SendContext, Sink, slack::SlackSink};
use fwdwatch_notifier::{Notifier, NotifierConfig, RedisTracker, Stats};
use fwdwatch_shared::bus::{Bus, RabbitBus, Topology, detection_route, outgoing};
use fwdwatch_shared::config::Settings;
use fwdwatch_shared::contracts::{Detection, Signal};
use fwdwatch_shared::store::{Keys, RedisStore, Store};
use tokio_util::sync::CancellationToken;

/// The acceptance bound: everything delivered within this of the restart.
const AFTER_RESTART: Duration = Duration::from_secs(60);

/// `n` new forwards over `tenants` tenants, each to its own external address (no
/// campaigns), as one scan would find them.
fn scan(n: usize, tenants: u32) -> Vec<Detection> {
    let now = Utc::now();
    (0..n)
        .map(|i| {
            let tenant = (i as u32 % tenants) + 1;
            detection(
                tenant,
                &format!("user{i}@c{tenant}.example"),
                Signal::InboxRule,
                &[&format!("drop{i}@evil.example")],
                now,
            )
        })
        .collect()
}

async fn publish(bus: &dyn Bus, topology: &Topology, detections: &[Detection]) {
    for chunk in detections.chunks(200) {
        bus.publish_all(
            chunk
                .iter()
                .map(|d| outgoing(&topology.findings_exchange(), &detection_route(d.signal), d))
                .collect(),
        )
        .await
        .expect("publish the scan's findings");
    }
}

/// A test's namespace, key prefix and sink settings.
struct Scene {
    ns: String,
    prefix: String,
    _cleanup: Cleanup,
}

impl Scene {
    fn new(amqp_url: &str) -> Self {
        let ns = format!("t-{}", unique());
        let prefix = format!("{ns}:");
        let cleanup_settings = settings(
            &ns,
            &prefix,
            &[("FWDWATCH__AMQP__URL", amqp_url.to_owned())],
        );
        Self {
            ns,
            prefix,
            _cleanup: Cleanup {
                settings: cleanup_settings.clone(),
                extra_queues: vec![outbox::alerts_queue(&Topology::from_settings(
                    &cleanup_settings.amqp,
                ))],
            },
        }
    }

    fn settings(&self, extra: &[(&str, String)]) -> Settings {
        settings(&self.ns, &self.prefix, extra)
    }
}

/// The webhook sink at `receiver`'s `/hook`, signed.
fn webhook(receiver: &Receiver) -> Vec<(&'static str, String)> {
    vec![
        (
            "FWDWATCH__NOTIFIER__SINKS__WEBHOOK__URL",
            receiver.url("/hook"),
        ),
        (
            "FWDWATCH__NOTIFIER__SINKS__WEBHOOK__SECRET",
            WEBHOOK_SECRET.into(),
        ),
    ]
}

/// Checks the receiver's view of one run: every expected alert accepted, at most
/// `concurrency` repeats, and every request's `Idempotency-Key` is its alert id.
fn assert_delivered_once_or_in_flight_twice(
    receiver: &Receiver,
    path: &str,
    expected: &BTreeSet<String>,
    concurrency: usize,
) {
    let requests = receiver.requests(path);
    let accepted: Vec<&Received> = requests.iter().filter(|r| r.status < 300).collect();
    let ids: BTreeSet<String> = accepted.iter().map(|r| r.alert_id()).collect();
    assert_eq!(&ids, expected, "{path}: every expected alert, nothing else");
    let mut per_id: BTreeMap<String, usize> = BTreeMap::new();
    for r in &accepted {
        assert_eq!(
            r.headers.get("idempotency-key").map(String::as_str),
            Some(r.alert_id().as_str()),
            "{path}: the Idempotency-Key is the alert id"
        );
        *per_id.entry(r.alert_id()).or_default() += 1;
    }
    let repeats = accepted.len() - ids.len();
    eprintln!(
        "{path}: {} alerts accepted, {repeats} repeated, {} refused",
        ids.len(),
        requests.len() - accepted.len()
    );
    assert!(
        repeats <= concurrency,
        "{path}: {repeats} alerts delivered twice, more than the sink's concurrency {concurrency}: {:?}",
        per_id.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    assert!(
        per_id.values().all(|n| *n <= 2),
        "{path}: an alert three times"
    );
}

fn expected_ids(detections: &[Detection]) -> BTreeSet<String> {
    detections
        .iter()
        .map(|d| format!("new:{}:1", d.fingerprint))
        .collect()
}

/// Runs a notifier in this process the way `run` does (Lua lifecycle and outbox).
async fn spawn_notifier(
    settings: &Settings,
    shutdown: CancellationToken,
) -> (tokio::task::JoinHandle<anyhow::Result<()>>, Arc<Stats>) {
    let bus: Arc<dyn Bus> = Arc::new(RabbitBus::connect(&settings.amqp).await.expect("amqp"));
    let store: Arc<dyn Store> =
        Arc::new(RedisStore::connect(&settings.redis).await.expect("redis"));
    let config = NotifierConfig::from_settings(settings).expect("config");
    let tracker = RedisTracker::connect(
        &settings.redis,
        Keys::from_settings(&settings.redis),
        LifecycleConfig::from_notifier(&config),
    )
    .await
    .expect("tracker");
    let outbox = tracker.outbox(&settings.redis).await.expect("outbox");
    let notifier = Notifier::new(bus, store, settings.clone())
        .expect("valid settings")
        .with_tracker(Arc::new(tracker))
        .with_outbox(Arc::new(outbox));
    let stats = notifier.stats();
    (tokio::spawn(notifier.run(shutdown)), stats)
}

/// The outbox as `fwdwatch status` reads it, from the notifier's Redis.
async fn outbox_of(settings: &Settings) -> outbox::OutboxStatus {
    let store = RedisStore::connect(&settings.redis).await.expect("redis");
    outbox::status(&store, &Keys::from_settings(&settings.redis))
        .await
        .expect("outbox status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_scan_loses_nothing_and_repeats_at_most_the_sinks_concurrency() {
    let receiver = Receiver::start().await;
    // Slow receivers, so the killed notifier holds a backlog of decided alerts.
    receiver.slow("/hook", Duration::from_millis(20));
    receiver.slow("/api/chat.postMessage", Duration::from_millis(20));
    let scene = Scene::new(AMQP_URL);
    let mut extra = webhook(&receiver);
    extra.extend([
        ("FWDWATCH__NOTIFIER__PREFETCH", "256".to_owned()),
        (
            "FWDWATCH__NOTIFIER__SINKS__SLACK__BOT_TOKEN",
            "xoxb-test".to_owned(),
        ),
        (
            "FWDWATCH__NOTIFIER__SINKS__SLACK__CHANNEL",
            "C0FWDWATCH".to_owned(),
        ),
        (
            "FWDWATCH__NOTIFIER__SINKS__SLACK__API_URL",
            receiver.url("/api"),
        ),
        (
            "FWDWATCH__NOTIFIER__SINKS__SLACK__CONCURRENCY",
            "2".to_owned(),
        ),
        (
            "FWDWATCH__NOTIFIER__SINKS__SLACK__MIN_INTERVAL",
            "0s".to_owned(),
        ),
    ]);
    let settings = scene.settings(&extra);
    let env = process_env(&scene.ns, &scene.prefix, &extra);
    let bus = rabbit(&settings).await;
    let topology = Topology::from_settings(&settings.amqp);
    bus.declare(&topology).await.expect("declare");
    let detections = scan(400, 20);
    let expected = expected_ids(&detections);
    publish(&bus, &topology, &detections).await;

    let mut first = NotifierProcess::start(&env);
    receiver
        .wait_accepted("/hook", 100, Duration::from_secs(60))
        .await;
    first.kill();
    let restarted = Instant::now();
    let mut second = NotifierProcess::start(&env);
    let got = receiver
        .wait_accepted("/hook", expected.len(), AFTER_RESTART)
        .await;
    assert_eq!(
        got,
        expected.len(),
        "every alert within {AFTER_RESTART:?} of the restart (after {:?})",
        restarted.elapsed()
    );
    // Slack lags the webhook a little; give it the same bound.
    let deadline = restarted + AFTER_RESTART;
    while receiver.slack_messages().len() < expected.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_delivered_once_or_in_flight_twice(&receiver, "/hook", &expected, 4);

    // Slack's bot-token sink found the messages the killed notifier had posted and
    // updated them: one message per alert, none twice.
    let messages = receiver.slack_messages();
    let slack_ids: BTreeSet<String> = messages.iter().map(|m| m.alert_id.clone()).collect();
    assert_eq!(slack_ids, expected, "one Slack message per alert");
    assert_eq!(
        messages.len(),
        expected.len(),
        "no Slack message posted twice"
    );
    let reads = receiver.requests("/api/conversations.history").len();
    eprintln!("Slack: {reads} history read(s) for the take-over");
    assert!(
        (1..=20).contains(&reads),
        "a few reads serve the whole take-over (Slack allows ~50 a minute): {reads}"
    );

    let printed = second.printed();
    assert!(
        printed.contains("Took over the pending alerts"),
        "the restarted notifier took the dead one's outbox over:\n{}",
        &printed[..printed.len().min(4000)]
    );
    assert!(
        second.terminate(Duration::from_secs(30)).await,
        "SIGTERM stops it cleanly"
    );
    let status = outbox_of(&settings).await;
    assert!(
        status.pending.is_empty(),
        "outbox empty: {:?}",
        status.pending
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_in_flight_alerts_over_at_once() {
    let receiver = Receiver::start().await;
    receiver.slow("/hook", Duration::from_millis(250));
    let scene = Scene::new(AMQP_URL);
    let mut extra = webhook(&receiver);
    extra.extend([
        (
            "FWDWATCH__NOTIFIER__SINKS__WEBHOOK__CONCURRENCY",
            "1".to_owned(),
        ),
        // Far longer than the test: only a hand-over makes it pass.
        ("FWDWATCH__NOTIFIER__OUTBOX_LEASE", "5m".to_owned()),
    ]);
    let settings = scene.settings(&extra);
    let env = process_env(&scene.ns, &scene.prefix, &extra);
    let bus = rabbit(&settings).await;
    let topology = Topology::from_settings(&settings.amqp);
    bus.declare(&topology).await.expect("declare");
    let detections = scan(40, 4);
    let expected = expected_ids(&detections);
    publish(&bus, &topology, &detections).await;

    let mut first = NotifierProcess::start(&env);
    receiver
        .wait_accepted("/hook", 5, Duration::from_secs(60))
        .await;
    let asked = Instant::now();
    assert!(
        first.terminate(Duration::from_secs(20)).await,
        "exits cleanly on SIGTERM"
    );
    let stopping = asked.elapsed();
    assert!(
        stopping < Duration::from_secs(10),
        "finishes what is in flight and hands the rest back: took {stopping:?}"
    );
    let printed = first.printed();
    assert!(printed.contains("Heartbeat dropped"), "{printed}");

    let restarted = Instant::now();
    let _second = NotifierProcess::start(&env);
    // 36 alerts at 4 a second, well within the bound; without the hand-over they
    // would wait for the 5-minute lease.
    let got = receiver
        .wait_accepted("/hook", expected.len(), Duration::from_secs(45))
        .await;
    assert_eq!(
        got,
        expected.len(),
        "every alert, {:?} after the restart",
        restarted.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_delivered_once_or_in_flight_twice(&receiver, "/hook", &expected, 1);
}

/// What every restart test checks. Publishes a 300-detection scan, starts the
/// notifier, lets 60 alerts through, runs `restart` (a server going away for 5 s and
/// coming back), then: every alert within [`AFTER_RESTART`] of it, at most the sink's
/// concurrency twice with the same id, no finding dead-lettered, and the notifier
/// still running, stopping cleanly with an empty outbox.
async fn rides_out_a_restart<F>(
    settings: &Settings,
    receiver: &Receiver,
    what: &str,
    restart: impl FnOnce() -> F,
) where
    F: std::future::Future<Output = ()>,
{
    let topology = Topology::from_settings(&settings.amqp);
    let bus = rabbit(settings).await;
    bus.declare(&topology).await.expect("declare");
    let detections = scan(300, 15);
    let expected = expected_ids(&detections);
    publish(&bus, &topology, &detections).await;
    let _ = bus.close().await;

    let shutdown = CancellationToken::new();
    let (task, stats) = spawn_notifier(settings, shutdown.clone()).await;
    receiver
        .wait_accepted("/hook", 60, Duration::from_secs(60))
        .await;
    restart().await;
    let restarted = Instant::now();
    let got = receiver
        .wait_accepted("/hook", expected.len(), AFTER_RESTART)
        .await;
    assert_eq!(
        got,
        expected.len(),
        "every alert within {AFTER_RESTART:?} of {what}'s restart ({:?}); {:?}",
        restarted.elapsed(),
        stats.snapshot()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_delivered_once_or_in_flight_twice(receiver, "/hook", &expected, 4);
    let bus = rabbit(settings).await;
    let dead = bus
        .queue_depth(&topology.dead_queue(&topology.notifier_findings_queue()))
        .await
        .expect("depth");
    assert_eq!(dead, 0, "no finding dead-lettered during {what}'s restart");
    let _ = bus.close().await;
    assert!(
        !task.is_finished(),
        "the notifier rode {what}'s restart out"
    );
    shutdown.cancel();
    task.await
        .expect("join")
        .expect("the notifier stops cleanly");
    let status = outbox_of(settings).await;
    assert!(
        status.pending.is_empty(),
        "outbox empty: {:?}",
        status.pending
    );
}

// Under load the broker's restart can reset the socket with frames queued, and
// lapin's IO loop then never reconnects: the bus's watchdog replaces the connection
// (shared/src/bus/rabbit/connection.rs), so this holds every run, not most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_scan_loses_nothing() {
    let node = RabbitNode::start().await;
    let receiver = Receiver::start().await;
    receiver.slow("/hook", Duration::from_millis(20));
    let mut extra = webhook(&receiver);
    extra.push(("FWDWATCH__AMQP__URL", node.url()));
    let settings = Scene::new(&node.url()).settings(&extra);
    rides_out_a_restart(&settings, &receiver, "RabbitMQ", || async {
        node.stop_app();
        tokio::time::sleep(Duration::from_secs(5)).await;
        node.start_app().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_mid_scan_loses_nothing() {
    let mut redis_server = RedisServer::start().await;
    let receiver = Receiver::start().await;
    receiver.slow("/hook", Duration::from_millis(20));
    let mut extra = webhook(&receiver);
    extra.push(("FWDWATCH__REDIS__URL", redis_server.url()));
    let settings = Scene::new(AMQP_URL).settings(&extra);
    rides_out_a_restart(&settings, &receiver, "Redis", || async {
        redis_server.kill();
        tokio::time::sleep(Duration::from_secs(5)).await;
        redis_server.restart().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttling_receiver_gets_every_alert_once_at_its_pace() {
    let receiver = Receiver::start().await;
    // The first six requests are refused with 429 and Retry-After: 1.
    receiver.throttle("/hook", 6, 1);
    let scene = Scene::new(AMQP_URL);
    let mut extra = webhook(&receiver);
    extra.extend([
        // Were a 429 an attempt, two of them would park (drop) the alert.
        ("FWDWATCH__NOTIFIER__SINK_ATTEMPTS", "2".to_owned()),
        (
            "FWDWATCH__NOTIFIER__SINKS__WEBHOOK__CONCURRENCY",
            "2".to_owned(),
        ),
        (
            "FWDWATCH__NOTIFIER__SINKS__SLACK__WEBHOOK_URL",
            receiver.url("/slack"),
        ),
        (
            "FWDWATCH__NOTIFIER__SINKS__SLACK__MIN_INTERVAL",
            "200ms".to_owned(),
        ),
    ]);
    let settings = scene.settings(&extra);
    let bus = rabbit(&settings).await;
    let topology = Topology::from_settings(&settings.amqp);
    bus.declare(&topology).await.expect("declare");
    bus.declare_queue(&outbox::alerts_queue_spec(&topology))
        .await
        .expect("declare the alerts queue");
    let detections = scan(24, 3);
    let expected = expected_ids(&detections);

    let shutdown = CancellationToken::new();
    let (task, stats) = spawn_notifier(&settings, shutdown.clone()).await;
    publish(&bus, &topology, &detections).await;
    let got = receiver
        .wait_accepted("/hook", expected.len(), Duration::from_secs(60))
        .await;
    assert_eq!(got, expected.len(), "{:?}", stats.snapshot());
    receiver
        .wait("/slack", expected.len(), Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Every alert once: refused requests are not deliveries, and none was repeated.
    assert_delivered_once_or_in_flight_twice(&receiver, "/hook", &expected, 0);
    let hook = receiver.requests("/hook");
    let throttled: Vec<&Received> = hook.iter().filter(|r| r.status == 429).collect();
    assert_eq!(throttled.len(), 6);
    assert!(stats.snapshot().throttled >= 6, "{:?}", stats.snapshot());
    assert_eq!(stats.snapshot().parked, 0, "nothing parked");
    let parked = bus
        .queue_depth(&topology.dead_queue(&outbox::alerts_queue(&topology)))
        .await
        .expect("depth");
    assert_eq!(parked, 0, "nothing on the parked-alerts queue");

    // Retry-After honoured: after each 429, nothing for (about) a second. (A request
    // already on its way when the 429 was answered may still arrive just after it.)
    for refused in &throttled {
        let early = hook.iter().filter(|r| {
            r.at > refused.at + Duration::from_millis(250)
                && r.at < refused.at + Duration::from_millis(950)
        });
        assert_eq!(early.count(), 0, "a request inside a Retry-After pause");
    }
    let first = hook.iter().map(|r| r.at).min().expect("requests");
    let last = hook.iter().map(|r| r.at).max().expect("requests");
    assert!(
        last - first >= Duration::from_secs(2),
        "six 429s two at a time: at least two one-second pauses"
    );
    // Bounded concurrency and pace.
    assert!(
        receiver.max_concurrent("/hook") <= 2,
        "webhook concurrency 2"
    );
    assert_eq!(receiver.max_concurrent("/slack"), 1, "Slack one at a time");
    // One start every 200 ms at most (arrivals can bunch up a little on a busy
    // machine; the span cannot shrink).
    let mut slack: Vec<Instant> = receiver.requests("/slack").iter().map(|r| r.at).collect();
    slack.sort();
    let span = slack[slack.len() - 1] - slack[0];
    let least = Duration::from_millis(200) * (slack.len() as u32 - 2);
    assert!(span >= least, "{} Slack requests in {span:?}", slack.len());
    shutdown.cancel();
    task.await.expect("join").expect("clean stop");
}

#[tokio::test]
async fn slack_updates_the_message_an_earlier_delivery_posted() {
    let receiver = Receiver::start().await;
    let settings = settings(
        "unused",
        "unused:",
        &[
            (
                "FWDWATCH__NOTIFIER__SINKS__SLACK__BOT_TOKEN",
                "xoxb-1".to_owned(),
            ),
            (
                "FWDWATCH__NOTIFIER__SINKS__SLACK__CHANNEL",
                "C0FWDWATCH".to_owned(),
            ),
            (
                "FWDWATCH__NOTIFIER__SINKS__SLACK__API_URL",
                receiver.url("/api"),
            ),
        ],
    );
    let config = NotifierConfig::from_settings(&settings).expect("config");
    let sink = SlackSink::new(
        config.slack.expect("slack"),
        fwdwatch_notifier::sinks::http_client(Duration::from_secs(2)),
    );
    let d = detection(
        9,
        "s@c9.example",
        Signal::InboxRule,
        &["x@evil.example"],
        Utc::now(),
    );
    let alert = fwdwatch_notifier::alert::PendingAlert {
        alert_id: format!("new:{}:1", d.fingerprint),
        kind: fwdwatch_shared::contracts::AlertKind::New,
        tenant_id: d.tenant_id.clone(),
        fingerprint: Some(d.fingerprint.clone()),
        episode: 1,
        reminder: 0,
        first_seen: Some(d.observed_at),
        created_at: Utc::now(),
        detection: Some(d),
        collector: None,
        victims: vec![],
        coverage: None,
        sinks_done: vec![],
        sinks_parked: vec![],
        event_done: false,
    };
    let first = sink
        .deliver(&alert, &[], &SendContext::default())
        .await
        .expect("posted");
    assert_eq!(first.as_deref(), Some("C0FWDWATCH/1795870800.000001"));
    // The same alert again, from a delivery whose own attempt may just have sent it
    // (a timeout): found by its metadata in a fresh read and updated, not posted a
    // second time.
    let again = sink
        .deliver(
            &alert,
            &[],
            &SendContext {
                maybe_sent_before: true,
                sent_before: None,
            },
        )
        .await
        .expect("updated");
    assert_eq!(again, first, "the same message");
    let messages = receiver.slack_messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].updates, 1);
    assert_eq!(receiver.requests("/api/chat.postMessage").len(), 1);
    let history = receiver.requests("/api/conversations.history");
    assert_eq!(history.len(), 1);
    assert!(history[0].query.contains("include_all_metadata=true"));
    assert!(history[0].query.contains("channel=C0FWDWATCH"));

    // A take-over: two alerts a dead notifier had posted and one it had not. One
    // read of the history serves all three.
    let other = |id: &str| {
        let mut a = alert.clone();
        a.alert_id = id.into();
        a
    };
    for id in ["new:b:1", "new:c:1"] {
        sink.deliver(&other(id), &[], &SendContext::default())
            .await
            .expect("posted by the notifier that then died");
    }
    let taken_over = Instant::now();
    let context = SendContext {
        maybe_sent_before: true,
        sent_before: Some(taken_over),
    };
    for id in ["new:b:1", "new:c:1", "new:d:1"] {
        sink.deliver(&other(id), &[], &context)
            .await
            .expect("delivered");
    }
    let messages = receiver.slack_messages();
    let ids: Vec<&str> = messages.iter().map(|m| m.alert_id.as_str()).collect();
    assert_eq!(
        ids,
        [alert.alert_id.as_str(), "new:b:1", "new:c:1", "new:d:1"]
    );
    assert_eq!(
        messages.iter().map(|m| m.updates).collect::<Vec<_>>(),
        [1, 1, 1, 0],
        "b and c updated, d (never posted) posted once"
    );
    assert_eq!(
        receiver.requests("/api/conversations.history").len(),
        2,
        "one more read for the whole take-over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_pending_alerts_with_their_age_and_owner() {
    let receiver = Receiver::start().await;
    receiver.fail("/hook", 503);
    let scene = Scene::new(AMQP_URL);
    let mut extra = webhook(&receiver);
    extra.extend([
        ("FWDWATCH__NOTIFIER__SINK_ATTEMPTS", "50".to_owned()),
        ("FWDWATCH__NOTIFIER__SINK_BACKOFF", "2s".to_owned()),
    ]);
    let settings = scene.settings(&extra);
    let bus = rabbit(&settings).await;
    let topology = Topology::from_settings(&settings.amqp);
    bus.declare(&topology).await.expect("declare");
    let shutdown = CancellationToken::new();
    let (task, stats) = spawn_notifier(&settings, shutdown.clone()).await;
    let detections = scan(2, 1);
    publish(&bus, &topology, &detections).await;
    receiver.wait("/hook", 2, Duration::from_secs(30)).await;

    let status = outbox_of(&settings).await;
    assert_eq!(status.pending.len(), 2, "{status:?}");
    let live: Vec<&(String, bool)> = status
        .instances
        .iter()
        .filter(|(_, alive)| *alive)
        .collect();
    assert_eq!(live.len(), 1, "one live instance: {status:?}");
    for entry in &status.pending {
        assert_eq!(entry.owner.as_deref(), Some(live[0].0.as_str()));
        assert!(entry.owner_alive);
        assert_eq!(entry.kind, "new");
        let age = Utc::now() - entry.created_at.expect("created_at");
        assert!(age >= chrono::Duration::zero() && age < chrono::Duration::seconds(60));
        assert!(entry.sinks_done.contains(&"log".to_owned()) || entry.sinks_done.is_empty());
    }
    // SIGTERM-like stop: the owner hands them back; they stay listed, now without a
    // live owner, until another notifier takes them.
    shutdown.cancel();
    task.await.expect("join").expect("clean stop");
    let status = outbox_of(&settings).await;
    assert_eq!(status.pending.len(), 2);
    assert!(status.pending.iter().all(|e| !e.owner_alive), "{status:?}");
    assert_eq!(stats.snapshot().parked, 0);
}
