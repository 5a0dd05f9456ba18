//! Continuous scanning against the simulator's GDAP listing, a real RabbitMQ and a
//! real Redis (fresh `t-<uuid>` namespace and key prefix per test), with short
//! cadences: jobs are spread over the period, one scan is in flight per tenant, a
//! lost scan times out, a failing tenant backs off, a restart resumes the schedule
//! from Redis, and `--once` still publishes one job per tenant and exits.
//!
//! The scanner is played by the test: it consumes `{ns}.scan.jobs`, records when each
//! job arrived, and answers with a `TenantSummary` on the findings exchange (complete,
//! dark, or not at all), so completion and failure are under its control.
//!
//! Needs RabbitMQ on 127.0.0.1:5672 and Redis on 127.0.0.1:6379; fails, never
//! skips, without them.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fwdwatch_enumerator::ListPolicy;
use fwdwatch_enumerator::cadence::{run_continuous_with, saved_schedule, summaries_queue};
use fwdwatch_enumerator::schedule::Outcome;
use fwdwatch_shared::bus::{Bus, ROUTE_SUMMARY, RabbitBus, Topology, outgoing};
use fwdwatch_shared::config::Settings;
use fwdwatch_shared::contracts::{
    CheckStatus, ErrorKind, ScanError, ScanJob, TenantSummary, decode,
};
use fwdwatch_shared::shutdown::CancellationToken;
use fwdwatch_shared::store::{Keys, Store};
use m365_sim::{RunningSim, SimArgs};

const QUICK: ListPolicy = ListPolicy {
    attempts: 2,
    wait: Duration::from_millis(20),
};

struct Fixture {
    sim: RunningSim,
    settings: Settings,
    bus: Arc<RabbitBus>,
    store: Arc<dyn Store>,
    topology: Topology,
    keys: Keys,
    /// Lower-case ids of the tenants the GDAP listing returns.
    listed: Vec<String>,
}

impl Fixture {
    async fn new(tenants: u32, extra: &[(&str, &str)]) -> Self {
        let sim = m365_sim::start(
            SimArgs {
                tenants,
                mailboxes: 3,
                ..Default::default()
            },
            "127.0.0.1:0".parse().expect("addr"),
        )
        .await
        .expect("simulator starts");
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let mut env: Vec<(String, String)> = [
            ("FWDWATCH__AMQP__NAMESPACE", format!("t-{unique}")),
            ("FWDWATCH__REDIS__KEY_PREFIX", format!("t-{unique}:")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .chain(sim.fwdwatch_env())
        .collect();
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let settings = Settings::load_from(None, env).expect("settings");
        let bus = match RabbitBus::connect(&settings.amqp).await {
            Ok(bus) => Arc::new(bus),
            Err(e) => panic!("RabbitMQ is needed at 127.0.0.1:5672 for this test: {e}"),
        };
        let store = fwdwatch_shared::store::connect(&settings.redis)
            .await
            .expect("Redis is needed at 127.0.0.1:6379 for this test");
        let topology = Topology::from_settings(&settings.amqp);
        bus.declare(&topology).await.expect("declare");
        let mut listed: Vec<String> = sim
            .tenants()
            .into_iter()
            .filter(|t| t.gdap_active)
            .map(|t| t.tenant_id.to_lowercase())
            .collect();
        listed.sort();
        let keys = Keys::from_settings(&settings.redis);
        Self {
            sim,
            settings,
            bus,
            store,
            topology,
            keys,
            listed,
        }
    }

    /// Starts an enumerator in continuous mode until the returned token is cancelled.
    fn start_enumerator(
        &self,
    ) -> (
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        let stop = CancellationToken::new();
        let bus: Arc<dyn Bus> = self.bus.clone();
        let client = fwdwatch_enumerator::client_for(&self.settings).expect("client");
        let store = self.store.clone();
        let settings = self.settings.clone();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            run_continuous_with(bus, client, store, &settings, QUICK, token).await
        });
        (stop, task)
    }

    async fn cleanup(self) {
        let _ = self
            .bus
            .teardown(&self.topology, &[&summaries_queue(&self.topology)])
            .await;
        let _ = self.bus.close().await;
        if let Ok(all) = self.store.scan_keys(&self.keys.all()).await {
            for k in all {
                let _ = self.store.delete(&k).await;
            }
        }
        self.sim.shutdown().await;
    }
}

