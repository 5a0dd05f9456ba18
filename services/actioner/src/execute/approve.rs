//! Approve and revoke: the allowlist side of a decision (Redis only, no Microsoft).
//!
//! An approval is per (tenant, mailbox, signal, target) — see
//! `store::allowlist`. The command names the detection by fingerprint; signal,
//! mailbox and target come from the command, or from the detection the notifier
//! stored for that fingerprint when the command leaves them out. Approving a
//! detection with several targets without naming one approves each of them
//! (the operator approved *that forward*). When both the command and the stored
//! detection say something, they must agree: a command cannot use a fingerprint
//! of tenant A to approve something in tenant B.

use chrono::Utc;

use fwdwatch_shared::classify::normalize_address;
use fwdwatch_shared::contracts::{Command, CommandOutcome, Signal};
use fwdwatch_shared::store::StoreError;
use fwdwatch_shared::store::allowlist::{self, Approval};

use super::{Executor, Report, Transient, normalise_mailbox};

/// What a command is about, once resolved against the stored detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subject {
    pub tenant_id: String,
    pub signal: Signal,
    /// `None` for transport rules.
    pub mailbox: Option<String>,
    pub targets: Vec<String>,
}

/// A target as detections carry it (`local@a-label.domain`); kept as given when it
/// does not parse (the allowlist then simply never matches it).
pub(crate) fn normalise_target(target: &str) -> String {
    match normalize_address(target) {
        Some(address) if !address.domain.is_empty() => address.to_string(),
        _ => target.trim().to_owned(),
    }
}

/// Resolves signal, mailbox and targets; `Ok(Err(reason))` is a refusal.
pub(crate) async fn resolve(
    executor: &Executor,
    command: &Command,
) -> Result<Result<Subject, String>, Transient> {
    let detection = executor.stored_detection(&command.fingerprint).await?;
    let mailbox = command
        .mailbox
        .as_deref()
        .map(normalise_mailbox)
        .filter(|m| !m.is_empty());
    let target = command
        .target
        .as_deref()
        .map(normalise_target)
        .filter(|t| !t.is_empty());
    let Some(detection) = detection else {
        let (Some(signal), Some(target)) = (command.signal, target) else {
            return Ok(Err(format!(
                "fingerprint {} is not (or no longer) known to fwdwatch: name the signal and the target",
                command.fingerprint
            )));
        };
        return Ok(Ok(Subject {
            tenant_id: command.tenant_id.trim().to_owned(),
            signal,
            mailbox,
            targets: vec![target],
        }));
    };

    if !detection
        .tenant_id
        .eq_ignore_ascii_case(command.tenant_id.trim())
    {
        return Ok(Err(format!(
            "fingerprint {} belongs to another tenant",
            command.fingerprint
        )));
    }
    let detected_mailbox = detection
        .mailbox
        .as_ref()
        .map(|m| normalise_mailbox(&m.primary_smtp_address));
    if mailbox.is_some() && mailbox != detected_mailbox {
        return Ok(Err(format!(
            "fingerprint {} belongs to another mailbox",
            command.fingerprint
        )));
    }
    if let Some(signal) = command.signal
        && signal != detection.signal
    {
        return Ok(Err(format!(
            "fingerprint {} is a {} forward, not {signal}",
            command.fingerprint, detection.signal
        )));
    }
    let targets = match target {
        Some(target) if !detection.targets.contains(&target) => {
            return Ok(Err(format!(
                "{target} is not a target of the detected forward"
            )));
        }
        Some(target) => vec![target],
        None => detection.targets.clone(),
    };
    if targets.is_empty() {
        return Ok(Err("the detection has no target to approve".into()));
    }
    Ok(Ok(Subject {
        tenant_id: detection.tenant_id.clone(),
        signal: detection.signal,
        mailbox: detected_mailbox,
        targets,
    }))
}

fn describe(subject: &Subject) -> String {
    match subject.mailbox.as_deref() {
        Some(mailbox) => format!(
            "{} forward from {mailbox} to {}",
            subject.signal,
            subject.targets.join(", ")
        ),
        None => format!("transport rule to {}", subject.targets.join(", ")),
    }
}

/// `approve`: one allowlist entry per target.
pub(crate) async fn approve(executor: &Executor, command: &Command) -> Result<Report, Transient> {
    let subject = match resolve(executor, command).await? {
        Ok(subject) => subject,
        Err(reason) => return Ok(Report::refused(reason)),
    };
    let about =
        |report: Report| report.about(subject.mailbox.clone(), Some(subject.targets.join(", ")));
    if let Some(expires_at) = command.expires_at
        && expires_at <= Utc::now()
    {
        return Ok(about(Report::refused(format!(
            "the approval would expire at {expires_at}, which is already past"
        ))));
    }
    let context = executor.context();
    for target in &subject.targets {
        let approval = Approval {
            tenant_id: subject.tenant_id.clone(),
            mailbox: subject.mailbox.clone(),
            signal: subject.signal,
            target: target.clone(),
            approved_by: command.issued_by.clone(),
            approved_at: command.issued_at,
            reason: command.reason.clone(),
            expires_at: command.expires_at,
            command_id: Some(command.command_id.clone()),
        };
        match allowlist::approve(context.store.as_ref(), &context.keys, approval).await {
            Ok(()) => {}
            // An approval that could never match (e.g. no mailbox for a mailbox
            // signal) is the command's fault, not the store's: refuse it.
            Err(StoreError::InvalidArgument { reason, .. }) => {
                return Ok(about(Report::refused(format!("cannot approve: {reason}"))));
            }
            Err(error) => return Err(error.into()),
        }
    }
    let until = command
        .expires_at
        .map(|t| format!(" until {}", t.format("%Y-%m-%d %H:%M UTC")))
        .unwrap_or_default();
    Ok(about(Report::new(
        CommandOutcome::Done,
        format!("approved the {}{until}", describe(&subject)),
    )))
}

/// `revoke-approval`: deletes the allowlist entries; the forward alerts again.
pub(crate) async fn revoke(executor: &Executor, command: &Command) -> Result<Report, Transient> {
    let subject = match resolve(executor, command).await? {
        Ok(subject) => subject,
        Err(reason) => return Ok(Report::refused(reason)),
    };
    let context = executor.context();
    let mut revoked = Vec::new();
    for target in &subject.targets {
        let existed = allowlist::revoke(
            context.store.as_ref(),
            &context.keys,
            &subject.tenant_id,
            subject.mailbox.as_deref().unwrap_or(""),
            subject.signal,
            target,
        )
        .await?;
        if existed {
            revoked.push(target.clone());
        }
    }
    let detail = if revoked.is_empty() {
        format!("there was no approval of the {}", describe(&subject))
    } else {
        format!(
            "revoked the approval of the {}; it alerts again",
            describe(&subject)
        )
    };
    Ok(Report::new(CommandOutcome::Done, detail)
        .about(subject.mailbox.clone(), Some(subject.targets.join(", "))))
}
