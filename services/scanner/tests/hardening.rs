//! Detection an attacker cannot slip past, each case against the simulator over
//! real HTTP: addresses that look internal but deliver outside (guests, mail users
//! and their proxy addresses, nested groups), targets that cannot be read, the
//! tenant-wide paths (journal rules, incident reports, outbound connectors), reads
//! that come back partial, posture scoped by group membership, lost access and a
//! GDAP relationship about to end.
//!
//! Each test plants the attacker's move in a clean tenant through the simulator's
//! control API and scans it with the scanner's own code (`scan_tenant_with`).

mod common;

use chrono::Utc;
use common::*;
use fwdwatch_shared::contracts::{
    Check, CheckStatus, Detection, ErrorKind, Relationship, ScanJob, Severity, Signal, TenantRef,
};
use fwdwatch_shared::forwards::{ScanOptions, TenantScan, scan_tenant_with};
use fwdwatch_shared::m365::M365Client;
use m365_sim::{RunningSim, SimArgs};
use serde_json::{Value, json};

/// A small fleet with no forwards of its own: every detection is planted here.
async fn clean_sim() -> RunningSim {
    let mut args = SimArgs {
        tenants: 3,
        mailboxes: 12,
        ..Default::default()
    };
    args.rates.clean = true;
    start_sim(args).await
}

struct Fixture {
    sim: RunningSim,
    client: M365Client,
    tenant: m365_sim::TenantInfo,
    http: reqwest::Client,
}

impl Fixture {
    async fn new() -> Self {
        let sim = clean_sim().await;
        let settings = settings_for(&sim, &unique_namespace(), &[]);
        let client = fast_client(&settings);
        let tenant = sim
            .tenants()
            .into_iter()
            .find(|t| t.gdap_active && !t.consent_missing && !t.exchange_role_missing)
            .expect("a readable tenant");
        Self {
            sim,
            client,
            tenant,
            http: reqwest::Client::new(),
        }
    }

    async fn control(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.sim.base_url))
            .json(&body)
            .send()
            .await
            .expect("sim control");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        assert!(status.is_success(), "{path}: {status}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    async fn plant(&self, body: Value) -> Value {
        let mut body = body;
        body["tenant_id"] = json!(self.tenant.tenant_id);
        self.control(reqwest::Method::POST, "/_sim/forwards", body)
            .await
    }

    async fn recipient(&self, body: Value) -> Value {
        let mut body = body;
        body["tenant_id"] = json!(self.tenant.tenant_id);
        self.control(reqwest::Method::POST, "/_sim/recipients", body)
            .await
    }

    fn domain(&self) -> &str {
        &self.tenant.default_domain
    }

    fn job(&self) -> ScanJob {
        ScanJob::new(
            "run-hardening",
            TenantRef {
                id: self.tenant.tenant_id.clone(),
                display_name: self.tenant.display_name.clone(),
                default_domain: Some(self.tenant.initial_domain.clone()),
            },
            Utc::now(),
        )
    }

    async fn scan(&self) -> TenantScan {
        self.scan_with(self.job(), &ScanOptions::default()).await
    }

    async fn scan_with(&self, job: ScanJob, options: &ScanOptions) -> TenantScan {
        scan_tenant_with(&self.client, &job, Utc::now(), options).await
    }

    /// The tenant's mailboxes' primary addresses, from Exchange.
    async fn mailboxes(&self) -> Vec<String> {
        let rows = self
            .client
            .invoke(
                &self.tenant.tenant_id,
                &fwdwatch_shared::m365::Cmdlet::new("Get-Mailbox").param("ResultSize", "Unlimited"),
            )
            .await
            .expect("Get-Mailbox");
        rows.iter()
            .filter_map(|r| r["PrimarySmtpAddress"].as_str().map(str::to_lowercase))
            .collect()
    }
}

