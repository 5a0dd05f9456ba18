//! Slack: Block Kit messages through an incoming webhook or `chat.postMessage`.
//!
//! Approve and Remove are real buttons (`action_id` `fwdwatch_approve` /
//! `fwdwatch_remove`) whose `value` is the signed action token: Slack posts it back
//! to the actioner's interactivity endpoint, which verifies Slack's request
//! signature *and* the token, so a button cannot be replayed against another
//! forward. Remove asks for confirmation in Slack first.
//!
//! Everything that comes from a tenant (rule names, display names, addresses) is
//! escaped (`&`, `<`, `>`), so a rule named `<!channel>` or `<https://x|click>`
//! cannot ping a channel or plant a link in our own alert.

use async_trait::async_trait;
use fwdwatch_shared::contracts::AlertKind;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::{Sink, SinkError, post_json, text};
use crate::alert::{PendingAlert, TargetActions};
use crate::settings::{Route, SlackConfig, SlackMode};

/// Slack's `action_id`s; the actioner matches on them.
pub const ACTION_APPROVE: &str = "fwdwatch_approve";
pub const ACTION_REMOVE: &str = "fwdwatch_remove";

#[derive(Debug)]
pub struct SlackSink {
    config: SlackConfig,
    client: reqwest::Client,
}

impl SlackSink {
    pub fn new(config: SlackConfig, client: reqwest::Client) -> Self {
        Self { config, client }
    }
}

/// Escapes text for Slack `mrkdwn` (and harmlessly for `plain_text`).
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Cuts text to Slack's per-field limits, on a character boundary.
fn cut(text: String, max: usize) -> String {
    if text.chars().count() <= max {
        return text;
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn field(label: &str, value: &str) -> Value {
    json!({"type": "mrkdwn", "text": cut(format!("*{label}*\n{}", escape(value)), 2000)})
}

fn context(lines: &[String]) -> Value {
    json!({
        "type": "context",
        "elements": lines
            .iter()
            .map(|l| json!({"type": "mrkdwn", "text": cut(escape(l), 2000)}))
            .collect::<Vec<_>>()
    })
}

/// The Block Kit blocks for `alert`.
pub fn blocks(alert: &PendingAlert, actions: &[TargetActions]) -> Vec<Value> {
    let icon = match alert.kind {
        AlertKind::New | AlertKind::Campaign | AlertKind::Reappeared => ":rotating_light:",
        AlertKind::CoverageLost => ":warning:",
        AlertKind::Reminder => ":alarm_clock:",
        AlertKind::Resolved | AlertKind::CoverageRestored => ":white_check_mark:",
    };
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": cut(format!("{icon} {}", text::title(alert)), 150), "emoji": true}
    })];

    if alert.kind == AlertKind::Campaign {
        let mut lines: Vec<String> = alert
            .victims
            .iter()
            .take(40)
            .map(|v| {
                format!(
                    "• {} — {}",
                    escape(if v.tenant_name.is_empty() {
                        &v.tenant_id
                    } else {
                        &v.tenant_name
                    }),
                    escape(v.mailbox.as_deref().unwrap_or("(tenant-wide rule)"))
                )
            })
            .collect();
        if alert.victims.len() > 40 {
            lines.push(format!("…and {} more", alert.victims.len() - 40));
        }
        blocks.push(json!({
            "type": "section",
            "fields": [
                field("Collector", alert.collector.as_deref().unwrap_or("?")),
                field("Severity", alert.severity().as_str()),
            ]
        }));
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": cut(format!("*Victims*\n{}", lines.join("\n")), 3000)}
        }));
        blocks.push(context(&[
            "One external address receiving mail from several mailboxes: treat every victim as compromised.".to_owned(),
        ]));
        return blocks;
    }

    if alert.coverage.is_some() {
        blocks.push(context(&text::coverage(alert)));
        return blocks;
    }

    let Some(d) = &alert.detection else {
        blocks.push(context(&[format!(
            "Fingerprint {}",
            alert.fingerprint.as_deref().unwrap_or("?")
        )]));
        return blocks;
    };
    let mut fields = vec![
        field("Customer", &d.tenant_name),
        field("Mailbox", &text::mailbox(d)),
        field("Target", &d.targets.join(", ")),
        field("Signal", text::signal(d.signal)),
        field("Severity", d.severity.as_str()),
    ];
    if let Some(rule) = text::rule(d) {
        fields.push(field("Rule", &rule));
    }
    blocks.push(json!({"type": "section", "fields": fields}));

    let mut notes = text::traits(d);
    notes.extend(text::paths(d));
    notes.push(text::posture(d).to_owned());
    blocks.push(context(&notes));

    let mut meta = Vec::new();
    if let Some(first) = alert.first_seen {
        meta.push(format!("First seen {}", first.format("%Y-%m-%d %H:%M UTC")));
    }
    match alert.kind {
        AlertKind::Reminder => meta.push(format!("Reminder #{}", alert.reminder)),
        AlertKind::Resolved => {
            meta.push("No longer present in a complete scan of the tenant".to_owned())
        }
        _ => {}
    }
    meta.push(format!("Fingerprint {}", d.fingerprint));
    blocks.push(context(&meta));

    let many = actions.len() > 1;
    for (i, action) in actions.iter().enumerate() {
        let (approve, remove) = if many {
            (
                cut(format!("Approve {}", action.target), 75),
                cut(format!("Remove {}", action.target), 75),
            )
        } else {
            ("Approve".to_owned(), "Remove".to_owned())
        };
        blocks.push(json!({
            "type": "actions",
            // Unique per message; Slack wants block ids unique within it.
            "block_id": cut(format!("fwdwatch:{}:{i}", alert.alert_id), 255),
            "elements": [
                {
                    "type": "button",
                    "action_id": ACTION_APPROVE,
                    "text": {"type": "plain_text", "text": approve},
                    "style": "primary",
                    "value": action.approve.token,
                },
                {
                    "type": "button",
                    "action_id": ACTION_REMOVE,
                    "text": {"type": "plain_text", "text": remove},
                    "style": "danger",
                    "value": action.remove.token,
                    "confirm": {
                        "title": {"type": "plain_text", "text": "Remove this forward?"},
                        "text": {"type": "mrkdwn", "text": cut(format!(
                            "fwdwatch will remove the forward to *{}* from {} and verify it is gone.",
                            escape(&action.target), escape(&text::mailbox(d))), 300)},
                        "confirm": {"type": "plain_text", "text": "Remove"},
                        "deny": {"type": "plain_text", "text": "Cancel"},
                        "style": "danger"
                    }
                }
            ]
        }));
    }
    blocks
}

