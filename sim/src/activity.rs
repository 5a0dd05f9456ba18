//! The Office 365 Management Activity API for `Audit.Exchange`, generated from the
//! simulator's own changes.
//!
//! Every change to a forward — planted or removed through `/_sim/forwards`, or made
//! by an Exchange cmdlet (`Set-Mailbox`, `Disable-`/`Remove-InboxRule`, …) — records
//! one Exchange admin audit record (`RecordType` 1: `CreationTime`, `Id`,
//! `Operation`, `UserId`, `ClientIP`, `ObjectId`, `Parameters` as `{Name, Value}`
//! pairs, `ResultStatus`, `OrganizationId`). Each record is published as its own
//! content blob `--activity-delay-secs` after it happened (Microsoft: typically 60–90
//! minutes, up to 12 hours for the first blobs after a subscription starts).
//!
//! Endpoints, under `/api/v1.0/{tenant}/activity/feed/` with a token for
//! `https://manage.office.com` of that tenant:
//!
//! - `POST subscriptions/start?contentType=Audit.Exchange` (a second start answers
//!   `AF20024` "already enabled", as Microsoft does), `POST subscriptions/stop`,
//!   `GET subscriptions/list`;
//! - `GET subscriptions/content?contentType=Audit.Exchange&startTime=…&endTime=…`:
//!   the blobs whose `contentCreated` is in `[startTime, endTime)` (at most 24 h,
//!   within the last 7 days), `--activity-page-size` per page, more pages named by
//!   the `NextPageUri` response header;
//! - `GET audit/{contentId}`: the blob, a JSON array of records.
//!
//! Control endpoints (not Microsoft's): `POST /_sim/activity/content` adds a blob
//! as given (hostile or garbled content), `POST /_sim/activity/fault` makes one
//! tenant's feed answer 403 `AF10001` or 500.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::fleet::Org;
use crate::model::TenantMeta;
use crate::reply::{Body, Reply};
use crate::server::Sim;
use crate::token::{self, Resource};
use crate::truth::Signal;

/// The only content type the sim generates; the others are accepted and empty.
pub(crate) const AUDIT_EXCHANGE: &str = "Audit.Exchange";
const CONTENT_TYPES: &[&str] = &[
    AUDIT_EXCHANGE,
    "Audit.AzureActiveDirectory",
    "Audit.SharePoint",
    "Audit.General",
    "DLP.All",
];

/// One change to a forward, as the audit record tells it.
pub(crate) struct Change {
    /// The cmdlet (`New-InboxRule`, `Set-Mailbox`, …) or mailbox action.
    pub operation: String,
    /// Who made it (`UserId`): the signed-in user or the admin app.
    pub actor: String,
    pub client_ip: String,
    /// The changed object (`ObjectId`), e.g. `victim@contoso.com\Rule name`.
    pub object_id: String,
    /// The cmdlet's parameters, as strings (`Parameters`).
    pub parameters: Vec<(String, String)>,
}

enum BlobBody {
    Records(Vec<Value>),
    /// Served as written: what a garbled blob looks like on the wire.
    Raw(Vec<u8>),
}

struct Blob {
    id: String,
    /// When the blob becomes listable (`contentCreated`).
    created: DateTime<Utc>,
    body: BlobBody,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FeedFault {
    /// 403 `AF10001`: the token lacks `ActivityFeed.Read`.
    Forbidden,
    /// 500 on every call.
    ServerError,
}

#[derive(Default)]
struct TenantFeed {
    subscribed: bool,
    blobs: Vec<Blob>,
    fault: Option<FeedFault>,
}

/// Every tenant's audit feed.
pub(crate) struct Activity {
    delay: chrono::Duration,
    page_size: usize,
    feeds: Mutex<HashMap<u32, TenantFeed>>,
}

impl Activity {
    pub(crate) fn new(delay_secs: u64, page_size: u32) -> Self {
        Self {
            delay: chrono::Duration::seconds(i64::try_from(delay_secs).unwrap_or(i64::MAX / 2)),
            page_size: page_size.max(1) as usize,
            feeds: Mutex::new(HashMap::new()),
        }
    }

