//! The Microsoft 365 client against the simulator over HTTP (`m365-sim`, started
//! in-process on port 0): the token grants, caching, consent and role failures,
//! paging, batching, concurrency caps, throttling and rule ids as the fleet
//! serves them. (`m365_client.rs` covers the cases a scripted stub does better.)

use std::collections::BTreeSet;
use std::time::Duration;

use fwdwatch_shared::config::{M365Settings, Settings};
use fwdwatch_shared::contracts::ErrorKind;
use fwdwatch_shared::m365::{
    Cmdlet, GraphRequest, M365Client, REMEDY_EXCHANGE_ROLE, RequestKind, Resource, RetryPolicy,
    rule_id_from,
};
use m365_sim::{RunningSim, SimArgs};
use secrecy::SecretString;

async fn start_sim(args: SimArgs) -> RunningSim {
    m365_sim::start(args, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("simulator starts")
}

fn small() -> SimArgs {
    SimArgs {
        tenants: 6,
        mailboxes: 40,
        ..Default::default()
    }
}

fn settings(sim: &RunningSim) -> M365Settings {
    let mut s = Settings::load_from(None, Vec::<(String, String)>::new())
        .expect("defaults")
        .m365;
    s.login_url = sim.base_url.clone();
    s.graph_url = sim.base_url.clone();
    s.exo_url = sim.base_url.clone();
    s.client_id = sim.args().client_id.clone();
    s.client_secret = Some(SecretString::from(sim.args().client_secret.clone()));
    s.partner_tenant_id = sim.args().partner_tenant_id.clone();
    s
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 6,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(200),
    }
}

fn readable_tenants(sim: &RunningSim) -> Vec<String> {
    sim.tenants()
        .into_iter()
        .filter(|t| !t.consent_missing && !t.exchange_role_missing)
        .map(|t| t.tenant_id)
        .collect()
}

/// One token per tenant and resource, however many calls; both grants work.
#[tokio::test]
async fn tokens_are_cached_and_the_refresh_token_grant_works() {
    let sim = start_sim(small()).await;
    let tenants = readable_tenants(&sim);
    let client = M365Client::with_policy(&settings(&sim), fast()).expect("client");
    let domains = Cmdlet::new("Get-AcceptedDomain");
    for _ in 0..3 {
        client.invoke(&tenants[0], &domains).await.expect("domains");
    }
    client.invoke(&tenants[1], &domains).await.expect("domains");
    assert_eq!(client.stats().requests_of(RequestKind::Token), 2);
    assert_eq!(sim.stats().by_endpoint.get("token"), Some(&2));
    assert_eq!(client.cached_tokens(), 2);

    // Secure Application Model: the refresh-token grant, rotating the refresh token.
    let mut s = settings(&sim);
    s.refresh_token = Some(SecretString::from(sim.args().refresh_token.clone()));
    let delegated = M365Client::with_policy(&s, fast()).expect("client");
    for t in &tenants[..3] {
        let rows = delegated
            .invoke(t, &domains)
            .await
            .expect("delegated token works");
        assert!(!rows.is_empty());
    }
    assert_eq!(delegated.stats().requests_of(RequestKind::Token), 3);
}

/// A tenant without consent is typed with its AADSTS code and the fix.
#[tokio::test]
async fn missing_consent_is_typed_with_the_aadsts_code() {
    let mut args = small();
    args.faults.no_consent_rate = 1.0;
    let sim = start_sim(args).await;
    let client = M365Client::with_policy(&settings(&sim), fast()).expect("client");
    let tenant = sim.tenants()[0].clone();
    let err = client
        .check_access(&tenant.tenant_id, Resource::Exchange)
        .await
        .expect_err("no consent");
    assert_eq!(err.kind, ErrorKind::ConsentMissing);
    let expected = format!("AADSTS{}", tenant.consent_error.expect("sim says which"));
    assert_eq!(err.code.as_deref(), Some(expected.as_str()));
    assert!(
        err.remedy
            .as_deref()
            .unwrap_or_default()
            .contains("consent"),
        "{err}"
    );
    assert!(!err.message.contains("Trace ID"));
    // Permanent: asked once, not retried.
    assert_eq!(client.stats().requests_of(RequestKind::Token), 1);
}