fn of(scan: &TenantScan, signal: Signal) -> Vec<&Detection> {
    scan.detections
        .iter()
        .filter(|d| d.signal == signal)
        .collect()
}

fn check(scan: &TenantScan, check: Check) -> CheckStatus {
    scan.summary
        .checks
        .iter()
        .find(|c| c.check == check)
        .map(|c| c.status)
        .expect("check listed")
}

/// A guest's own address (`…#EXT#@tenant.onmicrosoft.com`), a mail user's address in
/// an accepted domain and its proxy address all deliver outside; a hybrid mail user
/// whose external address is in an accepted domain stays inside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_and_mail_users_behind_internal_addresses_are_followed_outside() {
    let f = Fixture::new().await;
    let mailboxes = f.mailboxes().await;
    let guest = f
        .recipient(json!({"kind": "guest", "external": "eve@gmail.example"}))
        .await;
    let guest_address = guest["primary_smtp_address"]
        .as_str()
        .expect("address")
        .to_owned();
    assert!(guest_address.contains("#EXT#@"), "{guest_address}");
    let partner = f
        .recipient(json!({"kind": "mail_user", "external": "p@partner.example"}))
        .await;
    let proxy = partner["email_addresses"]
        .as_array()
        .expect("addresses")
        .iter()
        .filter_map(Value::as_str)
        .find(|a| a.starts_with("smtp:"))
        .expect("a proxy address")
        .trim_start_matches("smtp:")
        .to_owned();
    let hybrid = f
        .recipient(json!({"kind": "mail_user", "external": format!("onprem.user@{}", f.domain())}))
        .await;
    f.plant(json!({"signal": "inbox_rule", "mailbox": mailboxes[0], "targets": [guest_address]}))
        .await;
    f.plant(
        json!({"signal": "forwarding_smtp_address", "mailbox": mailboxes[1], "targets": [proxy]}),
    )
    .await;
    f.plant(json!({"signal": "inbox_rule", "mailbox": mailboxes[2],
        "targets": [hybrid["primary_smtp_address"]]}))
        .await;
    let scan = f.scan().await;
    assert!(
        scan.summary.is_complete(),
        "{:?}",
        scan.summary.first_error()
    );
    let rules = of(&scan, Signal::InboxRule);
    assert_eq!(
        rules.len(),
        1,
        "the hybrid user's rule stays inside: {rules:#?}"
    );
    assert_eq!(rules[0].targets, vec!["eve@gmail.example"]);
    assert_eq!(rules[0].paths[0].via[0].kind, "GuestMailUser");
    let smtp = of(&scan, Signal::ForwardingSmtpAddress);
    assert_eq!(smtp.len(), 1);
    assert_eq!(smtp[0].targets, vec!["p@partner.example"]);
    assert_eq!(smtp[0].paths[0].via[0].kind, "MailUser");
    assert_eq!(scan.detections.len(), 2);
}

