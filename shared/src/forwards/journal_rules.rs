//! Journal rules: `Get-JournalRule` (technique 22).
//!
//! A journal rule sends a journal report — a copy of every message in its scope —
//! to its `JournalEmailAddress`. Third-party archiving does this legitimately (an
//! operator approves it once); a stolen admin account does it to read everything.
//! The journal address is a recipient identity (an SMTP address or the name of a
//! contact / mail user), resolved like any other target. A disabled rule is
//! reported at lower severity (staged, not active).

use serde_json::Value;

use crate::contracts::Signal;
use crate::forwards::resolve::{Deliveries, Form, Forward, Pending, Resolver};
use crate::forwards::rows::{JournalRow, from_values};
use crate::m365::Cmdlet;

/// The fields `Get-JournalRule` is asked for.
pub const JOURNAL_FIELDS: &[&str] = &[
    "Name",
    "Identity",
    "Guid",
    "Enabled",
    "Scope",
    "Recipient",
    "JournalEmailAddress",
];

pub fn cmdlet() -> Cmdlet {
    Cmdlet::new("Get-JournalRule").select(JOURNAL_FIELDS)
}

/// One journal rule, reduced to what detection needs.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalRuleInfo {
    /// The rule's Guid (its Identity when no Guid is given).
    pub id: Option<String>,
    pub name: String,
    pub enabled: bool,
    /// Where journal reports go, as Exchange wrote it.
    pub address: Option<String>,
}

pub fn parse(rows: &[Value]) -> Vec<JournalRuleInfo> {
    from_rows(from_values(rows))
}

/// [`parse`] for rows already read as [`JournalRow`]s.
pub fn from_rows(rows: Vec<JournalRow>) -> Vec<JournalRuleInfo> {
    rows.into_iter()
        .map(|row| JournalRuleInfo {
            id: row
                .guid
                .text()
                .or_else(|| row.identity.text())
                .map(str::to_owned),
            name: row.name.text_or_empty(),
            // An unreadable flag must not hide a rule: assume enabled.
            enabled: row.enabled.flag(true),
            address: row.journal_email_address.text().map(str::to_owned),
        })
        .collect()
}

/// What resolving the journal addresses still waits for.
pub fn pending(rules: &[JournalRuleInfo], resolver: &Resolver, pending: &mut Pending) {
    for raw in rules.iter().filter_map(|r| r.address.as_deref()) {
        resolver.pending_in(raw, Form::Any, pending);
    }
}

/// One detection per journal rule whose reports leave the tenant.
pub fn forwards(rules: &[JournalRuleInfo], resolver: &Resolver) -> Vec<Forward> {
    rules
        .iter()
        .filter_map(|rule| {
            let mut found = Deliveries::default();
            found.add(resolver, rule.address.as_deref()?, Form::Any, false);
            if found.is_empty() {
                return None;
            }
            Some(Forward {
                rule_id: rule.id.clone(),
                rule_name: Some(rule.name.clone()),
                enabled: rule.enabled,
                ..Forward::new(Signal::JournalRule, found)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{AcceptedDomain, DomainType, TenantDomains};
    use crate::forwards::directory::Directory;
    use serde_json::json;

    #[test]
    fn outside_journal_addresses_are_forwards_disabled_ones_too() {
        let domains = TenantDomains::new(&[AcceptedDomain {
            name: "contoso.com".into(),
            domain_type: DomainType::Authoritative,
            match_subdomains: false,
        }]);
        let dir = Directory::from_rows(&[
            json!({"Identity":"Archive Vendor","Guid":"c1","RecipientTypeDetails":"MailContact","ExternalEmailAddress":"SMTP:journal@archiver.example"}),
        ]);
        let r = Resolver {
            domains: &domains,
            directory: &dir,
        };
        let rules = parse(&[
            json!({"Name":"all mail","Guid":"j1","Enabled":true,"Scope":"Global","JournalEmailAddress":"copy@evil.example"}),
            json!({"Name":"vendor","Guid":"j2","Enabled":false,"JournalEmailAddress":"Archive Vendor"}),
            json!({"Name":"inside","Guid":"j3","Enabled":true,"JournalEmailAddress":"journal@contoso.com"}),
            json!({"Name":"empty","Guid":"j4","Enabled":true}),
        ]);
        let f = forwards(&rules, &r);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].signal, Signal::JournalRule);
        assert_eq!(f[0].targets(), vec!["copy@evil.example"]);
        assert_eq!(f[0].rule_id.as_deref(), Some("j1"));
        assert!(!f[1].enabled);
        assert_eq!(f[1].targets(), vec!["journal@archiver.example"]);
        assert_eq!(f[1].deliveries[0].via[0].kind, "MailContact");
    }
}
