//! Severity of a detection, from the rules in DESIGN.md.
//!
//! Starts at medium. Rises for forwards that keep no copy (and redirects), for
//! hidden rules, and for rules that also hide mail. Falls for disabled rules (by
//! two steps: staged, not active) and for forwards the tenant's posture blocks.
//! A forward with a target that cannot be read is always high, and so is an audit
//! event (a forward created and removed between two scans).

use crate::contracts::{HidingAction, Severity, Signal};

/// What severity depends on.
#[derive(Debug, Clone, Copy)]
pub struct SeverityFactors<'a> {
    pub signal: Signal,
    pub enabled: bool,
    pub keeps_copy: bool,
    pub redirect: bool,
    pub hidden: bool,
    pub hiding_actions: &'a [HidingAction],
    pub posture_blocked: bool,
    /// A target could not be read: always high (fail closed).
    pub unreadable: bool,
}

pub fn severity(f: &SeverityFactors<'_>) -> Severity {
    // A forward made and gone between two scans is how an attacker hides one: high.
    if f.unreadable || f.signal == Signal::AuditEvent {
        return Severity::High;
    }
    let mut score: i32 = 2;
    if !f.keeps_copy || f.redirect {
        score += 1;
    }
    if f.hidden {
        score += 1;
    }
    if !f.hiding_actions.is_empty() {
        score += 1;
    }
    if !f.enabled {
        score -= 2;
    }
    if f.posture_blocked {
        score -= 1;
    }
    match score {
        i32::MIN..=1 => Severity::Low,
        2 => Severity::Medium,
        _ => Severity::High,
    }
}

/// The hiding actions of an inbox rule, from Exchange's fields. `move_to_folder`
/// may be a bare name or a path (`Mailbox:\RSS Feeds`); only folders where mail goes
/// to be unseen count.
pub fn hiding_actions(
    delete: bool,
    mark_as_read: bool,
    move_to_folder: Option<&str>,
    stop_processing: bool,
) -> Vec<HidingAction> {
    let mut actions = Vec::new();
    if delete {
        actions.push(HidingAction::DeleteMessage);
    }
    if mark_as_read {
        actions.push(HidingAction::MarkAsRead);
    }
    if let Some(folder) = move_to_folder {
        let name = folder
            .rsplit(['\\', '/'])
            .next()
            .unwrap_or(folder)
            .trim()
            .to_ascii_lowercase();
        let action = match name.as_str() {
            "rss feeds" | "rss subscriptions" | "rss" => Some(HidingAction::MoveToRssFeeds),
            "archive" => Some(HidingAction::MoveToArchive),
            "deleted items" => Some(HidingAction::MoveToDeletedItems),
            "conversation history" => Some(HidingAction::MoveToConversationHistory),
            "junk email" | "junk e-mail" => Some(HidingAction::MoveToJunkEmail),
            _ => None,
        };
        actions.extend(action);
    }
    if stop_processing {
        actions.push(HidingAction::StopProcessingRules);
    }
    actions
}
