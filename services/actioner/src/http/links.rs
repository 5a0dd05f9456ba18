//! `/act/{token}`: the signed approve / remove links of Teams cards, e-mails and
//! any chat that can show a URL.
//!
//! **A GET never acts.** Mail and chat link scanners (Safe Links, Proofpoint,
//! Mimecast…) open every URL before the person does; had the GET acted, a scanner
//! would approve or remove forwards on its own, and a one-time token would be used
//! up before the human saw it. So `GET` (and `HEAD`) only verifies the token and
//! shows what it would do — tenant, mailbox, target, action, expiry — with a button
//! that POSTs back to the same address. Only that POST acts:
//!
//! 1. the token verifies (HMAC, constant time) and has not expired — else 400 / 401 / 410;
//! 2. it is a link token, not a Slack button's (those are authorised per Slack user:
//!    a channel member who read the button value must not get around that) — else 403;
//! 3. the form confirms the token's own action — else 400;
//! 4. the holder's channel is within its tenant scope — else 403;
//! 5. its nonce is claimed (`SET NX`, TTL until the token expires): used once — else
//!    409, **once a result exists**. A link whose command was interrupted (the
//!    actioner died before it finished) works again until then: the same command
//!    (`link-<nonce>`) is published again, and the executor runs it once.
//!
//! Then the command (`link-<nonce>`) is published and the page waits a few seconds
//! for its result, so the person usually sees the outcome right away; a GET on a
//! used link shows the stored result.

use std::time::Duration;

use std::net::SocketAddr;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;

use fwdwatch_shared::contracts::{
    Channel, Command, CommandOutcome, CommandResult, CommandType, Issuer,
};
use fwdwatch_shared::links::{ActionClaims, TokenError};

use crate::Context;
use crate::audit::Subject;

/// How long a POST waits for the executor before answering "in progress".
const RESULT_WAIT: Duration = Duration::from_secs(8);
const RESULT_POLL: Duration = Duration::from_millis(100);
/// Longest reason kept from the form.
const MAX_REASON: usize = 500;

/// Where a token was issued for Slack buttons; such tokens are refused here.
const SLACK_CHANNEL: &str = "slack";

#[derive(Debug, Default, Deserialize)]
struct ActForm {
    #[serde(default)]
    confirm: String,
    #[serde(default)]
    reason: String,
}

/// The identity a link acts as: whoever holds a link sent to that channel.
fn issuer(claims: &ActionClaims) -> Issuer {
    let channel = if claims.channel.is_empty() {
        "unknown"
    } else {
        claims.channel.as_str()
    };
    Issuer {
        channel: Channel::Link,
        user_id: format!("link@{channel}"),
        name: format!("holder of a signed link sent to {channel}"),
    }
}

fn command_id(claims: &ActionClaims) -> String {
    format!("link-{}", claims.nonce)
}

fn subject(claims: &ActionClaims) -> Subject {
    Subject {
        action: Some(claims.action),
        tenant_id: claims.tenant_id.clone(),
        mailbox: Some(claims.mailbox.clone()),
        fingerprint: Some(claims.fingerprint.clone()),
        target: Some(claims.target.clone()),
    }
}

fn token_refusal(error: &TokenError) -> Response {
    let (status, title) = match error {
        TokenError::Malformed => (StatusCode::BAD_REQUEST, "This link is not valid"),
        TokenError::BadSignature => (StatusCode::UNAUTHORIZED, "This link is not valid"),
        TokenError::Expired(_) => (StatusCode::GONE, "This link has expired"),
    };
    page(
        status,
        title,
        &format!(
            "<p>{}.</p><p>Nothing was changed. Use the newest alert about this forward, or the fwdwatch CLI.</p>",
            escape(&capitalise(&error.to_string()))
        ),
    )
}

fn slack_token_refusal() -> Response {
    page(
        StatusCode::FORBIDDEN,
        "Use the button in Slack",
        "<p>This token belongs to a Slack button, where fwdwatch checks who clicked. It cannot be used as a link.</p><p>Nothing was changed.</p>",
    )
}

