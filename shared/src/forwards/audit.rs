//! Exchange audit records (`Audit.Exchange`): what a scan between two cycles
//! cannot see.
//!
//! - [`decode_record`] / [`decode_blob`]: Microsoft's JSON records into
//!   [`AuditRecord`]s, defensively. A record is hostile input (its parameters are
//!   whatever the attacker typed): every string is bounded, and a record that does
//!   not have the expected shape is kept with its `unreadable` reason — reported,
//!   never dropped.
//! - [`classify`]: which records are forwarding changes (a rescan now, and an
//!   `audit_event` detection if the forward is gone by then), removals and posture
//!   changes (a rescan only), or unrelated.
//! - [`audit_forwards`]: after the rescan, the records whose forward is no longer
//!   there become [`Forward`]s of signal `audit_event` (the scan's resolver says
//!   where their targets deliver; what it cannot resolve is unreadable, fail
//!   closed). A record whose forward the scan still sees adds nothing: the normal
//!   detection covers it.

use std::collections::BTreeSet;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::contracts::{AuditParameter, AuditRecord, Mailbox, Signal};
use crate::forwards::connectors::smart_host;
use crate::forwards::mailbox_forwarding::MailboxInfo;
use crate::forwards::resolve::{Deliveries, Delivery, Form, Forward, Outcome, Resolver};
use crate::m365::parse_activity_time;

/// Longest string kept from a record (ids, actor, IP, object, names).
pub const MAX_FIELD: usize = 1_024;
/// Longest parameter value kept; a longer one makes the record unreadable (a cut
/// target would be another target).
pub const MAX_VALUE: usize = 8_192;
/// Most parameters kept from one record.
pub const MAX_PARAMETERS: usize = 100;
/// Most records decoded from one content blob; the rest is reported.
pub const MAX_RECORDS: usize = 20_000;

/// What a record means for fwdwatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A forward of this signal may have been created or changed: rescan, and
    /// report the record if its forward is gone by then.
    Forwarding(Signal),
    /// A forward of this signal was removed or disabled: rescan (it resolves).
    Removal(Signal),
    /// Whether forwards can leave changed (outbound spam policy, remote domain).
    Posture,
    /// The record could not be read: rescan, and report it.
    Unreadable,
    /// Not about forwarding (or a change that failed).
    Unrelated,
}

impl Change {
    /// Whether the record asks for an immediate rescan of its tenant.
    pub fn triggers_rescan(self) -> bool {
        !matches!(self, Change::Unrelated)
    }
}

/// Where a parameter's value sends mail, by signal and the form of its value.
const TARGET_FIELDS: &[(&str, Signal, Form)] = &[
    (
        "ForwardingSmtpAddress",
        Signal::ForwardingSmtpAddress,
        Form::Smtp,
    ),
    (
        "ForwardingAddress",
        Signal::ForwardingAddress,
        Form::Identity,
    ),
    ("ForwardTo", Signal::InboxRule, Form::Any),
    ("ForwardAsAttachmentTo", Signal::InboxRule, Form::Any),
    ("RedirectTo", Signal::InboxRule, Form::Any),
    ("RedirectMessageTo", Signal::TransportRule, Form::Any),
    ("BlindCopyTo", Signal::TransportRule, Form::Any),
    ("AddToRecipients", Signal::TransportRule, Form::Any),
    ("CopyTo", Signal::TransportRule, Form::Any),
    ("GenerateIncidentReport", Signal::TransportRule, Form::Any),
    ("JournalEmailAddress", Signal::JournalRule, Form::Any),
    ("SmartHosts", Signal::OutboundConnector, Form::Any),
];

/// Parameters whose value redirects (no copy reaches the mailbox as sent).
const REDIRECT_FIELDS: &[&str] = &["RedirectTo", "RedirectMessageTo"];

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        Value::Bool(true) => Some("True".into()),
        Value::Bool(false) => Some("False".into()),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(text_of)
                .collect::<Vec<_>>()
                .join(";"),
        ),
        other => Some(other.to_string()),
    }
}

