//! The log sink: one structured `info` line per alert. Always on — the default when
//! nothing else is configured, the audit trail in the logs otherwise.
//!
//! It never carries an approve / remove link or token (anyone who can read the logs
//! could act with one): the line names the alert's fingerprint and how to act on it
//! from a terminal (`fwdwatch approve <fingerprint>` / `fwdwatch remove
//! <fingerprint>`, which go through the actioner like a chat button). Tenant text in
//! it is passed through `text::visible`, so a rule name cannot forge a log line
//! with a newline or drive a terminal with escape sequences.
//!
//! The line goes to the `fwdwatch::alert` target, so it can be kept while other
//! notifier logs are filtered (`RUST_LOG=warn,fwdwatch::alert=info`), or silenced
//! in benchmarks.

use async_trait::async_trait;
use fwdwatch_shared::contracts::AlertKind;

use super::text::{self, visible};
use super::{Sink, SinkError};
use crate::alert::{PendingAlert, TargetActions};
use crate::settings::Route;

/// The tracing target of alert lines.
pub const TARGET: &str = "fwdwatch::alert";

#[derive(Debug, Default)]
pub struct LogSink {
    route: Route,
}

impl LogSink {
    pub fn new() -> Self {
        Self::default()
    }
}

/// How an operator acts on `alert` from a terminal: the `fwdwatch approve` and
/// `fwdwatch remove` commands (empty for alerts that cannot be acted on).
pub fn commands(alert: &PendingAlert) -> (String, String) {
    match (&alert.fingerprint, alert.kind) {
        (Some(fp), AlertKind::New | AlertKind::Reminder) => (
            format!("fwdwatch approve {fp}"),
            format!("fwdwatch remove {fp}"),
        ),
        _ => (String::new(), String::new()),
    }
}

/// The line's message: the headline and the forward, tenant text made visible.
pub fn message(alert: &PendingAlert) -> String {
    match (&alert.detection, alert.kind) {
        (Some(d), kind) if kind != AlertKind::Campaign => format!(
            "{}: {} — {} → {}",
            text::title(alert),
            visible(&d.tenant_name),
            visible(
                d.mailbox
                    .as_ref()
                    .map_or("(tenant-wide rule)", |m| m.primary_smtp_address.as_str())
            ),
            visible(&d.targets.join(", "))
        ),
        _ => format!(
            "{} ({})",
            text::title(alert),
            visible(
                alert
                    .collector
                    .as_deref()
                    .or(alert.fingerprint.as_deref())
                    .unwrap_or("")
            )
        ),
    }
}

#[async_trait]
impl Sink for LogSink {
    fn name(&self) -> &str {
        "log"
    }

    fn route(&self) -> &Route {
        &self.route
    }

    fn takes_actions(&self) -> bool {
        false
    }

    fn is_local(&self) -> bool {
        true
    }

    async fn send(
        &self,
        alert: &PendingAlert,
        _actions: &[TargetActions],
    ) -> Result<(), SinkError> {
        if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
            return Ok(());
        }
        let d = alert.detection.as_ref();
        // Delivery paths and coverage lines hold tenant text (addresses, group
        // names, Microsoft's error text): shown through `visible` like the rest.
        let mut traits = d.map(text::traits).unwrap_or_default();
        traits.extend(
            d.and_then(text::audit)
                .map(|a| format!("audit record: {a}")),
        );
        traits.extend(d.map(text::paths).unwrap_or_default());
        traits.extend(text::coverage(alert));
        let traits = traits.join("; ");
        let victims = alert
            .victims
            .iter()
            .map(|v| format!("{}/{}", v.tenant_id, v.mailbox.as_deref().unwrap_or("-")))
            .collect::<Vec<_>>()
            .join(" ");
        let (approve, remove) = commands(alert);
        // A campaign across tenants belongs to no one customer (its victims say whose).
        let (customer, tenant) = if alert.tenants().len() == 1 {
            (alert.tenant_name(), alert.tenant_id.as_str())
        } else {
            ("", "")
        };
        tracing::info!(
            target: TARGET,
            alert_id = %visible(&alert.alert_id),
            kind = alert.kind.as_str(),
            severity = %alert.severity(),
            customer = %visible(customer),
            tenant = %visible(tenant),
            mailbox = %visible(d.map_or("", |d| d.mailbox_address())),
            display_name = %visible(d.and_then(|d| d.mailbox.as_ref()).map_or("", |m| m.display_name.as_str())),
            signal = d.map_or("", |d| d.signal.as_str()),
            targets = %visible(&d.map(|d| d.targets.join(",")).unwrap_or_default()),
            rule = %visible(&d.and_then(text::rule).unwrap_or_default()),
            traits = %visible(&traits),
            collector = %visible(alert.collector.as_deref().unwrap_or("")),
            victims = %visible(&victims),
            fingerprint = %visible(alert.fingerprint.as_deref().unwrap_or("")),
            approve = %approve,
            remove = %remove,
            "{}",
            message(alert)
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::tests::pending;

    #[test]
    fn acting_is_a_command_with_the_fingerprint_not_a_link() {
        let alert = pending(AlertKind::New);
        let fp = alert.fingerprint.clone().expect("fingerprint");
        let (approve, remove) = commands(&alert);
        assert_eq!(approve, format!("fwdwatch approve {fp}"));
        assert_eq!(remove, format!("fwdwatch remove {fp}"));
        assert_eq!(
            commands(&pending(AlertKind::Resolved)),
            (String::new(), String::new())
        );
        assert!(
            !LogSink::new().takes_actions(),
            "no token is signed for the log"
        );
    }

    #[test]
    fn tenant_text_cannot_forge_a_line_or_drive_a_terminal() {
        let mut alert = pending(AlertKind::New);
        if let Some(d) = alert.detection.as_mut() {
            d.tenant_name = "Contoso\n2026-11-28T19:00:00Z INFO fake line\u{1b}[2J".into();
            d.targets = vec!["a@evil.example\u{202e}moc".into()];
        }
        let line = message(&alert);
        assert!(
            !line.contains('\n') && !line.contains('\u{1b}') && !line.contains('\u{202e}'),
            "{line}"
        );
        assert!(
            line.contains("<U+000A>") && line.contains("<U+001B>") && line.contains("<U+202E>"),
            "{line}"
        );
    }
}
