//! `fwdwatch up`: the whole pipeline in one process — the README's first command.
//!
//! The simulator (unless real credentials are configured), enumerator, scanner,
//! notifier and actioner run as tasks over the in-memory bus and store, which
//! implement the same traits — and the same at-least-once and idempotence
//! semantics — as RabbitMQ and Redis. The actioner serves the operator's console
//! on localhost; the terminal is for a person:
//!
//! - a progress bar while a scan runs, then a short summary (`up_terminal`): open
//!   forwards by severity and signal, the newest and most severe ones (no links),
//!   the tenants that could not be read, and one `Console: <url>` line — a
//!   single-use sign-in link to the console (press Enter for a new one);
//! - every log line goes to a file (`--log-file`, default under the system's
//!   temporary directory); only warnings and errors reach the terminal;
//! - no approve / remove link or token is ever printed: acting happens in the
//!   console (or any configured chat sink).
//!
//! Memory stays bounded however long it runs: the terminal keeps counters, never
//! the alerts themselves (the store holds the fleet's state, as Redis would).
//!
//! [`Pipeline`] is the library form, driven by the command and by tests.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use fwdwatch_notifier::sinks::Sink;
use fwdwatch_shared::bus::{Bus, MemoryBus, Topology};
use fwdwatch_shared::config::Settings;
use fwdwatch_shared::contracts::{Channel, CommandResult, Issuer};
use fwdwatch_shared::m365::M365Client;
use fwdwatch_shared::shutdown::CancellationToken;
use fwdwatch_shared::store::{MemoryStore, Store};
use secrecy::{ExposeSecret, SecretString};
use tokio::task::JoinSet;

use crate::fleet;
use crate::up_terminal::{self, AlertCounter, Counts, ScanOutcome, Terminal};

#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Stop after this many scans (default: keep going).
    #[arg(long)]
    pub scans: Option<u32>,
    /// Time between scans, e.g. `10m` (default: `enumerator.cadence` in continuous
    /// mode, the default; the next tick of `enumerator.schedule` in cron mode).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub every: Option<Duration>,
    /// Where the log goes (default: `fwdwatch-up-<time>-<pid>.log` in the system's
    /// temporary directory). Only warnings and errors also reach the terminal.
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// The simulator used when no Microsoft 365 credentials are configured.
    #[command(flatten)]
    pub sim: m365_sim::SimArgs,
}

/// The running all-in-one pipeline.
pub struct Pipeline {
    pub settings: Settings,
    pub bus: Arc<dyn Bus>,
    pub store: Arc<dyn Store>,
    pub client: M365Client,
    /// Where the actioner listens (`http://127.0.0.1:PORT`); the console is under `/console/`.
    pub actioner_url: String,
    /// Alerts delivered so far, by kind (counters only).
    pub alerts: Arc<AlertCounter>,
    /// The store's concrete twin, purged of expired keys after every scan.
    memory: MemoryStore,
    notifier_stats: Arc<fwdwatch_notifier::Stats>,
    results: Arc<Mutex<Vec<CommandResult>>>,
    shutdown: CancellationToken,
    tasks: JoinSet<(&'static str, anyhow::Result<()>)>,
}

impl Pipeline {
    /// Starts scanner, notifier and actioner over in-memory queues and store.
    /// `settings.m365` must already point at Microsoft 365 or a simulator.
    pub async fn start(settings: Settings) -> anyhow::Result<Self> {
        Self::start_with_sinks(settings, Vec::new()).await
    }

