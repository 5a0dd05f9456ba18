//! `POST /slack/interactions`: an operator clicked Approve or Remove in Slack.
//!
//! Proofs, in order — each refusal is answered at once, and nothing is published:
//!
//! 1. **Signature** (`X-Slack-Signature: v0=<hex>` over `v0:{timestamp}:{raw body}`,
//!    HMAC-SHA256 with `actioner.slack.signing_secret`, compared in constant time
//!    over the raw bytes before any parsing) and **freshness**
//!    (`X-Slack-Request-Timestamp` within 5 minutes) → else 401.
//! 2. **No replay**: the interaction's `trigger_id` (else the action's `action_ts`)
//!    is claimed in Redis (`SET NX`); a second request with it → 409.
//! 3. **Operator**: `user.id` in `actioner.operators.slack_user_ids` (and the team
//!    in `slack_team_id` when set) → else 403, audited, and told in Slack.
//! 4. **The button's token** (the notifier's signed token in the button `value`):
//!    valid signature, not expired, and for the action of the button
//!    (`fwdwatch_approve` / `fwdwatch_remove` / `fwdwatch_revoke`) → else 400/401/410.
//! 5. **Tenant scope** of the operator → else 403, audited.
//!
//! Then a `Command` is published (command id `slack-<token nonce>`: a double click
//! is the same command, executed once) and Slack gets its 200 well within its 3
//! seconds. The executor reports the outcome through the interaction's
//! `response_url`, replacing the alert with who did what and the result.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use hmac::{KeyInit, Mac};
use secrecy::ExposeSecret;
use serde::Deserialize;

use fwdwatch_shared::contracts::{Channel, Command, CommandAction, CommandType, Issuer};
use fwdwatch_shared::links::{ActionClaims, TokenError};

use crate::Context;
use crate::audit::Subject;
use crate::reply::ephemeral;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Requests older (or newer) than this are refused: Slack's recommendation, and
/// the window a captured request could be replayed in without the replay claim.
pub const MAX_AGE_SECONDS: i64 = 5 * 60;

/// How long an interaction id stays claimed: longer than the freshness window, so
/// a replay is caught by one check or the other.
const REPLAY_TTL: Duration = Duration::from_secs(15 * 60);

/// The button action ids the notifier puts on its alerts.
pub const ACTION_APPROVE: &str = "fwdwatch_approve";
pub const ACTION_REMOVE: &str = "fwdwatch_remove";
pub const ACTION_REVOKE: &str = "fwdwatch_revoke";

/// Why a request does not prove it comes from Slack.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("the request timestamp is not a number")]
    BadTimestamp,
    #[error("the request timestamp is {0} s away from now (more than 5 minutes)")]
    Stale(i64),
    #[error("the request signature does not match")]
    BadSignature,
}

/// Verifies Slack's request signature over the raw body, at time `now` (Unix
/// seconds, injected so the documented example can be checked).
pub fn verify_signature(
    secret: &[u8],
    timestamp: &str,
    body: &[u8],
    signature: &str,
    now: i64,
) -> Result<(), SignatureError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    let age = now.saturating_sub(ts);
    if age.saturating_abs() > MAX_AGE_SECONDS {
        return Err(SignatureError::Stale(age));
    }
    let expected = signature
        .trim()
        .strip_prefix("v0=")
        .and_then(|hex_part| hex::decode(hex_part).ok())
        .ok_or(SignatureError::BadSignature)?;
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret)
        .map_err(|_| SignatureError::BadSignature)?;
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    // Constant-time comparison.
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::BadSignature)
}

#[derive(Debug, Deserialize)]
struct Form {
    payload: String,
}

/// The parts of Slack's `block_actions` payload we use (unknown fields ignored).
#[derive(Debug, Deserialize)]
struct Interaction {
    #[serde(rename = "type")]
    kind: String,
    user: SlackUser,
    #[serde(default)]
    team: Option<Team>,
    #[serde(default)]
    trigger_id: Option<String>,
    #[serde(default)]
    response_url: Option<String>,
    #[serde(default)]
    actions: Vec<Action>,
}