/// How the test's scanner answers a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    Complete,
    /// Nothing read: access failed.
    Dark,
    /// No answer (kept; [`Scanner::answer_held`] answers later).
    Hold,
}

#[derive(Debug, Clone)]
struct Seen {
    tenant: String,
    job: ScanJob,
    at: Instant,
}

/// The test's scanner: records every job and answers as `reply` says.
struct Scanner {
    seen: Arc<Mutex<Vec<Seen>>>,
    held: Arc<Mutex<Vec<ScanJob>>>,
    stop: CancellationToken,
    bus: Arc<RabbitBus>,
    topology: Topology,
}

fn summary_for(job: &ScanJob, reply: Reply) -> TenantSummary {
    let mut s = TenantSummary::example();
    s.tenant = job.tenant.clone();
    s.run_id = job.run_id.clone();
    s.job_id = job.job_id.clone();
    s.started_at = chrono::Utc::now();
    s.finished_at = s.started_at;
    s.fingerprints.clear();
    s.detections = 0;
    for c in &mut s.checks {
        c.status = CheckStatus::Ok;
        c.error = None;
    }
    if reply == Reply::Dark {
        s.checks[0].status = CheckStatus::Failed;
        s.checks[0].error = Some(ScanError {
            kind: ErrorKind::ConsentMissing,
            message: "AADSTS65001: no consent".into(),
            remedy: None,
            code: Some("AADSTS65001".into()),
        });
    }
    s
}

async fn publish_summary(bus: &RabbitBus, topology: &Topology, summary: &TenantSummary) {
    bus.publish(outgoing(
        &topology.findings_exchange(),
        ROUTE_SUMMARY,
        summary,
    ))
    .await
    .expect("publish summary");
}

