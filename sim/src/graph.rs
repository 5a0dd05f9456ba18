//! Microsoft Graph (v1.0 and beta): GDAP relationships and customers, domains, users,
//! inbox message rules, and the entry to `$batch`.
//!
//! [`dispatch`] is synchronous and shared by direct calls and `$batch` sub-requests.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;
use serde_json::{Map, Value, json};

use crate::fleet::Org;
use crate::model::{InboxRule, Mailbox, MailboxKind, Target, TenantMeta, TenantState};
use crate::names::{graph_date, guid_str};
use crate::reply::{self, Reply, graph_error};
use crate::server::Sim;
use crate::stats::Injected;
use crate::token::{self, AuthError, Resource};

/// Exchange Administrator, the role the generated relationships grant.
const EXCHANGE_ADMIN_ROLE: &str = "29232cdf-9323-42fd-ade2-1d097af3e4de";
const GRAPH_CONTEXT: &str = "https://graph.microsoft.com/v1.0/$metadata";

/// Any Graph request: `/v1.0/...` or `/beta/...`.
pub(crate) async fn graph_http(
    State(sim): State<Arc<Sim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (prefix, rest) = split_version(uri.path());
    let segments = segments(rest);
    let kind = kind_of(&segments);
    let org = match token::authorize(&sim, &headers, Resource::Graph) {
        Ok(org) => org,
        Err(e) => {
            sim.stats.call(kind, None);
            return unauthorized(e).into_http(false);
        }
    };
    let counters = sim.fleet.counters(org);
    sim.stats.call(kind, Some(counters));
    let base = format!("{}{prefix}", sim.origin(&headers));
    if kind == "graph:$batch" {
        if method != Method::POST {
            return method_not_allowed().into_http(false);
        }
        return crate::batch::graph_batch(&sim, org, &base, &body).await;
    }
    let Some(_slot) = sim.faults.acquire(counters) else {
        sim.stats.throttled(counters);
        return reply::throttled(true, sim.args.faults.retry_after_secs).into_http(false);
    };
    sim.faults.delay().await;
    if let Some(status) = sim.faults.server_error() {
        sim.stats.injected(Injected::ServerError, Some(counters));
        return reply::server_error(true, status).into_http(false);
    }
    let reply = dispatch(
        &sim,
        org,
        &method,
        &segments,
        uri.query().unwrap_or(""),
        &body,
        &base,
    );
    let malformed = reply.is_json_success() && sim.faults.malformed();
    if malformed {
        sim.stats.injected(Injected::Malformed, Some(counters));
    }
    reply.into_http(malformed)
}

/// `("/v1.0", "/users/...")` from a request path.
pub(crate) fn split_version(path: &str) -> (&'static str, &str) {
    if let Some(r) = path.strip_prefix("/v1.0") {
        ("/v1.0", r)
    } else if let Some(r) = path.strip_prefix("/beta") {
        ("/beta", r)
    } else {
        ("/v1.0", path)
    }
}

/// Percent-decoded, non-empty path segments.
pub(crate) fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect()
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes a query value (keys like `$top` stay literal).
pub(crate) fn encode_query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'\'' | b',' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The stats key of a Graph path.
pub(crate) fn kind_of(seg: &[String]) -> &'static str {
    let s: Vec<&str> = seg.iter().map(String::as_str).collect();
    match s.as_slice() {
        ["$batch"] => "graph:$batch",
        ["tenantRelationships", "delegatedAdminRelationships"] => {
            "graph:delegatedAdminRelationships"
        }
        ["tenantRelationships", "delegatedAdminCustomers"] => "graph:delegatedAdminCustomers",
        ["domains"] => "graph:domains",
        ["users"] => "graph:users",
        ["users", _] => "graph:user",
        ["users", _, f, i, r] if is_rules_path(f, i, r) => "graph:messageRules",
        ["users", _, f, i, r, _] if is_rules_path(f, i, r) => "graph:messageRule",
        _ => "graph:unknown",
    }
}

fn is_rules_path(folders: &str, inbox: &str, rules: &str) -> bool {
    folders.eq_ignore_ascii_case("mailFolders")
        && inbox.eq_ignore_ascii_case("inbox")
        && rules.eq_ignore_ascii_case("messageRules")
}

