//! Faults appear when switched on, and the per-tenant ones are fixed by the seed.

mod common;

use std::time::{Duration, Instant};

use common::{EXO, GRAPH, small_args, start};
use m365_sim::{FaultArgs, SimArgs};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn with(faults: FaultArgs) -> SimArgs {
    SimArgs {
        faults,
        ..small_args()
    }
}

#[tokio::test]
async fn latency_delays_each_call() {
    let s = start(with(FaultArgs {
        latency_ms: 150,
        ..Default::default()
    }))
    .await;
    let t = s.readable_tenant().await;
    let token = s.token(&t.tenant_id, EXO).await;
    let started = Instant::now();
    let a = s
        .exo(&t.tenant_id, &token, "Get-AcceptedDomain", json!({}))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn tenant_concurrency_limit_answers_429_with_retry_after() {
    let s = start(with(FaultArgs {
        latency_ms: 400,
        tenant_concurrency: 1,
        retry_after_secs: 2,
        ..Default::default()
    }))
    .await;
    let t = s.readable_tenant().await;
    let token = s.token(&t.tenant_id, EXO).await;
    let (a, b, c) = tokio::join!(
        s.exo(&t.tenant_id, &token, "Get-AcceptedDomain", json!({})),
        s.exo(&t.tenant_id, &token, "Get-AcceptedDomain", json!({})),
        s.exo(&t.tenant_id, &token, "Get-AcceptedDomain", json!({})),
    );
    let statuses = [a.status, b.status, c.status];
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
    let throttled = [&a, &b, &c]
        .into_iter()
        .find(|x| x.status == StatusCode::TOO_MANY_REQUESTS)
        .expect("a 429");
    assert_eq!(
        throttled
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("2")
    );
    let stats = s.stats().await;
    assert_eq!(stats.throttled, 2);
    let mine = &stats.by_tenant[&t.tenant_id];
    assert_eq!(mine.throttled, 2);
    assert!(
        mine.max_concurrency >= 2,
        "the concurrency the client attempted: {}",
        mine.max_concurrency
    );
}

#[tokio::test]
async fn a_throttled_exchange_batch_has_429_sub_responses() {
    let s = start(with(FaultArgs {
        latency_ms: 400,
        tenant_concurrency: 1,
        ..Default::default()
    }))
    .await;
    let t = s.readable_tenant().await;
    let token = s.token(&t.tenant_id, EXO).await;
    let batch = json!({"requests": [
        {"id": "a", "method": "POST", "url": "InvokeCommand", "body": {"CmdletInput": {"CmdletName": "Get-AcceptedDomain", "Parameters": {}}}},
        {"id": "b", "method": "POST", "url": "InvokeCommand", "body": {"CmdletInput": {"CmdletName": "Get-RemoteDomain", "Parameters": {}}}}
    ]});
    let url = s.url(&format!("/adminapi/beta/{}/$batch", t.tenant_id));
    let (x, y) = tokio::join!(
        s.post(&url, &token, &batch, &[]),
        s.post(&url, &token, &batch, &[])
    );
    let throttled = [&x, &y]
        .into_iter()
        .find(|r| r.json["responses"][0]["status"] == 429)
        .expect("a throttled batch");
    assert_eq!(throttled.status, StatusCode::OK, "the batch itself is 200");
    for r in throttled.json["responses"].as_array().expect("responses") {
        assert_eq!(r["status"], 429);
        assert_eq!(
            r["headers"]["retry-after"], "1",
            "lower-case header key inside a batch"
        );
    }
    let served = [&x, &y]
        .into_iter()
        .find(|r| r.json["responses"][0]["status"] == 200)
        .expect("the other batch ran");
    assert_eq!(served.json["responses"][1]["status"], 200);
}

#[tokio::test]
async fn error_rate_gives_503_or_504_on_both_apis() {
    let s = start(with(FaultArgs {
        error_rate: 1.0,
        ..Default::default()
    }))
    .await;
    let t = s.readable_tenant().await;
    let exo = s.token(&t.tenant_id, EXO).await;
    let graph = s.token(&t.tenant_id, GRAPH).await;
    let a = s
        .exo(&t.tenant_id, &exo, "Get-AcceptedDomain", json!({}))
        .await;
    assert!([503, 504].contains(&a.status.as_u16()), "{}", a.status);
    let b = s.graph_get("/v1.0/domains", &graph).await;
    assert!([503, 504].contains(&b.status.as_u16()), "{}", b.status);
    assert!(b.json["error"]["code"].is_string());
    let stats = s.stats().await;
    assert_eq!(stats.errors_injected.get("server_error"), Some(&2));
}

#[tokio::test]
async fn revoked_tokens_are_refused_on_use() {
    let s = start(with(FaultArgs {
        token_expiry_rate: 1.0,
        ..Default::default()
    }))
    .await;
    let t = s.readable_tenant().await;
    let token = s.token(&t.tenant_id, EXO).await;
    let a = s
        .exo(&t.tenant_id, &token, "Get-AcceptedDomain", json!({}))
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let graph = s.token(&t.tenant_id, GRAPH).await;
    let b = s.graph_get("/v1.0/domains", &graph).await;
    assert_eq!(b.status, StatusCode::UNAUTHORIZED);
    assert_eq!(b.json["error"]["code"], "InvalidAuthenticationToken");
    assert_eq!(
        s.stats().await.errors_injected.get("token_revoked"),
        Some(&2)
    );
}

#[tokio::test]
async fn tenants_without_consent_fail_at_the_token_endpoint() {
    let args = SimArgs {
        tenants: 10,
        faults: FaultArgs {
            no_consent_rate: 0.3,
            ..Default::default()
        },
        ..small_args()
    };
    let s = start(args.clone()).await;
    let tenants = s.tenants().await;
    let missing: Vec<_> = tenants.iter().filter(|t| t.consent_missing).collect();
    assert_eq!(missing.len(), 3);
    let mut codes = Vec::new();
    for t in &missing {
        let a = s
            .token_form(
                &t.tenant_id,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", m365_sim::DEFAULT_CLIENT_ID),
                    ("client_secret", m365_sim::DEFAULT_CLIENT_SECRET),
                    ("scope", GRAPH),
                ],
            )
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        let code = a.json["error_codes"][0].as_u64().expect("code");
        assert_eq!(Some(code as u32), t.consent_error);
        codes.push(code);
    }
    assert!(
        codes.contains(&65001) && codes.contains(&700016),
        "{codes:?}"
    );
    for t in tenants.iter().filter(|t| !t.consent_missing) {
        s.token(&t.tenant_id, GRAPH).await;
    }
    // Same seed, same tenants flagged.
    let again = start(args).await;
    let flagged = |v: &[m365_sim::TenantInfo]| {
        v.iter()
            .filter(|t| t.consent_missing)
            .map(|t| t.tenant_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(flagged(&again.tenants().await), flagged(&tenants));
}

#[tokio::test]
async fn tenants_without_exchange_role_get_403_but_graph_works() {
    let s = start(SimArgs {
        tenants: 10,
        faults: FaultArgs {
            no_role_rate: 0.2,
            ..Default::default()
        },
        ..small_args()
    })
    .await;
    let tenants = s.tenants().await;
    let no_role: Vec<_> = tenants.iter().filter(|t| t.exchange_role_missing).collect();
    assert_eq!(no_role.len(), 2);
    let t = no_role[0];
    let token = s.token(&t.tenant_id, EXO).await;
    let a = s.exo(&t.tenant_id, &token, "Get-Mailbox", json!({})).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(
        serde_json::from_slice::<Value>(&a.bytes).is_err(),
        "not JSON"
    );
    let graph = s.token(&t.tenant_id, GRAPH).await;
    assert_eq!(
        s.graph_get("/v1.0/domains", &graph).await.status,
        StatusCode::OK
    );
    let fine = tenants
        .iter()
        .find(|t| !t.exchange_role_missing)
        .expect("a readable tenant");
    let tok = s.token(&fine.tenant_id, EXO).await;
    assert_eq!(
        s.exo(&fine.tenant_id, &tok, "Get-Mailbox", json!({}))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn nextlink_calls_can_be_answered_pagination_expired() {
    let s = start(with(FaultArgs {
        pagination_expired_rate: 1.0,
        ..Default::default()
    }))
    .await;
    let t = s.readable_tenant().await;
    let token = s.token(&t.tenant_id, EXO).await;
    let body = json!({"CmdletInput": {"CmdletName": "Get-Mailbox", "Parameters": {}}});
    let first = s
        .post(
            &s.invoke_url(&t.tenant_id),
            &token,
            &body,
            &[("Prefer", "odata.maxpagesize=5")],
        )
        .await;
    assert_eq!(
        first.status,
        StatusCode::OK,
        "the first page is not a nextLink call"
    );
    let next = first.json["@odata.nextLink"]
        .as_str()
        .expect("nextLink")
        .to_string();
    let a = s
        .post(&next, &token, &body, &[("Prefer", "odata.maxpagesize=5")])
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(
        a.text()
            .contains("Expired or Invalid pagination request. Default Expiry time is 00:30:00")
    );
}

#[tokio::test]
async fn malformed_rate_cuts_json_bodies() {
    let s = start(with(FaultArgs {
        malformed_rate: 1.0,
        ..Default::default()
    }))
    .await;
    let t = s.readable_tenant().await;
    let token = s.token(&t.tenant_id, EXO).await;
    let a = s
        .exo(&t.tenant_id, &token, "Get-AcceptedDomain", json!({}))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        serde_json::from_slice::<Value>(&a.bytes).is_err(),
        "malformed: {}",
        a.text()
    );
    assert_eq!(
        s.stats().await.errors_injected.get("malformed_json"),
        Some(&1)
    );
}

#[tokio::test]
async fn stats_count_calls_and_reset() {
    let s = start(small_args()).await;
    let t = s.readable_tenant().await;
    let token = s.token(&t.tenant_id, EXO).await;
    s.exo(&t.tenant_id, &token, "Get-Mailbox", json!({})).await;
    s.exo(&t.tenant_id, &token, "Get-Mailbox", json!({})).await;
    let stats = s.stats().await;
    assert_eq!(stats.by_endpoint.get("token"), Some(&1));
    assert_eq!(stats.by_endpoint.get("exo:Get-Mailbox"), Some(&2));
    assert_eq!(stats.by_tenant[&t.tenant_id].calls, 3);
    assert_eq!(stats.by_tenant[&t.tenant_id].max_concurrency, 1);
    assert_eq!(stats.total_calls, 3);
    let r = s
        .http
        .post(s.url("/_sim/stats/reset"))
        .send()
        .await
        .expect("reset");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let after = s.stats().await;
    assert_eq!(after.total_calls, 0);
    assert!(after.by_endpoint.is_empty() && after.by_tenant.is_empty());
    assert_eq!(s.sim.stats(), after, "the in-process view matches");
}

#[tokio::test]
async fn faults_are_off_by_default() {
    let s = start(small_args()).await;
    let tenants = s.tenants().await;
    assert!(
        tenants
            .iter()
            .all(|t| !t.consent_missing && !t.exchange_role_missing)
    );
    for t in &tenants {
        let token = s.token(&t.tenant_id, EXO).await;
        let a = s
            .exo(&t.tenant_id, &token, "Get-AcceptedDomain", json!({}))
            .await;
        assert_eq!(a.status, StatusCode::OK);
        assert!(serde_json::from_slice::<Value>(&a.bytes).is_ok());
    }
    assert!(s.stats().await.errors_injected.is_empty());
}
