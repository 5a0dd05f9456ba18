//! Slack: Block Kit messages through an incoming webhook or `chat.postMessage`.
//!
//! Approve and Remove are real buttons (`action_id` `fwdwatch_approve` /
//! `fwdwatch_remove`) whose `value` is the signed action token: Slack posts it back
//! to the actioner's interactivity endpoint, which verifies Slack's request
//! signature *and* the token, so a button cannot be replayed against another
//! forward. Remove asks for confirmation in Slack first.
//!
//! **Tenant text stays text.** Rule names, display names, customer names and
//! addresses are attacker-controlled. Each is shown in an inline code span (Slack
//! applies no formatting and makes no links inside one; a backtick in the value
//! becomes `ˋ` so it cannot close the span), with `&`, `<` and `>` escaped (so
//! `<!channel>` or `<https://x|click>` cannot ping or plant a link) and invisible
//! characters written out (`text::visible`); every `mrkdwn` text object is sent with
//! `verbatim: true`, which turns off Slack's server-side linking of URLs, channel
//! names and `@here`-style mentions. Plain-text parts (the header, the notification
//! text) carry no tenant text at all; button labels carry a target, but buttons do
//! not render links.
//!
//! **One message per alert.** With a bot token, each message carries metadata
//! (`event_type` `fwdwatch_alert`, the alert id). When a delivery may repeat an
//! earlier one (a retry after a timeout, or an alert taken over from a notifier that
//! died mid-send), the sink first looks for that message in the channel's recent
//! history (`conversations.history`, scope `channels:history` / `groups:history`) and
//! updates it (`chat.update`) instead of posting again. One read of the history
//! serves every alert taken over before it (Slack allows about 50 reads a minute). The posted message's
//! `channel/ts` is the delivery's receipt, recorded with the alert. Incoming webhooks
//! can neither be searched nor updated: there a crash can repeat a message.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fwdwatch_shared::contracts::AlertKind;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::text::{self, visible};
use super::{SendContext, Sink, SinkError, SinkLimits, post_json, transport};
use crate::alert::{PendingAlert, TargetActions};
use crate::settings::{Route, SlackConfig, SlackMode};

/// Slack's `action_id`s; the actioner matches on them.
pub const ACTION_APPROVE: &str = "fwdwatch_approve";
pub const ACTION_REMOVE: &str = "fwdwatch_remove";
/// The `event_type` of the metadata on every message fwdwatch posts with a bot token.
pub const METADATA_EVENT: &str = "fwdwatch_alert";

/// How far back (before the alert was decided) an earlier message is looked for.
const HISTORY_WINDOW: chrono::Duration = chrono::Duration::minutes(10);
/// History pages read at most (200 messages each).
const HISTORY_PAGES: usize = 5;

#[derive(Debug)]
pub struct SlackSink {
    config: SlackConfig,
    client: reqwest::Client,
    /// The channel id Slack answered with, for history look-ups when the
    /// configuration names the channel (`#alerts`) rather than its id.
    channel_id: Mutex<Option<String>>,
    /// The last read of the channel's history (held while reading: one read at a
    /// time, which the others then share).
    history: tokio::sync::Mutex<Option<History>>,
}

/// fwdwatch's messages in a channel, as read at one moment.
#[derive(Debug)]
struct History {
    read_at: std::time::Instant,
    channel: String,
    /// The read covered messages from here on.
    oldest: DateTime<Utc>,
    /// Alert id → message `ts`.
    messages: HashMap<String, String>,
}

impl SlackSink {
    pub fn new(config: SlackConfig, client: reqwest::Client) -> Self {
        Self {
            config,
            client,
            channel_id: Mutex::new(None),
            history: tokio::sync::Mutex::new(None),
        }
    }
}

/// Escapes text for Slack `mrkdwn` (and harmlessly for `plain_text`).
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Tenant text as an inline code span: no formatting, no link, no mention inside.
pub fn code(text: &str) -> String {
    let shown = visible(text).replace('`', "ˋ");
    if shown.trim().is_empty() {
        return "_(empty)_".to_owned();
    }
    format!("`{}`", escape(&shown))
}

