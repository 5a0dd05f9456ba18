//! The operator's console: `/console` on the actioner's port — same process, same
//! security headers, and every decision through the same executor as every other
//! channel.
//!
//! | route | what | who |
//! |---|---|---|
//! | `GET /console/` | Forwards: every open detection, filters by customer, severity, signal, address | operator |
//! | `GET /console/forwards/{fp}` | one forward, with Approve and Remove | operator |
//! | `GET /console/forwards/{fp}/approve\|remove` | confirmation (changes nothing) | operator |
//! | `POST /console/forwards/{fp}/approve\|remove` | acts: a `Command`, then its result | operator + anti-forgery token |
//! | `GET /console/tenants` | each tenant's coverage: checks, failures and their fix | operator |
//! | `GET /console/approvals`, `GET\|POST /console/approvals/{id}/revoke` | approvals; revoke | operator |
//! | `GET /console/audit` | every decision, with before/after evidence | operator |
//! | `GET /console/sign-in` | the only page an anonymous visitor sees | anyone |
//! | `GET /console/auth/start`, `GET /console/auth/callback` | Entra ID sign-in ([`oidc`]) | anyone |
//! | `GET\|POST /console/sign-in/{ticket}` | `fwdwatch up`'s one-time link ([`session::sign_in_link`]) | holder of the link |
//! | `POST /console/sign-out` | ends the session | operator + anti-forgery token |
//! | `GET /console/static/console.css` | the stylesheet | anyone |
//!
//! **Who may see it**: without a session every page redirects to the sign-in page
//! and every POST is refused. A session belongs to an operator: an Entra ID user
//! holding an operator group or app role (scoped to tenants like chat operators,
//! [`crate::authz::Authorizer::console_scope`]), or the holder of a one-time link.
//! Every page shows only the operator's tenants.
//!
//! **Acting**: Approve (reason, expiry), Remove and Revoke each have a confirmation
//! page (a GET, which changes nothing) whose form POSTs with the session's
//! anti-forgery token and a nonce. The POST publishes a [`Command`] issued by the
//! signed-in operator (channel `console`, command id `console-<nonce>`, so a double
//! submission executes once), and waits a few seconds for its result, as the signed
//! links do: authorisation, idempotency and audit are the executor's, as for every
//! channel.
//!
//! **Pages**: server-rendered ([`pages`], maud), no script, one served stylesheet,
//! `Content-Security-Policy: default-src 'none'; style-src 'self'; …`. Stored state
//! becomes rows in [`view`] only.

pub mod data;
mod oidc;
pub mod pages;
pub mod session;
pub mod view;

use std::collections::BTreeSet;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::Utc;
use maud::Markup;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use fwdwatch_shared::contracts::{Channel, Command, CommandAction, CommandType, Issuer, Signal};
use fwdwatch_shared::store::allowlist::Approval;

use crate::Context;
use pages::{ApprovalItem, ForwardFilter};
use session::{Cookies, NewSession, Session, SignInMethod};
use view::ForwardRow;

pub use oidc::{EntraSignIn, Identity, SignInError};
pub use session::sign_in_link;

/// How long an Entra ID sign-in may take between start and callback.
const AUTH_FLOW_TTL: Duration = Duration::from_secs(600);
/// Longest reason kept from a form.
const MAX_REASON: usize = 500;
/// Forwards shown per page (the filters narrow the rest).
const PAGE_ROWS: usize = 500;

/// The console's part of the actioner's shared context.
pub struct ConsoleState {
    pub entra: Option<EntraSignIn>,
    pub cookies: Cookies,
    pub public_url: String,
    pub session_ttl: Duration,
    /// Group ids and app role values that make an operator.
    operator_groups: BTreeSet<String>,
    operator_roles: BTreeSet<String>,
}

impl std::fmt::Debug for ConsoleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleState")
            .field("entra", &self.entra)
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

