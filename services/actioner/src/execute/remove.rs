//! Remove: take a detected forward out of Microsoft 365, and prove it.
//!
//! The forward is identified by **tenant + mailbox + signal + rule id** (transport
//! and journal rules and connectors by their Guid), from the detection the notifier
//! stored for the command's fingerprint, or from the command's own fields. Never by
//! an exact fingerprint: an attacker who flips `Eve@`/`eve@`, adds a decoy target or
//! renames the rule every few minutes must not make removal impossible (technique
//! 27). Never by name: a decoy rule named like the real one must not absorb it.
//!
//! 1. **Re-read** the mailbox (or the tenant-wide rules) with the scan's own code
//!    and find the forward by its identity. Gone, or no longer sending mail
//!    outside → **refuse and change nothing**. Otherwise go on, and say in the
//!    result what changed since detection (old and new targets).
//! 2. **Change**, by signal:
//!    - mailbox forwards → `Set-Mailbox` clearing `ForwardingSmtpAddress` and
//!      `ForwardingAddress`, `DeliverToMailboxAndForward` false;
//!    - inbox rules → `Disable-InboxRule` (default: keeps the evidence) or
//!      `Remove-InboxRule` (`actioner.inbox_rule_removal = remove`);
//!    - transport rules → `Disable-TransportRule -Identity <Guid>`;
//!    - journal rules → `Disable-JournalRule -Identity <Guid>`;
//!    - outbound connectors → `Set-OutboundConnector -Identity <Guid> -Enabled $false`.
//! 3. **Re-read** and report `verified` only if the forward no longer forwards
//!    ([`verify::gone`]); otherwise `not_verified`. Before and after go to the audit;
//!    the fingerprint removed goes on the result so the notifier stops reminding.
//!
//! Errors: throttling / 5xx are transient (the bus redelivers, up to its limit); a
//! missing role or consent is reported as `failed` with Microsoft's words and the
//! fix. A transient error *during the change* is not trusted either way: the
//! re-read decides whether it took effect.

use anyhow::anyhow;
use serde_json::json;

use fwdwatch_shared::contracts::{
    Command, CommandOutcome, Detection, DetectionType, ErrorKind, Mailbox, Message, Severity,
    Signal,
};
use fwdwatch_shared::m365::M365Error;

use super::exchange::Reading;
use super::verify::{self, Gone};
use super::{Executor, Report, RuleRemoval, Transient, normalise_mailbox};

/// The per-mailbox signals, read when a command names a mailbox but no signal.
const MAILBOX_SIGNALS: [Signal; 3] = [
    Signal::ForwardingSmtpAddress,
    Signal::ForwardingAddress,
    Signal::InboxRule,
];

/// The tenant-wide signals a removal can act on.
const TENANT_SIGNALS: [Signal; 3] = [
    Signal::TransportRule,
    Signal::JournalRule,
    Signal::OutboundConnector,
];

fn failed_read(error: M365Error, when: &str) -> Result<Report, Transient> {
    if error.kind.is_transient() {
        return Err(Transient(
            anyhow!(error).context(format!("re-reading {when}")),
        ));
    }
    if error.kind == ErrorKind::NotFound {
        return Ok(Report::refused(format!(
            "the forward is gone: the mailbox no longer exists ({}); nothing was done",
            error.message
        )));
    }
    Ok(Report::failed(format!("re-reading {when} failed: {error}")))
}

/// A detection standing for the forward a command names, when the notifier has
/// none stored (its targets are unknown; only its identity counts).
fn identity_from_command(command: &Command, signal: Signal, mailbox: Option<&str>) -> Detection {
    Detection {
        kind: DetectionType::Tag,
        version: Detection::VERSION,
        detection_id: String::new(),
        run_id: String::new(),
        tenant_id: command.tenant_id.trim().to_owned(),
        tenant_name: String::new(),
        mailbox: mailbox.map(|m| Mailbox {
            primary_smtp_address: m.to_owned(),
            display_name: String::new(),
            recipient_type: String::new(),
        }),
        signal,
        rule_id: command.rule_id.clone(),
        rule_name: None,
        targets: command.target.clone().into_iter().collect(),
        paths: Vec::new(),
        unreadable: false,
        raw_targets: Vec::new(),
        enabled: true,
        keeps_copy: true,
        hidden: false,
        hiding_actions: Vec::new(),
        in_effect: true,
        posture_blocked: false,
        severity: Severity::Medium,
        fingerprint: command.fingerprint.clone(),
        observed_at: command.issued_at,
        audit: None,
    }
}

