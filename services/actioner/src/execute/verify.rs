//! Reading a removal's evidence: which Exchange object a detection is, what it
//! looked like (before / after, for the audit), and whether it still forwards.
//!
//! "Gone" means the forward no longer sends mail outside:
//!
//! | signal | gone when |
//! |---|---|
//! | `forwarding_smtp_address` / `forwarding_address` | the field is empty and the re-read no longer detects the fingerprint |
//! | `inbox_rule` | the rule is absent, or present with `Enabled: false` (disabled: kept as evidence, no longer runs) |
//! | `transport_rule` | the rule is absent, or its `State` is `Disabled` |
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

/// The transport rule with id `rule_id` (its Guid, or its Identity / Name).
pub fn transport_rule<'a>(rows: &'a [Value], rule_id: &str) -> Option<&'a Value> {
    let wanted = rule_id.trim();
    rows.iter().find(|row| {
        ["Guid", "Identity", "Name"]
            .iter()
            .any(|key| text(row, key).is_some_and(|v| v.eq_ignore_ascii_case(wanted)))
    })
}

/// How `Disable-InboxRule` / `Remove-InboxRule` should name the rule: its
/// `Identity` as Exchange gave it (`<owner>\<RuleIdentity>`), else `mailbox\id`.
pub fn inbox_rule_identity(reading: &Reading, mailbox: &str, rule_id: &str) -> String {
    inbox_rule(&reading.inbox_rules, rule_id)
        .and_then(|row| text(row, "Identity"))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{mailbox}\\{rule_id}"))
}

/// How `Disable-TransportRule` should name the rule: its Guid, else its Identity.
pub fn transport_rule_identity(reading: &Reading, rule_id: &str) -> String {
    transport_rule(&reading.transport_rules, rule_id)
        .and_then(|row| text(row, "Guid").or_else(|| text(row, "Identity")))
        .unwrap_or(rule_id)
        .to_owned()
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
    }
}

/// Whether `detection` still forwards according to the re-read `after`.
pub fn gone(detection: &Detection, after: &Reading) -> Gone {
    let still_detected = after
        .detections
        .iter()
        .any(|d| d.fingerprint == detection.fingerprint);
    let rule_id = detection.rule_id.as_deref().unwrap_or("");
    match detection.signal {
        Signal::ForwardingSmtpAddress | Signal::ForwardingAddress => {
            let field = if detection.signal == Signal::ForwardingSmtpAddress {
                "ForwardingSmtpAddress"
            } else {
                "ForwardingAddress"
            };
            let field_set = after
                .mailbox
                .as_ref()
                .is_some_and(|row| text(row, field).is_some());
            if field_set || still_detected {
                Gone::Present
            } else {
                Gone::Absent
            }
        }
        Signal::InboxRule => match inbox_rule(&after.inbox_rules, rule_id) {
            None if still_detected => Gone::Present,
            None => Gone::Absent,
            Some(row) if is_false(row, "Enabled") => Gone::Disabled,
            Some(_) => Gone::Present,
        },
        Signal::TransportRule => match transport_rule(&after.transport_rules, rule_id) {
            None if still_detected => Gone::Present,
            None => Gone::Absent,
            Some(row) if text(row, "State").is_some_and(|s| s.eq_ignore_ascii_case("disabled")) => {
                Gone::Disabled
            }
            Some(_) => Gone::Present,
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
            ..Reading::default()
        };
        assert_eq!(gone(&d, &after(json!(false))), Gone::Disabled);
        assert_eq!(gone(&d, &after(json!("False"))), Gone::Disabled);
        assert_eq!(gone(&d, &after(json!(true))), Gone::Present);
        assert_eq!(gone(&d, &Reading::default()), Gone::Absent);
    }

    #[test]
    fn mailbox_forward_is_gone_only_when_the_field_is_empty() {
        let d = detection(Signal::ForwardingSmtpAddress, None);
        let with = |value: Value| Reading {
            mailbox: Some(json!({"ForwardingSmtpAddress": value, "ForwardingAddress": null})),
            ..Reading::default()
        };
        assert_eq!(gone(&d, &with(json!("smtp:x@evil.example"))), Gone::Present);
        assert_eq!(gone(&d, &with(Value::Null)), Gone::Absent);
        assert_eq!(gone(&d, &with(json!(""))), Gone::Absent);
        // Field cleared but the re-read still detects the fingerprint: not gone.
        let mut still = with(Value::Null);
        still.detections.push(d.clone());
        assert_eq!(gone(&d, &still), Gone::Present);
    }

    #[test]
    fn transport_rule_state_decides() {
        let d = detection(Signal::TransportRule, Some("g-1"));
        let with = |state: &str| Reading {
            transport_rules: rules(json!([{"Name": "r", "Guid": "G-1", "State": state}])),
            ..Reading::default()
        };
        assert_eq!(gone(&d, &with("Disabled")), Gone::Disabled);
        assert_eq!(gone(&d, &with("Enabled")), Gone::Present);
        assert_eq!(transport_rule_identity(&with("Enabled"), "g-1"), "G-1");
    }
}
