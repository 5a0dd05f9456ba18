//! JSON batching of both APIs.
//!
//! - Exchange `$batch`: at most 10 InvokeCommand sub-requests; the batch is ONE request
//!   for latency, the concurrency limit and stats; when throttled every sub-response is
//!   a 429 with a lowercase `retry-after`; responses keep the request order.
//! - Graph `$batch`: at most 20 sub-requests; each takes its own concurrency slot (so
//!   some can be 429 with `Retry-After` while others succeed), `dependsOn` failures give
//!   424, and the responses come back in a different order than requested.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};

use crate::exo::{self, ExoRequest};
use crate::fleet::Org;
use crate::graph;
use crate::reply::{self, Body, Reply, exo_error, graph_error};
use crate::server::Sim;
use crate::stats::Injected;

const EXO_MAX: usize = 10;
const GRAPH_MAX: usize = 20;

/// Sub-request id: a string, or a number written as one.
fn sub_id(r: &Value) -> Option<String> {
    match r.get("id")? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The requests array with unique ids, or the error for the whole batch.
fn requests(
    body: Option<&Value>,
    max: usize,
    error: impl Fn(&str) -> Reply,
) -> Result<Vec<(String, &Value)>, Reply> {
    let list = body
        .and_then(|b| b.get("requests"))
        .and_then(Value::as_array)
        .ok_or_else(|| error("Invalid batch payload: a 'requests' array is required."))?;
    if list.len() > max {
        return Err(error(&format!(
            "The batch contains {} requests; the limit is {max}.",
            list.len()
        )));
    }
    let mut out: Vec<(String, &Value)> = Vec::with_capacity(list.len());
    for r in list {
        let id = sub_id(r).ok_or_else(|| error("Every batch request needs an 'id'."))?;
        if out.iter().any(|(i, _)| *i == id) {
            return Err(error(&format!(
                "The batch request id '{id}' is used more than once."
            )));
        }
        out.push((id, r));
    }
    Ok(out)
}

/// Sub-request headers, case-insensitive lookup.
fn header<'a>(r: &'a Value, name: &str) -> Option<&'a str> {
    r.get("headers")?
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str())
}

/// Splits a sub-request URL into (origin if absolute, path, query).
fn split_url(url: &str) -> (Option<&str>, &str, Option<&str>) {
    let (origin, rest) = match url.find("://") {
        Some(p) => match url[p + 3..].find('/') {
            Some(q) => (Some(&url[..p + 3 + q]), &url[p + 3 + q..]),
            None => (Some(url), "/"),
        },
        None => (None, url),
    };
    match rest.split_once('?') {
        Some((path, q)) => (origin, path, Some(q)),
        None => (origin, rest, None),
    }
}

fn sub_response(id: &str, r: &Reply, lowercase_headers: bool) -> Value {
    let mut headers = Map::new();
    if matches!(r.body, Body::Json(_)) {
        let k = if lowercase_headers {
            "content-type"
        } else {
            "Content-Type"
        };
        headers.insert(k.into(), json!("application/json; charset=utf-8"));
    }
    for (k, v) in &r.headers {
        let k = if lowercase_headers {
            k.to_ascii_lowercase()
        } else {
            (*k).to_string()
        };
        headers.insert(k, json!(v));
    }
    json!({"id": id, "status": r.status.as_u16(), "headers": headers, "body": r.batch_body()})
}

fn finish(sim: &Sim, reply: Reply, counters: &crate::stats::TenantCounters) -> Response {
    let malformed = reply.is_json_success() && sim.faults.malformed();
    if malformed {
        sim.stats.injected(Injected::Malformed, Some(counters));
    }
    reply.into_http(malformed)
}