impl ConsoleState {
    pub fn from_settings(settings: &fwdwatch_shared::config::Settings) -> anyhow::Result<Self> {
        let public_url = settings.console_public_url();
        Ok(Self {
            entra: EntraSignIn::from_settings(settings)?,
            cookies: Cookies::new(&public_url),
            public_url,
            session_ttl: settings.console.session_ttl,
            operator_groups: settings
                .console
                .operator_groups
                .iter()
                .map(|g| g.trim().to_ascii_lowercase())
                .filter(|g| !g.is_empty())
                .collect(),
            operator_roles: settings
                .console
                .operator_roles
                .iter()
                .map(|r| r.trim().to_owned())
                .filter(|r| !r.is_empty())
                .collect(),
        })
    }

    /// The operator grants an identity holds (its operator groups and app roles),
    /// as `tenant_scopes` keys: group ids as configured, role values exactly.
    pub fn grants(&self, identity: &Identity) -> Vec<String> {
        let mut grants: Vec<String> = identity
            .groups
            .iter()
            .filter(|g| {
                self.operator_groups
                    .contains(&g.trim().to_ascii_lowercase())
            })
            .cloned()
            .collect();
        grants.extend(
            identity
                .roles
                .iter()
                .filter(|r| self.operator_roles.contains(r.as_str()))
                .cloned(),
        );
        grants
    }
}

/// The console's routes (merged into the actioner's router when enabled).
pub fn routes() -> Router<Context> {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(forwards))
        .route("/console/forwards/{fingerprint}", get(forward))
        .route(
            "/console/forwards/{fingerprint}/approve",
            get(confirm_approve).post(approve),
        )
        .route(
            "/console/forwards/{fingerprint}/remove",
            get(confirm_remove).post(remove),
        )
        .route("/console/tenants", get(tenants))
        .route("/console/approvals", get(approvals))
        .route(
            "/console/approvals/{id}/revoke",
            get(confirm_revoke).post(revoke),
        )
        .route("/console/audit", get(audit))
        .route("/console/sign-in", get(sign_in))
        .route(
            "/console/sign-in/{ticket}",
            get(ticket_page).post(use_ticket),
        )
        .route("/console/auth/start", get(auth_start))
        .route("/console/auth/callback", get(auth_callback))
        .route("/console/sign-out", post(sign_out))
        .route("/console/static/console.css", get(stylesheet))
        .route_layer(axum::middleware::map_response(console_headers))
}

/// The console's Content-Security-Policy: nothing but our own stylesheet, forms
/// that post to us, no framing. Its referrer policy is `same-origin` rather than the
/// actioner's `no-referrer`: under `no-referrer` a browser sends `Origin: null` with
/// a form POST, and the console tells its own forms from other sites' by `Origin`.
/// No console URL carries a secret past its own origin (the one-time link and the
/// sign-in callback are used up by then). (The actioner's other headers are added for
/// every route by `http::security_headers`, which keeps these two.)
async fn console_headers(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    response
}

fn html(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

fn problem(status: StatusCode, session: Option<&Session>, title: &str, message: &str) -> Response {
    html(status, pages::problem(session, title, message))
}

fn unavailable(session: Option<&Session>) -> Response {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        session,
        "Try again in a moment",
        "fwdwatch cannot read its state right now.",
    )
}

fn not_found(session: &Session) -> Response {
    problem(
        StatusCode::NOT_FOUND,
        Some(session),
        "Not found",
        "There is no such forward or approval (or it belongs to a tenant you do not look after).",
    )
}

/// A signed-in operator: the extractor every console page but sign-in uses. Without
/// a session, a GET is sent to the sign-in page and anything else is refused.
pub struct Operator(pub Session);

impl FromRequestParts<Context> for Operator {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        context: &Context,
    ) -> Result<Self, Self::Rejection> {
        let console = &context.console;
        match session::load(
            context.store.as_ref(),
            &context.keys,
            &console.cookies,
            &parts.headers,
            Utc::now(),
        )
        .await
        {
            Ok(Some(session)) => Ok(Operator(session)),
            Ok(None) if parts.method == Method::GET || parts.method == Method::HEAD => {
                Err(Redirect::to("/console/sign-in").into_response())
            }
            Ok(None) => Err(problem(
                StatusCode::FORBIDDEN,
                None,
                "Not signed in",
                "Sign in to the console first.",
            )),
            Err(error) => {
                tracing::error!(%error, "Cannot read console sessions.");
                Err(unavailable(None))
            }
        }
    }
}

