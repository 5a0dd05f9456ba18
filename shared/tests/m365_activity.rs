//! The Management Activity API over real HTTP: the simulator's `Audit.Exchange`
//! feed (records generated from its own changes, a configurable delay, paging by
//! `NextPageUri`, hostile content, feed faults) read by the client
//! (`M365Client::start_activity_subscription` / `read_activity`).

use std::time::Duration;

use chrono::Utc;
use fwdwatch_shared::config::{M365Settings, Settings};
use fwdwatch_shared::contracts::{ErrorKind, Signal};
use fwdwatch_shared::forwards::audit::{Change, classify, decode_blob};
use fwdwatch_shared::m365::{M365Client, REMEDY_ACTIVITY_FEED, RetryPolicy};
use m365_sim::{RunningSim, SimArgs};
use secrecy::SecretString;
use serde_json::{Value, json};

async fn start(args: SimArgs) -> RunningSim {
    m365_sim::start(args, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("simulator starts")
}

fn settings(sim: &RunningSim) -> M365Settings {
    let mut s = Settings::load_from(None, Vec::<(String, String)>::new())
        .expect("defaults")
        .m365;
    s.login_url = sim.base_url.clone();
    s.graph_url = sim.base_url.clone();
    s.exo_url = sim.base_url.clone();
    s.manage_url = sim.base_url.clone();
    s.client_id = sim.args().client_id.clone();
    s.client_secret = Some(SecretString::from(sim.args().client_secret.clone()));
    s.partner_tenant_id = sim.args().partner_tenant_id.clone();
    s
}

fn client(sim: &RunningSim) -> M365Client {
    M365Client::with_policy(
        &settings(sim),
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
        },
    )
    .expect("client")
}

/// A tenant and one of its mailboxes (from the simulator's truth).
fn tenant_and_mailbox(sim: &RunningSim) -> (String, String) {
    let e = sim
        .truth()
        .into_iter()
        .find(|e| e.mailbox.is_some())
        .expect("a mailbox forward in the fleet");
    (e.tenant_id, e.mailbox.expect("mailbox"))
}

