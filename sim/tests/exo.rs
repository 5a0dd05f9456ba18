//! The Exchange admin API: InvokeCommand envelopes, cmdlets, filters, paging, errors
//! and `$batch`, against m365-api.md §3b-§6 and §8-§9.

mod common;

use std::collections::BTreeSet;

use common::{EXO, TestSim, small_args, start};
use m365_sim::SimArgs;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn exo_tenant(s: &TestSim) -> (String, String) {
    let t = s.readable_tenant().await;
    let token = s.token(&t.tenant_id, EXO).await;
    (t.tenant_id, token)
}

/// The error envelope of §4.3, returning the internal exception message.
fn assert_exo_error(a: &common::Answer, exception: &str) -> String {
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
    let e = &a.json["error"];
    assert_eq!(e["code"], "BadRequest");
    let detail = e["details"][0]["message"]
        .as_str()
        .expect("details[0].message");
    assert!(detail.starts_with(&format!("|{exception}|")), "{detail}");
    assert_eq!(e["details"][0]["code"], "Client");
    assert_eq!(e["innererror"]["internalexception"]["type"], exception);
    e["innererror"]["internalexception"]["message"]
        .as_str()
        .expect("internal message")
        .to_string()
}

const MAILBOX_FIELDS: &[&str] = &[
    "Name",
    "Identity",
    "Alias",
    "DisplayName",
    "PrimarySmtpAddress",
    "UserPrincipalName",
    "RecipientTypeDetails",
    "ExternalDirectoryObjectId",
    "Guid",
    "EmailAddresses",
    "ForwardingSmtpAddress",
    "ForwardingAddress",
    "DeliverToMailboxAndForward",
    "LegacyExchangeDN",
];

#[tokio::test]
async fn get_mailbox_envelope_and_fields() {
    let s = start(small_args()).await;
    let (tenant, token) = exo_tenant(&s).await;
    let a = s
        .exo(
            &tenant,
            &token,
            "Get-Mailbox",
            json!({"ResultSize": "Unlimited"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        a.json["@odata.context"]
            .as_str()
            .is_some_and(|c| c.contains("$metadata#Collection(Exchange.GenericHashTable)"))
    );
    assert_eq!(
        a.json["@adminapi.warnings"],
        json!([]),
        "warnings are present and empty on a full answer"
    );
    let rows = a.value();
    assert_eq!(rows.len(), 12);
    for row in &rows {
        for f in MAILBOX_FIELDS {
            assert!(row.get(*f).is_some(), "Get-Mailbox field {f}");
        }
        assert_eq!(row["Guid@data.type"], "System.Guid");
        assert_eq!(row["WhenChanged@data.type"], "System.DateTime");
        let primary = row["PrimarySmtpAddress"].as_str().expect("primary");
        assert_eq!(primary, primary.to_lowercase());
        if let Some(f) = row["ForwardingSmtpAddress"].as_str() {
            assert!(f.starts_with("smtp:"), "lower-case prefix: {f}");
        }
    }
    let kinds: BTreeSet<&str> = rows
        .iter()
        .filter_map(|r| r["RecipientTypeDetails"].as_str())
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["UserMailbox", "SharedMailbox", "RoomMailbox"])
    );
}

