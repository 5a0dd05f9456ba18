//! The one place that turns stored state into what people read: a detection into a
//! [`ForwardRow`], a tenant's latest scan into a [`TenantRow`]. The console's pages
//! and `fwdwatch up`'s terminal summary both render these rows, so a new field of
//! the detection contract (a delivery path, a trait, a signal) or of the tenant
//! state (coverage lost / restored) is added here once, in a few lines.
//!
//! Rows hold plain text. Every value that came from a tenant — rule names, display
//! names, addresses — is attacker-controlled: the pages escape it (maud does, always)
//! and never put it in a link; the terminal strips control characters and breaks
//! anything that looks like a URL (see `fwdwatch up`).

use chrono::{DateTime, Utc};

use fwdwatch_shared::contracts::{
    CheckStatus, Detection, HidingAction, Severity, Signal, TenantSummary,
};
use fwdwatch_shared::store::tenants::TenantRecord;

use super::data::StoredForward;

/// One open forward, ready to show.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardRow {
    pub fingerprint: String,
    pub tenant_id: String,
    /// The customer's display name (the tenant id when it has none).
    pub customer: String,
    /// `None` for tenant-wide (transport) rules.
    pub mailbox: Option<String>,
    pub mailbox_name: String,
    pub signal: Signal,
    pub rule_id: Option<String>,
    pub rule_name: Option<String>,
    pub targets: Vec<String>,
    /// What Exchange showed before normalisation (a contact's name, `EX:` DNs…).
    pub raw_targets: Vec<String>,
    pub severity: Severity,
    /// Short words: `hidden`, `disabled`, `no copy kept`, `hides mail: …`,
    /// `unreadable` (a target that could not be read).
    pub traits: Vec<String>,
    /// Why a target that looks internal is outside: one line per delivery path
    /// (a guest, a mail user, a group with outside members…).
    pub paths: Vec<String>,
    pub posture_blocked: bool,
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    /// Set when another open forward sends to one of the same targets
    /// ("one collector, many victims").
    pub campaign: Option<String>,
    /// The notifier's state (`open`, `approved`, `removed`, `resolved`…).
    pub state: String,
    /// An audit event's record: operation, time, actor and client IP (plain text).
    pub audit: Option<String>,
}

impl ForwardRow {
    /// The mailbox, or what a tenant-wide rule applies to.
    pub fn mailbox_or_scope(&self) -> &str {
        self.mailbox.as_deref().unwrap_or("(tenant-wide rule)")
    }

    /// Whether `needle` (lower-case) occurs in the mailbox or a target.
    pub fn mentions(&self, needle: &str) -> bool {
        self.mailbox
            .as_deref()
            .is_some_and(|m| m.to_lowercase().contains(needle))
            || self.mailbox_name.to_lowercase().contains(needle)
            || self
                .targets
                .iter()
                .chain(&self.raw_targets)
                .any(|t| t.to_lowercase().contains(needle))
    }
}

/// What people call each signal.
pub fn signal_label(signal: Signal) -> &'static str {
    match signal {
        Signal::ForwardingSmtpAddress => "mailbox forward (SMTP)",
        Signal::ForwardingAddress => "mailbox forward (recipient)",
        Signal::InboxRule => "inbox rule",
        Signal::TransportRule => "transport rule",
        Signal::JournalRule => "journal rule",
        Signal::OutboundConnector => "outbound connector",
        Signal::AuditEvent => "audit log event",
    }
}

fn hiding(action: HidingAction) -> &'static str {
    match action {
        HidingAction::DeleteMessage => "deletes",
        HidingAction::MarkAsRead => "marks as read",
        HidingAction::MoveToRssFeeds => "moves to RSS Feeds",
        HidingAction::MoveToArchive => "moves to Archive",
        HidingAction::MoveToDeletedItems => "moves to Deleted Items",
        HidingAction::MoveToConversationHistory => "moves to Conversation History",
        HidingAction::MoveToJunkEmail => "moves to Junk Email",
        HidingAction::StopProcessingRules => "stops other rules",
        #[allow(unreachable_patterns)]
        _ => "hides mail",
    }
}