/// What changed between the forward as detected (the stored detection, or the
/// target the command names) and the one found now.
fn changes(detected: Option<&Detection>, command: &Command, now: &Detection) -> Option<String> {
    let before: Vec<String> = match detected {
        Some(d) if d.fingerprint == now.fingerprint => return None,
        Some(d) => d.targets.clone(),
        None => command.target.iter().cloned().collect(),
    };
    if before.is_empty() || before == now.targets {
        return None;
    }
    Some(format!(
        "changed since detection: targets were {}, now {}",
        before.join(", "),
        now.targets.join(", ")
    ))
}

pub(crate) async fn remove(executor: &Executor, command: &Command) -> Result<Report, Transient> {
    let tenant = command.tenant_id.trim();
    let stored = executor.stored_detection(&command.fingerprint).await?;
    let mut mailbox = command
        .mailbox
        .as_deref()
        .map(normalise_mailbox)
        .filter(|m| !m.is_empty());
    let mut signal = command.signal;
    if let Some(detected) = &stored {
        // The command and what fwdwatch detected must describe the same forward.
        let detected_mailbox = detected
            .mailbox
            .as_ref()
            .map(|m| normalise_mailbox(&m.primary_smtp_address));
        if !detected.tenant_id.eq_ignore_ascii_case(tenant)
            || (mailbox.is_some() && mailbox != detected_mailbox)
            || signal.is_some_and(|s| s != detected.signal)
            || command.rule_id.as_deref().is_some_and(|r| {
                detected
                    .rule_id
                    .as_deref()
                    .is_none_or(|d| !d.eq_ignore_ascii_case(r))
            })
        {
            return Ok(Report::refused(format!(
                "fingerprint {} belongs to another forward than the command names; nothing was done",
                command.fingerprint
            )));
        }
        mailbox = mailbox.or(detected_mailbox);
        signal = Some(detected.signal);
    }

    let signals: Vec<Signal> = match (signal, &mailbox) {
        (Some(Signal::AuditEvent), _) => {
            return Ok(Report::refused(
                "an audit event records a forward that was already gone at the rescan: there is nothing to remove; check the actor's account and the audit record",
            ));
        }
        (Some(s), _) if !s.is_per_mailbox() => vec![s],
        (None, None) => TENANT_SIGNALS.to_vec(),
        (Some(s), Some(_)) => vec![s],
        (None, Some(_)) => MAILBOX_SIGNALS.to_vec(),
        (Some(s), None) => {
            return Ok(Report::refused(format!(
                "a {s} forward lives on a mailbox: the command must name it"
            )));
        }
    };
    let read_mailbox = if signals.iter().all(|s| !s.is_per_mailbox()) {
        None
    } else {
        mailbox.as_deref()
    };
    let exchange = &executor.exchange;

    // 1. Re-read: is the forward still there, still sending mail outside?
    let before = match exchange.read(tenant, read_mailbox, &signals).await {
        Ok(reading) => reading,
        Err(error) => {
            return failed_read(error, "before the removal")
                .map(|r| r.about(mailbox.clone(), command.target.clone()));
        }
    };
    let current = match &stored {
        Some(detected) => verify::find(&before, detected).cloned(),
        None => match signal {
            Some(s) => {
                let identity = identity_from_command(command, s, mailbox.as_deref());
                verify::find(&before, &identity).cloned()
            }
            // Only a fingerprint and no stored detection: that exact forward or nothing.
            None => before
                .detections
                .iter()
                .find(|d| d.fingerprint == command.fingerprint)
                .cloned(),
        },
    };
    let Some(current) = current else {
        return Ok(gone_already(&before, &signals).about(mailbox, command.target.clone()));
    };
    let change_note = changes(stored.as_ref(), command, &current);
    let targets = current.targets.join(", ");
    let mailbox_address = current.mailbox_address().to_owned();
    let before_evidence = verify::evidence(&before, &current);
    let about = |report: Report| {
        report.about(
            current
                .mailbox
                .as_ref()
                .map(|m| m.primary_smtp_address.clone()),
            Some(targets.clone()),
        )
    };
    let with_note = |detail: String| match &change_note {
        Some(note) => format!("{detail} ({note})"),
        None => detail,
    };

    // 2. Change — naming rules and connectors by Guid only.
    let rule_id = current.rule_id.clone().unwrap_or_default();
    let guid = |rows: &[serde_json::Value]| verify::guid_of(rows, &rule_id);
    let (what, sent) = match current.signal {
        Signal::ForwardingSmtpAddress | Signal::ForwardingAddress => (
            "Set-Mailbox cleared ForwardingSmtpAddress and ForwardingAddress and set DeliverToMailboxAndForward false",
            exchange
                .clear_mailbox_forwarding(tenant, &mailbox_address)
                .await,
        ),
        Signal::InboxRule => {
            let identity = verify::inbox_rule_identity(&before, &mailbox_address, &rule_id);
            match executor.removal {
                RuleRemoval::Disable => (
                    "Disable-InboxRule disabled the rule",
                    exchange
                        .disable_inbox_rule(tenant, &mailbox_address, &identity)
                        .await,
                ),
                RuleRemoval::Remove => (
                    "Remove-InboxRule deleted the rule",
                    exchange
                        .remove_inbox_rule(tenant, &mailbox_address, &identity)
                        .await,
                ),
            }
        }
        Signal::TransportRule => match guid(&before.transport_rules) {
            Some(g) => (
                "Disable-TransportRule disabled the rule",
                exchange.disable_transport_rule(tenant, &g).await,
            ),
            None => return Ok(about(no_guid("transport rule", &rule_id))),
        },
        Signal::JournalRule => match guid(&before.journal_rules) {
            Some(g) => (
                "Disable-JournalRule disabled the rule",
                exchange.disable_journal_rule(tenant, &g).await,
            ),
            None => return Ok(about(no_guid("journal rule", &rule_id))),
        },
        Signal::OutboundConnector => match guid(&before.connectors) {
            Some(g) => (
                "Set-OutboundConnector disabled the connector",
                exchange.disable_outbound_connector(tenant, &g).await,
            ),
            None => return Ok(about(no_guid("outbound connector", &rule_id))),
        },
        Signal::AuditEvent => return Ok(about(Report::refused("nothing to remove"))),
    };
    let change_error = match sent {
        Ok(()) => None,
        // Gone between the two reads, or the change may have been applied before the
        // connection failed: the re-read tells.
        Err(error) if error.kind == ErrorKind::NotFound || error.kind.is_transient() => {
            tracing::warn!(%error, "The change answered with an error; re-reading to see what happened.");
            Some(error)
        }
        Err(error) => {
            return Ok(about(
                Report::failed(format!("{} failed: {error}", cmdlet_of(what)))
                    .evidence(Some(before_evidence), None),
            ));
        }
    };

    // 3. Re-read and verify.
    let after = match exchange.read(tenant, read_mailbox, &signals).await {
        Ok(reading) => reading,
        Err(error) => {
            if let Some(change) = change_error.filter(|e| e.kind.is_transient()) {
                return Err(Transient(anyhow!(
                    "{} failed ({change}) and the re-read failed too ({error})",
                    cmdlet_of(what)
                )));
            }
            return Ok(about(
                Report::new(
                    CommandOutcome::NotVerified,
                    with_note(format!(
                        "{what}, but the verification re-read failed: {error}"
                    )),
                )
                .evidence(Some(before_evidence), None),
            ));
        }
    };
    let after_evidence = verify::evidence(&after, &current);
    let mut report = match verify::gone(&current, &after) {
        Gone::Absent => Report::new(
            CommandOutcome::Verified,
            with_note(format!("{what}; a re-read shows the forward gone")),
        ),
        Gone::Disabled => Report::new(
            CommandOutcome::Verified,
            with_note(format!(
                "{what}; a re-read shows it disabled: it no longer forwards (kept as evidence)"
            )),
        ),
        Gone::Present => {
            if let Some(change) = change_error.filter(|e| e.kind.is_transient()) {
                return Err(Transient(
                    anyhow!(change).context(format!("{} did not take effect", cmdlet_of(what))),
                ));
            }
            Report::new(
                CommandOutcome::NotVerified,
                with_note(format!("{what}, but a re-read still shows the forward")),
            )
        }
    };
    if report.outcome == CommandOutcome::Verified {
        report.removed_fingerprints = vec![current.fingerprint.clone()];
    }
    Ok(about(
        report.evidence(Some(before_evidence), Some(after_evidence)),
    ))
}