    /// [`Pipeline::start`] with extra notifier sinks (tests record alerts with one).
    pub async fn start_with_sinks(
        mut settings: Settings,
        extra_sinks: Vec<Arc<dyn Sink>>,
    ) -> anyhow::Result<Self> {
        if settings.security.link_secret.expose_secret().len() < 16 {
            // Chat sinks' links must work out of the box; a per-process secret is
            // enough for links that live as long as this process does.
            settings.security.link_secret = SecretString::from(format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            ));
        }
        let listener = tokio::net::TcpListener::bind(&settings.actioner.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on actioner.listen {} (in use? set FWDWATCH__ACTIONER__LISTEN=127.0.0.1:0 for any free port)",
                    settings.actioner.listen
                )
            })?;
        let address = listener.local_addr()?;
        let actioner_url = format!("http://{address}");
        settings.notifier.link_base_url = actioner_url.clone();

        let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
        let memory = MemoryStore::new();
        // Clones share one keyspace.
        let store: Arc<dyn Store> = Arc::new(memory.clone());
        let topology = Topology::from_settings(&settings.amqp);
        bus.declare(&topology).await?;
        let client =
            M365Client::new(&settings.m365).context("configuring the Microsoft 365 client")?;
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();

        {
            let (bus, client, settings, stop) = (
                bus.clone(),
                client.clone(),
                settings.clone(),
                shutdown.clone(),
            );
            tasks.spawn(async move {
                (
                    "scanner",
                    fwdwatch_scanner::run_with(bus, client, &settings, stop).await,
                )
            });
        }
        let alerts = Arc::new(AlertCounter::default());
        let mut notifier =
            fwdwatch_notifier::Notifier::new(bus.clone(), store.clone(), settings.clone())?
                .with_sink(alerts.clone());
        for sink in extra_sinks {
            notifier = notifier.with_sink(sink);
        }
        let notifier_stats = notifier.stats();
        {
            let stop = shutdown.clone();
            tasks.spawn(async move { ("notifier", notifier.run(stop).await) });
        }
        {
            let deps = fwdwatch_actioner::Deps {
                settings: settings.clone(),
                bus: bus.clone(),
                store: store.clone(),
                exchange: Arc::new(fwdwatch_actioner::M365Exchange::new(client.clone())),
            };
            let stop = shutdown.clone();
            tasks.spawn(async move {
                (
                    "actioner",
                    fwdwatch_actioner::run_with(deps, listener, stop).await,
                )
            });
        }
        let results = Arc::new(Mutex::new(Vec::new()));
        {
            let (bus, results, stop) = (bus.clone(), results.clone(), shutdown.clone());
            let topology = topology.clone();
            tasks.spawn(async move {
                (
                    "results",
                    collect_command_results(bus, topology, results, stop).await,
                )
            });
        }
        Ok(Self {
            settings,
            bus,
            store,
            client,
            actioner_url,
            alerts,
            memory,
            notifier_stats,
            results,
            shutdown,
            tasks,
        })
    }

    /// One scan of every tenant: enqueue, then wait until the notifier has handled
    /// every tenant's summary and its alerts have settled. `progress` is told how
    /// many tenants there are and how many are done.
    pub async fn scan_with_progress(
        &mut self,
        progress: impl Fn(u64, u64),
    ) -> anyhow::Result<ScanOutcome> {
        let started = std::time::Instant::now();
        let alerts_before = self.alerts.counts();
        let before = self.notifier_stats.snapshot().summaries;
        let report =
            fwdwatch_enumerator::run_once(self.bus.clone(), Some(&self.client), &self.settings)
                .await?;
        let tenants = report.tenants.len() as u64;
        let expected = before + tenants;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        loop {
            let done = self.notifier_stats.snapshot().summaries;
            progress(done.saturating_sub(before).min(tenants), tenants);
            if done >= expected {
                break;
            }
            self.check_tasks()?;
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("scan {} did not finish within 10 minutes", report.run_id);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Alerts leave through the notifier's outbox just after the findings are
        // handled: wait until the count stops moving.
        let mut last = self.alerts.counts().total();
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = self.alerts.counts().total();
            if now == last {
                break;
            }
            last = now;
        }
        // Expired sessions, sign-in links and detection state would otherwise stay
        // in memory until touched (Redis drops them by itself).
        let live = self.memory.purge_expired();
        tracing::debug!(keys = live, "Store purged of expired keys.");
        Ok(ScanOutcome {
            run_id: report.run_id,
            tenants: report.tenants.len(),
            alerts: self.alerts.counts().since(&alerts_before),
            took: started.elapsed(),
        })
    }

    /// One scan of every tenant, without progress reports. Returns the tenants scanned.
    pub async fn scan(&mut self) -> anyhow::Result<usize> {
        Ok(self.scan_with_progress(|_, _| {}).await?.tenants)
    }

    /// A fresh single-use sign-in link to the console, for whoever runs `up`.
    pub async fn console_link(&self) -> anyhow::Result<String> {
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| "operator".into());
        let operator = Issuer {
            channel: Channel::Console,
            user_id: format!("local:{user}"),
            name: format!("{user} (fwdwatch up)"),
        };
        Ok(
            fwdwatch_actioner::console::sign_in_link(self.store.as_ref(), &self.settings, operator)
                .await?,
        )
    }

    /// Alerts delivered so far, by kind.
    pub fn alert_counts(&self) -> Counts {
        self.alerts.counts()
    }

    /// Command results the actioner has published so far.
    pub fn command_results(&self) -> Vec<CommandResult> {
        self.results.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Fails when a component task has stopped on its own.
    fn check_tasks(&mut self) -> anyhow::Result<()> {
        if let Some(Ok((name, result))) = self.tasks.try_join_next() {
            return Err(match result {
                Ok(()) => anyhow::anyhow!("the {name} stopped unexpectedly"),
                Err(e) => e.context(format!("the {name} failed")),
            });
        }
        Ok(())
    }

    /// Stops every component and waits for them (in-flight work finishes first).
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while let Some(joined) = self.tasks.join_next().await {
            if let Ok((name, Err(error))) = joined {
                tracing::warn!(component = name, error = %format!("{error:#}"), "Stopped with an error.");
            }
        }
    }
}