    fn feeds(&self) -> std::sync::MutexGuard<'_, HashMap<u32, TenantFeed>> {
        self.feeds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `change` in `tenant`'s audit log, listable after the delay.
    pub(crate) fn record(&self, tenant: u32, meta: &TenantMeta, change: Change) {
        let now = Utc::now();
        let id = uuid::Uuid::new_v4().to_string();
        let record = json!({
            "CreationTime": now.format("%Y-%m-%dT%H:%M:%S").to_string(),
            "Id": id,
            "Operation": change.operation,
            "OrganizationId": meta.id,
            "RecordType": 1,
            "ResultStatus": "True",
            "UserKey": change.actor,
            "UserType": 2,
            "Version": 1,
            "Workload": "Exchange",
            "ClientIP": change.client_ip,
            "ObjectId": change.object_id,
            "UserId": change.actor,
            "ExternalAccess": false,
            "OrganizationName": meta.initial_domain,
            "OriginatingServer": format!("{} (15.20.7452.000)", meta.server),
            "Parameters": change
                .parameters
                .iter()
                .map(|(name, value)| json!({"Name": name, "Value": value}))
                .collect::<Vec<_>>(),
        });
        self.add_blob(tenant, now, BlobBody::Records(vec![record]));
    }

    fn add_blob(&self, tenant: u32, at: DateTime<Utc>, body: BlobBody) {
        let blob = Blob {
            id: format!(
                "{}${}$audit_exchange${}",
                at.format("%Y%m%d%H%M%S%3f"),
                at.timestamp_millis(),
                uuid::Uuid::new_v4().simple()
            ),
            created: at + self.delay,
            body,
        };
        self.feeds().entry(tenant).or_default().blobs.push(blob);
    }
}

/// A forward planted through `/_sim/forwards`, for its audit record.
pub(crate) struct Planted<'a> {
    pub signal: Signal,
    /// The mailbox's primary SMTP address (mailbox signals).
    pub mailbox: Option<&'a str>,
    pub rule_name: Option<&'a str>,
    pub targets: &'a [String],
    pub action: Option<&'a str>,
    pub keeps_copy: Option<bool>,
    /// Who made the change; default: the mailbox itself (an attacker signed in as
    /// the victim) or the tenant's admin for tenant-wide changes.
    pub actor: Option<&'a str>,
    pub client_ip: Option<&'a str>,
}

/// The address an attacker's sign-in comes from when a test does not say.
pub(crate) const DEFAULT_CLIENT_IP: &str = "203.0.113.7";

fn default_actor(meta: &TenantMeta, mailbox: Option<&str>) -> String {
    mailbox.map_or_else(|| format!("admin@{}", meta.initial_domain), str::to_owned)
}

fn pair(name: &str, value: impl Into<String>) -> (String, String) {
    (name.to_owned(), value.into())
}