impl Scanner {
    async fn start(f: &Fixture, reply: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let held = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let mut sub = f
            .bus
            .subscribe(&f.topology.scan_jobs_queue(), 100)
            .await
            .expect("subscribe to jobs");
        let (bus, topology) = (f.bus.clone(), f.topology.clone());
        tokio::spawn({
            let (seen, held, stop) = (seen.clone(), held.clone(), stop.clone());
            async move {
                loop {
                    let next = tokio::select! {
                        () = stop.cancelled() => break,
                        n = sub.next() => n,
                    };
                    let Some(Ok(m)) = next else { break };
                    let job: ScanJob = decode(&m.body).expect("a scan job");
                    m.ack().await.expect("ack");
                    let tenant = job.tenant.id.to_lowercase();
                    seen.lock().expect("lock").push(Seen {
                        tenant: tenant.clone(),
                        job: job.clone(),
                        at: Instant::now(),
                    });
                    match reply(&tenant) {
                        Reply::Hold => held.lock().expect("lock").push(job),
                        r => publish_summary(&bus, &topology, &summary_for(&job, r)).await,
                    }
                }
                sub.cancel().await;
            }
        });
        Self {
            seen,
            held,
            stop,
            bus: f.bus.clone(),
            topology: f.topology.clone(),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// Arrival times per tenant.
    fn times(&self) -> BTreeMap<String, Vec<Instant>> {
        let mut out: BTreeMap<String, Vec<Instant>> = BTreeMap::new();
        for s in self.seen() {
            out.entry(s.tenant).or_default().push(s.at);
        }
        out
    }

    /// Answers the held jobs (oldest first) as complete scans.
    async fn answer_held(&self) -> Vec<ScanJob> {
        let held: Vec<ScanJob> = std::mem::take(&mut *self.held.lock().expect("lock"));
        for job in &held {
            publish_summary(
                &self.bus,
                &self.topology,
                &summary_for(job, Reply::Complete),
            )
            .await;
        }
        held
    }
}

impl Drop for Scanner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// N tenants are N jobs spread evenly over the period — not a burst — and each
/// tenant comes back one period later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_spread_over_the_cadence() {
    let f = Fixture::new(12, &[("FWDWATCH__ENUMERATOR__CADENCE", "10s")]).await;
    let period = Duration::from_secs(10);
    let n = f.listed.len();
    assert!(n >= 8, "the simulator lists {n} tenants");
    let scanner = Scanner::start(&f, |_| Reply::Complete).await;
    let started = Instant::now();
    let (stop, task) = f.start_enumerator();
    tokio::time::sleep(period * 2 + Duration::from_millis(1500)).await;
    stop.cancel();
    task.await.expect("join").expect("enumerator");

    let seen = scanner.seen();
    let mut first: BTreeMap<String, Instant> = BTreeMap::new();
    for s in &seen {
        first.entry(s.tenant.clone()).or_insert(s.at);
    }
    assert_eq!(
        first.keys().cloned().collect::<Vec<_>>(),
        f.listed,
        "every listed tenant scanned"
    );
    let mut firsts: Vec<f64> = first.values().map(|t| secs(*t - started)).collect();
    firsts.sort_by(f64::total_cmp);
    // One period holds the whole first cycle...
    let span = firsts[n - 1] - firsts[0];
    assert!(
        firsts[n - 1] <= secs(period) + 1.5,
        "first cycle within one period: {firsts:?}"
    );
    // ...spread over it: ~period × (n − 1) / n between the first and the last job,
    // and never more than 3 jobs within any 2 seconds (n / 5 expected).
    assert!(
        span >= secs(period) * (n as f64 - 1.0) / n as f64 - 2.0,
        "spread over the period, not a burst: {firsts:?}"
    );
    for (i, t) in firsts.iter().enumerate() {
        let within = firsts[i..].iter().take_while(|u| **u < t + 2.0).count();
        assert!(
            within <= 3,
            "{within} jobs within 2 s at {t:.2}: {firsts:?}"
        );
    }
    // Each tenant again one period later, in its slot.
    for (tenant, times) in scanner.times() {
        assert!(times.len() >= 2, "{tenant} rescanned: {}", times.len());
        for w in times.windows(2) {
            let gap = secs(w[1] - w[0]);
            assert!(
                (secs(period) - 1.2..=secs(period) + 1.2).contains(&gap),
                "{tenant}: rescanned after {gap:.2}s, cadence 10s"
            );
        }
    }
    drop(scanner);
    f.cleanup().await;
}

/// A tenant whose scan has not finished gets no second job; a scan with no summary
/// after `enumerator.scan_timeout` counts as failed and the tenant is scanned again;
/// the late summary of the lost scan does not free the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_scan_in_flight_per_tenant_and_a_lost_scan_times_out() {
    let f = Fixture::new(
        5,
        &[
            ("FWDWATCH__ENUMERATOR__CADENCE", "3s"),
            ("FWDWATCH__ENUMERATOR__SCAN_TIMEOUT", "8s"),
        ],
    )
    .await;
    let slow = f.listed[0].clone();
    let held_tenant = slow.clone();
    let scanner = Scanner::start(&f, move |t| {
        if t == held_tenant {
            Reply::Hold
        } else {
            Reply::Complete
        }
    })
    .await;
    let (stop, task) = f.start_enumerator();
    tokio::time::sleep(Duration::from_secs(14)).await;

    let times = scanner.times();
    let slow_times = times.get(&slow).cloned().unwrap_or_default();
    assert!(
        slow_times.len() == 2,
        "the held tenant: one job, then one more after the timeout: {} jobs",
        slow_times.len()
    );
    let gap = secs(slow_times[1] - slow_times[0]);
    assert!(
        (7.8..=8.0 + 3.0 + 1.5).contains(&gap),
        "second job only after the 8s timeout (then at its next slot): {gap:.2}s"
    );
    for (tenant, t) in &times {
        if *tenant != slow {
            assert!(t.len() >= 4, "{tenant} on its 3s cadence: {} jobs", t.len());
        }
    }
    let saved = saved_schedule(f.store.as_ref(), &f.keys)
        .await
        .expect("schedule");
    let state = saved
        .iter()
        .find(|s| s.tenant.id.to_lowercase() == slow)
        .expect("saved");
    assert_eq!(state.last_outcome, Some(Outcome::TimedOut));
    assert_eq!(state.failures, 1);
    let second_job = scanner
        .seen()
        .into_iter()
        .filter(|s| s.tenant == slow)
        .nth(1)
        .expect("2nd")
        .job;
    assert_eq!(
        state.in_flight.as_ref().map(|i| i.job_id.as_str()),
        Some(second_job.job_id.as_str())
    );
    // The lost scan's summary arrives late, then the second one's.
    let held = scanner.answer_held().await;
    assert_eq!(held.len(), 2);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let state = saved_schedule(f.store.as_ref(), &f.keys)
        .await
        .expect("schedule")
        .into_iter()
        .find(|s| s.tenant.id.to_lowercase() == slow)
        .expect("saved");
    // Freed by its own summary (and, overdue, maybe dispatched again at once).
    assert_ne!(
        state.in_flight.as_ref().map(|i| i.job_id.as_str()),
        Some(second_job.job_id.as_str()),
        "freed by its own summary"
    );
    assert_eq!(state.failures, 0);
    assert_eq!(state.last_outcome, Some(Outcome::Complete));
    stop.cancel();
    task.await.expect("join").expect("enumerator");
    drop(scanner);
    f.cleanup().await;
}

