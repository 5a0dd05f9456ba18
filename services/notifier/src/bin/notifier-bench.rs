//! Notifier throughput on this machine: detections per second through
//! RabbitMQ → notifier → Redis, next to a raw lapin consume-and-ack of the same
//! messages in the same run.
//!
//! ```text
//! cargo run --release -p fwdwatch-notifier --bin notifier-bench -- --detections 40000 --rounds 3
//! ```
//!
//! Needs RabbitMQ (127.0.0.1:5672) and Redis (127.0.0.1:6379), or `FWDWATCH__AMQP__URL`
//! / `FWDWATCH__REDIS__URL`. Everything lives under a fresh namespace / key prefix and
//! is deleted at the end. Each round runs three phases, each draining a queue filled
//! beforehand (so publishing is not measured), and the medians are printed last:
//! on a shared machine the broker's speed drifts between phases, so compare rounds.
//! 1. raw: lapin consumes and acks the N messages (the broker's ceiling here);
//! 2. first scan: the notifier on N new detections — every one alerts (Lua
//!    decision, outbox, signed links, log sink filtered at warn, AlertEvent);
//! 3. repeat scan: the same N detections from a later scan — the steady state of a
//!    daily scan, where almost every forward is already known (silent).
//!
//! Besides the rates it prints the CPU time this process spent per detection in each
//! notifier phase (from `/proc/self/stat`): on a shared machine it moves far less
//! than the rates, so it is what shows a change in the notifier's own cost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use clap::Parser;
use futures::StreamExt;
use fwdwatch_notifier::lifecycle::LifecycleConfig;
use fwdwatch_notifier::{Notifier, NotifierConfig, RedisTracker};
use fwdwatch_shared::bus::{Bus, RabbitBus, Topology, detection_route, outgoing};
use fwdwatch_shared::config::Settings;
use fwdwatch_shared::contracts::{Detection, Mailbox, Signal};
use fwdwatch_shared::store::{Keys, RedisStore, Store};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(name = "notifier-bench")]
struct Args {
    /// Detections per phase.
    #[arg(long, default_value_t = 40_000)]
    detections: usize,
    /// Unacknowledged deliveries (notifier tasks in flight, and the raw consumer's QoS).
    #[arg(long, default_value_t = 512)]
    prefetch: u16,
    /// Tenants the detections are spread over.
    #[arg(long, default_value_t = 200)]
    tenants: usize,
    /// Rounds of the three phases (medians are reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = tracing_init();
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let ns = format!("bench-{id}");
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| {
            k.starts_with("FWDWATCH__AMQP__URL") || k.starts_with("FWDWATCH__REDIS__URL")
        })
        .collect();
    env.extend([
        ("FWDWATCH__AMQP__NAMESPACE".to_owned(), ns.clone()),
        (
            "FWDWATCH__AMQP__PREFETCH".to_owned(),
            args.prefetch.to_string(),
        ),
        ("FWDWATCH__REDIS__KEY_PREFIX".to_owned(), format!("{ns}:")),
        (
            "FWDWATCH__SECURITY__LINK_SECRET".to_owned(),
            "bench-link-secret-0123456789".to_owned(),
        ),
    ]);
    let settings = Settings::load_from(None, env)?;
    let topology = Topology::from_settings(&settings.amqp);
    let bus: Arc<dyn Bus> = Arc::new(RabbitBus::connect(&settings.amqp).await?);
    let store: Arc<dyn Store> = Arc::new(RedisStore::connect(&settings.redis).await?);
    bus.declare(&topology).await?;
    let raw_queue = format!("{ns}.bench.raw");
    bus.declare_queue(&topology.queue(raw_queue.clone()))
        .await?;

    let result = phases(
        &args,
        &settings,
        &topology,
        bus.clone(),
        store.clone(),
        &raw_queue,
    )
    .await;

    // Clean up whatever happened.
    if let Ok(rabbit) = RabbitBus::connect(&settings.amqp).await {
        let alerts = fwdwatch_notifier::outbox::alerts_queue(&topology);
        let _ = rabbit.teardown(&topology, &[&raw_queue, &alerts]).await;
    }
    let keys = Keys::from_settings(&settings.redis);
    for key in store.scan_keys(&keys.all()).await.unwrap_or_default() {
        let _ = store.delete(&key).await;
    }
    result
}

