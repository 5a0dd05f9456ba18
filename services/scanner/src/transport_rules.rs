//! Transport (mail-flow) rules: `Get-TransportRule`.
//!
//! A rule made with a stolen admin account copies or redirects mail of the whole
//! tenant, and no mailbox-level read ever sees it (technique 8). External targets
//! of `RedirectMessageTo`, `BlindCopyTo`, `AddToRecipients` and `CopyTo` (SMTP
//! addresses or recipient identities, sometimes a `;`-joined list in one entry)
//! make one detection per rule. Disabled and audit-mode rules are reported too —
//! a disabled redirect is staged exfiltration — with `enabled = State Enabled &&
//! Mode Enforce`. `RedirectMessageTo` means the original recipients get nothing.

use std::collections::BTreeSet;

use fwdwatch_shared::classify::Address;
use fwdwatch_shared::contracts::Signal;
use fwdwatch_shared::m365::Cmdlet;
use serde_json::Value;

use crate::forward::{Forward, Resolution, Resolver};
use crate::rows::{TransportRow, from_values};

/// The fields `Get-TransportRule` is asked for.
pub const TRANSPORT_FIELDS: &[&str] = &[
    "Name",
    "Identity",
    "Guid",
    "State",
    "Mode",
    "RedirectMessageTo",
    "BlindCopyTo",
    "AddToRecipients",
    "CopyTo",
];

pub fn cmdlet() -> Cmdlet {
    Cmdlet::new("Get-TransportRule")
        .param("ResultSize", "Unlimited")
        .select(TRANSPORT_FIELDS)
}

/// One transport rule, reduced to what detection needs.
#[derive(Debug, Clone, PartialEq)]
pub struct TransportRuleInfo {
    /// The rule's Guid (its Identity when no Guid is given).
    pub id: Option<String>,
    pub name: String,
    /// `State` Enabled and `Mode` Enforce: the rule acts on mail today.
    pub enabled: bool,
    pub redirect: Vec<String>,
    /// BlindCopyTo, AddToRecipients, CopyTo: copies, the original still arrives.
    pub copies: Vec<String>,
}

pub fn parse(rows: &[Value]) -> Vec<TransportRuleInfo> {
    from_rows(from_values(rows))
}

/// [`parse`] for rows already read as [`TransportRow`]s.
pub fn from_rows(rows: Vec<TransportRow>) -> Vec<TransportRuleInfo> {
    rows.into_iter()
        .map(|row| {
            let state_enabled = row
                .state
                .text()
                .is_none_or(|s| s.eq_ignore_ascii_case("enabled"));
            let enforce = row
                .mode
                .text()
                .is_none_or(|m| m.eq_ignore_ascii_case("enforce"));
            let id = row
                .guid
                .text()
                .or_else(|| row.identity.text())
                .map(str::to_owned);
            let name = row.name.text_or_empty();
            let mut copies = row.blind_copy_to.into_list();
            copies.extend(row.add_to_recipients.into_list());
            copies.extend(row.copy_to.into_list());
            TransportRuleInfo {
                id,
                name,
                enabled: state_enabled && enforce,
                redirect: row.redirect_message_to.into_list(),
                copies,
            }
        })
        .collect()
}

/// Recipient identities the directory does not know yet.
pub fn unknown_identities(rules: &[TransportRuleInfo], resolver: &Resolver) -> Vec<String> {
    rules
        .iter()
        .flat_map(|r| r.redirect.iter().chain(&r.copies))
        .flat_map(|raw| resolver.unknown_in(raw))
        .collect()
}

/// One detection per rule with an external target.
pub fn forwards(rules: &[TransportRuleInfo], resolver: &Resolver) -> Vec<Forward> {
    rules
        .iter()
        .filter_map(|rule| {
            let mut targets: BTreeSet<Address> = BTreeSet::new();
            let mut raw_targets = Vec::new();
            let mut redirect = false;
            for (field, is_redirect) in [(&rule.redirect, true), (&rule.copies, false)] {
                for raw in field {
                    let mut any = false;
                    for r in resolver.raw(raw) {
                        if let Resolution::External(a) = r {
                            targets.insert(a);
                            any = true;
                        }
                    }
                    if any {
                        raw_targets.push(raw.clone());
                        redirect |= is_redirect;
                    }
                }
            }
            if targets.is_empty() {
                return None;
            }
            Some(Forward {
                signal: Signal::TransportRule,
                mailbox: None,
                rule_id: rule.id.clone(),
                rule_name: Some(rule.name.clone()),
                targets,
                raw_targets,
                enabled: rule.enabled,
                // Any redirect takes the message away from its recipients.
                keeps_copy: rule.redirect.is_empty(),
                redirect,
                hidden: false,
                hiding_actions: Vec::new(),
                in_effect: true,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::Directory;
    use fwdwatch_shared::classify::{AcceptedDomain, DomainType, TenantDomains};
    use serde_json::json;

    #[test]
    fn enabled_needs_state_and_mode_and_lists_split() {
        let domains = TenantDomains::new(&[AcceptedDomain {
            name: "contoso.com".into(),
            domain_type: DomainType::Authoritative,
            match_subdomains: false,
        }]);
        let dir = Directory::default();
        let r = Resolver {
            domains: &domains,
            directory: &dir,
        };
        let rules = parse(&[
            json!({"Name":"a","Guid":"g1","State":"Enabled","Mode":"Audit","BlindCopyTo":["x@evil.example;y@contoso.com"]}),
            json!({"Name":"b","Guid":"g2","State":"Enabled","Mode":"Enforce","RedirectMessageTo":["z@evil.example"]}),
            json!({"Name":"c","Guid":"g3","State":"Disabled","Mode":"Enforce","CopyTo":["in@contoso.com"]}),
        ]);
        let f = forwards(&rules, &r);
        assert_eq!(f.len(), 2);
        assert!(!f[0].enabled && f[0].keeps_copy);
        assert_eq!(
            f[0].targets
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            vec!["x@evil.example"]
        );
        assert!(f[1].enabled && !f[1].keeps_copy && f[1].redirect);
        assert_eq!(f[1].rule_id.as_deref(), Some("g2"));
    }
}