/// The session's view of "may see this tenant", combined with any scope the
/// actioner's operator rules give the operator's own id.
fn visible(context: &Context, session: &Session, tenant: &str) -> bool {
    session.may_see(tenant)
        && context
            .authz
            .tenant(&session.operator.user_id, tenant)
            .is_ok()
}

fn valid_fingerprint(fp: &str) -> bool {
    !fp.is_empty()
        && fp.len() <= 128
        && fp
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

// ---- pages ----

#[derive(Debug, Default, Deserialize)]
struct FilterQuery {
    #[serde(default)]
    customer: String,
    #[serde(default)]
    severity: String,
    #[serde(default)]
    signal: String,
    #[serde(default)]
    q: String,
}

async fn forwards(
    State(context): State<Context>,
    Operator(session): Operator,
    Query(query): Query<FilterQuery>,
) -> Response {
    let open = match data::open_forwards(context.store.as_ref(), &context.keys, |t| {
        visible(&context, &session, t)
    })
    .await
    {
        Ok(open) => open,
        Err(error) => {
            tracing::error!(%error, "Cannot read open forwards.");
            return unavailable(Some(&session));
        }
    };
    let mut rows: Vec<ForwardRow> = open.iter().map(view::forward_row).collect();
    view::mark_campaigns(&mut rows);
    // Most severe first, then newest.
    rows.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.first_seen.cmp(&a.first_seen))
            .then(a.fingerprint.cmp(&b.fingerprint))
    });
    let total = rows.len();
    let mut customers: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.tenant_id.clone(), r.customer.clone()))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect();
    customers.sort_by_key(|(_, name)| name.to_lowercase());
    let needle = query.q.trim().to_lowercase();
    let filter = ForwardFilter {
        customer: query.customer.trim().to_owned(),
        severity: query.severity.trim().to_owned(),
        signal: query.signal.trim().to_owned(),
        q: query.q.trim().chars().take(200).collect(),
    };
    let shown: Vec<ForwardRow> = rows
        .into_iter()
        .filter(|r| filter.customer.is_empty() || r.tenant_id == filter.customer)
        .filter(|r| filter.severity.is_empty() || r.severity.as_str() == filter.severity)
        .filter(|r| filter.signal.is_empty() || r.signal.as_str() == filter.signal)
        .filter(|r| needle.is_empty() || r.mentions(&needle))
        .take(PAGE_ROWS)
        .collect();
    html(
        StatusCode::OK,
        pages::forwards(&session, &shown, total, &filter, &customers, &Signal::ALL),
    )
}

/// The open (or any) forward `fingerprint`, if this operator may see it.
async fn load_forward(
    context: &Context,
    session: &Session,
    fingerprint: &str,
) -> Result<ForwardRow, Response> {
    if !valid_fingerprint(fingerprint) {
        return Err(not_found(session));
    }
    match data::forward(context.store.as_ref(), &context.keys, fingerprint).await {
        Ok(Some(stored)) if visible(context, session, &stored.detection.tenant_id) => {
            let mut row = view::forward_row(&stored);
            // The campaign note needs the other open forwards: only the list has it.
            row.campaign = None;
            Ok(row)
        }
        Ok(_) => Err(not_found(session)),
        Err(error) => {
            tracing::error!(%error, "Cannot read a forward.");
            Err(unavailable(Some(session)))
        }
    }
}

async fn forward(
    State(context): State<Context>,
    Operator(session): Operator,
    Path(fingerprint): Path<String>,
) -> Response {
    match load_forward(&context, &session, &fingerprint).await {
        Ok(row) => {
            let open = row.state == data::STATE_OPEN;
            html(StatusCode::OK, pages::forward(&session, &row, open))
        }
        Err(response) => response,
    }
}