/// Logs at warn (`RUST_LOG` wins): the log sink's info line per alert would
/// otherwise dominate. The guard lives as long as the process.
fn tracing_init() -> Option<fwdwatch_shared::telemetry::TelemetryGuard> {
    let settings = fwdwatch_shared::config::TelemetrySettings {
        log_format: fwdwatch_shared::config::LogFormat::Pretty,
        log_filter: "warn".into(),
        otlp_endpoint: None,
        metrics_listen: None,
    };
    fwdwatch_shared::telemetry::init(&settings, "notifier-bench").ok()
}

async fn phases(
    args: &Args,
    settings: &Settings,
    topology: &Topology,
    bus: Arc<dyn Bus>,
    store: Arc<dyn Store>,
    raw_queue: &str,
) -> anyhow::Result<()> {
    let n = args.detections;
    println!(
        "notifier-bench: {n} detections per phase over {} tenants, prefetch {}, {} round(s), {} CPU(s)",
        args.tenants,
        args.prefetch,
        args.rounds,
        std::thread::available_parallelism().map_or(1, |p| p.get())
    );
    let findings = |ds: &[Detection]| {
        ds.iter()
            .map(|d| outgoing(&topology.findings_exchange(), &detection_route(d.signal), d))
            .collect::<Vec<_>>()
    };
    let (mut raws, mut firsts, mut repeats) = (Vec::new(), Vec::new(), Vec::new());
    let (mut first_cpus, mut repeat_cpus) = (Vec::new(), Vec::new());
    for round in 0..args.rounds.max(1) {
        let t0 = Utc::now();
        // Fresh fingerprints every round, so "first scan" really is new each time.
        let detections: Vec<Detection> = (0..n)
            .map(|i| detection(round * n + i, args.tenants, t0))
            .collect();

        // 1. Raw lapin consume-and-ack of the same bodies.
        publish(
            &bus,
            detections
                .iter()
                .map(|d| outgoing("", raw_queue, d))
                .collect(),
        )
        .await?;
        let raw = rate(n, raw_consume(settings, raw_queue, n, args.prefetch).await?);

        // 2. First scan: every detection is new and alerts.
        publish(&bus, findings(&detections)).await?;
        let (took, cpu) = run_notifier(settings, bus.clone(), store.clone(), n as u64).await?;
        let first = rate(n, took);
        let first_cpu = cpu * 1e6 / n as f64;

        // 3. Repeat scan: the same forwards seen an hour later — silent.
        let later: Vec<Detection> = detections
            .iter()
            .map(|d| {
                let mut d = d.clone();
                d.observed_at = t0 + chrono::Duration::hours(1);
                d
            })
            .collect();
        publish(&bus, findings(&later)).await?;
        let (took, cpu) = run_notifier(settings, bus.clone(), store.clone(), n as u64).await?;
        let repeat = rate(n, took);
        let repeat_cpu = cpu * 1e6 / n as f64;
        println!(
            "round {}: raw {raw:>7.0} msg/s | first scan {first:>7.0} det/s ({:>3.0} %) | repeat scan {repeat:>7.0} det/s ({:>3.0} %)",
            round + 1,
            100.0 * first / raw,
            100.0 * repeat / raw
        );
        println!(
            "         notifier CPU (this process): first scan {first_cpu:>5.0} µs/det | repeat scan {repeat_cpu:>5.0} µs/det"
        );
        first_cpus.push(first_cpu);
        repeat_cpus.push(repeat_cpu);
        raws.push(raw);
        firsts.push(first);
        repeats.push(repeat);
    }
    let (raw, first, repeat) = (median(raws), median(firsts), median(repeats));
    println!("median raw lapin consume+ack      {raw:>7.0} msg/s");
    println!(
        "median notifier, first scan (new) {first:>7.0} det/s  {:>3.0} % of raw",
        100.0 * first / raw
    );
    println!(
        "median notifier, repeat scan      {repeat:>7.0} det/s  {:>3.0} % of raw",
        100.0 * repeat / raw
    );
    println!(
        "median notifier CPU per detection: first scan {:.0} µs, repeat scan {:.0} µs",
        median(first_cpus),
        median(repeat_cpus)
    );
    Ok(())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Messages per second.
fn rate(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

/// A detection like the scanner's: one mailbox forward per detection, unique target.
fn detection(i: usize, tenants: usize, observed_at: chrono::DateTime<Utc>) -> Detection {
    let mut d = Detection::example();
    let tenant = i % tenants.max(1);
    d.tenant_id = format!("00000000-0000-4000-8000-{tenant:012}");
    d.tenant_name = format!("Customer {tenant}");
    d.signal = Signal::InboxRule;
    d.mailbox = Some(Mailbox {
        primary_smtp_address: format!("user{i}@customer{tenant}.example"),
        display_name: format!("User {i}"),
        recipient_type: "UserMailbox".into(),
    });
    d.targets = vec![format!("collector{i}@evil.example")];
    d.raw_targets = d.targets.clone();
    d.fingerprint = format!(
        "{:032x}",
        (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
    );
    d.run_id = "run-bench".into();
    d.detection_id = format!("run-bench:{}", d.fingerprint);
    d.observed_at = observed_at;
    d
}

async fn publish(
    bus: &Arc<dyn Bus>,
    messages: Vec<fwdwatch_shared::bus::Outgoing>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let n = messages.len();
    let mut batch = Vec::with_capacity(1000);
    for m in messages {
        batch.push(m);
        if batch.len() == 1000 {
            bus.publish_all(std::mem::take(&mut batch)).await?;
        }
    }
    if !batch.is_empty() {
        bus.publish_all(batch).await?;
    }
    tracing::debug!(n, elapsed = ?started.elapsed(), "Published.");
    Ok(())
}

/// Consumes and acks `n` messages with lapin alone; returns the time taken.
async fn raw_consume(
    settings: &Settings,
    queue: &str,
    n: usize,
    prefetch: u16,
) -> anyhow::Result<Duration> {
    let connection = lapin::Connection::connect(
        settings.amqp.url.expose_secret(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .context("lapin connect")?;
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions { global: false })
        .await?;
    let started = Instant::now();
    let mut consumer = channel
        .basic_consume(
            ShortString::try_new(queue).map_err(|e| anyhow::anyhow!("{e}"))?,
            ShortString::try_new("bench-raw").map_err(|e| anyhow::anyhow!("{e}"))?,
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut got = 0;
    while got < n {
        let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .context("raw consumer stalled")?
            .context("consumer ended")??;
        // Decode like a consumer would, so the baseline is not just moving bytes.
        let _: serde_json::Value = serde_json::from_slice(&delivery.data)?;
        delivery.acker.ack(BasicAckOptions::default()).await?;
        got += 1;
    }
    let elapsed = started.elapsed();
    let _ = connection.close(200, "bench done".into()).await;
    Ok(elapsed)
}

/// CPU seconds (user + system) this process has used so far, from
/// `/proc/self/stat` (in USER_HZ = 100 ticks a second); 0 where unavailable. Unlike
/// wall time, it hardly moves when other processes share the cores.
fn process_cpu() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs a fresh notifier (Lua tracker) until it handled `n` findings; returns the
/// time and the CPU seconds it used.
async fn run_notifier(
    settings: &Settings,
    bus: Arc<dyn Bus>,
    store: Arc<dyn Store>,
    n: u64,
) -> anyhow::Result<(Duration, f64)> {
    let config = NotifierConfig::from_settings(settings)?;
    let tracker = RedisTracker::connect(
        &settings.redis,
        Keys::from_settings(&settings.redis),
        LifecycleConfig::from_notifier(&config),
    )
    .await?;
    let outbox = tracker.outbox(&settings.redis).await?;
    let notifier = Notifier::new(bus, store, settings.clone())?
        .with_tracker(Arc::new(tracker))
        .with_outbox(Arc::new(outbox));
    let stats = notifier.stats();
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let cpu_started = process_cpu();
    let task = tokio::spawn(notifier.run(shutdown.clone()));
    let deadline = Instant::now() + Duration::from_secs(300);
    while stats.snapshot().handled < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "notifier stalled at {:?}",
            stats.snapshot()
        );
        anyhow::ensure!(!task.is_finished(), "notifier stopped early");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    let cpu = process_cpu() - cpu_started;
    shutdown.cancel();
    task.await??;
    Ok((elapsed, cpu))
}
