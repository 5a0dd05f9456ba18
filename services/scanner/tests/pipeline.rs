//! The scanner in its pipeline: the simulator over HTTP, the enumerator queueing
//! jobs on a real RabbitMQ (a fresh `t-<uuid>` namespace per test), the scanner
//! consuming them, and the findings read back from the notifier's queue.
//!
//! Needs RabbitMQ on 127.0.0.1:5672 (guest/guest); fails, never skips, without it.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use fwdwatch_shared::bus::{Bus, ROUTE_JOB, Topology, outgoing};
use fwdwatch_shared::classify;
use fwdwatch_shared::config::Settings;
use fwdwatch_shared::contracts::{Check, CheckStatus, ErrorKind, ScanJob, Signal, TenantRef};
use fwdwatch_shared::m365::M365Client;
use fwdwatch_shared::shutdown::CancellationToken;
use m365_sim::SimArgs;
use serde_json::{Value, json};

/// Runs the scanner in this process until the returned token is cancelled.
fn spawn_scanner(
    bus: Arc<dyn Bus>,
    client: M365Client,
    settings: &Settings,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let shutdown = CancellationToken::new();
    let settings = settings.clone();
    let token = shutdown.clone();
    let task =
        tokio::spawn(
            async move { fwdwatch_scanner::run_with(bus, client, &settings, token).await },
        );
    (shutdown, task)
}

/// 200+ tenants with every ingredient, throttling, 5xx, revoked tokens, garbled
/// answers, missing consent and missing roles: the detections equal the truth,
/// and the tenants that cannot be read say why on their summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_fleet_is_scanned_exactly() {
    let mut args = SimArgs {
        tenants: 210,
        ..Default::default()
    };
    args.faults.latency_ms = 15; // so a tenant's requests overlap
    args.faults.tenant_concurrency = 3; // the client allows 4: 429s are met
    args.faults.retry_after_secs = 1;
    args.faults.error_rate = 0.02;
    args.faults.token_expiry_rate = 0.05;
    args.faults.malformed_rate = 0.01;
    args.faults.no_consent_rate = 0.03;
    args.faults.no_role_rate = 0.03;
    let sim = start_sim(args).await;
    let namespace = unique_namespace();
    let settings = settings_for(
        &sim,
        &namespace,
        &[("FWDWATCH__SCANNER__CONCURRENT_TENANTS", "64")],
    );
    let bus = rabbit(&settings).await;
    let dyn_bus: Arc<dyn Bus> = bus.clone();
    let client = fast_client(&settings);
    let topology = Topology::from_settings(&settings.amqp);

    let report = fwdwatch_enumerator::run_once(dyn_bus.clone(), Some(&client), &settings)
        .await
        .expect("enumerator run");
    let infos = sim.tenants();
    let active: BTreeSet<String> = infos
        .iter()
        .filter(|t| t.gdap_active)
        .map(|t| t.tenant_id.clone())
        .collect();
    let enumerated: BTreeSet<String> = report.tenants.iter().map(|t| t.id.clone()).collect();
    assert_eq!(
        enumerated, active,
        "one job per tenant with an active GDAP relationship"
    );
    assert!(
        enumerated.len() >= 180,
        "a fleet of at least 180 scanned tenants"
    );

    let started = Instant::now();
    let (shutdown, scanner) = spawn_scanner(dyn_bus.clone(), client.clone(), &settings);
    let findings = collect_findings(
        bus.as_ref(),
        &topology,
        enumerated.len(),
        Duration::from_secs(150),
    )
    .await;
    let elapsed = started.elapsed();
    shutdown.cancel();
    scanner.await.expect("join").expect("scanner stops cleanly");

    // Every tenant has a summary; unreadable ones say why, the rest are complete.
    let mut compared = BTreeSet::new();
    for info in infos.iter().filter(|t| enumerated.contains(&t.tenant_id)) {
        let summary = findings
            .summaries
            .values()
            .find(|s| s.tenant.id == info.tenant_id)
            .unwrap_or_else(|| panic!("no summary for {}", info.tenant_id));
        let access = &summary.checks[0];
        assert_eq!(access.check, Check::Access);
        if info.consent_missing {
            let error = access.error.as_ref().expect("reason");
            assert_eq!(access.status, CheckStatus::Failed);
            assert_eq!(error.kind, ErrorKind::ConsentMissing);
            let code = format!("AADSTS{}", info.consent_error.expect("code"));
            assert_eq!(error.code.as_deref(), Some(code.as_str()));
            assert!(error.remedy.is_some());
            assert!(
                summary.checks[1..]
                    .iter()
                    .all(|c| c.status == CheckStatus::Skipped)
            );
            // Permanent: one token request, never retried or requeued.
            assert_eq!(sim.stats().by_tenant[&info.tenant_id].calls, 1);
        } else if info.exchange_role_missing {
            let error = access.error.as_ref().expect("reason");
            assert_eq!(error.kind, ErrorKind::Forbidden, "{error:?}");
            assert!(
                error
                    .remedy
                    .as_deref()
                    .unwrap_or_default()
                    .contains("Exchange")
            );
        } else {
            assert!(
                summary.is_complete(),
                "{}: {:?}",
                info.tenant_id,
                summary.first_error()
            );
            compared.insert(info.tenant_id.clone());
            let mut mine: Vec<String> = findings
                .detections
                .values()
                .filter(|d| d.tenant_id == info.tenant_id)
                .map(|d| d.fingerprint.clone())
                .collect();
            mine.sort();
            assert_eq!(summary.fingerprints, mine, "summary lists its detections");
            assert_eq!(summary.detections as usize, mine.len());
            assert_eq!(summary.mailboxes, u64::from(info.mailboxes));
        }
    }
    assert!(compared.len() >= 150);
    assert_matches_truth(findings.detections.values(), &sim.truth(), &compared);

    for d in findings.detections.values() {
        assert_eq!(d.run_id, report.run_id);
        assert_eq!(
            d.detection_id,
            classify::detection_id(&report.run_id, &d.fingerprint)
        );
    }
    let stats = sim.stats();
    assert!(stats.throttled > 0, "throttling was met");
    assert!(
        stats
            .errors_injected
            .get("server_error")
            .copied()
            .unwrap_or(0)
            > 0,
        "{:?}",
        stats.errors_injected
    );
    assert!(
        stats
            .errors_injected
            .get("token_revoked")
            .copied()
            .unwrap_or(0)
            > 0,
        "{:?}",
        stats.errors_injected
    );
    assert!(
        stats
            .errors_injected
            .get("malformed_json")
            .copied()
            .unwrap_or(0)
            > 0,
        "{:?}",
        stats.errors_injected
    );
    eprintln!(
        "{} tenants, {} detections in {elapsed:?}; client {:?}",
        enumerated.len(),
        findings.detections.len(),
        client.stats()
    );
    teardown(&bus, &settings).await;
}

