//! `POST /v1/commands` and `GET /v1/commands/{command_id}`: the HTTP door for
//! chat bots that cannot publish on RabbitMQ.
//!
//! The caller proves who it is with `Authorization: Bearer <token>`, one of
//! `actioner.api_tokens` (name → token), compared in constant time. The body is
//! the documented `Command` (docs/schemas/command.schema.json) — or just its
//! decision fields: `type`, `version`, `issued_at` are filled in, `command_id` is
//! optional, and `issued_by` is *replaced* by the token's name (only its `name`,
//! e.g. the chat user the bot acts for, is kept), so a token cannot speak for
//! another client. The command is published and answered with 202 and its id
//! (`api-<length of the token name>-<token name>-<id>`: the length makes the split
//! unambiguous, so client `ops` can never pre-claim client `ops-bot`'s ids);
//! sending the same `command_id` again is the same command, executed once — and
//! reusing it for a different command is refused. `GET /v1/commands/{command_id}`
//! returns its result, only within the caller's tenant scope.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use fwdwatch_shared::contracts::{
    Channel, Command, CommandAction, CommandResult, CommandType, Issuer, Signal,
};

use crate::Context;
use crate::audit::Subject;

/// Longest client-chosen command id.
const MAX_ID: usize = 128;

/// A command as an HTTP client sends it (see the module docs for what is filled in).
#[derive(Debug, Deserialize)]
struct ApiCommand {
    #[serde(default)]
    command_id: Option<String>,
    action: CommandAction,
    tenant_id: String,
    #[serde(default)]
    mailbox: Option<String>,
    fingerprint: String,
    #[serde(default)]
    signal: Option<Signal>,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    rule_id: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    reply_to: Option<String>,
    #[serde(default)]
    issued_by: Option<IssuerHint>,
}

#[derive(Debug, Default, Deserialize)]
struct IssuerHint {
    #[serde(default)]
    name: String,
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn unauthorised() -> Response {
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "a valid bearer token (actioner.api_tokens) is required",
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// The API client the request's bearer token belongs to.
fn client(context: &Context, headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return None;
    }
    context.authz.api_client(token.trim())
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

pub(super) async fn submit(
    State(context): State<Context>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(name) = client(&context, &headers) else {
        tracing::warn!("Refused an API command without a valid bearer token.");
        return unauthorised();
    };
    let request: ApiCommand = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("not a valid command: {e}"),
            );
        }
    };
    if request.tenant_id.trim().is_empty() || request.fingerprint.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "tenant_id and fingerprint are required",
        );
    }
    let id = match request.command_id.as_deref() {
        Some(id) if !valid_id(id) => {
            return error(
                StatusCode::BAD_REQUEST,
                "command_id must be 1-128 characters of A-Z a-z 0-9 - _ . :",
            );
        }
        Some(id) => id.to_owned(),
        None => uuid::Uuid::now_v7().to_string(),
    };
    if let Some(url) = request.reply_to.as_deref()
        && !context.replier.allowed(url)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "reply_to is not under actioner.reply_url_prefixes",
        );
    }
    let issuer = Issuer {
        channel: Channel::Api,
        user_id: name.clone(),
        name: request.issued_by.map(|i| i.name).unwrap_or_default(),
    };
    if let Err(denied) = context.authz.tenant(&name, &request.tenant_id) {
        context
            .auditor
            .refused(
                issuer,
                Subject {
                    action: Some(request.action),
                    tenant_id: request.tenant_id,
                    mailbox: request.mailbox,
                    fingerprint: Some(request.fingerprint),
                    target: request.target,
                },
                denied.to_string(),
            )
            .await;
        return error(StatusCode::FORBIDDEN, &denied.to_string());
    }
    let command = Command {
        kind: CommandType::Tag,
        version: 1,
        // Namespaced by client: one client's ids can never collide with another's,
        // nor with the ids of Slack clicks and links.
        command_id: namespaced(&name, &id),
        action: request.action,
        issued_by: issuer,
        issued_at: Utc::now(),
        tenant_id: request.tenant_id,
        mailbox: request.mailbox,
        fingerprint: request.fingerprint,
        signal: request.signal,
        target: request.target,
        rule_id: request.rule_id,
        reason: request.reason,
        expires_at: request.expires_at,
        reply_to: request.reply_to,
    };
    match context.publish_command(&command).await {
        Ok(()) => {
            tracing::info!(command_id = %command.command_id, client = %name, action = command.action.as_str(), "API command accepted.");
            (
                StatusCode::ACCEPTED,
                Json(json!({ "command_id": command.command_id, "status": "accepted" })),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "Could not publish an API command.");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "could not queue the command; retry with the same command_id",
            )
        }
    }
}

