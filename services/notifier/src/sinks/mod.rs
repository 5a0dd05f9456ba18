//! Where alerts go: one small [`Sink`] per destination (Slack, Teams, a generic
//! JSON webhook, the log), each rendering the same [`PendingAlert`] in its own
//! format. Routing (severity, tenants), signing of actions, pacing ([`gate`]),
//! retries, back-off and parking live once in `outbox::Dispatcher`; a sink only
//! renders and sends once.
//!
//! Secrets (webhook URLs, the bot token) are held as `SecretString` and never
//! appear in errors: transport errors are stripped of their URL, and the dispatcher
//! strips the alert's action tokens from any error text a receiver echoes back.
//!
//! Rule names, display names, customer names and addresses come from tenants and are
//! attacker-controlled: every renderer keeps them text — never a link, a mention or
//! formatting — with the helpers of [`text`] (`visible`, `defuse_links`) and its own
//! format's escaping.

pub mod gate;
pub mod log;
pub mod slack;
pub mod teams;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fwdwatch_shared::contracts::{AlertKind, DeliveryPath, Detection, HidingAction, Signal};

pub use gate::{GatePass, SinkGate, SinkLimits};

use crate::alert::{PendingAlert, TargetActions};
use crate::settings::{NotifierConfig, Route};

/// What a sink knows about the delivery it is asked to make.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendContext {
    /// An earlier attempt may have reached the receiver (a retry after a timeout, or
    /// an alert taken over from a notifier that died mid-send): a sink that can find
    /// its earlier message updates it instead of sending another.
    pub maybe_sent_before: bool,
    /// When set, any earlier message was sent before this instant (by another
    /// process, or an earlier delivery): what the sink read of the receiver after it
    /// is good enough to look in. `None`: an attempt of this delivery may have just
    /// reached it, so look afresh.
    pub sent_before: Option<std::time::Instant>,
}

/// A destination for alerts.
#[async_trait]
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// Short stable name (`slack`, `teams`, `webhook`, `log`): recorded in the
    /// `AlertEvent`, in the action tokens (`channel`) and in dead-letter headers.
    fn name(&self) -> &str;

    /// Which alerts this sink receives.
    fn route(&self) -> &Route;

    /// Sends `alert` once. `actions` holds the signed approve / remove pair per target
    /// (empty when links are disabled, the alert cannot be acted on, or the sink does
    /// not [take actions](Sink::takes_actions)).
    async fn send(&self, alert: &PendingAlert, actions: &[TargetActions]) -> Result<(), SinkError>;

    /// [`send`](Sink::send) with the delivery's context. Returns a receipt to keep
    /// with the alert (the Slack Web API's `channel/ts` of the posted message).
    async fn deliver(
        &self,
        alert: &PendingAlert,
        actions: &[TargetActions],
        _context: &SendContext,
    ) -> Result<Option<String>, SinkError> {
        self.send(alert, actions).await.map(|()| None)
    }

    /// Whether approve / remove tokens are signed for this sink. A token reaches
    /// only the channel it was made for; the log is not such a channel.
    fn takes_actions(&self) -> bool {
        true
    }

    /// In-process sinks (the log) are neither paced nor recorded one by one.
    fn is_local(&self) -> bool {
        false
    }

    /// How hard the receiver may be pushed.
    fn limits(&self) -> SinkLimits {
        SinkLimits::default()
    }
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

    /// The receiver said "too many requests": slow down, this is not a failure of
    /// the alert (it does not count towards `notifier.sink_attempts`).
    pub fn is_throttled(&self) -> bool {
        matches!(self, SinkError::Status { status: 429, .. })
    }

    /// The same error with every occurrence of `secrets` (the alert's action tokens
    /// and links, which a receiver may echo back in its answer) replaced — and
    /// anything shaped like a token (`eyJ…`, what every token starts with), since an
    /// answer cut short holds a token cut short — so it can be logged and put in a
    /// dead-letter header.
    pub fn redacted(self, secrets: &[&str]) -> Self {
        let scrub = |mut text: String| {
            for secret in secrets.iter().filter(|s| !s.is_empty()) {
                text = text.replace(secret, "<redacted>");
            }
            redact_token_like(&text)
        };
        match self {
            SinkError::Status {
                status,
                detail,
                retry_after,
            } => SinkError::Status {
                status,
                detail: scrub(detail),
                retry_after,
            },
            SinkError::Transport(text) => SinkError::Transport(scrub(text)),
            SinkError::Refused { reason, retryable } => SinkError::Refused {
                reason: scrub(reason),
                retryable,
            },
        }
    }
}