/// Decodes one record. Never fails: whatever is missing or garbled is named in
/// the record's `unreadable` reason. A record without an `Id` gets a stable one
/// from its content (`unreadable:<hash>`), so it is still deduplicated.
pub fn decode_record(value: &Value) -> AuditRecord {
    let mut problems: Vec<String> = Vec::new();
    let Value::Object(map) = value else {
        return unreadable_record(value, "an audit record must be a JSON object");
    };
    // What is missing is judged below (an empty string is as missing as none).
    let field = |name: &str, problems: &mut Vec<String>| -> String {
        match map.get(name).and_then(text_of) {
            Some(s) if s.len() > MAX_FIELD => {
                problems.push(format!("{name} is longer than {MAX_FIELD} bytes"));
                crate::m365::activity_bounded(&s, MAX_FIELD)
            }
            Some(s) => s,
            None => String::new(),
        }
    };
    let id = field("Id", &mut problems);
    let operation = field("Operation", &mut problems);
    if operation.trim().is_empty() {
        problems.push("Operation is missing".into());
    }
    let actor = field("UserId", &mut problems);
    let client_ip = field("ClientIP", &mut problems);
    let object_id = field("ObjectId", &mut problems);
    let result_status = field("ResultStatus", &mut problems);
    let created_text = field("CreationTime", &mut problems);
    let created_at = parse_activity_time(&created_text);
    if created_at.is_none() {
        problems.push("CreationTime is missing or not a time".into());
    }
    let mut parameters = Vec::new();
    for list in ["Parameters", "OperationProperties"] {
        match map.get(list) {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for item in items {
                    if parameters.len() >= MAX_PARAMETERS {
                        problems.push(format!("more than {MAX_PARAMETERS} parameters"));
                        break;
                    }
                    let name = item.get("Name").and_then(Value::as_str);
                    let value = item.get("Value").and_then(text_of).unwrap_or_default();
                    match name {
                        Some(n) if !n.trim().is_empty() && n.len() <= MAX_FIELD => {
                            if value.len() > MAX_VALUE {
                                problems.push(format!(
                                    "parameter {n} is longer than {MAX_VALUE} bytes"
                                ));
                            }
                            parameters.push(AuditParameter {
                                name: n.trim().to_owned(),
                                value: crate::m365::activity_bounded(&value, MAX_VALUE),
                            });
                        }
                        _ => problems.push(format!("{list} has an entry without a usable Name")),
                    }
                }
            }
            Some(_) => problems.push(format!("{list} is not a list")),
        }
    }
    if id.trim().is_empty() {
        problems.push("Id is missing".into());
    }
    let id = if id.trim().is_empty() {
        content_id(value)
    } else {
        id.trim().to_owned()
    };
    problems.dedup();
    AuditRecord {
        id,
        created_at,
        operation: operation.trim().to_owned(),
        actor,
        client_ip,
        object_id,
        parameters,
        result_status,
        unreadable: (!problems.is_empty()).then(|| problems.join("; ")),
    }
}

/// A stable id for content without one.
fn content_id(value: &Value) -> String {
    let digest = Sha256::digest(value.to_string().as_bytes());
    format!("unreadable:{}", hex::encode(&digest[..12]))
}

fn unreadable_record(value: &Value, why: &str) -> AuditRecord {
    AuditRecord {
        id: content_id(value),
        created_at: None,
        operation: String::new(),
        actor: String::new(),
        client_ip: String::new(),
        object_id: String::new(),
        parameters: Vec::new(),
        result_status: String::new(),
        unreadable: Some(format!(
            "{why}: {}",
            crate::m365::activity_bounded(&value.to_string(), 200)
        )),
    }
}

