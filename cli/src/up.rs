//! `fwdwatch up`: the whole pipeline in one process — the README's first command.
//!
//! The simulator (unless real credentials are configured), enumerator, scanner,
//! notifier and actioner run as tasks over the in-memory bus and store, which
//! implement the same traits — and the same at-least-once and idempotence
//! semantics — as RabbitMQ and Redis. Each alert is printed with its approve /
//! remove links; the actioner serves them on localhost, so opening one in a
//! browser and confirming it acts on the (simulated) tenant.
//!
//! [`Pipeline`] is the library form, driven by the command and by tests.

use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chrono::Utc;
use fwdwatch_notifier::alert::{PendingAlert, TargetActions};
use fwdwatch_notifier::settings::Route;
use fwdwatch_notifier::sinks::{Sink, SinkError, text};
use fwdwatch_shared::bus::{Bus, MemoryBus, Topology};
use fwdwatch_shared::config::Settings;
use fwdwatch_shared::contracts::{AlertKind, CommandResult};
use fwdwatch_shared::m365::M365Client;
use fwdwatch_shared::shutdown::CancellationToken;
use fwdwatch_shared::store::{MemoryStore, Store};
use secrecy::{ExposeSecret, SecretString};
use tokio::task::JoinSet;

use crate::fleet;

#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Stop after this many scans (default: keep going).
    #[arg(long)]
    pub scans: Option<u32>,
    /// Time between scans, e.g. `10m` (default: `enumerator.schedule`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub every: Option<Duration>,
    /// The simulator used when no Microsoft 365 credentials are configured.
    #[command(flatten)]
    pub sim: m365_sim::SimArgs,
}

/// One alert as the console shows it (kept for tests).
#[derive(Debug, Clone)]
pub struct PrintedAlert {
    pub alert: PendingAlert,
    pub actions: Vec<TargetActions>,
}

/// The console sink: prints each alert with its links, and remembers it.
#[derive(Debug)]
pub struct ConsoleSink {
    route: Route,
    echo: bool,
    printed: Mutex<Vec<PrintedAlert>>,
}

impl ConsoleSink {
    pub fn new(echo: bool) -> Self {
        Self {
            route: Route::default(),
            echo,
            printed: Mutex::new(Vec::new()),
        }
    }

