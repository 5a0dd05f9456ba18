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
//! - [`run`] — the service: RabbitMQ, Redis, the Lua lifecycle ([`RedisTracker`]).
//! - [`run_with`] — any bus and store (the CLI's all-in-one mode: `MemoryBus` +
//!   `MemoryStore`); alerts are printed by the log sink with their links.
//! - [`Notifier`] — the same with options: another tracker, extra sinks, counters.
//!
//! Modules: [`lifecycle`] (the state machine), [`redis_tracker`] (its Lua twin),
//! [`coverage`] (tenants that can no longer be read; forwards fwdwatch removed),
//! [`campaign`], [`outbox`] (delivery, retries, parking), [`sinks`], [`handler`].

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
use crate::outbox::{Dispatcher, DispatcherParts};

/// How often each notifier looks for due campaigns and stranded outbox entries.
const TICK: Duration = Duration::from_millis(500);

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
        .run(shutdown)
        .await
}

/// Runs the notifier on any bus and store until `shutdown`, with the lifecycle over
/// the [`Store`] trait ([`StoreTracker`]). Every alert is also printed by the log
/// sink (target `fwdwatch::alert`, level info) with its approve / remove links.
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

        let background = shutdown.child_token();
        let dispatcher = Arc::new(Dispatcher::new(
            sinks,
            actions,
            self.config.sink_attempts,
            self.config.sink_backoff,
            self.config.outbox_lease,
            DispatcherParts {
                bus: self.bus.clone(),
                topology: topology.clone(),
                store: self.store.clone(),
                keys: keys.clone(),
                tracker: tracker.clone(),
                stats: self.stats.clone(),
                shutdown: shutdown.clone(),
            },
        ));
        tracing::info!(
            sinks = ?dispatcher.sink_names(),
            links = self.config.signer.is_some(),
            reminder_interval = ?self.config.reminder_interval,
            tracker = ?tracker,
            "Notifier starting."
        );

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
            "Notifier stopped."
        );
        outcome.context("consuming findings")
    }
}

/// Every [`TICK`]: announce due campaigns and retry stranded outbox entries.
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
        match campaign::take_due(store.as_ref(), &keys, &config, now).await {
            Ok(alerts) => {
                for alert in alerts {
                    dispatcher.deliver(alert).await;
                }
            }
            Err(error) => tracing::warn!(%error, "Checking due campaigns failed; will retry."),
        }
        if let Err(error) = dispatcher.sweep(now).await {
            tracing::warn!(%error, "Sweeping the alert outbox failed; will retry.");
        }
    }
}
