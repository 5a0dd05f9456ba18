//! Round-trip, tagging and version tests for the wire contracts.

use super::*;

#[test]
fn every_example_round_trips() {
    fn round_trip<M: Message + PartialEq + std::fmt::Debug>(m: M) {
        let bytes = encode(&m);
        let back: M = decode(&bytes).expect("example decodes");
        assert_eq!(back, m);
        let value: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(value["type"], M::TYPE);
        assert_eq!(value["version"], M::VERSION);
    }
    round_trip(ScanJob::example());
    round_trip(Detection::example());
    round_trip(TenantSummary::example());
    round_trip(Command::example());
    round_trip(CommandResult::example());
    round_trip(AuditEvent::example());
    round_trip(AlertEvent::example());
}

#[test]
fn unknown_fields_are_ignored() {
    let mut value = serde_json::to_value(Command::example()).expect("json");
    value["added_in_a_later_minor"] = serde_json::json!({"anything": [1, 2]});
    let bytes = serde_json::to_vec(&value).expect("json");
    let command: Command = decode(&bytes).expect("still decodes");
    assert_eq!(command, Command::example());
}

#[test]
fn wrong_type_tag_is_refused_with_reason() {
    let bytes = encode(&Detection::example());
    let err = decode::<Command>(&bytes).expect_err("a detection is not a command");
    let text = err.to_string();
    assert!(text.contains("not a valid command message"), "{text}");
    assert!(text.contains("detection"), "{text}");
}

#[test]
fn other_version_is_refused_with_reason() {
    let mut value = serde_json::to_value(ScanJob::example()).expect("json");
    value["version"] = serde_json::json!(2);
    let err = decode::<ScanJob>(&serde_json::to_vec(&value).expect("json")).expect_err("v2");
    assert!(
        matches!(err, DecodeError::Version { found: 2, .. }),
        "{err}"
    );
}

#[test]
fn garbage_is_refused_not_panicking() {
    for body in [
        &b""[..],
        b"null",
        b"{",
        b"[]",
        b"{\"type\":\"command\"}",
        &[0xff, 0xfe],
    ] {
        assert!(decode::<Command>(body).is_err());
    }
}

#[test]
fn names_on_the_wire_are_the_contract() {
    let names: Vec<_> = Signal::ALL
        .iter()
        .map(|s| serde_json::to_value(s).expect("json"))
        .collect();
    assert_eq!(
        names,
        vec![
            "forwarding_smtp_address",
            "forwarding_address",
            "inbox_rule",
            "transport_rule",
            "journal_rule",
            "outbound_connector",
            "audit_event"
        ]
    );
    let kinds: Vec<_> = [
        AlertKind::New,
        AlertKind::Reminder,
        AlertKind::Resolved,
        AlertKind::Campaign,
        AlertKind::CoverageLost,
        AlertKind::CoverageRestored,
        AlertKind::Reappeared,
    ]
    .iter()
    .map(|k| (serde_json::to_value(k).expect("json"), k.as_str()))
    .collect();
    for (json, name) in &kinds {
        assert_eq!(json, name);
    }
    assert_eq!(
        kinds.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
        vec![
            "new",
            "reminder",
            "resolved",
            "campaign",
            "coverage_lost",
            "coverage_restored",
            "reappeared"
        ]
    );
    for s in Signal::ALL {
        assert_eq!(serde_json::to_value(s).expect("json"), s.as_str());
        assert_eq!(Signal::parse(s.as_str()), Some(s));
    }
    assert_eq!(
        serde_json::to_value(CommandAction::RevokeApproval).expect("json"),
        "revoke-approval"
    );
    assert_eq!(serde_json::to_value(Severity::High).expect("json"), "high");
    assert!(Severity::Low < Severity::Medium && Severity::Medium < Severity::High);
}

#[test]
fn partial_scan_does_not_cover_rules() {
    let summary = TenantSummary::example();
    assert!(!summary.is_complete());
    assert!(summary.covers(Signal::InboxRule));
    assert!(!summary.covers(Signal::TransportRule));
    assert!(
        !summary.covers(Signal::AuditEvent),
        "a scan never resolves audit events"
    );
}

#[test]
fn a_gap_keeps_what_it_would_have_covered() {
    let mut summary = TenantSummary::example();
    summary.checks.retain(|c| c.check != Check::TransportRules);
    for c in &mut summary.checks {
        if c.check == Check::InboxRules {
            c.status = CheckStatus::Incomplete;
        }
    }
    summary.incomplete.push(IncompleteRead {
        check: Check::InboxRules,
        mailbox: Some("Vic@contoso.com".into()),
        reason: "NotFound".into(),
    });
    assert!(!summary.is_complete());
    assert!(
        summary.covers(Signal::InboxRule),
        "other mailboxes were read"
    );
    assert!(!summary.covers_mailbox(Signal::InboxRule, Some("vic@contoso.com")));
    assert!(summary.covers_mailbox(Signal::InboxRule, Some("bob@contoso.com")));
    summary.incomplete.push(IncompleteRead {
        check: Check::GroupMembers,
        mailbox: None,
        reason: "cap".into(),
    });
    assert!(
        !summary.covers(Signal::ForwardingSmtpAddress),
        "a tenant-wide gap"
    );
}