/// The audit record of a planted forward: the cmdlet an attacker would have run.
pub(crate) fn planted_change(meta: &TenantMeta, p: &Planted<'_>) -> Change {
    let actor = p
        .actor
        .map_or_else(|| default_actor(meta, p.mailbox), str::to_owned);
    let client_ip = p.client_ip.unwrap_or(DEFAULT_CLIENT_IP).to_owned();
    let mailbox = p.mailbox.unwrap_or_default();
    let joined = p.targets.join(";");
    let (operation, object_id, mut parameters) = match p.signal {
        Signal::ForwardingSmtpAddress | Signal::ForwardingAddress => {
            let field = if p.signal == Signal::ForwardingSmtpAddress {
                "ForwardingSmtpAddress"
            } else {
                "ForwardingAddress"
            };
            let value = if p.signal == Signal::ForwardingSmtpAddress {
                format!("smtp:{}", crate::address::strip_smtp_prefix(&joined))
            } else {
                joined.clone()
            };
            (
                "Set-Mailbox",
                mailbox.to_owned(),
                vec![
                    pair("Identity", mailbox),
                    pair(field, value),
                    pair(
                        "DeliverToMailboxAndForward",
                        if p.keeps_copy.unwrap_or(true) {
                            "True"
                        } else {
                            "False"
                        },
                    ),
                ],
            )
        }
        Signal::InboxRule => {
            let name = p.rule_name.unwrap_or("Planted rule");
            let field = match p.action.unwrap_or("forward_to") {
                "redirect_to" => "RedirectTo",
                "forward_as_attachment_to" => "ForwardAsAttachmentTo",
                _ => "ForwardTo",
            };
            let mut params = vec![pair("Name", name), pair(field, joined.clone())];
            if !actor.eq_ignore_ascii_case(mailbox) {
                params.insert(0, pair("Mailbox", mailbox));
            }
            ("New-InboxRule", format!("{mailbox}\\{name}"), params)
        }
        Signal::TransportRule => {
            let name = p.rule_name.unwrap_or("Planted transport rule");
            let field = match p.action.unwrap_or("blind_copy_to") {
                "redirect_message_to" => "RedirectMessageTo",
                "add_to_recipients" => "AddToRecipients",
                "copy_to" => "CopyTo",
                "generate_incident_report" | "generate_incident_report_with_message" => {
                    "GenerateIncidentReport"
                }
                "route_via_connector" => "RouteMessageOutboundConnector",
                _ => "BlindCopyTo",
            };
            (
                "New-TransportRule",
                name.to_owned(),
                vec![pair("Name", name), pair(field, joined.clone())],
            )
        }
        Signal::JournalRule => {
            let name = p.rule_name.unwrap_or("Planted journal rule");
            (
                "New-JournalRule",
                name.to_owned(),
                vec![
                    pair("Name", name),
                    pair("JournalEmailAddress", joined.clone()),
                    pair("Scope", "Global"),
                ],
            )
        }
        Signal::OutboundConnector => {
            let name = p.rule_name.unwrap_or("Planted connector");
            (
                "New-OutboundConnector",
                name.to_owned(),
                vec![
                    pair("Name", name),
                    pair("SmartHosts", joined.clone()),
                    pair("ConnectorType", "Partner"),
                    pair("UseMXRecord", "False"),
                ],
            )
        }
    };
    parameters.retain(|(_, v)| !v.is_empty());
    Change {
        operation: operation.to_owned(),
        actor,
        client_ip,
        object_id,
        parameters,
    }
}

/// The audit record of a forward removed through `/_sim/forwards`.
pub(crate) fn removed_change(
    meta: &TenantMeta,
    signal: Signal,
    mailbox: Option<&str>,
    rule_id: Option<&str>,
) -> Change {
    let actor = default_actor(meta, mailbox);
    let mailbox = mailbox.unwrap_or_default();
    let rule = rule_id.unwrap_or_default();
    let (operation, object_id, parameters) = match signal {
        Signal::ForwardingSmtpAddress => (
            "Set-Mailbox",
            mailbox.to_owned(),
            vec![pair("Identity", mailbox), pair("ForwardingSmtpAddress", "")],
        ),
        Signal::ForwardingAddress => (
            "Set-Mailbox",
            mailbox.to_owned(),
            vec![pair("Identity", mailbox), pair("ForwardingAddress", "")],
        ),
        Signal::InboxRule => (
            "Remove-InboxRule",
            format!("{mailbox}\\{rule}"),
            vec![pair("Identity", format!("{mailbox}\\{rule}"))],
        ),
        Signal::TransportRule => (
            "Remove-TransportRule",
            rule.to_owned(),
            vec![pair("Identity", rule)],
        ),
        Signal::JournalRule => (
            "Remove-JournalRule",
            rule.to_owned(),
            vec![pair("Identity", rule)],
        ),
        Signal::OutboundConnector => (
            "Remove-OutboundConnector",
            rule.to_owned(),
            vec![pair("Identity", rule)],
        ),
    };
    Change {
        operation: operation.to_owned(),
        actor,
        client_ip: DEFAULT_CLIENT_IP.to_owned(),
        object_id,
        parameters,
    }
}