#[tokio::test]
async fn get_mailbox_filters_select_forwarding_mailboxes() {
    let s = start(SimArgs::default()).await;
    let truth = s.truth().await;
    let tenant = &truth
        .iter()
        .find(|e| e.signal == m365_sim::Signal::ForwardingAddress)
        .expect("an address forward")
        .tenant_id;
    let token = s.token(tenant, EXO).await;
    let all = s
        .exo_all(
            tenant,
            &token,
            "Get-Mailbox",
            json!({"ResultSize": "Unlimited"}),
        )
        .await;
    let names = |rows: &[Value]| -> BTreeSet<String> {
        rows.iter()
            .map(|r| r["Name"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let smtp_set: BTreeSet<String> = names(
        &all.iter()
            .filter(|r| !r["ForwardingSmtpAddress"].is_null())
            .cloned()
            .collect::<Vec<_>>(),
    );
    let addr_set: BTreeSet<String> = names(
        &all.iter()
            .filter(|r| !r["ForwardingAddress"].is_null())
            .cloned()
            .collect::<Vec<_>>(),
    );
    assert!(!addr_set.is_empty());
    for (filter, want) in [
        ("ForwardingSmtpAddress -ne $null", smtp_set.clone()),
        ("ForwardingAddress -ne $null", addr_set.clone()),
        (
            "(ForwardingSmtpAddress -ne $null) -or (ForwardingAddress -ne $null)",
            smtp_set.union(&addr_set).cloned().collect(),
        ),
    ] {
        let rows = s
            .exo_all(
                tenant,
                &token,
                "Get-Mailbox",
                json!({"ResultSize": "Unlimited", "Filter": filter}),
            )
            .await;
        assert_eq!(names(&rows), want, "filter {filter}");
    }
    let shared = s
        .exo_all(
            tenant,
            &token,
            "Get-Mailbox",
            json!({"RecipientTypeDetails": ["SharedMailbox"]}),
        )
        .await;
    assert!(
        !shared.is_empty()
            && shared
                .iter()
                .all(|r| r["RecipientTypeDetails"] == "SharedMailbox")
    );
    let bad = s
        .exo(
            tenant,
            &token,
            "Get-Mailbox",
            json!({"Filter": "ForwardingSmtpAddress -gt 3"}),
        )
        .await;
    assert_exo_error(
        &bad,
        "System.Management.Automation.ParameterBindingException",
    );
}

#[tokio::test]
async fn select_query_parameter_restricts_fields() {
    let s = start(small_args()).await;
    let (tenant, token) = exo_tenant(&s).await;
    let url = format!(
        "{}?$select=PrimarySmtpAddress,ForwardingSmtpAddress,Guid",
        s.invoke_url(&tenant)
    );
    let body = json!({"CmdletInput": {"CmdletName": "Get-Mailbox", "Parameters": {}}});
    let a = s.post(&url, &token, &body, &[]).await;
    assert_eq!(a.status, StatusCode::OK);
    let keys: BTreeSet<String> = a.value()[0]
        .as_object()
        .expect("row")
        .keys()
        .cloned()
        .collect();
    let want: BTreeSet<String> = [
        "PrimarySmtpAddress",
        "ForwardingSmtpAddress",
        "Guid",
        "Guid@data.type",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(keys, want);
}

#[tokio::test]
async fn paging_reposts_the_same_body_to_the_nextlink() {
    let s = start(SimArgs {
        mailboxes: 25,
        ..small_args()
    })
    .await;
    let (tenant, token) = exo_tenant(&s).await;
    let body = json!({"CmdletInput": {"CmdletName": "Get-Mailbox", "Parameters": {"ResultSize": "Unlimited"}}});
    let first = s
        .post(
            &s.invoke_url(&tenant),
            &token,
            &body,
            &[("Prefer", "odata.maxpagesize=10")],
        )
        .await;
    assert_eq!(first.value().len(), 10);
    let next = first.json["@odata.nextLink"]
        .as_str()
        .expect("nextLink")
        .to_string();
    assert!(
        next.starts_with(&s.invoke_url(&tenant)) && next.contains("$skiptoken="),
        "{next}"
    );
    assert!(
        !first.json["@adminapi.warnings"]
            .as_array()
            .expect("warnings")
            .is_empty(),
        "a truncated page warns"
    );
    let mut seen: Vec<String> = first
        .value()
        .iter()
        .map(|r| r["Name"].as_str().unwrap_or_default().to_string())
        .collect();
    let mut url = next.clone();
    loop {
        let page = s
            .post(&url, &token, &body, &[("Prefer", "odata.maxpagesize=10")])
            .await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text());
        seen.extend(
            page.value()
                .iter()
                .map(|r| r["Name"].as_str().unwrap_or_default().to_string()),
        );
        match page.json["@odata.nextLink"].as_str() {
            Some(n) => url = n.to_string(),
            None => {
                assert_eq!(page.json["@adminapi.warnings"], json!([]));
                break;
            }
        }
    }
    assert_eq!(seen.len(), 25);
    assert_eq!(
        seen.iter().collect::<BTreeSet<_>>().len(),
        25,
        "pages do not overlap"
    );
    // A different body on the nextLink is an invalid pagination request.
    let other =
        json!({"CmdletInput": {"CmdletName": "Get-Mailbox", "Parameters": {"ResultSize": 5}}});
    let bad = s.post(&next, &token, &other, &[]).await;
    let msg = assert_exo_error(
        &bad,
        "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
    );
    assert_eq!(
        msg,
        "Expired or Invalid pagination request. Default Expiry time is 00:30:00"
    );
}

#[tokio::test]
async fn result_size_truncates_with_the_documented_warning() {
    let s = start(small_args()).await;
    let (tenant, token) = exo_tenant(&s).await;
    let a = s
        .exo(&tenant, &token, "Get-Mailbox", json!({"ResultSize": 5}))
        .await;
    assert_eq!(a.value().len(), 5);
    assert!(a.json.get("@odata.nextLink").is_none());
    assert_eq!(
        a.json["@adminapi.warnings"],
        json!([
            "There are more results available than are currently displayed. To view them, increase the value for the ResultSize parameter."
        ])
    );
    let bad = s
        .exo(
            &tenant,
            &token,
            "Get-Mailbox",
            json!({"ResultSize": "lots"}),
        )
        .await;
    assert_exo_error(
        &bad,
        "System.Management.Automation.ParameterBindingException",
    );
}

#[tokio::test]
async fn identity_lookup_and_not_found_error() {
    let s = start(small_args()).await;
    let (tenant, token) = exo_tenant(&s).await;
    let rows = s.exo_all(&tenant, &token, "Get-Mailbox", json!({})).await;
    let m = &rows[3];
    for key in [
        "PrimarySmtpAddress",
        "Alias",
        "Guid",
        "ExternalDirectoryObjectId",
        "Name",
    ] {
        let id = m[key].as_str().expect("identity value").to_uppercase();
        let a = s
            .exo(&tenant, &token, "Get-Mailbox", json!({"Identity": id}))
            .await;
        assert_eq!(a.status, StatusCode::OK, "Identity by {key}");
        assert_eq!(a.value()[0]["Guid"], m["Guid"]);
    }
    let a = s
        .exo(
            &tenant,
            &token,
            "Get-Mailbox",
            json!({"Identity": "ghost@nowhere.example"}),
        )
        .await;
    let msg = assert_exo_error(
        &a,
        "Microsoft.Exchange.Management.Tasks.ManagementObjectNotFoundException",
    );
    assert!(
        msg.contains("object 'ghost@nowhere.example' couldn't be found on '"),
        "{msg}"
    );
    assert_eq!(a.json["error"]["message"], "Invalid Operation");
}

#[tokio::test]
async fn unknown_parameter_is_a_binding_error() {
    let s = start(small_args()).await;
    let (tenant, token) = exo_tenant(&s).await;
    let a = s
        .exo(&tenant, &token, "Get-Mailbox", json!({"Frobnicate": true}))
        .await;
    let msg = assert_exo_error(&a, "System.Management.Automation.ParameterBindingException");
    assert!(msg.contains("'Frobnicate'"), "{msg}");
    let b = s.exo(&tenant, &token, "Get-InboxRule", json!({})).await;
    let msg = assert_exo_error(&b, "System.Management.Automation.ParameterBindingException");
    assert!(msg.contains("Mailbox"), "Mailbox is mandatory: {msg}");
}

#[tokio::test]
async fn unknown_cmdlet_is_403_with_a_non_json_body() {
    let s = start(small_args()).await;
    let (tenant, token) = exo_tenant(&s).await;
    let a = s
        .exo(&tenant, &token, "Get-MessageTraceV9", json!({}))
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(
        !a.bytes.is_empty() && a.bytes.iter().all(|&b| b == 0),
        "a run of NUL bytes"
    );
    assert!(serde_json::from_slice::<Value>(&a.bytes).is_err());
}

#[tokio::test]
async fn get_recipient_lists_mailboxes_contacts_mail_users_and_groups() {
    let s = start(small_args()).await;
    let (tenant, token) = exo_tenant(&s).await;
    let rows = s.exo_all(&tenant, &token, "Get-Recipient", json!({})).await;
    let kinds: BTreeSet<&str> = rows
        .iter()
        .filter_map(|r| r["RecipientTypeDetails"].as_str())
        .collect();
    for k in [
        "UserMailbox",
        "MailContact",
        "MailUser",
        "GuestMailUser",
        "MailUniversalDistributionGroup",
        "GroupMailbox",
    ] {
        assert!(kinds.contains(k), "{k} in {kinds:?}");
    }
    for r in &rows {
        for f in [
            "Name",
            "Identity",
            "Alias",
            "DisplayName",
            "PrimarySmtpAddress",
            "ExternalEmailAddress",
            "LegacyExchangeDN",
            "RecipientType",
            "EmailAddresses",
            "Guid",
            "ExternalDirectoryObjectId",
        ] {
            assert!(r.get(f).is_some(), "Get-Recipient field {f}");
        }
        match r["RecipientType"].as_str() {
            Some("UserMailbox" | "MailUniversalDistributionGroup") => {
                assert!(r["ExternalEmailAddress"].is_null())
            }
            _ => assert!(
                r["ExternalEmailAddress"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("SMTP:"))
            ),
        }
    }
    let contact = rows
        .iter()
        .find(|r| r["RecipientType"] == "MailContact")
        .expect("contact");
    let dn = contact["LegacyExchangeDN"].as_str().expect("dn");
    for params in [
        json!({"Identity": dn}),
        json!({"Filter": format!("LegacyExchangeDN -eq '{dn}'")}),
        json!({"Identity": contact["Name"]}),
    ] {
        let hit = s
            .exo_all(&tenant, &token, "Get-Recipient", params.clone())
            .await;
        assert_eq!(hit.len(), 1, "{params}");
        assert_eq!(hit[0]["Guid"], contact["Guid"]);
    }
    let contacts = s
        .exo_all(&tenant, &token, "Get-MailContact", json!({}))
        .await;
    assert!(
        !contacts.is_empty()
            && contacts
                .iter()
                .all(|c| c["RecipientTypeDetails"] == "MailContact")
    );
    let users = s.exo_all(&tenant, &token, "Get-MailUser", json!({})).await;
    assert!(users.iter().all(|c| c["RecipientType"] == "MailUser"));
}

/// A tenant and mailbox holding a hidden forwarding rule.
async fn hidden_rule(s: &TestSim) -> m365_sim::TruthEntry {
    s.truth()
        .await
        .into_iter()
        .find(|e| e.hidden)
        .expect("a hidden rule")
}

#[tokio::test]
async fn hidden_rules_need_include_hidden() {
    let s = start(SimArgs::default()).await;
    let h = hidden_rule(&s).await;
    let token = s.token(&h.tenant_id, EXO).await;
    let mailbox = h.mailbox.clone().expect("mailbox");
    let plain = s
        .exo_all(
            &h.tenant_id,
            &token,
            "Get-InboxRule",
            json!({"Mailbox": mailbox}),
        )
        .await;
    let all = s
        .exo_all(
            &h.tenant_id,
            &token,
            "Get-InboxRule",
            json!({"Mailbox": mailbox, "IncludeHidden": true}),
        )
        .await;
    let rid = h.rule_id.clone().expect("rule id");
    let has = |rows: &[Value]| {
        rows.iter().any(|r| {
            r["RuleIdentity"].as_u64().map(|n| n.to_string()).as_deref() == Some(rid.as_str())
        })
    };
    assert!(!has(&plain) && has(&all));
    let junk = |rows: &[Value]| rows.iter().any(|r| r["Name"] == "Junk E-mail Rule");
    assert!(
        !junk(&plain) && junk(&all),
        "the system junk rule only with IncludeHidden"
    );
    let plain_ids: BTreeSet<String> = plain
        .iter()
        .map(|r| r["RuleIdentity"].to_string())
        .collect();
    for r in all
        .iter()
        .filter(|r| !plain_ids.contains(&r["RuleIdentity"].to_string()))
    {
        assert_eq!(
            r["SupportedByTask"], false,
            "only hidden rules are added by IncludeHidden: {r}"
        );
    }
}

#[tokio::test]
async fn rule_identity_above_2_pow_63_is_an_exact_json_number() {
    let s = start(SimArgs::default()).await;
    let truth = s.truth().await;
    let big = truth
        .iter()
        .find(|e| {
            e.rule_id
                .as_deref()
                .and_then(|r| r.parse::<u64>().ok())
                .is_some_and(|r| r > 1 << 63)
        })
        .expect("a rule id above 2^63");
    let rid = big.rule_id.clone().expect("id");
    let token = s.token(&big.tenant_id, EXO).await;
    let mailbox = big.mailbox.clone().expect("mailbox");
    let a = s
        .exo(
            &big.tenant_id,
            &token,
            "Get-InboxRule",
            json!({"Mailbox": mailbox, "IncludeHidden": true}),
        )
        .await;
    let text = a.text();
    assert!(
        text.contains(&format!("\"RuleIdentity\":{rid}")),
        "a raw JSON number, not a string or a float"
    );
    let row = a
        .value()
        .into_iter()
        .find(|r| r["RuleIdentity"].as_u64().map(|n| n.to_string()) == Some(rid.clone()))
        .expect("row");
    assert!(
        row["Identity"]
            .as_str()
            .is_some_and(|i| i.ends_with(&format!("\\{rid}")))
    );
    assert_eq!(
        row["Identity"].as_str().map(|i| i.split('\\').next()),
        Some(row["MailboxOwnerId"].as_str())
    );
    for f in [
        "Name",
        "Enabled",
        "Priority",
        "Description",
        "ForwardTo",
        "ForwardAsAttachmentTo",
        "RedirectTo",
        "DeleteMessage",
        "MarkAsRead",
        "MoveToFolder",
        "StopProcessingRules",
        "SubjectContainsWords",
        "IsValid",
        "SupportedByTask",
    ] {
        assert!(row.get(f).is_some(), "Get-InboxRule field {f}");
    }
}

#[tokio::test]
async fn ex_targets_resolve_through_legacy_dn() {
    let s = start(SimArgs::default()).await;
    let truth = s.truth().await;
    let mut checked = 0;
    for e in truth
        .iter()
        .filter(|e| e.signal == m365_sim::Signal::InboxRule)
        .take(40)
    {
        let token = s.token(&e.tenant_id, EXO).await;
        let rows = s
            .exo_all(
                &e.tenant_id,
                &token,
                "Get-InboxRule",
                json!({"Mailbox": e.mailbox, "IncludeHidden": true}),
            )
            .await;
        for row in rows {
            for f in ["ForwardTo", "ForwardAsAttachmentTo", "RedirectTo"] {
                for t in row[f]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    assert!(
                        t.starts_with('"') && t.ends_with(']'),
                        "\"Name\" [TYPE:addr] form: {t}"
                    );
                    if let Some(dn) = t.split("[EX:").nth(1).map(|d| d.trim_end_matches(']')) {
                        assert!(dn.starts_with("/o=ExchangeLabs/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn="));
                        let hit = s
                            .exo_all(
                                &e.tenant_id,
                                &token,
                                "Get-Recipient",
                                json!({"Filter": format!("LegacyExchangeDN -eq '{dn}'")}),
                            )
                            .await;
                        assert_eq!(hit.len(), 1, "EX target resolves: {dn}");
                        checked += 1;
                    }
                }
            }
        }
        if checked >= 5 {
            break;
        }
    }
    assert!(checked >= 5, "enough EX targets checked: {checked}");
}

#[tokio::test]
async fn transport_rules_and_accepted_domains_have_their_fields() {
    let s = start(SimArgs::default()).await;
    let truth = s.truth().await;
    let tr = truth
        .iter()
        .find(|e| e.signal == m365_sim::Signal::TransportRule)
        .expect("a transport rule");
    let token = s.token(&tr.tenant_id, EXO).await;
    let rules = s
        .exo_all(&tr.tenant_id, &token, "Get-TransportRule", json!({}))
        .await;
    let row = rules
        .iter()
        .find(|r| r["Guid"].as_str() == tr.rule_id.as_deref())
        .expect("truth rule on the wire");
    for f in [
        "Name",
        "Identity",
        "Guid",
        "Priority",
        "State",
        "Mode",
        "RedirectMessageTo",
        "BlindCopyTo",
        "AddToRecipients",
        "CopyTo",
        "RouteMessageOutboundConnector",
        "Actions",
        "Conditions",
    ] {
        assert!(row.get(f).is_some(), "Get-TransportRule field {f}");
    }
    assert!(["Enabled", "Disabled"].contains(&row["State"].as_str().unwrap_or_default()));
    let enabled_only = s
        .exo_all(
            &tr.tenant_id,
            &token,
            "Get-TransportRule",
            json!({"State": "Enabled"}),
        )
        .await;
    assert!(enabled_only.iter().all(|r| r["State"] == "Enabled"));
    let domains = s
        .exo_all(&tr.tenant_id, &token, "Get-AcceptedDomain", json!({}))
        .await;
    for d in &domains {
        for f in [
            "DomainName",
            "DomainType",
            "MatchSubDomains",
            "Default",
            "InitialDomain",
            "Name",
            "Identity",
        ] {
            assert!(d.get(f).is_some(), "Get-AcceptedDomain field {f}");
        }
    }
    assert_eq!(domains.iter().filter(|d| d["Default"] == true).count(), 1);
    assert_eq!(
        domains
            .iter()
            .filter(|d| d["InitialDomain"] == true)
            .count(),
        1
    );
}

#[tokio::test]
async fn posture_cmdlets_have_their_fields() {
    let s = start(small_args()).await;
    let (tenant, token) = exo_tenant(&s).await;
    let p = s
        .exo_all(
            &tenant,
            &token,
            "Get-HostedOutboundSpamFilterPolicy",
            json!({}),
        )
        .await;
    let default = p
        .iter()
        .find(|x| x["IsDefault"] == true)
        .expect("default policy");
    assert_eq!(default["Identity"], "Default");
    assert!(
        ["On", "Off", "Automatic"]
            .contains(&default["AutoForwardingMode"].as_str().unwrap_or_default())
    );
    assert!(default["Enabled"].is_boolean() && default["Name"].is_string());
    let rules = s
        .exo(
            &tenant,
            &token,
            "Get-HostedOutboundSpamFilterRule",
            json!({}),
        )
        .await;
    assert_eq!(rules.status, StatusCode::OK);
    let r = s
        .exo_all(&tenant, &token, "Get-RemoteDomain", json!({}))
        .await;
    let d = r
        .iter()
        .find(|x| x["DomainName"] == "*")
        .expect("Default remote domain");
    assert_eq!(d["Identity"], "Default");
    assert!(d["AutoForwardEnabled"].is_boolean());
}

#[tokio::test]
async fn batch_runs_up_to_10_cmdlets_as_one_request() {
    let s = start(small_args()).await;
    let (tenant, token) = exo_tenant(&s).await;
    let mailboxes = s.exo_all(&tenant, &token, "Get-Mailbox", json!({})).await;
    s.http
        .post(s.url("/_sim/stats/reset"))
        .send()
        .await
        .expect("reset");
    let requests: Vec<Value> = mailboxes
        .iter()
        .take(3)
        .enumerate()
        .map(|(i, m)| json!({
            "id": format!("{i}"),
            "method": "POST",
            "url": if i == 0 { s.invoke_url(&tenant) } else { format!("/adminapi/beta/{tenant}/InvokeCommand") },
            "headers": {"Content-Type": "application/json"},
            "body": {"CmdletInput": {"CmdletName": "Get-InboxRule", "Parameters": {"Mailbox": m["PrimarySmtpAddress"], "IncludeHidden": true}}}
        }))
        .collect();
    let url = s.url(&format!("/adminapi/beta/{tenant}/$batch"));
    let a = s
        .post(&url, &token, &json!({"requests": requests}), &[])
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let responses = a.json["responses"].as_array().expect("responses");
    assert_eq!(responses.len(), 3);
    for r in responses {
        assert_eq!(r["status"], 200);
        assert!(
            r["headers"]
                .as_object()
                .expect("headers")
                .keys()
                .all(|k| k == &k.to_lowercase())
        );
        assert!(r["body"]["@adminapi.warnings"].is_array() && r["body"]["value"].is_array());
    }
    let stats = s.stats().await;
    assert_eq!(stats.by_endpoint.get("exo:$batch"), Some(&1));
    assert_eq!(stats.total_calls, 1, "a batch is one request");
    assert_eq!(stats.operations.get("exo:Get-InboxRule"), Some(&3));
    let eleven: Vec<Value> = (0..11)
        .map(|i| {
            json!({"id": i.to_string(), "method": "POST", "url": "InvokeCommand",
        "body": {"CmdletInput": {"CmdletName": "Get-AcceptedDomain", "Parameters": {}}}})
        })
        .collect();
    let b = s
        .post(&url, &token, &json!({"requests": eleven}), &[])
        .await;
    assert_eq!(b.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn set_mailbox_without_changes_warns() {
    let s = start(small_args()).await;
    let (tenant, token) = exo_tenant(&s).await;
    let m = &s
        .exo_all(
            &tenant,
            &token,
            "Get-Mailbox",
            json!({"Filter": "ForwardingSmtpAddress -eq $null"}),
        )
        .await[0];
    let a = s
        .exo(
            &tenant,
            &token,
            "Set-Mailbox",
            json!({"Identity": m["PrimarySmtpAddress"], "ForwardingSmtpAddress": null}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json["value"], json!([]));
    assert!(
        a.json["@adminapi.warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("no settings of"))
    );
}