/// A whole content blob that could not be read, as one record standing for it.
pub fn unreadable_content(content_id: &str, why: &str) -> AuditRecord {
    AuditRecord {
        id: format!(
            "content:{}",
            crate::m365::activity_bounded(content_id, MAX_FIELD)
        ),
        created_at: None,
        operation: String::new(),
        actor: String::new(),
        client_ip: String::new(),
        object_id: String::new(),
        parameters: Vec::new(),
        result_status: String::new(),
        unreadable: Some(format!(
            "audit content {} could not be read: {}",
            crate::m365::activity_bounded(content_id, 200),
            crate::m365::activity_bounded(why, 500)
        )),
    }
}

/// Decodes the records of one blob (at most [`MAX_RECORDS`]; more is reported).
pub fn decode_blob(content_id: &str, records: &[Value]) -> Vec<AuditRecord> {
    let mut out: Vec<AuditRecord> = records
        .iter()
        .take(MAX_RECORDS)
        .map(decode_record)
        .collect();
    if records.len() > MAX_RECORDS {
        out.push(unreadable_content(
            content_id,
            &format!(
                "{} records, only the first {MAX_RECORDS} were read",
                records.len()
            ),
        ));
    }
    out
}

fn has_value(r: &AuditRecord, name: &str) -> bool {
    r.parameter(name).is_some_and(|v| !v.trim().is_empty())
}

/// What a record means for fwdwatch (see [`Change`]). A change whose
/// `ResultStatus` says it failed is unrelated; anything else is taken as done.
pub fn classify(r: &AuditRecord) -> Change {
    if r.unreadable.is_some() {
        return Change::Unreadable;
    }
    let status = r.result_status.trim();
    if status.eq_ignore_ascii_case("False") || status.eq_ignore_ascii_case("Failed") {
        return Change::Unrelated;
    }
    let op = r.operation.trim();
    let is = |name: &str| op.eq_ignore_ascii_case(name);
    if is("Set-Mailbox") {
        if has_value(r, "ForwardingAddress") {
            return Change::Forwarding(Signal::ForwardingAddress);
        }
        if has_value(r, "ForwardingSmtpAddress") {
            return Change::Forwarding(Signal::ForwardingSmtpAddress);
        }
        if r.parameter("ForwardingSmtpAddress").is_some()
            || r.parameter("ForwardingAddress").is_some()
        {
            return Change::Removal(Signal::ForwardingSmtpAddress);
        }
        if r.parameter("DeliverToMailboxAndForward").is_some() {
            return Change::Forwarding(Signal::ForwardingSmtpAddress);
        }
        return Change::Unrelated;
    }
    for (names, signal) in [
        (
            &[
                "New-InboxRule",
                "Set-InboxRule",
                "Enable-InboxRule",
                "UpdateInboxRules",
            ][..],
            Signal::InboxRule,
        ),
        (
            &[
                "New-TransportRule",
                "Set-TransportRule",
                "Enable-TransportRule",
            ][..],
            Signal::TransportRule,
        ),
        (
            &["New-JournalRule", "Set-JournalRule", "Enable-JournalRule"][..],
            Signal::JournalRule,
        ),
        (
            &["New-OutboundConnector", "Set-OutboundConnector"][..],
            Signal::OutboundConnector,
        ),
    ] {
        if names.iter().any(|n| is(n)) {
            // Set-OutboundConnector -Enabled $false only turns one off.
            if is("Set-OutboundConnector") && r.parameter("Enabled").is_some_and(is_false) {
                return Change::Removal(signal);
            }
            return Change::Forwarding(signal);
        }
    }
    for (names, signal) in [
        (
            &["Remove-InboxRule", "Disable-InboxRule"][..],
            Signal::InboxRule,
        ),
        (
            &["Remove-TransportRule", "Disable-TransportRule"][..],
            Signal::TransportRule,
        ),
        (
            &["Remove-JournalRule", "Disable-JournalRule"][..],
            Signal::JournalRule,
        ),
        (&["Remove-OutboundConnector"][..], Signal::OutboundConnector),
    ] {
        if names.iter().any(|n| is(n)) {
            return Change::Removal(signal);
        }
    }
    if is("Set-HostedOutboundSpamFilterPolicy")
        || is("New-HostedOutboundSpamFilterPolicy")
        || is("Set-HostedOutboundSpamFilterRule")
        || is("New-HostedOutboundSpamFilterRule")
        || is("Set-RemoteDomain")
        || is("New-RemoteDomain")
    {
        return Change::Posture;
    }
    Change::Unrelated
}

