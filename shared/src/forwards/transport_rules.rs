//! Transport (mail-flow) rules: `Get-TransportRule`.
//!
//! A rule made with a stolen admin account copies or redirects mail of the whole
//! tenant, and no mailbox-level read ever sees it (technique 8). External targets
//! of `RedirectMessageTo`, `BlindCopyTo`, `AddToRecipients` and `CopyTo` (SMTP
//! addresses or recipient identities, sometimes a `;`-joined list in one entry),
//! and the recipient of an incident report (`GenerateIncidentReport`, technique
//! 23), make one detection per rule. An incident report with
//! `IncidentReportContent` `AttachOriginalMessage` carries the whole message: it
//! rates like a redirect. Disabled and audit-mode rules are reported too — a
//! disabled redirect is staged exfiltration — with `enabled = State Enabled && Mode
//! Enforce`. `RedirectMessageTo` means the original recipients get nothing.
//!
//! A rule's `RouteMessageOutboundConnector` is read here too; the connector it
//! names is judged in [`crate::forwards::connectors`].

use crate::contracts::Signal;
use crate::m365::Cmdlet;
use serde_json::Value;

use crate::forwards::resolve::{Deliveries, Form, Forward, Pending, Resolver};
use crate::forwards::rows::{TransportRow, from_values};

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
    "GenerateIncidentReport",
    "IncidentReportContent",
    "RouteMessageOutboundConnector",
];

pub fn cmdlet() -> Cmdlet {
    Cmdlet::new("Get-TransportRule")
        .param("ResultSize", "Unlimited")
        .select(TRANSPORT_FIELDS)
}

/// One transport rule, reduced to what detection needs.
#[derive(Debug, Clone, PartialEq)]
pub struct TransportRuleInfo {
    /// The rule's Guid (its Identity when no Guid is given): the only way a rule
    /// is ever named when acting on it — names can be duplicated by a decoy.
    pub id: Option<String>,
    pub name: String,
    /// `State` Enabled and `Mode` Enforce: the rule acts on mail today.
    pub enabled: bool,
    pub redirect: Vec<String>,
    /// BlindCopyTo, AddToRecipients, CopyTo: copies, the original still arrives.
    pub copies: Vec<String>,
    /// `GenerateIncidentReport`: who receives incident reports.
    pub incident_report: Vec<String>,
    /// `IncidentReportContent` includes `AttachOriginalMessage`.
    pub attaches_original: bool,
    /// `RouteMessageOutboundConnector`: the connector the rule sends mail through.
    pub connector: Option<String>,
}

impl TransportRuleInfo {
    fn all_targets(&self) -> impl Iterator<Item = &String> {
        self.redirect
            .iter()
            .chain(&self.copies)
            .chain(&self.incident_report)
    }
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
            let attaches_original = row
                .incident_report_content
                .into_list()
                .iter()
                .flat_map(|c| c.split([',', ';']))
                .any(|c| c.trim().eq_ignore_ascii_case("AttachOriginalMessage"));
            TransportRuleInfo {
                id,
                name,
                enabled: state_enabled && enforce,
                redirect: row.redirect_message_to.into_list(),
                copies,
                incident_report: row.generate_incident_report.into_list(),
                attaches_original,
                connector: row
                    .route_message_outbound_connector
                    .text()
                    .map(str::to_owned),
            }
        })
        .collect()
}

/// What resolving the rules' recipients still waits for.
pub fn pending(rules: &[TransportRuleInfo], resolver: &Resolver, pending: &mut Pending) {
    for raw in rules.iter().flat_map(TransportRuleInfo::all_targets) {
        resolver.pending_in(raw, Form::Any, pending);
    }
}

/// One detection per rule with an external (or unreadable) target.
pub fn forwards(rules: &[TransportRuleInfo], resolver: &Resolver) -> Vec<Forward> {
    rules
        .iter()
        .filter_map(|rule| {
            let mut found = Deliveries::default();
            for raw in &rule.redirect {
                found.add(resolver, raw, Form::Any, true);
            }
            for raw in &rule.copies {
                found.add(resolver, raw, Form::Any, false);
            }
            let before = found.deliveries.len();
            for raw in &rule.incident_report {
                found.add(resolver, raw, Form::Any, false);
            }
            let reports_outside = found.deliveries.len() > before;
            if found.is_empty() {
                return None;
            }
            Some(Forward {
                rule_id: rule.id.clone(),
                rule_name: Some(rule.name.clone()),
                enabled: rule.enabled,
                // Any redirect takes the message away from its recipients.
                keeps_copy: rule.redirect.is_empty(),
                attaches_original: reports_outside && rule.attaches_original,
                ..Forward::new(Signal::TransportRule, found)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{AcceptedDomain, DomainType, TenantDomains};
    use crate::contracts::Severity;
    use crate::forwards::directory::Directory;
    use serde_json::json;

    fn domains() -> TenantDomains {
        TenantDomains::new(&[AcceptedDomain {
            name: "contoso.com".into(),
            domain_type: DomainType::Authoritative,
            match_subdomains: false,
        }])
    }

    #[test]
    fn enabled_needs_state_and_mode_and_lists_split() {
        let domains = domains();
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
        assert_eq!(f[0].targets(), vec!["x@evil.example"]);
        assert!(f[1].enabled && !f[1].keeps_copy && f[1].redirect);
        assert_eq!(f[1].rule_id.as_deref(), Some("g2"));
    }

    #[test]
    fn incident_reports_outside_are_forwards_and_attaching_the_message_is_high() {
        let domains = domains();
        let dir = Directory::default();
        let r = Resolver {
            domains: &domains,
            directory: &dir,
        };
        let rules = parse(&[
            json!({"Name":"dlp","Guid":"g1","State":"Enabled","Mode":"Enforce","GenerateIncidentReport":"soc@evil.example","IncidentReportContent":["Sender","Subject","AttachOriginalMessage"]}),
            json!({"Name":"meta","Guid":"g2","State":"Enabled","Mode":"Enforce","GenerateIncidentReport":"soc@evil.example","IncidentReportContent":["Sender","Subject"]}),
            json!({"Name":"inside","Guid":"g3","GenerateIncidentReport":"soc@contoso.com","IncidentReportContent":["AttachOriginalMessage"]}),
        ]);
        let f = forwards(&rules, &r);
        assert_eq!(f.len(), 2, "{f:?}");
        let job = crate::contracts::ScanJob::example();
        let b = crate::forwards::resolve::DetectionBuilder {
            job: &job,
            posture: None,
            observed_at: chrono::Utc::now(),
        };
        let attached = b.build(f[0].clone());
        assert_eq!(attached.signal, Signal::TransportRule);
        assert_eq!(attached.targets, vec!["soc@evil.example"]);
        assert_eq!(attached.severity, Severity::High);
        assert_eq!(b.build(f[1].clone()).severity, Severity::Medium);
    }
}