#[derive(Debug, Default, Deserialize)]
struct ApproveQuery {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    expires: String,
}

fn clean_reason(reason: &str) -> String {
    reason
        .trim()
        .chars()
        .filter(|c| !c.is_control() || *c == '\n')
        .take(MAX_REASON)
        .collect()
}

/// The approval's end for an expiry choice (`None`: until revoked); `Err` for a
/// value the form does not offer.
fn expiry(choice: &str) -> Result<Option<chrono::DateTime<Utc>>, ()> {
    if !pages::EXPIRY_CHOICES.iter().any(|(v, _)| *v == choice) {
        return Err(());
    }
    if choice == "never" {
        return Ok(None);
    }
    let duration = humantime::parse_duration(choice).map_err(|_| ())?;
    let duration = chrono::Duration::from_std(duration).map_err(|_| ())?;
    Ok(Some(Utc::now() + duration))
}

async fn confirm_approve(
    State(context): State<Context>,
    Operator(session): Operator,
    Path(fingerprint): Path<String>,
    Query(query): Query<ApproveQuery>,
) -> Response {
    let row = match load_forward(&context, &session, &fingerprint).await {
        Ok(row) => row,
        Err(response) => return response,
    };
    let reason = clean_reason(&query.reason);
    if reason.is_empty() {
        return problem(
            StatusCode::BAD_REQUEST,
            Some(&session),
            "Give a reason",
            "An approval needs a reason: it is kept in the audit trail.",
        );
    }
    let Ok(expires_at) = expiry(&query.expires) else {
        return problem(
            StatusCode::BAD_REQUEST,
            Some(&session),
            "Choose an expiry",
            "Choose how long the approval lasts from the list.",
        );
    };
    let nonce = uuid::Uuid::new_v4().to_string();
    html(
        StatusCode::OK,
        pages::confirm_approve(&session, &row, &reason, &query.expires, expires_at, &nonce),
    )
}

async fn confirm_remove(
    State(context): State<Context>,
    Operator(session): Operator,
    Path(fingerprint): Path<String>,
) -> Response {
    match load_forward(&context, &session, &fingerprint).await {
        Ok(row) => {
            let nonce = uuid::Uuid::new_v4().to_string();
            html(
                StatusCode::OK,
                pages::confirm_remove(&session, &row, &nonce),
            )
        }
        Err(response) => response,
    }
}

/// The fields of every acting form.
#[derive(Debug, Default, Deserialize)]
struct ActForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    nonce: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    expires: String,
}

/// Parses an acting POST and checks it came from this session's own page.
fn checked_form(
    context: &Context,
    session: &Session,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(ActForm, uuid::Uuid), Box<Response>> {
    let form: ActForm = serde_urlencoded::from_bytes(body).unwrap_or_default();
    if let Err(forgery) =
        session::check_post(headers, &context.console.public_url, session, &form.csrf)
    {
        tracing::warn!(reason = %forgery, operator = %session.operator.user_id, "Refused a console POST.");
        return Err(Box::new(problem(
            StatusCode::FORBIDDEN,
            Some(session),
            "Refused",
            &format!(
                "This request was refused: {forgery}. Open the page again and use its button."
            ),
        )));
    }
    let Ok(nonce) = uuid::Uuid::parse_str(form.nonce.trim()) else {
        return Err(Box::new(problem(
            StatusCode::BAD_REQUEST,
            Some(session),
            "Refused",
            "The form is incomplete. Open the page again and use its button.",
        )));
    };
    Ok((form, nonce))
}

fn command_for(
    session: &Session,
    action: CommandAction,
    nonce: uuid::Uuid,
    row: &ForwardRow,
) -> Command {
    Command {
        kind: CommandType::Tag,
        version: 1,
        command_id: format!("console-{nonce}"),
        action,
        issued_by: session.operator.clone(),
        issued_at: Utc::now(),
        tenant_id: row.tenant_id.clone(),
        mailbox: row.mailbox.clone(),
        fingerprint: row.fingerprint.clone(),
        signal: Some(row.signal),
        // No target: approve every target of the forward the operator saw; remove
        // the forward itself.
        target: None,
        rule_id: row.rule_id.clone(),
        reason: None,
        expires_at: None,
        reply_to: None,
    }
}

/// Publishes `command` and shows what came of it (or that it is under way).
async fn run(
    context: &Context,
    session: &Session,
    command: Command,
    back: (&str, &str),
) -> Response {
    if let Err(denied) = context
        .authz
        .tenant(&session.operator.user_id, &command.tenant_id)
    {
        return problem(
            StatusCode::FORBIDDEN,
            Some(session),
            "Not allowed",
            &denied.to_string(),
        );
    }
    if let Err(error) = context.publish_command(&command).await {
        tracing::error!(%error, "Could not publish a console decision.");
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(session),
            "Try again in a moment",
            "fwdwatch cannot take decisions right now.",
        );
    }
    tracing::info!(command_id = %command.command_id, action = command.action.as_str(), operator = %session.operator.user_id, "Console decision accepted.");
    let result = crate::http::wait_for_result(context, &command.command_id).await;
    let status = if result.is_some() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    html(status, pages::result(session, result.as_ref(), back))
}

