//! Reading a removal's evidence: which Exchange object a forward is, what it looked
//! like (before / after, for the audit), and whether it still forwards.
//!
//! A forward is identified by **tenant + mailbox + signal + rule id** (transport
//! and journal rules and connectors by their **Guid** only), never by an exact
//! fingerprint and never by a name: an attacker flipping a target's case or adding
//! a decoy target changes the fingerprint but not the forward, and a decoy rule
//! named like the real one must not absorb the action ([`same_forward`], [`find`]).
//!
//! "Gone" means the forward no longer sends mail outside:
//!
//! | signal | gone when |
//! |---|---|
//! | `forwarding_smtp_address` / `forwarding_address` | the re-read no longer finds that forward of the mailbox |
//! | `inbox_rule` | the rule is absent, present with `Enabled: false` (kept as evidence), or no longer forwards outside |
//! | `transport_rule` | the rule (by Guid) is absent, its `State` is `Disabled`, or it no longer sends outside |
//! | `journal_rule` | the rule (by Guid) is absent, `Enabled: false`, or journals inside |
//! | `outbound_connector` | the connector (by Guid) is absent, `Enabled: false`, or relays to owned servers only |
//!
//! Only fields read from Exchange decide; nothing is inferred from the cmdlet having
//! answered 200 (a Set-* that changed nothing also answers 200, with a warning).

use serde_json::{Map, Value};

use fwdwatch_shared::contracts::{Detection, Signal};
use fwdwatch_shared::m365::rule_id_from;

use super::exchange::Reading;

/// Whether the detected forward still forwards, after a removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// Nothing of it is left.
    Absent,
    /// The rule is still there (the evidence), disabled: it no longer forwards.
    Disabled,
    /// It still forwards.
    Present,
}

/// Whether two detections are the same forward: same tenant, mailbox, signal and
/// rule id, whatever their targets.
pub fn same_forward(a: &Detection, b: &Detection) -> bool {
    a.signal == b.signal
        && a.tenant_id.eq_ignore_ascii_case(&b.tenant_id)
        && a.mailbox_address()
            .eq_ignore_ascii_case(b.mailbox_address())
        && match (a.rule_id.as_deref(), b.rule_id.as_deref()) {
            (None, None) => true,
            (Some(x), Some(y)) => x.trim().eq_ignore_ascii_case(y.trim()),
            _ => false,
        }
}

/// The forward `identity` stands for in a re-read, if it still sends mail outside.
pub fn find<'a>(reading: &'a Reading, identity: &Detection) -> Option<&'a Detection> {
    reading.detections.iter().find(|d| {
        // The re-read builds detections without a tenant name; compare the rest.
        d.signal == identity.signal
            && d.mailbox_address()
                .eq_ignore_ascii_case(identity.mailbox_address())
            && match (d.rule_id.as_deref(), identity.rule_id.as_deref()) {
                (None, None) => true,
                (Some(x), Some(y)) => x.trim().eq_ignore_ascii_case(y.trim()),
                _ => false,
            }
    })
}

fn text<'a>(row: &'a Value, key: &str) -> Option<&'a str> {
    row.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn is_false(row: &Value, key: &str) -> bool {
    match row.get(key) {
        Some(Value::Bool(b)) => !b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("false"),
        _ => false,
    }
}

/// The inbox rule with id `rule_id` (`RuleIdentity`, or the tail of `Identity`).
pub fn inbox_rule<'a>(rows: &'a [Value], rule_id: &str) -> Option<&'a Value> {
    rows.iter().find(|row| {
        let id = row
            .get("RuleIdentity")
            .and_then(rule_id_from)
            .or_else(|| row.get("Identity").and_then(rule_id_from));
        id.as_deref() == Some(rule_id)
    })
}

/// The row whose `Guid` is `guid` — never a name or identity match, so a decoy
/// named like the real object is never taken for it.
pub fn by_guid<'a>(rows: &'a [Value], guid: &str) -> Option<&'a Value> {
    let wanted = guid.trim();
    if wanted.is_empty() {
        return None;
    }
    rows.iter()
        .find(|row| text(row, "Guid").is_some_and(|v| v.eq_ignore_ascii_case(wanted)))
}

/// The transport rule with Guid `guid`.
pub fn transport_rule<'a>(rows: &'a [Value], guid: &str) -> Option<&'a Value> {
    by_guid(rows, guid)
}

/// How `Disable-InboxRule` / `Remove-InboxRule` should name the rule: its
/// `Identity` as Exchange gave it (`<owner>\<RuleIdentity>`), else `mailbox\id`.
pub fn inbox_rule_identity(reading: &Reading, mailbox: &str, rule_id: &str) -> String {
    inbox_rule(&reading.inbox_rules, rule_id)
        .and_then(|row| text(row, "Identity"))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{mailbox}\\{rule_id}"))
}