async fn control(sim: &RunningSim, method: reqwest::Method, path: &str, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .request(method, format!("{}{path}", sim.base_url))
        .json(&body)
        .send()
        .await
        .expect("control call");
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    assert!(status.is_success(), "{path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

async fn plant_rule(sim: &RunningSim, tenant: &str, mailbox: &str, target: &str) -> String {
    let entry = control(
        sim,
        reqwest::Method::POST,
        "/_sim/forwards",
        json!({"tenant_id": tenant, "signal": "inbox_rule", "mailbox": mailbox,
               "targets": [target], "rule_name": "x", "actor": "attacker@evil.example",
               "client_ip": "198.51.100.23"}),
    )
    .await;
    entry["rule_id"].as_str().expect("rule id").to_owned()
}

fn window() -> (chrono::DateTime<Utc>, chrono::DateTime<Utc>) {
    let now = Utc::now();
    (
        now - chrono::Duration::minutes(10),
        now + chrono::Duration::minutes(1),
    )
}

#[tokio::test]
async fn changes_become_audit_records_paged_by_next_page_uri() {
    let sim = start(SimArgs {
        tenants: 3,
        mailboxes: 10,
        activity_page_size: 2,
        ..SimArgs::default()
    })
    .await;
    let (tenant, mailbox) = tenant_and_mailbox(&sim);
    let c = client(&sim);
    // Starting twice is fine (Microsoft answers AF20024 the second time).
    c.start_activity_subscription(&tenant)
        .await
        .expect("subscription starts");
    c.start_activity_subscription(&tenant)
        .await
        .expect("starting again is not an error");
    let rule = plant_rule(&sim, &tenant, &mailbox, "eve@evil.example").await;
    control(
        &sim,
        reqwest::Method::DELETE,
        "/_sim/forwards",
        json!({"tenant_id": tenant, "signal": "inbox_rule", "mailbox": mailbox, "rule_id": rule}),
    )
    .await;
    for n in 0..3 {
        plant_rule(&sim, &tenant, &mailbox, &format!("x{n}@evil.example")).await;
    }
    let (start, end) = window();
    let read = c
        .read_activity(&tenant, start, end)
        .await
        .expect("feed read");
    // Five blobs at two per page: three pages followed.
    assert_eq!(read.blobs.len(), 5, "{read:?}");
    assert!(read.unreadable.is_empty(), "{:?}", read.unreadable);
    assert!(
        sim.stats()
            .by_endpoint
            .get("activity:content")
            .copied()
            .unwrap_or(0)
            >= 3,
        "paged: {:?}",
        sim.stats().by_endpoint
    );
    let records: Vec<_> = read
        .blobs
        .iter()
        .flat_map(|b| decode_blob(&b.content_id, b.records.as_ref().expect("blob read")))
        .collect();
    let new = records
        .iter()
        .find(|r| r.parameter("ForwardTo") == Some("eve@evil.example"))
        .expect("the New-InboxRule record");
    assert_eq!(new.operation, "New-InboxRule");
    assert_eq!(new.actor, "attacker@evil.example");
    assert_eq!(new.client_ip, "198.51.100.23");
    assert!(new.created_at.is_some());
    assert_eq!(new.unreadable, None);
    assert_eq!(classify(new), Change::Forwarding(Signal::InboxRule));
    let removed = records
        .iter()
        .find(|r| r.operation == "Remove-InboxRule")
        .expect("the Remove-InboxRule record");
    assert_eq!(classify(removed), Change::Removal(Signal::InboxRule));
    // Another tenant's feed holds none of it.
    let other = sim
        .tenants()
        .into_iter()
        .find(|t| t.tenant_id != tenant)
        .expect("another tenant");
    c.start_activity_subscription(&other.tenant_id)
        .await
        .expect("subscription");
    let read = c
        .read_activity(&other.tenant_id, start, end)
        .await
        .expect("feed read");
    assert!(read.blobs.is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn records_wait_for_the_configured_delay() {
    let sim = start(SimArgs {
        tenants: 2,
        mailboxes: 10,
        activity_delay_secs: 2,
        ..SimArgs::default()
    })
    .await;
    let (tenant, mailbox) = tenant_and_mailbox(&sim);
    let c = client(&sim);
    c.start_activity_subscription(&tenant).await.expect("sub");
    plant_rule(&sim, &tenant, &mailbox, "eve@evil.example").await;
    let (start, _) = window();
    let end = Utc::now() + chrono::Duration::minutes(5);
    let early = c.read_activity(&tenant, start, end).await.expect("read");
    assert!(early.blobs.is_empty(), "not listed before the delay");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let late = c.read_activity(&tenant, start, end).await.expect("read");
    assert_eq!(late.blobs.len(), 1, "listed after the delay");
    sim.shutdown().await;
}

#[tokio::test]
async fn garbled_content_and_refusing_feeds_are_reported() {
    let sim = start(SimArgs {
        tenants: 3,
        mailboxes: 10,
        ..SimArgs::default()
    })
    .await;
    let tenants = sim.tenants();
    let (a, b) = (&tenants[0].tenant_id, &tenants[1].tenant_id);
    let c = client(&sim);
    c.start_activity_subscription(a).await.expect("sub");
    // A blob that is not JSON, and one whose records are hostile shapes.
    control(
        &sim,
        reqwest::Method::POST,
        "/_sim/activity/content",
        json!({"tenant_id": a, "content": "[{\"Id\":", "raw": true}),
    )
    .await;
    control(
        &sim,
        reqwest::Method::POST,
        "/_sim/activity/content",
        json!({"tenant_id": a, "content": [7, {"Operation": "New-InboxRule"}, {"Id": "ok", "Operation": "Set-Mailbox", "CreationTime": "2026-05-29T12:29:35", "Parameters": "ForwardingSmtpAddress"}]}),
    )
    .await;
    let (start, end) = window();
    let read = c.read_activity(a, start, end).await.expect("listing read");
    assert_eq!(read.blobs.len(), 2);
    let mut garbled = 0;
    let mut unreadable_records = 0;
    for blob in &read.blobs {
        match &blob.records {
            Err(e) => {
                assert_eq!(e.kind, ErrorKind::Malformed, "{e}");
                garbled += 1;
            }
            Ok(values) => {
                let records = decode_blob(&blob.content_id, values);
                assert_eq!(records.len(), 3, "every record kept");
                unreadable_records += records
                    .iter()
                    .filter(|r| classify(r) == Change::Unreadable)
                    .count();
            }
        }
    }
    assert_eq!(garbled, 1, "the cut blob is reported");
    assert_eq!(unreadable_records, 3, "hostile records are reported");
    // A feed that refuses the app: an error with the fix.
    control(
        &sim,
        reqwest::Method::POST,
        "/_sim/activity/fault",
        json!({"tenant_id": b, "fault": "forbidden"}),
    )
    .await;
    let e = c.start_activity_subscription(b).await.expect_err("refused");
    assert_eq!(e.kind, ErrorKind::Forbidden);
    assert_eq!(e.remedy.as_deref(), Some(REMEDY_ACTIVITY_FEED));
    // An Exchange token is not a Management API token.
    let token: Value = reqwest::Client::new()
        .post(format!("{}/{a}/oauth2/v2.0/token", sim.base_url))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", sim.args().client_id.as_str()),
            ("client_secret", sim.args().client_secret.as_str()),
            ("scope", "https://outlook.office365.com/.default"),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let status = reqwest::Client::new()
        .get(format!(
            "{}/api/v1.0/{a}/activity/feed/subscriptions/list",
            sim.base_url
        ))
        .bearer_auth(token["access_token"].as_str().unwrap_or_default())
        .send()
        .await
        .expect("list")
        .status();
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED);
    sim.shutdown().await;
}