#[derive(Debug, Deserialize)]
struct SlackUser {
    id: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    team_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Team {
    id: String,
}

#[derive(Debug, Deserialize)]
struct Action {
    action_id: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    action_ts: Option<String>,
}

fn answer(status: StatusCode, text: &str) -> Response {
    (status, text.to_owned()).into_response()
}

fn action_for(action_id: &str) -> Option<CommandAction> {
    match action_id {
        ACTION_APPROVE => Some(CommandAction::Approve),
        ACTION_REMOVE => Some(CommandAction::Remove),
        ACTION_REVOKE => Some(CommandAction::RevokeApproval),
        _ => None,
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, SignatureError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or(SignatureError::MissingHeader(name))
}

fn subject_of(claims: &ActionClaims) -> Subject {
    Subject {
        action: Some(claims.action),
        tenant_id: claims.tenant_id.clone(),
        mailbox: Some(claims.mailbox.clone()),
        fingerprint: Some(claims.fingerprint.clone()),
        target: Some(claims.target.clone()),
    }
}

pub(super) async fn interactions(
    State(context): State<Context>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(secret) = context.settings.actioner.slack.signing_secret.as_ref() else {
        return answer(
            StatusCode::NOT_FOUND,
            "Slack interactivity is not configured (actioner.slack.signing_secret).",
        );
    };

    // 1. Signature and freshness, over the raw bytes.
    let verified = header(&headers, "x-slack-request-timestamp").and_then(|timestamp| {
        let signature = header(&headers, "x-slack-signature")?;
        verify_signature(
            secret.expose_secret().as_bytes(),
            timestamp,
            &body,
            signature,
            Utc::now().timestamp(),
        )
    });
    if let Err(error) = verified {
        // Anonymous: logged, not audited (see audit.rs).
        tracing::warn!(%error, "Refused a Slack request that does not prove it comes from Slack.");
        return answer(StatusCode::UNAUTHORIZED, "Invalid Slack request signature.");
    }

    let interaction: Interaction = match serde_urlencoded::from_bytes::<Form>(&body)
        .map_err(|e| e.to_string())
        .and_then(|form| serde_json::from_str(&form.payload).map_err(|e| e.to_string()))
    {
        Ok(interaction) => interaction,
        Err(error) => {
            tracing::warn!(%error, "Signed Slack request without a readable payload.");
            return answer(StatusCode::BAD_REQUEST, "Unreadable interaction payload.");
        }
    };
    if interaction.kind != "block_actions" {
        return answer(StatusCode::OK, "");
    }
    let Some((action, button)) = interaction
        .actions
        .iter()
        .find_map(|a| action_for(&a.action_id).map(|action| (action, a)))
    else {
        // Some other button of ours (or none): nothing to do.
        return answer(StatusCode::OK, "");
    };
    let team_id = interaction
        .team
        .as_ref()
        .map(|t| t.id.clone())
        .or_else(|| interaction.user.team_id.clone());

    // 2. Replay: one request per interaction.
    let Some(interaction_id) = interaction
        .trigger_id
        .clone()
        .or_else(|| button.action_ts.clone())
        .filter(|id| !id.is_empty())
    else {
        return answer(
            StatusCode::BAD_REQUEST,
            "Interaction without trigger_id or action_ts.",
        );
    };
    let replay_key = context
        .keys
        .slack_interaction(team_id.as_deref().unwrap_or(""), &interaction_id);
    match context.store.claim(&replay_key, REPLAY_TTL).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(user = %interaction.user.id, "Refused a replayed Slack interaction.");
            return answer(
                StatusCode::CONFLICT,
                "This interaction was already received.",
            );
        }
        Err(error) => {
            tracing::error!(%error, "Cannot claim the Slack interaction id.");
            return answer(StatusCode::SERVICE_UNAVAILABLE, "Try again in a moment.");
        }
    }

    let response_url = interaction
        .response_url
        .clone()
        .filter(|url| context.replier.allowed(url));
    let tell = |text: String| {
        if let Some(url) = &response_url {
            context
                .replier
                .post_in_background(url.clone(), ephemeral(&text));
        }
    };
    let display_name = interaction
        .user
        .name
        .clone()
        .or_else(|| interaction.user.username.clone())
        .unwrap_or_default();
    let issuer = Issuer {
        channel: Channel::Slack,
        user_id: interaction.user.id.clone(),
        name: display_name,
    };

    // 4 before 3 only to know *what* an unauthorised user tried, for the audit.
    let now = Utc::now();
    let claims = context
        .signer
        .verify(button.value.as_deref().unwrap_or(""), now);

    // 3. Operator.
    if let Err(denied) = context
        .authz
        .slack_user(&issuer.user_id, team_id.as_deref())
    {
        let subject = claims.as_ref().map(subject_of).unwrap_or_default();
        context
            .auditor
            .refused(issuer, subject, denied.to_string())
            .await;
        tell(format!(
            ":no_entry: {denied}. Ask an administrator to add you to actioner.operators."
        ));
        return answer(StatusCode::FORBIDDEN, &denied.to_string());
    }

    // 4. The button's token.
    let claims = match claims {
        Ok(claims) => claims,
        Err(error) => {
            let (status, text) = match &error {
                TokenError::Malformed => (StatusCode::BAD_REQUEST, error.to_string()),
                TokenError::BadSignature => (StatusCode::UNAUTHORIZED, error.to_string()),
                TokenError::Expired(at) => (
                    StatusCode::GONE,
                    format!(
                        "These buttons expired at {at}; the next reminder about this forward carries fresh ones."
                    ),
                ),
            };
            context
                .auditor
                .refused(
                    issuer,
                    Subject {
                        action: Some(action),
                        ..Subject::default()
                    },
                    format!("Slack button token refused: {error}"),
                )
                .await;
            tell(format!(":no_entry: {text}"));
            return answer(status, &text);
        }
    };
    if claims.action != action {
        let text = format!(
            "The button {} carries a token for {}: refused.",
            button.action_id,
            claims.action.as_str()
        );
        context
            .auditor
            .refused(issuer, subject_of(&claims), text.clone())
            .await;
        // Answered in Slack like every other refusal (an ephemeral note), not only
        // with a bare status the person never sees.
        tell(format!(":no_entry: {text} Nothing was done."));
        return answer(StatusCode::BAD_REQUEST, &text);
    }

