//! `Detection`: one external forward found in one tenant (scanner → notifier).
//!
//! This is where a forward becomes a detection on the wire; the scanner builds it
//! with `classify` (normalised targets, fingerprint, severity).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Message, type_tag};

type_tag!(DetectionType, "detection");

/// Where a forward is configured. The names are a public contract (routing keys
/// `detection.<signal>`, CSV columns, the simulator's truth).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// The mailbox's `ForwardingSmtpAddress` (`smtp:x@y`).
    ForwardingSmtpAddress,
    /// The mailbox's `ForwardingAddress`, resolved to the recipient's real address.
    ForwardingAddress,
    /// An inbox rule (`ForwardTo`, `ForwardAsAttachmentTo`, `RedirectTo`), hidden ones included.
    InboxRule,
    /// A transport (mail-flow) rule: `RedirectMessageTo`, `BlindCopyTo`,
    /// `AddToRecipients`, `CopyTo`, and incident reports (`GenerateIncidentReport`).
    TransportRule,
    /// A journal rule (`Get-JournalRule`) whose `JournalEmailAddress` is outside:
    /// a copy of every journaled message leaves the tenant.
    JournalRule,
    /// An outbound connector whose smart hosts are servers the tenant does not own,
    /// used for all mail or by a transport rule (`RouteMessageOutboundConnector`).
    /// Its targets are host names or IP addresses, not mail addresses.
    OutboundConnector,
    /// A forwarding change seen only in the audit log (Office 365 Management
    /// Activity API): the forward no longer existed when the tenant was rescanned.
    AuditEvent,
}

impl Signal {
    pub const ALL: [Signal; 7] = [
        Signal::ForwardingSmtpAddress,
        Signal::ForwardingAddress,
        Signal::InboxRule,
        Signal::TransportRule,
        Signal::JournalRule,
        Signal::OutboundConnector,
        Signal::AuditEvent,
    ];

    /// The signals a state scan reads (everything but audit events).
    pub const SCANNED: [Signal; 6] = [
        Signal::ForwardingSmtpAddress,
        Signal::ForwardingAddress,
        Signal::InboxRule,
        Signal::TransportRule,
        Signal::JournalRule,
        Signal::OutboundConnector,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::ForwardingSmtpAddress => "forwarding_smtp_address",
            Signal::ForwardingAddress => "forwarding_address",
            Signal::InboxRule => "inbox_rule",
            Signal::TransportRule => "transport_rule",
            Signal::JournalRule => "journal_rule",
            Signal::OutboundConnector => "outbound_connector",
            Signal::AuditEvent => "audit_event",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|signal| signal.as_str() == s)
    }

    /// Whether the forward lives on one mailbox (mailbox forwarding and inbox
    /// rules); the others act on the whole tenant. An audit event names a mailbox
    /// when the change it records was made on one.
    pub fn is_per_mailbox(self) -> bool {
        matches!(
            self,
            Signal::ForwardingSmtpAddress | Signal::ForwardingAddress | Signal::InboxRule
        )
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How urgent a detection is. Ordered: `Low < Medium < High`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an inbox rule does besides forwarding that keeps the victim from noticing.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum HidingAction {
    DeleteMessage,
    MarkAsRead,
    MoveToRssFeeds,
    MoveToArchive,
    MoveToDeletedItems,
    MoveToConversationHistory,
    MoveToJunkEmail,
    StopProcessingRules,
}

/// The mailbox a forward belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Mailbox {
    /// Primary SMTP address, lower-cased: the mailbox's identity in fwdwatch.
    pub primary_smtp_address: String,
    #[serde(default)]
    pub display_name: String,
    /// Exchange's `RecipientTypeDetails`, e.g. `UserMailbox`, `SharedMailbox`.
    #[serde(default)]
    pub recipient_type: String,
}

/// One recipient object mail passes through on its way out: a mail user, a guest,
/// a mail contact, or a (nested) group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct PathHop {
    /// The recipient's primary SMTP address (lower-cased domain), or its identity
    /// when it has none.
    pub address: String,
    /// Exchange's `RecipientTypeDetails`, e.g. `GuestMailUser`,
    /// `MailUniversalDistributionGroup`, `GroupMailbox`.
    pub kind: String,
    /// The display name (attacker-controlled text: never markup).
    #[serde(default)]
    pub name: String,
}

/// Why an address that looks internal is an outside target: the recipients mail to
/// it went through, outermost first (what the forward names, then nested groups).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct DeliveryPath {
    /// The outside target (one of the detection's `targets`).
    pub target: String,
    /// The recipient objects on the way, outermost first.
    pub via: Vec<PathHop>,
}

impl DeliveryPath {
    /// One plain-text line: `eve@gmail.com via team-sync@contoso.com
    /// (MailUniversalDistributionGroup) → …`. Plain text only: every sink escapes it.
    pub fn describe(&self) -> String {
        let via: Vec<String> = self
            .via
            .iter()
            .map(|h| format!("{} ({})", h.address, h.kind))
            .collect();
        format!("{} via {}", self.target, via.join(" → "))
    }
}

