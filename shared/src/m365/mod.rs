//! The Microsoft 365 client: tokens, Microsoft Graph, the Exchange Online admin
//! API, paging, batching and throttling — written once, used by the enumerator,
//! the scanner, the actioner and the CLI.
//!
//! ```text
//!  caller ──▶ M365Client ──▶ TokenSource (per tenant+resource cache, 3 grants)
//!               │  per-tenant + per-process semaphores, retry / back-off, stats
//!               ├── graph.rs     GET + @odata.nextLink paging, $batch of 20, GDAP listing
//!               └── exchange.rs  InvokeCommand + re-POST paging, $batch of 10
//! ```
//!
//! Every base URL comes from configuration (`m365.login_url`, `graph_url`,
//! `exo_url`): national clouds and the simulator are a config change away.
//! Failures are [`M365Error`]s carrying a `contracts::ErrorKind`, Microsoft's own
//! message and the fix; no answer, however malformed, makes the client panic.
//!
//! Limits, in the order a request meets them: the per-tenant semaphore
//! (`m365.concurrency_per_tenant`, Exchange throttles per tenant) then the
//! per-process one (`m365.concurrency_per_process`). Permits are held only while a
//! request is on the wire, never while backing off, so a throttled tenant does not
//! starve the others.

mod activity;
mod auth;
mod error;
mod exchange;
mod graph;
mod retry;
mod stats;

pub(crate) use activity::bounded as activity_bounded;
pub use activity::{
    AUDIT_EXCHANGE, ActivityPage, BlobRead, ContentBlob, FeedRead, MAX_BLOB_BYTES,
    REMEDY_ACTIVITY_FEED, decode_content_list, parse_time as parse_activity_time,
};
pub use auth::{
    EXCHANGE_RESOURCE, GRAPH_RESOURCE, MANAGEMENT_RESOURCE, Resource, TokenAnswer,
    decode_token_answer,
};
pub use error::{
    M365Error, REMEDY_EXCHANGE_PERMISSION, REMEDY_EXCHANGE_ROLE, REMEDY_RELATIONSHIP, api_error,
    exchange_error_message, token_error,
};
pub use exchange::{
    Cmdlet, DecodedPage, DecodedSub, EXO_BATCH_LIMIT, Listing, decode_batch, decode_page,
    is_truncation_warning,
};
pub use graph::{
    GRAPH_BATCH_LIMIT, GdapCustomer, GraphRequest, decode_graph_page, gdap_customers_from,
    gdap_relationships_from,
};
pub use retry::{RetryPolicy, parse_retry_after};
pub use stats::{RequestKind, StatsSnapshot};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::M365Settings;
use crate::contracts::ErrorKind;
use auth::TokenSource;
use stats::Stats;

/// The client. Cheap to clone (one `Arc`); clones share tokens, limits and counters.
#[derive(Clone)]
pub struct M365Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    graph_url: String,
    exo_url: String,
    manage_url: String,
    partner_tenant_id: String,
    tokens: TokenSource,
    limits: Limits,
    policy: RetryPolicy,
    stats: Arc<Stats>,
}

/// The two concurrency caps.
struct Limits {
    per_tenant: usize,
    tenants: Mutex<HashMap<String, Arc<Semaphore>>>,
    process: Arc<Semaphore>,
}

impl Limits {
    /// Waits for a slot of `tenant` and then one of the process. Tenant first, so a
    /// request queued behind its own tenant's cap does not sit on a process slot.
    async fn acquire(&self, tenant: &str) -> (OwnedSemaphorePermit, OwnedSemaphorePermit) {
        let tenant_sem = {
            let mut map = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(tenant.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_tenant)))
                .clone()
        };
        // The semaphores are never closed, so acquiring cannot fail; if it somehow
        // did, waiting again is the only sensible thing, hence the loop.
        let tenant_permit = loop {
            if let Ok(p) = tenant_sem.clone().acquire_owned().await {
                break p;
            }
        };
        let process_permit = loop {
            if let Ok(p) = self.process.clone().acquire_owned().await {
                break p;
            }
        };
        (tenant_permit, process_permit)
    }
}