/// `GET|HEAD /act/{token}`: shows what the link would do. Changes nothing.
pub(super) async fn show(State(context): State<Context>, Path(token): Path<String>) -> Response {
    let claims = match context.signer.verify(&token, Utc::now()) {
        Ok(claims) => claims,
        Err(error) => return token_refusal(&error),
    };
    if claims.channel == SLACK_CHANNEL {
        return slack_token_refusal();
    }
    // Read-only look at the nonce: a used link shows what came of it.
    match context
        .store
        .exists(&context.keys.link_nonce(&claims.nonce))
        .await
    {
        // Used, with a result: show it. Used without one: interrupted (or still
        // running) — the link still works.
        Ok(true)
            if stored_result(&context, &command_id(&claims))
                .await
                .is_some() =>
        {
            return used(&context, &claims).await;
        }
        Ok(_) => {}
        Err(error) => {
            tracing::error!(%error, "Cannot check a link's nonce.");
            return unavailable();
        }
    }
    page(
        StatusCode::OK,
        &confirm_title(&claims),
        &confirmation(&claims),
    )
}

/// `POST /act/{token}`: acts, once.
pub(super) async fn act(
    State(context): State<Context>,
    Path(token): Path<String>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Bytes,
) -> Response {
    let now = Utc::now();
    let client = client.map(|Extension(ConnectInfo(addr))| addr.ip());
    // Every refusal counts against the token and the client address; past the
    // limit the answer is a bare 429 and nothing is recorded.
    let limited = || !context.limits.refusal(&token, client);
    let claims = match context.signer.verify(&token, now) {
        Ok(claims) => claims,
        Err(_) if limited() => return too_many(),
        Err(error) => {
            if let TokenError::Expired(_) = error {
                // Correctly signed, so it says what was attempted: worth an audit line.
                if let Some(claims) = expired_claims(&token) {
                    context
                        .auditor
                        .refused(
                            issuer(&claims),
                            subject(&claims),
                            format!("link refused: {error}"),
                        )
                        .await;
                }
            } else {
                tracing::warn!(%error, "Refused a link that does not verify.");
            }
            return token_refusal(&error);
        }
    };
    if claims.channel == SLACK_CHANNEL {
        if limited() {
            return too_many();
        }
        context
            .auditor
            .refused(
                issuer(&claims),
                subject(&claims),
                "a Slack button token was used as a link",
            )
            .await;
        return slack_token_refusal();
    }
    let form: ActForm = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    if form.confirm != claims.action.as_str() {
        return page(
            StatusCode::BAD_REQUEST,
            "Please confirm on the page",
            "<p>Open <a href=\"\">this link</a> in a browser and use its button to confirm.</p><p>Nothing was changed.</p>",
        );
    }
    let who = issuer(&claims);
    if let Err(denied) = context.authz.tenant(&who.user_id, &claims.tenant_id) {
        if limited() {
            return too_many();
        }
        context
            .auditor
            .refused(who, subject(&claims), denied.to_string())
            .await;
        return page(
            StatusCode::FORBIDDEN,
            "Not allowed",
            &format!(
                "<p>{}.</p><p>Nothing was changed.</p>",
                escape(&denied.to_string())
            ),
        );
    }

    // Single use: the first POST takes the nonce until the token would expire anyway.
    let nonce_key = context.keys.link_nonce(&claims.nonce);
    let remaining = claims
        .expires_at()
        .map(|exp| (exp - now).to_std().unwrap_or(Duration::from_secs(1)))
        .unwrap_or(Duration::from_secs(1))
        .max(Duration::from_secs(1));
    match context.store.claim(&nonce_key, remaining).await {
        Ok(true) => {}
        Ok(false)
            if stored_result(&context, &command_id(&claims))
                .await
                .is_some() =>
        {
            if limited() {
                return too_many();
            }
            context
                .auditor
                .refused(who, subject(&claims), "link already used")
                .await;
            return used(&context, &claims).await;
        }
        Ok(false) => {
            // Used, but no result: the first attempt was interrupted (or is still
            // running). Publishing the same command again is safe — the executor
            // runs one command id once — and finishes what was started.
            tracing::warn!(command_id = %command_id(&claims), "A link was used before without a result; sending its command again.");
        }
        Err(error) => {
            tracing::error!(%error, "Cannot claim a link's nonce.");
            return unavailable();
        }
    }

    let reason: String = form.reason.trim().chars().take(MAX_REASON).collect();
    let command = Command {
        kind: CommandType::Tag,
        version: 1,
        command_id: command_id(&claims),
        action: claims.action,
        issued_by: who,
        issued_at: now,
        tenant_id: claims.tenant_id.clone(),
        mailbox: Some(claims.mailbox.clone()).filter(|m| !m.is_empty()),
        fingerprint: claims.fingerprint.clone(),
        signal: Some(claims.signal),
        target: Some(claims.target.clone()).filter(|t| !t.is_empty()),
        rule_id: claims.rule_id.clone(),
        reason: Some(reason).filter(|r| !r.is_empty()),
        expires_at: None,
        reply_to: None,
    };
    if let Err(error) = context.publish_command(&command).await {
        tracing::error!(%error, "Could not publish a link decision.");
        // Not acted on: give the link back so the person can try again.
        if let Err(error) = context.store.release(&nonce_key).await {
            tracing::warn!(%error, "Could not release a link's nonce.");
        }
        return unavailable();
    }
    tracing::info!(command_id = %command.command_id, action = command.action.as_str(), "Link decision accepted.");

    match wait_for_result(&context, &command.command_id).await {
        Some(result) => page(
            StatusCode::OK,
            &result_title(&result),
            &result_body(&claims, &result),
        ),
        None => page(
            StatusCode::ACCEPTED,
            "Decision received",
            &format!(
                "<p>Your decision to {} is being carried out.</p><p>Open this link again in a minute to see the result.</p>",
                escape(&describe(&claims))
            ),
        ),
    }
}