/// One external forward. One per mailbox forwarding field, per inbox rule, per
/// transport rule, per journal rule, per outbound connector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "Detection", example = Detection::example())]
pub struct Detection {
    #[serde(rename = "type")]
    pub kind: DetectionType,
    /// Always 1 for this version of the contract.
    pub version: u32,
    /// Stable per (run, fingerprint): a redelivered job yields the same id.
    pub detection_id: String,
    pub run_id: String,
    pub tenant_id: String,
    pub tenant_name: String,
    /// Absent for transport rules, which act on the whole tenant.
    #[serde(default)]
    pub mailbox: Option<Mailbox>,
    pub signal: Signal,
    /// Inbox rule `RuleIdentity` (a u64, as a decimal string) or transport rule Guid.
    #[serde(default)]
    pub rule_id: Option<String>,
    #[serde(default)]
    pub rule_name: Option<String>,
    /// The external targets, normalised (`local@a-label.domain`), sorted, deduplicated:
    /// where mail is really delivered (a guest's or mail user's external address, a
    /// group's outside members). Outbound connectors: smart host names or IPs.
    /// Unreadable targets appear as Exchange wrote them (see `unreadable`).
    pub targets: Vec<String>,
    /// For targets reached through recipient objects (mail users, guests, contacts,
    /// groups): the objects on the way, so an operator sees why an address in one
    /// of the tenant's own domains is outside.
    #[serde(default)]
    pub paths: Vec<DeliveryPath>,
    /// Some target could not be read (an invalid domain, an address literal, an
    /// identity no lookup resolves): reported as Exchange wrote it, at high severity.
    /// fwdwatch fails closed: what it cannot read is never assumed internal.
    #[serde(default)]
    pub unreadable: bool,
    /// What Exchange showed before normalisation and resolution (e.g. a contact's name).
    #[serde(default)]
    pub raw_targets: Vec<String>,
    /// False for disabled rules and for transport rules in audit mode.
    pub enabled: bool,
    /// Whether the mailbox keeps its own copy (false: forward-only, redirects).
    pub keeps_copy: bool,
    /// An inbox rule visible only with `Get-InboxRule -IncludeHidden`.
    #[serde(default)]
    pub hidden: bool,
    /// The hiding actions the same rule takes.
    #[serde(default)]
    pub hiding_actions: Vec<HidingAction>,
    /// Mailbox forwards: false for `ForwardingSmtpAddress` when `ForwardingAddress` is
    /// also set (Exchange uses the latter). Always true for rules.
    #[serde(default = "default_true")]
    pub in_effect: bool,
    /// The tenant's posture (outbound policy / remote domain) stops this forward today.
    #[serde(default)]
    pub posture_blocked: bool,
    pub severity: Severity,
    /// Stable hash of (tenant, mailbox, signal, rule id, sorted targets).
    pub fingerprint: String,
    pub observed_at: DateTime<Utc>,
    /// Signal `audit_event`: the audit record this detection stands for (its time,
    /// actor and client IP; attacker-controlled text). Absent for other signals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<super::AuditRecord>,
}

fn default_true() -> bool {
    true
}

impl Detection {
    pub fn example() -> Self {
        Self {
            kind: DetectionType::Tag,
            version: Self::VERSION,
            detection_id: "run-20261128T190000Z-7f3a:9c1e4b7a0d2f6e8a1b3c5d7e9f0a2b4c".into(),
            run_id: "run-20261128T190000Z-7f3a".into(),
            tenant_id: "4fdbff88-1c2d-4e5f-8a9b-0c1d2e3f4a5b".into(),
            tenant_name: "Contoso Ltd".into(),
            mailbox: Some(Mailbox {
                primary_smtp_address: "victim@contoso.com".into(),
                display_name: "Vic Tim".into(),
                recipient_type: "UserMailbox".into(),
            }),
            signal: Signal::InboxRule,
            rule_id: Some("15394007230974001153".into()),
            rule_name: Some(".".into()),
            targets: vec!["collector@evil.example".into()],
            paths: vec![],
            unreadable: false,
            raw_targets: vec!["\"collector\" [SMTP:collector@evil.example]".into()],
            enabled: true,
            keeps_copy: false,
            hidden: true,
            hiding_actions: vec![HidingAction::MarkAsRead, HidingAction::MoveToRssFeeds],
            in_effect: true,
            posture_blocked: false,
            severity: Severity::High,
            fingerprint: "9c1e4b7a0d2f6e8a1b3c5d7e9f0a2b4c".into(),
            observed_at: "2026-11-28T19:00:04Z".parse().expect("valid example time"),
            audit: None,
        }
    }

    /// The mailbox's primary SMTP address, or `""` for tenant-wide (transport) rules.
    pub fn mailbox_address(&self) -> &str {
        self.mailbox
            .as_ref()
            .map(|m| m.primary_smtp_address.as_str())
            .unwrap_or("")
    }
}

impl Message for Detection {
    const TYPE: &'static str = "detection";
    const VERSION: u32 = 1;
    fn version(&self) -> u32 {
        self.version
    }
    fn message_id(&self) -> String {
        self.detection_id.clone()
    }
}