/// The body posted: `text` is the notification / fallback, `blocks` the message.
pub fn payload(alert: &PendingAlert, actions: &[TargetActions], channel: Option<&str>) -> Value {
    let mut body = json!({
        "text": cut(escape(&text::summary(alert)), 3000),
        "blocks": blocks(alert, actions),
        "unfurl_links": false,
        "unfurl_media": false,
    });
    if let Some(channel) = channel {
        body["channel"] = json!(channel);
    }
    body
}

#[async_trait]
impl Sink for SlackSink {
    fn name(&self) -> &str {
        "slack"
    }

    fn route(&self) -> &Route {
        &self.config.route
    }

    async fn send(&self, alert: &PendingAlert, actions: &[TargetActions]) -> Result<(), SinkError> {
        match &self.config.mode {
            SlackMode::Webhook(url) => {
                let body = serde_json::to_vec(&payload(alert, actions, None)).map_err(|e| {
                    SinkError::Refused {
                        reason: e.to_string(),
                        retryable: false,
                    }
                })?;
                // Incoming webhooks answer 200 "ok", or an error status with a code
                // such as `invalid_blocks` / `no_service` in the body.
                post_json(&self.client, url.expose_secret().trim(), &[], body).await?;
                Ok(())
            }
            SlackMode::Api {
                api_url,
                bot_token,
                channel,
            } => {
                let body =
                    serde_json::to_vec(&payload(alert, actions, Some(channel))).map_err(|e| {
                        SinkError::Refused {
                            reason: e.to_string(),
                            retryable: false,
                        }
                    })?;
                let answer = post_json(
                    &self.client,
                    &format!("{api_url}/chat.postMessage"),
                    &[(
                        "authorization",
                        format!("Bearer {}", bot_token.expose_secret().trim()),
                    )],
                    body,
                )
                .await?;
                // The Web API answers 200 even on failure: `{"ok": false, "error": "…"}`.
                let answer: Value = serde_json::from_str(&answer).unwrap_or(Value::Null);
                if answer.get("ok").and_then(Value::as_bool) == Some(true) {
                    return Ok(());
                }
                let error = answer
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("no `ok` in the answer")
                    .to_owned();
                let retryable = matches!(
                    error.as_str(),
                    "ratelimited"
                        | "internal_error"
                        | "fatal_error"
                        | "service_unavailable"
                        | "request_timeout"
                );
                Err(SinkError::Refused {
                    reason: format!("chat.postMessage: {error}"),
                    retryable,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use fwdwatch_shared::links::LinkSigner;

    use super::*;
    use crate::alert::ActionSigner;
    use crate::alert::tests::pending;

    #[test]
    fn new_alert_has_every_fact_and_signed_buttons() {
        let alert = pending(AlertKind::New);
        let signer = LinkSigner::new("0123456789abcdef0123");
        let actions = ActionSigner::new(
            signer.clone(),
            "https://a.example",
            std::time::Duration::from_secs(60),
        )
        .actions(&alert, "slack", Utc::now());
        let body = payload(&alert, &actions, Some("#sec"));
        let text = body.to_string();
        for needle in [
            "Contoso Ltd",
            "victim@contoso.com",
            "collector@evil.example",
            "Inbox rule",
            "hidden rule",
            "no copy kept",
            "marks as read",
            "Tenant posture",
            "15394007230974001153",
            "\"channel\":\"#sec\"",
        ] {
            assert!(text.contains(needle), "missing {needle}: {text}");
        }
        let buttons = body["blocks"]
            .as_array()
            .expect("blocks")
            .iter()
            .find(|b| b["type"] == "actions")
            .expect("actions block");
        assert_eq!(buttons["elements"][0]["action_id"], ACTION_APPROVE);
        assert_eq!(buttons["elements"][1]["action_id"], ACTION_REMOVE);
        let token = buttons["elements"][1]["value"].as_str().expect("token");
        let claims = signer.verify(token, Utc::now()).expect("verifies");
        assert_eq!(claims.channel, "slack");
    }

    #[test]
    fn tenant_text_cannot_ping_or_link() {
        let mut alert = pending(AlertKind::New);
        if let Some(d) = alert.detection.as_mut() {
            d.rule_name = Some("<!channel> <https://evil.example|click> & co".into());
        }
        let text = serde_json::to_string(&payload(&alert, &[], None)).expect("json");
        assert!(!text.contains("<!channel>"), "{text}");
        assert!(text.contains("&lt;!channel&gt;"), "{text}");
        assert!(text.contains("&amp; co"), "{text}");
        assert!(!text.contains("\"actions\""), "no links → no buttons");
    }

    #[test]
    fn limits_are_respected() {
        assert_eq!(cut("é".repeat(200), 150).chars().count(), 150);
        assert_eq!(cut("short".into(), 150), "short");
    }
}
