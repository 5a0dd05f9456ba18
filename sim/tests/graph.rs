//! Microsoft Graph: GDAP lists, domains, users, message rules and `$batch`, against
//! the shapes of m365-api.md §1, §3a and §7.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{GRAPH, small_args, start};
use m365_sim::SimArgs;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn relationships_page_by_nextlink_and_honour_top_limits() {
    let s = start(SimArgs {
        tenants: 150,
        ..small_args()
    })
    .await;
    let token = s.partner_graph_token().await;
    let first = s
        .graph_get(
            "/v1.0/tenantRelationships/delegatedAdminRelationships",
            &token,
        )
        .await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.value().len(), 100, "default page size");
    let next = first.json["@odata.nextLink"].as_str().expect("nextLink");
    assert!(next.contains("$skiptoken="), "{next}");
    let all = s
        .graph_all(
            "/v1.0/tenantRelationships/delegatedAdminRelationships?$top=300",
            &token,
        )
        .await;
    assert!(
        all.len() >= 150,
        "every tenant has at least one relationship"
    );
    let ids: BTreeSet<&str> = all.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids.len(), all.len(), "no relationship twice across pages");
    let too_many = s
        .graph_get(
            "/v1.0/tenantRelationships/delegatedAdminRelationships?$top=301",
            &token,
        )
        .await;
    assert_eq!(too_many.status, StatusCode::BAD_REQUEST);
    assert_eq!(too_many.json["error"]["code"], "BadRequest");
}