/// The claims of an expired but correctly signed token (for the audit).
fn expired_claims(token: &str) -> Option<ActionClaims> {
    use base64::Engine as _;
    // Only called after `verify` said "expired", which it says only once the
    // signature checked out: the payload is ours.
    let (payload, _) = token.trim().split_once('.')?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

async fn stored_result(context: &Context, command_id: &str) -> Option<CommandResult> {
    match context
        .store
        .get(&context.keys.command_result(command_id))
        .await
    {
        Ok(Some(json)) => serde_json::from_str(&json).ok(),
        Ok(None) => None,
        Err(error) => {
            tracing::warn!(%error, "Cannot read a command result.");
            None
        }
    }
}

/// Waits a few seconds for the executor's result of `command_id` (links and the console).
pub(crate) async fn wait_for_result(context: &Context, command_id: &str) -> Option<CommandResult> {
    let deadline = tokio::time::Instant::now() + RESULT_WAIT;
    loop {
        if let Some(result) = stored_result(context, command_id).await {
            return Some(result);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(RESULT_POLL).await;
    }
}

async fn used(context: &Context, claims: &ActionClaims) -> Response {
    let outcome = match stored_result(context, &command_id(claims)).await {
        Some(result) => result_body(claims, &result),
        None => "<p>Its result is not known yet (or no longer kept).</p>".to_owned(),
    };
    page(
        StatusCode::CONFLICT,
        "This link was already used",
        &format!("<p>Each link acts once. Nothing was done this time.</p>{outcome}"),
    )
}

fn too_many() -> Response {
    let mut response = page(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many refused attempts",
        "<p>This link (or this address) was refused too often. Nothing was changed. Wait a minute, or use the newest alert.</p>",
    );
    response.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("60"),
    );
    response
}

fn unavailable() -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Try again in a moment",
        "<p>fwdwatch cannot take decisions right now. Nothing was changed; the link still works.</p>",
    )
}

fn describe(claims: &ActionClaims) -> String {
    let verb = match claims.action {
        fwdwatch_shared::contracts::CommandAction::Approve => "approve",
        fwdwatch_shared::contracts::CommandAction::Remove => "remove",
        fwdwatch_shared::contracts::CommandAction::RevokeApproval => "revoke the approval of",
    };
    if claims.mailbox.is_empty() {
        format!("{verb} the transport rule forwarding to {}", claims.target)
    } else {
        format!(
            "{verb} the forward from {} to {}",
            claims.mailbox, claims.target
        )
    }
}

fn confirm_title(claims: &ActionClaims) -> String {
    capitalise(&describe(claims)) + "?"
}