/// A client's command id: `api-<len>-<client>-<id>`.
pub(crate) fn namespaced(client: &str, id: &str) -> String {
    format!("api-{}-{client}-{id}", client.len())
}

const NOT_FOUND: &str = "no such command (not executed yet, expired, or not yours to see)";

pub(super) async fn status(
    State(context): State<Context>,
    headers: HeaderMap,
    Path(command_id): Path<String>,
) -> Response {
    let Some(name) = client(&context, &headers) else {
        return unauthorised();
    };
    let store = &context.store;
    match store.get(&context.keys.command_result(&command_id)).await {
        Ok(Some(json)) => match serde_json::from_str::<CommandResult>(&json) {
            // Only within the caller's tenant scope: a result names mailboxes,
            // targets and evidence of the tenant it is about.
            Ok(result) if context.authz.tenant(&name, &result.tenant_id).is_err() => {
                error(StatusCode::NOT_FOUND, NOT_FOUND)
            }
            Ok(result) => (StatusCode::OK, Json(result)).into_response(),
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("stored result unreadable: {e}"),
            ),
        },
        // In progress: said only of the caller's own commands.
        Ok(None) if !command_id.starts_with(&namespaced(&name, "")) => {
            error(StatusCode::NOT_FOUND, NOT_FOUND)
        }
        Ok(None) => match store.exists(&context.keys.command_claim(&command_id)).await {
            Ok(true) => (
                StatusCode::ACCEPTED,
                Json(json!({ "command_id": command_id, "status": "in_progress" })),
            )
                .into_response(),
            Ok(false) => error(StatusCode::NOT_FOUND, NOT_FOUND),
            Err(e) => {
                tracing::error!(error = %e, "Cannot read a command claim.");
                error(StatusCode::SERVICE_UNAVAILABLE, "state store unavailable")
            }
        },
        Err(e) => {
            tracing::error!(error = %e, "Cannot read a command result.");
            error(StatusCode::SERVICE_UNAVAILABLE, "state store unavailable")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_ids_are_restricted() {
        assert!(valid_id("0193c1f2-6a1b-7c3d-9e4f-5a6b7c8d9e0f"));
        assert!(valid_id("ticket:4411.v2_a"));
        assert!(!valid_id(""));
        assert!(!valid_id("a b"));
        assert!(!valid_id("x/../y"));
        assert!(!valid_id(&"a".repeat(MAX_ID + 1)));
    }

    #[test]
    fn client_namespaces_never_overlap() {
        assert_ne!(namespaced("ops", "bot-x"), namespaced("ops-bot", "x"));
        assert_eq!(namespaced("ops-bot", "x"), "api-7-ops-bot-x");
        assert!(!namespaced("ops-bot", "x").starts_with(&namespaced("ops", "")));
    }

    #[test]
    fn a_full_command_document_is_accepted_as_a_request() {
        let json = serde_json::to_vec(&Command::example()).expect("json");
        let request: ApiCommand = serde_json::from_slice(&json).expect("parses");
        assert_eq!(request.action, CommandAction::Approve);
        assert_eq!(request.issued_by.expect("hint").name, "Dana (on call)");
    }
}