/// Exchange `POST /adminapi/beta/{tenant}/$batch` for an admitted tenant.
pub(crate) async fn exo_batch(
    sim: &Sim,
    tenant: u32,
    origin: &str,
    prefer: Option<usize>,
    body: Option<&Value>,
) -> Response {
    let counters = &sim.fleet.tenants[tenant as usize].counters;
    let reqs = match requests(body, EXO_MAX, |m| {
        exo_error(
            "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
            m,
        )
    }) {
        Ok(r) => r,
        Err(e) => return e.into_http(false),
    };
    let slot = sim.faults.acquire(counters);
    if slot.is_none() {
        sim.stats.throttled(counters);
        let retry = sim.args.faults.retry_after_secs;
        let responses: Vec<Value> = reqs
            .iter()
            .map(|(id, _)| sub_response(id, &reply::throttled(false, retry), true))
            .collect();
        return Reply::ok(json!({"responses": responses})).into_http(false);
    }
    sim.faults.delay().await;
    let own_tenant = sim.fleet.meta(tenant);
    let mut responses = Vec::with_capacity(reqs.len());
    for (id, r) in &reqs {
        let method = r.get("method").and_then(Value::as_str).unwrap_or("POST");
        let url = r.get("url").and_then(Value::as_str).unwrap_or_default();
        let (sub_origin, path, query) = split_url(url);
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        // Relative URLs may be "InvokeCommand" alone or the full admin path.
        let target_ok = match segs.as_slice() {
            ["InvokeCommand"] => true,
            [.., "adminapi", _, t, op] if op.eq_ignore_ascii_case("InvokeCommand") => {
                sim.fleet.resolve(t) == Some(Org::Customer(tenant))
            }
            _ => false,
        };
        let reply = if !method.eq_ignore_ascii_case("POST") {
            exo_error(
                "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
                "Only POST InvokeCommand requests can be batched.",
            )
        } else if !target_ok {
            exo_error(
                "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
                &format!(
                    "The batch request url '{url}' is not an InvokeCommand url of tenant {}.",
                    own_tenant.id
                ),
            )
        } else if let Some(status) = sim.faults.server_error() {
            sim.stats.injected(Injected::ServerError, Some(counters));
            reply::server_error(false, status)
        } else {
            let link_path = if segs.len() == 1 {
                format!("/adminapi/beta/{}/InvokeCommand", own_tenant.id)
            } else {
                path.to_string()
            };
            let sub_prefer = exo::prefer_page_size(header(r, "Prefer")).or(prefer);
            let req = ExoRequest {
                tenant,
                link_base: format!("{}{link_path}", sub_origin.unwrap_or(origin)),
                query: exo::query_pairs(query),
                prefer: sub_prefer,
                body: r.get("body"),
            };
            exo::execute(sim, &req)
        };
        responses.push(sub_response(id, &reply, true));
    }
    drop(slot);
    finish(sim, Reply::ok(json!({"responses": responses})), counters)
}

/// Graph `POST /v1.0/$batch`. `base` is origin + version prefix.
pub(crate) async fn graph_batch(sim: &Sim, org: Org, base: &str, body: &[u8]) -> Response {
    let counters = sim.fleet.counters(org);
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let bad = |m: &str| graph_error(StatusCode::BAD_REQUEST, "BadRequest", m);
    let reqs = match requests(parsed.as_ref(), GRAPH_MAX, bad) {
        Ok(r) => r,
        Err(e) => return e.into_http(false),
    };
    sim.faults.delay().await;
    let retry = sim.args.faults.retry_after_secs;
    // Slots stay held until the whole batch is answered, as if run in parallel.
    let mut slots = Vec::with_capacity(reqs.len());
    let mut statuses: Vec<(String, u16)> = Vec::with_capacity(reqs.len());
    let mut responses = Vec::with_capacity(reqs.len());
    for (id, r) in &reqs {
        let failed_dep = r
            .get("dependsOn")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .any(|d| statuses.iter().any(|(i, s)| i == d && *s >= 400));
        let reply = if failed_dep {
            graph_error(
                StatusCode::FAILED_DEPENDENCY,
                "FailedDependency",
                "A request this request depends on failed.",
            )
        } else if let Some(slot) = sim.faults.acquire(counters) {
            slots.push(slot);
            if let Some(status) = sim.faults.server_error() {
                sim.stats.injected(Injected::ServerError, Some(counters));
                reply::server_error(true, status)
            } else {
                run_graph_sub(sim, org, base, r)
            }
        } else {
            sim.stats.throttled(counters);
            reply::throttled(true, retry)
        };
        statuses.push((id.clone(), reply.status.as_u16()));
        responses.push(sub_response(id, &reply, false));
    }
    drop(slots);
    // Graph answers in any order; reversing makes that visible every time.
    responses.reverse();
    finish(sim, Reply::ok(json!({"responses": responses})), counters)
}

fn run_graph_sub(sim: &Sim, org: Org, base: &str, r: &Value) -> Reply {
    let method = r.get("method").and_then(Value::as_str).unwrap_or("GET");
    let Ok(method) = method.to_ascii_uppercase().parse::<Method>() else {
        return graph_error(StatusCode::BAD_REQUEST, "BadRequest", "Invalid method.");
    };
    let url = r.get("url").and_then(Value::as_str).unwrap_or_default();
    let (_, path, query) = split_url(url);
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let (_, rest) = graph::split_version(&path);
    let segs = graph::segments(rest);
    if graph::kind_of(&segs) == "graph:$batch" {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Batches cannot be nested.",
        );
    }
    let body = r
        .get("body")
        .map(|b| serde_json::to_vec(b).unwrap_or_default())
        .unwrap_or_default();
    graph::dispatch(sim, org, &method, &segs, query.unwrap_or(""), &body, base)
}
