//! An alert on its way out: what was decided (`PendingAlert`, the outbox entry) and
//! the signed approve / remove actions each sink attaches to it.
//!
//! A `PendingAlert` is written to Redis in the same atomic step as the state change
//! that decided it (the Lua script builds the same JSON), so it must stay readable
//! by both: plain fields, defaults for everything optional, no empty arrays
//! required (Lua's cjson cannot tell an empty array from an empty object, so it
//! simply leaves them out).

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use fwdwatch_shared::contracts::{
    AlertEvent, AlertEventType, AlertKind, CampaignVictim, CommandAction, Coverage, Detection,
    Message, Severity,
};
use fwdwatch_shared::links::{ActionClaims, LinkSigner, new_nonce};
use serde::{Deserialize, Serialize};

/// At most this many targets get their own approve / remove pair in one message
/// (Slack allows 50 blocks; a rule forwarding to more is listed, not buttoned).
pub const MAX_ACTION_TARGETS: usize = 10;

/// An alert decided by the lifecycle and not yet delivered everywhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingAlert {
    /// `new:<fp>:<episode>`, `reminder:<fp>:<episode>:<n>`, `resolved:<fp>:<episode>`,
    /// `campaign:<target>:<due>`: the same decision always gets the same id.
    pub alert_id: String,
    pub kind: AlertKind,
    pub tenant_id: String,
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// How many times this fingerprint was opened (a forward approved then expired,
    /// or resolved then back, starts a new episode and alerts again).
    #[serde(default)]
    pub episode: u64,
    /// Reminders sent in this episode, this one included.
    #[serde(default)]
    pub reminder: u64,
    #[serde(default)]
    pub first_seen: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub detection: Option<Detection>,
    /// Campaigns: the shared external address.
    #[serde(default)]
    pub collector: Option<String>,
    #[serde(default)]
    pub victims: Vec<CampaignVictim>,
    /// Coverage alerts: the tenant, why it went dark, since when.
    #[serde(default)]
    pub coverage: Option<Coverage>,
    /// Delivery progress, so a retry only redoes what is missing.
    #[serde(default)]
    pub sinks_done: Vec<String>,
    /// Sinks that gave up and whose copy was parked on the dead-letter queue.
    #[serde(default)]
    pub sinks_parked: Vec<String>,
    #[serde(default)]
    pub event_done: bool,
}

impl PendingAlert {
    /// Campaigns, lost coverage and a removed forward that came back are always
    /// urgent; otherwise the detection's severity.
    pub fn severity(&self) -> Severity {
        match self.kind {
            AlertKind::Reappeared | AlertKind::CoverageLost | AlertKind::Campaign => Severity::High,
            AlertKind::CoverageRestored => Severity::Low,
            _ => self
                .detection
                .as_ref()
                .map_or(Severity::High, |d| d.severity),
        }
    }

    /// The customer's name (a campaign's first victim's, for sinks that need one).
    pub fn tenant_name(&self) -> &str {
        if let Some(d) = &self.detection {
            return &d.tenant_name;
        }
        if let Some(c) = self.coverage.as_ref().filter(|c| !c.tenant_name.is_empty()) {
            return &c.tenant_name;
        }
        self.victims
            .iter()
            .find(|v| v.tenant_id == self.tenant_id)
            .map_or(self.tenant_id.as_str(), |v| v.tenant_name.as_str())
    }

    /// Every tenant the alert is about (one, or a campaign's several).
    pub fn tenants(&self) -> Vec<&str> {
        if self.kind == AlertKind::Campaign {
            let mut tenants: Vec<&str> =
                self.victims.iter().map(|v| v.tenant_id.as_str()).collect();
            tenants.sort_unstable();
            tenants.dedup();
            tenants
        } else {
            vec![self.tenant_id.as_str()]
        }
    }

    /// The audit record published on `{ns}.events` once the alert went out.
    pub fn to_event(&self, sinks: Vec<String>, sent_at: DateTime<Utc>) -> AlertEvent {
        AlertEvent {
            kind: AlertEventType::Tag,
            version: AlertEvent::VERSION,
            alert_id: self.alert_id.clone(),
            alert: self.kind,
            tenant_id: self.tenant_id.clone(),
            fingerprint: self.fingerprint.clone(),
            detection: self.detection.clone(),
            collector: self.collector.clone(),
            victims: self.victims.clone(),
            coverage: self.coverage.clone(),
            sinks,
            sent_at,
        }
    }

    /// The same alert restricted to the victims of `allowed` tenants (a sink routed
    /// to some tenants must not show it the others' mailboxes).
    pub fn for_tenants(&self, allowed: impl Fn(&str) -> bool) -> Option<PendingAlert> {
        if self.kind != AlertKind::Campaign {
            return allowed(&self.tenant_id).then(|| self.clone());
        }
        let victims: Vec<CampaignVictim> = self
            .victims
            .iter()
            .filter(|v| allowed(&v.tenant_id))
            .cloned()
            .collect();
        (!victims.is_empty()).then(|| PendingAlert {
            victims,
            ..self.clone()
        })
    }
}

/// Fixed-width RFC 3339 (UTC, milliseconds): the time format of every timestamp the
/// notifier stores, so the Lua scripts can compare times as strings.
pub fn stamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One signed action: the token (Slack button value) and its link (everything else).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedAction {
    pub token: String,
    /// `{link_base_url}/act/{token}`: the actioner's confirmation page (a GET never acts).
    pub url: String,
}

/// Approve and remove for one target of a detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetActions {
    pub target: String,
    pub approve: SignedAction,
    pub remove: SignedAction,
}

