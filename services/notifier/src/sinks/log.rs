//! The log sink: one structured `info` line per alert, with its approve / remove
//! links. Always on — the default when nothing else is configured, the audit trail
//! in the logs otherwise, and how the operator CLI's all-in-one mode shows alerts.
//!
//! The line goes to the `fwdwatch::alert` target, so it can be kept while other
//! notifier logs are filtered (`RUST_LOG=warn,fwdwatch::alert=info`), or silenced
//! in benchmarks.

use async_trait::async_trait;

use super::{Sink, SinkError, text};
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

#[async_trait]
impl Sink for LogSink {
    fn name(&self) -> &str {
        "log"
    }

    fn route(&self) -> &Route {
        &self.route
    }

    async fn send(&self, alert: &PendingAlert, actions: &[TargetActions]) -> Result<(), SinkError> {
        if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
            return Ok(());
        }
        let d = alert.detection.as_ref();
        let join =
            |f: fn(&TargetActions) -> &str| actions.iter().map(f).collect::<Vec<_>>().join(" ");
        let approve = join(|a| a.approve.url.as_str());
        let remove = join(|a| a.remove.url.as_str());
        let mut traits = d.map(text::traits).unwrap_or_default();
        traits.extend(d.map(text::paths).unwrap_or_default());
        traits.extend(text::coverage(alert));
        let traits = traits.join("; ");
        let victims = alert
            .victims
            .iter()
            .map(|v| format!("{}/{}", v.tenant_id, v.mailbox.as_deref().unwrap_or("-")))
            .collect::<Vec<_>>()
            .join(" ");
        tracing::info!(
            target: TARGET,
            alert_id = %alert.alert_id,
            kind = alert.kind.as_str(),
            severity = %alert.severity(),
            customer = %alert.tenant_name(),
            tenant = %alert.tenant_id,
            mailbox = d.map_or("", |d| d.mailbox_address()),
            signal = d.map_or("", |d| d.signal.as_str()),
            targets = %d.map(|d| d.targets.join(",")).unwrap_or_default(),
            rule = %d.and_then(text::rule).unwrap_or_default(),
            traits = %traits,
            collector = alert.collector.as_deref().unwrap_or(""),
            victims = %victims,
            fingerprint = alert.fingerprint.as_deref().unwrap_or(""),
            approve = %approve,
            remove = %remove,
            "{}",
            text::summary(alert)
        );
        Ok(())
    }
}