/// How a change cmdlet names a rule or connector: its Guid as Exchange gave it,
/// `None` when the re-read has no row with that Guid (then nothing is changed:
/// acting by name could hit a decoy).
pub fn guid_of(rows: &[Value], guid: &str) -> Option<String> {
    by_guid(rows, guid)
        .and_then(|row| text(row, "Guid"))
        .map(str::to_owned)
}

fn pick(row: &Value, keys: &[&str]) -> Value {
    let mut out = Map::new();
    for key in keys {
        // Values are copied as they came: a RuleIdentity above 2^63 stays a u64.
        out.insert(
            (*key).to_owned(),
            row.get(*key).cloned().unwrap_or(Value::Null),
        );
    }
    Value::Object(out)
}

/// What Exchange shows of the detected forward (audit `before` / `after`).
pub fn evidence(reading: &Reading, detection: &Detection) -> Value {
    match detection.signal {
        Signal::ForwardingSmtpAddress | Signal::ForwardingAddress => match &reading.mailbox {
            Some(row) => pick(
                row,
                &[
                    "ForwardingSmtpAddress",
                    "ForwardingAddress",
                    "DeliverToMailboxAndForward",
                ],
            ),
            None => serde_json::json!({ "mailbox": "absent" }),
        },
        Signal::InboxRule => {
            match detection
                .rule_id
                .as_deref()
                .and_then(|id| inbox_rule(&reading.inbox_rules, id))
            {
                Some(row) => pick(
                    row,
                    &[
                        "Name",
                        "Identity",
                        "RuleIdentity",
                        "Enabled",
                        "ForwardTo",
                        "ForwardAsAttachmentTo",
                        "RedirectTo",
                    ],
                ),
                None => serde_json::json!({ "rule": "absent" }),
            }
        }
        Signal::TransportRule => {
            match detection
                .rule_id
                .as_deref()
                .and_then(|id| transport_rule(&reading.transport_rules, id))
            {
                Some(row) => pick(
                    row,
                    &[
                        "Name",
                        "Guid",
                        "State",
                        "Mode",
                        "RedirectMessageTo",
                        "BlindCopyTo",
                        "AddToRecipients",
                        "CopyTo",
                    ],
                ),
                None => serde_json::json!({ "rule": "absent" }),
            }
        }
        Signal::JournalRule => {
            match detection
                .rule_id
                .as_deref()
                .and_then(|id| by_guid(&reading.journal_rules, id))
            {
                Some(row) => pick(
                    row,
                    &["Name", "Guid", "Enabled", "Scope", "JournalEmailAddress"],
                ),
                None => serde_json::json!({ "rule": "absent" }),
            }
        }
        Signal::OutboundConnector => {
            match detection
                .rule_id
                .as_deref()
                .and_then(|id| by_guid(&reading.connectors, id))
            {
                Some(row) => pick(
                    row,
                    &[
                        "Name",
                        "Guid",
                        "Enabled",
                        "SmartHosts",
                        "IsTransportRuleScoped",
                    ],
                ),
                None => serde_json::json!({ "connector": "absent" }),
            }
        }
        Signal::AuditEvent => serde_json::json!({ "audit_event": "nothing to read" }),
    }
}