/// The audit record of a cmdlet that changed something through the Exchange admin
/// API (the app's own calls, e.g. a remove by the actioner).
pub(crate) fn cmdlet_change(client_id: &str, cmdlet: &str, params: &Map<String, Value>) -> Change {
    let parameters: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Bool(true) => "True".to_owned(),
                Value::Bool(false) => "False".to_owned(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (k.clone(), value)
        })
        .collect();
    let object_id = parameters
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Identity"))
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    Change {
        operation: cmdlet.to_owned(),
        actor: format!("ServicePrincipal_{client_id}"),
        client_ip: String::new(),
        object_id,
        parameters,
    }
}

/// A Management Activity API error: `{"error":{"code","message"}}`.
fn af_error(status: StatusCode, code: &str, message: &str) -> Reply {
    Reply::json(status, json!({"error": {"code": code, "message": message}}))
}

/// Reads `2026-05-29T12:29:35`, with or without fractions and a zone (UTC assumed).
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s.trim_end_matches('Z'), f) {
            return Some(t.and_utc());
        }
    }
    None
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// `/api/v1.0/{tenant}/activity/feed/{*rest}`.
pub(crate) async fn feed_http(
    State(sim): State<Arc<Sim>>,
    Path((tenant, rest)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let counters = sim.fleet.resolve(&tenant).map(|o| sim.fleet.counters(o));
    let kind = if rest.starts_with("audit/") {
        "activity:blob"
    } else if rest == "subscriptions/content" {
        "activity:content"
    } else {
        "activity:subscriptions"
    };
    sim.stats.call(kind, counters);
    let org = match token::authorize(&sim, &headers, Resource::Management) {
        Ok(o) => o,
        Err(e) => {
            return af_error(StatusCode::UNAUTHORIZED, "AF10002", e.message()).into_http(false);
        }
    };
    let index = match (sim.fleet.resolve(&tenant), org) {
        (Some(Org::Customer(p)), Org::Customer(t)) if p == t => t,
        _ => {
            return af_error(
                StatusCode::UNAUTHORIZED,
                "AF10002",
                "The tenant in the request does not match the token's tenant.",
            )
            .into_http(false);
        }
    };
    sim.faults.delay().await;
    let fault = sim.activity.feeds().get(&index).and_then(|f| f.fault);
    match fault {
        Some(FeedFault::Forbidden) => {
            return af_error(
                StatusCode::FORBIDDEN,
                "AF10001",
                "The permission set () sent in the request does not include the expected permission ActivityFeed.Read.",
            )
            .into_http(false);
        }
        Some(FeedFault::ServerError) => {
            return af_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "AF50000",
                "An internal error occurred. Retry the request.",
            )
            .into_http(false);
        }
        None => {}
    }
    let query: Vec<(String, String)> = crate::exo::query_pairs(uri.query());
    let q = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let origin = sim.origin(&headers);
    let base = format!("{origin}/api/v1.0/{tenant}/activity/feed");
    let reply = match (method, rest.as_str()) {
        (Method::POST, "subscriptions/start") => match content_type(q("contentType")) {
            Err(r) => r,
            Ok(ct) => {
                let mut feeds = sim.activity.feeds();
                let feed = feeds.entry(index).or_default();
                if ct == AUDIT_EXCHANGE && feed.subscribed {
                    af_error(
                        StatusCode::BAD_REQUEST,
                        "AF20024",
                        "The subscription is already enabled. No property change.",
                    )
                } else {
                    if ct == AUDIT_EXCHANGE {
                        feed.subscribed = true;
                    }
                    Reply::ok(json!({"contentType": ct, "status": "enabled", "webhook": null}))
                }
            }
        },
        (Method::POST, "subscriptions/stop") => match content_type(q("contentType")) {
            Err(r) => r,
            Ok(ct) => {
                if ct == AUDIT_EXCHANGE {
                    sim.activity.feeds().entry(index).or_default().subscribed = false;
                }
                Reply::empty(StatusCode::OK)
            }
        },
        (Method::GET, "subscriptions/list") => {
            let on = sim
                .activity
                .feeds()
                .get(&index)
                .is_some_and(|f| f.subscribed);
            let list: Vec<Value> = if on {
                vec![json!({"contentType": AUDIT_EXCHANGE, "status": "enabled", "webhook": null})]
            } else {
                Vec::new()
            };
            Reply::ok(Value::Array(list))
        }
        (Method::GET, "subscriptions/content") => list_content(&sim, index, &base, &query),
        (Method::GET, path) if path.starts_with("audit/") => {
            let id = &path["audit/".len()..];
            let feeds = sim.activity.feeds();
            let now = Utc::now();
            match feeds
                .get(&index)
                .and_then(|f| f.blobs.iter().find(|b| b.id == id && b.created <= now))
            {
                None => af_error(
                    StatusCode::NOT_FOUND,
                    "AF20051",
                    "The content requested was not found.",
                ),
                Some(b) => match &b.body {
                    BlobBody::Records(r) => Reply::ok(Value::Array(r.clone())),
                    BlobBody::Raw(bytes) => Reply {
                        status: StatusCode::OK,
                        headers: vec![("Content-Type", "application/json".into())],
                        body: Body::Raw(bytes.clone()),
                    },
                },
            }
        }
        _ => Reply::empty(StatusCode::NOT_FOUND),
    };
    reply.into_http(false)
}