/// The traits of a detection, in a few words each.
pub fn traits(d: &Detection) -> Vec<String> {
    let mut traits = Vec::new();
    if d.hidden {
        traits.push("hidden".to_owned());
    }
    if !d.enabled {
        traits.push("disabled".to_owned());
    }
    if !d.keeps_copy {
        traits.push("no copy kept".to_owned());
    }
    if !d.hiding_actions.is_empty() {
        let actions: Vec<&str> = d.hiding_actions.iter().map(|a| hiding(*a)).collect();
        traits.push(format!("hides mail: {}", actions.join(", ")));
    }
    if !d.in_effect {
        traits.push("not in effect".to_owned());
    }
    if d.unreadable {
        // Fail closed: a target fwdwatch could not follow is shown, never dropped.
        traits.push("unreadable".to_owned());
    }
    traits
}

/// A stored detection as a row.
pub fn forward_row(forward: &StoredForward) -> ForwardRow {
    let d = &forward.detection;
    ForwardRow {
        fingerprint: d.fingerprint.clone(),
        tenant_id: d.tenant_id.clone(),
        customer: if d.tenant_name.trim().is_empty() {
            d.tenant_id.clone()
        } else {
            d.tenant_name.clone()
        },
        mailbox: d.mailbox.as_ref().map(|m| m.primary_smtp_address.clone()),
        mailbox_name: d
            .mailbox
            .as_ref()
            .map(|m| m.display_name.clone())
            .unwrap_or_default(),
        signal: d.signal,
        rule_id: d.rule_id.clone(),
        rule_name: d.rule_name.clone(),
        targets: d.targets.clone(),
        raw_targets: d.raw_targets.clone(),
        severity: d.severity,
        traits: traits(d),
        paths: d.paths.iter().map(|p| p.describe()).collect(),
        posture_blocked: d.posture_blocked,
        first_seen: forward.first_seen,
        last_seen: forward.last_seen.or(Some(d.observed_at)),
        campaign: None,
        state: forward.state.clone(),
        audit: d.audit.as_ref().map(|a| a.describe()),
    }
}

/// Notes on every row whose target another row also sends to, and how widely.
pub fn mark_campaigns(rows: &mut [ForwardRow]) {
    use std::collections::{BTreeMap, BTreeSet};
    let mut by_target: BTreeMap<&str, (usize, BTreeSet<&str>)> = BTreeMap::new();
    for row in rows.iter() {
        for target in &row.targets {
            let entry = by_target.entry(target.as_str()).or_default();
            entry.0 += 1;
            entry.1.insert(row.tenant_id.as_str());
        }
    }
    let notes: Vec<Option<String>> = rows
        .iter()
        .map(|row| {
            row.targets.iter().find_map(|target| {
                let (forwards, tenants) = by_target.get(target.as_str())?;
                (*forwards > 1).then(|| {
                    format!(
                        "{target} collects from {forwards} forwards in {} tenant{}",
                        tenants.len(),
                        if tenants.len() == 1 { "" } else { "s" }
                    )
                })
            })
        })
        .collect();
    for (row, note) in rows.iter_mut().zip(notes) {
        row.campaign = note;
    }
}

/// How completely a tenant was read by its latest scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    /// Every check succeeded.
    Complete,
    /// Some checks failed: detections they would have found stay open, new ones may be missed.
    Partial,
    /// Nothing could be read (no token: consent, credentials).
    Unreadable,
}

impl Coverage {
    pub fn as_str(self) -> &'static str {
        match self {
            Coverage::Complete => "complete",
            Coverage::Partial => "partial",
            Coverage::Unreadable => "could not be read",
        }
    }
}

/// One check of a tenant's latest scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRow {
    /// The check's wire name (`inbox_rules`…).
    pub check: String,
    /// `ok`, `failed`, `skipped`.
    pub status: String,
    pub items: u64,
    /// Microsoft's words when it failed (with the kind: `consent_missing: …`).
    pub error: Option<String>,
    /// What to do about it.
    pub remedy: Option<String>,
}

