//! The HTTP server: shared state, the router, start-up and shutdown.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, header};
use axum::routing::{any, get, post};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::args::SimArgs;
use crate::control::{self, TenantInfo};
use crate::faults::Faults;
use crate::fleet::Fleet;
use crate::stats::{Stats, StatsSnapshot};
use crate::token::{self, TokenKeys};
use crate::truth::{self, TruthEntry};
use crate::{exo, graph, oidc};

/// Everything a handler needs; shared behind an `Arc`.
pub(crate) struct Sim {
    pub args: SimArgs,
    pub fleet: Fleet,
    pub faults: Faults,
    pub stats: Stats,
    pub tokens: TokenKeys,
    /// Entra ID sign-in (OpenID Connect) for the console.
    pub oidc: crate::oidc::Oidc,
    /// The Management Activity API's audit feed of every tenant.
    pub activity: crate::activity::Activity,
    /// `http://ADDR` of the listener; nextLinks use the request's Host when present.
    pub base_url: String,
}

impl Sim {
    pub(crate) fn new(args: SimArgs, base_url: String) -> Self {
        let fleet = Fleet::new(&args);
        let faults = Faults::new(args.faults.clone(), args.seed);
        let activity =
            crate::activity::Activity::new(args.activity_delay_secs, args.activity_page_size);
        Self {
            activity,
            args,
            fleet,
            faults,
            stats: Stats::default(),
            tokens: TokenKeys::new(),
            oidc: crate::oidc::Oidc::new(),
            base_url,
        }
    }

    /// Scheme and authority for links the sim hands out (nextLink): `--public-url`,
    /// else the Host the client used (right behind Docker networking), else the
    /// listener address.
    pub(crate) fn origin(&self, headers: &HeaderMap) -> String {
        if let Some(u) = &self.args.public_url {
            return u.trim_end_matches('/').to_string();
        }
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map_or_else(|| self.base_url.clone(), |h| format!("http://{h}"))
    }

    /// The whole fleet's truth, sorted.
    pub(crate) fn truth(&self) -> Vec<TruthEntry> {
        let mut out = Vec::new();
        for (i, slot) in self.fleet.tenants.iter().enumerate() {
            let st = self.fleet.state(i as u32);
            truth::tenant_truth(&slot.meta, &st, &mut out);
        }
        out.sort();
        out
    }

    pub(crate) fn stats_snapshot(&self) -> StatsSnapshot {
        self.stats.snapshot(self.fleet.all_counters())
    }

    pub(crate) fn reset_stats(&self) {
        self.stats.reset(self.fleet.all_counters().map(|(_, c)| c));
    }
}

fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token::token_http))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(oidc::discovery),
        )
        .route(
            "/{tenant}/oauth2/v2.0/authorize",
            get(oidc::authorize_get).post(oidc::authorize_post),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(oidc::keys))
        .route("/discovery/v2.0/keys", get(oidc::keys))
        .route("/v1.0/{*rest}", any(graph::graph_http))
        .route("/beta/{*rest}", any(graph::graph_http))
        .route("/adminapi/beta/{tenant}/{op}", post(exo::exo_http))
        .route(
            "/api/v1.0/{tenant}/activity/feed/{*rest}",
            any(crate::activity::feed_http),
        )
        .route("/_sim/activity/content", post(crate::activity::add_content))
        .route("/_sim/activity/fault", post(crate::activity::set_fault))
        .route("/_sim/truth", get(control::truth))
        .route("/_sim/tenants", get(control::tenants))
        .route(
            "/_sim/forwards",
            post(control::plant).delete(control::remove),
        )
        .route("/_sim/tenants/{tenant}/access", post(control::access))
        .route("/_sim/faults/inbox-rules", post(control::inbox_rule_fault))
        .route("/_sim/recipients", post(control::plant_recipient))
        .route("/_sim/stats", get(control::stats))
        .route("/_sim/stats/reset", post(control::reset_stats))
        .with_state(sim)
}

/// A simulator serving on `addr`. Dropping it starts a graceful shutdown in the
/// background; [`RunningSim::shutdown`] also waits for it.
pub struct RunningSim {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`: use it as login, Graph and Exchange base URL.
    pub base_url: String,
    sim: Arc<Sim>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Builds the fleet, binds `listen` (port 0 picks a free port) and serves until shut
/// down. Returns once the listener accepts connections.
pub async fn start(args: SimArgs, listen: SocketAddr) -> anyhow::Result<RunningSim> {
    args.validate()?;
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let host = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let base_url = format!("http://{}", SocketAddr::new(host, addr.port()));
    let sim = Arc::new(Sim::new(args, base_url.clone()));
    let (stop, stopped) = oneshot::channel::<()>();
    let app = router(sim.clone());
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async {
            // Resolves on send and on drop of the sender alike.
            let _ = stopped.await;
        });
        if let Err(e) = serve.await {
            tracing::warn!(error = %e, "m365-sim server stopped with an error");
        }
    });
    Ok(RunningSim {
        addr,
        base_url,
        sim,
        stop: Some(stop),
        task: Some(task),
    })
}

impl RunningSim {
    /// The configuration it runs with (credentials, seed, sizes, faults).
    pub fn args(&self) -> &SimArgs {
        &self.sim.args
    }

    /// The environment that points fwdwatch's Microsoft 365 client at this
    /// simulator (`m365.*`: the sign-in, Graph and Exchange URLs, the app's
    /// credentials and the partner tenant), for the tests and benches that start
    /// fwdwatch's services against it.
    pub fn fwdwatch_env(&self) -> Vec<(String, String)> {
        let a = self.args();
        [
            ("FWDWATCH__M365__LOGIN_URL", self.base_url.clone()),
            ("FWDWATCH__M365__GRAPH_URL", self.base_url.clone()),
            ("FWDWATCH__M365__EXO_URL", self.base_url.clone()),
            ("FWDWATCH__M365__CLIENT_ID", a.client_id.clone()),
            ("FWDWATCH__M365__CLIENT_SECRET", a.client_secret.clone()),
            (
                "FWDWATCH__M365__PARTNER_TENANT_ID",
                a.partner_tenant_id.clone(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Who can sign in to the partner tenant (the console's Entra ID sign-in).
    pub fn sign_in_users(&self) -> Vec<crate::oidc::SignInUser> {
        crate::oidc::sign_in_users(&self.sim.fleet.partner.domain)
    }

    /// Same as `GET /_sim/truth`.
    pub fn truth(&self) -> Vec<TruthEntry> {
        self.sim.truth()
    }

    /// Same as `GET /_sim/stats`.
    pub fn stats(&self) -> StatsSnapshot {
        self.sim.stats_snapshot()
    }

    /// Same as `POST /_sim/stats/reset`.
    pub fn reset_stats(&self) {
        self.sim.reset_stats();
    }

    /// Same as `GET /_sim/tenants`.
    pub fn tenants(&self) -> Vec<TenantInfo> {
        control::tenant_infos(&self.sim)
    }

    /// Stops accepting, lets in-flight requests finish (up to 5 s), and returns.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