async fn approve(
    State(context): State<Context>,
    Operator(session): Operator,
    Path(fingerprint): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (form, nonce) = match checked_form(&context, &session, &headers, &body) {
        Ok(checked) => checked,
        Err(response) => return *response,
    };
    let row = match load_forward(&context, &session, &fingerprint).await {
        Ok(row) => row,
        Err(response) => return response,
    };
    let reason = clean_reason(&form.reason);
    let Ok(expires_at) = expiry(&form.expires) else {
        return problem(
            StatusCode::BAD_REQUEST,
            Some(&session),
            "Choose an expiry",
            "Choose how long the approval lasts from the list.",
        );
    };
    let mut command = command_for(&session, CommandAction::Approve, nonce, &row);
    command.reason = Some(reason).filter(|r| !r.is_empty());
    command.expires_at = expires_at;
    run(
        &context,
        &session,
        command,
        ("/console/approvals", "See the approvals"),
    )
    .await
}

async fn remove(
    State(context): State<Context>,
    Operator(session): Operator,
    Path(fingerprint): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (form, nonce) = match checked_form(&context, &session, &headers, &body) {
        Ok(checked) => checked,
        Err(response) => return *response,
    };
    let row = match load_forward(&context, &session, &fingerprint).await {
        Ok(row) => row,
        Err(response) => return response,
    };
    let mut command = command_for(&session, CommandAction::Remove, nonce, &row);
    command.reason = Some(clean_reason(&form.reason)).filter(|r| !r.is_empty());
    run(
        &context,
        &session,
        command,
        ("/console/", "Back to the forwards"),
    )
    .await
}

async fn tenants(State(context): State<Context>, Operator(session): Operator) -> Response {
    match data::tenants(context.store.as_ref(), &context.keys, |t| {
        visible(&context, &session, t)
    })
    .await
    {
        Ok(records) => {
            let rows: Vec<_> = records.iter().map(view::tenant_row).collect();
            html(StatusCode::OK, pages::tenants(&session, &rows))
        }
        Err(error) => {
            tracing::error!(%error, "Cannot read tenant summaries.");
            unavailable(Some(&session))
        }
    }
}

/// Customer names by tenant id, from the tenants' latest scans.
async fn customer_names(context: &Context) -> std::collections::BTreeMap<String, String> {
    match fwdwatch_shared::store::tenants::list(context.store.as_ref(), &context.keys).await {
        Ok(records) => records
            .into_iter()
            .map(|r| (r.summary.tenant.id, r.summary.tenant.display_name))
            .collect(),
        Err(error) => {
            tracing::warn!(%error, "Cannot read customer names; showing tenant ids.");
            Default::default()
        }
    }
}

fn name_of(names: &std::collections::BTreeMap<String, String>, tenant: &str) -> String {
    names
        .get(tenant)
        .filter(|n| !n.trim().is_empty())
        .cloned()
        .unwrap_or_else(|| tenant.to_owned())
}