/// The same job scanned twice (a redelivery) yields the same fingerprints and
/// detection ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rescanned_job_yields_the_same_ids() {
    let args = SimArgs {
        tenants: 4,
        ..Default::default()
    };
    let sim = start_sim(args).await;
    let settings = settings_for(&sim, &unique_namespace(), &[]);
    let client = fast_client(&settings);
    let tenant = sim.tenants().remove(0);
    let job = ScanJob::new(
        "run-20261128T190000Z-abcd",
        TenantRef {
            id: tenant.tenant_id.clone(),
            display_name: tenant.display_name.clone(),
            default_domain: Some(tenant.initial_domain.clone()),
        },
        chrono::Utc::now(),
    );
    let first = fwdwatch_scanner::scan_tenant(&client, &job, chrono::Utc::now()).await;
    let second = fwdwatch_scanner::scan_tenant(&client, &job, chrono::Utc::now()).await;
    let ids = |s: &fwdwatch_scanner::TenantScan| -> Vec<(String, String)> {
        s.detections
            .iter()
            .map(|d| (d.detection_id.clone(), d.fingerprint.clone()))
            .collect()
    };
    assert!(!first.detections.is_empty());
    assert_eq!(ids(&first), ids(&second));
    assert_eq!(first.summary.fingerprints, second.summary.fingerprints);
}

