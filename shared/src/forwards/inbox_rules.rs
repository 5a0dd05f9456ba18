//! Inbox rules: `Get-InboxRule -IncludeHidden` of every mailbox.
//!
//! The expensive signal (one cmdlet per mailbox), so it is read in Exchange
//! `$batch`es of 10 mailboxes, all under the tenant's concurrency cap. A rule is a
//! forward when any of `ForwardTo`, `ForwardAsAttachmentTo`, `RedirectTo` holds a
//! target outside the tenant (internal targets are left out of the detection;
//! every target — `[EX:dn]` or SMTP — is resolved through the directory first, so
//! a guest or a group behind an internal-looking address is followed outside, and
//! a target that cannot be read is reported as it stands). Disabled rules count
//! too (lower severity), and so do system-named ones (OOF, "Junk E-mail Rule"):
//! their actions are inspected, never their names (technique 17).
//!
//! Hidden rules (technique 6) appear only with `IncludeHidden`. Which ones are
//! hidden is learnt by reading the visible set too — but only for mailboxes that
//! have an external forwarding rule, since nothing else needs the answer.

use std::collections::HashSet;

use crate::classify;
use crate::contracts::{HidingAction, Signal};
use crate::m365::{Cmdlet, Listing, M365Client, M365Error, rule_id_from};
use serde_json::Value;

use crate::forwards::mailbox_forwarding::MailboxInfo;
use crate::forwards::resolve::{Deliveries, Form, Forward, Pending, Resolver};
use crate::forwards::rows::{RuleRow, from_values};

/// The fields `Get-InboxRule` is asked for.
pub const RULE_FIELDS: &[&str] = &[
    "Name",
    "Identity",
    "RuleIdentity",
    "Enabled",
    "ForwardTo",
    "ForwardAsAttachmentTo",
    "RedirectTo",
    "DeleteMessage",
    "MarkAsRead",
    "MoveToFolder",
    "StopProcessingRules",
];

/// One inbox rule, reduced to what detection needs.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleInfo {
    /// `RuleIdentity` (u64, decimal) — or the tail of `Identity` when absent.
    pub id: Option<String>,
    pub name: String,
    pub enabled: bool,
    pub forward_to: Vec<String>,
    pub forward_as_attachment_to: Vec<String>,
    pub redirect_to: Vec<String>,
    pub hiding_actions: Vec<HidingAction>,
}

impl RuleInfo {
    fn all_targets(&self) -> impl Iterator<Item = &String> {
        self.forward_to
            .iter()
            .chain(&self.forward_as_attachment_to)
            .chain(&self.redirect_to)
    }
}

/// The rules of one mailbox, hidden ones included.
pub fn cmdlet(mailbox: &MailboxInfo) -> Cmdlet {
    Cmdlet::new("Get-InboxRule")
        .param("Mailbox", mailbox.identity.as_str())
        .param("IncludeHidden", true)
        .select(RULE_FIELDS)
        .anchor(mailbox.mailbox.primary_smtp_address.as_str())
}

/// The visible rules of one mailbox (no `IncludeHidden`), ids only.
pub fn visible_cmdlet(mailbox: &MailboxInfo) -> Cmdlet {
    Cmdlet::new("Get-InboxRule")
        .param("Mailbox", mailbox.identity.as_str())
        .select(&["Identity", "RuleIdentity"])
        .anchor(mailbox.mailbox.primary_smtp_address.as_str())
}

/// A rule's id without ever going through a float: `RuleIdentity` (a number that
/// can exceed 2^63, or a string), else the tail of `Identity` (`owner\id`).
pub fn rule_id(row: &Value) -> Option<String> {
    row.get("RuleIdentity")
        .and_then(rule_id_from)
        .or_else(|| row.get("Identity").and_then(rule_id_from))
}

/// Reads `Get-InboxRule` rows.
pub fn parse(rows: &[Value]) -> Vec<RuleInfo> {
    from_rows(from_values(rows))
}

/// [`parse`] for rows already read as [`RuleRow`]s.
pub fn from_rows(rows: Vec<RuleRow>) -> Vec<RuleInfo> {
    rows.into_iter()
        .map(|row| {
            let hiding_actions = classify::hiding_actions(
                row.delete_message.flag(false),
                row.mark_as_read.flag(false),
                row.move_to_folder.text(),
                row.stop_processing_rules.flag(false),
            );
            RuleInfo {
                id: row.id(),
                name: row.name.text_or_empty(),
                // An unreadable flag must not hide a rule: assume enabled (higher
                // severity) rather than disabled.
                enabled: row.enabled.flag(true),
                forward_to: row.forward_to.into_list(),
                forward_as_attachment_to: row.forward_as_attachment_to.into_list(),
                redirect_to: row.redirect_to.into_list(),
                hiding_actions,
            }
        })
        .collect()
}

/// What resolving the rules' targets still waits for.
pub fn pending(rules: &[RuleInfo], resolver: &Resolver, pending: &mut Pending) {
    for raw in rules.iter().flat_map(RuleInfo::all_targets) {
        resolver.pending_in(raw, Form::Any, pending);
    }
}

/// Whether the rule sends anything outside the tenant (or somewhere unreadable).
pub fn is_external(rule: &RuleInfo, resolver: &Resolver) -> bool {
    rule.all_targets()
        .any(|raw| resolver.leaves(raw, Form::Any))
}