/// Keeps the newest `command.result`s the actioner publishes (for tests; the
/// console shows results to the person who acted, the audit page keeps them).
async fn collect_command_results(
    bus: Arc<dyn Bus>,
    topology: Topology,
    results: Arc<Mutex<Vec<CommandResult>>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    /// Results kept: a months-long `up` must not grow without bound.
    const KEEP: usize = 100;
    let queue = format!("{}.cli.results", topology.namespace());
    bus.declare_queue(&topology.queue(queue.clone()).bind(
        topology.events_exchange(),
        fwdwatch_shared::bus::ROUTE_COMMAND_RESULT,
    ))
    .await?;
    let mut subscription = bus.subscribe(&queue, 16).await?;
    loop {
        let incoming = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            next = subscription.next() => match next {
                Some(Ok(incoming)) => incoming,
                Some(Err(error)) => return Err(error.into()),
                None => return Ok(()),
            },
        };
        match fwdwatch_shared::contracts::decode::<CommandResult>(&incoming.body) {
            Ok(result) => {
                tracing::info!(
                    command_id = %result.command_id,
                    action = result.action.as_str(),
                    outcome = ?result.outcome,
                    "Command result."
                );
                if let Ok(mut all) = results.lock() {
                    all.push(result);
                    let excess = all.len().saturating_sub(KEEP);
                    all.drain(..excess);
                }
                incoming.ack().await?;
            }
            Err(error) => incoming.dead_letter(&error.to_string()).await?,
        }
    }
}

/// Where the log goes when `--log-file` is not given.
fn default_log_file() -> PathBuf {
    std::env::temp_dir().join(format!(
        "fwdwatch-up-{}-{}.log",
        Utc::now().format("%Y%m%dT%H%M%SZ"),
        std::process::id()
    ))
}