fn unauthorized(e: AuthError) -> Reply {
    graph_error(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", e.message())
        .header("WWW-Authenticate", "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"")
}

fn method_not_allowed() -> Reply {
    graph_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "Request_BadRequest",
        "Specified HTTP method is not allowed for the request target.",
    )
}

fn bad_request(message: &str) -> Reply {
    graph_error(StatusCode::BAD_REQUEST, "BadRequest", message)
}

/// OData query options, keys compared without case and with or without `$`.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: &str) -> Result<Self, Reply> {
        serde_urlencoded::from_str::<Vec<(String, String)>>(q)
            .map(Query)
            .map_err(|_| bad_request("Invalid query string."))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.trim_start_matches('$').eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `$top` within `1..=max`, else Graph's 400.
    fn top(&self, default: usize, max: usize) -> Result<usize, Reply> {
        match self.get("top") {
            None => Ok(default),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(bad_request(&format!(
                    "Invalid page size specified: '{v}'. Must be between 1 and {max} inclusive."
                ))),
            },
        }
    }

    fn skip(&self) -> Result<usize, Reply> {
        let Some(tok) = self.get("skiptoken") else {
            return Ok(0);
        };
        URL_SAFE
            .decode(tok)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.strip_prefix("sim:").and_then(|n| n.parse().ok()))
            .ok_or_else(|| bad_request("Invalid $skiptoken value."))
    }

    fn select(&self) -> Option<Vec<String>> {
        self.get("select").map(|s| {
            s.split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect()
        })
    }

    /// The same query with a new `$skiptoken`.
    fn next_link(&self, base_path: &str, skip: usize) -> String {
        let mut parts: Vec<String> = self
            .0
            .iter()
            .filter(|(k, _)| !k.trim_start_matches('$').eq_ignore_ascii_case("skiptoken"))
            .map(|(k, v)| format!("{k}={}", encode_query_value(v)))
            .collect();
        parts.push(format!(
            "$skiptoken={}",
            URL_SAFE.encode(format!("sim:{skip}"))
        ));
        format!("{base_path}?{}", parts.join("&"))
    }
}

/// Keeps `id` and the selected properties (and annotations) of an object.
fn apply_select(mut v: Value, select: &[String]) -> Value {
    if let Value::Object(m) = &mut v {
        m.retain(|k, _| {
            k == "id" || k.starts_with('@') || select.iter().any(|s| s.eq_ignore_ascii_case(k))
        });
    }
    v
}

/// How a collection pages.
struct Listing<'a> {
    default_size: usize,
    max: usize,
    /// The collection's URL (origin, version, path) for the nextLink.
    path: &'a str,
    /// The `$metadata#...` fragment.
    context: &'static str,
    /// Apply `$select` to the rendered objects (users apply it while rendering).
    generic_select: bool,
}

/// A page of a collection: `items` is the whole (already filtered) collection.
fn page<T>(items: &[T], q: &Query, l: &Listing<'_>, render: impl Fn(&T) -> Value) -> Reply {
    let (base_path, context) = (l.path, l.context);
    let size = match q.top(l.default_size, l.max) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let skip = match q.skip() {
        Ok(s) => s,
        Err(e) => return e,
    };
    let select = if l.generic_select { q.select() } else { None };
    let start = skip.min(items.len());
    let end = (start + size).min(items.len());
    let value: Vec<Value> = items[start..end]
        .iter()
        .map(|i| {
            let v = render(i);
            match &select {
                Some(s) => apply_select(v, s),
                None => v,
            }
        })
        .collect();
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(format!("{GRAPH_CONTEXT}#{context}")),
    );
    body.insert("value".into(), Value::Array(value));
    if end < items.len() {
        body.insert("@odata.nextLink".into(), json!(q.next_link(base_path, end)));
    }
    Reply::ok(Value::Object(body))
}

/// Runs one Graph request for `org`. `base` is origin + version prefix.
pub(crate) fn dispatch(
    sim: &Sim,
    org: Org,
    method: &Method,
    seg: &[String],
    query: &str,
    body: &[u8],
    base: &str,
) -> Reply {
    let kind = kind_of(seg);
    sim.stats.operation(kind);
    let q = match Query::parse(query) {
        Ok(q) => q,
        Err(e) => return e,
    };
    let path = format!("{base}/{}", seg.join("/"));
    let get_only = |r: Reply| {
        if *method == Method::GET {
            r
        } else {
            method_not_allowed()
        }
    };
    match kind {
        "graph:delegatedAdminRelationships" => get_only(relationships(sim, org, &q, &path)),
        "graph:delegatedAdminCustomers" => get_only(customers(sim, org, &q, &path)),
        "graph:domains" => get_only(domains(sim, org)),
        "graph:users" => get_only(users(sim, org, &q, &path)),
        "graph:user" => get_only(user(sim, org, &seg[1], &q)),
        "graph:messageRules" => get_only(rules(sim, org, &seg[1])),
        "graph:messageRule" => rule(sim, org, method, &seg[1], &seg[5], body),
        _ => bad_request(&format!(
            "Resource not found for the segment '{}'.",
            seg.first().map_or("", String::as_str)
        )),
    }
}

