//! Where alerts go: one small [`Sink`] per destination (Slack, Teams, a generic
//! JSON webhook, the log), each rendering the same [`PendingAlert`] in its own
//! format. Routing (severity, tenants), signing of actions, retries, back-off and
//! parking live once in `outbox::Dispatcher`; a sink only renders and sends once.
//!
//! Secrets (webhook URLs, the bot token) are held as `SecretString` and never
//! appear in errors: transport errors are stripped of their URL.

pub mod log;
pub mod slack;
pub mod teams;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fwdwatch_shared::contracts::{AlertKind, DeliveryPath, Detection, HidingAction, Signal};

use crate::alert::{PendingAlert, TargetActions};
use crate::settings::{NotifierConfig, Route};

/// A destination for alerts.
#[async_trait]
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// Short stable name (`slack`, `teams`, `webhook`, `log`): recorded in the
    /// `AlertEvent`, in the action tokens (`channel`) and in dead-letter headers.
    fn name(&self) -> &str;

    /// Which alerts this sink receives.
    fn route(&self) -> &Route;

    /// Sends `alert` once. `actions` holds the signed approve / remove pair per target
    /// (empty when links are disabled or the alert cannot be acted on).
    async fn send(&self, alert: &PendingAlert, actions: &[TargetActions]) -> Result<(), SinkError>;
}

/// Why one attempt at a sink failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    #[error("HTTP {status}: {detail}")]
    Status {
        status: u16,
        detail: String,
        retry_after: Option<Duration>,
    },
    #[error("request failed: {0}")]
    Transport(String),
    #[error("refused: {reason}")]
    Refused { reason: String, retryable: bool },
}

impl SinkError {
    /// Whether another attempt can succeed (5xx, 429, timeouts, connection errors).
    /// A 400 or 404 will not fix itself: it is parked at once.
    pub fn is_retryable(&self) -> bool {
        match self {
            SinkError::Status { status, .. } => {
                matches!(*status, 408 | 425 | 429) || *status >= 500
            }
            SinkError::Transport(_) => true,
            SinkError::Refused { retryable, .. } => *retryable,
        }
    }

