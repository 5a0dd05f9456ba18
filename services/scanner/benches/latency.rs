//! Detection-latency benchmark of continuous scanning — prints numbers, asserts nothing.
//!
//! ```text
//! cargo bench -p fwdwatch-scanner --bench latency                          # 1,000 tenants, 1 scanner
//! LATENCY_TENANTS=5000 LATENCY_SCANNERS=3 cargo bench -p fwdwatch-scanner --bench latency
//! ```
//!
//! Knobs: `LATENCY_TENANTS` (1000), `LATENCY_MAILBOXES` (50), `LATENCY_SCANNERS`
//! (scanner processes, 1), `LATENCY_PLANTS` (forwards planted, 100),
//! `LATENCY_WINDOW_S` (the planting window after warm-up, default one cadence),
//! `LATENCY_TAIL_S` (longest wait for the last alert after the window, default two
//! cadences + 60 s), `LATENCY_CADENCE` (overrides `enumerator.cadence`, e.g. `2m`, for
//! a quick look only: the numbers in docs/performance.md use the default).
//!
//! The system runs with its default settings in continuous mode:
//! - the simulator in this process, under Microsoft-like conditions: every token,
//!   Graph and Exchange call takes 0–2 s (1 s ± 1 s, uniform), at most 4 concurrent
//!   calls per tenant, 429 with `Retry-After: 1` above that;
//! - the enumerator (`fwdwatch_enumerator::run`, what its binary runs) and the
//!   notifier (`fwdwatch_notifier::run`) in this process, with a webhook sink to a
//!   local HTTP receiver;
//! - the `fwdwatch-scanner` binary as `LATENCY_SCANNERS` child processes;
//! - RabbitMQ on 127.0.0.1:5672 and Redis on 127.0.0.1:6379 (a fresh namespace and
//!   key prefix, removed at the end).
//!
//! Warm-up: the first full cycle (every listed tenant has a summary). Then
//! `LATENCY_PLANTS` inbox-rule forwards, each to its own external address, are planted
//! through `POST /_sim/forwards` at uniformly random moments of the window, in random
//! mailboxes of random readable tenants; the latency of one is the time from the
//! simulator's 201 to the webhook delivery naming its address. Printed: p50 / p95 /
//! max latency, the full cycle (warm-up, and in steady state: from the end of warm-up
//! until every tenant has a scan started after it), each tenant's rescan interval,
//! Exchange requests per tenant-hour over the measured part, 429s, and the scanner
//! processes' CPU (utime + stime from `/proc/<pid>/stat`) and peak memory (`VmHWM`).

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use chrono::{DateTime, Utc};
use fwdwatch_shared::bus::{Bus, RabbitBus, Topology};
use fwdwatch_shared::config::Settings;
use fwdwatch_shared::contracts::TenantSummary;
use fwdwatch_shared::shutdown::CancellationToken;
use fwdwatch_shared::store::Keys;
use m365_sim::SimArgs;
use rand::Rng;

use support::{cpu_time, env_usize, peak_rss_kib, spawn_scanners};

/// What the webhook receiver saw: external address → first delivery time.
#[derive(Default)]
struct Received {
    by_target: HashMap<String, Instant>,
    alerts: u64,
}

async fn receive(State(seen): State<Arc<Mutex<Received>>>, body: Bytes) -> &'static str {
    let now = Instant::now();
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.alerts += 1;
        if let Some(targets) = v["ExternalRecipient"].as_str() {
            for t in targets.split(',') {
                let t = t.trim().to_lowercase();
                if t.contains("@latency-") {
                    seen.by_target.entry(t).or_insert(now);
                }
            }
        }
    }
    "ok"
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn mins(d: Duration) -> String {
    format!("{:.2} min", d.as_secs_f64() / 60.0)
}

/// A copy of every tenant summary: the bench's own queue on the findings exchange.
struct SummaryLog {
    /// Per tenant, the `started_at` of every scan, in arrival order.
    starts: HashMap<String, Vec<DateTime<Utc>>>,
}