fn partner_only(org: Org) -> Result<(), Reply> {
    match org {
        Org::Partner => Ok(()),
        Org::Customer(_) => Err(graph_error(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        )),
    }
}

/// `status eq 'active'` → `Some("active")`; other filters are refused.
fn status_filter(q: &Query) -> Result<Option<String>, Reply> {
    let Some(f) = q.get("filter") else {
        return Ok(None);
    };
    let words: Vec<&str> = f.split_whitespace().collect();
    match words.as_slice() {
        [prop, op, value]
            if prop.eq_ignore_ascii_case("status")
                && op.eq_ignore_ascii_case("eq")
                && value.len() >= 2
                && value.starts_with('\'')
                && value.ends_with('\'') =>
        {
            Ok(Some(value[1..value.len() - 1].to_string()))
        }
        _ => Err(bad_request(&format!(
            "Invalid filter clause: '{f}' is not supported."
        ))),
    }
}

fn relationships(sim: &Sim, org: Org, q: &Query, path: &str) -> Reply {
    if let Err(e) = partner_only(org) {
        return e;
    }
    let status = match status_filter(q) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let items: Vec<(&TenantMeta, crate::model::Relationship)> = sim
        .fleet
        .tenants
        .iter()
        .enumerate()
        .flat_map(|(i, t)| {
            sim.fleet
                .relationships(i as u32)
                .into_iter()
                .map(move |r| (&t.meta, r))
        })
        .filter(|(_, r)| {
            status
                .as_deref()
                .is_none_or(|s| r.status.eq_ignore_ascii_case(s))
        })
        .collect();
    let listing = Listing {
        default_size: 100,
        max: 300,
        path,
        context: "tenantRelationships/delegatedAdminRelationships",
        generic_select: true,
    };
    page(&items, q, &listing, |(m, r)| {
        let active = r.status == "active";
        json!({
            "@odata.type": "#microsoft.graph.delegatedAdminRelationship",
            "id": r.id,
            "displayName": r.display_name,
            "duration": "P730D",
            "status": r.status,
            "autoExtendDuration": if active { "P180D" } else { "PT0S" },
            "createdDateTime": graph_date(r.created),
            "lastModifiedDateTime": graph_date(r.created + 3600),
            "activatedDateTime": if r.status == "approvalPending" { Value::Null } else { json!(graph_date(r.created + 600)) },
            "endDateTime": graph_date(r.end),
            "customer": {"tenantId": m.id, "displayName": m.display_name},
            "accessDetails": {"unifiedRoles": [
                {"roleDefinitionId": EXCHANGE_ADMIN_ROLE},
                {"roleDefinitionId": "88d8e3e3-8f55-4a1e-953a-9b9898b8876b"}
            ]},
        })
    })
}

fn customers(sim: &Sim, org: Org, q: &Query, path: &str) -> Reply {
    if let Err(e) = partner_only(org) {
        return e;
    }
    if q.get("filter").is_some() {
        return bad_request(
            "Invalid filter clause: filtering delegatedAdminCustomers is not supported by the simulator.",
        );
    }
    let items: Vec<&TenantMeta> = sim.fleet.tenants.iter().map(|t| &t.meta).collect();
    let listing = Listing {
        default_size: 100,
        max: 300,
        path,
        context: "tenantRelationships/delegatedAdminCustomers",
        generic_select: true,
    };
    page(&items, q, &listing, |m| {
        json!({
            "@odata.type": "#microsoft.graph.delegatedAdminCustomer",
            "@odata.etag": format!("W/\"{}\"", &m.id[..8]),
            "id": m.id,
            "tenantId": m.id,
            "displayName": m.display_name,
        })
    })
}