/// The refusal when a rule or connector has no Guid to name it by.
fn no_guid(what: &str, rule_id: &str) -> Report {
    Report::refused(format!(
        "the {what} {rule_id} has no Guid in the re-read: fwdwatch acts on rules by Guid only (never by name), so nothing was done"
    ))
}

/// The cmdlet name at the start of a `what` sentence.
fn cmdlet_of(what: &str) -> &str {
    what.split_whitespace().next().unwrap_or(what)
}

/// The refusal when the forward is gone or no longer sends mail outside.
fn gone_already(before: &Reading, signals: &[Signal]) -> Report {
    let now: Vec<String> = before
        .detections
        .iter()
        .filter(|d| signals.contains(&d.signal))
        .map(|d| {
            format!(
                "{}{} → {}",
                d.signal,
                d.rule_id
                    .as_deref()
                    .map(|r| format!(" (rule {r})"))
                    .unwrap_or_default(),
                d.targets.join(", ")
            )
        })
        .collect();
    let mut detail =
        "the forward is gone or no longer sends mail outside (already removed?); nothing was done"
            .to_owned();
    if !now.is_empty() {
        detail.push_str(&format!(". Other forwards there now: {}", now.join("; ")));
    }
    Report::refused(detail).evidence(Some(json!({ "current": now })), None)
}
