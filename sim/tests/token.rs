//! The token endpoint: grants, error bodies, and tokens bound to their tenant and
//! resource.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{EXO, GRAPH, small_args, start};
use m365_sim::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PARTNER_TENANT_ID, DEFAULT_REFRESH_TOKEN,
};
use reqwest::StatusCode;
use serde_json::json;

fn creds(scope: &str) -> Vec<(&str, &str)> {
    vec![
        ("grant_type", "client_credentials"),
        ("client_id", DEFAULT_CLIENT_ID),
        ("client_secret", DEFAULT_CLIENT_SECRET),
        ("scope", scope),
    ]
}

/// Asserts the AADSTS error shape of m365-api.md §2 and returns the body.
fn assert_aad_error(a: &common::Answer, error: &str, code: u64) {
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
    let j = &a.json;
    assert_eq!(j["error"], error, "{}", a.text());
    assert_eq!(j["error_codes"], json!([code]));
    let desc = j["error_description"].as_str().expect("error_description");
    assert!(desc.starts_with(&format!("AADSTS{code}: ")), "{desc}");
    assert!(desc.contains("\r\nTrace ID: "), "{desc}");
    for k in ["timestamp", "trace_id", "correlation_id"] {
        assert!(j[k].as_str().is_some_and(|s| !s.is_empty()), "{k} missing");
    }
    assert!(
        j["error_uri"]
            .as_str()
            .is_some_and(|u| u.ends_with(&code.to_string()))
    );
}

#[tokio::test]
async fn client_credentials_returns_a_bearer_token() {
    let s = start(small_args()).await;
    let t = s.readable_tenant().await;
    let a = s.token_form(&t.tenant_id, &creds(GRAPH)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json["token_type"], "Bearer");
    assert_eq!(a.json["expires_in"], 3599);
    assert_eq!(a.json["ext_expires_in"], 3599);
    assert!(
        a.json["access_token"]
            .as_str()
            .is_some_and(|t| t.len() > 20)
    );
    assert!(
        a.json.get("refresh_token").is_none(),
        "client credentials never return a refresh token"
    );
}

#[tokio::test]
async fn wrong_secret_is_invalid_client_7000215() {
    let s = start(small_args()).await;
    let t = s.readable_tenant().await;
    let mut form = creds(GRAPH);
    form[2] = ("client_secret", "not-the-secret");
    let a = s.token_form(&t.tenant_id, &form).await;
    assert_aad_error(&a, "invalid_client", 7000215);
}

#[tokio::test]
async fn unknown_tenant_is_90002() {
    let s = start(small_args()).await;
    let a = s
        .token_form("00000000-1111-2222-3333-444444444444", &creds(GRAPH))
        .await;
    assert_aad_error(&a, "invalid_request", 90002);
}

#[tokio::test]
async fn unknown_client_is_700016() {
    let s = start(small_args()).await;
    let t = s.readable_tenant().await;
    let mut form = creds(GRAPH);
    form[1] = ("client_id", "11111111-2222-3333-4444-555555555555");
    let a = s.token_form(&t.tenant_id, &form).await;
    assert_aad_error(&a, "unauthorized_client", 700016);
}

#[tokio::test]
async fn two_resources_in_one_request_are_refused() {
    let s = start(small_args()).await;
    let t = s.readable_tenant().await;
    let both = format!("{GRAPH} {EXO}");
    let a = s.token_form(&t.tenant_id, &creds(&both)).await;
    assert_aad_error(&a, "invalid_scope", 700022);
    let a = s.token_form(&t.tenant_id, &creds("")).await;
    assert_aad_error(&a, "invalid_scope", 70011);
}

#[tokio::test]
async fn missing_client_authentication_is_refused() {
    let s = start(small_args()).await;
    let t = s.readable_tenant().await;
    let a = s
        .token_form(
            &t.tenant_id,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", DEFAULT_CLIENT_ID),
                ("scope", GRAPH),
            ],
        )
        .await;
    assert_aad_error(&a, "invalid_client", 7000218);
}

#[tokio::test]
async fn tenant_domain_works_as_the_token_path_and_exchange_path() {
    let s = start(small_args()).await;
    let t = s.readable_tenant().await;
    let token = s.token(&t.initial_domain, EXO).await;
    let a = s
        .exo(&t.initial_domain, &token, "Get-AcceptedDomain", json!({}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let a = s
        .exo(&t.tenant_id, &token, "Get-AcceptedDomain", json!({}))
        .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "the GUID path names the same tenant"
    );
}

fn jwt(claims: serde_json::Value) -> String {
    let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"PS256","typ":"JWT","x5t#S256":"abc"}"#);
    let p = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{h}.{p}.c2lnbmF0dXJl")
}

#[tokio::test]
async fn certificate_assertion_is_checked_for_issuer_and_audience() {
    let s = start(small_args()).await;
    let t = s.readable_tenant().await;
    let aud = format!(
        "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
        t.tenant_id
    );
    let exp = chrono::Utc::now().timestamp() + 120;
    let form = |assertion: String| {
        vec![
            ("grant_type", "client_credentials".to_string()),
            ("client_id", DEFAULT_CLIENT_ID.to_string()),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_string(),
            ),
            ("client_assertion", assertion),
            ("scope", EXO.to_string()),
        ]
    };
    let call = |f: Vec<(&'static str, String)>| {
        let s = &s;
        let t = &t;
        async move {
            let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
            s.token_form(&t.tenant_id, &f).await
        }
    };
    let good = jwt(
        json!({"iss": DEFAULT_CLIENT_ID, "sub": DEFAULT_CLIENT_ID, "aud": aud, "exp": exp, "jti": "1"}),
    );
    let a = call(form(good)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let wrong_iss =
        jwt(json!({"iss": "someone-else", "sub": DEFAULT_CLIENT_ID, "aud": aud, "exp": exp}));
    assert_aad_error(&call(form(wrong_iss)).await, "invalid_client", 700021);
    let other_aud = jwt(json!({"iss": DEFAULT_CLIENT_ID, "sub": DEFAULT_CLIENT_ID,
        "aud": "https://login.microsoftonline.com/99999999-0000-0000-0000-000000000000/oauth2/v2.0/token", "exp": exp}));
    assert_aad_error(&call(form(other_aud)).await, "invalid_client", 50013);
    assert_aad_error(
        &call(form("not.a-jwt".to_string())).await,
        "invalid_client",
        50027,
    );
}

