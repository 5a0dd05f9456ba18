//! `TenantSummary`: what one scan of one tenant checked, found and failed (scanner → notifier).
//!
//! The notifier resolves a detection only after a *complete* scan of its tenant
//! that no longer contains it, so a check that failed must be told apart from a
//! check that found nothing: every check reports `ok`, `failed` (with a reason)
//! or `skipped`.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Message, Signal, TenantRef, type_tag};

type_tag!(TenantSummaryType, "tenant_summary");

/// One thing the scanner reads from a tenant.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// Token for the tenant (consent, credentials).
    Access,
    AcceptedDomains,
    /// `Get-Mailbox`: mailbox forwarding fields.
    Mailboxes,
    /// `Get-Recipient`: resolving `ForwardingAddress` and `EX:` targets.
    Recipients,
    /// `Get-InboxRule -IncludeHidden` for every mailbox.
    InboxRules,
    TransportRules,
    /// Outbound spam policies and remote domains.
    Posture,
    /// `Get-DistributionGroupMember` / `Get-UnifiedGroupLinks` of the groups that
    /// forwards target (nested groups included): where mail to a group goes.
    GroupMembers,
    /// `Get-JournalRule`.
    JournalRules,
    /// `Get-OutboundConnector`.
    OutboundConnectors,
}

impl Check {
    /// The checks whose failure would hide a detection of `signal`: a partial scan
    /// must not resolve what a failed check would have seen.
    ///
    /// Every SMTP target is looked up in the recipients (a guest or a group can
    /// hide behind an internal-looking address), so every signal needs them.
    /// Audit events are never resolved by a scan: nothing covers them.
    pub fn needed_for(signal: Signal) -> &'static [Check] {
        match signal {
            Signal::ForwardingSmtpAddress | Signal::ForwardingAddress => &[
                Check::Access,
                Check::AcceptedDomains,
                Check::Mailboxes,
                Check::Recipients,
                Check::GroupMembers,
            ],
            Signal::InboxRule => &[
                Check::Access,
                Check::AcceptedDomains,
                Check::Mailboxes,
                Check::Recipients,
                Check::GroupMembers,
                Check::InboxRules,
            ],
            Signal::TransportRule => &[
                Check::Access,
                Check::AcceptedDomains,
                Check::Recipients,
                Check::GroupMembers,
                Check::TransportRules,
            ],
            Signal::JournalRule => &[
                Check::Access,
                Check::AcceptedDomains,
                Check::Recipients,
                Check::GroupMembers,
                Check::JournalRules,
            ],
            Signal::OutboundConnector => &[
                Check::Access,
                Check::AcceptedDomains,
                Check::TransportRules,
                Check::OutboundConnectors,
            ],
            Signal::AuditEvent => &[],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Ok,
    Failed,
    /// Not attempted (an earlier check it depends on failed).
    Skipped,
    /// Ran, but part of it was not read (a mailbox answered NotFound although it was
    /// just listed, an empty or garbled answer, a truncated listing, a group larger
    /// than the member cap): `TenantSummary::incomplete` names what. Detections the
    /// missing part would have covered stay open.
    Incomplete,
}

/// Why a call to Microsoft 365 failed, as a small closed set an operator can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The app is not consented in the tenant (AADSTS65001, 700016, 90099…).
    ConsentMissing,
    /// Authenticated but not allowed (Exchange role missing, 403).
    Forbidden,
    /// Credentials rejected (bad secret, expired refresh token).
    Unauthorized,
    /// Still throttled after every retry.
    Throttled,
    NotFound,
    /// 5xx, timeouts, connection failures after every retry.
    Upstream,
    /// An answer that could not be understood.
    Malformed,
    /// Anything else Microsoft refused (e.g. a 400 with Exchange's message).
    Rejected,
    /// The partner's GDAP relationship with the customer ended (terminated or
    /// expired), or the customer is missing from the partner's customer list.
    RelationshipEnded,
}

impl ErrorKind {
    /// Whether trying the same scan again later can help.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::Throttled | ErrorKind::Upstream | ErrorKind::Malformed
        )
    }
}