/// A tenant whose scans keep failing (nothing readable) is rescanned after 1, 2, 4
/// periods…, up to `enumerator.backoff_max`; the others stay on the cadence; the
/// saved schedule reports it backing off with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_tenant_backs_off() {
    let f = Fixture::new(
        4,
        &[
            ("FWDWATCH__ENUMERATOR__CADENCE", "2s"),
            ("FWDWATCH__ENUMERATOR__BACKOFF_MAX", "16s"),
        ],
    )
    .await;
    let failing = f.listed[1].clone();
    let dark = failing.clone();
    let scanner = Scanner::start(&f, move |t| {
        if t == dark {
            Reply::Dark
        } else {
            Reply::Complete
        }
    })
    .await;
    let (stop, task) = f.start_enumerator();
    tokio::time::sleep(Duration::from_secs(20)).await;
    stop.cancel();
    task.await.expect("join").expect("enumerator");

    let times = scanner.times();
    let failing_times = &times[&failing];
    let gaps: Vec<f64> = failing_times
        .windows(2)
        .map(|w| secs(w[1] - w[0]))
        .collect();
    assert_eq!(gaps.len(), 3, "jobs of the failing tenant: gaps {gaps:?}");
    for (gap, expected) in gaps.iter().zip([2.0, 4.0, 8.0]) {
        assert!(
            (gap - expected).abs() <= 0.9,
            "back-off 2s, 4s, 8s: {gaps:?}"
        );
    }
    for (tenant, t) in &times {
        if *tenant != failing {
            assert!(
                t.len() >= 8,
                "{tenant} stays on the 2s cadence: {} jobs",
                t.len()
            );
        }
    }
    let state = saved_schedule(f.store.as_ref(), &f.keys)
        .await
        .expect("schedule")
        .into_iter()
        .find(|s| s.tenant.id.to_lowercase() == failing)
        .expect("saved");
    assert!(state.backing_off(), "{state:?}");
    assert_eq!(state.failures, 4);
    assert_eq!(state.last_outcome, Some(Outcome::Dark));
    assert!(
        state
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("AADSTS65001"),
        "{state:?}"
    );
    drop(scanner);
    f.cleanup().await;
}

