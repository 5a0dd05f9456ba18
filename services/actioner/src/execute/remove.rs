//! Remove: take a detected forward out of Microsoft 365, and prove it.
//!
//! 1. **Re-read** the mailbox (or the tenant's transport rules) with the scanner's
//!    own code and look for a current detection with the command's fingerprint.
//!    None → the forward changed since it was detected (another target, another
//!    rule, or already gone): **refuse and change nothing**. Acting on a forward
//!    nobody looked at would be acting blind; the next scan alerts on what is
//!    there now.
//! 2. **Change**, by signal:
//!    - mailbox forwards → `Set-Mailbox` clearing `ForwardingSmtpAddress` and
//!      `ForwardingAddress`, `DeliverToMailboxAndForward` false;
//!    - inbox rules → `Disable-InboxRule` (default: keeps the evidence) or
//!      `Remove-InboxRule` (`actioner.inbox_rule_removal = remove`);
//!    - transport rules → `Disable-TransportRule`.
//! 3. **Re-read** and report `verified` only if the forward no longer forwards
//!    ([`verify::gone`]); otherwise `not_verified`. Before and after go to the audit.
//!
//! Errors: throttling / 5xx are transient (the bus redelivers, up to its limit); a
//! missing role or consent is reported as `failed` with Microsoft's words and the
//! fix. A transient error *during the change* is not trusted either way: the
//! re-read decides whether it took effect.

use anyhow::anyhow;
use serde_json::json;

use fwdwatch_shared::contracts::{Command, CommandOutcome, ErrorKind, Signal};
use fwdwatch_shared::m365::M365Error;

use super::approve::normalise_target;
use super::exchange::Reading;
use super::verify::{self, Gone};
use super::{Executor, Report, RuleRemoval, Transient, normalise_mailbox};

/// The per-mailbox signals, read when a command names a mailbox but no signal.
const MAILBOX_SIGNALS: [Signal; 3] = [
    Signal::ForwardingSmtpAddress,
    Signal::ForwardingAddress,
    Signal::InboxRule,
];

fn failed_read(error: M365Error, when: &str) -> Result<Report, Transient> {
    if error.kind.is_transient() {
        return Err(Transient(
            anyhow!(error).context(format!("re-reading {when}")),
        ));
    }
    if error.kind == ErrorKind::NotFound {
        return Ok(Report::refused(format!(
            "changed since detection: the mailbox no longer exists ({}); nothing was done",
            error.message
        )));
    }
    Ok(Report::failed(format!("re-reading {when} failed: {error}")))
}

pub(crate) async fn remove(executor: &Executor, command: &Command) -> Result<Report, Transient> {
    let tenant = command.tenant_id.trim();
    let detection = executor.stored_detection(&command.fingerprint).await?;
    let mut mailbox = command
        .mailbox
        .as_deref()
        .map(normalise_mailbox)
        .filter(|m| !m.is_empty());
    let mut signal = command.signal;
    if let Some(detected) = &detection {
        // The command and what fwdwatch detected must describe the same forward.
        let detected_mailbox = detected
            .mailbox
            .as_ref()
            .map(|m| normalise_mailbox(&m.primary_smtp_address));
        if !detected.tenant_id.eq_ignore_ascii_case(tenant)
            || (mailbox.is_some() && mailbox != detected_mailbox)
            || signal.is_some_and(|s| s != detected.signal)
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
        (Some(Signal::TransportRule), _) | (None, None) => vec![Signal::TransportRule],
        (Some(s), Some(_)) => vec![s],
        (None, Some(_)) => MAILBOX_SIGNALS.to_vec(),
        (Some(s), None) => {
            return Ok(Report::refused(format!(
                "a {s} forward lives on a mailbox: the command must name it"
            )));
        }
    };
    let read_mailbox = if signals == [Signal::TransportRule] {
        None
    } else {
        mailbox.as_deref()
    };
    let exchange = &executor.exchange;

    // 1. Re-read: is it still the forward that was detected?
    let before = match exchange.read(tenant, read_mailbox, &signals).await {
        Ok(reading) => reading,
        Err(error) => {
            return failed_read(error, "before the removal")
                .map(|r| r.about(mailbox.clone(), command.target.clone()));
        }
    };
    let Some(current) = before
        .detections
        .iter()
        .find(|d| d.fingerprint == command.fingerprint)
        .cloned()
    else {
        return Ok(changed(&before, &signals).about(mailbox, command.target.clone()));
    };
    let targets = current.targets.join(", ");
    if let Some(target) = command.target.as_deref().map(normalise_target)
        && !current.targets.contains(&target)
    {
        return Ok(Report::refused(format!(
            "changed since detection: {target} is not a target of the forward any more; nothing was done"
        ))
        .about(mailbox, Some(target)));
    }
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

    // 2. Change.
    let rule_id = current.rule_id.clone().unwrap_or_default();
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
        Signal::TransportRule => {
            let identity = verify::transport_rule_identity(&before, &rule_id);
            (
                "Disable-TransportRule disabled the rule",
                exchange.disable_transport_rule(tenant, &identity).await,
            )
        }
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
                    format!("{what}, but the verification re-read failed: {error}"),
                )
                .evidence(Some(before_evidence), None),
            ));
        }
    };
    let after_evidence = verify::evidence(&after, &current);
    let report = match verify::gone(&current, &after) {
        Gone::Absent => Report::new(
            CommandOutcome::Verified,
            format!("{what}; a re-read shows the forward gone"),
        ),
        Gone::Disabled => Report::new(
            CommandOutcome::Verified,
            format!(
                "{what}; a re-read shows the rule disabled: it no longer forwards (the rule is kept as evidence)"
            ),
        ),
        Gone::Present => {
            if let Some(change) = change_error.filter(|e| e.kind.is_transient()) {
                return Err(Transient(
                    anyhow!(change).context(format!("{} did not take effect", cmdlet_of(what))),
                ));
            }
            Report::new(
                CommandOutcome::NotVerified,
                format!("{what}, but a re-read still shows the forward"),
            )
        }
    };
    Ok(about(
        report.evidence(Some(before_evidence), Some(after_evidence)),
    ))
}

/// The cmdlet name at the start of a `what` sentence.
fn cmdlet_of(what: &str) -> &str {
    what.split_whitespace().next().unwrap_or(what)
}

/// The refusal when the detected fingerprint is not there any more.
fn changed(before: &Reading, signals: &[Signal]) -> Report {
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
    let detail = if now.is_empty() {
        "changed since detection: the forward is no longer there (already removed?); nothing was done".to_owned()
    } else {
        format!(
            "changed since detection: the forward is not the one detected (target or rule changed); nothing was done. Now: {}",
            now.join("; ")
        )
    };
    Report::refused(detail).evidence(Some(json!({ "current": now })), None)
}