/// A failure with the reason an operator needs, and the fix where one is known.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ScanError {
    pub kind: ErrorKind,
    /// Microsoft's own message (Exchange's inner exception, the AADSTS text).
    pub message: String,
    /// What to do about it, e.g. "grant admin consent for the fwdwatch app in this tenant".
    #[serde(default)]
    pub remedy: Option<String>,
    /// The AADSTS code or HTTP status, when there is one.
    #[serde(default)]
    pub code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CheckReport {
    pub check: Check,
    pub status: CheckStatus,
    /// Objects read (mailboxes, rules, policies…).
    #[serde(default)]
    pub items: u64,
    #[serde(default)]
    pub error: Option<ScanError>,
}

/// A part of a check that was not read: the detections it would have covered stay
/// open (only a complete read resolves).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IncompleteRead {
    pub check: Check,
    /// The mailbox whose read is missing; absent when the gap is tenant-wide.
    #[serde(default)]
    pub mailbox: Option<String>,
    /// What happened, e.g. "NotFound for a mailbox listed seconds earlier".
    pub reason: String,
}

/// An outbound spam filter policy's stance on automatic external forwarding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OutboundPolicy {
    pub name: String,
    pub is_default: bool,
    /// `On`, `Off` or `Automatic` (which Microsoft now treats as Off).
    pub auto_forwarding_mode: String,
    /// Senders / domains a non-default policy is scoped to by its rule.
    #[serde(default)]
    pub applies_to: Vec<String>,
}

/// Whether forwards can leave the tenant at all. A blocked forward is still an
/// indicator of compromise; posture only lowers its severity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Posture {
    #[serde(default)]
    pub outbound_policies: Vec<OutboundPolicy>,
    /// Remote domains (by `DomainName`, `*` for the default) with `AutoForwardEnabled` true.
    #[serde(default)]
    pub remote_domains_allowing_auto_forward: Vec<String>,
    /// Remote domains with `AutoForwardEnabled` false.
    #[serde(default)]
    pub remote_domains_blocking_auto_forward: Vec<String>,
    /// True when the default policy allows external auto-forwarding (`On`) and the
    /// default remote domain allows it; `None` when posture could not be read.
    #[serde(default)]
    pub external_forwarding_allowed: Option<bool>,
}

/// One per tenant per run, published after the tenant's detections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "TenantSummary", example = TenantSummary::example())]
pub struct TenantSummary {
    #[serde(rename = "type")]
    pub kind: TenantSummaryType,
    /// Always 1 for this version of the contract.
    pub version: u32,
    pub run_id: String,
    pub job_id: String,
    pub tenant: TenantRef,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Every check, in the order it ran.
    pub checks: Vec<CheckReport>,
    #[serde(default)]
    pub mailboxes: u64,
    #[serde(default)]
    pub inbox_rules: u64,
    #[serde(default)]
    pub transport_rules: u64,
    pub detections: u64,
    /// Fingerprints of every detection this scan published (sorted).
    pub fingerprints: Vec<String>,
    #[serde(default)]
    pub posture: Posture,
    /// What an incomplete check did not read (see `CheckStatus::Incomplete`).
    #[serde(default)]
    pub incomplete: Vec<IncompleteRead>,
    /// Things an operator should act on before coverage is lost, e.g. a GDAP
    /// relationship ending within 14 days.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// When the partner's GDAP relationship with this customer ends, when known.
    #[serde(default)]
    pub relationship_ends_at: Option<DateTime<Utc>>,
}

impl TenantSummary {
    /// True when every check ran and succeeded and nothing was left unread.
    pub fn is_complete(&self) -> bool {
        self.checks.iter().all(|c| c.status == CheckStatus::Ok) && self.incomplete.is_empty()
    }

    /// True when every check a detection of `signal` depends on ran, with no
    /// tenant-wide gap. Mailbox-level gaps are asked with [`TenantSummary::covers_mailbox`].
    pub fn covers(&self, signal: Signal) -> bool {
        let needed = Check::needed_for(signal);
        !needed.is_empty()
            && needed.iter().all(|needed| {
                self.checks.iter().any(|c| {
                    c.check == *needed
                        && matches!(c.status, CheckStatus::Ok | CheckStatus::Incomplete)
                })
            })
            && !self
                .incomplete
                .iter()
                .any(|gap| gap.mailbox.is_none() && needed.contains(&gap.check))
    }