/// Replaces every run that looks like a link token or the start of one (base64url
/// JSON, `eyJ…`, with or without its `.signature`) by `<redacted>`.
fn redact_token_like(text: &str) -> String {
    let is_token_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("eyJ") {
        let (before, from) = rest.split_at(at);
        out.push_str(before);
        let starts_word = !before.chars().next_back().is_some_and(is_token_char);
        let run = from
            .char_indices()
            .find(|(_, c)| !is_token_char(*c))
            .map_or(from.len(), |(i, _)| i);
        if starts_word {
            out.push_str("<redacted>");
        } else {
            out.push_str(&from[..run.max(3)]);
        }
        rest = &from[run.max(3)..];
    }
    out.push_str(rest);
    out
}

/// A `Retry-After` value: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (when.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
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
        .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
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
pub(crate) fn transport(error: reqwest::Error) -> SinkError {
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
pub(crate) fn excerpt(text: &str) -> String {
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
                // The collector is attacker-controlled: it is shown as a fact of its
                // own, never in a headline (which some formats render as plain text
                // that a client may turn into a link).
                let tenants = alert.tenants().len();
                format!(
                    "Campaign: one external address collects from {} mailbox{} in {} tenant{}",
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

    /// An audit event's record in one plain line (operation, time, actor, client
    /// IP: attacker text, escaped by each sink, never a link).
    pub fn audit(d: &Detection) -> Option<String> {
        d.audit.as_ref().map(|a| a.describe())
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

    /// A one-line summary with the tenant's own text as it is (the console; each
    /// sink renders that text through [`visible`] and its own escaping).
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

    /// Characters that change how text looks without being seen: controls (a
    /// newline forging a log line, an escape sequence driving a terminal), bidi
    /// overrides (`U+202E` reversing `moc.live` into `evil.com`), zero-width and
    /// other invisible formatting characters, line/paragraph separators.
    pub fn is_invisible(c: char) -> bool {
        c.is_control()
            || matches!(
                c,
                '\u{00AD}'
                    | '\u{034F}'
                    | '\u{061C}'
                    | '\u{115F}'
                    | '\u{1160}'
                    | '\u{17B4}'
                    | '\u{17B5}'
                    | '\u{180B}'..='\u{180F}'
                    | '\u{200B}'..='\u{200F}'
                    | '\u{2028}'..='\u{202E}'
                    | '\u{2060}'..='\u{206F}'
                    | '\u{3164}'
                    | '\u{FE00}'..='\u{FE0F}'
                    | '\u{FEFF}'
                    | '\u{FFA0}'
                    | '\u{FFF9}'..='\u{FFFB}'
                    | '\u{1BCA0}'..='\u{1BCA3}'
                    | '\u{1D173}'..='\u{1D17A}'
                    | '\u{E0000}'..='\u{E0FFF}'
            )
    }

    /// Tenant text made safe to show as text anywhere: every [invisible](is_invisible)
    /// character is written out as `<U+XXXX>`, so what an operator reads is what is
    /// there. Everything else is kept exactly.
    pub fn visible(text: &str) -> std::borrow::Cow<'_, str> {
        if !text.chars().any(is_invisible) {
            return std::borrow::Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len() + 16);
        for c in text.chars() {
            if is_invisible(c) {
                out.push_str(&format!("<U+{:04X}>", c as u32));
            } else {
                out.push(c);
            }
        }
        std::borrow::Cow::Owned(out)
    }

    /// The zero-width word joiner [`defuse_links`] inserts.
    pub const WORD_JOINER: char = '\u{2060}';

    /// [`visible`] text that no auto-linker turns into a link: a word joiner after
    /// every `.`, `:` and `@` breaks the host names, schemes and mail addresses
    /// clients detect (`https://login.microsoftonline.com.evil.example/` stays text).
    /// For formats that auto-link and have no code span (Teams cards). The word
    /// joiners are invisible, but they are part of a copied address.
    pub fn defuse_links(text: &str) -> String {
        let text = visible(text);
        let mut out = String::with_capacity(text.len() + 8);
        for c in text.chars() {
            out.push(c);
            if matches!(c, '.' | ':' | '@') {
                out.push(WORD_JOINER);
            }
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::alert::tests::pending;
    use fwdwatch_shared::contracts::CampaignVictim;

    /// Tenant text an attacker controls, meant to become a link, a mention or
    /// formatting, or to hide what it says.
    pub(crate) const HOSTILE: &[&str] = &[
        "https://login.microsoftonline.com.evil.example/",
        "<!channel>",
        "<@U123>",
        "*bold*",
        "_it_",
        "~gone~",
        "`code`",
        "<http://x.example|click>",
        "[x](http://y.example)",
        "@here",
        "\u{202e}elpmaxe.live",
        "a\u{200b}b\u{2066}c\u{feff}",
        "line\nbreak\u{1b}[31m",
        "&amp; &lt;",
    ];

    /// An alert whose every tenant-supplied text is hostile.
    pub(crate) fn hostile_alert(kind: AlertKind) -> PendingAlert {
        let mut alert = pending(kind);
        let d = alert.detection.as_mut().expect("detection");
        d.tenant_name = format!("Contoso {}", HOSTILE.join(" "));
        d.rule_name = Some(HOSTILE.join(" "));
        d.rule_id = Some("<!here>".into());
        if let Some(m) = d.mailbox.as_mut() {
            m.display_name = HOSTILE.join(" ");
            m.primary_smtp_address = "vic\u{200b}tim@login.microsoftonline.com.evil.example".into();
        }
        d.targets = vec![
            "collector@login.microsoftonline.com.evil.example".into(),
            "https://login.microsoftonline.com.evil.example/@x".into(),
        ];
        // An audit record's text is the attacker's too (operation, actor, IP).
        d.audit = Some(fwdwatch_shared::contracts::AuditRecord {
            operation: HOSTILE.join(" "),
            actor: HOSTILE.join(" "),
            client_ip: "<http://x.example|click>".into(),
            ..fwdwatch_shared::contracts::AuditRecord::example()
        });
        alert
    }

    /// A campaign whose collector and victims are hostile.
    pub(crate) fn hostile_campaign() -> PendingAlert {
        let mut alert = pending(AlertKind::Campaign);
        alert.detection = None;
        alert.fingerprint = None;
        alert.collector = Some("drop@login.microsoftonline.com.evil.example".into());
        alert.victims = HOSTILE
            .iter()
            .enumerate()
            .map(|(i, h)| CampaignVictim {
                tenant_id: format!("t{i}"),
                tenant_name: (*h).to_owned(),
                mailbox: Some(format!("{h}@evil.example")),
                fingerprint: format!("f{i}"),
            })
            .collect();
        alert
    }

    #[test]
    fn visible_writes_out_what_cannot_be_seen() {
        assert_eq!(text::visible("plain é"), "plain é");
        assert_eq!(
            text::visible("a\u{202e}b\nc\u{200b}d"),
            "a<U+202E>b<U+000A>c<U+200B>d"
        );
        let defused = text::defuse_links("https://a.evil.example/@x");
        assert!(!defused.contains("://"), "{defused}");
        assert!(!defused.contains(".e"), "{defused}");
        assert_eq!(
            defused.replace(text::WORD_JOINER, ""),
            "https://a.evil.example/@x"
        );
        // A word joiner the attacker sent is shown, not mistaken for ours.
        assert_eq!(text::defuse_links("a\u{2060}b"), "a<U+2060>b");
    }

    #[test]
    fn throttling_and_retry_after() {
        let now: chrono::DateTime<chrono::Utc> = "2026-11-28T19:00:00Z".parse().expect("t");
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sat, 28 Nov 2026 19:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sat, 28 Nov 2026 18:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        let throttled = SinkError::Status {
            status: 429,
            detail: "slow down token-abc".into(),
            retry_after: Some(Duration::from_secs(1)),
        };
        assert!(throttled.is_throttled() && throttled.is_retryable());
        let shown = throttled.redacted(&["token-abc"]).to_string();
        assert!(
            !shown.contains("token-abc") && shown.contains("<redacted>"),
            "{shown}"
        );
        // An answer cut short: the token in it is cut short too.
        let cut = SinkError::Status {
            status: 500,
            detail: r#"{"url":"https://a.example/act/eyJ2IjoxLCJhY3Rpb24iOiJhcHByb3ZlIiwidGVuYW"#
                .into(),
            retry_after: None,
        };
        let shown = cut.redacted(&[]).to_string();
        assert!(!shown.contains("eyJ2Ijox"), "{shown}");
        assert!(shown.contains("/act/<redacted>"), "{shown}");
        assert_eq!(
            redact_token_like("keyJoe and eyJ, cut: /act/eyJ"),
            "keyJoe and <redacted>, cut: /act/<redacted>"
        );
    }

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
        assert_eq!(text::audit(d), None, "only audit events carry a record");
    }

    #[test]
    fn an_audit_event_says_when_who_and_from_where() {
        let mut alert = crate::alert::tests::pending(AlertKind::New);
        let d = alert.detection.as_mut().expect("detection");
        d.signal = Signal::AuditEvent;
        d.audit = Some(fwdwatch_shared::contracts::AuditRecord::example());
        let d = alert.detection.as_ref().expect("detection");
        assert_eq!(
            text::audit(d).as_deref(),
            Some(
                "New-InboxRule at 2026-11-28 18:42:07 UTC by victim@contoso.com from 203.0.113.7:50123"
            )
        );
        assert!(text::signal(d.signal).starts_with("Audit log event"));
    }
}