/// A group with an outside member (nested, with a cycle) is expanded once; the
/// path shows why `team-sync@…` is external; a group of colleagues stays inside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_expanded_nested_with_a_cycle_guard() {
    let f = Fixture::new().await;
    let mailboxes = f.mailboxes().await;
    let inner = f
        .recipient(json!({"kind": "m365_group", "name": "Inner Hub",
            "members": [mailboxes[3], "outsider@evil.example"]}))
        .await;
    let outer = f
        .recipient(json!({"kind": "distribution_group", "name": "Team Sync",
            "members": [mailboxes[4], inner["primary_smtp_address"]]}))
        .await;
    // The cycle: the inner group also contains the outer one.
    f.recipient(json!({"kind": "distribution_group", "name": "Loop",
        "members": [outer["primary_smtp_address"], inner["primary_smtp_address"]]}))
        .await;
    let staff = f
        .recipient(json!({"kind": "distribution_group", "name": "Staff",
            "members": [mailboxes[5], mailboxes[6]]}))
        .await;
    f.plant(
        json!({"signal": "inbox_rule", "mailbox": mailboxes[0], "rule_name": "Team copy",
        "targets": [outer["primary_smtp_address"]]}),
    )
    .await;
    f.plant(
        json!({"signal": "transport_rule", "action": "add_to_recipients",
        "targets": [outer["primary_smtp_address"]]}),
    )
    .await;
    f.plant(json!({"signal": "inbox_rule", "mailbox": mailboxes[1],
        "targets": [staff["primary_smtp_address"]]}))
        .await;
    let stats_before = f.sim.stats();
    let scan = f.scan().await;
    assert!(
        scan.summary.is_complete(),
        "{:?}",
        scan.summary.first_error()
    );
    let rule = of(&scan, Signal::InboxRule);
    assert_eq!(rule.len(), 1, "the colleagues' group stays inside");
    assert_eq!(
        rule[0].targets,
        vec!["outsider@evil.example"],
        "{:#?} {:#?}",
        rule[0],
        outer
    );
    let path: Vec<&str> = rule[0].paths[0]
        .via
        .iter()
        .map(|h| h.kind.as_str())
        .collect();
    assert_eq!(
        path,
        vec![
            "MailUniversalDistributionGroup",
            "GroupMailbox",
            "MailContact"
        ]
    );
    assert_eq!(
        of(&scan, Signal::TransportRule)[0].targets,
        vec!["outsider@evil.example"]
    );
    let stats = f.sim.stats();
    let reads = |k: &str| {
        stats.operations.get(k).copied().unwrap_or(0)
            - stats_before.operations.get(k).copied().unwrap_or(0)
    };
    assert_eq!(
        reads("exo:Get-DistributionGroupMember"),
        2,
        "each group read once (Team Sync, Staff)"
    );
    assert_eq!(reads("exo:Get-UnifiedGroupLinks"), 1);
}

/// A group larger than the member cap is reported — its target unreadable, the
/// group-members check incomplete — never silently cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_over_the_member_cap_is_reported_not_cut_silently() {
    let f = Fixture::new().await;
    let mailboxes = f.mailboxes().await;
    let members: Vec<String> = mailboxes[2..8].to_vec();
    let mut members = members;
    members.push("hidden@evil.example".into());
    let big = f
        .recipient(json!({"kind": "distribution_group", "name": "Everyone", "members": members}))
        .await;
    f.plant(json!({"signal": "inbox_rule", "mailbox": mailboxes[0], "targets": [big["primary_smtp_address"]]}))
        .await;
    let options = ScanOptions {
        group_member_cap: 4,
        ..ScanOptions::default()
    };
    let scan = f.scan_with(f.job(), &options).await;
    assert_eq!(check(&scan, Check::GroupMembers), CheckStatus::Incomplete);
    assert!(
        scan.summary
            .incomplete
            .iter()
            .any(|g| g.check == Check::GroupMembers && g.reason.contains("more than 4 members"))
    );
    let rule = of(&scan, Signal::InboxRule);
    assert_eq!(rule.len(), 1);
    assert!(rule[0].unreadable);
    assert_eq!(rule[0].severity, Severity::High);
    assert!(
        rule[0].targets[0].contains("members beyond the cap"),
        "{:?}",
        rule[0].targets
    );
}