/// One tenant's coverage, ready to show.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantRow {
    pub tenant_id: String,
    pub customer: String,
    pub coverage: Coverage,
    pub last_scan: DateTime<Utc>,
    pub last_complete: Option<DateTime<Utc>>,
    /// The latest scan missed checks although an earlier one was complete.
    pub coverage_lost: bool,
    pub checks: Vec<CheckRow>,
    pub mailboxes: u64,
    pub inbox_rules: u64,
    pub transport_rules: u64,
    pub detections: u64,
    /// Whether forwards can leave the tenant (`None`: posture not read).
    pub external_forwarding_allowed: Option<bool>,
    /// Reads that failed for single mailboxes (`mailbox: check — reason`): their
    /// detections stay open, new forwards there may be missed.
    pub incomplete: Vec<String>,
    /// What needs attention before it becomes a failure (a GDAP relationship
    /// about to end, a listing Microsoft truncated).
    pub warnings: Vec<String>,
}

impl TenantRow {
    /// The first failure, as one line (for summaries).
    pub fn first_failure(&self) -> Option<String> {
        self.checks.iter().find_map(|c| {
            c.error.as_ref().map(|e| match &c.remedy {
                Some(remedy) => format!("{}: {e} — {remedy}", c.check),
                None => format!("{}: {e}", c.check),
            })
        })
    }
}

fn wire_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

fn coverage_of(summary: &TenantSummary) -> Coverage {
    if summary.is_complete() {
        return Coverage::Complete;
    }
    if summary.is_dark() || summary.checks.iter().all(|c| c.status != CheckStatus::Ok) {
        Coverage::Unreadable
    } else {
        Coverage::Partial
    }
}