    /// Every alert printed so far.
    pub fn printed(&self) -> Vec<PrintedAlert> {
        self.printed.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

pub fn render_alert(alert: &PendingAlert, actions: &[TargetActions]) -> String {
    let mut out = format!("\n{}\n", text::summary(alert));
    if let Some(d) = &alert.detection {
        let traits = text::traits(d);
        if !traits.is_empty() {
            out.push_str(&format!("    {}\n", traits.join("; ")));
        }
        out.push_str(&format!("    fingerprint {}\n", d.fingerprint));
    }
    for victim in &alert.victims {
        out.push_str(&format!(
            "    victim: {} ({}) {}\n",
            victim.tenant_name,
            victim.tenant_id,
            victim.mailbox.as_deref().unwrap_or("(tenant-wide rule)")
        ));
    }
    for a in actions {
        out.push_str(&format!("    approve {}: {}\n", a.target, a.approve.url));
        out.push_str(&format!("    remove  {}: {}\n", a.target, a.remove.url));
    }
    out
}

#[async_trait]
impl Sink for ConsoleSink {
    fn name(&self) -> &str {
        "console"
    }

    fn route(&self) -> &Route {
        &self.route
    }

    async fn send(&self, alert: &PendingAlert, actions: &[TargetActions]) -> Result<(), SinkError> {
        if self.echo {
            let text = render_alert(alert, actions);
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            // A closed stdout (piped into `head`) must not fail the alert.
            let _ = lock.write_all(text.as_bytes());
            let _ = lock.flush();
        }
        if let Ok(mut printed) = self.printed.lock() {
            printed.push(PrintedAlert {
                alert: alert.clone(),
                actions: actions.to_vec(),
            });
        }
        Ok(())
    }
}

/// The running all-in-one pipeline.
pub struct Pipeline {
    pub settings: Settings,
    pub bus: Arc<dyn Bus>,
    pub store: Arc<dyn Store>,
    pub client: M365Client,
    /// Where the actioner listens (`http://127.0.0.1:PORT`); links point here.
    pub actioner_url: String,
    pub console: Arc<ConsoleSink>,
    notifier_stats: Arc<fwdwatch_notifier::Stats>,
    results: Arc<Mutex<Vec<CommandResult>>>,
    shutdown: CancellationToken,
    tasks: JoinSet<(&'static str, anyhow::Result<()>)>,
}

impl Pipeline {
    /// Starts scanner, notifier and actioner over in-memory queues and store.
    /// `settings.m365` must already point at Microsoft 365 or a simulator.
    pub async fn start(mut settings: Settings, echo: bool) -> anyhow::Result<Self> {
        if settings.security.link_secret.expose_secret().len() < 16 {
            // Links must work out of the box; a per-process secret is enough for
            // links that live as long as this process does.
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
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
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
        let console = Arc::new(ConsoleSink::new(echo));
        let notifier =
            fwdwatch_notifier::Notifier::new(bus.clone(), store.clone(), settings.clone())?
                .with_sink(console.clone());
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
            let (bus, results, stop, echo) = (bus.clone(), results.clone(), shutdown.clone(), echo);
            let topology = topology.clone();
            tasks.spawn(async move {
                (
                    "results",
                    print_command_results(bus, topology, results, echo, stop).await,
                )
            });
        }
        Ok(Self {
            settings,
            bus,
            store,
            client,
            actioner_url,
            console,
            notifier_stats,
            results,
            shutdown,
            tasks,
        })
    }

    /// One scan of every tenant: enqueue, then wait until the notifier has handled
    /// every tenant's summary and its alerts have settled. Returns the tenants scanned.
    pub async fn scan(&mut self) -> anyhow::Result<usize> {
        let before = self.notifier_stats.snapshot().summaries;
        let report =
            fwdwatch_enumerator::run_once(self.bus.clone(), Some(&self.client), &self.settings)
                .await?;
        let expected = before + report.tenants.len() as u64;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        while self.notifier_stats.snapshot().summaries < expected {
            self.check_tasks()?;
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("scan {} did not finish within 10 minutes", report.run_id);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Alerts leave through the notifier's outbox just after the findings are
        // handled: wait until the count stops moving.
        let mut last = self.console.printed().len();
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = self.console.printed().len();
            if now == last {
                break;
            }
            last = now;
        }
        Ok(report.tenants.len())
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

/// Prints each `command.result` the actioner publishes, so the operator who clicked
/// a link sees the outcome in the terminal too.
async fn print_command_results(
    bus: Arc<dyn Bus>,
    topology: Topology,
    results: Arc<Mutex<Vec<CommandResult>>>,
    echo: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
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
                if echo {
                    println!(
                        "\n{} {} by {} on {} {}: {:?} — {}",
                        result.executed_at.format("%H:%M:%S"),
                        result.action.as_str(),
                        result.issued_by.name,
                        result.tenant_id,
                        result.mailbox.as_deref().unwrap_or("(tenant-wide rule)"),
                        result.outcome,
                        result.detail
                    );
                }
                if let Ok(mut all) = results.lock() {
                    all.push(result);
                }
                incoming.ack().await?;
            }
            Err(error) => incoming.dead_letter(&error.to_string()).await?,
        }
    }
}

pub async fn run(settings: Settings, args: UpArgs) -> anyhow::Result<ExitCode> {
    let _telemetry = fwdwatch_shared::telemetry::init(&settings.telemetry, "up")?;
    let (settings, sim) = fleet::simulator_if_needed(settings, args.sim.clone()).await?;
    let schedule = match args.every {
        Some(_) => None,
        None => Some(fwdwatch_enumerator::parse_schedule(
            &settings.enumerator.schedule,
        )?),
    };
    let mut pipeline = Pipeline::start(settings, true).await?;
    println!(
        "fwdwatch up: scanner, notifier and actioner running; actioner at {} (open an approve/remove link, then confirm). Ctrl-C stops.",
        pipeline.actioner_url
    );
    let interrupted = fwdwatch_shared::shutdown::on_signal();
    let mut done = 0u32;
    let outcome = loop {
        let scan = tokio::select! {
            () = interrupted.cancelled() => break Ok(()),
            scan = pipeline.scan() => scan,
        };
        match scan {
            Ok(tenants) => {
                done += 1;
                let alerts = pipeline.console.printed();
                let new = alerts
                    .iter()
                    .filter(|a| a.alert.kind == AlertKind::New)
                    .count();
                println!(
                    "\nscan {done} finished: {tenants} tenants; {new} new alerts so far ({} alerts in all)",
                    alerts.len()
                );
            }
            Err(error) => break Err(error),
        }
        if args.scans.is_some_and(|limit| done >= limit) {
            break Ok(());
        }
        let wait = match (&args.every, &schedule) {
            (Some(every), _) => *every,
            (None, Some(schedule)) => fwdwatch_enumerator::next_tick(schedule, Utc::now())
                .and_then(|next| (next - Utc::now()).to_std().ok())
                .unwrap_or(Duration::from_secs(3600)),
            (None, None) => Duration::from_secs(3600),
        };
        println!(
            "next scan in {}",
            humantime::format_duration(Duration::from_secs(wait.as_secs()))
        );
        tokio::select! {
            () = interrupted.cancelled() => break Ok(()),
            () = tokio::time::sleep(wait) => {}
        }
    };
    pipeline.stop().await;
    if let Some(sim) = sim {
        sim.shutdown().await;
    }
    outcome.map(|()| ExitCode::SUCCESS)
}