#[tokio::test]
async fn refresh_grant_returns_a_new_refresh_token_that_works() {
    let s = start(small_args()).await;
    let t = s.readable_tenant().await;
    let refresh = |rt: String| {
        let s = &s;
        let t = &t;
        async move {
            s.token_form(
                &t.tenant_id,
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", DEFAULT_CLIENT_ID),
                    ("client_secret", DEFAULT_CLIENT_SECRET),
                    ("refresh_token", &rt),
                    ("scope", &format!("{EXO} offline_access")),
                ],
            )
            .await
        }
    };
    let a = refresh(DEFAULT_REFRESH_TOKEN.to_string()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let new_rt = a.json["refresh_token"]
        .as_str()
        .expect("a new refresh token")
        .to_string();
    assert_ne!(new_rt, DEFAULT_REFRESH_TOKEN);
    assert!(a.json["access_token"].is_string());
    let b = refresh(new_rt).await;
    assert_eq!(
        b.status,
        StatusCode::OK,
        "the returned refresh token is accepted: {}",
        b.text()
    );
    assert_aad_error(
        &refresh("forged".to_string()).await,
        "invalid_grant",
        9002313,
    );
}

#[tokio::test]
async fn basic_auth_client_credentials_are_accepted() {
    let s = start(small_args()).await;
    let t = s.readable_tenant().await;
    let resp = s
        .http
        .post(s.url(&format!("/{}/oauth2/v2.0/token", t.tenant_id)))
        .basic_auth(DEFAULT_CLIENT_ID, Some(DEFAULT_CLIENT_SECRET))
        .form(&[("grant_type", "client_credentials"), ("scope", GRAPH)])
        .send()
        .await
        .expect("token");
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_graph_token_is_refused_by_exchange_and_the_reverse() {
    let s = start(small_args()).await;
    let t = s.readable_tenant().await;
    let graph = s.token(&t.tenant_id, GRAPH).await;
    let exo = s.token(&t.tenant_id, EXO).await;
    let a = s
        .exo(&t.tenant_id, &graph, "Get-AcceptedDomain", json!({}))
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.headers.contains_key("www-authenticate"));
    let g = s.graph_get("/v1.0/domains", &exo).await;
    assert_eq!(g.status, StatusCode::UNAUTHORIZED);
    assert_eq!(g.json["error"]["code"], "InvalidAuthenticationToken");
    assert!(g.json["error"]["innerError"]["request-id"].is_string());
}

#[tokio::test]
async fn a_token_of_one_tenant_is_refused_on_another_tenants_path() {
    let s = start(small_args()).await;
    let tenants = s.tenants().await;
    let readable: Vec<_> = tenants
        .iter()
        .filter(|t| !t.consent_missing && !t.exchange_role_missing)
        .collect();
    let (a, b) = (readable[0], readable[1]);
    let token_a = s.token(&a.tenant_id, EXO).await;
    let r = s
        .exo(&b.tenant_id, &token_a, "Get-AcceptedDomain", json!({}))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let ok = s
        .exo(&a.tenant_id, &token_a, "Get-AcceptedDomain", json!({}))
        .await;
    assert_eq!(ok.status, StatusCode::OK);
}

#[tokio::test]
async fn missing_forged_or_foreign_tokens_are_refused() {
    let s = start(small_args()).await;
    let other = start(small_args()).await;
    let t = s.readable_tenant().await;
    let foreign = other.token(&t.tenant_id, GRAPH).await;
    let a = s.graph_get("/v1.0/domains", &foreign).await;
    assert_eq!(
        a.status,
        StatusCode::UNAUTHORIZED,
        "a token signed by another sim instance"
    );
    let a = s.graph_get("/v1.0/domains", "abc.def.ghi").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let resp = s
        .http
        .get(s.url("/v1.0/domains"))
        .send()
        .await
        .expect("call");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn partner_token_reads_gdap_and_customer_token_does_not() {
    let s = start(small_args()).await;
    let partner = s.token(DEFAULT_PARTNER_TENANT_ID, GRAPH).await;
    let a = s
        .graph_get(
            "/v1.0/tenantRelationships/delegatedAdminCustomers",
            &partner,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let t = s.readable_tenant().await;
    let customer = s.token(&t.tenant_id, GRAPH).await;
    let b = s
        .graph_get(
            "/v1.0/tenantRelationships/delegatedAdminCustomers",
            &customer,
        )
        .await;
    assert_eq!(b.status, StatusCode::FORBIDDEN);
    // The partner has an Exchange token too, but no Exchange organisation of its own.
    let pexo = s.token(DEFAULT_PARTNER_TENANT_ID, EXO).await;
    let c = s.exo(&t.tenant_id, &pexo, "Get-Mailbox", json!({})).await;
    assert_eq!(
        c.status,
        StatusCode::UNAUTHORIZED,
        "a partner token does not open a customer's Exchange"
    );
}