/// Signs approve / remove tokens for alerts (one fresh nonce per token).
#[derive(Debug, Clone)]
pub struct ActionSigner {
    signer: LinkSigner,
    base_url: String,
    ttl: Duration,
}

impl ActionSigner {
    pub fn new(signer: LinkSigner, base_url: &str, ttl: Duration) -> Self {
        Self {
            signer,
            base_url: base_url.trim_end_matches('/').to_owned(),
            ttl,
        }
    }

    /// The actions for `alert` as shown on `channel` (the sink's name, recorded in the
    /// token for the audit). Only open forwards (new, reminder) can be acted on.
    pub fn actions(
        &self,
        alert: &PendingAlert,
        channel: &str,
        now: DateTime<Utc>,
    ) -> Vec<TargetActions> {
        let Some(detection) = alert.detection.as_ref() else {
            return Vec::new();
        };
        if !matches!(alert.kind, AlertKind::New | AlertKind::Reminder) {
            return Vec::new();
        }
        let ttl = chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::hours(72));
        let exp = (now + ttl).timestamp();
        detection
            .targets
            .iter()
            .take(MAX_ACTION_TARGETS)
            .map(|target| {
                let sign = |action: CommandAction| {
                    let token = self.signer.sign(&ActionClaims {
                        v: 1,
                        action,
                        tenant_id: detection.tenant_id.clone(),
                        mailbox: detection.mailbox_address().to_owned(),
                        signal: detection.signal,
                        fingerprint: detection.fingerprint.clone(),
                        target: target.clone(),
                        rule_id: detection.rule_id.clone(),
                        exp,
                        nonce: new_nonce(),
                        channel: channel.to_owned(),
                    });
                    let url = format!("{}/act/{token}", self.base_url);
                    SignedAction { token, url }
                };
                TargetActions {
                    target: target.clone(),
                    approve: sign(CommandAction::Approve),
                    remove: sign(CommandAction::Remove),
                }
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn pending(kind: AlertKind) -> PendingAlert {
        let detection = Detection::example();
        PendingAlert {
            alert_id: format!("{}:{}:1", kind.as_str(), detection.fingerprint),
            kind,
            tenant_id: detection.tenant_id.clone(),
            fingerprint: Some(detection.fingerprint.clone()),
            episode: 1,
            reminder: 0,
            first_seen: Some(detection.observed_at),
            created_at: detection.observed_at,
            detection: Some(detection),
            collector: None,
            victims: vec![],
            coverage: None,
            sinks_done: vec![],
            sinks_parked: vec![],
            event_done: false,
        }
    }

    #[test]
    fn actions_are_signed_per_target_and_bind_the_forward() {
        let signer = LinkSigner::new("0123456789abcdef0123");
        let actions = ActionSigner::new(
            signer.clone(),
            "https://act.example/",
            Duration::from_secs(3600),
        );
        let now = Utc::now();
        let alert = pending(AlertKind::New);
        let list = actions.actions(&alert, "teams", now);
        assert_eq!(list.len(), 1);
        let a = &list[0];
        assert!(
            a.approve.url.starts_with("https://act.example/act/"),
            "{}",
            a.approve.url
        );
        let claims = signer.verify(&a.remove.token, now).expect("valid token");
        assert_eq!(claims.action, CommandAction::Remove);
        assert_eq!(claims.target, "collector@evil.example");
        assert_eq!(claims.mailbox, "victim@contoso.com");
        assert_eq!(claims.channel, "teams");
        assert_eq!(claims.rule_id.as_deref(), Some("15394007230974001153"));
        assert!(claims.exp > now.timestamp() + 3500);
        let approve = signer.verify(&a.approve.token, now).expect("valid");
        assert_ne!(approve.nonce, claims.nonce, "every token has its own nonce");

        assert!(
            actions
                .actions(&pending(AlertKind::Resolved), "slack", now)
                .is_empty()
        );
    }

    #[test]
    fn pending_alert_reads_lua_shaped_json() {
        // What the Lua script writes: no empty arrays, cjson's escaped slashes.
        let detection = serde_json::to_string(&Detection::example()).expect("json");
        let json = format!(
            r#"{{"alert_id":"new:fp:1","kind":"new","tenant_id":"t","fingerprint":"fp","episode":1,"reminder":0,"first_seen":"2026-11-28T19:00:04.000Z","created_at":"2026-11-28T19:00:05.000Z","note":"a\/b","detection":{detection}}}"#
        );
        let alert: PendingAlert = serde_json::from_str(&json).expect("decodes");
        assert_eq!(alert.kind, AlertKind::New);
        assert!(alert.victims.is_empty() && alert.sinks_done.is_empty());
        assert_eq!(alert.detection.expect("detection").severity, Severity::High);
    }

    #[test]
    fn campaign_is_restricted_to_a_sinks_tenants() {
        let mut alert = pending(AlertKind::Campaign);
        alert.detection = None;
        alert.victims = ["t1", "t2", "t2"]
            .iter()
            .map(|t| CampaignVictim {
                tenant_id: (*t).into(),
                tenant_name: format!("name {t}"),
                mailbox: Some("m@x".into()),
                fingerprint: "f".into(),
            })
            .collect();
        assert_eq!(alert.tenants(), vec!["t1", "t2"]);
        let only = alert.for_tenants(|t| t == "t2").expect("some");
        assert_eq!(only.victims.len(), 2);
        assert!(alert.for_tenants(|t| t == "t3").is_none());
        assert_eq!(alert.severity(), Severity::High);
    }
}
