//! Answering the operator where they decided: Slack's `response_url`.
//!
//! A command may carry `reply_to` (the `response_url` of the Slack interaction
//! that produced it). When the command has run, the executor replaces the original
//! alert message with who did what and how it ended — which also takes the buttons
//! away, so nobody clicks an alert that is already handled. Refusals at the HTTP
//! edge are answered with an ephemeral message (only the clicker sees it).
//!
//! The actioner POSTs to that URL, so it must not be any URL: a command on the
//! queue or from the API could otherwise make the actioner call internal hosts
//! (SSRF). Only URLs under `actioner.reply_url_prefixes` (Slack's hooks host by
//! default) are used; others are refused when the command is accepted and skipped
//! (and logged) if they reach the executor anyway.
//!
//! A reply is best effort: the decision has been executed and audited whether or
//! not Slack accepts the message (the URL is valid 30 minutes, 5 uses).

use std::time::Duration;

use serde_json::{Value, json};

use fwdwatch_shared::contracts::{Channel, CommandAction, CommandOutcome, CommandResult};

/// Why a reply could not be delivered (logged, never fatal).
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    #[error("reply URL is not under actioner.reply_url_prefixes")]
    NotAllowed,
    #[error("posting the reply failed: {0}")]
    Http(String),
    #[error("the reply URL answered HTTP {0}")]
    Status(u16),
}

/// Posts messages to allowed `response_url`s.
#[derive(Debug, Clone)]
pub struct Replier {
    http: reqwest::Client,
    prefixes: Vec<String>,
}

impl Replier {
    pub fn new(prefixes: Vec<String>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            // A redirect could lead anywhere: the allow-list checks one URL only.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("fwdwatch-actioner/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let prefixes = prefixes
            .into_iter()
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        Ok(Self { http, prefixes })
    }

    /// Whether `url` may receive replies: a valid http(s) URL under a configured
    /// prefix. Compared on the parsed form so `https://hooks.slack.com.evil.net/`
    /// or userinfo tricks do not pass a prefix meant for `https://hooks.slack.com/`.
    pub fn allowed(&self, url: &str) -> bool {
        let Ok(parsed) = url::Url::parse(url) else {
            return false;
        };
        if !matches!(parsed.scheme(), "https" | "http") || !parsed.username().is_empty() {
            return false;
        }
        let normalised = parsed.as_str();
        self.prefixes.iter().any(|prefix| {
            url::Url::parse(prefix)
                .map(|p| {
                    let p = p.as_str();
                    // A prefix without a path ends in '/' once parsed, so the host is whole.
                    normalised.starts_with(p)
                })
                .unwrap_or(false)
        })
    }

    /// POSTs `message` (Slack message JSON) to `url`.
    pub async fn post(&self, url: &str, message: &Value) -> Result<(), ReplyError> {
        if !self.allowed(url) {
            return Err(ReplyError::NotAllowed);
        }
        let response = self
            .http
            .post(url)
            .json(message)
            .send()
            .await
            .map_err(|e| ReplyError::Http(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(ReplyError::Status(status.as_u16()))
        }
    }

    /// Posts in the background and logs a failure: for HTTP handlers that must
    /// answer Slack within 3 seconds.
    pub fn post_in_background(&self, url: String, message: Value) {
        let replier = self.clone();
        tokio::spawn(async move {
            if let Err(error) = replier.post(&url, &message).await {
                tracing::warn!(%error, "Could not answer in Slack.");
            }
        });
    }
}

/// An ephemeral message: only the person who clicked sees it; the alert stays.
pub fn ephemeral(text: &str) -> Value {
    json!({
        "response_type": "ephemeral",
        "replace_original": false,
        "text": text,
    })
}

fn icon(outcome: CommandOutcome) -> &'static str {
    match outcome {
        CommandOutcome::Done | CommandOutcome::Verified => ":white_check_mark:",
        CommandOutcome::NotVerified => ":warning:",
        CommandOutcome::Refused => ":no_entry:",
        CommandOutcome::Failed => ":x:",
    }
}