    // 5. Tenant scope.
    if let Err(denied) = context.authz.tenant(&issuer.user_id, &claims.tenant_id) {
        context
            .auditor
            .refused(issuer, subject_of(&claims), denied.to_string())
            .await;
        tell(format!(":no_entry: {denied}."));
        return answer(StatusCode::FORBIDDEN, &denied.to_string());
    }

    let command = Command {
        kind: CommandType::Tag,
        version: 1,
        command_id: format!("slack-{}", claims.nonce),
        action: claims.action,
        issued_by: issuer,
        issued_at: now,
        tenant_id: claims.tenant_id,
        mailbox: Some(claims.mailbox).filter(|m| !m.is_empty()),
        fingerprint: claims.fingerprint,
        signal: Some(claims.signal),
        target: Some(claims.target).filter(|t| !t.is_empty()),
        rule_id: claims.rule_id,
        reason: None,
        expires_at: None,
        reply_to: response_url.clone(),
    };
    match context.publish_command(&command).await {
        Ok(()) => {
            tracing::info!(command_id = %command.command_id, user = %command.issued_by.user_id, action = command.action.as_str(), "Slack decision accepted.");
            answer(StatusCode::OK, "")
        }
        Err(error) => {
            tracing::error!(%error, "Could not publish a Slack decision.");
            // Give the interaction back so the operator can simply click again.
            if let Err(error) = context.store.release(&replay_key).await {
                tracing::warn!(%error, "Could not release the Slack interaction claim.");
            }
            tell(
                ":warning: fwdwatch could not queue your decision; please click again in a moment."
                    .into(),
            );
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "Could not queue the decision.",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slack's documented example (docs.slack.dev, "Verifying requests from Slack").
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TIMESTAMP: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn at(offset: i64) -> i64 {
        TIMESTAMP.parse::<i64>().expect("number") + offset
    }

    #[test]
    fn slacks_documented_example_verifies() {
        assert_eq!(
            verify_signature(
                SECRET.as_bytes(),
                TIMESTAMP,
                BODY.as_bytes(),
                SIGNATURE,
                at(30)
            ),
            Ok(())
        );
    }

    #[test]
    fn forged_signature_body_or_secret_is_refused() {
        let mut forged = SIGNATURE.to_owned();
        forged.replace_range(forged.len() - 1.., "4");
        assert_eq!(
            verify_signature(
                SECRET.as_bytes(),
                TIMESTAMP,
                BODY.as_bytes(),
                &forged,
                at(0)
            ),
            Err(SignatureError::BadSignature)
        );
        let body = BODY.replace("roadrunner", "wile_e_coyote");
        assert_eq!(
            verify_signature(
                SECRET.as_bytes(),
                TIMESTAMP,
                body.as_bytes(),
                SIGNATURE,
                at(0)
            ),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(
            verify_signature(
                b"another-secret",
                TIMESTAMP,
                BODY.as_bytes(),
                SIGNATURE,
                at(0)
            ),
            Err(SignatureError::BadSignature)
        );
        for junk in ["", "v0=", "v0=zz", "v1=a2114d57", "a2114d57b48eac39"] {
            assert_eq!(
                verify_signature(SECRET.as_bytes(), TIMESTAMP, BODY.as_bytes(), junk, at(0)),
                Err(SignatureError::BadSignature),
                "{junk}"
            );
        }
    }

    #[test]
    fn stale_or_future_timestamps_are_refused_even_with_a_good_signature() {
        assert_eq!(
            verify_signature(
                SECRET.as_bytes(),
                TIMESTAMP,
                BODY.as_bytes(),
                SIGNATURE,
                at(301)
            ),
            Err(SignatureError::Stale(301))
        );
        assert_eq!(
            verify_signature(
                SECRET.as_bytes(),
                TIMESTAMP,
                BODY.as_bytes(),
                SIGNATURE,
                at(-301)
            ),
            Err(SignatureError::Stale(-301))
        );
        assert_eq!(
            verify_signature(
                SECRET.as_bytes(),
                TIMESTAMP,
                BODY.as_bytes(),
                SIGNATURE,
                at(300)
            ),
            Ok(()),
            "the window is inclusive"
        );
        assert_eq!(
            verify_signature(
                SECRET.as_bytes(),
                "yesterday",
                BODY.as_bytes(),
                SIGNATURE,
                at(0)
            ),
            Err(SignatureError::BadTimestamp)
        );
    }

    #[test]
    fn button_ids_map_to_actions() {
        assert_eq!(action_for(ACTION_APPROVE), Some(CommandAction::Approve));
        assert_eq!(action_for(ACTION_REMOVE), Some(CommandAction::Remove));
        assert_eq!(
            action_for(ACTION_REVOKE),
            Some(CommandAction::RevokeApproval)
        );
        assert_eq!(action_for("something_else"), None);
    }
}