fn domains(sim: &Sim, org: Org) -> Reply {
    let Org::Customer(i) = org else {
        let d = &sim.fleet.partner.domain;
        return Reply::ok(
            json!({"@odata.context": format!("{GRAPH_CONTEXT}#domains"), "value": [domain_json(d, true, true, true, false)]}),
        );
    };
    let m = sim.fleet.meta(i);
    let mut value: Vec<Value> = m
        .domains
        .iter()
        .map(|d| {
            domain_json(
                &d.name,
                d.default,
                d.initial,
                true,
                d.kind == crate::model::DomainType::InternalRelay,
            )
        })
        .collect();
    if let Some(u) = &m.unverified_domain {
        value.push(domain_json(u, false, false, false, false));
    }
    Reply::ok(json!({"@odata.context": format!("{GRAPH_CONTEXT}#domains"), "value": value}))
}

fn domain_json(
    name: &str,
    default: bool,
    initial: bool,
    verified: bool,
    relay_only: bool,
) -> Value {
    let services: Vec<&str> = match (verified, relay_only) {
        (false, _) => Vec::new(),
        (true, true) => vec!["EmailInternalRelayOnly"],
        (true, false) => vec!["Email", "OfficeCommunicationsOnline"],
    };
    json!({
        "id": name,
        "authenticationType": "Managed",
        "availabilityStatus": Value::Null,
        "isAdminManaged": true,
        "isDefault": default,
        "isInitial": initial,
        "isRoot": !name.ends_with(".mail.onmicrosoft.com"),
        "isVerified": verified,
        "supportedServices": services,
        "passwordValidityPeriodInDays": 2147483647,
        "passwordNotificationWindowInDays": 14,
        "state": Value::Null,
    })
}

/// One Graph user: a mailbox owner, a mail user, or an unlicensed user.
enum UserRef {
    Mailbox(usize),
    MailUser(usize),
    Unlicensed(usize),
}

const USER_PROPS: &[&str] = &[
    "id",
    "userPrincipalName",
    "mail",
    "displayName",
    "accountEnabled",
    "userType",
    "givenName",
    "surname",
    "jobTitle",
    "businessPhones",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "mailNickname",
    "createdDateTime",
];
const USER_DEFAULT_PROPS: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
];

fn user_json(meta: &TenantMeta, st: &TenantState, u: &UserRef, select: Option<&[String]>) -> Value {
    let (id, upn, mail, display, enabled, user_type, nick): (
        u128,
        String,
        Value,
        String,
        bool,
        &str,
        String,
    ) = match *u {
        UserRef::Mailbox(i) => {
            let m = &st.mailboxes[i];
            let p = m.primary_smtp(meta);
            (
                m.object_id,
                p.clone(),
                json!(p),
                m.display_name.to_string(),
                m.kind == MailboxKind::User,
                "Member",
                m.alias.to_string(),
            )
        }
        UserRef::MailUser(i) => {
            let r = &st.mail_users[i];
            let guest = r.kind == crate::model::ExtKind::GuestMailUser;
            let upn = if guest {
                format!(
                    "{}#EXT#@{}",
                    r.external.replace('@', "_"),
                    meta.initial_domain
                )
            } else {
                r.primary_smtp(meta)
            };
            (
                r.object_id,
                upn,
                json!(r.external.to_string()),
                r.name.to_string(),
                true,
                if guest { "Guest" } else { "Member" },
                r.alias.to_string(),
            )
        }
        UserRef::Unlicensed(i) => {
            let (alias, id) = &st.users_without_mailbox[i];
            let upn = format!("{alias}@{}", meta.default_domain);
            (
                *id,
                upn,
                Value::Null,
                alias.replace('.', " "),
                true,
                "Member",
                alias.to_string(),
            )
        }
    };
    let (given, surname) = display
        .split_once(' ')
        .map_or((display.as_str(), ""), |(a, b)| (a, b));
    let all = json!({
        "id": guid_str(id),
        "userPrincipalName": upn,
        "mail": mail,
        "displayName": display,
        "accountEnabled": enabled,
        "userType": user_type,
        "givenName": given,
        "surname": surname,
        "jobTitle": Value::Null,
        "businessPhones": [],
        "mobilePhone": Value::Null,
        "officeLocation": Value::Null,
        "preferredLanguage": "en-US",
        "mailNickname": nick,
        "createdDateTime": graph_date(crate::names::EPOCH - (id % 900) as i64 * 86_400),
    });
    let keep: Vec<&str> = match select {
        Some(s) => USER_PROPS
            .iter()
            .copied()
            .filter(|p| s.iter().any(|x| x.eq_ignore_ascii_case(p)))
            .collect(),
        None => USER_DEFAULT_PROPS.to_vec(),
    };
    let mut out = Map::new();
    for k in keep {
        out.insert(k.to_string(), all[k].clone());
    }
    Value::Object(out)
}