/// Cuts text to Slack's per-field limits, on a character boundary.
fn cut(text: String, max: usize) -> String {
    if text.chars().count() <= max {
        return text;
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    // A span cut in half would leave an open backtick: close it.
    if cut.matches('`').count() % 2 == 1 {
        cut.pop();
        cut.pop();
        cut.push_str("`…");
    }
    cut
}

/// A `mrkdwn` text object with Slack's automatic linking turned off.
fn mrkdwn(text: String, max: usize) -> Value {
    json!({"type": "mrkdwn", "text": cut(text, max), "verbatim": true})
}

/// A field: our label, then an already rendered value.
fn field(label: &str, rendered: String) -> Value {
    mrkdwn(format!("*{label}*\n{rendered}"), 2000)
}

/// Context lines of our own wording.
fn context(lines: &[String]) -> Value {
    json!({
        "type": "context",
        "elements": lines
            .iter()
            .map(|l| mrkdwn(escape(&visible(l)), 2000))
            .collect::<Vec<_>>()
    })
}

/// Plain text for button labels and dialog titles.
fn plain(text: &str, max: usize) -> Value {
    json!({"type": "plain_text", "text": cut(visible(text).into_owned(), max), "emoji": false})
}

fn codes(values: &[String]) -> String {
    values
        .iter()
        .map(|v| code(v))
        .collect::<Vec<_>>()
        .join(", ")
}

fn mailbox(d: &fwdwatch_shared::contracts::Detection) -> String {
    match &d.mailbox {
        Some(m) if !m.display_name.is_empty() => {
            format!(
                "{} ({})",
                code(&m.primary_smtp_address),
                code(&m.display_name)
            )
        }
        Some(m) => code(&m.primary_smtp_address),
        None => "whole tenant (transport rule)".to_owned(),
    }
}

fn rule(d: &fwdwatch_shared::contracts::Detection) -> Option<String> {
    match (&d.rule_name, &d.rule_id) {
        (Some(name), Some(id)) => Some(format!("{} (id {})", code(name), code(id))),
        (Some(name), None) => Some(code(name)),
        (None, Some(id)) => Some(format!("id {}", code(id))),
        (None, None) => None,
    }
}

/// The Block Kit blocks for `alert`.
pub fn blocks(alert: &PendingAlert, actions: &[TargetActions]) -> Vec<Value> {
    let icon = match alert.kind {
        AlertKind::New | AlertKind::Campaign | AlertKind::Reappeared => ":rotating_light:",
        AlertKind::CoverageLost => ":warning:",
        AlertKind::Reminder => ":alarm_clock:",
        AlertKind::Resolved | AlertKind::CoverageRestored => ":white_check_mark:",
    };
    // The title is our own wording only (no tenant text): a header is plain text.
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
                    code(if v.tenant_name.is_empty() {
                        &v.tenant_id
                    } else {
                        &v.tenant_name
                    }),
                    v.mailbox
                        .as_deref()
                        .map_or_else(|| "(tenant-wide rule)".to_owned(), code)
                )
            })
            .collect();
        if alert.victims.len() > 40 {
            lines.push(format!("…and {} more", alert.victims.len() - 40));
        }
        blocks.push(json!({
            "type": "section",
            "fields": [
                field("Collector", code(alert.collector.as_deref().unwrap_or("?"))),
                field("Severity", alert.severity().as_str().to_owned()),
            ]
        }));
        blocks.push(json!({
            "type": "section",
            "text": mrkdwn(format!("*Victims*\n{}", lines.join("\n")), 3000)
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
        field("Customer", code(&d.tenant_name)),
        field("Mailbox", mailbox(d)),
        field("Target", codes(&d.targets)),
        field("Signal", escape(text::signal(d.signal))),
        field("Severity", d.severity.as_str().to_owned()),
    ];
    if let Some(rule) = rule(d) {
        fields.push(field("Rule", rule));
    }
    if let Some(a) = &d.audit {
        // Every value is the attacker's: code spans (no link, no mention, no markup).
        let shown = if a.unreadable.is_some() {
            code(&a.describe())
        } else {
            format!(
                "{} at {} by {} from {}",
                code(&a.operation),
                a.created_at.map_or_else(
                    || "(unknown time)".to_owned(),
                    |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
                ),
                code(&a.actor),
                code(&a.client_ip)
            )
        };
        fields.push(field("Audit record", shown));
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
                format!("Approve {}", action.target),
                format!("Remove {}", action.target),
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
                    "text": plain(&approve, 75),
                    "style": "primary",
                    "value": action.approve.token,
                },
                {
                    "type": "button",
                    "action_id": ACTION_REMOVE,
                    "text": plain(&remove, 75),
                    "style": "danger",
                    "value": action.remove.token,
                    "confirm": {
                        "title": {"type": "plain_text", "text": "Remove this forward?"},
                        "text": mrkdwn(format!(
                            "fwdwatch will remove the forward to {} from {} and verify it is gone.",
                            code(&action.target), mailbox(d)), 300),
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

/// The notification / fallback text: our wording and the fingerprint only. It is
/// plain message text, which Slack would scan for links and mentions.
pub fn notification(alert: &PendingAlert) -> String {
    match alert.fingerprint.as_deref() {
        Some(fp) => escape(&format!("{} · fingerprint {fp}", text::title(alert))),
        None => escape(&text::title(alert)),
    }
}

/// The body posted: `text` is the notification / fallback, `blocks` the message.
pub fn payload(alert: &PendingAlert, actions: &[TargetActions], channel: Option<&str>) -> Value {
    let mut body = json!({
        "text": cut(notification(alert), 3000),
        "blocks": blocks(alert, actions),
        "unfurl_links": false,
        "unfurl_media": false,
    });
    if let Some(channel) = channel {
        body["channel"] = json!(channel);
        // Lets a later delivery of the same alert find this message (Web API only).
        body["metadata"] = json!({
            "event_type": METADATA_EVENT,
            "event_payload": {"alert_id": alert.alert_id},
        });
    }
    body
}

fn encode(body: &Value) -> Result<Vec<u8>, SinkError> {
    serde_json::to_vec(body).map_err(|e| SinkError::Refused {
        reason: e.to_string(),
        retryable: false,
    })
}

/// Slack's Web API answers 200 even on failure: `{"ok": false, "error": "…"}`.
fn web_api_answer(method: &str, answer: &str) -> Result<Value, SinkError> {
    let answer: Value = serde_json::from_str(answer).unwrap_or(Value::Null);
    if answer.get("ok").and_then(Value::as_bool) == Some(true) {
        return Ok(answer);
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
        reason: format!("{method}: {error}"),
        retryable,
    })
}

/// Slack's `ts` format (`seconds.micros`) of a time.
fn slack_ts(time: DateTime<Utc>) -> String {
    format!("{}.{:06}", time.timestamp(), time.timestamp_subsec_micros())
}

impl SlackSink {
    fn bearer(token: &SecretString) -> (&'static str, String) {
        (
            "authorization",
            format!("Bearer {}", token.expose_secret().trim()),
        )
    }

    /// The `ts` (and channel id) of a message this sink already posted for `alert`,
    /// found by its metadata in the channel's recent history — read afresh, or the
    /// last read when it was made after `sent_before` and covers the alert.
    async fn find_earlier(
        &self,
        api_url: &str,
        token: &SecretString,
        channel: &str,
        alert: &PendingAlert,
        sent_before: Option<std::time::Instant>,
    ) -> Result<Option<(String, String)>, SinkError> {
        let oldest = alert.created_at - HISTORY_WINDOW;
        let mut last = self.history.lock().await;
        if let (Some(h), Some(before)) = (last.as_ref(), sent_before)
            && h.channel == channel
            && h.read_at >= before
            && h.oldest <= oldest
        {
            return Ok(h
                .messages
                .get(&alert.alert_id)
                .map(|ts| (channel.to_owned(), ts.clone())));
        }
        let read_at = std::time::Instant::now();
        let messages = self.read_history(api_url, token, channel, oldest).await?;
        let found = messages
            .get(&alert.alert_id)
            .map(|ts| (channel.to_owned(), ts.clone()));
        *last = Some(History {
            read_at,
            channel: channel.to_owned(),
            oldest,
            messages,
        });
        Ok(found)
    }

    /// fwdwatch's messages in `channel` since `oldest` (alert id → `ts`), at most
    /// [`HISTORY_PAGES`] pages.
    async fn read_history(
        &self,
        api_url: &str,
        token: &SecretString,
        channel: &str,
        oldest: DateTime<Utc>,
    ) -> Result<HashMap<String, String>, SinkError> {
        let oldest = slack_ts(oldest);
        let mut found = HashMap::new();
        let mut cursor = String::new();
        for _ in 0..HISTORY_PAGES {
            let mut query = vec![
                ("channel", channel.to_owned()),
                ("oldest", oldest.clone()),
                ("limit", "200".to_owned()),
                ("include_all_metadata", "true".to_owned()),
            ];
            if !cursor.is_empty() {
                query.push(("cursor", cursor.clone()));
            }
            let (name, value) = Self::bearer(token);
            let response = self
                .client
                .get(format!("{api_url}/conversations.history"))
                .query(&query)
                .header(name, value)
                .send()
                .await
                .map_err(transport)?;
            let status = response.status();
            let body = response.text().await.map_err(transport)?;
            if !status.is_success() {
                return Err(SinkError::Status {
                    status: status.as_u16(),
                    detail: super::excerpt(&body),
                    retry_after: None,
                });
            }
            let answer = web_api_answer("conversations.history", &body)?;
            for m in answer["messages"].as_array().into_iter().flatten() {
                if m["metadata"]["event_type"] != METADATA_EVENT {
                    continue;
                }
                if let (Some(id), Some(ts)) = (
                    m["metadata"]["event_payload"]["alert_id"].as_str(),
                    m["ts"].as_str(),
                ) {
                    found.entry(id.to_owned()).or_insert_with(|| ts.to_owned());
                }
            }
            cursor = answer["response_metadata"]["next_cursor"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            if cursor.is_empty() || answer["has_more"] != Value::Bool(true) {
                break;
            }
        }
        Ok(found)
    }

    async fn post_api(
        &self,
        alert: &PendingAlert,
        actions: &[TargetActions],
        context: &SendContext,
        api_url: &str,
        token: &SecretString,
        channel: &str,
    ) -> Result<Option<String>, SinkError> {
        let mut body = payload(alert, actions, Some(channel));
        if context.maybe_sent_before {
            let lookup = self
                .channel_id
                .lock()
                .ok()
                .and_then(|c| c.clone())
                .unwrap_or_else(|| channel.to_owned());
            match self
                .find_earlier(api_url, token, &lookup, alert, context.sent_before)
                .await
            {
                Ok(Some((channel_id, ts))) => {
                    body["channel"] = json!(channel_id);
                    body["ts"] = json!(ts);
                    let answer = post_json(
                        &self.client,
                        &format!("{api_url}/chat.update"),
                        &[Self::bearer(token)],
                        encode(&body)?,
                    )
                    .await?;
                    let answer = web_api_answer("chat.update", &answer)?;
                    tracing::info!(alert_id = %alert.alert_id, "Updated the Slack message an earlier delivery posted instead of posting again.");
                    return Ok(Some(receipt(&answer, &channel_id, &ts)));
                }
                Ok(None) => {}
                Err(error) => {
                    // Cannot tell (no history scope, channel given by name…): post;
                    // at worst the receiver sees the alert twice, with one alert id.
                    tracing::warn!(alert_id = %alert.alert_id, %error, "Could not look for an earlier Slack message of this alert; posting it. Grant channels:history and configure the channel id to avoid a repeat.");
                }
            }
        }
        let answer = post_json(
            &self.client,
            &format!("{api_url}/chat.postMessage"),
            &[Self::bearer(token)],
            encode(&body)?,
        )
        .await?;
        let answer = web_api_answer("chat.postMessage", &answer)?;
        if let (Some(id), Ok(mut known)) = (answer["channel"].as_str(), self.channel_id.lock()) {
            *known = Some(id.to_owned());
        }
        Ok(Some(receipt(&answer, channel, "")))
    }
}

/// `channel/ts` of the message Slack answered about.
fn receipt(answer: &Value, channel: &str, ts: &str) -> String {
    format!(
        "{}/{}",
        answer["channel"].as_str().unwrap_or(channel),
        answer["ts"].as_str().unwrap_or(ts)
    )
}

#[async_trait]
impl Sink for SlackSink {
    fn name(&self) -> &str {
        "slack"
    }

    fn route(&self) -> &Route {
        &self.config.route
    }

    fn limits(&self) -> SinkLimits {
        self.config.limits
    }

    async fn send(&self, alert: &PendingAlert, actions: &[TargetActions]) -> Result<(), SinkError> {
        self.deliver(alert, actions, &SendContext::default())
            .await
            .map(drop)
    }

    async fn deliver(
        &self,
        alert: &PendingAlert,
        actions: &[TargetActions],
        context: &SendContext,
    ) -> Result<Option<String>, SinkError> {
        match &self.config.mode {
            SlackMode::Webhook(url) => {
                // Incoming webhooks answer 200 "ok", or an error status with a code
                // such as `invalid_blocks` / `no_service` in the body.
                post_json(
                    &self.client,
                    url.expose_secret().trim(),
                    &[],
                    encode(&payload(alert, actions, None))?,
                )
                .await?;
                Ok(None)
            }
            SlackMode::Api {
                api_url,
                bot_token,
                channel,
            } => {
                self.post_api(alert, actions, context, api_url, bot_token, channel)
                    .await
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
    use crate::sinks::tests::{HOSTILE, hostile_alert, hostile_campaign};

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
        assert_eq!(body["metadata"]["event_type"], METADATA_EVENT);
        assert_eq!(
            body["metadata"]["event_payload"]["alert_id"],
            alert.alert_id
        );
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
        assert!(
            payload(&alert, &actions, None).get("metadata").is_none(),
            "webhooks take no metadata"
        );
    }

    /// Walks the message: every `mrkdwn` object must have `verbatim: true`; every
    /// string that Slack renders must keep tenant text inside code spans.
    fn check(value: &Value, path: &str, mrkdwn_objects: &mut usize) {
        match value {
            Value::Object(map) => {
                if map.get("type") == Some(&json!("mrkdwn")) {
                    *mrkdwn_objects += 1;
                    assert_eq!(
                        map.get("verbatim"),
                        Some(&json!(true)),
                        "{path} lacks verbatim"
                    );
                }
                for (k, v) in map {
                    check(v, &format!("{path}/{k}"), mrkdwn_objects);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    check(v, &format!("{path}/{i}"), mrkdwn_objects);
                }
            }
            Value::String(s) => {
                // Tokens, ids and the metadata are not rendered.
                if path.ends_with("/value")
                    || path.ends_with("/block_id")
                    || path.contains("/metadata")
                    || path == "/channel"
                {
                    return;
                }
                for invisible in ['\u{200b}', '\u{202e}', '\u{2066}', '\u{feff}', '\u{1b}'] {
                    assert!(!s.contains(invisible), "{invisible:?} at {path}: {s}");
                }
                for markup in ["<!", "<@", "<#", "<http", "<mailto", "|click>"] {
                    assert!(!s.contains(markup), "{markup} at {path}: {s}");
                }
                // Outside code spans (what Slack parses as markup and links).
                let outside: String = s.split('`').step_by(2).collect::<Vec<_>>().join(" ");
                let is_button_label = path.contains("/elements/")
                    && path.ends_with("/text/text")
                    && !path.contains("/confirm/");
                if is_button_label {
                    return; // plain text on a button: never rendered as a link
                }
                for needle in [
                    "login.microsoftonline",
                    "evil.example",
                    "*bold*",
                    "_it_",
                    "~gone~",
                    "[x](http",
                    "@here",
                    "@channel",
                ] {
                    assert!(
                        !outside.contains(needle),
                        "{needle} outside a code span at {path}: {s}"
                    );
                }
            }
            _ => {}
        }
    }

    fn assert_inert(body: &Value) {
        let mut mrkdwn_objects = 0;
        check(body, "", &mut mrkdwn_objects);
        assert!(mrkdwn_objects > 3, "the message has mrkdwn text objects");
    }

    #[test]
    fn tenant_text_cannot_link_mention_or_format() {
        let alert = hostile_alert(AlertKind::New);
        let signer = LinkSigner::new("0123456789abcdef0123");
        let actions = ActionSigner::new(
            signer,
            "https://a.example",
            std::time::Duration::from_secs(60),
        )
        .actions(&alert, "slack", Utc::now());
        let body = payload(&alert, &actions, Some("C123"));
        assert_inert(&body);
        // Shown, not dropped: the operator sees what the attacker wrote.
        let text = body.to_string();
        assert!(text.contains("&lt;!channel&gt;"), "{text}");
        assert!(text.contains("&lt;U+202E&gt;"), "{text}");
        assert!(text.contains("ˋcodeˋ"), "{text}");
        assert!(
            text.contains("Audit record"),
            "the audit record is shown: {text}"
        );
        assert!(
            text.contains("`&lt;http://x.example|click&gt;`"),
            "the client IP is a code span: {text}"
        );
        assert!(
            !notification(&alert).contains("evil"),
            "no tenant text in the notification"
        );
        for h in HOSTILE {
            assert!(!notification(&alert).contains(h));
        }
        assert_inert(&payload(&hostile_campaign(), &[], None));
    }

    #[test]
    fn limits_are_respected() {
        assert_eq!(cut("é".repeat(200), 150).chars().count(), 150);
        assert_eq!(cut("short".into(), 150), "short");
        let spans = cut(format!("a `{}`", "x".repeat(300)), 100);
        assert_eq!(spans.matches('`').count() % 2, 0, "{spans}");
    }
}
