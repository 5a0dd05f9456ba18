//! The ground truth: every external forward the fleet holds right now, computed from
//! the live state (so every mutation shows up) with the rules of `address`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::model::{TenantMeta, TenantState};

/// Where a forward lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Mailbox `ForwardingSmtpAddress`.
    ForwardingSmtpAddress,
    /// Mailbox `ForwardingAddress` (a recipient object, resolved).
    ForwardingAddress,
    /// An inbox rule's ForwardTo / ForwardAsAttachmentTo / RedirectTo.
    InboxRule,
    /// A transport rule's RedirectMessageTo / BlindCopyTo / AddToRecipients / CopyTo.
    TransportRule,
}

impl Signal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ForwardingSmtpAddress => "forwarding_smtp_address",
            Self::ForwardingAddress => "forwarding_address",
            Self::InboxRule => "inbox_rule",
            Self::TransportRule => "transport_rule",
        }
    }
}

/// One external forward, as served by `GET /_sim/truth`. Field order is the sort order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TruthEntry {
    pub tenant_id: String,
    /// Primary SMTP address of the mailbox (lower case); `None` for transport rules.
    pub mailbox: Option<String>,
    pub signal: Signal,
    /// Inbox rule: RuleIdentity (u64) in decimal; transport rule: its Guid.
    pub rule_id: Option<String>,
    /// Normalised external targets (`local@a-label`), sorted and deduplicated.
    pub targets: Vec<String>,
    /// Inbox rule: Enabled; transport rule: State Enabled and Mode Enforce; mailbox: true.
    pub enabled: bool,
    /// Inbox rules only visible with IncludeHidden.
    pub hidden: bool,
    /// Mailbox forwards: DeliverToMailboxAndForward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keeps_copy: Option<bool>,
    /// Mailbox forwards: false for ForwardingSmtpAddress when ForwardingAddress is also
    /// set (Exchange then uses the latter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_effect: Option<bool>,
    /// Inbox and transport rules: the rule's Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_name: Option<String>,
}

/// Appends the truth of one tenant to `out`, unsorted.
pub(crate) fn tenant_truth(meta: &TenantMeta, st: &TenantState, out: &mut Vec<TruthEntry>) {
    let external = |raw: &str| meta.internal.external(raw);
    for mb in &st.mailboxes {
        let mailbox = Some(mb.primary_smtp(meta));
        let entry = |signal, targets: Vec<String>, in_effect| TruthEntry {
            tenant_id: meta.id.clone(),
            mailbox: mailbox.clone(),
            signal,
            rule_id: None,
            targets,
            enabled: true,
            hidden: false,
            keeps_copy: Some(mb.deliver_and_forward),
            in_effect: Some(in_effect),
            rule_name: None,
        };
        if let Some(t) = mb.forwarding_smtp.as_deref().and_then(external) {
            out.push(entry(
                Signal::ForwardingSmtpAddress,
                vec![t],
                mb.forwarding_address.is_none(),
            ));
        }
        if let Some(t) = mb
            .forwarding_address
            .and_then(|r| external(&st.delivery_address(meta, r)))
        {
            out.push(entry(Signal::ForwardingAddress, vec![t], true));
        }
        for rule in &mb.rules {
            let targets: BTreeSet<String> = rule
                .targets()
                .filter_map(|t| external(&st.target_address(meta, t)))
                .collect();
            if targets.is_empty() {
                continue;
            }
            out.push(TruthEntry {
                tenant_id: meta.id.clone(),
                mailbox: mailbox.clone(),
                signal: Signal::InboxRule,
                rule_id: Some(rule.id.to_string()),
                targets: targets.into_iter().collect(),
                enabled: rule.enabled,
                hidden: rule.hidden,
                keeps_copy: None,
                in_effect: None,
                rule_name: Some(rule.name.to_string()),
            });
        }
    }
    for rule in &st.transport_rules {
        let targets: BTreeSet<String> = rule
            .recipient_entries()
            .flat_map(|e| e.split(';'))
            .filter(|s| !s.trim().is_empty())
            .filter_map(external)
            .collect();
        if targets.is_empty() {
            continue;
        }
        out.push(TruthEntry {
            tenant_id: meta.id.clone(),
            mailbox: None,
            signal: Signal::TransportRule,
            rule_id: Some(crate::names::guid_str(rule.guid)),
            targets: targets.into_iter().collect(),
            enabled: rule.enabled && rule.mode == crate::model::RuleMode::Enforce,
            hidden: false,
            keeps_copy: None,
            in_effect: None,
            rule_name: Some(rule.name.to_string()),
        });
    }
}