fn verb(action: CommandAction) -> &'static str {
    match action {
        CommandAction::Approve => "approve",
        CommandAction::Remove => "remove",
        CommandAction::RevokeApproval => "revoke the approval of",
    }
}

fn outcome_label(outcome: CommandOutcome) -> &'static str {
    match outcome {
        CommandOutcome::Done => "done",
        CommandOutcome::Verified => "removed and verified",
        CommandOutcome::NotVerified => "sent but NOT verified",
        CommandOutcome::Refused => "refused",
        CommandOutcome::Failed => "failed",
    }
}

/// Slack's mrkdwn treats `&`, `<` and `>` as control characters.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The one-line summary of a result, for Slack and for logs.
pub fn summary(result: &CommandResult, target: Option<&str>) -> String {
    let who = match result.issued_by.channel {
        Channel::Slack => format!("<@{}>", slack_escape(&result.issued_by.user_id)),
        _ if !result.issued_by.name.is_empty() => slack_escape(&result.issued_by.name),
        _ => slack_escape(&result.issued_by.user_id),
    };
    let what = match (result.mailbox.as_deref(), target) {
        (Some(mailbox), Some(target)) => format!(
            "the forward from `{}` to `{}`",
            slack_escape(mailbox),
            slack_escape(target)
        ),
        (Some(mailbox), None) => format!("the forward on `{}`", slack_escape(mailbox)),
        (None, Some(target)) => format!("the transport rule to `{}`", slack_escape(target)),
        (None, None) => "the forward".to_owned(),
    };
    format!(
        "{} {who} asked to {} {what} (tenant `{}`): *{}*. {}",
        icon(result.outcome),
        verb(result.action),
        slack_escape(&result.tenant_id),
        outcome_label(result.outcome),
        slack_escape(&result.detail),
    )
}

/// Replaces the original alert with the outcome (and so removes its buttons).
pub fn result_message(result: &CommandResult, target: Option<&str>, duplicate: bool) -> Value {
    let mut text = summary(result, target);
    if duplicate {
        text.push_str(" _(This decision had already been carried out; nothing was done again.)_");
    }
    json!({
        "replace_original": true,
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": format!("command `{}` · {}", slack_escape(&result.command_id), result.executed_at.format("%Y-%m-%d %H:%M:%S UTC"))}
            ]}
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_prefixes_receive_replies() {
        let replier = Replier::new(vec![
            "https://hooks.slack.com/".into(),
            "http://127.0.0.1:9999/hooks/".into(),
        ])
        .expect("replier");
        assert!(replier.allowed("https://hooks.slack.com/actions/T1/2/abc"));
        assert!(replier.allowed("http://127.0.0.1:9999/hooks/x"));
        for bad in [
            "https://hooks.slack.com.evil.net/actions",
            "https://user@hooks.slack.com/actions",
            "http://hooks.slack.com/actions",
            "http://127.0.0.1:9998/hooks/x",
            "http://127.0.0.1:9999/other",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(!replier.allowed(bad), "{bad}");
        }
    }

    #[test]
    fn result_message_names_who_what_and_outcome() {
        let mut result = CommandResult::example();
        result.issued_by.channel = Channel::Slack;
        result.issued_by.user_id = "U123".into();
        result.detail = "a <b> & c".into();
        let message = result_message(&result, Some("ap@accounting-partner.example"), false);
        let text = message["text"].as_str().expect("text");
        assert!(text.contains("<@U123>"), "{text}");
        assert!(text.contains("remove"), "{text}");
        assert!(text.contains("ap@accounting-partner.example"), "{text}");
        assert!(text.contains("removed and verified"), "{text}");
        assert!(text.contains("a &lt;b&gt; &amp; c"), "escaped: {text}");
        assert_eq!(message["replace_original"], json!(true));
        let again = result_message(&result, None, true);
        assert!(again["text"].as_str().expect("text").contains("already"));
    }
}