fn check_select(q: &Query) -> Result<(), Reply> {
    for p in q.select().unwrap_or_default() {
        if !USER_PROPS.iter().any(|u| u.eq_ignore_ascii_case(&p)) {
            return Err(bad_request(&format!(
                "Could not find a property named '{p}' on type 'microsoft.graph.user'."
            )));
        }
    }
    Ok(())
}

fn users(sim: &Sim, org: Org, q: &Query, path: &str) -> Reply {
    if let Err(e) = check_select(q) {
        return e;
    }
    if q.get("filter").is_some() {
        return bad_request("Filtering users is not supported by the simulator.");
    }
    let listing = Listing {
        default_size: 100,
        max: 999,
        path,
        context: "users",
        generic_select: false,
    };
    let Org::Customer(i) = org else {
        return page(&[] as &[UserRef], q, &listing, |_| Value::Null);
    };
    let meta = sim.fleet.meta(i);
    let st = sim.fleet.state(i);
    let items: Vec<UserRef> = (0..st.mailboxes.len())
        .map(UserRef::Mailbox)
        .chain((0..st.mail_users.len()).map(UserRef::MailUser))
        .chain((0..st.users_without_mailbox.len()).map(UserRef::Unlicensed))
        .collect();
    let select = q.select();
    page(&items, q, &listing, |u| {
        user_json(meta, &st, u, select.as_deref())
    })
}

/// Finds a user by object id or UPN.
fn find_user(meta: &TenantMeta, st: &TenantState, key: &str) -> Option<UserRef> {
    if let Some(i) = st.mailboxes.iter().position(|m| {
        key.eq_ignore_ascii_case(&guid_str(m.object_id))
            || key.eq_ignore_ascii_case(&m.primary_smtp(meta))
    }) {
        return Some(UserRef::Mailbox(i));
    }
    if let Some(i) = st.mail_users.iter().position(|r| {
        key.eq_ignore_ascii_case(&guid_str(r.object_id))
            || key.eq_ignore_ascii_case(&r.primary_smtp(meta))
    }) {
        return Some(UserRef::MailUser(i));
    }
    st.users_without_mailbox
        .iter()
        .position(|(alias, id)| {
            key.eq_ignore_ascii_case(&guid_str(*id))
                || key.eq_ignore_ascii_case(&format!("{alias}@{}", meta.default_domain))
        })
        .map(UserRef::Unlicensed)
}

fn invalid_user(key: &str) -> Reply {
    graph_error(
        StatusCode::NOT_FOUND,
        "ErrorInvalidUser",
        &format!("The requested user '{key}' is invalid."),
    )
}

fn user(sim: &Sim, org: Org, key: &str, q: &Query) -> Reply {
    if let Err(e) = check_select(q) {
        return e;
    }
    let Org::Customer(i) = org else {
        return invalid_user(key);
    };
    let meta = sim.fleet.meta(i);
    let st = sim.fleet.state(i);
    match find_user(meta, &st, key) {
        Some(u) => {
            let mut v = user_json(meta, &st, &u, q.select().as_deref());
            if let Value::Object(m) = &mut v {
                m.insert(
                    "@odata.context".into(),
                    json!(format!("{GRAPH_CONTEXT}#users/$entity")),
                );
            }
            Reply::ok(v)
        }
        None => invalid_user(key),
    }
}

