//! `AlertEvent`: a record of every alert the notifier sent, published on
//! `fwdwatch.events` with routing key `alert.<kind>` so alerts can be audited.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Detection, Message, type_tag};

type_tag!(AlertEventType, "alert");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A forward seen for the first time (or with a changed target).
    New,
    /// Still open after the reminder interval.
    Reminder,
    /// Gone from a complete scan of its tenant.
    Resolved,
    /// One external address collecting from several mailboxes or tenants.
    Campaign,
    /// A tenant that was scanned before can no longer be read (consent revoked,
    /// Exchange role removed, GDAP relationship ended, repeated failures). Its open
    /// detections are kept, not resolved, while it is dark.
    CoverageLost,
    /// A dark tenant was scanned completely again.
    CoverageRestored,
    /// A forward fwdwatch removed (verified) is forwarding again: re-enabled or
    /// recreated. Always high severity.
    Reappeared,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::New => "new",
            AlertKind::Reminder => "reminder",
            AlertKind::Resolved => "resolved",
            AlertKind::Campaign => "campaign",
            AlertKind::CoverageLost => "coverage_lost",
            AlertKind::CoverageRestored => "coverage_restored",
            AlertKind::Reappeared => "reappeared",
        }
    }
}

/// Why a tenant went dark (or that it is readable again), for coverage alerts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Coverage {
    #[serde(default)]
    pub tenant_name: String,
    /// What failed, in Microsoft's words where there are some.
    pub reason: String,
    /// What to do about it.
    #[serde(default)]
    pub remedy: Option<String>,
    /// The check that failed (`access`, `accepted_domains`…), when one did.
    #[serde(default)]
    pub check: Option<super::Check>,
    /// The last time the tenant was scanned completely.
    #[serde(default)]
    pub last_complete_scan: Option<DateTime<Utc>>,
    /// When the tenant went dark.
    pub since: DateTime<Utc>,
    /// Open detections kept while the tenant is dark.
    #[serde(default)]
    pub open_detections: u64,
}

/// One mailbox forwarding to a campaign's collector address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CampaignVictim {
    pub tenant_id: String,
    #[serde(default)]
    pub tenant_name: String,
    #[serde(default)]
    pub mailbox: Option<String>,
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "AlertEvent", example = AlertEvent::example())]
pub struct AlertEvent {
    #[serde(rename = "type")]
    pub kind: AlertEventType,
    /// Always 1 for this version of the contract.
    pub version: u32,
    pub alert_id: String,
    pub alert: AlertKind,
    pub tenant_id: String,
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// The detection alerted on (new, reminder, resolved).
    #[serde(default)]
    pub detection: Option<Detection>,
    /// Campaigns: the shared external address and every mailbox sending to it.
    #[serde(default)]
    pub collector: Option<String>,
    #[serde(default)]
    pub victims: Vec<CampaignVictim>,
    /// Coverage alerts: why the tenant went dark, or since when it was.
    #[serde(default)]
    pub coverage: Option<Coverage>,
    /// Sinks that accepted the alert (`slack`, `teams`, `webhook`, `log`).
    pub sinks: Vec<String>,
    pub sent_at: DateTime<Utc>,
}

impl AlertEvent {
    pub fn example() -> Self {
        let detection = Detection::example();
        Self {
            kind: AlertEventType::Tag,
            version: Self::VERSION,
            alert_id: format!("new:{}", detection.fingerprint),
            alert: AlertKind::New,
            tenant_id: detection.tenant_id.clone(),
            fingerprint: Some(detection.fingerprint.clone()),
            detection: Some(detection),
            collector: None,
            victims: vec![],
            coverage: None,
            sinks: vec!["slack".into(), "log".into()],
            sent_at: "2026-11-28T19:00:05Z".parse().expect("valid example time"),
        }
    }
}

impl Message for AlertEvent {
    const TYPE: &'static str = "alert";
    const VERSION: u32 = 1;
    fn version(&self) -> u32 {
        self.version
    }
    fn message_id(&self) -> String {
        self.alert_id.clone()
    }
}