fn content_type(v: Option<&str>) -> Result<&'static str, Reply> {
    let Some(v) = v else {
        return Err(af_error(
            StatusCode::BAD_REQUEST,
            "AF20020",
            "The parameter contentType is required.",
        ));
    };
    CONTENT_TYPES
        .iter()
        .find(|c| c.eq_ignore_ascii_case(v.trim()))
        .copied()
        .ok_or_else(|| {
            af_error(
                StatusCode::BAD_REQUEST,
                "AF20021",
                &format!("The content type {v} is not valid."),
            )
        })
}

fn list_content(sim: &Sim, index: u32, base: &str, query: &[(String, String)]) -> Reply {
    let q = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let ct = match content_type(q("contentType")) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let now = Utc::now();
    let (start, end) = match (q("startTime"), q("endTime")) {
        (None, None) => (now - chrono::Duration::hours(24), now),
        (Some(s), Some(e)) => match (parse_time(s), parse_time(e)) {
            (Some(s), Some(e)) => (s, e),
            _ => {
                return af_error(
                    StatusCode::BAD_REQUEST,
                    "AF20054",
                    "Invalid startTime or endTime.",
                );
            }
        },
        _ => {
            return af_error(
                StatusCode::BAD_REQUEST,
                "AF20054",
                "Both startTime and endTime must be specified, or neither.",
            );
        }
    };
    if end <= start || end - start > chrono::Duration::hours(24) {
        return af_error(
            StatusCode::BAD_REQUEST,
            "AF20055",
            "startTime and endTime must both be specified (or both omitted) and they must be more than 0 and no more than 24 hours apart, with startTime no more than 7 days in the past.",
        );
    }
    if start < now - chrono::Duration::days(7) {
        return af_error(
            StatusCode::BAD_REQUEST,
            "AF20055",
            "startTime and endTime must both be specified (or both omitted) and they must be more than 0 and no more than 24 hours apart, with startTime no more than 7 days in the past.",
        );
    }
    let feeds = sim.activity.feeds();
    let feed = feeds.get(&index);
    if ct == AUDIT_EXCHANGE && !feed.is_some_and(|f| f.subscribed) {
        return af_error(
            StatusCode::BAD_REQUEST,
            "AF20022",
            "No subscription found for the specified content type.",
        );
    }
    let mut listed: Vec<&Blob> = if ct == AUDIT_EXCHANGE {
        feed.map(|f| {
            f.blobs
                .iter()
                .filter(|b| b.created <= now && b.created >= start && b.created < end)
                .collect()
        })
        .unwrap_or_default()
    } else {
        Vec::new()
    };
    listed.sort_by_key(|b| b.created);
    let offset: usize = q("nextPage").and_then(|p| p.parse().ok()).unwrap_or(0);
    let page_size = sim.activity.page_size;
    let page: Vec<Value> = listed
        .iter()
        .skip(offset)
        .take(page_size)
        .map(|b| {
            json!({
                "contentType": ct,
                "contentId": b.id,
                "contentUri": format!("{base}/audit/{}", b.id),
                "contentCreated": stamp(b.created),
                "contentExpiration": stamp(b.created + chrono::Duration::days(7)),
            })
        })
        .collect();
    let mut reply = Reply::ok(Value::Array(page));
    if offset + page_size < listed.len() {
        let next = format!(
            "{base}/subscriptions/content?contentType={ct}&startTime={}&endTime={}&nextPage={}",
            crate::graph::encode_query_value(&stamp(start)),
            crate::graph::encode_query_value(&stamp(end)),
            offset + page_size
        );
        reply = reply.header("NextPageUri", next);
    }
    reply
}

