//! fwdwatch's notifier: one alert per forward that matters.
//!
//! Consumes `Detection` and `TenantSummary` messages from `{ns}.notifier.findings`
//! and, per fingerprint, decides (atomically, in Redis) whether to say anything:
//! approved forwards are suppressed, new ones alert, open ones are reminded about
//! every `notifier.reminder_interval`, ones absent from a complete scan are
//! announced resolved, and one external address collecting from several mailboxes
//! is announced as a campaign. Alerts go to Slack, Teams, a JSON webhook and the
//! log, with signed approve / remove actions, and are recorded on `{ns}.events`.
//! See `docs/notifier.md` for the formats and the lifecycle.
//!
//! Entry points:
//! - [`run`] — the service: RabbitMQ, Redis, the Lua lifecycle ([`RedisTracker`])
//!   and the Lua outbox ([`outbox::RedisOutbox`]).
//! - [`run_with`] — any bus and store (the CLI's all-in-one mode: `MemoryBus` +
//!   `MemoryStore`); alerts are also written by the log sink (never with links).
//! - [`Notifier`] — the same with options: another tracker and outbox, extra sinks,
//!   counters.
//!
//! Modules: [`lifecycle`] (the state machine), [`redis_tracker`] (its Lua twin),
//! [`coverage`] (tenants that can no longer be read; forwards fwdwatch removed),
//! [`campaign`], [`outbox`] (ownership, delivery, pace, retries, parking: crash-safe
//! delivery), [`sinks`], [`handler`].

pub mod alert;
pub mod campaign;
pub mod coverage;
pub mod finding;
pub mod handler;
pub mod lifecycle;
pub mod outbox;
pub mod redis_tracker;
pub mod settings;
pub mod sinks;
pub mod stats;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use fwdwatch_shared::bus::{Bus, ConsumerOptions, RabbitBus, Topology, run_consumer};
use fwdwatch_shared::config::Settings;
use fwdwatch_shared::store::{Keys, RedisStore, Store};
use tokio_util::sync::CancellationToken;

pub use finding::Finding;
pub use lifecycle::{StoreTracker, Tracker};
pub use redis_tracker::RedisTracker;
pub use settings::NotifierConfig;
pub use sinks::Sink;
pub use stats::{Snapshot, Stats};

use crate::alert::ActionSigner;
use crate::handler::FindingsHandler;
use crate::lifecycle::LifecycleConfig;
use crate::outbox::{Dispatcher, DispatcherParts, OutboxStore, StoreOutbox};

/// How often each notifier looks for due campaigns and its own outbox entries to retry.
const TICK: Duration = outbox::SWEEP_EVERY;

/// Runs the notifier service until `shutdown`: RabbitMQ (`amqp.*`), Redis
/// (`redis.*`) and the one-round-trip Lua lifecycle.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let bus: Arc<dyn Bus> = Arc::new(RabbitBus::connect(&settings.amqp).await?);
    let store: Arc<dyn Store> = Arc::new(RedisStore::connect(&settings.redis).await?);
    let config = NotifierConfig::from_settings(&settings)?;
    let tracker = RedisTracker::connect(
        &settings.redis,
        Keys::from_settings(&settings.redis),
        LifecycleConfig::from_notifier(&config),
    )
    .await?;
    let outbox = tracker.outbox(&settings.redis).await?;
    if let Some(listen) = settings
        .telemetry
        .metrics_listen
        .clone()
        .filter(|l| !l.is_empty())
    {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            if let Err(error) = fwdwatch_shared::telemetry::serve_metrics(&listen, stop).await {
                tracing::error!(%error, "Metrics endpoint stopped.");
            }
        });
    }
    Notifier::new(bus, store, settings)?
        .with_tracker(Arc::new(tracker))
        .with_outbox(Arc::new(outbox))
        .run(shutdown)
        .await
}

/// Runs the notifier on any bus and store until `shutdown`, with the lifecycle and
/// the outbox over the [`Store`] trait ([`StoreTracker`], [`StoreOutbox`]). Every
/// alert is also written by the log sink (target `fwdwatch::alert`, level info) with
/// its fingerprint and the `fwdwatch approve` / `remove` commands, never a link.
pub async fn run_with(
    bus: Arc<dyn Bus>,
    store: Arc<dyn Store>,
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    Notifier::new(bus, store, settings)?.run(shutdown).await
}

/// A notifier being assembled: [`run_with`] with options.
pub struct Notifier {
    bus: Arc<dyn Bus>,
    store: Arc<dyn Store>,
    settings: Settings,
    config: NotifierConfig,
    tracker: Option<Arc<dyn Tracker>>,
    outbox: Option<Arc<dyn OutboxStore>>,
    extra_sinks: Vec<Arc<dyn Sink>>,
    stats: Arc<Stats>,
}

impl Notifier {
    /// Checks the notifier's settings (one line naming the bad key otherwise).
    pub fn new(
        bus: Arc<dyn Bus>,
        store: Arc<dyn Store>,
        settings: Settings,
    ) -> anyhow::Result<Self> {
        let config = NotifierConfig::from_settings(&settings)?;
        Ok(Self {
            bus,
            store,
            settings,
            config,
            tracker: None,
            outbox: None,
            extra_sinks: Vec::new(),
            stats: Arc::new(Stats::default()),
        })
    }

    /// Uses another lifecycle implementation (e.g. [`RedisTracker`]).
    #[must_use]
    pub fn with_tracker(mut self, tracker: Arc<dyn Tracker>) -> Self {
        self.tracker = Some(tracker);
        self
    }

