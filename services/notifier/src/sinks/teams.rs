//! Microsoft Teams: an Adaptive Card posted to a Power Automate Workflows webhook
//! ("Post to a channel when a webhook request is received").
//!
//! Webhook-posted cards are one-way — `Action.Submit` does not work there — so
//! Approve and Remove are `Action.OpenUrl` links to the actioner's confirmation page
//! (`{link_base_url}/act/{token}`). Opening the link changes nothing (mail and chat
//! link scanners prefetch URLs); the page's POST acts, once.
//!
//! The Workflows URL carries its credential (`sig=`) and is never logged.
//!
//! **Tenant text stays text.** `TextBlock`s and facts render a Markdown subset and
//! clients turn bare URLs and addresses into links, so tenant-supplied text (rule
//! names, display names, customer names, addresses) never goes into one: it is shown
//! in `RichTextBlock` `TextRun`s, which render no Markdown, with its invisible
//! characters written out and a zero-width word joiner after every `.`, `:` and `@`
//! (`text::defuse_links`), so `https://login.microsoftonline.com.evil.example/` or
//! `[click](https://evil.example)` is shown as the text it is. Our own wording goes in
//! `TextBlock`s, escaped all the same.

use async_trait::async_trait;
use fwdwatch_shared::contracts::AlertKind;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::text::{self, defuse_links, visible};
use super::{Sink, SinkError, SinkLimits, post_json};
use crate::alert::{PendingAlert, TargetActions};
use crate::settings::{Route, TeamsConfig};

#[derive(Debug)]
pub struct TeamsSink {
    config: TeamsConfig,
    client: reqwest::Client,
}

impl TeamsSink {
    pub fn new(config: TeamsConfig, client: reqwest::Client) -> Self {
        Self { config, client }
    }
}