#[tokio::test]
async fn relationships_mix_statuses_names_and_filter_active() {
    let s = start(SimArgs::default()).await;
    let token = s.partner_graph_token().await;
    let all = s
        .graph_all(
            "/v1.0/tenantRelationships/delegatedAdminRelationships",
            &token,
        )
        .await;
    let r = &all[0];
    for k in [
        "id",
        "displayName",
        "duration",
        "status",
        "autoExtendDuration",
        "customer",
        "accessDetails",
        "endDateTime",
    ] {
        assert!(r.get(k).is_some(), "relationship field {k}");
    }
    assert_eq!(
        r["@odata.type"],
        "#microsoft.graph.delegatedAdminRelationship"
    );
    assert!(r["accessDetails"]["unifiedRoles"][0]["roleDefinitionId"].is_string());
    let statuses: BTreeSet<&str> = all.iter().filter_map(|r| r["status"].as_str()).collect();
    assert!(statuses.contains("active"));
    assert!(
        statuses.len() >= 3,
        "non-active relationships too: {statuses:?}"
    );
    assert!(all.iter().any(|r| {
        r["displayName"]
            .as_str()
            .is_some_and(|n| n.starts_with("MLT_"))
    }));
    let mut per_customer: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &all {
        *per_customer
            .entry(r["customer"]["tenantId"].as_str().unwrap_or_default())
            .or_default() += 1;
    }
    assert!(
        per_customer.values().any(|&n| n >= 2),
        "a customer with two relationships"
    );

    let active = s
        .graph_all(
            "/v1.0/tenantRelationships/delegatedAdminRelationships?$filter=status%20eq%20'active'",
            &token,
        )
        .await;
    assert!(active.iter().all(|r| r["status"] == "active"));
    assert_eq!(
        active.len(),
        all.iter().filter(|r| r["status"] == "active").count()
    );
    let bad = s
        .graph_get(
            "/v1.0/tenantRelationships/delegatedAdminRelationships?$filter=foo%20gt%201",
            &token,
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    // Tenants without an active relationship are the ones /_sim/tenants flags.
    let inactive: BTreeSet<String> = s
        .tenants()
        .await
        .into_iter()
        .filter(|t| !t.gdap_active)
        .map(|t| t.tenant_id)
        .collect();
    assert!(!inactive.is_empty());
    assert!(
        active
            .iter()
            .all(|r| !inactive.contains(r["customer"]["tenantId"].as_str().unwrap_or_default()))
    );
}

#[tokio::test]
async fn customers_list_every_tenant_once() {
    let s = start(SimArgs {
        tenants: 7,
        ..small_args()
    })
    .await;
    let token = s.partner_graph_token().await;
    let all = s
        .graph_all(
            "/v1.0/tenantRelationships/delegatedAdminCustomers?$top=3",
            &token,
        )
        .await;
    assert_eq!(all.len(), 7);
    let c = &all[0];
    assert_eq!(c["@odata.type"], "#microsoft.graph.delegatedAdminCustomer");
    assert_eq!(c["id"], c["tenantId"]);
    assert!(c["displayName"].is_string() && c["@odata.etag"].is_string());
    let ids: BTreeSet<String> = all
        .iter()
        .map(|c| c["tenantId"].as_str().unwrap_or_default().to_string())
        .collect();
    let expected: BTreeSet<String> = s.tenants().await.into_iter().map(|t| t.tenant_id).collect();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn domains_show_default_initial_and_unverified() {
    let s = start(SimArgs::default()).await;
    let mut saw_unverified = false;
    for t in s
        .tenants()
        .await
        .iter()
        .filter(|t| !t.consent_missing)
        .take(12)
    {
        let token = s.token(&t.tenant_id, GRAPH).await;
        let a = s.graph_get("/v1.0/domains", &token).await;
        assert_eq!(a.status, StatusCode::OK);
        let v = a.value();
        assert_eq!(v.iter().filter(|d| d["isDefault"] == true).count(), 1);
        assert_eq!(v.iter().filter(|d| d["isInitial"] == true).count(), 1);
        let initial = v.iter().find(|d| d["isInitial"] == true).expect("initial");
        assert!(
            initial["id"]
                .as_str()
                .is_some_and(|d| d.ends_with(".onmicrosoft.com"))
        );
        for d in &v {
            assert!(d["supportedServices"].is_array() && d["authenticationType"].is_string());
        }
        if let Some(u) = v.iter().find(|d| d["isVerified"] == false) {
            saw_unverified = true;
            assert_eq!(u["id"].as_str(), t.unverified_domain.as_deref());
        }
    }
    assert!(saw_unverified, "some tenant has an unverified domain");
}

#[tokio::test]
async fn users_select_top_and_paging() {
    let s = start(small_args()).await;
    let t = s.readable_tenant().await;
    let token = s.token(&t.tenant_id, GRAPH).await;
    let a = s
        .graph_get(
            "/v1.0/users?$select=id,userPrincipalName,accountEnabled&$top=5",
            &token,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let first = &a.value()[0];
    let keys: BTreeSet<&str> = first
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["id", "userPrincipalName", "accountEnabled"])
    );
    let next = a.json["@odata.nextLink"].as_str().expect("nextLink");
    assert!(
        next.contains("$select=") && next.contains("$skiptoken="),
        "{next}"
    );
    let all = s
        .graph_all("/v1.0/users?$select=id,mail&$top=5", &token)
        .await;
    assert!(
        all.len() > 12,
        "mailbox users plus mail users and unlicensed users"
    );
    assert!(all.iter().all(|u| u.get("userPrincipalName").is_none()));
    let ids: BTreeSet<&str> = all.iter().filter_map(|u| u["id"].as_str()).collect();
    assert_eq!(ids.len(), all.len());
    let too_big = s.graph_get("/v1.0/users?$top=1000", &token).await;
    assert_eq!(too_big.status, StatusCode::BAD_REQUEST);
    let bad_select = s.graph_get("/v1.0/users?$select=nope", &token).await;
    assert_eq!(bad_select.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn graph_user_ids_join_exchange_mailboxes() {
    let s = start(small_args()).await;
    let t = s.readable_tenant().await;
    let g = s.token(&t.tenant_id, GRAPH).await;
    let e = s.token(&t.tenant_id, common::EXO).await;
    let users = s
        .graph_all("/v1.0/users?$select=id,userPrincipalName", &g)
        .await;
    let mailboxes = s
        .exo_all(
            &t.tenant_id,
            &e,
            "Get-Mailbox",
            json!({"ResultSize": "Unlimited"}),
        )
        .await;
    for m in &mailboxes {
        let id = m["ExternalDirectoryObjectId"].as_str().expect("object id");
        let u = users
            .iter()
            .find(|u| u["id"] == id)
            .expect("mailbox owner is a Graph user");
        assert_eq!(u["userPrincipalName"], m["UserPrincipalName"]);
    }
}

/// Tenant, mailbox and rule id of a visible forwarding rule, from the truth.
async fn rule_mailboxes(s: &common::TestSim) -> (String, String, String) {
    let truth = s.truth().await;
    let tenants = s.tenants().await;
    let ok: BTreeSet<&str> = tenants
        .iter()
        .filter(|t| !t.consent_missing && !t.exchange_role_missing)
        .map(|t| t.tenant_id.as_str())
        .collect();
    let visible = truth
        .iter()
        .find(|e| {
            e.signal == m365_sim::Signal::InboxRule
                && !e.hidden
                && ok.contains(e.tenant_id.as_str())
        })
        .expect("a visible forwarding rule");
    (
        visible.tenant_id.clone(),
        visible.mailbox.clone().unwrap_or_default(),
        visible.rule_id.clone().unwrap_or_default(),
    )
}

#[tokio::test]
async fn message_rules_show_visible_rules_with_smtp_addresses() {
    let s = start(SimArgs::default()).await;
    let (tenant, mailbox, rule_id) = rule_mailboxes(&s).await;
    let token = s.token(&tenant, GRAPH).await;
    let a = s
        .graph_get(
            &format!("/v1.0/users/{mailbox}/mailFolders/inbox/messageRules"),
            &token,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let rules = a.value();
    assert!(!rules.is_empty());
    for r in &rules {
        for k in [
            "id",
            "displayName",
            "sequence",
            "isEnabled",
            "hasError",
            "isReadOnly",
            "conditions",
            "actions",
        ] {
            assert!(r.get(k).is_some(), "messageRule field {k}");
        }
        for field in ["forwardTo", "forwardAsAttachmentTo", "redirectTo"] {
            for t in r["actions"][field].as_array().into_iter().flatten() {
                let addr = t["emailAddress"]["address"].as_str().expect("address");
                assert!(
                    addr.contains('@') && !addr.contains("EX:"),
                    "Graph gives real SMTP addresses: {addr}"
                );
            }
        }
    }
    // The rule's Graph id is its RuleIdentity's bytes.
    use base64::Engine;
    let want = base64::engine::general_purpose::URL_SAFE
        .encode(rule_id.parse::<u64>().expect("u64").to_be_bytes());
    assert!(rules.iter().any(|r| r["id"] == want.as_str()));
}

#[tokio::test]
async fn hidden_rules_never_appear_in_graph() {
    let s = start(SimArgs::default()).await;
    let truth = s.truth().await;
    let hidden = truth
        .iter()
        .find(|e| e.hidden)
        .expect("a hidden forwarding rule");
    let token = s.token(&hidden.tenant_id, GRAPH).await;
    let mailbox = hidden.mailbox.clone().unwrap_or_default();
    let a = s
        .graph_get(
            &format!("/v1.0/users/{mailbox}/mailFolders/inbox/messageRules"),
            &token,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    use base64::Engine;
    let id = base64::engine::general_purpose::URL_SAFE.encode(
        hidden
            .rule_id
            .as_deref()
            .unwrap_or("0")
            .parse::<u64>()
            .expect("u64")
            .to_be_bytes(),
    );
    assert!(a.value().iter().all(|r| r["id"] != id.as_str()));
    let direct = s
        .graph_get(
            &format!("/v1.0/users/{mailbox}/mailFolders/inbox/messageRules/{id}"),
            &token,
        )
        .await;
    assert_eq!(direct.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn users_without_a_mailbox_get_mailbox_not_enabled() {
    let s = start(small_args()).await;
    let t = s.readable_tenant().await;
    let token = s.token(&t.tenant_id, GRAPH).await;
    let users = s.graph_all("/v1.0/users?$select=id,mail", &token).await;
    let unlicensed = users
        .iter()
        .find(|u| u["mail"].is_null())
        .expect("an unlicensed user");
    let id = unlicensed["id"].as_str().expect("id");
    let a = s
        .graph_get(
            &format!("/v1.0/users/{id}/mailFolders/inbox/messageRules"),
            &token,
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.json["error"]["code"], "MailboxNotEnabledForRESTAPI");
    let b = s
        .graph_get(
            "/v1.0/users/nobody@nowhere.example/mailFolders/inbox/messageRules",
            &token,
        )
        .await;
    assert_eq!(b.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn batch_answers_out_of_order_and_limits_to_20() {
    let s = start(small_args()).await;
    let t = s.readable_tenant().await;
    let token = s.token(&t.tenant_id, GRAPH).await;
    let users = s.graph_all("/v1.0/users?$select=id,mail", &token).await;
    let with_mail: Vec<&Value> = users
        .iter()
        .filter(|u| u["mail"].is_string())
        .take(5)
        .collect();
    let requests: Vec<Value> = with_mail
        .iter()
        .enumerate()
        .map(|(i, u)| json!({"id": (i + 1).to_string(), "method": "GET",
            "url": format!("/users/{}/mailFolders/inbox/messageRules", u["id"].as_str().unwrap_or_default())}))
        .collect();
    let a = s
        .graph(
            Method::POST,
            "/v1.0/$batch",
            &token,
            Some(json!({"requests": requests})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let responses = a.json["responses"].as_array().expect("responses").clone();
    let ids: Vec<&str> = responses.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids.len(), 5);
    assert_ne!(
        ids,
        vec!["1", "2", "3", "4", "5"],
        "responses come back in another order"
    );
    assert!(
        responses
            .iter()
            .all(|r| r["status"] == 200 && r["body"]["value"].is_array())
    );

    let many: Vec<Value> = (0..21)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/domains"}))
        .collect();
    let b = s
        .graph(
            Method::POST,
            "/v1.0/$batch",
            &token,
            Some(json!({"requests": many})),
        )
        .await;
    assert_eq!(b.status, StatusCode::BAD_REQUEST);
    let stats = s.stats().await;
    assert_eq!(stats.by_endpoint.get("graph:$batch"), Some(&2));
    assert!(
        stats
            .operations
            .get("graph:messageRules")
            .is_some_and(|&n| n >= 5)
    );
}

#[tokio::test]
async fn batch_sub_requests_are_throttled_one_by_one() {
    let args = SimArgs {
        faults: m365_sim::FaultArgs {
            tenant_concurrency: 2,
            retry_after_secs: 3,
            ..Default::default()
        },
        ..small_args()
    };
    let s = start(args).await;
    let t = s.readable_tenant().await;
    let token = s.token(&t.tenant_id, GRAPH).await;
    let reqs: Vec<Value> = (0..6)
        .map(|i| json!({"id": format!("r{i}"), "method": "GET", "url": "/domains"}))
        .collect();
    let a = s
        .graph(
            Method::POST,
            "/v1.0/$batch",
            &token,
            Some(json!({"requests": reqs})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "the batch itself succeeds");
    let responses = a.json["responses"].as_array().expect("responses").clone();
    let ok = responses.iter().filter(|r| r["status"] == 200).count();
    let throttled: Vec<&Value> = responses.iter().filter(|r| r["status"] == 429).collect();
    assert_eq!(ok, 2);
    assert_eq!(throttled.len(), 4);
    for r in throttled {
        assert_eq!(r["headers"]["Retry-After"], "3");
        assert_eq!(r["body"]["error"]["code"], "ApplicationThrottled");
        assert_eq!(
            r["body"]["error"]["message"],
            "Application is over its MailboxConcurrency limit."
        );
    }
}

#[tokio::test]
async fn unknown_graph_paths_are_bad_requests() {
    let s = start(small_args()).await;
    let t = s.readable_tenant().await;
    let token = s.token(&t.tenant_id, GRAPH).await;
    let a = s.graph_get("/v1.0/nothingHere", &token).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(
        a.json["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nothingHere"))
    );
}