/// An enumerator stopped mid-period and started again resumes the schedule from
/// Redis: every tenant keeps its slot (none rescanned early, none forgotten), and a
/// scan in flight across the restart stays the only one for its tenant until its
/// summary arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_the_schedule() {
    let f = Fixture::new(10, &[("FWDWATCH__ENUMERATOR__CADENCE", "8s")]).await;
    let period = 8.0;
    // The first tenant dispatched is held: its scan is in flight across the restart.
    let held_tenant: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let hold = Arc::new(Mutex::new(true));
    let scanner = Scanner::start(&f, {
        let hold = hold.clone();
        let held_tenant = held_tenant.clone();
        move |t| {
            let mut held = held_tenant.lock().expect("lock");
            let first = held.get_or_insert_with(|| t.to_owned());
            if t == first && *hold.lock().expect("lock") {
                Reply::Hold
            } else {
                Reply::Complete
            }
        }
    })
    .await;
    let started = Instant::now();
    let (stop, task) = f.start_enumerator();
    let deadline = Instant::now() + Duration::from_secs(9);
    while held_tenant.lock().expect("lock").is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.cancel();
    task.await.expect("join").expect("first enumerator");
    let held_tenant = held_tenant
        .lock()
        .expect("lock")
        .clone()
        .expect("a tenant was dispatched");
    let before_restart: HashSet<String> = scanner.times().keys().cloned().collect();
    assert!(before_restart.contains(&held_tenant));
    assert!(
        before_restart.len() < f.listed.len(),
        "stopped mid-period: {} of {} dispatched",
        before_restart.len(),
        f.listed.len()
    );
    let restarted = Instant::now();
    let (stop, task) = f.start_enumerator();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The held scan finishes after the restart; later ones answer at once.
    *hold.lock().expect("lock") = false;
    let held = scanner.answer_held().await;
    assert_eq!(
        held.len(),
        1,
        "one job for the held tenant while it was in flight"
    );
    tokio::time::sleep(Duration::from_secs(14)).await;
    stop.cancel();
    task.await.expect("join").expect("second enumerator");

    for tenant in &f.listed {
        let times = scanner.times().get(tenant).cloned().unwrap_or_default();
        let rel: Vec<f64> = times.iter().map(|t| secs(*t - started)).collect();
        assert!(
            !rel.is_empty() && rel[0] <= period + 1.5,
            "{tenant}: first scan within the first period, restart or not: {rel:?}"
        );
        for w in rel.windows(2) {
            let gap = w[1] - w[0];
            if *tenant == held_tenant {
                // Not before its summary (3 s after the restart).
                assert!(
                    w[1] >= secs(restarted - started) + 3.0 - 0.2,
                    "{tenant}: no second job while the first was in flight: {rel:?}"
                );
            } else {
                assert!(
                    (period - 1.2..=period + 1.2).contains(&gap),
                    "{tenant}: rescanned after {gap:.2}s across the restart, cadence 8s: {rel:?}"
                );
            }
        }
        assert!(rel.len() >= 2, "{tenant} not forgotten: {rel:?}");
    }
    drop(scanner);
    f.cleanup().await;
}

/// `--once` is unchanged: one job per listed tenant, then exit, whatever the mode;
/// it does not touch the continuous schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_publishes_one_job_per_tenant_and_exits() {
    let f = Fixture::new(6, &[]).await;
    assert_eq!(f.settings.enumerator.mode, "continuous", "the default mode");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_fwdwatch-enumerator"))
        .arg("--once")
        .env("FWDWATCH__AMQP__NAMESPACE", &f.settings.amqp.namespace)
        .env("FWDWATCH__REDIS__KEY_PREFIX", &f.settings.redis.key_prefix)
        .envs(f.sim.fwdwatch_env())
        .env("FWDWATCH__TELEMETRY__LOG_FILTER", "warn")
        .env_remove("RUST_LOG")
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("--once exits")
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("{} scan job(s) enqueued", f.listed.len())),
        "{stdout}"
    );
    let depth = f
        .bus
        .queue_depth(&f.topology.scan_jobs_queue())
        .await
        .expect("depth");
    assert_eq!(depth as usize, f.listed.len());
    assert!(
        !f.store.exists(&f.keys.schedule()).await.expect("exists"),
        "--once keeps no schedule"
    );
    f.cleanup().await;
}

#[test]
fn the_mode_is_checked_and_continuous_by_default() {
    let s = Settings::load_from(None, Vec::<(String, String)>::new()).expect("defaults");
    assert_eq!(s.enumerator.mode, "continuous");
    assert_eq!(s.enumerator.cadence, Duration::from_secs(480));
    let cron = Settings::load_from(
        None,
        [("FWDWATCH__ENUMERATOR__MODE".to_owned(), "cron".to_owned())],
    )
    .expect("cron");
    assert_eq!(cron.enumerator.mode, "cron");
    let err = Settings::load_from(
        None,
        [("FWDWATCH__ENUMERATOR__MODE".to_owned(), "hourly".to_owned())],
    )
    .expect_err("refused");
    assert!(err.to_string().contains("enumerator.mode"), "{err}");
    let err = Settings::load_from(
        None,
        [("FWDWATCH__ENUMERATOR__CADENCE".to_owned(), "0s".to_owned())],
    )
    .expect_err("refused");
    assert!(err.to_string().contains("enumerator.cadence"), "{err}");
}

