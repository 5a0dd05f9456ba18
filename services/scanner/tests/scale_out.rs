//! Two scanner *processes* on one job queue: they share the work, and when one is
//! killed with SIGKILL in the middle of a run, the jobs it held unacknowledged go
//! back to the queue and the other finishes them — nothing is lost.
//!
//! The scanners are the real binary (`fwdwatch-scanner`), configured only through
//! `FWDWATCH__…` variables; the simulator runs in this process with latency so the
//! kill lands while scans are in flight. Needs RabbitMQ on 127.0.0.1:5672.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use fwdwatch_shared::bus::{Bus, Topology};
use fwdwatch_shared::contracts::{TenantSummary, decode};
use m365_sim::SimArgs;
use serde_json::Value;
use tokio::process::{Child, Command};

fn spawn_scanner(env: &[(String, String)], log: &Path) -> Child {
    let file = std::fs::File::create(log).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_fwdwatch-scanner"))
        .envs(env.iter().cloned())
        .env("FWDWATCH__TELEMETRY__LOG_FORMAT", "json")
        .env("FWDWATCH__TELEMETRY__LOG_FILTER", "info")
        .env_remove("RUST_LOG")
        .env_remove("FWDWATCH_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::from(file))
        .kill_on_drop(true)
        .spawn()
        .expect("scanner binary starts")
}

/// Tenants a scanner's log says it started and finished.
fn log_tenants(log: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let (mut started, mut finished) = (BTreeSet::new(), BTreeSet::new());
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let tenant = v["tenant"].as_str().unwrap_or_default().to_owned();
        match v["message"].as_str() {
            Some("Scanning tenant.") => {
                started.insert(tenant);
            }
            Some("Tenant scanned.") => {
                finished.insert(tenant);
            }
            _ => {}
        }
    }
    (started, finished)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_scanners_share_the_queue_and_survive_a_kill() {
    let mut args = SimArgs {
        tenants: 48,
        mailboxes: 30,
        ..Default::default()
    };
    args.faults.latency_ms = 120;
    let sim = start_sim(args).await;
    let namespace = unique_namespace();
    let settings = settings_for(&sim, &namespace, &[]);
    let bus = rabbit(&settings).await;
    let dyn_bus: Arc<dyn Bus> = bus.clone();
    let client = fast_client(&settings);
    let topology = Topology::from_settings(&settings.amqp);

    let report = fwdwatch_enumerator::run_once(dyn_bus.clone(), Some(&client), &settings)
        .await
        .expect("enumerate");
    let jobs = report.tenants.len();
    assert!(jobs >= 40);

    let dir: PathBuf = std::env::temp_dir().join(format!("fwdwatch-scale-{namespace}"));
    std::fs::create_dir_all(&dir).expect("log dir");
    let mut env = env_for(&sim, &namespace);
    env.push(("FWDWATCH__SCANNER__CONCURRENT_TENANTS".into(), "4".into()));
    let (log_a, log_b) = (dir.join("a.log"), dir.join("b.log"));
    let mut a = spawn_scanner(&env, &log_a);
    let mut b = spawn_scanner(&env, &log_b);

    // Read findings; once a few tenants are done, kill A mid-run.
    let mut sub = bus
        .subscribe(&topology.notifier_findings_queue(), 200)
        .await
        .expect("subscribe");
    let mut summaries: Vec<TenantSummary> = Vec::new();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut killed_with: Option<(BTreeSet<String>, BTreeSet<String>)> = None;
    let deadline = Instant::now() + Duration::from_secs(90);
    while done.len() < jobs {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = match tokio::time::timeout(left, sub.next()).await {
            Ok(Some(Ok(m))) => m,
            other => panic!(
                "findings stopped after {} of {jobs} tenants: {:?}",
                done.len(),
                other.map(|o| o.map(|r| r.err()))
            ),
        };
        if m.message_type.as_deref() == Some("tenant_summary") {
            let s: TenantSummary = decode(&m.body).expect("summary");
            done.insert(s.tenant.id.clone());
            summaries.push(s);
        }
        m.ack().await.expect("ack");
        // Kill A only at a moment its log shows it holding unfinished tenants, so the
        // test does not depend on how a loaded machine schedules the two processes.
        let a_busy = || {
            let (started, finished) = log_tenants(&log_a);
            started.difference(&finished).next().is_some()
        };
        if killed_with.is_none() && done.len() >= 8 && a_busy() {
            a.start_kill().expect("SIGKILL");
            a.wait().await.expect("reaped");
            killed_with = Some(log_tenants(&log_a));
        }
    }
    sub.cancel().await;
    b.start_kill().ok();
    let _ = b.wait().await;

    let (a_started, a_finished) = killed_with.expect("A was killed mid-run");
    let (b_started, b_finished) = log_tenants(&log_b);
    let in_flight: BTreeSet<&String> = a_started.difference(&a_finished).collect();
    assert!(!a_finished.is_empty(), "A did part of the work");
    assert!(!b_finished.is_empty(), "B did part of the work");
    assert!(
        !in_flight.is_empty(),
        "the kill landed while A held unacknowledged jobs"
    );
    for tenant in &in_flight {
        assert!(b_started.contains(*tenant), "B took over {tenant}");
        assert!(done.contains(*tenant), "{tenant} finished after all");
    }
    let expected: BTreeSet<String> = report.tenants.iter().map(|t| t.id.clone()).collect();
    assert_eq!(done, expected, "every tenant scanned, nothing lost");
    assert!(summaries.iter().all(TenantSummary::is_complete));
    eprintln!(
        "A finished {} (killed holding {}), B finished {}, {} summaries for {jobs} jobs",
        a_finished.len(),
        in_flight.len(),
        b_finished.len(),
        summaries.len()
    );
    teardown(&bus, &settings).await;
    std::fs::remove_dir_all(&dir).ok();
}
