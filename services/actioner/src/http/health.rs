//! `GET /healthz` (the process answers) and `GET /readyz` (it can do its work:
//! the broker and Redis answer). Errors are logged, not returned: they may name
//! hosts, and probes are often reachable from more places than operators are.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::Context;

/// A probe must answer before the orchestrator's own timeout (1 s by default in Kubernetes
/// is common; keep below a few seconds).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) async fn healthz() -> &'static str {
    "ok"
}

pub(super) async fn readyz(State(context): State<Context>) -> Response {
    let (broker, redis) = tokio::join!(
        tokio::time::timeout(PROBE_TIMEOUT, context.bus.health()),
        tokio::time::timeout(PROBE_TIMEOUT, context.store.ping()),
    );
    let broker_ok = match broker {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            tracing::warn!(%error, "Readiness: the broker does not answer.");
            false
        }
        Err(_) => {
            tracing::warn!("Readiness: the broker check timed out.");
            false
        }
    };
    let redis_ok = match redis {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            tracing::warn!(%error, "Readiness: Redis does not answer.");
            false
        }
        Err(_) => {
            tracing::warn!("Readiness: the Redis check timed out.");
            false
        }
    };
    let word = |ok: bool| if ok { "ok" } else { "unreachable" };
    let status = if broker_ok && redis_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "broker": word(broker_ok), "redis": word(redis_ok) })),
    )
        .into_response()
}