/// Escapes the Markdown Teams renders in TextBlocks and facts.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        // Brackets are what make a link; parentheses alone are harmless, and
        // escaping them would only add noise.
        if matches!(
            c,
            '\\' | '[' | ']' | '*' | '_' | '`' | '#' | '>' | '<' | '~'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Tenant text: a `TextRun` (no Markdown), links defused.
fn untrusted(value: &str) -> Value {
    json!({"type": "RichTextBlock", "inlines": [{"type": "TextRun", "text": defuse_links(value)}]})
}

/// Our own text, as a `TextBlock` (escaped anyway).
fn ours(value: &str) -> Value {
    json!({"type": "TextBlock", "text": escape(value), "wrap": true})
}

/// One fact: a label column and a value column (a `FactSet` would render the value
/// as Markdown).
fn row(label: Value, value: Value) -> Value {
    json!({
        "type": "ColumnSet",
        "spacing": "None",
        "columns": [
            {"type": "Column", "width": "110px", "items": [label]},
            {"type": "Column", "width": "stretch", "items": [value]},
        ]
    })
}

fn label(text: &str) -> Value {
    json!({"type": "TextBlock", "text": escape(text), "weight": "Bolder", "wrap": true})
}

fn open_url(title: &str, url: &str, destructive: bool) -> Value {
    // Button titles are not rendered as Markdown or links; invisible characters are
    // still written out.
    let mut action = json!({"type": "Action.OpenUrl", "title": visible(title), "url": url});
    if destructive {
        action["style"] = json!("destructive");
    } else {
        action["style"] = json!("positive");
    }
    action
}

/// The Adaptive Card (the `content` of the attachment).
pub fn card(alert: &PendingAlert, actions: &[TargetActions]) -> Value {
    let color = match alert.kind {
        AlertKind::Resolved => "Good",
        AlertKind::Reminder => "Warning",
        _ => "Attention",
    };
    // Our wording only: the title never carries tenant text.
    let mut body = vec![json!({
        "type": "TextBlock",
        "text": escape(&text::title(alert)),
        "size": "Large",
        "weight": "Bolder",
        "color": color,
        "wrap": true
    })];
    let mut card_actions = Vec::new();

    if alert.kind == AlertKind::Campaign {
        body.push(row(
            label("Collector"),
            untrusted(alert.collector.as_deref().unwrap_or("?")),
        ));
        body.push(row(label("Severity"), ours(alert.severity().as_str())));
        body.push(
            json!({"type": "TextBlock", "text": "Victims", "weight": "Bolder", "wrap": true}),
        );
        for v in alert.victims.iter().take(40) {
            body.push(row(
                untrusted(if v.tenant_name.is_empty() {
                    &v.tenant_id
                } else {
                    &v.tenant_name
                }),
                untrusted(v.mailbox.as_deref().unwrap_or("(tenant-wide rule)")),
            ));
        }
        if alert.victims.len() > 40 {
            body.push(json!({"type": "TextBlock", "text": format!("…and {} more", alert.victims.len() - 40), "wrap": true}));
        }
    } else if alert.coverage.is_some() {
        body.push(json!({
            "type": "TextBlock",
            "text": text::coverage(alert).iter().map(|n| format!("- {}", escape(n))).collect::<Vec<_>>().join("\r"),
            "wrap": true
        }));
    } else if let Some(d) = &alert.detection {
        body.push(row(label("Customer"), untrusted(&d.tenant_name)));
        body.push(row(label("Mailbox"), untrusted(&text::mailbox(d))));
        body.push(row(label("Target"), untrusted(&d.targets.join(", "))));
        body.push(row(label("Signal"), ours(text::signal(d.signal))));
        body.push(row(label("Severity"), ours(d.severity.as_str())));
        if let Some(rule) = text::rule(d) {
            body.push(row(label("Rule"), untrusted(&rule)));
        }
        if let Some(audit) = text::audit(d) {
            body.push(row(label("Audit record"), untrusted(&audit)));
        }
        if let Some(first) = alert.first_seen {
            body.push(row(
                label("First seen"),
                ours(&first.format("%Y-%m-%d %H:%M UTC").to_string()),
            ));
        }
        if alert.kind == AlertKind::Reminder {
            body.push(row(
                label("Reminder"),
                ours(&format!("#{}", alert.reminder)),
            ));
        }
        body.push(row(label("Fingerprint"), untrusted(&d.fingerprint)));
        let mut notes = text::traits(d);
        notes.extend(text::paths(d));
        notes.push(text::posture(d).to_owned());
        if alert.kind == AlertKind::Resolved {
            notes.push("No longer present in a complete scan of the tenant.".to_owned());
        }
        body.push(json!({
            "type": "TextBlock",
            "text": notes.iter().map(|n| format!("- {}", escape(n))).collect::<Vec<_>>().join("\r"),
            "wrap": true,
            "isSubtle": true
        }));
        if actions.len() == 1 {
            card_actions.push(open_url("Approve", &actions[0].approve.url, false));
            card_actions.push(open_url("Remove", &actions[0].remove.url, true));
        } else {
            for a in actions {
                body.push(json!({
                    "type": "ActionSet",
                    "actions": [
                        open_url(&format!("Approve {}", a.target), &a.approve.url, false),
                        open_url(&format!("Remove {}", a.target), &a.remove.url, true),
                    ]
                }));
            }
        }
        if !actions.is_empty() {
            body.push(json!({
                "type": "TextBlock",
                "text": "Approve / Remove open a confirmation page; nothing changes until you confirm there.",
                "wrap": true,
                "isSubtle": true,
                "size": "Small"
            }));
        }
    }

    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "msteams": {"width": "Full"},
        "body": body,
    });
    if !card_actions.is_empty() {
        card["actions"] = json!(card_actions);
    }
    card
}

/// The message a Workflows webhook expects.
pub fn payload(alert: &PendingAlert, actions: &[TargetActions]) -> Value {
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card(alert, actions),
        }]
    })
}

#[async_trait]
impl Sink for TeamsSink {
    fn name(&self) -> &str {
        "teams"
    }

    fn route(&self) -> &Route {
        &self.config.route
    }

    fn limits(&self) -> SinkLimits {
        self.config.limits
    }

