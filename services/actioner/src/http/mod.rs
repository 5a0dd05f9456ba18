//! The actioner's HTTP ways in.
//!
//! | route | what | proof |
//! |---|---|---|
//! | `POST /slack/interactions` | Slack button clicks | Slack request signature + operator list + the button's signed token |
//! | `GET\|HEAD /act/{token}` | confirmation page; changes nothing | — (read-only) |
//! | `POST /act/{token}` | acts, once | signed, expiring, single-use token |
//! | `POST /v1/commands` | a command from an HTTP bot → 202 | bearer token (`actioner.api_tokens`) |
//! | `GET /v1/commands/{id}` | that command's result | bearer token |
//! | `GET /healthz`, `GET /readyz` | liveness; broker + Redis reachable | — |
//! | `/console/…` | the operator's console (see `console`) | Entra ID sign-in or a one-time link; anti-forgery token on every POST |
//!
//! Handlers authenticate, authorise and publish a `Command`; none of them touches
//! Microsoft 365 or the allowlist itself, so every decision goes through the one
//! executor (idempotency, audit) whatever way it came in.
//!
//! Logging: request spans carry the *route template* (`/act/{token}`), never the
//! URI — link tokens live in the path, and a log must not become a key ring.

mod api;
mod health;
mod links;
mod slack;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::Context;

pub(crate) use links::wait_for_result;
pub use slack::{SignatureError, verify_signature};

/// Slack's `block_actions` payload embeds the whole alert message (up to 50 blocks),
/// URL-encoded; link forms and JSON commands are far smaller. Anything bigger is not ours.
const BODY_LIMIT: usize = 512 * 1024;

/// Upper bound of any request (a link POST waits a few seconds for its result).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The actioner's routes on `context`.
pub fn router(context: Context) -> Router {
    let console = if context.settings.console.enabled {
        crate::console::routes()
    } else {
        Router::new()
    };
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/slack/interactions", post(slack::interactions))
        // axum answers HEAD with the GET handler minus the body: read-only too.
        .route("/act/{token}", get(links::show).post(links::act))
        .route("/v1/commands", post(api::submit))
        .route("/v1/commands/{command_id}", get(api::status))
        .merge(console)
        // Prometheus scrapes the actioner on its own port.
        .route(
            "/metrics",
            get(|| async {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    fwdwatch_shared::telemetry::metrics::render(),
                )
            }),
        )
        .layer(axum::middleware::map_response(security_headers))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let route = request
                    .extensions()
                    .get::<MatchedPath>()
                    .map(MatchedPath::as_str)
                    .unwrap_or("(unmatched)");
                tracing::info_span!("http", method = %request.method(), route)
            }),
        )
        .with_state(context)
}

/// Headers every answer carries: nothing here may be cached (pages show tokens and
/// results), framed (a framed confirm button is a click-jacking target), or leak
/// its URL (which holds the token) through the `Referer` of a followed link.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if !headers.contains_key(header::REFERRER_POLICY) {
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The console sets its own, stricter policy (no inline style) and referrer
    // policy (see `console`); keep them.
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
            ),
        );
    }
    headers.insert(
        "x-robots-tag",
        HeaderValue::from_static("noindex, nofollow"),
    );
    response
}
