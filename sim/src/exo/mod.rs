//! The Exchange Online admin API: `POST /adminapi/beta/{tenant}/InvokeCommand` and
//! `/$batch`. Checks the token against the path tenant, applies the tenant's faults,
//! then [`execute`]s the cmdlet (shared with batch sub-requests).
//!
//! - `params`: binding of cmdlet parameters, Exchange's binding errors;
//! - `filter`: the OPATH `-Filter` subset;
//! - `cmdlets`: the cmdlets themselves;
//! - `render`: row shapes;
//! - `paging`: ResultSize, `Prefer`, `$skiptoken`, the envelope.

mod cmdlets;
mod filter;
mod paging;
mod params;
mod render;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Map, Value};

use crate::fleet::Org;
use crate::graph::encode_query_value;
use crate::reply::{self, Reply, exo_error, exo_forbidden, exo_unauthorized};
use crate::server::Sim;
use crate::stats::Injected;
use crate::token::{self, Resource};

pub(crate) use paging::prefer_page_size;

const ODATA_EXCEPTION: &str = "Microsoft.Exchange.Admin.OData.Core.ODataServiceException";

/// One cmdlet invocation, direct or from a batch.
pub(crate) struct ExoRequest<'a> {
    pub tenant: u32,
    /// Origin and path of the InvokeCommand URL: the nextLink is built on it.
    pub link_base: String,
    /// Decoded query pairs (`$select`, `$skiptoken`).
    pub query: Vec<(String, String)>,
    pub prefer: Option<usize>,
    /// The request body; `None` when it was not JSON.
    pub body: Option<&'a Value>,
}

/// The stats key of a request body.
pub(crate) fn kind_of(body: Option<&Value>) -> &'static str {
    body.and_then(|b| b.get("CmdletInput"))
        .and_then(|i| i.get("CmdletName"))
        .and_then(Value::as_str)
        .and_then(cmdlets::lookup)
        .map_or("exo:unknown", |(_, k)| k)
}

/// Parses a query string into decoded pairs (bad encodings are dropped).
pub(crate) fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    q.and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default()
}