/// Without the Exchange role, Exchange answers 403 with a non-JSON body.
#[tokio::test]
async fn missing_exchange_role_is_forbidden_with_the_fix() {
    let mut args = small();
    args.faults.no_role_rate = 1.0;
    let sim = start_sim(args).await;
    let client = M365Client::with_policy(&settings(&sim), fast()).expect("client");
    let tenant = sim.tenants()[0].tenant_id.clone();
    let err = client
        .invoke(&tenant, &Cmdlet::new("Get-Mailbox"))
        .await
        .expect_err("forbidden");
    assert_eq!(err.kind, ErrorKind::Forbidden);
    assert_eq!(err.remedy.as_deref(), Some(REMEDY_EXCHANGE_ROLE));
    let results = client
        .invoke_batch(
            &tenant,
            &[
                Cmdlet::new("Get-Mailbox"),
                Cmdlet::new("Get-AcceptedDomain"),
            ],
        )
        .await;
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().is_err_and(|e| e.kind == ErrorKind::Forbidden))
    );
}

/// Exchange's "couldn't be found" 400 is a typed NotFound with its real message.
#[tokio::test]
async fn exchange_not_found_carries_the_real_message() {
    let sim = start_sim(small()).await;
    let tenant = readable_tenants(&sim).remove(0);
    let client = M365Client::with_policy(&settings(&sim), fast()).expect("client");
    let err = client
        .invoke(
            &tenant,
            &Cmdlet::new("Get-Recipient").param("Identity", "nobody-at-all"),
        )
        .await
        .expect_err("no such recipient");
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    assert!(err.message.contains("couldn't be found"), "{}", err.message);
    assert!(
        !err.message.contains('|'),
        "type prefix stripped: {}",
        err.message
    );
}