impl std::fmt::Debug for M365Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No credentials here, ever.
        f.debug_struct("M365Client")
            .field("graph_url", &self.inner.graph_url)
            .field("exo_url", &self.inner.exo_url)
            .finish_non_exhaustive()
    }
}

/// One HTTP request to Graph or Exchange, as [`M365Client::send`] takes it.
pub(crate) struct ApiRequest<'a> {
    pub tenant: &'a str,
    pub resource: Resource,
    pub kind: RequestKind,
    pub method: Method,
    pub url: &'a str,
    /// A JSON body, already encoded (shared, not copied, across retries).
    pub body: Option<&'a bytes::Bytes>,
    pub headers: &'a [(&'static str, String)],
}

impl M365Client {
    /// A client from the `m365` settings, with back-off per `m365.max_attempts`.
    pub fn new(settings: &M365Settings) -> Result<Self, M365Error> {
        Self::with_policy(settings, RetryPolicy::new(settings.max_attempts))
    }

    /// Like [`M365Client::new`] with an explicit retry policy (tests use short delays).
    pub fn with_policy(settings: &M365Settings, policy: RetryPolicy) -> Result<Self, M365Error> {
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(
                settings
                    .request_timeout
                    .min(std::time::Duration::from_secs(10)),
            )
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .user_agent(concat!("fwdwatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| M365Error::new(ErrorKind::Upstream, format!("HTTP client: {e}")))?;
        let stats = Arc::new(Stats::default());
        let process = Arc::new(Semaphore::new(settings.concurrency_per_process.max(1)));
        let tokens = TokenSource::new(
            settings,
            http.clone(),
            stats.clone(),
            policy,
            process.clone(),
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                graph_url: settings.graph_url.trim_end_matches('/').to_owned(),
                exo_url: settings.exo_url.trim_end_matches('/').to_owned(),
                manage_url: settings.manage_url.trim_end_matches('/').to_owned(),
                partner_tenant_id: settings.partner_tenant_id.clone(),
                tokens,
                limits: Limits {
                    per_tenant: settings.concurrency_per_tenant.max(1),
                    tenants: Mutex::new(HashMap::new()),
                    process,
                },
                policy,
                stats,
            }),
        })
    }

    /// The counters so far (requests by kind, cmdlets, 429s…).
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// The MSP's own tenant (where GDAP relationships live).
    pub fn partner_tenant_id(&self) -> &str {
        &self.inner.partner_tenant_id
    }

    /// Gets a token for `tenant` now: the way to check access (consent, credentials)
    /// before reading anything. Cached, so the next call reuses it.
    pub async fn check_access(&self, tenant: &str, resource: Resource) -> Result<(), M365Error> {
        self.inner.tokens.get(tenant, resource).await.map(|_| ())
    }

    /// How many (tenant, resource) tokens are cached (tests, diagnostics).
    pub fn cached_tokens(&self) -> usize {
        self.inner.tokens.cached_count()
    }

    pub(crate) fn policy(&self) -> &RetryPolicy {
        &self.inner.policy
    }

    pub(crate) fn stats_handle(&self) -> &Stats {
        &self.inner.stats
    }

    pub(crate) fn graph_base(&self) -> &str {
        &self.inner.graph_url
    }

    pub(crate) fn exo_base(&self) -> &str {
        &self.inner.exo_url
    }

    pub(crate) fn manage_base(&self) -> &str {
        &self.inner.manage_url
    }

    /// Forgets `tenant`'s token for `resource` if it is still `generation`.
    pub(crate) async fn invalidate_token(&self, tenant: &str, resource: Resource, generation: u64) {
        self.inner
            .tokens
            .invalidate(tenant, resource, generation)
            .await;
    }

    /// Sends one request and returns its body as `parse` reads it, with
    /// everything around it: the token (refreshed once on a 401), both concurrency
    /// caps, retries with back-off on 429 / 5xx / timeouts / unreadable 2xx bodies
    /// (`parse` failing), and the typed error when it fails for good. Also returns
    /// the token generation used, so a `$batch` caller can invalidate it on a
    /// sub-response 401. An empty 2xx body is given to `parse` as `null`.
    pub(crate) async fn send<R>(
        &self,
        req: &ApiRequest<'_>,
        parse: impl Fn(&[u8]) -> Result<R, String>,
    ) -> Result<(R, u64), M365Error> {
        self.send_full(req, |_, body| parse(body)).await
    }

    /// [`M365Client::send`] whose `parse` also sees the answer's headers (the
    /// Management Activity API pages by a `NextPageUri` header, not a body link).
    pub(crate) async fn send_full<R>(
        &self,
        req: &ApiRequest<'_>,
        parse: impl Fn(&reqwest::header::HeaderMap, &[u8]) -> Result<R, String>,
    ) -> Result<(R, u64), M365Error> {
        // One client span per Microsoft call (retries included), child of the
        // tenant scan: a trace shows where a slow or throttled scan spent its time.
        // The URL is left out: paging links carry opaque tokens.
        let span = tracing::info_span!(
            "m365",
            otel.name = %format!("{:?}", req.kind),
            otel.kind = "client",
            tenant = %req.tenant,
            http.request.method = %req.method,
        );
        tracing::Instrument::instrument(self.send_attempts(req, parse), span).await
    }

    async fn send_attempts<R>(
        &self,
        req: &ApiRequest<'_>,
        parse: impl Fn(&reqwest::header::HeaderMap, &[u8]) -> Result<R, String>,
    ) -> Result<(R, u64), M365Error> {
        let inner = &self.inner;
        let mut attempt: u32 = 0;
        let mut refreshed = false;
        loop {
            attempt += 1;
            let token = inner.tokens.get(req.tenant, req.resource).await?;
            let outcome = {
                let _permits = inner.limits.acquire(req.tenant).await;
                inner.stats.request(req.kind);
                let mut builder = inner
                    .http
                    .request(req.method.clone(), req.url)
                    .bearer_auth(token.value.expose_secret())
                    .header(reqwest::header::ACCEPT, "application/json");
                for (name, value) in req.headers {
                    builder = builder.header(*name, value);
                }
                if let Some(body) = req.body {
                    builder = builder
                        .header(
                            reqwest::header::CONTENT_TYPE,
                            "application/json; charset=utf-8",
                        )
                        .body(body.clone());
                }
                match builder.send().await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let retry_after = retry::retry_after(resp.headers());
                        let headers = resp.headers().clone();
                        resp.bytes()
                            .await
                            .map(|b| (status, retry_after, (headers, b)))
                    }
                    Err(e) => Err(e),
                }
            };
            let api = api_of(req.resource);
            match &outcome {
                Ok((status, _, _)) if (200..300).contains(status) => record_call(api, "ok"),
                Ok((429, _, _)) => record_call(api, "throttled"),
                _ => record_call(api, "error"),
            }
            let (error, retry_after) = match outcome {
                Ok((status, _, (headers, bytes))) if (200..300).contains(&status) => {
                    let body: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
                        b"null"
                    } else {
                        &bytes
                    };
                    match parse(&headers, body) {
                        Ok(v) => return Ok((v, token.generation)),
                        // A garbled success is most often a cut-off transfer: try again.
                        Err(e) => (
                            M365Error::malformed(format!("unreadable answer ({status}): {e}")),
                            None,
                        ),
                    }
                }
                Ok((401, _, (_, bytes))) => {
                    inner.stats.unauthorized();
                    if !refreshed {
                        // Expired or revoked early: refresh once, without spending an attempt.
                        refreshed = true;
                        attempt -= 1;
                        inner
                            .tokens
                            .invalidate(req.tenant, req.resource, token.generation)
                            .await;
                        continue;
                    }
                    return Err(api_error(401, &bytes));
                }
                Ok((status, retry_after, (_, bytes))) => {
                    let error = api_error(status, &bytes);
                    if status == 429 {
                        inner.stats.throttled();
                    } else if status >= 500 {
                        inner.stats.server_error();
                    }
                    if !matches!(error.kind, ErrorKind::Throttled | ErrorKind::Upstream) {
                        return Err(error);
                    }
                    (error, retry_after)
                }
                Err(e) => {
                    inner.stats.timeout();
                    let what = if e.is_timeout() {
                        "timed out"
                    } else {
                        "failed"
                    };
                    (
                        M365Error::new(
                            ErrorKind::Upstream,
                            format!("request {what}: {}", e.without_url()),
                        ),
                        None,
                    )
                }
            };
            if attempt >= inner.policy.max_attempts {
                tracing::warn!(tenant = req.tenant, url = req.url, attempt, error = %error, "Giving up on a Microsoft 365 call.");
                return Err(error);
            }
            let delay = inner.policy.delay(attempt, retry_after);
            tracing::debug!(tenant = req.tenant, url = req.url, attempt, ?delay, error = %error, "Microsoft 365 call failed; retrying.");
            tokio::time::sleep(delay).await;
        }
    }
}