/// A tenant's latest scan as a row.
pub fn tenant_row(record: &TenantRecord) -> TenantRow {
    let summary = &record.summary;
    let coverage = coverage_of(summary);
    TenantRow {
        tenant_id: summary.tenant.id.clone(),
        customer: if summary.tenant.display_name.trim().is_empty() {
            summary.tenant.id.clone()
        } else {
            summary.tenant.display_name.clone()
        },
        coverage,
        last_scan: summary.finished_at,
        last_complete: record.last_complete_at,
        coverage_lost: coverage != Coverage::Complete && record.last_complete_at.is_some(),
        checks: summary
            .checks
            .iter()
            .map(|c| CheckRow {
                check: wire_name(&c.check),
                status: wire_name(&c.status),
                items: c.items,
                error: c
                    .error
                    .as_ref()
                    .map(|e| format!("{}: {}", wire_name(&e.kind), e.message)),
                remedy: c.error.as_ref().and_then(|e| e.remedy.clone()),
            })
            .collect(),
        mailboxes: summary.mailboxes,
        inbox_rules: summary.inbox_rules,
        transport_rules: summary.transport_rules,
        detections: summary.detections,
        external_forwarding_allowed: summary.posture.external_forwarding_allowed,
        incomplete: summary
            .incomplete
            .iter()
            .map(|gap| {
                format!(
                    "{}: {} — {}",
                    gap.mailbox.as_deref().unwrap_or("(tenant)"),
                    wire_name(&gap.check),
                    gap.reason
                )
            })
            .collect(),
        warnings: summary.warnings.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fwdwatch_shared::contracts::{CheckReport, ErrorKind, ScanError};

    fn stored(d: Detection) -> StoredForward {
        StoredForward {
            detection: d,
            state: "open".into(),
            first_seen: None,
            last_seen: None,
        }
    }

    #[test]
    fn a_detection_becomes_a_row_with_its_traits() {
        let row = forward_row(&stored(Detection::example()));
        assert_eq!(row.customer, "Contoso Ltd");
        assert_eq!(row.mailbox.as_deref(), Some("victim@contoso.com"));
        assert_eq!(
            row.traits,
            vec![
                "hidden",
                "no copy kept",
                "hides mail: marks as read, moves to RSS Feeds"
            ]
        );
        assert_eq!(signal_label(row.signal), "inbox rule");
        assert!(row.mentions("collector@"));
        assert!(!row.mentions("nobody"));
    }

    #[test]
    fn an_audit_event_shows_its_record() {
        let mut d = Detection::example();
        d.signal = Signal::AuditEvent;
        d.audit = Some(fwdwatch_shared::contracts::AuditRecord::example());
        let row = forward_row(&stored(d));
        assert_eq!(signal_label(row.signal), "audit log event");
        assert_eq!(
            row.audit.as_deref(),
            Some(
                "New-InboxRule at 2026-11-28 18:42:07 UTC by victim@contoso.com from 203.0.113.7:50123"
            )
        );
        assert_eq!(forward_row(&stored(Detection::example())).audit, None);
    }

    #[test]
    fn unreadable_targets_and_delivery_paths_are_shown() {
        use fwdwatch_shared::contracts::{DeliveryPath, PathHop};
        let mut d = Detection::example();
        d.unreadable = true;
        d.paths = vec![DeliveryPath {
            target: "eve@gmail.com".into(),
            via: vec![PathHop {
                address: "team-sync@contoso.com".into(),
                kind: "MailUniversalDistributionGroup".into(),
                name: "Team sync".into(),
            }],
        }];
        d.signal = Signal::JournalRule;
        let row = forward_row(&stored(d));
        assert!(row.traits.iter().any(|t| t == "unreadable"));
        assert_eq!(
            row.paths,
            vec!["eve@gmail.com via team-sync@contoso.com (MailUniversalDistributionGroup)"]
        );
        assert_eq!(signal_label(row.signal), "journal rule");
    }

    #[test]
    fn shared_targets_are_campaigns() {
        let a = Detection::example();
        let mut b = Detection::example();
        b.fingerprint = "other".into();
        b.tenant_id = "tenant-2".into();
        let mut c = Detection::example();
        c.fingerprint = "alone".into();
        c.targets = vec!["someone@else.example".into()];
        let mut rows: Vec<ForwardRow> = [a, b, c]
            .into_iter()
            .map(|d| forward_row(&stored(d)))
            .collect();
        mark_campaigns(&mut rows);
        assert_eq!(
            rows[0].campaign.as_deref(),
            Some("collector@evil.example collects from 2 forwards in 2 tenants")
        );
        assert!(rows[2].campaign.is_none());
    }

    #[test]
    fn tenant_coverage() {
        let mut summary = TenantSummary::example();
        // The example's transport-rule check failed: a partial scan.
        assert_eq!(
            tenant_row(&TenantRecord {
                summary: summary.clone(),
                last_complete_at: None,
                received_at: Utc::now()
            })
            .coverage,
            Coverage::Partial
        );
        for check in &mut summary.checks {
            check.status = CheckStatus::Ok;
            check.error = None;
        }
        let record = |summary: &TenantSummary, last: Option<DateTime<Utc>>| TenantRecord {
            summary: summary.clone(),
            last_complete_at: last,
            received_at: Utc::now(),
        };
        assert_eq!(
            tenant_row(&record(&summary, None)).coverage,
            Coverage::Complete
        );
        summary.checks = vec![CheckReport {
            check: fwdwatch_shared::contracts::Check::Access,
            status: CheckStatus::Failed,
            items: 0,
            error: Some(ScanError {
                kind: ErrorKind::ConsentMissing,
                message: "AADSTS65001: no consent".into(),
                remedy: Some("grant admin consent".into()),
                code: Some("65001".into()),
            }),
        }];
        let mut gap = summary.clone();
        gap.checks.iter_mut().for_each(|c| {
            c.status = CheckStatus::Ok;
            c.error = None;
        });
        gap.incomplete = vec![fwdwatch_shared::contracts::IncompleteRead {
            check: fwdwatch_shared::contracts::Check::InboxRules,
            mailbox: Some("ceo@contoso.com".into()),
            reason: "the read timed out".into(),
        }];
        gap.warnings = vec!["the GDAP relationship ends in 3 days".into()];
        let row = tenant_row(&record(&gap, Some(Utc::now())));
        assert_eq!(row.coverage, Coverage::Partial);
        assert_eq!(
            row.incomplete,
            vec!["ceo@contoso.com: inbox_rules — the read timed out"]
        );
        assert_eq!(row.warnings.len(), 1);
        let row = tenant_row(&record(&summary, Some(Utc::now())));
        assert_eq!(row.coverage, Coverage::Unreadable);
        assert!(row.coverage_lost);
        assert_eq!(
            row.first_failure().as_deref(),
            Some("access: consent_missing: AADSTS65001: no consent — grant admin consent")
        );
    }
}