/// The mailbox of a user, or Graph's 404 for users without one.
fn mailbox_of(meta: &TenantMeta, st: &TenantState, key: &str) -> Result<usize, Reply> {
    match find_user(meta, st, key) {
        Some(UserRef::Mailbox(i)) => Ok(i),
        Some(_) => Err(graph_error(
            StatusCode::NOT_FOUND,
            "MailboxNotEnabledForRESTAPI",
            "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        )),
        None => Err(invalid_user(key)),
    }
}

/// The Graph id of an inbox rule: its RuleIdentity's bytes, base64.
pub(crate) fn rule_graph_id(rule_id: u64) -> String {
    URL_SAFE.encode(rule_id.to_be_bytes())
}

fn rule_id_of_graph(id: &str) -> Option<u64> {
    let padded = format!("{id}{}", "=".repeat((4 - id.len() % 4) % 4));
    let bytes = URL_SAFE.decode(padded).ok()?;
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

fn recipient_json(meta: &TenantMeta, st: &TenantState, t: &Target) -> Value {
    // Graph shows a recipient object by its address (a contact's is its external one).
    let address = match t {
        Target::Smtp { address, .. } => address.to_string(),
        Target::Recipient(r) => st.primary_smtp(meta, *r),
    };
    let name = match t {
        Target::Smtp { address, display } => display.as_deref().unwrap_or(address).to_string(),
        Target::Recipient(r) => st.display_name(*r).to_string(),
    };
    json!({"emailAddress": {"name": name, "address": address}})
}

fn rule_json(meta: &TenantMeta, st: &TenantState, r: &InboxRule) -> Value {
    let mut actions = Map::new();
    for (key, list) in [
        ("forwardTo", &r.forward_to),
        ("forwardAsAttachmentTo", &r.forward_as_attachment_to),
        ("redirectTo", &r.redirect_to),
    ] {
        if !list.is_empty() {
            actions.insert(
                key.into(),
                list.iter().map(|t| recipient_json(meta, st, t)).collect(),
            );
        }
    }
    if r.delete {
        actions.insert("delete".into(), json!(true));
    }
    if r.mark_read {
        actions.insert("markAsRead".into(), json!(true));
    }
    if let Some(f) = r.move_to {
        // Graph names folders by id; a stable fake id per folder name.
        actions.insert(
            "moveToFolder".into(),
            json!(format!("AQMkAD{}", URL_SAFE.encode(f))),
        );
    }
    if r.stop {
        actions.insert("stopProcessingRules".into(), json!(true));
    }
    let mut conditions = Map::new();
    if !r.subject_words.is_empty() {
        conditions.insert("subjectContains".into(), json!(r.subject_words));
    }
    json!({
        "id": rule_graph_id(r.id),
        "displayName": r.name,
        "sequence": r.priority,
        "isEnabled": r.enabled,
        "hasError": false,
        "isReadOnly": false,
        "conditions": conditions,
        "actions": actions,
    })
}

fn rules(sim: &Sim, org: Org, user: &str) -> Reply {
    let Org::Customer(i) = org else {
        return invalid_user(user);
    };
    let meta = sim.fleet.meta(i);
    let st = sim.fleet.state(i);
    let mb: &Mailbox = match mailbox_of(meta, &st, user) {
        Ok(m) => &st.mailboxes[m],
        Err(e) => return e,
    };
    // Graph lists Inbox rules only: hidden rules never show here.
    let value: Vec<Value> = mb
        .rules
        .iter()
        .filter(|r| !r.hidden)
        .map(|r| rule_json(meta, &st, r))
        .collect();
    Reply::ok(json!({
        "@odata.context": format!("{GRAPH_CONTEXT}#users('{user}')/mailFolders('inbox')/messageRules"),
        "value": value,
    }))
}

fn rule(sim: &Sim, org: Org, method: &Method, user: &str, id: &str, body: &[u8]) -> Reply {
    let Org::Customer(i) = org else {
        return invalid_user(user);
    };
    let meta = sim.fleet.meta(i);
    let mut st = sim.fleet.state(i);
    let m = match mailbox_of(meta, &st, user) {
        Ok(m) => m,
        Err(e) => return e,
    };
    let not_found = || {
        graph_error(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        )
    };
    let Some(rid) = rule_id_of_graph(id) else {
        return not_found();
    };
    let Some(pos) = st.mailboxes[m]
        .rules
        .iter()
        .position(|r| r.id == rid && !r.hidden)
    else {
        return not_found();
    };
    if *method == Method::GET {
        Reply::ok(rule_json(meta, &st, &st.mailboxes[m].rules[pos]))
    } else if *method == Method::PATCH {
        let Ok(Value::Object(patch)) = serde_json::from_slice::<Value>(body) else {
            return bad_request("Empty or invalid payload: a JSON object is expected.");
        };
        if let Some(v) = patch.get("isEnabled") {
            let Some(b) = v.as_bool() else {
                return bad_request("Cannot convert the literal to 'Edm.Boolean'.");
            };
            st.mailboxes[m].rules[pos].enabled = b;
        }
        if let Some(name) = patch.get("displayName").and_then(Value::as_str) {
            st.mailboxes[m].rules[pos].name = name.into();
        }
        st.mailboxes[m].when_changed = crate::token::now() as i64;
        Reply::ok(rule_json(meta, &st, &st.mailboxes[m].rules[pos]))
    } else if *method == Method::DELETE {
        st.mailboxes[m].rules.remove(pos);
        Reply::empty(StatusCode::NO_CONTENT)
    } else {
        method_not_allowed()
    }
}