/// Counts one HTTP call in the process metrics (`fwdwatch.m365.calls`).
pub(crate) fn record_call(api: &'static str, outcome: &'static str) {
    crate::telemetry::metrics::metrics().m365_calls.add(
        1,
        &[
            opentelemetry::KeyValue::new("api", api),
            opentelemetry::KeyValue::new("outcome", outcome),
        ],
    );
}

fn api_of(resource: Resource) -> &'static str {
    match resource {
        Resource::Graph => "graph",
        Resource::Exchange => "exchange",
        Resource::Management => "activity",
    }
}

/// Reads a body as untyped JSON.
pub(crate) fn parse_value(bytes: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// Whether `link` (a nextLink from an answer) points at the same scheme, host and
/// port as `base`: a bearer token is never sent anywhere else.
pub(crate) fn same_origin(link: &str, base: &str) -> bool {
    match (url::Url::parse(link), url::Url::parse(base)) {
        (Ok(a), Ok(b)) => {
            a.scheme() == b.scheme()
                && a.host_str() == b.host_str()
                && a.port_or_known_default() == b.port_or_known_default()
        }
        _ => false,
    }
}

/// Reads a rule id that may exceed 2^63 (inbox rules' `RuleIdentity`) without ever
/// going through a float or a signed integer: a JSON number that fits u64, or a
/// string of digits (also the tail of an `Identity` like `owner\15394007230974001153`).
pub fn rule_id_from(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => n.as_u64().map(|v| v.to_string()),
        Value::String(s) => rule_id_from_str(s),
        _ => None,
    }
}