fn query_get<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter()
        .find(|(k, _)| k.trim_start_matches('$').eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn pagination_error() -> Reply {
    let mut r = exo_error(ODATA_EXCEPTION, paging::PAGINATION_EXPIRED);
    if let crate::reply::Body::Json(v) = &mut r.body {
        v["error"]["message"] = Value::String(paging::PAGINATION_EXPIRED.to_string());
    }
    r
}

/// Keeps the `$select`ed properties (and their `@` side-cars).
fn select(rows: &mut [Value], fields: &[&str]) {
    for row in rows {
        if let Value::Object(m) = row {
            m.retain(|k, _| {
                let base = k.split('@').next().unwrap_or(k);
                fields.iter().any(|f| f.eq_ignore_ascii_case(base))
            });
        }
    }
}

/// Runs one cmdlet for a tenant whose token, role and throttling were already checked.
pub(crate) fn execute(sim: &Sim, req: &ExoRequest<'_>) -> Reply {
    let Some(body) = req.body else {
        return exo_error(ODATA_EXCEPTION, "The request body is not valid JSON.");
    };
    let Some(input) = body.get("CmdletInput").filter(|v| v.is_object()) else {
        return exo_error(
            ODATA_EXCEPTION,
            "The request body must contain a CmdletInput object.",
        );
    };
    let Some(name) = input.get("CmdletName").and_then(Value::as_str) else {
        return exo_error(
            ODATA_EXCEPTION,
            "CmdletInput must contain a CmdletName string.",
        );
    };
    // An unknown cmdlet looks, on the wire, like one the app may not run: 403, no JSON.
    let Some((canonical, kind)) = cmdlets::lookup(name) else {
        return exo_forbidden();
    };
    sim.stats.operation(kind);
    let empty = Map::new();
    let params = match input.get("Parameters") {
        None => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => {
            return params::binding_error(
                "Cannot bind parameters: 'Parameters' must be an object; send {} when there are none.",
            );
        }
    };
    let hash = paging::body_hash(input);
    let skip = match query_get(&req.query, "skiptoken") {
        None => 0,
        Some(tok) => {
            let counters = &sim.fleet.tenants[req.tenant as usize].counters;
            if sim.faults.pagination_expired() {
                sim.stats
                    .injected(Injected::PaginationExpired, Some(counters));
                return pagination_error();
            }
            match paging::parse_skiptoken(&sim.tokens, tok, req.tenant, &hash) {
                Some(offset) => offset,
                None => return pagination_error(),
            }
        }
    };
    let meta = sim.fleet.meta(req.tenant);
    let outcome = {
        let mut st = sim.fleet.state(req.tenant);
        cmdlets::run(canonical, meta, &mut st, &params::Params::new(params))
    };
    match outcome {
        Err(r) => r,
        Ok(cmdlets::Outcome::Done(warnings)) => {
            // A change (no "no settings modified" warning) is an audit record too.
            if warnings.is_empty() {
                let change = crate::activity::cmdlet_change(&sim.args.client_id, canonical, params);
                sim.activity.record(req.tenant, meta, change);
            }
            Reply::ok(paging::envelope(&meta.id, Vec::new(), warnings, None))
        }
        Ok(cmdlets::Outcome::Truncated(rows)) => Reply::ok(paging::envelope(
            &meta.id,
            rows,
            vec![paging::MORE_RESULTS.to_string()],
            None,
        )),
        Ok(cmdlets::Outcome::Empty) => Reply::ok(serde_json::json!({})),
        Ok(cmdlets::Outcome::Rows(rows, size)) => {
            let (mut rows, next, warnings) = paging::paginate(rows, size, skip, req.prefer);
            if let Some(fields) = query_get(&req.query, "select") {
                let fields: Vec<&str> = fields
                    .split(',')
                    .map(str::trim)
                    .filter(|f| !f.is_empty())
                    .collect();
                select(&mut rows, &fields);
            }
            let next_link = next.map(|offset| {
                let mut parts: Vec<String> = req
                    .query
                    .iter()
                    .filter(|(k, _)| !k.trim_start_matches('$').eq_ignore_ascii_case("skiptoken"))
                    .map(|(k, v)| format!("{k}={}", encode_query_value(v)))
                    .collect();
                parts.push(format!(
                    "$skiptoken={}",
                    paging::skiptoken(&sim.tokens, req.tenant, offset, &hash)
                ));
                format!("{}?{}", req.link_base, parts.join("&"))
            });
            Reply::ok(paging::envelope(&meta.id, rows, warnings, next_link))
        }
    }
}

/// Resolves and authorises an Exchange request for the path tenant: 401 when the
/// token is not an Exchange token of that tenant, 403 (non-JSON) without the role.
pub(crate) fn admit(sim: &Sim, tenant_key: &str, headers: &HeaderMap) -> Result<u32, Reply> {
    let path_org = sim.fleet.resolve(tenant_key);
    let token_org = token::authorize(sim, headers, Resource::Exchange)
        .map_err(|e| exo_unauthorized(e.message()))?;
    match path_org {
        Some(o) if o == token_org => {}
        _ => return Err(exo_unauthorized(token::AuthError::WrongTenant.message())),
    }
    // The partner tenant has no Exchange organisation in the sim.
    let Org::Customer(i) = token_org else {
        return Err(exo_forbidden());
    };
    if sim.fleet.no_exchange_role(i) {
        sim.stats.injected(
            Injected::NoExchangeRole,
            Some(&sim.fleet.tenants[i as usize].counters),
        );
        return Err(exo_forbidden());
    }
    Ok(i)
}

/// `POST /adminapi/beta/{tenant}/InvokeCommand` and `/$batch`.
pub(crate) async fn exo_http(
    State(sim): State<Arc<Sim>>,
    Path((tenant, op)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let batch = op == "$batch";
    if !batch && !op.eq_ignore_ascii_case("InvokeCommand") {
        return Reply::empty(StatusCode::NOT_FOUND).into_http(false);
    }
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let kind = if batch {
        "exo:$batch"
    } else {
        kind_of(parsed.as_ref())
    };
    let counters = sim.fleet.resolve(&tenant).map(|o| sim.fleet.counters(o));
    sim.stats.call(kind, counters);
    let idx = match admit(&sim, &tenant, &headers) {
        Ok(i) => i,
        Err(r) => return r.into_http(false),
    };
    let counters = &sim.fleet.tenants[idx as usize].counters;
    let origin = sim.origin(&headers);
    let prefer = prefer_page_size(headers.get("prefer").and_then(|v| v.to_str().ok()));
    if batch {
        return crate::batch::exo_batch(&sim, idx, &origin, prefer, parsed.as_ref()).await;
    }
    let Some(_slot) = sim.faults.acquire(counters) else {
        sim.stats.throttled(counters);
        return reply::throttled(false, sim.args.faults.retry_after_secs).into_http(false);
    };
    sim.faults.delay().await;
    if let Some(status) = sim.faults.server_error() {
        sim.stats.injected(Injected::ServerError, Some(counters));
        return reply::server_error(false, status).into_http(false);
    }
    let req = ExoRequest {
        tenant: idx,
        link_base: format!("{origin}{}", uri.path()),
        query: query_pairs(uri.query()),
        prefer,
        body: parsed.as_ref(),
    };
    let reply = execute(&sim, &req);
    let malformed = reply.is_json_success() && sim.faults.malformed();
    if malformed {
        sim.stats.injected(Injected::Malformed, Some(counters));
    }
    reply.into_http(malformed)
}