/// Targets that cannot be read become detections of their own — raw text, trait
/// `unreadable`, high severity — on every signal alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_targets_are_reported_on_every_signal() {
    let f = Fixture::new().await;
    let mailboxes = f.mailboxes().await;
    f.plant(
        json!({"signal": "forwarding_smtp_address", "mailbox": mailboxes[0],
        "targets": ["eve@xn--a.attacker.example"], "unreadable": true}),
    )
    .await;
    f.plant(json!({"signal": "inbox_rule", "mailbox": mailboxes[1],
        "targets": ["eve@[203.0.113.5]"], "unreadable": true}))
        .await;
    f.plant(json!({"signal": "transport_rule", "targets": ["copy@xn--a.attacker.example"], "unreadable": true}))
        .await;
    f.plant(json!({"signal": "journal_rule", "targets": ["Nobody Known"]}))
        .await;
    let bad_contact = f
        .recipient(
            json!({"kind": "contact", "external": "x@[198.51.100.7]", "name": "Bad Contact"}),
        )
        .await;
    f.plant(json!({"signal": "forwarding_address", "mailbox": mailboxes[2], "targets": [bad_contact["identity"]]}))
        .await;
    let scan = f.scan().await;
    for (signal, text) in [
        (
            Signal::ForwardingSmtpAddress,
            "smtp:eve@xn--a.attacker.example",
        ),
        (Signal::InboxRule, "[SMTP:eve@[203.0.113.5]]"),
        (Signal::TransportRule, "copy@xn--a.attacker.example"),
        (Signal::JournalRule, "Nobody Known"),
        (Signal::ForwardingAddress, "x@[198.51.100.7]"),
    ] {
        let found = of(&scan, signal);
        assert_eq!(found.len(), 1, "{signal}: {found:#?}");
        assert!(found[0].unreadable, "{signal}");
        assert_eq!(found[0].severity, Severity::High, "{signal}");
        assert!(
            found[0].targets.iter().any(|t| t.contains(text)),
            "{signal}: {:?} holds {text}",
            found[0].targets
        );
    }
}

/// Journal rules, incident reports and outbound connectors are read; connectors
/// to servers the tenant owns, or that no mail can use, are not forwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_wide_paths_journal_incident_reports_and_connectors() {
    let f = Fixture::new().await;
    f.plant(json!({"signal": "journal_rule", "targets": ["archive@vendor.example"]}))
        .await;
    f.plant(
        json!({"signal": "journal_rule", "targets": ["staged@vendor.example"], "enabled": false}),
    )
    .await;
    f.plant(json!({"signal": "journal_rule", "targets": [format!("journal@{}", f.domain())]}))
        .await;
    f.plant(
        json!({"signal": "transport_rule", "action": "generate_incident_report_with_message",
        "targets": ["soc@evil.example"]}),
    )
    .await;
    f.plant(
        json!({"signal": "transport_rule", "action": "generate_incident_report",
        "targets": ["meta@evil.example"]}),
    )
    .await;
    f.plant(
        json!({"signal": "transport_rule", "action": "route_via_connector",
        "targets": ["smtp.relay-evil.example"], "rule_name": "Route finance"}),
    )
    .await;
    f.plant(json!({"signal": "outbound_connector", "targets": ["203.0.113.25"]}))
        .await;
    f.plant(json!({"signal": "outbound_connector", "targets": [format!("mail.{}", f.domain())]}))
        .await;
    let scan = f.scan().await;
    assert!(
        scan.summary.is_complete(),
        "{:?}",
        scan.summary.first_error()
    );
    let journal = of(&scan, Signal::JournalRule);
    assert_eq!(journal.len(), 2, "{journal:#?}");
    let staged = journal
        .iter()
        .find(|d| d.targets == ["staged@vendor.example"])
        .expect("staged");
    assert!(!staged.enabled);
    assert!(staged.severity < Severity::Medium, "disabled: lower");
    let reports = of(&scan, Signal::TransportRule);
    let attach = reports
        .iter()
        .find(|d| d.targets == ["soc@evil.example"])
        .expect("attach");
    assert_eq!(
        attach.severity,
        Severity::High,
        "the original message goes out"
    );
    let meta = reports
        .iter()
        .find(|d| d.targets == ["meta@evil.example"])
        .expect("meta");
    assert_eq!(meta.severity, Severity::Medium);
    let connectors = of(&scan, Signal::OutboundConnector);
    let mut hosts: Vec<&str> = connectors.iter().map(|d| d.targets[0].as_str()).collect();
    hosts.sort();
    assert_eq!(
        hosts,
        vec!["203.0.113.25", "smtp.relay-evil.example"],
        "the owned host is not a forward"
    );
    let routed = connectors
        .iter()
        .find(|d| d.targets[0] == "smtp.relay-evil.example")
        .expect("routed");
    assert_eq!(routed.paths[0].via[0].name, "Route finance");
}

