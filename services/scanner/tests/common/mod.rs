//! Shared pieces of the scanner's integration tests: the simulator, settings
//! pointing at it and at a fresh RabbitMQ namespace, and a reader of the
//! findings the scanner publishes.

#![allow(dead_code)] // each test binary uses its own subset

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fwdwatch_shared::bus::{Bus, RabbitBus, Topology};
use fwdwatch_shared::config::Settings;
use fwdwatch_shared::contracts::{Detection, TenantSummary, decode};
use fwdwatch_shared::m365::{M365Client, RetryPolicy};
use m365_sim::{RunningSim, SimArgs, TruthEntry};

pub async fn start_sim(args: SimArgs) -> RunningSim {
    m365_sim::start(args, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("simulator starts")
}

/// `FWDWATCH__…` variables for a fresh namespace and the simulator: the same
/// pairs configure an in-process service and a child process.
pub fn env_for(sim: &RunningSim, namespace: &str) -> Vec<(String, String)> {
    [
        ("FWDWATCH__AMQP__NAMESPACE", namespace.to_owned()),
        ("FWDWATCH__AMQP__DELIVERY_LIMIT", "4".to_owned()),
        ("FWDWATCH__M365__REQUEST_TIMEOUT", "10s".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .chain(sim.fwdwatch_env())
    .collect()
}

pub fn settings_for(sim: &RunningSim, namespace: &str, extra: &[(&str, &str)]) -> Settings {
    let mut env = env_for(sim, namespace);
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Settings::load_from(None, env).expect("test settings load")
}

pub fn unique_namespace() -> String {
    format!("t-{}", uuid::Uuid::new_v4())
}

/// Short back-off so faults cost milliseconds, not seconds.
pub fn fast_client(settings: &Settings) -> M365Client {
    M365Client::with_policy(
        &settings.m365,
        RetryPolicy {
            max_attempts: settings.m365.max_attempts,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(300),
        },
    )
    .expect("client")
}

/// Connects to the local RabbitMQ, failing loudly (with how to start it) when
/// it is not running: these tests never skip silently.
pub async fn rabbit(settings: &Settings) -> Arc<RabbitBus> {
    match RabbitBus::connect(&settings.amqp).await {
        Ok(bus) => Arc::new(bus),
        Err(e) => panic!(
            "RabbitMQ is needed at 127.0.0.1:5672 (guest/guest) for this test: {e}\n\
             start it with `rabbitmq-server -detached && rabbitmqctl await_startup`"
        ),
    }
}

/// Deletes the namespace's queues and exchanges (best effort).
pub async fn teardown(bus: &RabbitBus, settings: &Settings) {
    let topology = Topology::from_settings(&settings.amqp);
    if let Err(e) = bus.teardown(&topology, &[]).await {
        eprintln!("teardown of {}: {e}", topology.namespace());
    }
    let _ = bus.close().await;
}

/// What the scanner published, read from the notifier's findings queue.
#[derive(Debug, Default)]
pub struct Findings {
    /// By detection id (a redelivered job republishes the same ids).
    pub detections: BTreeMap<String, Detection>,
    /// By job id, the last one seen.
    pub summaries: BTreeMap<String, TenantSummary>,
    /// Every detection message, duplicates included.
    pub detection_messages: usize,
}

/// Reads findings until `summaries` distinct jobs have a summary (or `timeout`).
pub async fn collect_findings(
    bus: &dyn Bus,
    topology: &Topology,
    summaries: usize,
    timeout: Duration,
) -> Findings {
    let mut findings = Findings::default();
    let mut sub = bus
        .subscribe(&topology.notifier_findings_queue(), 200)
        .await
        .expect("subscribe to findings");
    let deadline = Instant::now() + timeout;
    while findings.summaries.len() < summaries {
        let left = deadline.saturating_duration_since(Instant::now());
        let next = match tokio::time::timeout(left, sub.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(other) => panic!("findings subscription ended: {:?}", other.map(|r| r.err())),
            Err(_) => panic!(
                "timed out after {timeout:?} with {} of {summaries} summaries",
                findings.summaries.len()
            ),
        };
        match next.message_type.as_deref() {
            Some("detection") => {
                let d: Detection = decode(&next.body).expect("a valid detection");
                findings.detection_messages += 1;
                findings.detections.insert(d.detection_id.clone(), d);
            }
            Some("tenant_summary") => {
                let s: TenantSummary = decode(&next.body).expect("a valid summary");
                findings.summaries.insert(s.job_id.clone(), s);
            }
            other => panic!("unexpected message type {other:?} on the findings queue"),
        }
        next.ack().await.expect("ack");
    }
    sub.cancel().await;
    findings
}

/// The comparable part of a detection / truth entry.
pub type Key = (
    String,
    Option<String>,
    String,
    Option<String>,
    Vec<String>,
    bool,
    bool,
    bool,
    Vec<(String, Vec<(String, String)>)>,
);

pub fn detection_key(d: &Detection) -> Key {
    (
        d.tenant_id.clone(),
        d.mailbox.as_ref().map(|m| m.primary_smtp_address.clone()),
        d.signal.as_str().to_owned(),
        d.rule_id.clone(),
        d.targets.clone(),
        d.enabled,
        d.hidden,
        d.unreadable,
        d.paths
            .iter()
            .map(|p| {
                (
                    p.target.clone(),
                    p.via
                        .iter()
                        .map(|h| (h.address.clone(), h.kind.clone()))
                        .collect(),
                )
            })
            .collect(),
    )
}

pub fn truth_key(e: &TruthEntry) -> Key {
    (
        e.tenant_id.clone(),
        e.mailbox.clone(),
        e.signal.as_str().to_owned(),
        e.rule_id.clone(),
        e.targets.clone(),
        e.enabled,
        e.hidden,
        e.unreadable,
        e.paths
            .iter()
            .map(|p| {
                (
                    p.target.clone(),
                    p.via
                        .iter()
                        .map(|h| (h.address.clone(), h.kind.clone()))
                        .collect(),
                )
            })
            .collect(),
    )
}

/// Asserts detections == truth on `tenants`, printing the difference.
pub fn assert_matches_truth<'a>(
    detections: impl IntoIterator<Item = &'a Detection>,
    truth: &[TruthEntry],
    tenants: &BTreeSet<String>,
) {
    let got: BTreeSet<Key> = detections
        .into_iter()
        .filter(|d| tenants.contains(&d.tenant_id))
        .map(detection_key)
        .collect();
    let want: BTreeSet<Key> = truth
        .iter()
        .filter(|e| tenants.contains(&e.tenant_id))
        .map(truth_key)
        .collect();
    let missed: Vec<&Key> = want.difference(&got).collect();
    let extra: Vec<&Key> = got.difference(&want).collect();
    assert!(
        missed.is_empty() && extra.is_empty(),
        "detections differ from the truth on {} tenants:\nmissed ({}): {missed:#?}\nextra ({}): {extra:#?}",
        tenants.len(),
        missed.len(),
        extra.len()
    );
    assert!(!want.is_empty(), "the compared tenants hold forwards");
}
