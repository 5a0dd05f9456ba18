//! Fleet benchmark of the scan pipeline — prints numbers, asserts nothing.
//!
//! ```text
//! cargo bench -p fwdwatch-scanner --bench fleet            # 1,000 tenants × 50 mailboxes
//! FLEET_TENANTS=200 cargo bench -p fwdwatch-scanner --bench fleet   # a quicker look
//! ```
//!
//! Other knobs: `FLEET_MAILBOXES` (50), `FLEET_SAMPLE` (tenants timed the 2018 way, 5),
//! `FLEET_CONCURRENT_TENANTS` (tenants in flight per scanner process, 128).
//!
//! The real pipeline on this machine: the simulator (in this process, 50 ms per
//! call, at most 4 concurrent calls per tenant), the enumerator (in this process,
//! GDAP listing), RabbitMQ on 127.0.0.1:5672, and the `fwdwatch-scanner` binary as
//! 1 and then 2 child processes configured by `FWDWATCH__…` variables; the
//! findings are read back from the notifier's queue. Measured:
//!
//! - wall time of a full scan (first job enqueued → last summary received);
//! - calls by kind, 429s, HTTP requests per mailbox (a batch counts as one) —
//!   from the simulator's own counters;
//! - the ideal wall time those calls allow given the latency and the concurrency
//!   limits, and measured / ideal;
//! - the 2018 way (one tenant at a time, one call at a time, no batching),
//!   timed on a sample and scaled to the fleet;
//! - scanner CPU time per mailbox (utime + stime of the scanner process, the
//!   counters `getrusage` reports, read from `/proc/<pid>/stat`) and its peak
//!   resident memory (`VmHWM`).

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fwdwatch_shared::bus::{Bus, RabbitBus, Topology};
use fwdwatch_shared::config::Settings;
use fwdwatch_shared::contracts::TenantSummary;
use fwdwatch_shared::m365::{Cmdlet, M365Client, Resource};
use m365_sim::{RunningSim, SimArgs};

use support::{cpu_time, env_usize, peak_rss_kib, spawn_scanners};

const LATENCY_MS: u64 = 50;
const PER_TENANT: usize = 4;
const PER_PROCESS: usize = 256;
/// Tenants in flight per scanner process (its prefetch), by default enough that the
/// process cap, not the prefetch, is what limits it (`FLEET_CONCURRENT_TENANTS`).
fn concurrent_tenants() -> usize {
    env_usize("FLEET_CONCURRENT_TENANTS", 128)
}

fn base_env(sim: &RunningSim, namespace: &str) -> Vec<(String, String)> {
    [
        ("FWDWATCH__AMQP__NAMESPACE", namespace.to_owned()),
        (
            "FWDWATCH__M365__CONCURRENCY_PER_TENANT",
            PER_TENANT.to_string(),
        ),
        (
            "FWDWATCH__M365__CONCURRENCY_PER_PROCESS",
            PER_PROCESS.to_string(),
        ),
        (
            "FWDWATCH__SCANNER__CONCURRENT_TENANTS",
            concurrent_tenants().to_string(),
        ),
        ("FWDWATCH__TELEMETRY__LOG_FILTER", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .chain(sim.fwdwatch_env())
    .collect()
}

struct RunResult {
    processes: usize,
    wall: Duration,
    jobs: usize,
    detections: usize,
    incomplete: usize,
    scanner_cpu: Duration,
    peak_rss_kib: u64,
    stats: m365_sim::StatsSnapshot,
    /// This process: the simulator, the enumerator and the findings reader.
    bench_cpu: Duration,
    /// RabbitMQ (`beam.smp`), when found.
    broker_cpu: Duration,
}

/// The RabbitMQ node's pid (`beam.smp`), to report its CPU share.
fn broker_pid() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "beam.smp").then_some(pid)
    })
}