fn confirmation(claims: &ActionClaims) -> String {
    let expires = claims
        .expires_at()
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default();
    let button = match claims.action {
        fwdwatch_shared::contracts::CommandAction::Approve => "Approve this forward",
        fwdwatch_shared::contracts::CommandAction::Remove => "Remove this forward",
        fwdwatch_shared::contracts::CommandAction::RevokeApproval => "Revoke the approval",
    };
    let consequence = match claims.action {
        fwdwatch_shared::contracts::CommandAction::Approve => {
            "fwdwatch will stop alerting about this forward (this target on this mailbox only)."
        }
        fwdwatch_shared::contracts::CommandAction::Remove => {
            "fwdwatch will re-read the mailbox, refuse if the forward changed since it was detected, remove it, and check that it is gone."
        }
        fwdwatch_shared::contracts::CommandAction::RevokeApproval => {
            "fwdwatch will alert about this forward again."
        }
    };
    format!(
        "<table>\
         <tr><th>Action</th><td>{action}</td></tr>\
         <tr><th>Tenant</th><td>{tenant}</td></tr>\
         <tr><th>Mailbox</th><td>{mailbox}</td></tr>\
         <tr><th>Where</th><td>{signal}{rule}</td></tr>\
         <tr><th>Forwards to</th><td>{target}</td></tr>\
         <tr><th>Link expires</th><td>{expires}</td></tr>\
         </table>\
         <p>{consequence}</p>\
         <form method=\"post\">\
         <input type=\"hidden\" name=\"confirm\" value=\"{action}\">\
         <label>Reason (optional, kept in the audit trail)<br><textarea name=\"reason\" rows=\"2\" cols=\"60\" maxlength=\"{MAX_REASON}\"></textarea></label><br>\
         <button type=\"submit\">{button}</button>\
         </form>\
         <p class=\"small\">This link works once. Opening it changed nothing.</p>",
        action = escape(claims.action.as_str()),
        tenant = escape(&claims.tenant_id),
        mailbox = if claims.mailbox.is_empty() {
            "(whole tenant: transport rule)".to_owned()
        } else {
            escape(&claims.mailbox)
        },
        signal = escape(claims.signal.as_str()),
        rule = claims
            .rule_id
            .as_deref()
            .map(|r| format!(" (rule {})", escape(r)))
            .unwrap_or_default(),
        target = escape(&claims.target),
        expires = escape(&expires),
    )
}

fn result_title(result: &CommandResult) -> String {
    match result.outcome {
        CommandOutcome::Done => "Done".into(),
        CommandOutcome::Verified => "Removed, and verified".into(),
        CommandOutcome::NotVerified => "Removal sent, but NOT verified".into(),
        CommandOutcome::Refused => "Refused".into(),
        CommandOutcome::Failed => "Failed".into(),
    }
}

fn result_body(claims: &ActionClaims, result: &CommandResult) -> String {
    format!(
        "<p>Decision: {what}.</p><p><b>{title}</b>: {detail}</p><p class=\"small\">By {who}, {when}; command {id}.</p>",
        what = escape(&describe(claims)),
        title = escape(&result_title(result)),
        detail = escape(&result.detail),
        who = escape(if result.issued_by.name.is_empty() {
            &result.issued_by.user_id
        } else {
            &result.issued_by.name
        }),
        when = escape(
            &result
                .executed_at
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string()
        ),
        id = escape(&result.command_id),
    )
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// HTML-escapes text (every value on these pages comes from a token or a result).
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A small self-contained page (no scripts, no external resources: the CSP forbids them).
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"robots\" content=\"noindex, nofollow\">\
         <title>fwdwatch — {title}</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:42rem;margin:2rem auto;padding:0 1rem;color:#222}}\
         th{{text-align:left;padding-right:1rem;vertical-align:top}}td{{word-break:break-all}}\
         button{{font-size:1rem;padding:.5rem 1rem;margin-top:.5rem}}.small{{color:#666;font-size:.85rem}}</style>\
         </head><body><h1>{title}</h1>{body}</body></html>",
        title = escape(title),
    );
    (status, Html(html)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_html_metacharacters() {
        assert_eq!(
            escape(r#"<script>"a" & 'b'</script>"#),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
    }
}