    async fn send(&self, alert: &PendingAlert, actions: &[TargetActions]) -> Result<(), SinkError> {
        let body =
            serde_json::to_vec(&payload(alert, actions)).map_err(|e| SinkError::Refused {
                reason: e.to_string(),
                retryable: false,
            })?;
        // Workflows answer 202 Accepted; any 2xx is success.
        post_json(
            &self.client,
            self.config.url.expose_secret().trim(),
            &[],
            body,
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use fwdwatch_shared::links::LinkSigner;

    use super::*;
    use crate::alert::ActionSigner;
    use crate::alert::tests::pending;
    use crate::sinks::tests::{hostile_alert, hostile_campaign};

    #[test]
    fn card_has_open_url_actions_to_the_confirmation_page() {
        let alert = pending(AlertKind::New);
        let signer = LinkSigner::new("0123456789abcdef0123");
        let actions = ActionSigner::new(
            signer.clone(),
            "https://act.example",
            std::time::Duration::from_secs(60),
        )
        .actions(&alert, "teams", Utc::now());
        let body = payload(&alert, &actions);
        assert_eq!(body["type"], "message");
        let content = &body["attachments"][0]["content"];
        assert_eq!(
            body["attachments"][0]["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(content["type"], "AdaptiveCard");
        let acts = content["actions"].as_array().expect("actions");
        assert_eq!(acts.len(), 2);
        for a in acts {
            assert_eq!(a["type"], "Action.OpenUrl");
            let url = a["url"].as_str().expect("url");
            let token = url
                .strip_prefix("https://act.example/act/")
                .expect("link base");
            assert!(signer.verify(token, Utc::now()).is_ok());
        }
        assert!(!body.to_string().contains("Action.Submit"));
    }

    /// Every `TextRun` and `TextBlock` text in the card, with its element type.
    fn texts(value: &Value, out: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) => {
                if let (Some(Value::String(kind)), Some(Value::String(text))) =
                    (map.get("type"), map.get("text"))
                {
                    out.push((kind.clone(), text.clone()));
                }
                for v in map.values() {
                    texts(v, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| texts(v, out)),
            _ => {}
        }
    }

    fn assert_inert(body: &Value) {
        let mut all = Vec::new();
        texts(body, &mut all);
        assert!(
            all.iter().any(|(k, _)| k == "TextRun"),
            "tenant text in TextRuns"
        );
        for (kind, text) in &all {
            // Markdown is only ever rendered in TextBlocks: no tenant text there.
            if kind == "TextBlock" {
                for needle in [
                    "evil",
                    "login.microsoftonline",
                    "[x]",
                    "*bold*",
                    "@here",
                    "<!channel>",
                ] {
                    assert!(!text.contains(needle), "{needle} in a TextBlock: {text}");
                }
            }
            // No scheme, host name or address left for an auto-linker to find.
            let chars: Vec<char> = text.chars().collect();
            for (i, c) in chars.iter().enumerate() {
                if kind == "TextRun" && matches!(c, '.' | ':' | '@') {
                    assert_eq!(
                        chars.get(i + 1),
                        Some(&text::WORD_JOINER),
                        "{c:?} not defused in {text}"
                    );
                }
                if kind == "TextRun" && text::is_invisible(*c) {
                    assert_eq!(*c, text::WORD_JOINER, "invisible {c:?} in {text}");
                }
            }
        }
        // Action titles are shown as they are, but never hide anything.
        let actions = body.to_string();
        assert!(!actions.contains('\u{202e}'), "{actions}");
    }

    #[test]
    fn tenant_text_cannot_link_mention_or_format() {
        let alert = hostile_alert(AlertKind::New);
        let signer = LinkSigner::new("0123456789abcdef0123");
        let actions = ActionSigner::new(
            signer,
            "https://act.example",
            std::time::Duration::from_secs(60),
        )
        .actions(&alert, "teams", Utc::now());
        let body = payload(&alert, &actions);
        assert_inert(&body);
        let shown = body.to_string();
        assert!(
            shown.contains("[x](http:"),
            "shown as text, not dropped: {shown}"
        );
        assert!(shown.contains("<U+202E>"), "{shown}");
        assert_inert(&payload(&hostile_campaign(), &[]));
        // The links we put there ourselves are intact.
        assert!(shown.contains("https://act.example/act/"), "{shown}");
    }
}