async fn pipeline_run(sim: &RunningSim, processes: usize) -> anyhow::Result<RunResult> {
    let namespace = format!("bench-{}", uuid::Uuid::new_v4());
    let env = base_env(sim, &namespace);
    let settings = Settings::load_from(None, env.clone())?;
    let bus = Arc::new(RabbitBus::connect(&settings.amqp).await.map_err(|e| {
        anyhow::anyhow!(
            "{e}\nstart RabbitMQ with `rabbitmq-server -detached && rabbitmqctl await_startup`"
        )
    })?);
    let dyn_bus: Arc<dyn Bus> = bus.clone();
    let topology = Topology::from_settings(&settings.amqp);
    dyn_bus.declare(&topology).await?;

    let mut children = spawn_scanners(processes, &env)?;
    // Let the scanners connect and subscribe before the clock starts.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cpu_before: Vec<Duration> = children
        .iter()
        .map(|c| c.id().map(cpu_time).unwrap_or_default())
        .collect();

    let enumerator_client = M365Client::new(&settings.m365)?;
    let mut sub = bus
        .subscribe(&topology.notifier_findings_queue(), 1000)
        .await?;
    sim.reset_stats();
    let bench_cpu_before = cpu_time(std::process::id());
    let broker = broker_pid();
    let broker_cpu_before = broker.map(cpu_time).unwrap_or_default();
    let started = Instant::now();
    let report =
        fwdwatch_enumerator::run_once(dyn_bus.clone(), Some(&enumerator_client), &settings).await?;
    let jobs = report.tenants.len();
    let mut summaries: BTreeMap<String, TenantSummary> = BTreeMap::new();
    let mut detections = 0usize;
    while summaries.len() < jobs {
        let Some(next) = tokio::time::timeout(Duration::from_secs(600), sub.next()).await? else {
            anyhow::bail!("findings subscription ended");
        };
        let m = next?;
        match m.message_type.as_deref() {
            Some("tenant_summary") => {
                let s: TenantSummary = fwdwatch_shared::contracts::decode(&m.body)?;
                summaries.insert(s.job_id.clone(), s);
            }
            _ => detections += 1,
        }
        m.ack().await?;
    }
    let wall = started.elapsed();
    let bench_cpu = cpu_time(std::process::id()).saturating_sub(bench_cpu_before);
    let broker_cpu = broker
        .map(cpu_time)
        .unwrap_or_default()
        .saturating_sub(broker_cpu_before);
    let stats = sim.stats();
    let mut scanner_cpu = Duration::ZERO;
    let mut peak = 0;
    for (child, before) in children.iter().zip(&cpu_before) {
        if let Some(pid) = child.id() {
            scanner_cpu += cpu_time(pid).saturating_sub(*before);
            peak = peak.max(peak_rss_kib(pid));
        }
    }
    for child in &mut children {
        child.start_kill().ok();
        let _ = child.wait().await;
    }
    sub.cancel().await;
    drop(sub);
    let _ = bus.teardown(&topology, &[]).await;
    let _ = bus.close().await;
    Ok(RunResult {
        processes,
        wall,
        jobs,
        detections,
        incomplete: summaries.values().filter(|s| !s.is_complete()).count(),
        scanner_cpu,
        peak_rss_kib: peak,
        stats,
        bench_cpu,
        broker_cpu,
    })
}

/// The 2018 script's way: one tenant after the other, one call at a time, one
/// `Get-InboxRule` per mailbox. Returns the mean time per tenant.
async fn one_at_a_time(sim: &RunningSim, sample: &[String]) -> anyhow::Result<Duration> {
    let env = base_env(sim, "unused");
    let mut settings = Settings::load_from(None, env)?;
    settings.m365.concurrency_per_tenant = 1;
    settings.m365.concurrency_per_process = 1;
    let client = M365Client::new(&settings.m365)?;
    let started = Instant::now();
    for tenant in sample {
        client.check_access(tenant, Resource::Exchange).await?;
        for name in [
            "Get-AcceptedDomain",
            "Get-Recipient",
            "Get-TransportRule",
            "Get-HostedOutboundSpamFilterPolicy",
            "Get-HostedOutboundSpamFilterRule",
            "Get-RemoteDomain",
        ] {
            client.invoke(tenant, &Cmdlet::new(name)).await?;
        }
        let mailboxes = client
            .invoke(
                tenant,
                &Cmdlet::new("Get-Mailbox").param("ResultSize", "Unlimited"),
            )
            .await?;
        for m in &mailboxes {
            let Some(address) = m["PrimarySmtpAddress"].as_str() else {
                continue;
            };
            client
                .invoke(
                    tenant,
                    &Cmdlet::new("Get-InboxRule")
                        .param("Mailbox", address)
                        .param("IncludeHidden", true),
                )
                .await?;
        }
    }
    Ok(started.elapsed() / sample.len().max(1) as u32)
}