/// Whether the forward `identity` still forwards according to the re-read `after`.
pub fn gone(identity: &Detection, after: &Reading) -> Gone {
    let still = find(after, identity).is_some();
    let rule_id = identity.rule_id.as_deref().unwrap_or("");
    let present = |disabled: bool| match (disabled, still) {
        (true, _) => Gone::Disabled,
        (false, true) => Gone::Present,
        (false, false) => Gone::Absent,
    };
    match identity.signal {
        Signal::ForwardingSmtpAddress | Signal::ForwardingAddress | Signal::AuditEvent => {
            if still {
                Gone::Present
            } else {
                Gone::Absent
            }
        }
        Signal::InboxRule => match inbox_rule(&after.inbox_rules, rule_id) {
            None => present(false),
            Some(row) => present(is_false(row, "Enabled")),
        },
        Signal::TransportRule => match transport_rule(&after.transport_rules, rule_id) {
            None => present(false),
            Some(row) => {
                present(text(row, "State").is_some_and(|s| s.eq_ignore_ascii_case("disabled")))
            }
        },
        Signal::JournalRule => match by_guid(&after.journal_rules, rule_id) {
            None => present(false),
            Some(row) => present(is_false(row, "Enabled")),
        },
        Signal::OutboundConnector => match by_guid(&after.connectors, rule_id) {
            None => present(false),
            Some(row) => present(is_false(row, "Enabled")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn detection(signal: Signal, rule_id: Option<&str>) -> Detection {
        let mut d = Detection::example();
        d.signal = signal;
        d.rule_id = rule_id.map(str::to_owned);
        d
    }

    fn rules(rows: Value) -> Vec<Value> {
        rows.as_array().cloned().expect("array")
    }

    #[test]
    fn big_rule_ids_are_matched_exactly() {
        let rows: Vec<Value> = serde_json::from_str(
            r#"[{"Identity":"owner\\15394007230974001152","RuleIdentity":15394007230974001152},
                {"Identity":"owner\\15394007230974001153","RuleIdentity":15394007230974001153,"Enabled":true}]"#,
        )
        .expect("json");
        let row = inbox_rule(&rows, "15394007230974001153").expect("found");
        assert_eq!(row["Identity"], json!("owner\\15394007230974001153"));
        let reading = Reading {
            inbox_rules: rows.clone(),
            ..Reading::default()
        };
        assert_eq!(
            inbox_rule_identity(&reading, "vic@contoso.com", "15394007230974001153"),
            "owner\\15394007230974001153"
        );
        assert_eq!(
            inbox_rule_identity(&reading, "vic@contoso.com", "7"),
            "vic@contoso.com\\7",
            "fallback when the row is missing"
        );
        let d = detection(Signal::InboxRule, Some("15394007230974001153"));
        let shown = evidence(&reading, &d);
        assert_eq!(shown["RuleIdentity"].to_string(), "15394007230974001153");
    }

    #[test]
    fn inbox_rule_disabled_counts_as_gone_enabled_does_not() {
        let d = detection(Signal::InboxRule, Some("42"));
        let after = |enabled: Value| Reading {
            inbox_rules: rules(
                json!([{"Identity": "o\\42", "RuleIdentity": 42, "Enabled": enabled}]),
            ),
            detections: vec![d.clone()],
            ..Reading::default()
        };
        assert_eq!(gone(&d, &after(json!(false))), Gone::Disabled);
        assert_eq!(gone(&d, &after(json!("False"))), Gone::Disabled);
        assert_eq!(gone(&d, &after(json!(true))), Gone::Present);
        assert_eq!(gone(&d, &Reading::default()), Gone::Absent);
        let mut inside = after(json!(true));
        inside.detections.clear();
        assert_eq!(
            gone(&d, &inside),
            Gone::Absent,
            "enabled, but forwards inside only"
        );
    }

    #[test]
    fn mailbox_forward_is_gone_only_when_the_field_is_empty() {
        let d = detection(Signal::ForwardingSmtpAddress, None);
        let with = |value: Value| Reading {
            mailbox: Some(json!({"ForwardingSmtpAddress": value, "ForwardingAddress": null})),
            ..Reading::default()
        };
        assert_eq!(gone(&d, &with(Value::Null)), Gone::Absent);
        // The re-read still finds the mailbox's forward (even with other targets).
        let mut still = with(json!("smtp:y@evil.example"));
        let mut changed = d.clone();
        changed.targets = vec!["y@evil.example".into()];
        changed.fingerprint = "other".into();
        still.detections.push(changed);
        assert_eq!(gone(&d, &still), Gone::Present);
    }

    #[test]
    fn transport_rule_state_decides_and_only_the_guid_names_it() {
        let d = detection(Signal::TransportRule, Some("g-1"));
        let with = |state: &str| {
            let mut r = Reading {
                transport_rules: rules(json!([
                    {"Name": "Copy", "Guid": "G-2", "Identity": "g-1", "State": "Disabled"},
                    {"Name": "Copy", "Guid": "G-1", "State": state}
                ])),
                ..Reading::default()
            };
            if state == "Enabled" {
                r.detections.push(d.clone());
            }
            r
        };
        assert_eq!(gone(&d, &with("Disabled")), Gone::Disabled);
        assert_eq!(
            gone(&d, &with("Enabled")),
            Gone::Present,
            "a decoy's state never counts"
        );
        assert_eq!(
            guid_of(&with("Enabled").transport_rules, "g-1").as_deref(),
            Some("G-1")
        );
        assert_eq!(
            guid_of(&with("Enabled").transport_rules, "Copy"),
            None,
            "never by name"
        );
    }

    #[test]
    fn a_forward_is_found_by_its_identity_not_its_fingerprint() {
        let d = detection(Signal::InboxRule, Some("42"));
        let mut now = d.clone();
        now.targets = vec!["Collector@evil.example".into(), "decoy@x.example".into()];
        now.fingerprint = "changed".into();
        now.tenant_name = String::new();
        let reading = Reading {
            detections: vec![now],
            ..Reading::default()
        };
        assert!(find(&reading, &d).is_some());
        let other_rule = detection(Signal::InboxRule, Some("43"));
        assert!(find(&reading, &other_rule).is_none());
    }
}