async fn load_approvals(context: &Context, session: &Session) -> Result<Vec<Approval>, Response> {
    data::approvals(context.store.as_ref(), &context.keys, |t| {
        visible(context, session, t)
    })
    .await
    .map_err(|error| {
        tracing::error!(%error, "Cannot read the allowlist.");
        unavailable(Some(session))
    })
}

async fn approvals(State(context): State<Context>, Operator(session): Operator) -> Response {
    let approvals = match load_approvals(&context, &session).await {
        Ok(approvals) => approvals,
        Err(response) => return response,
    };
    let names = customer_names(&context).await;
    let items: Vec<ApprovalItem<'_>> = approvals
        .iter()
        .map(|a| ApprovalItem {
            approval: a,
            id: data::approval_id(a, &context.keys),
            customer: name_of(&names, &a.tenant_id),
        })
        .collect();
    html(StatusCode::OK, pages::approvals(&session, &items))
}

async fn find_approval(
    context: &Context,
    session: &Session,
    id: &str,
) -> Result<Approval, Response> {
    let approvals = load_approvals(context, session).await?;
    approvals
        .into_iter()
        .find(|a| data::approval_id(a, &context.keys) == id)
        .ok_or_else(|| not_found(session))
}

async fn confirm_revoke(
    State(context): State<Context>,
    Operator(session): Operator,
    Path(id): Path<String>,
) -> Response {
    let approval = match find_approval(&context, &session, &id).await {
        Ok(approval) => approval,
        Err(response) => return response,
    };
    let names = customer_names(&context).await;
    let item = ApprovalItem {
        customer: name_of(&names, &approval.tenant_id),
        id,
        approval: &approval,
    };
    let nonce = uuid::Uuid::new_v4().to_string();
    html(
        StatusCode::OK,
        pages::confirm_revoke(&session, &item, &nonce),
    )
}

/// The fingerprint an approval was made for, from its command's stored result
/// (kept a week); the executor needs none when the command names signal and target.
async fn approval_fingerprint(context: &Context, approval: &Approval) -> String {
    if let Some(command_id) = &approval.command_id
        && let Ok(Some(json)) = context
            .store
            .get(&context.keys.command_result(command_id))
            .await
        && let Ok(result) = serde_json::from_str::<fwdwatch_shared::contracts::CommandResult>(&json)
        && !result.fingerprint.is_empty()
    {
        return result.fingerprint;
    }
    "unknown".to_owned()
}

async fn revoke(
    State(context): State<Context>,
    Operator(session): Operator,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (_, nonce) = match checked_form(&context, &session, &headers, &body) {
        Ok(checked) => checked,
        Err(response) => return *response,
    };
    let approval = match find_approval(&context, &session, &id).await {
        Ok(approval) => approval,
        Err(response) => return response,
    };
    let command = Command {
        kind: CommandType::Tag,
        version: 1,
        command_id: format!("console-{nonce}"),
        action: CommandAction::RevokeApproval,
        issued_by: session.operator.clone(),
        issued_at: Utc::now(),
        tenant_id: approval.tenant_id.clone(),
        mailbox: approval.mailbox.clone(),
        fingerprint: approval_fingerprint(&context, &approval).await,
        signal: Some(approval.signal),
        target: Some(approval.target.clone()),
        rule_id: None,
        reason: None,
        expires_at: None,
        reply_to: None,
    };
    run(
        &context,
        &session,
        command,
        ("/console/approvals", "Back to the approvals"),
    )
    .await
}

async fn audit(State(context): State<Context>, Operator(session): Operator) -> Response {
    let events = match data::audit_events(context.store.as_ref(), &context.keys, |t| {
        visible(&context, &session, t)
    })
    .await
    {
        Ok(events) => events,
        Err(error) => {
            tracing::error!(%error, "Cannot read the audit trail.");
            return unavailable(Some(&session));
        }
    };
    let names = customer_names(&context).await;
    html(
        StatusCode::OK,
        pages::audit(&session, &events, |t| name_of(&names, t)),
    )
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            // `security_headers` marks everything no-store; a stylesheet is harmless.
        ],
        pages::STYLESHEET,
    )
        .into_response()
}