fn is_false(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "false" | "$false" | "0"
    )
}

/// The outside targets a record names: `(parameter, value, form)`.
pub fn record_targets(r: &AuditRecord) -> Vec<(&str, &str, Form)> {
    let mut out = Vec::new();
    for p in &r.parameters {
        if p.value.trim().is_empty() {
            continue;
        }
        if let Some((name, _, form)) = TARGET_FIELDS
            .iter()
            .find(|(n, _, _)| n.eq_ignore_ascii_case(&p.name))
        {
            out.push((*name, p.value.as_str(), *form));
        }
    }
    out
}

/// The mailbox a per-mailbox record is about, as the record names it (an SMTP
/// address, alias or name): `-Mailbox`, else `-Identity` (up to a `\rule` part),
/// else the `ObjectId`'s mailbox part, else — a user changing their own rules —
/// the actor.
pub fn record_mailbox(r: &AuditRecord) -> Option<String> {
    let owner = |s: &str| -> String {
        let s = s.trim();
        let before_rule = match s.rfind('\\') {
            Some(i) => &s[..i],
            None => s,
        };
        // `…/contoso.onmicrosoft.com/victim` → `victim`.
        before_rule
            .rsplit('/')
            .next()
            .unwrap_or(before_rule)
            .trim()
            .to_owned()
    };
    let set_mailbox = r.operation.eq_ignore_ascii_case("Set-Mailbox");
    r.parameter("Mailbox")
        .map(owner)
        .or_else(|| {
            r.parameter("Identity").map(|i| {
                if set_mailbox {
                    i.trim().to_owned()
                } else {
                    owner(i)
                }
            })
        })
        .filter(|s| !s.is_empty())
        .or_else(|| {
            let o = r.object_id.trim();
            (!o.is_empty()).then(|| if set_mailbox { o.to_owned() } else { owner(o) })
        })
        .filter(|s| !s.is_empty())
        .or_else(|| Some(r.actor.trim().to_owned()))
        .filter(|s| !s.is_empty())
}

/// Whether `name` (as a record wrote it) names `mailbox`.
fn names_mailbox(name: &str, mailbox: &MailboxInfo) -> bool {
    let name = name.trim();
    let primary = &mailbox.mailbox.primary_smtp_address;
    name.eq_ignore_ascii_case(primary)
        || name.eq_ignore_ascii_case(&mailbox.identity)
        || (!mailbox.mailbox.display_name.is_empty()
            && name.eq_ignore_ascii_case(&mailbox.mailbox.display_name))
        || primary
            .split_once('@')
            .is_some_and(|(local, _)| name.eq_ignore_ascii_case(local))
}

fn same_family(a: Signal, b: Signal) -> bool {
    let mailbox = |s| matches!(s, Signal::ForwardingSmtpAddress | Signal::ForwardingAddress);
    a == b || (mailbox(a) && mailbox(b))
}