/// ForwardingAddress in the REST API's GUID form resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_address_by_guid_resolves() {
    let f = Fixture::new().await;
    let mailboxes = f.mailboxes().await;
    let contact = f
        .recipient(json!({"kind": "contact", "external": "guid-target@evil.example"}))
        .await;
    f.plant(json!({"signal": "forwarding_address", "mailbox": mailboxes[0], "targets": [contact["identity"]]}))
        .await;
    // Look the contact's Guid up and point the mailbox at it by Guid.
    let rows = f
        .client
        .invoke(
            &f.tenant.tenant_id,
            &fwdwatch_shared::m365::Cmdlet::new("Get-Recipient")
                .param("Identity", contact["identity"].clone()),
        )
        .await
        .expect("recipient");
    let guid = rows[0]["Guid"].as_str().expect("guid").to_owned();
    f.client
        .invoke(
            &f.tenant.tenant_id,
            &fwdwatch_shared::m365::Cmdlet::new("Set-Mailbox")
                .param("Identity", mailboxes[0].as_str())
                .param("ForwardingAddress", guid.as_str()),
        )
        .await
        .expect("set");
    let scan = f.scan().await;
    let d = of(&scan, Signal::ForwardingAddress);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].targets, vec!["guid-target@evil.example"]);
}

/// A read that comes back partial marks that mailbox incomplete on the summary,
/// naming it; the other mailboxes' reads count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_reads_mark_the_mailbox_incomplete() {
    let f = Fixture::new().await;
    let mailboxes = f.mailboxes().await;
    for (i, _) in ["not_found", "empty", "truncated"].iter().enumerate() {
        f.plant(json!({"signal": "inbox_rule", "mailbox": mailboxes[i], "targets": [format!("c{i}@evil.example")]}))
            .await;
        f.plant(json!({"signal": "inbox_rule", "mailbox": mailboxes[i], "targets": [format!("d{i}@evil.example")]}))
            .await;
    }
    for (i, fault) in ["not_found", "empty", "truncated"].iter().enumerate() {
        f.control(
            reqwest::Method::POST,
            "/_sim/faults/inbox-rules",
            json!({"tenant_id": f.tenant.tenant_id, "mailbox": mailboxes[i], "fault": fault}),
        )
        .await;
    }
    let scan = f.scan().await;
    assert!(!scan.summary.is_complete());
    // NotFound and a truncated answer are gaps; an empty 200 is also worth another
    // attempt (the job is retried), so the check may read failed: either way it
    // resolves nothing and names the mailboxes.
    assert!(matches!(
        check(&scan, Check::InboxRules),
        CheckStatus::Incomplete | CheckStatus::Failed
    ));
    let gaps: Vec<&str> = scan
        .summary
        .incomplete
        .iter()
        .filter(|g| g.check == Check::InboxRules)
        .filter_map(|g| g.mailbox.as_deref())
        .collect();
    for m in &mailboxes[..3] {
        assert!(
            gaps.contains(&m.as_str()),
            "{m} named as not read: {:?}",
            scan.summary.incomplete
        );
    }
    assert!(
        !scan
            .summary
            .covers_mailbox(Signal::InboxRule, Some(&mailboxes[0]))
    );
    // Without the garbled answer, the other mailboxes' reads count.
    f.control(
        reqwest::Method::POST,
        "/_sim/faults/inbox-rules",
        json!({"tenant_id": f.tenant.tenant_id, "mailbox": mailboxes[1], "fault": null}),
    )
    .await;
    let scan = f.scan().await;
    assert_eq!(check(&scan, Check::InboxRules), CheckStatus::Incomplete);
    assert!(
        scan.summary.covers(Signal::InboxRule),
        "the other mailboxes were read"
    );
    assert!(
        !scan
            .summary
            .covers_mailbox(Signal::InboxRule, Some(&mailboxes[0]))
    );
    assert!(
        !scan
            .summary
            .covers_mailbox(Signal::InboxRule, Some(&mailboxes[2]))
    );
    assert!(
        scan.summary
            .covers_mailbox(Signal::InboxRule, Some(&mailboxes[5]))
    );
}