/// Small pages are followed to the end by re-POSTing; `$select` trims the rows.
#[tokio::test]
async fn paging_reads_every_row_once() {
    let sim = start_sim(small()).await;
    let tenant = readable_tenants(&sim).remove(0);
    let client = M365Client::with_policy(&settings(&sim), fast()).expect("client");
    let cmdlet = Cmdlet::new("Get-Mailbox")
        .param("ResultSize", "Unlimited")
        .select(&["PrimarySmtpAddress", "ForwardingSmtpAddress"])
        .page_size(7);
    let rows = client.invoke(&tenant, &cmdlet).await.expect("all pages");
    assert_eq!(rows.len(), 40);
    let unique: BTreeSet<String> = rows
        .iter()
        .filter_map(|r| r["PrimarySmtpAddress"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(unique.len(), 40, "no row twice");
    assert!(
        rows.iter().all(|r| r.get("DisplayName").is_none()),
        "only the selected fields"
    );
    assert_eq!(
        client.stats().requests_of(RequestKind::ExoCommand),
        6,
        "ceil(40 / 7) pages"
    );
}

/// Every nextLink expiring: the listing restarts a bounded number of times and
/// then says why.
#[tokio::test]
async fn always_expiring_links_end_in_a_clear_error() {
    let mut args = small();
    args.faults.pagination_expired_rate = 1.0;
    let sim = start_sim(args).await;
    let tenant = readable_tenants(&sim).remove(0);
    let client = M365Client::with_policy(&settings(&sim), fast()).expect("client");
    let cmdlet = Cmdlet::new("Get-Mailbox")
        .param("ResultSize", "Unlimited")
        .page_size(10);
    let err = client
        .invoke(&tenant, &cmdlet)
        .await
        .expect_err("never completes");
    assert_eq!(err.kind, ErrorKind::Rejected);
    assert!(err.message.contains("pagination"), "{}", err.message);
    assert_eq!(client.stats().pagination_restarts, 2);
}

/// Inbox rules of many mailboxes go ten to a batch; rule ids above 2^63 survive.
#[tokio::test]
async fn inbox_rules_in_batches_keep_exact_rule_ids() {
    let sim = start_sim(small()).await;
    let tenants = readable_tenants(&sim);
    let client = M365Client::with_policy(&settings(&sim), fast()).expect("client");
    let truth = sim.truth();
    let mut checked = 0;
    for tenant in &tenants {
        let mailboxes = client
            .invoke(
                tenant,
                &Cmdlet::new("Get-Mailbox")
                    .param("ResultSize", "Unlimited")
                    .select(&["PrimarySmtpAddress"]),
            )
            .await
            .expect("mailboxes");
        let cmdlets: Vec<Cmdlet> = mailboxes
            .iter()
            .filter_map(|m| m["PrimarySmtpAddress"].as_str())
            .map(|m| {
                Cmdlet::new("Get-InboxRule")
                    .param("Mailbox", m)
                    .param("IncludeHidden", true)
                    .anchor(m)
            })
            .collect();
        let before = client.stats().requests_of(RequestKind::ExoBatch);
        let results = client.invoke_batch(tenant, &cmdlets).await;
        assert_eq!(
            client.stats().requests_of(RequestKind::ExoBatch) - before,
            cmdlets.len().div_ceil(10) as u64
        );
        let ids: BTreeSet<String> = results
            .into_iter()
            .flat_map(|r| r.expect("rules"))
            .filter_map(|row| row.get("RuleIdentity").and_then(rule_id_from))
            .collect();
        for entry in truth.iter().filter(|e| &e.tenant_id == tenant) {
            if let (m365_sim::Signal::InboxRule, Some(id)) = (entry.signal, &entry.rule_id) {
                assert!(ids.contains(id), "rule {id} of {tenant} read exactly");
                checked += 1;
            }
        }
        assert!(
            ids.iter()
                .any(|id| id.parse::<u64>().is_ok_and(|v| v > 1u64 << 63)),
            "some ids exceed 2^63"
        );
    }
    assert!(checked > 0, "the fleet has forwarding inbox rules");
}

/// The per-tenant cap holds however many calls are made at once, and the
/// simulator's own limit (429 + Retry-After) is ridden out.
#[tokio::test]
async fn concurrency_is_capped_per_tenant_and_throttling_is_ridden_out() {
    let mut args = small();
    args.faults.latency_ms = 20;
    let sim = start_sim(args).await;
    let tenant = readable_tenants(&sim).remove(0);
    let mut s = settings(&sim);
    s.concurrency_per_tenant = 2;
    let client = M365Client::with_policy(&s, fast()).expect("client");
    let cmdlet = Cmdlet::new("Get-AcceptedDomain");
    let calls = (0..12).map(|_| client.invoke(&tenant, &cmdlet));
    for r in futures::future::join_all(calls).await {
        r.expect("ok");
    }
    let seen = sim.stats().by_tenant[&tenant].max_concurrency;
    assert_eq!(seen, 2, "never more than the cap, and the cap is used");

    // A tenant that allows one call at a time, and two clients that each allow
    // three: the simulator answers 429 with Retry-After, the clients wait and win.
    let mut args = small();
    args.faults.latency_ms = 20;
    args.faults.tenant_concurrency = 1;
    args.faults.retry_after_secs = 1;
    let sim = start_sim(args).await;
    let tenant = readable_tenants(&sim).remove(0);
    let mut s = settings(&sim);
    s.concurrency_per_tenant = 3;
    let a = M365Client::with_policy(&s, fast()).expect("client");
    let b = M365Client::with_policy(&s, fast()).expect("client");
    let calls = (0..4).flat_map(|_| [a.invoke(&tenant, &cmdlet), b.invoke(&tenant, &cmdlet)]);
    for r in futures::future::join_all(calls).await {
        r.expect("eventually ok");
    }
    assert!(
        a.stats().throttled + b.stats().throttled > 0,
        "the limit was met"
    );
    assert!(sim.stats().throttled > 0);
}

/// Graph: `$batch` of 20 with per-request 429s retried after their `Retry-After`,
/// answers matched back out of order, and paging to the end of a collection.
#[tokio::test]
async fn graph_batches_and_pages() {
    let mut args = small();
    args.faults.latency_ms = 10;
    args.faults.tenant_concurrency = 4; // each Graph sub-request takes its own slot
    args.faults.retry_after_secs = 1;
    let sim = start_sim(args).await;
    let tenant = readable_tenants(&sim).remove(0);
    let client = M365Client::with_policy(&settings(&sim), fast()).expect("client");

    let users = client
        .graph_list(&tenant, "/users?$select=id,userPrincipalName&$top=7")
        .await
        .expect("all users");
    assert!(users.len() >= 40, "{} users", users.len());
    let ids: BTreeSet<&str> = users.iter().filter_map(|u| u["id"].as_str()).collect();
    assert_eq!(ids.len(), users.len(), "no user twice");
    assert!(
        client.stats().requests_of(RequestKind::GraphGet) >= 6,
        "paged by 7"
    );

    let requests: Vec<GraphRequest> = users
        .iter()
        .take(25)
        .map(|u| GraphRequest::get(format!("/users/{}", u["id"].as_str().unwrap_or_default())))
        .collect();
    let answers = client.graph_batch(&tenant, &requests).await;
    assert_eq!(answers.len(), 25);
    for (request, answer) in requests.iter().zip(&answers) {
        let body = answer
            .as_ref()
            .expect("every sub-request succeeds in the end");
        assert!(
            request.url.ends_with(body["id"].as_str().expect("id")),
            "answers in request order"
        );
    }
    assert!(client.stats().requests_of(RequestKind::GraphBatch) >= 2);
    assert!(
        client.stats().throttled > 0,
        "sub-requests over the tenant's limit were throttled"
    );
}
