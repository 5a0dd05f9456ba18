//! Microsoft Teams: an Adaptive Card posted to a Power Automate Workflows webhook
//! ("Post to a channel when a webhook request is received").
//!
//! Webhook-posted cards are one-way — `Action.Submit` does not work there — so
//! Approve and Remove are `Action.OpenUrl` links to the actioner's confirmation page
//! (`{link_base_url}/act/{token}`). Opening the link changes nothing (mail and chat
//! link scanners prefetch URLs); the page's POST acts, once.
//!
//! The Workflows URL carries its credential (`sig=`) and is never logged.
//! Card text supports a Markdown subset, so tenant-supplied text is escaped: a rule
//! named `[click](https://evil.example)` shows as text, not as a link.

use async_trait::async_trait;
use fwdwatch_shared::contracts::AlertKind;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::{Sink, SinkError, post_json, text};
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

fn fact(title: &str, value: &str) -> Value {
    json!({"title": escape(title), "value": escape(value)})
}

fn open_url(title: &str, url: &str, destructive: bool) -> Value {
    let mut action = json!({"type": "Action.OpenUrl", "title": title, "url": url});
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
        body.push(json!({"type": "FactSet", "facts": [
            fact("Collector", alert.collector.as_deref().unwrap_or("?")),
            fact("Severity", alert.severity().as_str()),
        ]}));
        let victims: Vec<Value> = alert
            .victims
            .iter()
            .take(40)
            .map(|v| {
                fact(
                    if v.tenant_name.is_empty() {
                        &v.tenant_id
                    } else {
                        &v.tenant_name
                    },
                    v.mailbox.as_deref().unwrap_or("(tenant-wide rule)"),
                )
            })
            .collect();
        body.push(
            json!({"type": "TextBlock", "text": "Victims", "weight": "Bolder", "wrap": true}),
        );
        body.push(json!({"type": "FactSet", "facts": victims}));
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
        let mut facts = vec![
            fact("Customer", &d.tenant_name),
            fact("Mailbox", &text::mailbox(d)),
            fact("Target", &d.targets.join(", ")),
            fact("Signal", text::signal(d.signal)),
            fact("Severity", d.severity.as_str()),
        ];
        if let Some(rule) = text::rule(d) {
            facts.push(fact("Rule", &rule));
        }
        if let Some(first) = alert.first_seen {
            facts.push(fact(
                "First seen",
                &first.format("%Y-%m-%d %H:%M UTC").to_string(),
            ));
        }
        if alert.kind == AlertKind::Reminder {
            facts.push(fact("Reminder", &format!("#{}", alert.reminder)));
        }
        facts.push(fact("Fingerprint", &d.fingerprint));
        body.push(json!({"type": "FactSet", "facts": facts}));
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

    #[test]
    fn markdown_from_a_tenant_is_escaped() {
        let mut alert = pending(AlertKind::New);
        if let Some(d) = alert.detection.as_mut() {
            d.rule_name = Some("[click](https://evil.example)".into());
        }
        let text = payload(&alert, &[]).to_string();
        assert!(
            text.contains(r"\\[click\\](https://evil.example)"),
            "{text}"
        );
        assert!(!text.contains("\"actions\""), "no links → no actions");
    }
}