// ---- signing in and out ----

async fn sign_in(State(context): State<Context>) -> Response {
    html(
        StatusCode::OK,
        pages::sign_in(context.console.entra.is_some(), None),
    )
}

fn valid_secret(secret: &str) -> bool {
    !secret.is_empty()
        && secret.len() <= 64
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

async fn ticket_page(State(context): State<Context>, Path(ticket): Path<String>) -> Response {
    let valid = valid_secret(&ticket)
        && match session::ticket_exists(context.store.as_ref(), &context.keys, &ticket).await {
            Ok(exists) => exists,
            Err(error) => {
                tracing::error!(%error, "Cannot check a sign-in link.");
                return unavailable(None);
            }
        };
    let status = if valid {
        StatusCode::OK
    } else {
        StatusCode::GONE
    };
    html(status, pages::ticket(valid))
}

fn with_cookie(mut response: Response, cookie: HeaderValue) -> Response {
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

async fn use_ticket(
    State(context): State<Context>,
    Path(ticket): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(forgery) = session::check_origin(&headers, &context.console.public_url) {
        tracing::warn!(reason = %forgery, "Refused a sign-in link POST.");
        return problem(StatusCode::FORBIDDEN, None, "Refused", &forgery.to_string());
    }
    if !valid_secret(&ticket) {
        return html(StatusCode::GONE, pages::ticket(false));
    }
    let new = match session::take_ticket(context.store.as_ref(), &context.keys, &ticket).await {
        Ok(Some(new)) => new,
        Ok(None) => return html(StatusCode::GONE, pages::ticket(false)),
        Err(error) => {
            tracing::error!(%error, "Cannot use a sign-in link.");
            return unavailable(None);
        }
    };
    start_session(&context, new, Redirect::to("/console/").into_response()).await
}

/// Creates the session and sets its cookie on `response`.
async fn start_session(context: &Context, new: NewSession, response: Response) -> Response {
    let who = new.operator.user_id.clone();
    let method = new.method;
    match session::create(
        context.store.as_ref(),
        &context.keys,
        context.console.session_ttl,
        new,
        Utc::now(),
    )
    .await
    {
        Ok((id, _)) => {
            tracing::info!(operator = %who, method = ?method, "Console sign-in.");
            with_cookie(
                response,
                context
                    .console
                    .cookies
                    .session(&id, context.console.session_ttl),
            )
        }
        Err(error) => {
            tracing::error!(%error, "Cannot store a console session.");
            unavailable(None)
        }
    }
}

async fn auth_start(State(context): State<Context>) -> Response {
    let Some(entra) = &context.console.entra else {
        return problem(
            StatusCode::NOT_FOUND,
            None,
            "Not configured",
            "Sign-in with Microsoft Entra ID is not configured (console.client_id).",
        );
    };
    let (flow, state, url) = match entra.start().await {
        Ok(started) => started,
        Err(error) => {
            tracing::warn!(%error, "Cannot start an Entra ID sign-in.");
            return html(
                StatusCode::BAD_GATEWAY,
                pages::sign_in(true, Some(&error.to_string())),
            );
        }
    };
    let json = match serde_json::to_string(&flow) {
        Ok(json) => json,
        Err(_) => return unavailable(None),
    };
    if let Err(error) = context
        .store
        .set(
            &context.keys.console_auth(&session::digest(&state)),
            &json,
            Some(AUTH_FLOW_TTL),
        )
        .await
    {
        tracing::error!(%error, "Cannot store an Entra ID sign-in in progress.");
        return unavailable(None);
    }
    with_cookie(
        Redirect::to(&url).into_response(),
        context.console.cookies.auth(&state, AUTH_FLOW_TTL),
    )
}

#[derive(Debug, Default, Deserialize)]
struct CallbackQuery {
    #[serde(default)]
    code: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

async fn auth_callback(
    State(context): State<Context>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let console = &context.console;
    let Some(entra) = &console.entra else {
        return problem(
            StatusCode::NOT_FOUND,
            None,
            "Not configured",
            "Sign-in with Microsoft Entra ID is not configured.",
        );
    };
    let refuse = |status: StatusCode, why: &str| {
        with_cookie(
            html(status, pages::sign_in(true, Some(why))),
            console.cookies.clear_auth(),
        )
    };
    if !query.error.is_empty() {
        // Anyone can craft this URL: show a short, plain excerpt only.
        let description: String = query
            .error_description
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect();
        let error: String = query.error.chars().take(60).collect();
        return refuse(
            StatusCode::UNAUTHORIZED,
            &format!("Microsoft Entra ID did not sign you in: {error} {description}"),
        );
    }
    // The sign-in must have started in this browser (no login CSRF).
    let bound = session::cookie(&headers, console.cookies.auth_name()).unwrap_or("");
    if query.state.is_empty() || !bool::from(bound.as_bytes().ct_eq(query.state.as_bytes())) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "This sign-in did not start in this browser (or took too long). Please sign in again.",
        );
    }
    let key = context.keys.console_auth(&session::digest(&query.state));
    let flow = match context.store.get(&key).await {
        Ok(Some(json)) => match context.store.delete(&key).await {
            Ok(true) => serde_json::from_str::<oidc::Flow>(&json).ok(),
            Ok(false) => None,
            Err(error) => {
                tracing::error!(%error, "Cannot finish an Entra ID sign-in.");
                return unavailable(None);
            }
        },
        Ok(None) => None,
        Err(error) => {
            tracing::error!(%error, "Cannot finish an Entra ID sign-in.");
            return unavailable(None);
        }
    };
    let Some(flow) = flow else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "This sign-in expired or was already used. Please sign in again.",
        );
    };
    let identity = match entra.finish(&query.code, &flow).await {
        Ok(identity) => identity,
        Err(error) => {
            tracing::warn!(%error, "An Entra ID sign-in failed.");
            return refuse(StatusCode::UNAUTHORIZED, &error.to_string());
        }
    };
    let scope = match context
        .authz
        .console_scope(&identity.object_id, &console.grants(&identity))
    {
        Ok(scope) => scope,
        Err(denied) => {
            tracing::info!(operator = %identity.object_id, username = %identity.username, "Refused a console sign-in: not an operator.");
            return refuse(
                StatusCode::FORBIDDEN,
                &format!(
                    "You signed in as {}, who is not a fwdwatch operator. {}",
                    if identity.username.is_empty() {
                        &identity.name
                    } else {
                        &identity.username
                    },
                    capitalised(&denied.to_string())
                ),
            );
        }
    };
    let new = NewSession {
        operator: Issuer {
            channel: Channel::Console,
            user_id: identity.object_id.clone(),
            name: identity.name.clone(),
        },
        username: identity.username.clone(),
        scope,
        method: SignInMethod::EntraId,
    };
    let response = with_cookie(
        html(StatusCode::OK, pages::signed_in(&identity.name)),
        console.cookies.clear_auth(),
    );
    start_session(&context, new, response).await
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect::<String>() + ".",
        None => String::new(),
    }
}

#[derive(Debug, Default, Deserialize)]
struct SignOutForm {
    #[serde(default)]
    csrf: String,
}

async fn sign_out(
    State(context): State<Context>,
    Operator(session): Operator,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: SignOutForm = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    if let Err(forgery) =
        session::check_post(&headers, &context.console.public_url, &session, &form.csrf)
    {
        return problem(
            StatusCode::FORBIDDEN,
            Some(&session),
            "Refused",
            &forgery.to_string(),
        );
    }
    if let Err(error) = session::destroy(
        context.store.as_ref(),
        &context.keys,
        &context.console.cookies,
        &headers,
    )
    .await
    {
        tracing::error!(%error, "Cannot end a console session.");
        return unavailable(Some(&session));
    }
    with_cookie(
        Redirect::to("/console/sign-in").into_response(),
        context.console.cookies.clear_session(),
    )
}