/// Switched back to cron, the enumerator keeps the summaries queue continuous mode
/// left behind empty (nobody else reads it); without such a queue it does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_mode_empties_the_queue_continuous_mode_left() {
    let f = Fixture::new(2, &[]).await;
    let bus: Arc<dyn Bus> = f.bus.clone();
    // No queue: returns at once.
    tokio::time::timeout(
        Duration::from_secs(5),
        fwdwatch_enumerator::cadence::drain_left_queue(
            bus.clone(),
            &f.settings,
            CancellationToken::new(),
        ),
    )
    .await
    .expect("returns at once without the queue");
    bus.declare_queue(&fwdwatch_enumerator::cadence::summaries_queue_spec(
        &f.topology,
    ))
    .await
    .expect("declare");
    let job = ScanJob::new("run-x", TenantSummary::example().tenant, chrono::Utc::now());
    for _ in 0..3 {
        publish_summary(&f.bus, &f.topology, &summary_for(&job, Reply::Complete)).await;
    }
    let queue = summaries_queue(&f.topology);
    assert_eq!(bus.queue_depth(&queue).await.expect("depth"), 3);
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (bus, settings, stop) = (bus.clone(), f.settings.clone(), stop.clone());
        async move { fwdwatch_enumerator::cadence::drain_left_queue(bus, &settings, stop).await }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while bus.queue_depth(&queue).await.expect("depth") > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(bus.queue_depth(&queue).await.expect("depth"), 0);
    stop.cancel();
    task.await.expect("join");
    f.cleanup().await;
}

/// A second continuous enumerator on the same deployment (a replica started by
/// mistake, an overlapping deploy) waits as a standby: no tenant is scanned more
/// often than the cadence while both run. When the keeper stops, the standby takes
/// the schedule over within the lease's renewal interval and scans every tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_enumerator_waits_and_takes_over() {
    let f = Fixture::new(6, &[("FWDWATCH__ENUMERATOR__CADENCE", "4s")]).await;
    let period = Duration::from_secs(4);
    let scanner = Scanner::start(&f, |_| Reply::Complete).await;
    let (stop_keeper, keeper) = f.start_enumerator();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (stop_standby, standby) = f.start_enumerator();
    tokio::time::sleep(period * 3).await;

    let holder = f
        .store
        .get(&f.keys.schedule_lease())
        .await
        .expect("read the lease")
        .expect("the keeper holds the lease");
    for (tenant, times) in scanner.times() {
        for w in times.windows(2) {
            let gap = secs(w[1] - w[0]);
            assert!(
                gap >= secs(period) - 1.2,
                "{tenant}: scanned again after {gap:.2}s with two enumerators running (cadence 4s)"
            );
        }
    }
    assert!(
        !standby.is_finished(),
        "the standby waits, it does not fail"
    );

    stop_keeper.cancel();
    keeper
        .await
        .expect("join")
        .expect("the keeper stops cleanly");
    let handed_over = Instant::now();
    // The standby tries every 10 s; then every tenant within one cadence.
    tokio::time::sleep(Duration::from_secs(10) + period * 2).await;
    let after: BTreeMap<String, usize> = scanner
        .seen()
        .into_iter()
        .filter(|s| s.at > handed_over)
        .fold(BTreeMap::new(), |mut m, s| {
            *m.entry(s.tenant).or_default() += 1;
            m
        });
    assert_eq!(
        after.keys().cloned().collect::<Vec<_>>(),
        f.listed,
        "the standby took the schedule over and scans every tenant"
    );
    let new_holder = f
        .store
        .get(&f.keys.schedule_lease())
        .await
        .expect("read the lease")
        .expect("the standby holds the lease");
    assert_ne!(new_holder, holder);

    stop_standby.cancel();
    standby
        .await
        .expect("join")
        .expect("the standby stops cleanly");
    assert_eq!(
        f.store
            .get(&f.keys.schedule_lease())
            .await
            .expect("read the lease"),
        None,
        "a stopping keeper gives the lease back"
    );
    drop(scanner);
    f.cleanup().await;
}
