//! The actioner: carries out an operator's decision about a detected forward —
//! approve it (an allowlist entry), revoke an approval, or remove it from
//! Microsoft 365 and prove it is gone — only with proof of who decided, at most
//! once per decision, never on a forward that changed since it was detected, and
//! with an audit record of every decision, refused ones included.
//!
//! ```text
//!  Slack button ─ POST /slack/interactions ─┐  (signature, 5-min window, replay claim,
//!  signed link ── GET  /act/{token} (page)  │   operator check, token check)
//!              └─ POST /act/{token} ────────┤  (token check, single-use nonce)
//!  HTTP bot ───── POST /v1/commands ────────┤  (bearer token, constant time)
//!  console ────── POST /console/… ──────────┤  (Entra ID session, anti-forgery token)
//!                                           ▼
//!  any bot ─────────────────────────▶ {ns}.commands ──▶ {ns}.actioner.commands
//!                                                              │
//!                       execute: claim command id ◀────────────┘
//!                        ├─ approve / revoke ──▶ Redis allowlist
//!                        └─ remove: re-read ─▶ refuse if changed ─▶ Set-Mailbox /
//!                           Disable|Remove-InboxRule / Disable-TransportRule ─▶ re-read
//!                       result ──▶ Redis (idempotency) · audit stream · {ns}.events · Slack response_url
//! ```
//!
//! The HTTP ways in answer at once (Slack wants an answer within 3 s): they only
//! authenticate, authorise and publish a [`Command`]; the consumer of the commands
//! queue executes it. Every command — whatever way it came — goes through the same
//! executor, so idempotency, authorisation of the issuer and the audit are applied
//! once, in one place.
//!
//! Entry points: [`run`] (production: RabbitMQ, Redis, the Microsoft 365 client)
//! and [`run_with`] (injected dependencies and listener: tests and the CLI's
//! all-in-one mode).

pub mod audit;
pub mod authz;
pub mod console;
pub mod execute;
pub mod http;
pub mod limits;
pub mod reply;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use fwdwatch_shared::bus::{
    Bus, BusError, ConsumerOptions, ROUTE_COMMAND, RabbitBus, Topology, outgoing, run_consumer,
};
use fwdwatch_shared::config::Settings;
use fwdwatch_shared::contracts::Command;
use fwdwatch_shared::m365::M365Client;
use fwdwatch_shared::store::{Keys, Store};

pub use execute::exchange::{Exchange, M365Exchange, Reading};
pub use execute::{Executor, RuleRemoval};

/// How long a command result (and the claim on its id) is kept: a duplicate of the
/// command arriving within this window is answered with the first result.
pub const RESULT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Everything the actioner runs on. Built by [`run`] from the settings, or by hand
/// (tests, the CLI's all-in-one mode) with in-memory twins.
pub struct Deps {
    pub settings: Settings,
    pub bus: Arc<dyn Bus>,
    pub store: Arc<dyn Store>,
    /// The Microsoft 365 side of a removal (re-read, change, re-read).
    pub exchange: Arc<dyn Exchange>,
}

/// What the HTTP handlers and the executor share. Cheap to clone (`Arc` inside).
#[derive(Clone)]
pub struct Context {
    inner: Arc<ContextInner>,
}

pub struct ContextInner {
    pub settings: Settings,
    pub bus: Arc<dyn Bus>,
    pub store: Arc<dyn Store>,
    pub keys: Keys,
    pub topology: Topology,
    /// Verifies the notifier's approve / remove tokens (`security.link_secret`, and
    /// `actioner.previous_link_secrets` during a rotation).
    pub signer: tokens::TokenVerifier,
    pub authz: authz::Authorizer,
    pub auditor: audit::Auditor,
    pub replier: reply::Replier,
    /// Rate limits on refused requests (links).
    pub limits: limits::RefusalLimits,
    /// The operator's console: sign-in, cookies, its public URL.
    pub console: console::ConsoleState,
}

impl std::ops::Deref for Context {
    type Target = ContextInner;
    fn deref(&self) -> &ContextInner {
        &self.inner
    }
}