    /// Uses another outbox store (e.g. [`outbox::RedisOutbox`], from
    /// [`RedisTracker::outbox`]; pair it with that tracker). Default: over the `Store`.
    #[must_use]
    pub fn with_outbox(mut self, outbox: Arc<dyn OutboxStore>) -> Self {
        self.outbox = Some(outbox);
        self
    }

    /// Adds a sink besides the configured ones (e.g. the CLI printing to stdout).
    #[must_use]
    pub fn with_sink(mut self, sink: Arc<dyn Sink>) -> Self {
        self.extra_sinks.push(sink);
        self
    }

    /// The counters this notifier updates (shared; read them while it runs).
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Declares the topology, then consumes findings until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let topology = Topology::from_settings(&self.settings.amqp);
        let keys = Keys::from_settings(&self.settings.redis);
        self.bus
            .declare(&topology)
            .await
            .context("declaring the RabbitMQ topology")?;
        self.bus
            .declare_queue(&outbox::alerts_queue_spec(&topology))
            .await
            .context("declaring the alerts queue")?;

        let lifecycle = LifecycleConfig::from_notifier(&self.config);
        let tracker = self.tracker.clone().unwrap_or_else(|| {
            Arc::new(StoreTracker::new(
                self.store.clone(),
                keys.clone(),
                lifecycle.clone(),
            ))
        });
        let actions = match &self.config.signer {
            Some(signer) => Some(ActionSigner::new(
                signer.clone(),
                &self.config.link_base_url,
                self.config.link_ttl,
            )),
            None => {
                tracing::warn!(
                    "security.link_secret is not set (or shorter than 16 characters): alerts go out without approve / remove actions. Set FWDWATCH__SECURITY__LINK_SECRET to enable them."
                );
                None
            }
        };
        let mut sinks = sinks::from_config(&self.config);
        sinks.extend(self.extra_sinks.iter().cloned());

        let outbox = self
            .outbox
            .clone()
            .unwrap_or_else(|| Arc::new(StoreOutbox::new(self.store.clone(), keys.clone())));
        let dispatcher = Arc::new(Dispatcher::new(
            sinks,
            actions,
            self.config.sink_attempts,
            self.config.sink_backoff,
            DispatcherParts {
                bus: self.bus.clone(),
                topology: topology.clone(),
                outbox,
                owner: tracker.outbox_owner().to_owned(),
                lease: self.config.outbox_lease,
                stats: self.stats.clone(),
                shutdown: shutdown.clone(),
            },
        ));
        // Known to the other instances before it decides (and so owns) anything.
        dispatcher
            .register()
            .await
            .context("registering this notifier instance in Redis")?;
        tracing::info!(
            sinks = ?dispatcher.sink_names(),
            links = self.config.signer.is_some(),
            reminder_interval = ?self.config.reminder_interval,
            tracker = ?tracker,
            instance = dispatcher.owner(),
            "Notifier starting."
        );

        // Heartbeats go on until the very end (past the shutdown signal, while
        // in-flight deliveries finish); the ticker stops with the consumer.
        let alive = CancellationToken::new();
        let heart = tokio::spawn(dispatcher.clone().keep_alive(alive.clone()));
        let background = CancellationToken::new();
        let ticker = tokio::spawn(tick(
            self.store.clone(),
            keys.clone(),
            lifecycle,
            dispatcher.clone(),
            background.clone(),
        ));

        let coverage = Arc::new(coverage::CoverageTracker::new(
            self.store.clone(),
            keys.clone(),
            LifecycleConfig::from_notifier(&self.config),
            self.config.coverage_failures,
            dispatcher.owner(),
        ));
        let handler = Arc::new(
            FindingsHandler::new(tracker, coverage, dispatcher.clone(), self.stats.clone())
                .with_tenant_records(self.store.clone(), keys.clone(), self.config.state_ttl),
        );
        let outcome = run_consumer(
            self.bus.clone(),
            &topology.notifier_findings_queue(),
            ConsumerOptions {
                prefetch: self.config.prefetch,
                ..ConsumerOptions::from_settings(&self.settings.amqp)
            },
            handler,
            shutdown,
        )
        .await;
        background.cancel();
        if let Err(error) = ticker.await {
            tracing::warn!(%error, "The notifier's ticker task failed.");
        }
        dispatcher.settle().await;
        alive.cancel();
        if let Err(error) = heart.await {
            tracing::warn!(%error, "The notifier's heartbeat task failed.");
        }
        dispatcher.release().await;
        let s = self.stats.snapshot();
        tracing::info!(
            detections = s.detections,
            summaries = s.summaries,
            new = s.new,
            reminders = s.reminders,
            resolved = s.resolved,
            campaigns = s.campaigns,
            suppressed = s.suppressed,
            silent = s.silent,
            stale = s.stale,
            parked = s.parked,
            throttled = s.throttled,
            taken_over = s.taken_over,
            "Notifier stopped."
        );
        outcome.context("consuming findings")
    }
}

/// Every [`TICK`]: announce due campaigns and retry this instance's outbox entries
/// that are due (each delivery on a task of its own, so the ticker never waits for
/// a sink).
async fn tick(
    store: Arc<dyn Store>,
    keys: Keys,
    config: LifecycleConfig,
    dispatcher: Arc<Dispatcher>,
    stop: CancellationToken,
) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let now = Utc::now();
        match campaign::take_due(store.as_ref(), &keys, &config, dispatcher.owner(), now).await {
            Ok(alerts) => {
                for alert in alerts {
                    dispatcher.spawn(alert);
                }
            }
            Err(error) => tracing::warn!(%error, "Checking due campaigns failed; will retry."),
        }
        if let Err(error) = dispatcher.retry_due(now).await {
            tracing::warn!(%error, "Retrying due outbox entries failed; will retry.");
        }
    }
}
