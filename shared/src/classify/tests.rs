//! The classifier's test table: every address form Exchange and Graph produce,
//! every domain trick in `forwarding-techniques.md`, and property tests.

use proptest::prelude::*;

use super::*;
use crate::contracts::{HidingAction, Severity, Signal};

fn contoso() -> TenantDomains {
    TenantDomains::new(&[
        AcceptedDomain {
            name: "contoso.com".into(),
            domain_type: DomainType::Authoritative,
            match_subdomains: false,
        },
        AcceptedDomain {
            name: "Fabrikam.NET.".into(),
            domain_type: DomainType::InternalRelay,
            match_subdomains: true,
        },
        AcceptedDomain {
            name: "relay.fabrikam.net".into(),
            domain_type: DomainType::ExternalRelay,
            match_subdomains: false,
        },
        AcceptedDomain {
            name: "partner-relay.example".into(),
            domain_type: DomainType::ExternalRelay,
            match_subdomains: false,
        },
        AcceptedDomain {
            name: "bücher.example".into(),
            domain_type: DomainType::Authoritative,
            match_subdomains: false,
        },
    ])
    .with_tenant_domain("contoso.onmicrosoft.com")
}

#[derive(Debug)]
enum Want {
    Internal(&'static str),
    External(&'static str),
    Resolve(&'static str),
    Invalid,
}

/// (case name, raw value, expected classifications in order)
const TABLE: &[(&str, &str, &[Want])] = &[
    (
        "smtp prefix lower",
        "smtp:bob@contoso.com",
        &[Want::Internal("bob@contoso.com")],
    ),
    (
        "smtp prefix upper",
        "SMTP:eve@evil.example",
        &[Want::External("eve@evil.example")],
    ),
    (
        "bare address",
        "eve@evil.example",
        &[Want::External("eve@evil.example")],
    ),
    (
        "quoted display name + SMTP routing",
        "\"Eve Smith\" [SMTP:eve@evil.example]",
        &[Want::External("eve@evil.example")],
    ),
    (
        "spoofed display name is ignored",
        "\"ceo@contoso.com\" [SMTP:eve@evil.example]",
        &[Want::External("eve@evil.example")],
    ),
    (
        "EX legacy DN needs resolution",
        "\"Rob Knight\" [EX:/o=ExchangeLabs/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn=8450abcd-rob]",
        &[Want::Resolve(
            "/o=ExchangeLabs/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn=8450abcd-rob",
        )],
    ),
    (
        "ex routing lower case",
        "[ex:/o=X/cn=y]",
        &[Want::Resolve("/o=X/cn=y")],
    ),
    (
        "semicolon-joined list",
        "smtp:a@contoso.com;SMTP:b@evil.example; \"C\" [SMTP:c@Evil.Example]",
        &[
            Want::Internal("a@contoso.com"),
            Want::External("b@evil.example"),
            Want::External("c@evil.example"),
        ],
    ),
    (
        "semicolon inside a quoted display name",
        "\"Doe; John\" [SMTP:jd@evil.example]",
        &[Want::External("jd@evil.example")],
    ),
    (
        "angle-bracket display form",
        "Eve <eve@evil.example>",
        &[Want::External("eve@evil.example")],
    ),
    (
        "domain case folded",
        "smtp:Bob@CONTOSO.COM",
        &[Want::Internal("Bob@contoso.com")],
    ),
    (
        "local part case kept",
        "SMTP:Eve.Smith@evil.example",
        &[Want::External("Eve.Smith@evil.example")],
    ),
    (
        "plus addressing kept",
        "eve+mail@evil.example",
        &[Want::External("eve+mail@evil.example")],
    ),
    (
        "trailing dot dropped",
        "smtp:bob@contoso.com.",
        &[Want::Internal("bob@contoso.com")],
    ),
    (
        "trailing dot external",
        "eve@evil.example.",
        &[Want::External("eve@evil.example")],
    ),
    (
        "unicode accepted domain matches unicode address",
        "smtp:anna@BÜCHER.example",
        &[Want::Internal("anna@xn--bcher-kva.example")],
    ),
    (
        "unicode accepted domain matches punycode address",
        "anna@xn--bcher-kva.example",
        &[Want::Internal("anna@xn--bcher-kva.example")],
    ),
    (
        "unicode external domain punycoded",
        "x@münchen.example",
        &[Want::External("x@xn--mnchen-3ya.example")],
    ),
    (
        "homoglyph lookalike (cyrillic o) is external",
        "x@cоntoso.com",
        &[Want::External("x@xn--cntoso-wqf.com")],
    ),
    (
        "lookalike prefix",
        "x@evilcontoso.com",
        &[Want::External("x@evilcontoso.com")],
    ),
    (
        "lookalike suffix",
        "x@contoso.com.evil.net",
        &[Want::External("x@contoso.com.evil.net")],
    ),
    (
        "subdomain without MatchSubDomains is external",
        "x@sales.contoso.com",
        &[Want::External("x@sales.contoso.com")],
    ),
    (
        "subdomain with MatchSubDomains is internal",
        "x@eu.fabrikam.net",
        &[Want::Internal("x@eu.fabrikam.net")],
    ),
    (
        "deep subdomain with MatchSubDomains is internal",
        "x@a.b.c.fabrikam.net",
        &[Want::Internal("x@a.b.c.fabrikam.net")],
    ),
    (
        "lookalike of MatchSubDomains domain",
        "x@evilfabrikam.net",
        &[Want::External("x@evilfabrikam.net")],
    ),
    (
        "InternalRelay is internal",
        "x@FABRIKAM.net",
        &[Want::Internal("x@fabrikam.net")],
    ),
    (
        "ExternalRelay is external",
        "x@partner-relay.example",
        &[Want::External("x@partner-relay.example")],
    ),
    (
        "ExternalRelay under a MatchSubDomains parent is external",
        "x@relay.fabrikam.net",
        &[Want::External("x@relay.fabrikam.net")],
    ),
    (
        "tenant onmicrosoft is internal",
        "x@contoso.onmicrosoft.com",
        &[Want::Internal("x@contoso.onmicrosoft.com")],
    ),
    (
        "another tenant's onmicrosoft is external",
        "x@attacker.onmicrosoft.com",
        &[Want::External("x@attacker.onmicrosoft.com")],
    ),
    ("no at sign", "SMTP:not-an-address", &[Want::Invalid]),
    ("empty domain", "x@", &[Want::Invalid]),
    (
        "garbage in brackets",
        "\"x\" [X500:/o=foo]",
        &[Want::Invalid],
    ),
    ("empty string", "", &[]),
    ("only separators", " ; ;", &[]),
];

#[test]
fn classification_table() {
    let domains = contoso();
    for (name, raw, want) in TABLE {
        let got = classify(raw, &domains);
        assert_eq!(got.len(), want.len(), "{name}: {raw:?} → {got:?}");
        for (g, w) in got.iter().zip(want.iter()) {
            let ok = match (g, w) {
                (Classification::Internal(a), Want::Internal(s)) => a.to_string() == *s,
                (Classification::External(a), Want::External(s)) => a.to_string() == *s,
                (Classification::NeedsResolution(dn), Want::Resolve(s)) => dn == s,
                (Classification::Invalid(_), Want::Invalid) => true,
                _ => false,
            };
            assert!(ok, "{name}: {raw:?} → {g:?}, wanted {w:?}");
        }
    }
    // The issue note quotes this count.
    assert!(TABLE.len() >= 35, "table has {} cases", TABLE.len());
}

#[test]
fn fingerprint_is_stable_and_order_free() {
    let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let a = fingerprint(
        "T1",
        Some("Bob@Contoso.com"),
        Signal::InboxRule,
        Some("15394007230974001153"),
        &t(&["b@x.example", "a@x.example"]),
    );
    let b = fingerprint(
        "t1",
        Some("bob@contoso.com"),
        Signal::InboxRule,
        Some("15394007230974001153"),
        &t(&["a@x.example", "b@x.example", "a@x.example"]),
    );
    assert_eq!(
        a, b,
        "case of tenant/mailbox, order and duplicates of targets do not matter"
    );
    assert_eq!(a.len(), 32);
    let changed = fingerprint(
        "t1",
        Some("bob@contoso.com"),
        Signal::InboxRule,
        Some("15394007230974001153"),
        &t(&["a@x.example", "c@x.example"]),
    );
    assert_ne!(a, changed, "a changed target is a new fingerprint");
    let other_rule = fingerprint(
        "t1",
        Some("bob@contoso.com"),
        Signal::InboxRule,
        Some("15394007230974001154"),
        &t(&["a@x.example", "b@x.example"]),
    );
    assert_ne!(
        a, other_rule,
        "rule ids differing only past 2^53 still differ"
    );
    let other_signal = fingerprint(
        "t1",
        Some("bob@contoso.com"),
        Signal::ForwardingSmtpAddress,
        Some("15394007230974001153"),
        &t(&["a@x.example", "b@x.example"]),
    );
    assert_ne!(a, other_signal);
    let plus = fingerprint(
        "t1",
        Some("bob@contoso.com"),
        Signal::InboxRule,
        Some("15394007230974001153"),
        &t(&["a+1@x.example", "b@x.example"]),
    );
    assert_ne!(a, plus, "plus-addressing is a different target");
    assert_eq!(detection_id("run-1", &a), format!("run-1:{a}"));
}

#[test]
fn severity_rules() {
    let base = SeverityFactors {
        signal: Signal::ForwardingSmtpAddress,
        enabled: true,
        keeps_copy: true,
        redirect: false,
        hidden: false,
        hiding_actions: &[],
        posture_blocked: false,
        unreadable: false,
    };
    assert_eq!(
        severity(&base),
        Severity::Medium,
        "a plain forward that keeps a copy"
    );
    assert_eq!(
        severity(&SeverityFactors {
            keeps_copy: false,
            ..base
        }),
        Severity::High,
        "no copy kept"
    );
    assert_eq!(
        severity(&SeverityFactors {
            redirect: true,
            ..base
        }),
        Severity::High,
        "redirect"
    );
    assert_eq!(
        severity(&SeverityFactors {
            hidden: true,
            ..base
        }),
        Severity::High,
        "hidden rule"
    );
    let hide = [HidingAction::MarkAsRead];
    assert_eq!(
        severity(&SeverityFactors {
            hiding_actions: &hide,
            ..base
        }),
        Severity::High,
        "hiding actions"
    );
    assert_eq!(
        severity(&SeverityFactors {
            enabled: false,
            ..base
        }),
        Severity::Low,
        "disabled"
    );
    assert_eq!(
        severity(&SeverityFactors {
            posture_blocked: true,
            ..base
        }),
        Severity::Low,
        "posture blocks it"
    );
    assert_eq!(
        severity(&SeverityFactors {
            enabled: false,
            hidden: true,
            hiding_actions: &hide,
            keeps_copy: false,
            ..base
        }),
        Severity::High,
        "a staged, hidden, hiding, forward-only rule still matters"
    );
    assert_eq!(
        severity(&SeverityFactors {
            enabled: false,
            posture_blocked: true,
            unreadable: true,
            ..base
        }),
        Severity::High,
        "what cannot be read is always high"
    );
}

#[test]
fn hiding_actions_from_exchange_fields() {
    assert_eq!(
        hiding_actions(true, true, Some("Mailbox:\\RSS Feeds"), true),
        vec![
            HidingAction::DeleteMessage,
            HidingAction::MarkAsRead,
            HidingAction::MoveToRssFeeds,
            HidingAction::StopProcessingRules
        ]
    );
    assert_eq!(
        hiding_actions(false, false, Some("Archive"), false),
        vec![HidingAction::MoveToArchive]
    );
    assert_eq!(
        hiding_actions(false, false, Some("Deleted Items"), false),
        vec![HidingAction::MoveToDeletedItems]
    );
    assert_eq!(
        hiding_actions(false, false, Some("Conversation History"), false),
        vec![HidingAction::MoveToConversationHistory]
    );
    assert!(
        hiding_actions(false, false, Some("Invoices"), false).is_empty(),
        "filing is not hiding"
    );
}

#[test]
fn posture_blocks_by_policy_and_remote_domain() {
    use serde_json::json;
    let view = posture::PostureView::from_exchange(
        &[
            json!({"Name": "Default", "Identity": "Default", "IsDefault": true, "AutoForwardingMode": "Off"}),
            json!({"Name": "Finance forwarding", "IsDefault": false, "AutoForwardingMode": "On"}),
        ],
        &[
            json!({"Name": "r", "HostedOutboundSpamFilterPolicy": "Finance forwarding", "From": ["ap@contoso.com"], "Priority": 0, "State": "Enabled"}),
        ],
        &[
            json!({"DomainName": "*", "AutoForwardEnabled": true}),
            json!({"DomainName": "blocked.example", "AutoForwardEnabled": false}),
        ],
    );
    assert!(
        view.blocks(Signal::InboxRule, Some("bob@contoso.com"), "evil.example"),
        "default policy Off"
    );
    assert!(
        !view.blocks(Signal::InboxRule, Some("AP@contoso.com"), "evil.example"),
        "scoped policy On"
    );
    assert!(
        view.blocks(
            Signal::ForwardingSmtpAddress,
            Some("ap@contoso.com"),
            "blocked.example"
        ),
        "remote domain blocks"
    );
    assert!(
        !view.blocks(Signal::TransportRule, None, "evil.example"),
        "transport rules bypass these controls"
    );
    let summary = view.summary();
    assert_eq!(summary.external_forwarding_allowed, Some(false));
    assert_eq!(summary.outbound_policies.len(), 2);
    assert_eq!(
        summary.outbound_policies[1].applies_to,
        vec!["ap@contoso.com"]
    );
    assert_eq!(
        summary.remote_domains_blocking_auto_forward,
        vec!["blocked.example"]
    );

    let automatic = posture::PostureView::from_exchange(
        &[json!({"Identity": "Default", "AutoForwardingMode": "Automatic"})],
        &[],
        &[],
    );
    assert!(
        automatic.blocks(Signal::InboxRule, Some("a@contoso.com"), "evil.example"),
        "Automatic means Off"
    );
    let unknown = posture::PostureView::from_exchange(&[], &[], &[]);
    assert!(
        !unknown.blocks(Signal::InboxRule, Some("a@contoso.com"), "evil.example"),
        "unknown never blocks"
    );
    assert_eq!(unknown.summary().external_forwarding_allowed, None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// No input panics, whatever bytes Exchange sends.
    #[test]
    fn never_panics(raw in "\\PC{0,80}") {
        let _ = classify(&raw, &contoso());
    }

    /// Normalising twice is normalising once.
    #[test]
    fn normalising_is_idempotent(local in "[A-Za-z0-9._+-]{1,20}", domain in "[A-Za-z0-9-]{1,12}(\\.[A-Za-z0-9-]{1,12}){1,3}\\.?") {
        if let Some(once) = normalize_address(&format!("SMTP:{local}@{domain}")) {
            let twice = normalize_address(&once.to_string()).expect("a normalised address stays valid");
            prop_assert_eq!(once, twice);
        }
    }

    /// Unicode domains normalise to the same A-label as their punycode spelling.
    #[test]
    fn unicode_and_punycode_agree(label in "[a-zäöüßéçñ]{1,12}") {
        let unicode = format!("x@{label}.example");
        if let Some(a) = normalize_address(&unicode) {
            let b = normalize_address(&a.to_string()).expect("valid");
            prop_assert_eq!(&a, &b);
            prop_assert!(a.domain.is_ascii());
        }
    }

    /// Target order never changes a fingerprint.
    #[test]
    fn target_order_never_matters(mut targets in proptest::collection::vec("[a-z]{1,6}@[a-z]{1,6}\\.example", 1..6), seed in any::<u64>()) {
        let a = fingerprint("t", Some("m@x"), Signal::InboxRule, Some("1"), &targets);
        // A deterministic shuffle driven by the seed.
        let n = targets.len();
        for i in 0..n {
            let j = ((seed >> (i % 60)) as usize) % n;
            targets.swap(i, j);
        }
        let b = fingerprint("t", Some("m@x"), Signal::InboxRule, Some("1"), &targets);
        prop_assert_eq!(a, b);
    }

    /// Whole-label rule: a domain that merely ends with an accepted name is external.
    #[test]
    fn suffix_without_dot_is_external(prefix in "[a-z]{1,10}") {
        let domains = contoso();
        let raw = format!("x@{prefix}contoso.com");
        let is_external = matches!(classify(&raw, &domains).as_slice(), [Classification::External(_)]);
        prop_assert!(is_external);
        let raw = format!("x@{prefix}fabrikam.net");
        let is_external = matches!(classify(&raw, &domains).as_slice(), [Classification::External(_)]);
        prop_assert!(is_external);
    }
}

#[test]
fn a_policy_scoped_to_a_group_unblocks_its_members_and_not_its_exceptions() {
    use serde_json::json;
    use std::collections::{HashMap, HashSet};
    let view = posture::PostureView::from_exchange(
        &[
            json!({"Name": "Default", "IsDefault": true, "AutoForwardingMode": "Off"}),
            json!({"Name": "Sales forwarding", "IsDefault": false, "AutoForwardingMode": "On"}),
        ],
        &[
            json!({"Name": "r", "HostedOutboundSpamFilterPolicy": "Sales forwarding",
                 "FromMemberOf": ["Sales Team"], "ExceptIfFrom": ["boss@contoso.com"],
                 "Priority": 0, "State": "Enabled"}),
        ],
        &[json!({"DomainName": "*", "AutoForwardEnabled": true})],
    );
    assert_eq!(view.sender_groups(), vec!["sales team"]);
    let members: HashSet<String> = ["Eve@contoso.com", "boss@contoso.com"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    let without_members = view.clone();
    let view = view.with_group_members(HashMap::from([("Sales Team".to_owned(), members)]));
    assert!(
        !view.blocks(Signal::InboxRule, Some("eve@contoso.com"), "evil.example"),
        "a member of the allowed group forwards for real"
    );
    assert!(
        view.blocks(Signal::InboxRule, Some("boss@contoso.com"), "evil.example"),
        "an exception falls back to the default policy"
    );
    assert!(
        view.blocks(Signal::InboxRule, Some("bob@contoso.com"), "evil.example"),
        "a non-member gets the default policy"
    );
    assert!(
        without_members.blocks(Signal::InboxRule, Some("eve@contoso.com"), "evil.example"),
        "unknown membership matches nobody"
    );
    assert!(!view.blocks(Signal::JournalRule, None, "evil.example"));
}