impl Context {
    /// Builds the shared context; fails when the settings cannot work (no link secret).
    pub fn new(
        settings: Settings,
        bus: Arc<dyn Bus>,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<Self> {
        let signer = tokens::TokenVerifier::from_settings(&settings)?;
        let keys = Keys::from_settings(&settings.redis);
        let topology = Topology::from_settings(&settings.amqp);
        let authz = authz::Authorizer::from_settings(&settings.actioner);
        let auditor = audit::Auditor::new(store.clone(), keys.clone(), bus.clone(), &topology);
        let replier = reply::Replier::new(settings.actioner.reply_url_prefixes.clone())?;
        let console = console::ConsoleState::from_settings(&settings)?;
        Ok(Self {
            inner: Arc::new(ContextInner {
                settings,
                bus,
                store,
                keys,
                topology,
                signer,
                authz,
                auditor,
                replier,
                limits: limits::RefusalLimits::default(),
                console,
            }),
        })
    }

    /// Publishes `command` on the commands exchange and waits for the broker's confirm.
    pub async fn publish_command(&self, command: &Command) -> Result<(), BusError> {
        let message = outgoing(&self.topology.commands_exchange(), ROUTE_COMMAND, command);
        self.bus.publish(message).await
    }
}

/// Runs the actioner as configured: RabbitMQ, Redis and the Microsoft 365 client;
/// serves HTTP on `actioner.listen` and consumes `{ns}.actioner.commands` until
/// `shutdown` is cancelled.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let bus: Arc<dyn Bus> = Arc::new(
        RabbitBus::connect(&settings.amqp)
            .await
            .context("connecting to RabbitMQ")?,
    );
    let store = fwdwatch_shared::store::connect(&settings.redis)
        .await
        .context("connecting to Redis")?;
    let client = M365Client::new(&settings.m365).context("building the Microsoft 365 client")?;
    let exchange: Arc<dyn Exchange> = Arc::new(M365Exchange::new(client));
    let listener = TcpListener::bind(&settings.actioner.listen)
        .await
        .with_context(|| format!("binding actioner.listen {}", settings.actioner.listen))?;
    // `/metrics` is on the actioner's own port too; the separate metrics port keeps
    // scraping uniform across the four services.
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
    run_with(
        Deps {
            settings,
            bus,
            store,
            exchange,
        },
        listener,
        shutdown,
    )
    .await
}

/// Runs the actioner on injected dependencies: serves HTTP on `listener` (bind it
/// to port 0 and read `listener.local_addr()` first to learn the address) and
/// consumes commands, until `shutdown` is cancelled or either half fails (then
/// the other half is stopped too and the error returned).
pub async fn run_with(
    deps: Deps,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Deps {
        settings,
        bus,
        store,
        exchange,
    } = deps;
    let consumer_options = ConsumerOptions::from_settings(&settings.amqp);
    let removal = RuleRemoval::from_setting(&settings.actioner.inbox_rule_removal)?;
    let context = Context::new(settings, bus.clone(), store)?;
    bus.declare(&context.topology)
        .await
        .context("declaring the queue topology")?;

    let address = listener
        .local_addr()
        .context("reading the listen address")?;
    tracing::info!(%address, "Actioner listening.");

    // Either half failing stops the other, so the process exits and is restarted
    // rather than running half-deaf.
    let stop = shutdown.child_token();
    let executor = Arc::new(
        Executor::new(
            context.clone(),
            exchange,
            removal,
            consumer_options.delivery_limit,
        )
        .with_lease(context.settings.actioner.command_lease),
    );
    let queue = context.topology.actioner_commands_queue();
    let consume = {
        let stop = stop.clone();
        let bus = bus.clone();
        async move {
            let outcome = run_consumer::<Command, Executor>(
                bus,
                &queue,
                consumer_options,
                executor,
                stop.clone(),
            )
            .await;
            stop.cancel();
            outcome.context("consuming commands")
        }
    };
    let serve = {
        let stop = stop.clone();
        let app = http::router(context.clone());
        async move {
            let outcome = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .await;
            stop.cancel();
            outcome.context("serving HTTP")
        }
    };
    let (consumed, served) = tokio::join!(consume, serve);
    tracing::info!("Actioner stopped.");
    consumed.and(served)
}

#[cfg(test)]
mod tests {
    //! The all-in-one shape the CLI uses: `run_with` on in-memory twins.

