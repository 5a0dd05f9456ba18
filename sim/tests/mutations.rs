//! Every way of removing or planting a forward changes `/_sim/truth` accordingly.

mod common;

use common::{EXO, GRAPH, TestSim, start};
use m365_sim::{Signal, SimArgs, TruthEntry};
use reqwest::{Method, StatusCode};
use serde_json::json;

fn find(truth: &[TruthEntry], pick: impl Fn(&TruthEntry) -> bool) -> TruthEntry {
    truth
        .iter()
        .find(|e| pick(e))
        .cloned()
        .expect("a matching truth entry")
}

/// RuleIdentity of a Get-InboxRule row in decimal (never through f64).
fn rule_id(row: &serde_json::Value) -> String {
    row["RuleIdentity"]
        .as_u64()
        .map(|n| n.to_string())
        .unwrap_or_default()
}

fn same(a: &TruthEntry, b: &TruthEntry) -> bool {
    a.tenant_id == b.tenant_id
        && a.mailbox == b.mailbox
        && a.signal == b.signal
        && a.rule_id == b.rule_id
}

async fn lookup(s: &TestSim, e: &TruthEntry) -> Option<TruthEntry> {
    s.truth().await.into_iter().find(|x| same(x, e))
}

#[tokio::test]
async fn set_mailbox_clears_and_sets_smtp_forwarding() {
    let s = start(SimArgs::default()).await;
    let e = find(&s.truth().await, |e| {
        e.signal == Signal::ForwardingSmtpAddress
    });
    let token = s.token(&e.tenant_id, EXO).await;
    let mailbox = e.mailbox.clone().expect("mailbox");
    let a = s.exo(&e.tenant_id, &token, "Set-Mailbox", json!({"Identity": mailbox, "ForwardingSmtpAddress": null, "DeliverToMailboxAndForward": false})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(
        lookup(&s, &e).await.is_none(),
        "cleared forward left the truth"
    );
    let row = &s
        .exo(
            &e.tenant_id,
            &token,
            "Get-Mailbox",
            json!({"Identity": mailbox}),
        )
        .await
        .value()[0];
    assert!(row["ForwardingSmtpAddress"].is_null());
    let b = s
        .exo(
            &e.tenant_id,
            &token,
            "Set-Mailbox",
            json!({"Identity": mailbox, "ForwardingSmtpAddress": "smtp:New.Person@Exfil.Example"}),
        )
        .await;
    assert_eq!(b.status, StatusCode::OK);
    let back = lookup(&s, &e).await.expect("a new smtp forward");
    assert_eq!(back.targets, vec!["New.Person@exfil.example"]);
    assert_eq!(back.keeps_copy, Some(false));
}

#[tokio::test]
async fn set_mailbox_clears_forwarding_address() {
    let s = start(SimArgs::default()).await;
    let e = find(&s.truth().await, |e| e.signal == Signal::ForwardingAddress);
    let token = s.token(&e.tenant_id, EXO).await;
    let a = s
        .exo(
            &e.tenant_id,
            &token,
            "Set-Mailbox",
            json!({"Identity": e.mailbox, "ForwardingAddress": null}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(lookup(&s, &e).await.is_none());
    let bad = s
        .exo(
            &e.tenant_id,
            &token,
            "Set-Mailbox",
            json!({"Identity": e.mailbox, "ForwardingAddress": "No Such Contact"}),
        )
        .await;
    assert_eq!(
        bad.status,
        StatusCode::BAD_REQUEST,
        "an unknown recipient is refused"
    );
}

#[tokio::test]
async fn disable_inbox_rule_keeps_it_in_truth_as_disabled() {
    let s = start(SimArgs::default()).await;
    let e = find(&s.truth().await, |e| {
        e.signal == Signal::InboxRule && e.enabled
    });
    let token = s.token(&e.tenant_id, EXO).await;
    let rows = s
        .exo_all(
            &e.tenant_id,
            &token,
            "Get-InboxRule",
            json!({"Mailbox": e.mailbox, "IncludeHidden": true}),
        )
        .await;
    let rid = e.rule_id.clone().expect("rule id");
    let row = rows
        .iter()
        .find(|r| rule_id(r) == rid)
        .expect("rule on the wire");
    let a = s
        .exo(
            &e.tenant_id,
            &token,
            "Disable-InboxRule",
            json!({"Identity": row["Identity"], "Mailbox": e.mailbox, "Confirm": false}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let after = lookup(&s, &e)
        .await
        .expect("a disabled rule is still a configured forward");
    assert!(!after.enabled);
    let rows = s
        .exo_all(
            &e.tenant_id,
            &token,
            "Get-InboxRule",
            json!({"Mailbox": e.mailbox, "IncludeHidden": true}),
        )
        .await;
    let row = rows.iter().find(|r| rule_id(r) == rid).expect("rule");
    assert_eq!(row["Enabled"], false);
}

#[tokio::test]
async fn remove_inbox_rule_removes_it() {
    let s = start(SimArgs::default()).await;
    let e = find(&s.truth().await, |e| {
        e.signal == Signal::InboxRule && e.hidden
    });
    let token = s.token(&e.tenant_id, EXO).await;
    let rows = s
        .exo_all(
            &e.tenant_id,
            &token,
            "Get-InboxRule",
            json!({"Mailbox": e.mailbox, "IncludeHidden": true}),
        )
        .await;
    let rid = e.rule_id.clone().expect("rule id");
    let identity = rows.iter().find(|r| rule_id(r) == rid).expect("rule")["Identity"].clone();
    // Owner\RuleIdentity alone is enough: the owner part names the mailbox.
    let a = s
        .exo(
            &e.tenant_id,
            &token,
            "Remove-InboxRule",
            json!({"Identity": identity, "Confirm": false}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(lookup(&s, &e).await.is_none());
    let again = s
        .exo(
            &e.tenant_id,
            &token,
            "Remove-InboxRule",
            json!({"Identity": identity}),
        )
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "already gone");
}

#[tokio::test]
async fn disable_transport_rule_marks_it_disabled() {
    let s = start(SimArgs::default()).await;
    let e = find(&s.truth().await, |e| {
        e.signal == Signal::TransportRule && e.enabled
    });
    let token = s.token(&e.tenant_id, EXO).await;
    let a = s
        .exo(
            &e.tenant_id,
            &token,
            "Disable-TransportRule",
            json!({"Identity": e.rule_id}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(!lookup(&s, &e).await.expect("still configured").enabled);
    let rules = s
        .exo_all(
            &e.tenant_id,
            &token,
            "Get-TransportRule",
            json!({"Identity": e.rule_id}),
        )
        .await;
    assert_eq!(rules[0]["State"], "Disabled");
}

#[tokio::test]
async fn graph_patch_and_delete_change_the_truth() {
    let s = start(SimArgs::default()).await;
    let truth = s.truth().await;
    let mut visible = truth
        .iter()
        .filter(|e| e.signal == Signal::InboxRule && !e.hidden && e.enabled);
    let first = visible.next().cloned().expect("a visible enabled rule");
    let second = visible
        .find(|e| e.mailbox != first.mailbox)
        .cloned()
        .expect("another");
    for (e, delete) in [(first, false), (second, true)] {
        let token = s.token(&e.tenant_id, GRAPH).await;
        use base64::Engine;
        let id = base64::engine::general_purpose::URL_SAFE.encode(
            e.rule_id
                .as_deref()
                .unwrap_or("0")
                .parse::<u64>()
                .expect("u64")
                .to_be_bytes(),
        );
        let path = format!(
            "/v1.0/users/{}/mailFolders/inbox/messageRules/{id}",
            e.mailbox.as_deref().unwrap_or_default()
        );
        if delete {
            let a = s.graph(Method::DELETE, &path, &token, None).await;
            assert_eq!(a.status, StatusCode::NO_CONTENT);
            assert!(lookup(&s, &e).await.is_none());
        } else {
            let a = s
                .graph(
                    Method::PATCH,
                    &path,
                    &token,
                    Some(json!({"isEnabled": false})),
                )
                .await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.text());
            assert_eq!(a.json["isEnabled"], false);
            assert!(!lookup(&s, &e).await.expect("still there").enabled);
        }
    }
}

async fn a_mailbox(s: &TestSim) -> (String, String) {
    let t = s.readable_tenant().await;
    let token = s.token(&t.tenant_id, EXO).await;
    let rows = s
        .exo_all(
            &t.tenant_id,
            &token,
            "Get-Mailbox",
            json!({"Filter": "ForwardingSmtpAddress -eq $null"}),
        )
        .await;
    (
        t.tenant_id,
        rows[0]["PrimarySmtpAddress"]
            .as_str()
            .expect("primary")
            .to_string(),
    )
}

#[tokio::test]
async fn planting_and_removing_a_mailbox_forward() {
    let s = start(common::small_args()).await;
    let (tenant, mailbox) = a_mailbox(&s).await;
    let a = s
        .control(Method::POST, &json!({"tenant_id": tenant, "signal": "forwarding_smtp_address", "mailbox": mailbox, "targets": ["Thief+x@Bücher.example."], "keeps_copy": false}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let planted: TruthEntry = serde_json::from_value(a.json.clone()).expect("a truth entry");
    assert_eq!(planted.targets, vec!["Thief+x@xn--bcher-kva.example"]);
    assert_eq!(planted.keeps_copy, Some(false));
    assert!(lookup(&s, &planted).await.is_some());
    let token = s.token(&tenant, EXO).await;
    let row = &s
        .exo(&tenant, &token, "Get-Mailbox", json!({"Identity": mailbox}))
        .await
        .value()[0];
    assert_eq!(row["ForwardingSmtpAddress"], "smtp:Thief+x@Bücher.example.");
    let d = s
        .control(
            Method::DELETE,
            &json!({"tenant_id": tenant, "signal": "forwarding_smtp_address", "mailbox": mailbox}),
        )
        .await;
    assert_eq!(d.status, StatusCode::OK);
    assert!(lookup(&s, &planted).await.is_none());
}

#[tokio::test]
async fn planting_a_hidden_inbox_rule() {
    let s = start(common::small_args()).await;
    let (tenant, mailbox) = a_mailbox(&s).await;
    let a = s
        .control(Method::POST, &json!({"tenant_id": tenant, "signal": "inbox_rule", "mailbox": mailbox, "targets": ["spy@evil.example", mailbox], "hidden": true, "action": "redirect_to", "rule_name": "."}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let planted: TruthEntry = serde_json::from_value(a.json.clone()).expect("entry");
    assert_eq!(
        planted.targets,
        vec!["spy@evil.example"],
        "the internal target is left out"
    );
    assert!(planted.hidden);
    let rid: u64 = planted
        .rule_id
        .as_deref()
        .expect("rule id")
        .parse()
        .expect("u64");
    assert!(rid > 1 << 63);
    let token = s.token(&tenant, EXO).await;
    let plain = s
        .exo_all(
            &tenant,
            &token,
            "Get-InboxRule",
            json!({"Mailbox": mailbox}),
        )
        .await;
    assert!(
        plain
            .iter()
            .all(|r| r["RuleIdentity"].as_u64() != Some(rid))
    );
    let all = s
        .exo_all(
            &tenant,
            &token,
            "Get-InboxRule",
            json!({"Mailbox": mailbox, "IncludeHidden": true}),
        )
        .await;
    let row = all
        .iter()
        .find(|r| r["RuleIdentity"].as_u64() == Some(rid))
        .expect("visible with IncludeHidden");
    let targets = row["RedirectTo"].as_array().expect("RedirectTo");
    assert!(targets.iter().any(|t| {
        t.as_str()
            .is_some_and(|t| t.contains("[SMTP:spy@evil.example]"))
    }));
    assert!(
        targets.iter().any(|t| t
            .as_str()
            .is_some_and(|t| t.contains("[EX:/o=ExchangeLabs"))),
        "a known recipient is an EX: target"
    );
    let d = s
        .control(
            Method::DELETE,
            &json!({"tenant_id": tenant, "signal": "inbox_rule", "rule_id": rid.to_string()}),
        )
        .await;
    assert_eq!(d.status, StatusCode::OK);
    assert!(lookup(&s, &planted).await.is_none());
}

#[tokio::test]
async fn planting_a_transport_rule_and_an_address_forward() {
    let s = start(common::small_args()).await;
    let (tenant, mailbox) = a_mailbox(&s).await;
    let token = s.token(&tenant, EXO).await;
    let a = s
        .control(Method::POST, &json!({"tenant_id": tenant, "signal": "transport_rule", "targets": ["a@x.example;b@y.example"], "action": "copy_to", "mode": "Audit"}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let planted: TruthEntry = serde_json::from_value(a.json.clone()).expect("entry");
    assert_eq!(planted.targets, vec!["a@x.example", "b@y.example"]);
    assert!(!planted.enabled, "audit mode does not act on mail");
    let rules = s
        .exo_all(&tenant, &token, "Get-TransportRule", json!({}))
        .await;
    assert!(
        rules
            .iter()
            .any(|r| r["Guid"].as_str() == planted.rule_id.as_deref() && r["Mode"] == "Audit")
    );
    let d = s
        .control(
            Method::DELETE,
            &json!({"tenant_id": tenant, "signal": "transport_rule", "rule_id": planted.rule_id}),
        )
        .await;
    assert_eq!(d.status, StatusCode::OK);
    assert!(lookup(&s, &planted).await.is_none());

    let b = s
        .control(Method::POST, &json!({"tenant_id": tenant, "signal": "forwarding_address", "mailbox": mailbox, "targets": ["collector@drop.example"]}))
        .await;
    assert_eq!(b.status, StatusCode::CREATED, "{}", b.text());
    let row = &s
        .exo(&tenant, &token, "Get-Mailbox", json!({"Identity": mailbox}))
        .await
        .value()[0];
    let fwd = row["ForwardingAddress"]
        .as_str()
        .expect("ForwardingAddress");
    let r = s
        .exo_all(&tenant, &token, "Get-Recipient", json!({"Identity": fwd}))
        .await;
    assert_eq!(r[0]["RecipientTypeDetails"], "MailContact");
    assert_eq!(r[0]["ExternalEmailAddress"], "SMTP:collector@drop.example");
}

#[tokio::test]
async fn planting_an_internal_forward_adds_nothing_to_the_truth() {
    let s = start(common::small_args()).await;
    let (tenant, mailbox) = a_mailbox(&s).await;
    let before = s.truth().await.len();
    let t = s
        .tenants()
        .await
        .into_iter()
        .find(|t| t.tenant_id == tenant)
        .expect("tenant");
    let internal = format!("Someone@{}", t.default_domain.to_uppercase());
    let a = s
        .control(Method::POST, &json!({"tenant_id": tenant, "signal": "forwarding_smtp_address", "mailbox": mailbox, "targets": [internal]}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.json["targets"], json!([]));
    assert_eq!(s.truth().await.len(), before);
    let bad = s.control(Method::POST, &json!({"tenant_id": tenant, "signal": "inbox_rule", "mailbox": mailbox, "targets": ["not an address"]})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let none = s.control(Method::DELETE, &json!({"tenant_id": tenant, "signal": "transport_rule", "rule_id": "00000000-0000-0000-0000-000000000000"})).await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
}