/// An outbound policy that allows forwarding for a group's members makes their
/// forwards unblocked; a non-member's stays blocked by the default policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posture_reads_the_policy_rules_group_scope() {
    let f = Fixture::new().await;
    let mailboxes = f.mailboxes().await;
    let group = f
        .recipient(json!({"kind": "distribution_group", "name": "Sales",
            "members": [mailboxes[0], mailboxes[1]]}))
        .await;
    f.control(
        reqwest::Method::POST,
        &format!("/_sim/tenants/{}/access", f.tenant.tenant_id),
        json!({"default_auto_forwarding": "Off", "allow_forwarding_for_group": group["identity"]}),
    )
    .await;
    for i in [0usize, 5] {
        f.plant(
            json!({"signal": "forwarding_smtp_address", "mailbox": mailboxes[i],
            "targets": [format!("m{i}@evil.example")]}),
        )
        .await;
    }
    let scan = f.scan().await;
    assert!(
        scan.summary.is_complete(),
        "{:?}",
        scan.summary.first_error()
    );
    let by = |m: &str| {
        scan.detections
            .iter()
            .find(|d| d.mailbox_address() == m)
            .expect("detected")
    };
    assert!(
        !by(&mailboxes[0]).posture_blocked,
        "a member of the allowed group forwards for real"
    );
    assert!(
        by(&mailboxes[5]).posture_blocked,
        "a non-member is blocked by the default policy"
    );
    assert!(by(&mailboxes[0]).severity > by(&mailboxes[5]).severity);
}

/// A tenant whose consent was revoked, or that the partner no longer lists, is
/// reported with the reason and the fix; a relationship ending within 14 days is a
/// warning on the summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_access_is_reported_and_an_ending_relationship_warned() {
    let f = Fixture::new().await;
    let mut job = f.job();
    job.relationship = Some(Relationship {
        listed: true,
        ends_at: Some(Utc::now() + chrono::Duration::days(9)),
        status: "active".into(),
    });
    let scan = f.scan_with(job.clone(), &ScanOptions::default()).await;
    assert!(scan.summary.is_complete());
    assert_eq!(
        scan.summary.warnings.len(),
        1,
        "{:?}",
        scan.summary.warnings
    );
    assert!(scan.summary.warnings[0].contains("GDAP relationship"));

    f.control(
        reqwest::Method::POST,
        &format!("/_sim/tenants/{}/access", f.tenant.tenant_id),
        json!({"consent": false}),
    )
    .await;
    let scan = f.scan().await;
    assert!(scan.summary.is_dark());
    let (c, e) = scan.summary.first_error().expect("why");
    assert_eq!(*c, Check::Access);
    assert_eq!(e.kind, ErrorKind::ConsentMissing);
    assert!(e.remedy.is_some());

    job.relationship = Some(Relationship {
        listed: false,
        ends_at: None,
        status: "not listed".into(),
    });
    let scan = f.scan_with(job, &ScanOptions::default()).await;
    let (_, e) = scan.summary.first_error().expect("why");
    assert_eq!(e.kind, ErrorKind::RelationshipEnded);
    assert!(e.remedy.as_deref().unwrap_or_default().contains("GDAP"));
}