    /// The receiver's `Retry-After`, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SinkError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The HTTP client every sink shares: bounded time, no redirects (a webhook that
/// redirects elsewhere is a misconfiguration, and following it would resend the
/// body, signature included, to another host).
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("fwdwatch-notifier/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// POSTs a JSON body; returns the response text of a 2xx answer.
pub(crate) async fn post_json(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<String, SinkError> {
    let mut request = client
        .post(url)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.map_err(transport)?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text = response.text().await.map_err(transport)?;
    if status.is_success() {
        return Ok(text);
    }
    Err(SinkError::Status {
        status: status.as_u16(),
        detail: excerpt(&text),
        retry_after,
    })
}

/// A transport error as text, without the (secret) URL.
fn transport(error: reqwest::Error) -> SinkError {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    let error = error.without_url();
    let mut text = format!("{kind}: {error}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    SinkError::Transport(text)
}

/// The start of a response body, on one line, for an error message.
fn excerpt(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    if line.trim().is_empty() {
        "(empty body)".into()
    } else {
        line.trim().to_owned()
    }
}

/// The sinks the configuration asks for, the log sink always included.
pub fn from_config(config: &NotifierConfig) -> Vec<Arc<dyn Sink>> {
    let client = http_client(config.sink_timeout);
    let mut sinks: Vec<Arc<dyn Sink>> = vec![Arc::new(log::LogSink::new())];
    if let Some(slack) = &config.slack {
        sinks.push(Arc::new(slack::SlackSink::new(
            slack.clone(),
            client.clone(),
        )));
    }
    if let Some(teams) = &config.teams {
        sinks.push(Arc::new(teams::TeamsSink::new(
            teams.clone(),
            client.clone(),
        )));
    }
    if let Some(webhook) = &config.webhook {
        sinks.push(Arc::new(webhook::WebhookSink::new(webhook.clone(), client)));
    }
    sinks
}

/// Wording shared by every renderer, so Slack, Teams, the webhook and the log say
/// the same thing.
pub mod text {
    use super::*;

    /// The headline.
    pub fn title(alert: &PendingAlert) -> String {
        match alert.kind {
            AlertKind::New => format!("New external forward ({})", alert.severity()),
            AlertKind::Reminder => {
                format!(
                    "Reminder: external forward still open ({})",
                    alert.severity()
                )
            }
            AlertKind::Resolved => "Resolved: external forward is gone".to_owned(),
            AlertKind::Reappeared => {
                "Reappeared: a forward fwdwatch removed is forwarding again (high)".to_owned()
            }
            AlertKind::CoverageLost if alert.reminder > 0 => format!(
                "Reminder: coverage still lost — {} cannot be read",
                alert.tenant_name()
            ),
            AlertKind::CoverageLost => {
                format!(
                    "Coverage lost: {} can no longer be read",
                    alert.tenant_name()
                )
            }
            AlertKind::CoverageRestored => {
                format!(
                    "Coverage restored: {} is scanned again",
                    alert.tenant_name()
                )
            }
            AlertKind::Campaign => {
                let tenants = alert.tenants().len();
                format!(
                    "Campaign: {} collects from {} mailbox{} in {} tenant{}",
                    alert.collector.as_deref().unwrap_or("?"),
                    alert.victims.len(),
                    if alert.victims.len() == 1 { "" } else { "es" },
                    tenants,
                    if tenants == 1 { "" } else { "s" },
                )
            }
        }
    }

    pub fn signal(signal: Signal) -> &'static str {
        match signal {
            Signal::ForwardingSmtpAddress => "Mailbox forwarding (ForwardingSmtpAddress)",
            Signal::ForwardingAddress => "Mailbox forwarding (ForwardingAddress → contact)",
            Signal::InboxRule => "Inbox rule",
            Signal::TransportRule => "Transport (mail-flow) rule",
            Signal::JournalRule => "Journal rule (copies of journaled mail)",
            Signal::OutboundConnector => "Outbound connector (smart host relay)",
            Signal::AuditEvent => "Audit log event (the forward was gone by the rescan)",
        }
    }

    /// Why addresses that look internal are outside: one line per path, e.g.
    /// `eve@gmail.com via team-sync@contoso.com (MailUniversalDistributionGroup) → …`.
    pub fn paths(d: &Detection) -> Vec<String> {
        d.paths.iter().map(DeliveryPath::describe).collect()
    }

    /// The lines of a coverage alert: reason, fix, since when, what is kept.
    pub fn coverage(alert: &PendingAlert) -> Vec<String> {
        let Some(c) = &alert.coverage else {
            return Vec::new();
        };
        let mut lines = vec![format!(
            "Customer: {} ({})",
            alert.tenant_name(),
            alert.tenant_id
        )];
        match alert.kind {
            AlertKind::CoverageRestored => {
                lines.push(format!(
                    "Dark since {}; a complete scan ran again.",
                    c.since.format("%Y-%m-%d %H:%M UTC")
                ));
            }
            _ => {
                lines.push(format!("Reason: {}", c.reason));
                if let Some(remedy) = &c.remedy {
                    lines.push(format!("Fix: {remedy}"));
                }
                lines.push(format!(
                    "Dark since {}",
                    c.since.format("%Y-%m-%d %H:%M UTC")
                ));
                if let Some(last) = c.last_complete_scan {
                    lines.push(format!(
                        "Last complete scan: {}",
                        last.format("%Y-%m-%d %H:%M UTC")
                    ));
                }
                lines.push(format!(
                    "{} open forward(s) kept while the tenant is dark; none is resolved until it can be read again.",
                    c.open_detections
                ));
            }
        }
        lines
    }

    pub fn hiding(action: HidingAction) -> &'static str {
        match action {
            HidingAction::DeleteMessage => "deletes the message",
            HidingAction::MarkAsRead => "marks as read",
            HidingAction::MoveToRssFeeds => "moves to RSS Feeds",
            HidingAction::MoveToArchive => "moves to Archive",
            HidingAction::MoveToDeletedItems => "moves to Deleted Items",
            HidingAction::MoveToConversationHistory => "moves to Conversation History",
            HidingAction::MoveToJunkEmail => "moves to Junk Email",
            HidingAction::StopProcessingRules => "stops processing further rules",
        }
    }

    /// The mailbox, or what a tenant-wide rule applies to.
    pub fn mailbox(d: &Detection) -> String {
        match &d.mailbox {
            Some(m) if !m.display_name.is_empty() => {
                format!("{} ({})", m.primary_smtp_address, m.display_name)
            }
            Some(m) => m.primary_smtp_address.clone(),
            None => "whole tenant (transport rule)".to_owned(),
        }
    }

    pub fn rule(d: &Detection) -> Option<String> {
        match (&d.rule_name, &d.rule_id) {
            (Some(name), Some(id)) => Some(format!("\"{name}\" (id {id})")),
            (Some(name), None) => Some(format!("\"{name}\"")),
            (None, Some(id)) => Some(format!("id {id}")),
            (None, None) => None,
        }
    }

    /// What makes this forward worse (or milder) than a plain one.
    pub fn traits(d: &Detection) -> Vec<String> {
        let mut traits = Vec::new();
        if d.hidden {
            traits.push("hidden rule (only visible with -IncludeHidden)".to_owned());
        }
        if !d.keeps_copy {
            traits.push("no copy kept in the mailbox".to_owned());
        }
        if !d.hiding_actions.is_empty() {
            let actions: Vec<&str> = d.hiding_actions.iter().map(|a| hiding(*a)).collect();
            traits.push(format!("hides mail: {}", actions.join(", ")));
        }
        if !d.enabled {
            traits.push("disabled".to_owned());
        }
        if !d.in_effect {
            traits.push("not in effect (ForwardingAddress takes precedence)".to_owned());
        }
        if d.unreadable {
            traits.push(
                "unreadable target (reported as written: fwdwatch cannot tell where it delivers)"
                    .to_owned(),
            );
        }
        traits
    }

    pub fn posture(d: &Detection) -> &'static str {
        if d.posture_blocked {
            "Tenant posture blocks external auto-forwarding today (still an indicator of compromise)"
        } else {
            "Tenant posture lets this forward leave the organisation"
        }
    }

    /// A one-line summary (Slack's notification text, the log line).
    pub fn summary(alert: &PendingAlert) -> String {
        match (&alert.detection, alert.kind) {
            (_, AlertKind::Campaign) => title(alert),
            (Some(d), _) => format!(
                "{}: {} — {} → {}",
                title(alert),
                d.tenant_name,
                d.mailbox
                    .as_ref()
                    .map_or("(tenant-wide rule)", |m| m.primary_smtp_address.as_str()),
                d.targets.join(", ")
            ),
            (None, AlertKind::CoverageLost | AlertKind::CoverageRestored) => {
                let reason = alert
                    .coverage
                    .as_ref()
                    .map(|c| c.reason.as_str())
                    .unwrap_or_default();
                format!("{}: {reason}", title(alert))
            }
            (None, _) => format!(
                "{} ({})",
                title(alert),
                alert.fingerprint.as_deref().unwrap_or("")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_errors() {
        let status = |s| SinkError::Status {
            status: s,
            detail: String::new(),
            retry_after: None,
        };
        assert!(status(500).is_retryable());
        assert!(status(503).is_retryable());
        assert!(status(429).is_retryable());
        assert!(!status(400).is_retryable());
        assert!(!status(404).is_retryable());
        assert!(SinkError::Transport("x".into()).is_retryable());
    }

    #[test]
    fn excerpt_is_one_short_line() {
        assert_eq!(excerpt("a\nb"), "a b");
        assert_eq!(excerpt(""), "(empty body)");
        assert_eq!(excerpt(&"x".repeat(500)).len(), 200);
    }

    #[test]
    fn wording() {
        let alert = crate::alert::tests::pending(AlertKind::New);
        let d = alert.detection.as_ref().expect("detection");
        assert_eq!(text::title(&alert), "New external forward (high)");
        let traits = text::traits(d).join("; ");
        assert!(traits.contains("hidden rule"), "{traits}");
        assert!(traits.contains("no copy kept"), "{traits}");
        assert!(
            traits.contains("marks as read, moves to RSS Feeds"),
            "{traits}"
        );
        assert!(text::summary(&alert).contains("victim@contoso.com → collector@evil.example"));
    }
}