/// The detection of one rule, if it forwards outside. `visible` is the set of rule
/// ids `Get-InboxRule` shows without `IncludeHidden` (`None`: not read, because
/// the mailbox has no external rule — then no rule of it reaches here anyway).
pub fn forward(
    mailbox: &MailboxInfo,
    rule: &RuleInfo,
    resolver: &Resolver,
    visible: Option<&HashSet<String>>,
) -> Option<Forward> {
    let mut found = Deliveries::default();
    for (field, is_redirect) in [
        (&rule.forward_to, false),
        (&rule.forward_as_attachment_to, false),
        (&rule.redirect_to, true),
    ] {
        for raw in field {
            found.add(resolver, raw, Form::Any, is_redirect);
        }
    }
    if found.is_empty() {
        return None;
    }
    let hidden = match (visible, &rule.id) {
        (Some(visible), Some(id)) => !visible.contains(id),
        _ => false,
    };
    let redirect = found.redirect;
    Some(Forward {
        mailbox: Some(mailbox.mailbox.clone()),
        rule_id: rule.id.clone(),
        rule_name: Some(rule.name.clone()),
        enabled: rule.enabled,
        // A redirect delivers the message elsewhere as if sent there: the victim
        // keeps no copy of what the collector receives.
        keeps_copy: !redirect,
        hidden,
        hiding_actions: rule.hiding_actions.clone(),
        ..Forward::new(Signal::InboxRule, found)
    })
}

/// Reads the rules of `mailboxes` (hidden ones included), 10 mailboxes per batch,
/// straight into [`RuleInfo`]s.
pub async fn read_all(
    client: &M365Client,
    tenant: &str,
    mailboxes: &[MailboxInfo],
) -> Vec<Result<Listing<RuleInfo>, M365Error>> {
    let cmdlets: Vec<Cmdlet> = mailboxes.iter().map(cmdlet).collect();
    client
        .invoke_batch_listing::<RuleRow>(tenant, &cmdlets)
        .await
        .into_iter()
        .map(|r| {
            r.map(|l| Listing {
                rows: from_rows(l.rows),
                truncated: l.truncated,
            })
        })
        .collect()
}

/// Reads the visible rule ids of `mailboxes`.
pub async fn read_visible(
    client: &M365Client,
    tenant: &str,
    mailboxes: &[&MailboxInfo],
) -> Vec<Result<HashSet<String>, M365Error>> {
    let cmdlets: Vec<Cmdlet> = mailboxes.iter().map(|m| visible_cmdlet(m)).collect();
    client
        .invoke_batch_as::<RuleRow>(tenant, &cmdlets)
        .await
        .into_iter()
        .map(|r| r.map(|rows| rows.iter().filter_map(RuleRow::id).collect()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{AcceptedDomain, DomainType, TenantDomains};
    use crate::contracts::Mailbox;
    use crate::forwards::directory::Directory;
    use serde_json::json;

    fn mailbox() -> MailboxInfo {
        MailboxInfo {
            mailbox: Mailbox {
                primary_smtp_address: "vic@contoso.com".into(),
                display_name: "Vic".into(),
                recipient_type: "UserMailbox".into(),
            },
            identity: "vic@contoso.com".into(),
            forwarding_smtp: None,
            forwarding_address: None,
            deliver_and_forward: false,
        }
    }

    #[test]
    fn rule_with_mixed_targets_keeps_only_external_and_hidden_is_marked() {
        let domains = TenantDomains::new(&[AcceptedDomain {
            name: "contoso.com".into(),
            domain_type: DomainType::Authoritative,
            match_subdomains: false,
        }]);
        let dir = Directory::from_rows(&[
            json!({"Identity":"bob","RecipientTypeDetails":"UserMailbox","PrimarySmtpAddress":"bob@contoso.com","LegacyExchangeDN":"/o=X/cn=bob"}),
        ]);
        let resolver = Resolver {
            domains: &domains,
            directory: &dir,
        };
        let rows: Vec<Value> = serde_json::from_str(
            r#"[{"Name":"Microsoft.Exchange.OOF.x","RuleIdentity":15394007230974001153,"Enabled":false,
                 "ForwardTo":["\"Bob\" [EX:/o=X/cn=bob]","\"Bob\" [SMTP:Bob@Evil.Example]"],
                 "RedirectTo":["\"x\" [SMTP:r@evil2.example]"],"MarkAsRead":true,"MoveToFolder":"vic@contoso.com:\\RSS Feeds"},
                {"Name":"internal","RuleIdentity":"2","ForwardTo":["\"Bob\" [EX:/o=X/cn=bob]"]}]"#,
        )
        .expect("json");
        let rules = parse(&rows);
        assert_eq!(rules[0].id.as_deref(), Some("15394007230974001153"));
        assert!(is_external(&rules[0], &resolver));
        assert!(!is_external(&rules[1], &resolver));
        let visible: HashSet<String> = ["2".to_owned()].into_iter().collect();
        let f = forward(&mailbox(), &rules[0], &resolver, Some(&visible)).expect("external");
        let targets = f.targets();
        assert_eq!(targets, vec!["Bob@evil.example", "r@evil2.example"]);
        assert!(f.hidden);
        assert!(!f.enabled);
        assert!(!f.keeps_copy);
        assert_eq!(
            f.hiding_actions,
            vec![HidingAction::MarkAsRead, HidingAction::MoveToRssFeeds]
        );
        assert!(forward(&mailbox(), &rules[1], &resolver, None).is_none());
    }
}