pub async fn run(settings: Settings, args: UpArgs) -> anyhow::Result<ExitCode> {
    let log_path = args.log_file.clone().unwrap_or_else(default_log_file);
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open the log file {}", log_path.display()))?;
    let terminal = Terminal::new();
    let _telemetry = fwdwatch_shared::telemetry::init_with_log_file(
        &settings.telemetry,
        "up",
        log_file,
        terminal.clone(),
    )?;
    let (settings, sim) = fleet::simulator_if_needed(settings, args.sim.clone()).await?;
    let schedule = match (&args.every, settings.enumerator.mode.as_str()) {
        (None, "cron") => Some(fwdwatch_enumerator::parse_schedule(
            &settings.enumerator.schedule,
        )?),
        _ => None,
    };
    let mut pipeline = Pipeline::start(settings).await?;
    terminal.line(&format!(
        "fwdwatch up: scanner, notifier and actioner running; console at {}/console/. Log: {}",
        pipeline.actioner_url,
        log_path.display()
    ));
    let interrupted = fwdwatch_shared::shutdown::on_signal();
    let mut enter = up_terminal::enter_presses();
    let mut reading_stdin = true;
    let mut done = 0u32;
    let outcome = loop {
        let bar = terminal.start_progress(done + 1);
        let scan = tokio::select! {
            () = interrupted.cancelled() => { terminal.finish_progress(); break Ok(()) },
            scan = pipeline.scan_with_progress(|pos, len| { bar.set_length(len); bar.set_position(pos); }) => scan,
        };
        terminal.finish_progress();
        let outcome = match scan {
            Ok(outcome) => outcome,
            Err(error) => break Err(error),
        };
        done += 1;
        match up_terminal::summary(&pipeline, done, &outcome).await {
            Ok(lines) => terminal.lines(&lines),
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "Cannot summarise the scan.")
            }
        }
        print_console_link(&pipeline, &terminal).await;
        if args.scans.is_some_and(|limit| done >= limit) {
            break Ok(());
        }
        let wait = between_scans(
            args.every,
            schedule.as_ref(),
            pipeline.settings.enumerator.cadence,
            Utc::now(),
        );
        terminal.line(&format!(
            "Next scan in {}. The Console link works once, for {} min: press Enter for a new one. Ctrl-C stops.",
            humantime::format_duration(Duration::from_secs(wait.as_secs())),
            pipeline.settings.console.sign_in_link_ttl.as_secs().div_ceil(60)
        ));
        let next_scan = tokio::time::sleep(wait);
        tokio::pin!(next_scan);
        loop {
            tokio::select! {
                () = interrupted.cancelled() => break,
                () = &mut next_scan => break,
                pressed = enter.recv(), if reading_stdin => match pressed {
                    Some(()) => print_console_link(&pipeline, &terminal).await,
                    // No terminal to read from (stdin closed): just wait.
                    None => reading_stdin = false,
                },
            }
        }
        if interrupted.is_cancelled() {
            break Ok(());
        }
    };
    pipeline.stop().await;
    if let Some(sim) = sim {
        sim.shutdown().await;
    }
    outcome.map(|()| ExitCode::SUCCESS)
}

/// How long `up` waits before its next scan: `--every` when given; in cron mode until
/// the schedule's next tick; otherwise (continuous mode, the default) one cadence —
/// the all-in-one scans the whole (small) fleet at once instead of spreading it.
fn between_scans(
    every: Option<Duration>,
    cron: Option<&cron::Schedule>,
    cadence: Duration,
    now: chrono::DateTime<Utc>,
) -> Duration {
    match (every, cron) {
        (Some(every), _) => every,
        (None, Some(schedule)) => fwdwatch_enumerator::next_tick(schedule, now)
            .and_then(|next| (next - now).to_std().ok())
            .unwrap_or(Duration::from_secs(3600)),
        (None, None) => cadence,
    }
}

async fn print_console_link(pipeline: &Pipeline, terminal: &Terminal) {
    match pipeline.console_link().await {
        Ok(url) => terminal.line(&format!("Console: {url}")),
        Err(error) => {
            tracing::warn!(error = %format!("{error:#}"), "Cannot make a console sign-in link.")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn waits_one_cadence_by_default_the_next_tick_in_cron_mode_and_every_when_asked() {
        let now = Utc
            .with_ymd_and_hms(2026, 12, 7, 18, 0, 0)
            .single()
            .expect("time");
        let cadence = Duration::from_secs(8 * 60);
        assert_eq!(between_scans(None, None, cadence, now), cadence);
        let daily = fwdwatch_enumerator::parse_schedule("0 0 19 * * *").expect("cron");
        assert_eq!(
            between_scans(None, Some(&daily), cadence, now),
            Duration::from_secs(3600)
        );
        let every = Duration::from_secs(120);
        assert_eq!(
            between_scans(Some(every), Some(&daily), cadence, now),
            every
        );
    }
}