/// The record's outside deliveries, resolved with the scan's resolver when there
/// is one. An identity or group the scan did not read is unreadable (fail closed).
fn deliveries(r: &AuditRecord, resolver: Option<&Resolver<'_>>) -> Deliveries {
    let mut found = Deliveries::default();
    for (name, raw, form) in record_targets(r) {
        let mut any = false;
        let unreadable = |text: &str| Delivery {
            target: text.trim().to_owned(),
            via: Vec::new(),
            unreadable: true,
            domain: None,
        };
        if name.eq_ignore_ascii_case("SmartHosts") {
            for host in raw.split([';', ',']).filter(|h| !h.trim().is_empty()) {
                let d = match resolver {
                    Some(res) => smart_host(host, res.domains),
                    None => Some(unreadable(host)),
                };
                if let Some(d) = d {
                    found.deliveries.push(d);
                    any = true;
                }
            }
        } else {
            match resolver {
                Some(res) => {
                    for outcome in res.resolve(raw, form) {
                        match outcome {
                            Outcome::Internal => {}
                            Outcome::External(d) | Outcome::Unreadable(d) => {
                                found.deliveries.push(d);
                                any = true;
                            }
                            Outcome::Unknown(id) => {
                                found.deliveries.push(unreadable(&id));
                                any = true;
                            }
                            Outcome::Expand(_) => {
                                // A group the scan did not expand: its members
                                // were not read.
                                found.deliveries.push(unreadable(raw));
                                any = true;
                            }
                        }
                    }
                }
                None => {
                    found.deliveries.push(unreadable(raw));
                    any = true;
                }
            }
        }
        if any {
            found.raw.push(raw.to_owned());
            found.redirect |= REDIRECT_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(name));
        }
    }
    found.deliveries.sort();
    found.deliveries.dedup();
    found
}

/// The `audit_event` forwards of a rescan: one per record whose forward is gone.
///
/// - `resolver`: the scan's (its domains and directory); `None` when the scan
///   could not read the tenant's domains — then every target is unreadable.
/// - `mailboxes`: the mailboxes the scan listed (to name the record's mailbox).
/// - `current`: the forwards the scan found. A record whose every outside target
///   is among a current forward's of the same kind (and mailbox, when both name
///   one) is covered by that forward's own detection.
///
/// Records that are not forwarding changes, or that name no target (an
/// `UpdateInboxRules` from Outlook, `Enable-InboxRule`), add nothing: their rescan
/// is what they were for. An unreadable record is always reported.
pub fn audit_forwards(
    records: &[AuditRecord],
    resolver: Option<&Resolver<'_>>,
    mailboxes: &[MailboxInfo],
    current: &[Forward],
) -> Vec<(Forward, AuditRecord)> {
    let mut out = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for r in records {
        if !seen.insert(r.key()) {
            continue;
        }
        let signal = match classify(r) {
            Change::Unreadable => {
                let reason = r.unreadable.clone().unwrap_or_default();
                let found = Deliveries {
                    deliveries: vec![Delivery {
                        target: format!("audit record {}: {reason}", r.id),
                        via: Vec::new(),
                        unreadable: true,
                        domain: None,
                    }],
                    raw: Vec::new(),
                    redirect: false,
                };
                let mut f = Forward::new(Signal::AuditEvent, found);
                f.rule_id = Some(r.id.clone());
                out.push((f, r.clone()));
                continue;
            }
            Change::Forwarding(signal) => signal,
            _ => continue,
        };
        let found = deliveries(r, resolver);
        if found.is_empty() {
            continue;
        }
        let named = signal.is_per_mailbox().then(|| record_mailbox(r)).flatten();
        let mailbox = named
            .as_deref()
            .and_then(|n| mailboxes.iter().find(|m| names_mailbox(n, m)));
        let targets: BTreeSet<&str> = found.deliveries.iter().map(|d| d.target.as_str()).collect();
        let covered = current.iter().any(|f| {
            same_family(f.signal, signal)
                && match (&f.mailbox, mailbox, named.as_deref()) {
                    (Some(fm), Some(m), _) => {
                        fm.primary_smtp_address == m.mailbox.primary_smtp_address
                    }
                    // A mailbox the scan did not list: the forward is not there.
                    (Some(_), None, Some(_)) => false,
                    _ => true,
                }
                && {
                    let have: BTreeSet<&str> =
                        f.deliveries.iter().map(|d| d.target.as_str()).collect();
                    targets.is_subset(&have)
                }
        });
        if covered {
            continue;
        }
        let mut f = Forward::new(Signal::AuditEvent, found);
        f.rule_id = Some(r.id.clone());
        f.rule_name = r
            .parameter("Name")
            .map(|n| crate::m365::activity_bounded(n.trim(), 256))
            .filter(|n| !n.is_empty());
        f.mailbox = match (mailbox, named) {
            (Some(m), _) => Some(m.mailbox.clone()),
            (None, Some(n)) => Some(Mailbox {
                primary_smtp_address: crate::m365::activity_bounded(&n.to_lowercase(), 256),
                display_name: String::new(),
                recipient_type: String::new(),
            }),
            (None, None) => None,
        };
        f.keeps_copy = !r
            .parameter("DeliverToMailboxAndForward")
            .is_some_and(is_false);
        out.push((f, r.clone()));
    }
    out
}