async fn sim_post(base: &str, method: reqwest::Method, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .request(method, format!("{base}/_sim/forwards"))
        .json(&body)
        .send()
        .await
        .expect("sim control");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    assert!(status.is_success(), "{status}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// A forward planted between two runs is detected by the second; one removed
/// between them is gone from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_and_removed_forwards_show_in_the_next_run() {
    let args = SimArgs {
        tenants: 8,
        ..Default::default()
    };
    let sim = start_sim(args).await;
    let settings = settings_for(&sim, &unique_namespace(), &[]);
    let bus = rabbit(&settings).await;
    let dyn_bus: Arc<dyn Bus> = bus.clone();
    let client = fast_client(&settings);
    let topology = Topology::from_settings(&settings.amqp);
    let (shutdown, scanner) = spawn_scanner(dyn_bus.clone(), client.clone(), &settings);

    let run1 = fwdwatch_enumerator::run_once(dyn_bus.clone(), Some(&client), &settings)
        .await
        .expect("run 1");
    let first = collect_findings(
        bus.as_ref(),
        &topology,
        run1.tenants.len(),
        Duration::from_secs(60),
    )
    .await;
    let keys1: BTreeSet<Key> = first.detections.values().map(detection_key).collect();

    // Remove an inbox-rule forward that run 1 found; plant a hidden one elsewhere.
    let scanned: BTreeSet<String> = run1.tenants.iter().map(|t| t.id.clone()).collect();
    let truth = sim.truth();
    let removed = truth
        .iter()
        .find(|e| {
            e.signal == m365_sim::Signal::InboxRule
                && scanned.contains(&e.tenant_id)
                && keys1.contains(&truth_key(e))
        })
        .expect("run 1 found an inbox rule forward")
        .clone();
    sim_post(
        &sim.base_url,
        reqwest::Method::DELETE,
        json!({"tenant_id": removed.tenant_id, "signal": "inbox_rule", "mailbox": removed.mailbox, "rule_id": removed.rule_id}),
    )
    .await;
    let planted: m365_sim::TruthEntry = serde_json::from_value(
        sim_post(
            &sim.base_url,
            reqwest::Method::POST,
            json!({"tenant_id": removed.tenant_id, "signal": "inbox_rule", "mailbox": removed.mailbox,
                   "targets": ["fresh.collector@exfil-new.example"], "hidden": true, "action": "redirect_to"}),
        )
        .await,
    )
    .expect("the sim answers with the planted truth entry");
    assert!(planted.hidden);
    assert!(!keys1.contains(&truth_key(&planted)));

    let run2 = fwdwatch_enumerator::run_once(dyn_bus.clone(), Some(&client), &settings)
        .await
        .expect("run 2");
    let second = collect_findings(
        bus.as_ref(),
        &topology,
        run2.tenants.len(),
        Duration::from_secs(60),
    )
    .await;
    shutdown.cancel();
    scanner.await.expect("join").expect("scanner stops");
    assert!(second.summaries.values().all(|s| s.run_id == run2.run_id));
    let keys2: BTreeSet<Key> = second.detections.values().map(detection_key).collect();
    assert!(
        keys2.contains(&truth_key(&planted)),
        "planted forward detected"
    );
    assert!(
        !keys2.contains(&truth_key(&removed)),
        "removed forward gone"
    );
    let planted_detection = second
        .detections
        .values()
        .find(|d| detection_key(d) == truth_key(&planted))
        .expect("planted");
    assert!(!planted_detection.keeps_copy, "a redirect keeps no copy");
    assert_eq!(planted_detection.signal, Signal::InboxRule);
    assert_eq!(keys1.len(), keys2.len(), "one in, one out");
    teardown(&bus, &settings).await;
}

/// A tenant whose every read fails transiently: the job is requeued up to the
/// delivery limit, and the last delivery publishes what failed on the summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_requeue_then_report_at_the_delivery_limit() {
    let mut args = SimArgs {
        tenants: 2,
        ..Default::default()
    };
    args.faults.error_rate = 1.0;
    let sim = start_sim(args).await;
    let settings = settings_for(
        &sim,
        &unique_namespace(),
        &[("FWDWATCH__M365__MAX_ATTEMPTS", "2")],
    );
    let bus = rabbit(&settings).await;
    let dyn_bus: Arc<dyn Bus> = bus.clone();
    let client = fast_client(&settings);
    let topology = Topology::from_settings(&settings.amqp);
    dyn_bus.declare(&topology).await.expect("declare");
    let tenant = sim.tenants().remove(0);
    let job = ScanJob::new(
        "run-requeue",
        TenantRef {
            id: tenant.tenant_id.clone(),
            display_name: tenant.display_name.clone(),
            default_domain: None,
        },
        chrono::Utc::now(),
    );
    dyn_bus
        .publish(outgoing(&topology.scan_exchange(), ROUTE_JOB, &job))
        .await
        .expect("publish job");
    let (shutdown, scanner) = spawn_scanner(dyn_bus.clone(), client.clone(), &settings);
    let findings = collect_findings(bus.as_ref(), &topology, 1, Duration::from_secs(60)).await;
    shutdown.cancel();
    scanner.await.expect("join").expect("scanner stops");
    let summary = findings.summaries.values().next().expect("summary");
    let failed = summary
        .checks
        .iter()
        .find(|c| c.status == CheckStatus::Failed)
        .expect("a failed check");
    assert_eq!(failed.check, Check::AcceptedDomains);
    assert_eq!(
        failed.error.as_ref().expect("reason").kind,
        ErrorKind::Upstream
    );
    // 4 deliveries × 2 attempts of the tenant batch.
    let batches = sim
        .stats()
        .by_endpoint
        .get("exo:$batch")
        .copied()
        .unwrap_or(0);
    assert_eq!(batches, 8, "delivered {} times", batches / 2);
    assert_eq!(
        bus.queue_depth(&topology.scan_jobs_queue())
            .await
            .expect("depth"),
        0
    );
    teardown(&bus, &settings).await;
}