/// `POST /_sim/activity/content`: a blob as given, listable after the delay.
#[derive(Debug, Deserialize)]
struct ContentRequest {
    tenant_id: String,
    /// A JSON value served as the blob, or (`raw`) a string served byte for byte.
    content: Value,
    #[serde(default)]
    raw: bool,
}

/// `POST /_sim/activity/fault`.
#[derive(Debug, Deserialize)]
struct FaultRequest {
    tenant_id: String,
    /// `forbidden`, `server_error`, or null to clear.
    fault: Option<String>,
}

fn control_error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(json!({"error": message}))).into_response()
}

fn customer(sim: &Sim, key: &str) -> Option<u32> {
    match sim.fleet.resolve(key) {
        Some(Org::Customer(i)) => Some(i),
        _ => None,
    }
}

fn no_customer(key: &str) -> Response {
    control_error(StatusCode::NOT_FOUND, format!("no customer tenant '{key}'"))
}

pub(crate) async fn add_content(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let req: ContentRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
    };
    let Some(t) = customer(&sim, &req.tenant_id) else {
        return no_customer(&req.tenant_id);
    };
    let body = match (req.raw, req.content) {
        (true, Value::String(s)) => BlobBody::Raw(s.into_bytes()),
        (true, _) => {
            return control_error(
                StatusCode::BAD_REQUEST,
                "'raw' content must be a string".into(),
            );
        }
        (false, Value::Array(records)) => BlobBody::Records(records),
        (false, other) => BlobBody::Raw(serde_json::to_vec(&other).unwrap_or_default()),
    };
    sim.activity.add_blob(t, Utc::now(), body);
    StatusCode::CREATED.into_response()
}

pub(crate) async fn set_fault(State(sim): State<Arc<Sim>>, body: Bytes) -> Response {
    let req: FaultRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return control_error(StatusCode::BAD_REQUEST, format!("invalid body: {e}")),
    };
    let Some(t) = customer(&sim, &req.tenant_id) else {
        return no_customer(&req.tenant_id);
    };
    let fault = match req.fault.as_deref() {
        None => None,
        Some("forbidden") => Some(FeedFault::Forbidden),
        Some("server_error") => Some(FeedFault::ServerError),
        Some(other) => {
            return control_error(StatusCode::BAD_REQUEST, format!("unknown fault '{other}'"));
        }
    };
    sim.activity.feeds().entry(t).or_default().fault = fault;
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_every_form_microsoft_accepts() {
        for s in [
            "2026-05-29T12:29:35",
            "2026-05-29T12:29:35Z",
            "2026-05-29T12:29:35.123Z",
            "2026-05-29T12:29",
            "2026-05-29T12:29:35+00:00",
        ] {
            assert!(parse_time(s).is_some(), "{s}");
        }
        assert!(parse_time("yesterday").is_none());
    }
}