/// Makes an `audit_event` detection one per record: its fingerprint covers the
/// tenant, the mailbox and the record's id only (not how its targets resolved at
/// this scan), so every rescan carrying the record yields the same detection, and
/// it carries the record (time, actor, client IP).
pub fn finish_detection(d: &mut crate::contracts::Detection, record: AuditRecord) {
    d.fingerprint = crate::classify::fingerprint(
        &d.tenant_id,
        d.mailbox.as_ref().map(|m| m.primary_smtp_address.as_str()),
        Signal::AuditEvent,
        Some(&record.key()),
        &[],
    );
    d.detection_id = crate::classify::detection_id(&d.run_id, &d.fingerprint);
    d.severity = crate::contracts::Severity::High;
    d.audit = Some(record);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{AcceptedDomain, DomainType, TenantDomains};
    use crate::forwards::directory::Directory;
    use serde_json::json;

    fn record(op: &str, params: &[(&str, &str)]) -> AuditRecord {
        decode_record(&json!({
            "Id": format!("id-{op}-{}", params.len()),
            "CreationTime": "2026-05-29T12:29:35",
            "Operation": op,
            "UserId": "victim@contoso.com",
            "ClientIP": "203.0.113.7:50123",
            "ObjectId": "victim@contoso.com\\Rule",
            "ResultStatus": "True",
            "Parameters": params.iter().map(|(n, v)| json!({"Name": n, "Value": v})).collect::<Vec<_>>(),
        }))
    }

    #[test]
    fn decodes_microsofts_sample() {
        let r = decode_record(
            &json!({"CreationTime":"2026-05-29T12:29:35","Id":"a1b2","Operation":"New-InboxRule","RecordType":1,"ResultStatus":"True","Workload":"Exchange",
            "UserId":"victim@contoso.com","ObjectId":"EURPR05A001.prod.outlook.com/Microsoft Exchange Hosted Organizations/contoso.onmicrosoft.com/victim\\Forward","ClientIP":"203.0.113.7:50123","ExternalAccess":false,
            "Parameters":[{"Name":"Name","Value":"."},{"Name":"ForwardTo","Value":"attacker@evil.example"},{"Name":"StopProcessingRules","Value":"True"}]}),
        );
        assert_eq!(r.unreadable, None);
        assert_eq!(r.id, "a1b2");
        assert_eq!(r.client_ip, "203.0.113.7:50123");
        assert_eq!(classify(&r), Change::Forwarding(Signal::InboxRule));
        assert_eq!(record_mailbox(&r).as_deref(), Some("victim"));
        assert_eq!(
            record_targets(&r),
            vec![("ForwardTo", "attacker@evil.example", Form::Any)]
        );
    }

    #[test]
    fn garbled_records_are_kept_with_a_reason() {
        for v in [
            json!("text"),
            json!({"Operation": "New-InboxRule"}),
            json!({"Id": "x", "Operation": "Set-Mailbox", "CreationTime": "later"}),
            json!({"Id": "x", "Operation": "Set-Mailbox", "CreationTime": "2026-05-29T12:29:35", "Parameters": {"a": 1}}),
            json!({"Id": "x", "Operation": "Set-Mailbox", "CreationTime": "2026-05-29T12:29:35", "Parameters": [{"Value": "a@b.c"}]}),
        ] {
            let r = decode_record(&v);
            assert!(r.unreadable.is_some(), "{v}");
            assert_eq!(classify(&r), Change::Unreadable);
            assert!(!r.id.is_empty());
        }
        // Same garbled content, same id (deduplicated across polls).
        assert_eq!(
            decode_record(&json!([1, 2])).id,
            decode_record(&json!([1, 2])).id
        );
    }

    #[test]
    fn classification() {
        assert_eq!(
            classify(&record(
                "Set-Mailbox",
                &[
                    ("Identity", "bob"),
                    ("ForwardingSmtpAddress", "smtp:x@evil.example")
                ]
            )),
            Change::Forwarding(Signal::ForwardingSmtpAddress)
        );
        assert_eq!(
            classify(&record(
                "Set-Mailbox",
                &[("Identity", "bob"), ("ForwardingSmtpAddress", "")]
            )),
            Change::Removal(Signal::ForwardingSmtpAddress)
        );
        assert_eq!(
            classify(&record(
                "Set-Mailbox",
                &[("Identity", "bob"), ("Title", "CEO")]
            )),
            Change::Unrelated
        );
        assert_eq!(
            classify(&record("UpdateInboxRules", &[])),
            Change::Forwarding(Signal::InboxRule)
        );
        assert_eq!(
            classify(&record("remove-inboxrule", &[])),
            Change::Removal(Signal::InboxRule)
        );
        assert_eq!(classify(&record("Set-RemoteDomain", &[])), Change::Posture);
        assert_eq!(classify(&record("Get-Mailbox", &[])), Change::Unrelated);
        let mut failed = record("New-InboxRule", &[("ForwardTo", "x@evil.example")]);
        failed.result_status = "False".into();
        assert_eq!(classify(&failed), Change::Unrelated);
    }

    #[test]
    fn mailbox_forwards_and_tenant_wide_rules_resolve_like_any_target() {
        let domains = TenantDomains::new(&[AcceptedDomain {
            name: "contoso.com".into(),
            domain_type: DomainType::Authoritative,
            match_subdomains: false,
        }]);
        // The contact a ForwardingAddress named is still there; the forward is not.
        let dir = Directory::from_rows(&[
            json!({"Identity":"Guy","Name":"Guy","RecipientTypeDetails":"MailContact","PrimarySmtpAddress":"guy@contoso.com","ExternalEmailAddress":"SMTP:guy@evil.example"}),
        ]);
        let resolver = Resolver {
            domains: &domains,
            directory: &dir,
        };
        let by_address = record(
            "Set-Mailbox",
            &[
                ("Identity", "bob@contoso.com"),
                ("ForwardingAddress", "Guy"),
                ("DeliverToMailboxAndForward", "False"),
            ],
        );
        let rule = record(
            "New-TransportRule",
            &[
                ("Name", "Copy"),
                ("BlindCopyTo", "a@contoso.com;x@evil.example"),
            ],
        );
        let connector = record(
            "New-OutboundConnector",
            &[
                ("Name", "relay"),
                ("SmartHosts", "mail.contoso.com;smtp.evil.example"),
            ],
        );
        let out = audit_forwards(&[by_address, rule, connector], Some(&resolver), &[], &[]);
        let seen: Vec<(Option<&str>, Vec<String>, bool)> = out
            .iter()
            .map(|(f, _)| {
                (
                    f.mailbox.as_ref().map(|m| m.primary_smtp_address.as_str()),
                    f.targets(),
                    f.keeps_copy,
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                (
                    Some("bob@contoso.com"),
                    vec!["guy@evil.example".to_owned()],
                    false
                ),
                (None, vec!["x@evil.example".to_owned()], true),
                (None, vec!["smtp.evil.example".to_owned()], true),
            ]
        );
        // An identity nobody resolves (the contact deleted too): unreadable.
        let gone = record(
            "Set-Mailbox",
            &[("Identity", "bob"), ("ForwardingAddress", "Nobody")],
        );
        let out = audit_forwards(&[gone], Some(&resolver), &[], &[]);
        assert!(out[0].0.deliveries.iter().all(|d| d.unreadable), "{out:?}");
    }

    #[test]
    fn the_mailbox_a_record_names() {
        let mut r = record("Set-InboxRule", &[("Identity", "victim\\Forward")]);
        assert_eq!(record_mailbox(&r).as_deref(), Some("victim"));
        r = record(
            "New-InboxRule",
            &[("Mailbox", "ceo@contoso.com"), ("Name", "x")],
        );
        assert_eq!(record_mailbox(&r).as_deref(), Some("ceo@contoso.com"));
        r = record("UpdateInboxRules", &[]);
        r.object_id.clear();
        assert_eq!(record_mailbox(&r).as_deref(), Some("victim@contoso.com"));
        r = record("Set-Mailbox", &[("Identity", "Bob Smith")]);
        assert_eq!(record_mailbox(&r).as_deref(), Some("Bob Smith"));
    }

    #[test]
    fn a_forward_still_present_covers_its_record() {
        let domains = TenantDomains::new(&[AcceptedDomain {
            name: "contoso.com".into(),
            domain_type: DomainType::Authoritative,
            match_subdomains: false,
        }]);
        let dir = Directory::default();
        let resolver = Resolver {
            domains: &domains,
            directory: &dir,
        };
        let mailbox = MailboxInfo {
            mailbox: Mailbox {
                primary_smtp_address: "victim@contoso.com".into(),
                display_name: "Vic Tim".into(),
                recipient_type: "UserMailbox".into(),
            },
            identity: "victim".into(),
            forwarding_smtp: None,
            forwarding_address: None,
            deliver_and_forward: true,
        };
        let gone = record(
            "New-InboxRule",
            &[("Name", "x"), ("ForwardTo", "eve@evil.example")],
        );
        let internal = record(
            "New-InboxRule",
            &[("Name", "y"), ("ForwardTo", "bob@contoso.com")],
        );
        let out = audit_forwards(
            &[gone.clone(), internal],
            Some(&resolver),
            std::slice::from_ref(&mailbox),
            &[],
        );
        assert_eq!(out.len(), 1, "an internal target is no forward");
        let (f, r) = &out[0];
        assert_eq!(f.signal, Signal::AuditEvent);
        assert_eq!(f.targets(), vec!["eve@evil.example"]);
        assert_eq!(f.rule_id.as_deref(), Some(r.id.as_str()));
        assert_eq!(
            f.mailbox.as_ref().map(|m| m.primary_smtp_address.as_str()),
            Some("victim@contoso.com")
        );
        // The same forward, still there: no audit_event.
        let mut still = Forward::new(Signal::InboxRule, {
            let mut d = Deliveries::default();
            d.add(&resolver, "eve@evil.example", Form::Any, false);
            d
        });
        still.mailbox = Some(mailbox.mailbox.clone());
        let again = audit_forwards(
            std::slice::from_ref(&gone),
            Some(&resolver),
            &[mailbox],
            &[still],
        );
        assert!(again.is_empty());
        // No domains read: reported, unreadable.
        let out = audit_forwards(&[gone], None, &[], &[]);
        assert!(out[0].0.deliveries.iter().all(|d| d.unreadable));
    }
}