    /// True when a detection of `signal` on `mailbox` (`None`: tenant-wide) was
    /// covered: [`TenantSummary::covers`], and no read of that mailbox is missing.
    pub fn covers_mailbox(&self, signal: Signal, mailbox: Option<&str>) -> bool {
        self.covers(signal)
            && mailbox.is_none_or(|m| {
                !self
                    .mailboxes_not_read()
                    .any(|gap| gap.eq_ignore_ascii_case(m))
            })
    }

    /// The mailboxes some read of which is missing (their detections stay open).
    pub fn mailboxes_not_read(&self) -> impl Iterator<Item = &str> {
        self.incomplete
            .iter()
            .filter_map(|gap| gap.mailbox.as_deref())
    }

    /// True when the tenant could not be read at all: no access, or not even its
    /// accepted domains (nothing can be classified without them).
    pub fn is_dark(&self) -> bool {
        self.checks.iter().any(|c| {
            matches!(c.check, Check::Access | Check::AcceptedDomains) && c.status != CheckStatus::Ok
        })
    }

    /// The first failed check's error, e.g. to explain a tenant that could not be scanned.
    pub fn first_error(&self) -> Option<(&Check, &ScanError)> {
        self.checks
            .iter()
            .find_map(|c| c.error.as_ref().map(|e| (&c.check, e)))
    }

    pub fn example() -> Self {
        let ok = |check, items| CheckReport {
            check,
            status: CheckStatus::Ok,
            items,
            error: None,
        };
        Self {
            kind: TenantSummaryType::Tag,
            version: Self::VERSION,
            run_id: "run-20261128T190000Z-7f3a".into(),
            job_id: "run-20261128T190000Z-7f3a:4fdbff88-1c2d-4e5f-8a9b-0c1d2e3f4a5b".into(),
            tenant: super::ScanJob::example().tenant,
            started_at: "2026-11-28T19:00:01Z".parse().expect("valid example time"),
            finished_at: "2026-11-28T19:00:04Z".parse().expect("valid example time"),
            checks: vec![
                ok(Check::Access, 1),
                ok(Check::AcceptedDomains, 3),
                ok(Check::Mailboxes, 40),
                ok(Check::Recipients, 52),
                ok(Check::InboxRules, 61),
                CheckReport {
                    check: Check::TransportRules,
                    status: CheckStatus::Failed,
                    items: 0,
                    error: Some(ScanError {
                        kind: ErrorKind::Forbidden,
                        message: "403 from the Exchange admin API".into(),
                        remedy: Some(
                            "assign the Exchange Administrator role to the fwdwatch app in this tenant"
                                .into(),
                        ),
                        code: Some("403".into()),
                    }),
                },
                ok(Check::Posture, 2),
                ok(Check::GroupMembers, 0),
                ok(Check::JournalRules, 0),
                ok(Check::OutboundConnectors, 1),
            ],
            mailboxes: 40,
            inbox_rules: 61,
            transport_rules: 0,
            detections: 1,
            fingerprints: vec!["9c1e4b7a0d2f6e8a1b3c5d7e9f0a2b4c".into()],
            posture: Posture {
                outbound_policies: vec![OutboundPolicy {
                    name: "Default".into(),
                    is_default: true,
                    auto_forwarding_mode: "On".into(),
                    applies_to: vec![],
                }],
                remote_domains_allowing_auto_forward: vec!["*".into()],
                remote_domains_blocking_auto_forward: vec![],
                external_forwarding_allowed: Some(true),
            },
            incomplete: vec![],
            warnings: vec![],
            relationship_ends_at: None,
        }
    }
}

impl Message for TenantSummary {
    const TYPE: &'static str = "tenant_summary";
    const VERSION: u32 = 1;
    fn version(&self) -> u32 {
        self.version
    }
    fn message_id(&self) -> String {
        format!("{}:summary", self.job_id)
    }
}