fn print_run(r: &RunResult, mailboxes_per_tenant: usize, latency: Duration, scanned: usize) {
    let s = &r.stats;
    let listing = s
        .by_endpoint
        .iter()
        .filter(|(k, _)| k.starts_with("graph:"))
        .map(|(_, v)| v)
        .sum::<u64>();
    let scan_calls = s.total_calls - listing - 1; // minus the enumerator's listing and its token
    let mailboxes = (scanned * mailboxes_per_tenant) as f64;
    let inbox_batches_per_tenant = mailboxes_per_tenant.div_ceil(10);
    // Ideal: the enumerator's sequential listing (token + pages), then the scan,
    // bounded by the process slots (calls × latency / slots) and by one tenant's
    // dependency chain (token → tenant batch → inbox batches over 4 slots →
    // hidden-rule batch).
    let enumerate_ideal = latency * (1 + listing as u32);
    let slots = (r.processes * PER_PROCESS).min(r.jobs * PER_TENANT) as u32;
    let throughput_bound = latency * scan_calls as u32 / slots.max(1);
    let chain_steps = 3 + inbox_batches_per_tenant.div_ceil(PER_TENANT) as u32;
    let chain_bound = latency * chain_steps;
    let ideal = enumerate_ideal + throughput_bound.max(chain_bound);
    println!("--- {} scanner process(es) ---", r.processes);
    println!("wall time of the full scan      {:>10.2?}", r.wall);
    println!(
        "tenants / detections / partial  {} / {} / {}",
        r.jobs, r.detections, r.incomplete
    );
    println!("HTTP calls (sim counters)       {}", s.total_calls);
    for (k, v) in &s.by_endpoint {
        println!("    {k:<36} {v}");
    }
    println!("  operations (cmdlets, batched or not):");
    for (k, v) in &s.operations {
        println!("    {k:<36} {v}");
    }
    println!("429s met                        {}", s.throttled);
    println!(
        "HTTP requests per mailbox       {:.3}  (scan only: {} requests / {} mailboxes; ≈ {:.2} per tenant)",
        scan_calls as f64 / mailboxes,
        scan_calls,
        mailboxes,
        scan_calls as f64 / scanned as f64
    );
    println!(
        "ideal wall time                 {:>10.2?}  (listing {:?} + max(calls×{latency:?}/{slots} slots = {:?}, chain {chain_steps}×{latency:?} = {:?}))",
        ideal, enumerate_ideal, throughput_bound, chain_bound
    );
    println!(
        "measured / ideal                {:.2}",
        r.wall.as_secs_f64() / ideal.as_secs_f64()
    );
    println!(
        "scanner CPU per mailbox         {:.1} µs  ({:?} CPU over {} process(es))",
        r.scanner_cpu.as_secs_f64() * 1e6 / mailboxes,
        r.scanner_cpu,
        r.processes
    );
    println!(
        "scanner peak memory (VmHWM)     {:.1} MiB (largest process)",
        r.peak_rss_kib as f64 / 1024.0
    );
    println!(
        "other CPU in the same window    simulator+enumerator+reader {:?}, RabbitMQ {:?} (2 cores = {:?} available)",
        r.bench_cpu,
        r.broker_cpu,
        r.wall * 2
    );
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing else is parsed.
    let tenants = env_usize("FLEET_TENANTS", 1000) as u32;
    let mailboxes = env_usize("FLEET_MAILBOXES", 50) as u32;
    let sample = env_usize("FLEET_SAMPLE", 5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut args = SimArgs {
            tenants, mailboxes,
            ..Default::default()
        };
        args.faults.latency_ms = LATENCY_MS;
        args.faults.tenant_concurrency = PER_TENANT as u32;
        // Every tenant readable: the benchmark measures scanning, not failures.
        let sim = m365_sim::start(args, "127.0.0.1:0".parse()?).await?;
        let latency = Duration::from_millis(LATENCY_MS);
        let readable: Vec<String> = sim
            .tenants()
            .into_iter()
            .filter(|t| t.gdap_active && !t.consent_missing && !t.exchange_role_missing)
            .map(|t| t.tenant_id)
            .collect();
        println!(
            "fleet: {tenants} tenants ({} with active GDAP) × {mailboxes} mailboxes, {LATENCY_MS} ms per call, ≤ {PER_TENANT} concurrent calls per tenant; \
             scanner: {PER_PROCESS} calls per process, {} tenants in flight; RabbitMQ pipeline",
            readable.len(),
            concurrent_tenants()
        );
        let mut results = Vec::new();
        for processes in [1, 2] {
            let r = pipeline_run(&sim, processes).await?;
            print_run(&r, mailboxes as usize, latency, readable.len());
            results.push(r);
        }
        sim.reset_stats();
        let per_tenant = one_at_a_time(&sim, &readable[..sample.min(readable.len())]).await?;
        let projected = per_tenant * readable.len() as u32;
        println!("--- the 2018 way: one tenant at a time, one call at a time ---");
        println!(
            "measured on {sample} tenants: {per_tenant:.2?} per tenant → {:.1} min for the fleet",
            projected.as_secs_f64() / 60.0
        );
        for r in &results {
            println!(
                "speed-up with {} scanner process(es): {:.0}×",
                r.processes,
                projected.as_secs_f64() / r.wall.as_secs_f64()
            );
        }
        sim.shutdown().await;
        Ok(())
    })
}
