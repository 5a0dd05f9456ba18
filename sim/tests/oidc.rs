//! Entra ID sign-in (OpenID Connect, authorization code + PKCE) as the console
//! uses it: discovery, the account picker, codes bound to their client, redirect
//! URI and PKCE challenge, single use, and RS256 ID tokens the JWKS verifies.

mod common;

use std::collections::BTreeMap;

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{small_args, start};
use m365_sim::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PARTNER_TENANT_ID, OPERATOR_GROUP_ID,
    OPERATOR_ROLE,
};
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Authorize parameters, in order.
type Params = Vec<(&'static str, String)>;

const REDIRECT: &str = "http://127.0.0.1:8080/console/auth/callback";
const VERIFIER: &str = "a-verifier-of-at-least-forty-three-characters-0123456789";

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn authorize_params(login_hint: Option<&str>) -> Params {
    let mut params = vec![
        ("client_id", DEFAULT_CLIENT_ID.to_owned()),
        ("response_type", "code".to_owned()),
        ("redirect_uri", REDIRECT.to_owned()),
        ("scope", "openid profile".to_owned()),
        ("state", "st4te".to_owned()),
        ("nonce", "n0nce".to_owned()),
        ("code_challenge", challenge(VERIFIER)),
        ("code_challenge_method", "S256".to_owned()),
    ];
    if let Some(hint) = login_hint {
        params.push(("login_hint", hint.to_owned()));
    }
    params
}

fn query_of(location: &str) -> BTreeMap<String, String> {
    serde_urlencoded::from_str(location.split_once('?').map_or("", |(_, q)| q)).expect("query")
}

async fn authorize(
    base: &str,
    params: &[(&'static str, String)],
) -> (StatusCode, Option<String>, String) {
    let response = no_redirects()
        .get(format!(
            "{base}/{DEFAULT_PARTNER_TENANT_ID}/oauth2/v2.0/authorize?{}",
            serde_urlencoded::to_string(params).expect("query")
        ))
        .send()
        .await
        .expect("authorize");
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .map(str::to_owned);
    (status, location, response.text().await.unwrap_or_default())
}

async fn redeem(base: &str, code: &str, verifier: &str, redirect: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!(
            "{base}/{DEFAULT_PARTNER_TENANT_ID}/oauth2/v2.0/token"
        ))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", DEFAULT_CLIENT_ID),
            ("client_secret", DEFAULT_CLIENT_SECRET),
            ("code", code),
            ("redirect_uri", redirect),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .expect("token");
    (
        response.status(),
        response.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_person_signs_in_with_pkce_and_gets_a_verifiable_id_token() {
    let s = start(small_args()).await;
    let base = s.sim.base_url.clone();
    let dana = s
        .sim
        .sign_in_users()
        .into_iter()
        .find(|u| u.groups.iter().any(|g| g == OPERATOR_GROUP_ID))
        .expect("an operator by group");

    let discovery: Value = s
        .http
        .get(format!(
            "{base}/{DEFAULT_PARTNER_TENANT_ID}/v2.0/.well-known/openid-configuration"
        ))
        .send()
        .await
        .expect("discovery")
        .json()
        .await
        .expect("json");
    let issuer = format!("{base}/{DEFAULT_PARTNER_TENANT_ID}/v2.0");
    assert_eq!(discovery["issuer"], issuer.as_str());
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"][0],
        "RS256"
    );

    // Without a hint: the account picker, one button per person.
    let (status, _, picker) = authorize(&base, &authorize_params(None)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        picker.contains(&format!("data-username=\"{}\"", dana.username)),
        "{picker}"
    );

    let (status, location, _) = authorize(&base, &authorize_params(Some(&dana.username))).await;
    assert_eq!(status, StatusCode::FOUND);
    let location = location.expect("redirect");
    assert!(location.starts_with(REDIRECT), "{location}");
    let query = query_of(&location);
    assert_eq!(query["state"], "st4te");
    let code = query["code"].clone();

    let (status, wrong) = redeem(
        &base,
        &code,
        "another-verifier-of-at-least-forty-three-chars-0",
        REDIRECT,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{wrong}");
    assert!(
        wrong["error_description"]
            .as_str()
            .unwrap_or_default()
            .starts_with("AADSTS501481"),
        "{wrong}"
    );
    // A failed redemption used the code up (as a stolen code must be useless).
    let (status, replay) = redeem(&base, &code, VERIFIER, REDIRECT).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        replay["error_description"]
            .as_str()
            .unwrap_or_default()
            .starts_with("AADSTS54005"),
        "{replay}"
    );

    let (_, location, _) = authorize(&base, &authorize_params(Some(&dana.username))).await;
    let code = query_of(&location.expect("redirect"))["code"].clone();
    let (status, mismatch) =
        redeem(&base, &code, VERIFIER, "http://127.0.0.1:9999/elsewhere").await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "redirect URI must match: {mismatch}"
    );

    let (_, location, _) = authorize(&base, &authorize_params(Some(&dana.username))).await;
    let code = query_of(&location.expect("redirect"))["code"].clone();
    let (status, tokens) = redeem(&base, &code, VERIFIER, REDIRECT).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let id_token = tokens["id_token"].as_str().expect("an ID token");
    let parts: Vec<&str> = id_token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64")).expect("json");
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
    assert_eq!(header["alg"], "RS256");
    assert_eq!(claims["iss"], issuer.as_str());
    assert_eq!(claims["aud"], DEFAULT_CLIENT_ID);
    assert_eq!(claims["nonce"], "n0nce");
    assert_eq!(claims["tid"], DEFAULT_PARTNER_TENANT_ID);
    assert_eq!(claims["oid"], dana.object_id.as_str());
    assert_eq!(claims["preferred_username"], dana.username.as_str());
    assert!(
        claims["groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g == OPERATOR_GROUP_ID))
    );
    assert!(claims["exp"].as_u64().expect("exp") > claims["iat"].as_u64().expect("iat"));

    // The JWKS's key (by kid) verifies the signature; a changed payload does not.
    let jwks: Value = s
        .http
        .get(discovery["jwks_uri"].as_str().expect("jwks_uri"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    let key = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == header["kid"]))
        .expect("the token's kid is in the JWKS");
    let public = RsaPublicKeyComponents {
        n: URL_SAFE_NO_PAD
            .decode(key["n"].as_str().expect("n"))
            .expect("b64"),
        e: URL_SAFE_NO_PAD
            .decode(key["e"].as_str().expect("e"))
            .expect("b64"),
    };
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("b64");
    let signed = format!("{}.{}", parts[0], parts[1]);
    public
        .verify(&RSA_PKCS1_2048_8192_SHA256, signed.as_bytes(), &signature)
        .expect("the signature verifies");
    let tampered = format!("{}.{}x", parts[0], parts[1]);
    assert!(
        public
            .verify(&RSA_PKCS1_2048_8192_SHA256, tampered.as_bytes(), &signature)
            .is_err()
    );
    let common_keys: Value = s
        .http
        .get(format!("{base}/discovery/v2.0/keys"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    assert_eq!(common_keys, jwks);
}

#[tokio::test]
async fn authorize_refuses_what_entra_refuses() {
    let s = start(small_args()).await;
    let base = s.sim.base_url.clone();
    let riley = s
        .sim
        .sign_in_users()
        .into_iter()
        .find(|u| u.roles.iter().any(|r| r == OPERATOR_ROLE))
        .expect("an operator by role");
    let with = |change: &dyn Fn(&mut Params)| {
        let mut params = authorize_params(Some(&riley.username));
        change(&mut params);
        params
    };
    let set = |params: &mut Params, key: &'static str, value: &str| {
        params.retain(|(k, _)| *k != key);
        params.push((key, value.to_owned()));
    };

    // Not trusted yet: an error page, no redirect.
    for params in [
        with(&|p| {
            set(
                p,
                "redirect_uri",
                "http://fwdwatch.example.net/console/auth/callback",
            )
        }),
        with(&|p| set(p, "redirect_uri", "https://evil.example/cb#x")),
        with(&|p| set(p, "client_id", "00000000-0000-0000-0000-000000000000")),
    ] {
        let (status, location, _) = authorize(&base, &params).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(location.is_none(), "never redirected to an untrusted place");
    }
    // Trusted redirect URI: the error goes back with the state.
    for (params, expected) in [
        (
            with(&|p| p.retain(|(k, _)| *k != "code_challenge")),
            "AADSTS9002325",
        ),
        (
            with(&|p| set(p, "code_challenge_method", "plain")),
            "AADSTS501481",
        ),
        (with(&|p| set(p, "scope", "profile")), "AADSTS70011"),
        (with(&|p| set(p, "response_type", "token")), "AADSTS700054"),
    ] {
        let (status, location, _) = authorize(&base, &params).await;
        assert_eq!(status, StatusCode::FOUND);
        let query = query_of(&location.expect("redirect"));
        assert!(
            query["error_description"].starts_with(expected),
            "{query:?}"
        );
        assert_eq!(query["state"], "st4te");
        assert!(!query.contains_key("code"));
    }
    // Nobody by that name.
    let (status, location, body) = authorize(
        &base,
        &with(&|p| set(p, "login_hint", "mallory@evil.example")),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(location.is_none() && body.contains("AADSTS50034"));
    // People sign in to the partner tenant only.
    let customer = s.readable_tenant().await;
    let response = no_redirects()
        .get(format!(
            "{base}/{}/oauth2/v2.0/authorize?{}",
            customer.tenant_id,
            serde_urlencoded::to_string(authorize_params(Some(&riley.username))).expect("q")
        ))
        .send()
        .await
        .expect("authorize");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}