/// [`rule_id_from`] for a string: digits (possibly after `owner\`) are read as a
/// u64 and written back canonically; anything else is kept as it is.
pub fn rule_id_from_str(s: &str) -> Option<String> {
    let s = s.trim();
    let tail = s.rsplit('\\').next().unwrap_or(s);
    if !tail.is_empty() && tail.len() <= 20 && tail.bytes().all(|b| b.is_ascii_digit()) {
        tail.parse::<u64>().ok().map(|v| v.to_string())
    } else if s.is_empty() {
        None
    } else {
        Some(s.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_ids_keep_every_digit() {
        let v: Value = serde_json::from_str(r#"{"a":15394007230974001153,"b":"18446744073709551615","c":"o\\9223372036854775809","d":-1,"e":1.5e3}"#)
            .expect("json");
        assert_eq!(
            rule_id_from(&v["a"]).as_deref(),
            Some("15394007230974001153")
        );
        assert_eq!(
            rule_id_from(&v["b"]).as_deref(),
            Some("18446744073709551615")
        );
        assert_eq!(
            rule_id_from(&v["c"]).as_deref(),
            Some("9223372036854775809")
        );
        assert_eq!(rule_id_from(&v["d"]), None);
        assert_eq!(rule_id_from(&v["e"]), None);
        assert_eq!(rule_id_from(&Value::Null), None);
    }

    #[test]
    fn origin_check() {
        assert!(same_origin(
            "https://graph.microsoft.com/v1.0/x?$skiptoken=1",
            "https://graph.microsoft.com"
        ));
        assert!(!same_origin(
            "https://evil.example/v1.0/x",
            "https://graph.microsoft.com"
        ));
        assert!(!same_origin("http://127.0.0.1:81/x", "http://127.0.0.1:80"));
        assert!(!same_origin("not a url", "https://graph.microsoft.com"));
    }
}