    use super::*;
    use fwdwatch_shared::bus::MemoryBus;
    use fwdwatch_shared::contracts::{CommandOutcome, CommandResult};
    use fwdwatch_shared::store::MemoryStore;
    use secrecy::SecretString;

    /// Nothing in this test reaches Microsoft 365.
    struct NoExchange;

    #[async_trait::async_trait]
    impl Exchange for NoExchange {
        async fn read(
            &self,
            _: &str,
            _: Option<&str>,
            _: &[fwdwatch_shared::contracts::Signal],
        ) -> Result<Reading, fwdwatch_shared::m365::M365Error> {
            unreachable!("approvals never read Exchange")
        }
        async fn clear_mailbox_forwarding(
            &self,
            _: &str,
            _: &str,
        ) -> Result<(), fwdwatch_shared::m365::M365Error> {
            unreachable!()
        }
        async fn disable_inbox_rule(
            &self,
            _: &str,
            _: &str,
            _: &str,
        ) -> Result<(), fwdwatch_shared::m365::M365Error> {
            unreachable!()
        }
        async fn remove_inbox_rule(
            &self,
            _: &str,
            _: &str,
            _: &str,
        ) -> Result<(), fwdwatch_shared::m365::M365Error> {
            unreachable!()
        }
        async fn disable_transport_rule(
            &self,
            _: &str,
            _: &str,
        ) -> Result<(), fwdwatch_shared::m365::M365Error> {
            unreachable!()
        }
        async fn disable_journal_rule(
            &self,
            _: &str,
            _: &str,
        ) -> Result<(), fwdwatch_shared::m365::M365Error> {
            unreachable!()
        }
        async fn disable_outbound_connector(
            &self,
            _: &str,
            _: &str,
        ) -> Result<(), fwdwatch_shared::m365::M365Error> {
            unreachable!()
        }
    }

    #[tokio::test]
    async fn runs_on_in_memory_twins_and_stops_on_shutdown() {
        let mut settings = test_support::settings();
        settings
            .actioner
            .api_tokens
            .insert("cli".into(), SecretString::from("in-memory-token-0123"));
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let keys = Keys::from_settings(&settings.redis);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let shutdown = CancellationToken::new();
        let deps = Deps {
            settings,
            bus: Arc::new(MemoryBus::new()),
            store: store.clone(),
            exchange: Arc::new(NoExchange),
        };
        let running = tokio::spawn(run_with(deps, listener, shutdown.clone()));

        let http = reqwest::Client::new();
        let ready = http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz");
        assert_eq!(ready.status(), 200);
        let accepted: serde_json::Value = http
            .post(format!("{base}/v1/commands"))
            .bearer_auth("in-memory-token-0123")
            .json(&serde_json::json!({
                "action": "approve", "tenant_id": "t1", "mailbox": "m@contoso.com",
                "fingerprint": "f1", "signal": "forwarding_smtp_address", "target": "x@evil.example"
            }))
            .send()
            .await
            .expect("post")
            .json()
            .await
            .expect("json");
        let id = accepted["command_id"].as_str().expect("id").to_owned();
        let result = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(json) = store.get(&keys.command_result(&id)).await.expect("store") {
                    break serde_json::from_str::<CommandResult>(&json).expect("result");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the command is executed within 10 s");
        assert_eq!(result.outcome, CommandOutcome::Done, "{}", result.detail);

        shutdown.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(10), running)
            .await
            .expect("stops promptly")
            .expect("joins");
        assert!(stopped.is_ok(), "{stopped:?}");
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Settings and contexts for unit tests: in-memory bus and store.

    use super::*;
    use fwdwatch_shared::bus::MemoryBus;
    use fwdwatch_shared::store::MemoryStore;

    pub const LINK_SECRET: &str = "unit-test-link-secret-0123456789";

    /// Defaults plus a link secret.
    pub fn settings() -> Settings {
        Settings::load_from(
            None,
            [(
                "FWDWATCH__SECURITY__LINK_SECRET".to_owned(),
                LINK_SECRET.to_owned(),
            )],
        )
        .expect("default settings load")
    }

    /// A context on a fresh in-memory bus (topology declared) and store.
    pub async fn context(settings: Settings) -> Context {
        let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let context = Context::new(settings, bus, store).expect("context");
        context
            .bus
            .declare(&context.topology)
            .await
            .expect("declare");
        context
    }
}