#[allow(clippy::too_many_lines)]
async fn run() -> anyhow::Result<()> {
    let tenants = env_usize("LATENCY_TENANTS", 1000) as u32;
    let mailboxes = env_usize("LATENCY_MAILBOXES", 50) as u32;
    let scanners = env_usize("LATENCY_SCANNERS", 1);
    let plants = env_usize("LATENCY_PLANTS", 100);

    let mut args = SimArgs {
        tenants,
        mailboxes,
        ..Default::default()
    };
    args.faults.latency_ms = 0;
    args.faults.jitter_ms = 2000;
    args.faults.tenant_concurrency = 4;
    args.faults.retry_after_secs = 1;
    let sim = m365_sim::start(args, "127.0.0.1:0".parse()?).await?;

    let seen = Arc::new(Mutex::new(Received::default()));
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let receiver_url = format!("http://{}/hook", receiver.local_addr()?);
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(seen.clone());
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            let _ = axum::serve(receiver, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        }
    });

    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let namespace = format!("bench-{run_id}");
    let mut env: Vec<(String, String)> = [
        ("FWDWATCH__AMQP__NAMESPACE", namespace.clone()),
        ("FWDWATCH__REDIS__KEY_PREFIX", format!("bench-{run_id}:")),
        ("FWDWATCH__TELEMETRY__LOG_FILTER", "warn".to_owned()),
        (
            "FWDWATCH__SECURITY__LINK_SECRET",
            "latency-bench-link-secret-0123456789".to_owned(),
        ),
        ("FWDWATCH__NOTIFIER__SINKS__WEBHOOK__URL", receiver_url),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .chain(sim.fwdwatch_env())
    .collect();
    if let Ok(c) = std::env::var("LATENCY_CADENCE") {
        env.push(("FWDWATCH__ENUMERATOR__CADENCE".to_owned(), c));
    }
    let settings = Settings::load_from(None, env.clone())?;
    let cadence = settings.enumerator.cadence;
    let window =
        Duration::from_secs(env_usize("LATENCY_WINDOW_S", cadence.as_secs() as usize) as u64);
    let tail = Duration::from_secs(env_usize(
        "LATENCY_TAIL_S",
        (cadence.as_secs() * 2 + 60) as usize,
    ) as u64);
    let _telemetry = fwdwatch_shared::telemetry::init(&settings.telemetry, "latency-bench")?;

    let listed: Vec<_> = sim
        .tenants()
        .into_iter()
        .filter(|t| t.gdap_active)
        .collect();
    let readable: HashSet<String> = listed
        .iter()
        .filter(|t| !t.consent_missing && !t.exchange_role_missing)
        .map(|t| t.tenant_id.to_lowercase())
        .collect();
    // Mailboxes to plant in: those the truth names, in readable tenants.
    let mut victims: Vec<(String, String)> = sim
        .truth()
        .into_iter()
        .filter(|e| readable.contains(&e.tenant_id.to_lowercase()))
        .filter_map(|e| e.mailbox.map(|m| (e.tenant_id, m)))
        .collect();
    victims.sort();
    victims.dedup();
    println!(
        "fleet: {tenants} tenants ({} listed by GDAP, {} readable) × {mailboxes} mailboxes; \
         every call 1 s ± 1 s, ≤ 4 concurrent calls per tenant, 429 + Retry-After: 1 above; \
         {scanners} scanner process(es); cadence {} (enumerator.cadence{}); \
         {plants} plants over {}, tail ≤ {}",
        listed.len(),
        readable.len(),
        humantime::format_duration(cadence),
        if std::env::var("LATENCY_CADENCE").is_ok() {
            ", overridden"
        } else {
            " default"
        },
        humantime::format_duration(window),
        humantime::format_duration(tail),
    );

    let bus = Arc::new(RabbitBus::connect(&settings.amqp).await?);
    let dyn_bus: Arc<dyn Bus> = bus.clone();
    let topology = Topology::from_settings(&settings.amqp);
    dyn_bus.declare(&topology).await?;
    let log_queue = format!("{namespace}.bench.summaries");
    dyn_bus
        .declare_queue(
            &topology
                .queue(log_queue.clone())
                .bind(topology.findings_exchange(), "summary"),
        )
        .await?;

    let mut children = spawn_scanners(scanners, &env)?;

    let notifier = tokio::spawn(fwdwatch_notifier::run(settings.clone(), stop.clone()));
    let enumerator = tokio::spawn(fwdwatch_enumerator::run(settings.clone(), stop.clone()));
    let started = Instant::now();

    // The summaries, read all along.
    let log = Arc::new(Mutex::new(SummaryLog {
        starts: HashMap::new(),
    }));
    let reader = tokio::spawn({
        let bus = dyn_bus.clone();
        let log = log.clone();
        let stop = stop.clone();
        async move {
            let mut sub = bus.subscribe(&log_queue, 500).await?;
            loop {
                let next = tokio::select! {
                    () = stop.cancelled() => break,
                    n = sub.next() => n,
                };
                let Some(m) = next else { break };
                let m = m?;
                if let Ok(s) = fwdwatch_shared::contracts::decode::<TenantSummary>(&m.body) {
                    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                    log.starts
                        .entry(s.tenant.id.to_lowercase())
                        .or_default()
                        .push(s.started_at);
                }
                m.ack().await?;
            }
            sub.cancel().await;
            anyhow::Ok(())
        }
    });

    // Warm-up: the first full cycle.
    let expected = listed.len();
    let warm_deadline = started + cadence * 4 + Duration::from_secs(120);
    loop {
        let done = log.lock().unwrap_or_else(|e| e.into_inner()).starts.len();
        if done >= expected {
            break;
        }
        if Instant::now() > warm_deadline {
            println!("warm-up did not finish: {done} of {expected} tenants scanned");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let warm_up = started.elapsed();
    println!(
        "first full cycle (warm-up)      {} ({} tenants)",
        mins(warm_up),
        expected
    );

    // Measured part.
    let t0 = Instant::now();
    let t0_utc = Utc::now();
    sim.reset_stats();
    let cpu_before: Vec<Duration> = children
        .iter()
        .map(|c| c.id().map(cpu_time).unwrap_or_default())
        .collect();
    let mut offsets: Vec<Duration> = {
        let mut rng = rand::rng();
        (0..plants)
            .map(|_| Duration::from_millis(rng.random_range(0..window.as_millis().max(1) as u64)))
            .collect()
    };
    offsets.sort();
    let http = reqwest::Client::new();
    let mut planted: BTreeMap<String, Instant> = BTreeMap::new();
    let mut plant_failures = 0;
    for (n, offset) in offsets.iter().enumerate() {
        tokio::time::sleep_until((t0 + *offset).into()).await;
        let (tenant, mailbox) = {
            let mut rng = rand::rng();
            victims[rng.random_range(0..victims.len())].clone()
        };
        let target = format!("plant{n}@latency-{run_id}-{n}.example");
        let answer = http
            .post(format!("{}/_sim/forwards", sim.base_url))
            .json(&serde_json::json!({
                "tenant_id": tenant,
                "signal": "inbox_rule",
                "mailbox": mailbox,
                "targets": [target],
                "rule_name": format!("latency {n}"),
            }))
            .send()
            .await?;
        if answer.status().as_u16() == 201 {
            planted.insert(target, Instant::now());
        } else {
            plant_failures += 1;
            println!(
                "plant {n} refused: {}",
                answer.text().await.unwrap_or_default()
            );
        }
    }
    let deadline = Instant::now() + tail;
    loop {
        let found = {
            let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            planted
                .keys()
                .filter(|t| seen.by_target.contains_key(*t))
                .count()
        };
        if found == planted.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Keep the measured part at least one cadence long.
    let min_end = t0 + cadence;
    if Instant::now() < min_end {
        tokio::time::sleep_until(min_end.into()).await;
    }
    let measured = t0.elapsed();
    let stats = sim.stats();
    let mut scanner_cpu = Duration::ZERO;
    let mut peak = 0;
    for (child, before) in children.iter().zip(&cpu_before) {
        if let Some(pid) = child.id() {
            scanner_cpu += cpu_time(pid).saturating_sub(*before);
            peak = peak.max(peak_rss_kib(pid));
        }
    }

    let mut latencies: Vec<Duration> = Vec::new();
    let mut missed = 0;
    {
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        for (target, at) in &planted {
            match seen.by_target.get(target) {
                Some(got) => latencies.push(got.saturating_duration_since(*at)),
                None => missed += 1,
            }
        }
    }
    latencies.sort();
    let (intervals, steady_cycle, unscanned) = {
        let log = log.lock().unwrap_or_else(|e| e.into_inner());
        let mut intervals: Vec<Duration> = Vec::new();
        let mut last_first_after_t0 = t0_utc;
        let mut unscanned = 0;
        for starts in log.starts.values() {
            let mut s = starts.clone();
            s.sort();
            for w in s.windows(2) {
                if w[0] >= t0_utc {
                    intervals.push((w[1] - w[0]).to_std().unwrap_or_default());
                }
            }
            match s.iter().find(|t| **t >= t0_utc) {
                Some(first) => last_first_after_t0 = last_first_after_t0.max(*first),
                None => unscanned += 1,
            }
        }
        intervals.sort();
        (
            intervals,
            (last_first_after_t0 - t0_utc).to_std().unwrap_or_default(),
            unscanned,
        )
    };

    let exchange: u64 = stats
        .by_endpoint
        .iter()
        .filter(|(k, _)| k.starts_with("exo:"))
        .map(|(_, v)| *v)
        .sum();
    let tokens = stats.by_endpoint.get("token").copied().unwrap_or(0);
    let tenant_hours = expected as f64 * measured.as_secs_f64() / 3600.0;

    println!("--- {scanners} scanner process(es), {tenants} tenants × {mailboxes} mailboxes ---");
    println!(
        "detection latency (plant → webhook)  p50 {}  p95 {}  max {}  ({} planted, {} detected, {} not detected, {} refused)",
        mins(percentile(&latencies, 50.0)),
        mins(percentile(&latencies, 95.0)),
        mins(latencies.last().copied().unwrap_or_default()),
        planted.len(),
        latencies.len(),
        missed,
        plant_failures
    );
    println!(
        "full cycle: warm-up {}, steady state {} (every tenant's first scan start after warm-up; {} not rescanned)",
        mins(warm_up),
        mins(steady_cycle),
        unscanned
    );
    println!(
        "rescan interval per tenant           p50 {}  p95 {}  max {}  ({} intervals)",
        mins(percentile(&intervals, 50.0)),
        mins(percentile(&intervals, 95.0)),
        mins(intervals.last().copied().unwrap_or_default()),
        intervals.len()
    );
    println!(
        "Exchange requests per tenant-hour    {:.1}  ({exchange} Exchange requests, {tokens} token requests = {:.1}/tenant-hour, over {} × {})",
        exchange as f64 / tenant_hours,
        tokens as f64 / tenant_hours,
        expected,
        mins(measured)
    );
    println!("429s met                             {}", stats.throttled);
    println!(
        "scanner CPU                          {:.1} s over {} = {:.1} % of one core ({} process(es) together)",
        scanner_cpu.as_secs_f64(),
        mins(measured),
        100.0 * scanner_cpu.as_secs_f64() / measured.as_secs_f64(),
        scanners
    );
    println!(
        "scanner peak memory (VmHWM)          {:.1} MiB (largest process)",
        peak as f64 / 1024.0
    );
    println!(
        "webhook deliveries                   {}",
        seen.lock().unwrap_or_else(|e| e.into_inner()).alerts
    );
    println!(
        "bench process CPU (simulator, enumerator, notifier, receiver) {:.1} s since start",
        cpu_time(std::process::id()).as_secs_f64()
    );

    stop.cancel();
    for child in &mut children {
        child.start_kill().ok();
        let _ = child.wait().await;
    }
    let _ = enumerator.await;
    let _ = notifier.await;
    let _ = reader.await;
    let alerts_queue = fwdwatch_notifier::outbox::alerts_queue_spec(&topology).name;
    let summaries = fwdwatch_enumerator::cadence::summaries_queue(&topology);
    let bench_queue = format!("{namespace}.bench.summaries");
    let _ = bus
        .teardown(&topology, &[&alerts_queue, &summaries, &bench_queue])
        .await;
    let _ = bus.close().await;
    if let Ok(store) = fwdwatch_shared::store::connect(&settings.redis).await {
        let keys = Keys::from_settings(&settings.redis);
        if let Ok(all) = store.scan_keys(&keys.all()).await {
            for k in all {
                let _ = store.delete(&k).await;
            }
        }
    }
    sim.shutdown().await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing else is parsed.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}
