//! Entra ID sign-in for the operator's console: OpenID Connect, authorization code
//! with PKCE, in the partner (MSP) tenant — so the console's whole sign-in is
//! tested here, browser included.
//!
//! Endpoints, as `login.microsoftonline.com` serves them (under the sim's base URL):
//!
//! | route | what |
//! |---|---|
//! | `GET /{tenant}/v2.0/.well-known/openid-configuration` | discovery: issuer `{base}/{tid}/v2.0`, endpoints, `RS256` |
//! | `GET /{tenant}/oauth2/v2.0/authorize` | "pick an account" page; with `login_hint` it signs that user in at once |
//! | `POST /{tenant}/oauth2/v2.0/authorize` | the page's buttons (the same parameters plus `login_hint`) |
//! | `POST /{tenant}/oauth2/v2.0/token` | `grant_type=authorization_code` (in `token.rs`'s endpoint) |
//! | `GET /{tenant}/discovery/v2.0/keys`, `GET /discovery/v2.0/keys` | the JWKS (one RSA key, `kid`) |
//!
//! What is checked like Entra does: the client id (the sim's app), the redirect URI
//! (https, or http on a loopback host — what Entra lets an app register), the
//! response type (`code`), the `openid` scope, and PKCE: a `code_challenge` with
//! method `S256` is required at authorize and the `code_verifier` must hash to it
//! at the token endpoint. A code is single-use and lives ten minutes. ID tokens are
//! RS256 JWTs with `kid`, `iss`, `aud`, `exp`, `nbf`, `iat`, `nonce`, `oid`, `tid`,
//! `name`, `preferred_username`, `groups` (object ids) and `roles` (app roles).
//!
//! The partner tenant's directory is fixed ([`sign_in_users`]): an operator by group,
//! an operator by app role, an operator in a tenant-scoped group, and a member who
//! is no operator. Consent is implied (the sim's app is the console's app).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::fleet::Org;
use crate::reply::Reply;
use crate::server::Sim;
use crate::token::{Claims, TOKEN_LIFETIME, aad_error, now};

/// Group whose members are console operators (every tenant).
pub const OPERATOR_GROUP_ID: &str = "0f5b6c1e-8d2a-4e7b-9c3f-1a2b3c4d5e60";
/// Group whose members are operators limited to some tenants (the console's
/// configuration maps it to its tenants, through `actioner.operators.tenant_scopes`).
pub const SCOPED_OPERATOR_GROUP_ID: &str = "0f5b6c1e-8d2a-4e7b-9c3f-1a2b3c4d5e61";
/// A group every member of the partner tenant is in (no operator rights).
pub const STAFF_GROUP_ID: &str = "0f5b6c1e-8d2a-4e7b-9c3f-1a2b3c4d5e62";
/// The app role that makes an operator.
pub const OPERATOR_ROLE: &str = "Fwdwatch.Operator";

/// How long an authorization code may be redeemed (Entra: about ten minutes).
const CODE_LIFETIME: Duration = Duration::from_secs(600);
/// Codes held at once; a flood of authorize requests cannot grow the sim unbounded.
const MAX_CODES: usize = 10_000;

/// One person of the partner tenant who can sign in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInUser {
    pub object_id: String,
    /// `local@<partner domain>`.
    pub username: String,
    pub name: String,
    pub groups: Vec<String>,
    pub roles: Vec<String>,
}

/// The partner tenant's directory: who can sign in, with groups and roles.
pub fn sign_in_users(partner_domain: &str) -> Vec<SignInUser> {
    let user = |n: u8, local: &str, name: &str, groups: &[&str], roles: &[&str]| SignInUser {
        object_id: format!("5a1d2c3b-0e4f-4a5b-8c6d-7e8f9a0b1c{n:02x}"),
        username: format!("{local}@{partner_domain}"),
        name: name.to_owned(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
    };
    vec![
        user(
            1,
            "dana",
            "Dana Operator",
            &[STAFF_GROUP_ID, OPERATOR_GROUP_ID],
            &[],
        ),
        user(
            2,
            "riley",
            "Riley Role",
            &[STAFF_GROUP_ID],
            &[OPERATOR_ROLE],
        ),
        user(
            3,
            "sam",
            "Sam Scoped",
            &[STAFF_GROUP_ID, SCOPED_OPERATOR_GROUP_ID],
            &[],
        ),
        user(4, "casey", "Casey Colleague", &[STAFF_GROUP_ID], &[]),
    ]
}

/// The signing key (drawn on first use: most runs never sign anyone in) and the
/// codes handed out and not yet redeemed.
pub(crate) struct Oidc {
    key: OnceLock<Option<SigningKey>>,
    codes: Mutex<HashMap<String, PendingCode>>,
}

struct SigningKey {
    pair: KeyPair,
    kid: String,
    /// Base64url modulus and exponent, for the JWKS.
    n: String,
    e: String,
}

struct PendingCode {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: Option<String>,
    user: SignInUser,
    issued: Instant,
}

impl Oidc {
    pub(crate) fn new() -> Self {
        Self {
            key: OnceLock::new(),
            codes: Mutex::new(HashMap::new()),
        }
    }

    fn key(&self) -> Option<&SigningKey> {
        self.key
            .get_or_init(|| {
                let pair = KeyPair::generate(KeySize::Rsa2048).ok()?;
                let public = pair.public_key();
                let n = URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero());
                let e = URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero());
                let kid = URL_SAFE_NO_PAD.encode(&Sha256::digest(n.as_bytes())[..12]);
                Some(SigningKey { pair, kid, n, e })
            })
            .as_ref()
    }

    /// An RS256 JWT of `claims`, or `None` when the key could not be made.
    fn sign(&self, claims: &Value) -> Option<String> {
        let key = self.key()?;
        let header = json!({"typ": "JWT", "alg": "RS256", "kid": key.kid});
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0u8; key.pair.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        key.pair
            .sign(&RSA_PKCS1_SHA256, &rng, signed.as_bytes(), &mut signature)
            .ok()?;
        Some(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    fn store_code(&self, code: String, pending: PendingCode) -> bool {
        let Ok(mut codes) = self.codes.lock() else {
            return false;
        };
        if codes.len() >= MAX_CODES {
            codes.retain(|_, c| c.issued.elapsed() < CODE_LIFETIME);
            if codes.len() >= MAX_CODES {
                return false;
            }
        }
        codes.insert(code, pending);
        true
    }

    /// Takes a code (single use: a second redemption finds nothing).
    fn take_code(&self, code: &str) -> Option<PendingCode> {
        self.codes.lock().ok()?.remove(code)
    }
}

fn issuer(origin: &str, tenant_id: &str) -> String {
    format!("{origin}/{tenant_id}/v2.0")
}

fn partner_only(sim: &Sim, tenant: &str) -> Option<String> {
    match sim.fleet.resolve(tenant) {
        Some(Org::Partner) => Some(sim.fleet.partner.id.clone()),
        _ => None,
    }
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`.
pub(crate) async fn discovery(
    State(sim): State<Arc<Sim>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(tid) = partner_only(&sim, &tenant) else {
        return Reply::json(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_tenant", "error_description": format!("AADSTS90002: Tenant '{tenant}' not found.")}),
        )
        .into_http(false);
    };
    let origin = sim.origin(&headers);
    Reply::ok(json!({
        "issuer": issuer(&origin, &tid),
        "authorization_endpoint": format!("{origin}/{tid}/oauth2/v2.0/authorize"),
        "token_endpoint": format!("{origin}/{tid}/oauth2/v2.0/token"),
        "jwks_uri": format!("{origin}/{tid}/discovery/v2.0/keys"),
        "end_session_endpoint": format!("{origin}/{tid}/oauth2/v2.0/logout"),
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "nonce", "name", "preferred_username", "oid", "tid", "ver", "groups", "roles"],
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
    }))
    .into_http(false)
}

/// `GET /{tenant}/discovery/v2.0/keys` and `/discovery/v2.0/keys`.
pub(crate) async fn keys(State(sim): State<Arc<Sim>>) -> Response {
    match sim.oidc.key() {
        Some(key) => Reply::ok(json!({"keys": [{
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": key.kid,
            "n": key.n,
            "e": key.e,
        }]}))
        .into_http(false),
        None => Reply::empty(StatusCode::SERVICE_UNAVAILABLE).into_http(false),
    }
}

/// The authorize request's parameters (query on GET, form on POST).
#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct AuthorizeParams {
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    response_type: String,
    #[serde(default)]
    redirect_uri: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    code_challenge: Option<String>,
    #[serde(default)]
    code_challenge_method: Option<String>,
    #[serde(default)]
    response_mode: Option<String>,
    #[serde(default)]
    login_hint: Option<String>,
    #[serde(default)]
    prompt: Option<String>,
}

/// `GET /{tenant}/oauth2/v2.0/authorize`.
pub(crate) async fn authorize_get(
    State(sim): State<Arc<Sim>>,
    Path(tenant): Path<String>,
    Query(params): Query<AuthorizeParams>,
) -> Response {
    authorize(&sim, &tenant, params)
}

/// `POST /{tenant}/oauth2/v2.0/authorize` (the account picker's buttons).
pub(crate) async fn authorize_post(
    State(sim): State<Arc<Sim>>,
    Path(tenant): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    match serde_urlencoded::from_bytes::<AuthorizeParams>(&body) {
        Ok(params) => authorize(&sim, &tenant, params),
        Err(_) => error_page(
            StatusCode::BAD_REQUEST,
            "AADSTS900144: The request body must be form-encoded.",
        ),
    }
}

/// Entra's way of refusing before it trusts the redirect URI: a page, no redirect.
fn error_page(status: StatusCode, message: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign in to your account</title></head>\
         <body><h1>Sorry, but we're having trouble signing you in.</h1><p id=\"error\">{}</p></body></html>",
        escape(message)
    );
    (status, Html(html)).into_response()
}

/// Redirects an error back to the app, as Entra does once the redirect URI is trusted.
fn redirect_error(params: &AuthorizeParams, error: &str, description: &str) -> Response {
    let mut query = vec![
        ("error", error.to_owned()),
        ("error_description", description.to_owned()),
    ];
    if let Some(state) = &params.state {
        query.push(("state", state.clone()));
    }
    redirect(&params.redirect_uri, &query)
}

fn redirect(uri: &str, query: &[(&str, String)]) -> Response {
    let encoded = serde_urlencoded::to_string(query).unwrap_or_default();
    let separator = if uri.contains('?') { '&' } else { '?' };
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, format!("{uri}{separator}{encoded}")),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response()
}

/// What Entra lets a web app register: https anywhere, http only on loopback.
fn acceptable_redirect(uri: &str) -> bool {
    let Ok(url) = url_parts(uri) else {
        return false;
    };
    match url.0.as_str() {
        "https" => true,
        "http" => matches!(url.1.as_str(), "127.0.0.1" | "localhost" | "[::1]"),
        _ => false,
    }
}

/// (scheme, host) of an absolute URL without a fragment.
fn url_parts(uri: &str) -> Result<(String, String), ()> {
    if uri.contains('#') {
        return Err(());
    }
    let (scheme, rest) = uri.split_once("://").ok_or(())?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err(());
    }
    let host = if authority.starts_with('[') {
        authority
            .split_inclusive(']')
            .next()
            .unwrap_or_default()
            .to_owned()
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .to_owned()
    };
    Ok((scheme.to_ascii_lowercase(), host.to_ascii_lowercase()))
}

fn authorize(sim: &Sim, tenant: &str, params: AuthorizeParams) -> Response {
    let Some(tid) = partner_only(sim, tenant) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            &format!(
                "AADSTS50020: User account from identity provider does not exist in tenant '{tenant}'."
            ),
        );
    };
    if !params.client_id.eq_ignore_ascii_case(&sim.args.client_id) {
        return error_page(
            StatusCode::BAD_REQUEST,
            &format!(
                "AADSTS700016: Application with identifier '{}' was not found in the directory.",
                params.client_id
            ),
        );
    }
    if !acceptable_redirect(&params.redirect_uri) {
        return error_page(
            StatusCode::BAD_REQUEST,
            &format!(
                "AADSTS50011: The redirect URI '{}' specified in the request does not match the redirect URIs configured for the application.",
                params.redirect_uri
            ),
        );
    }
    if params.response_type != "code" {
        return redirect_error(
            &params,
            "unsupported_response_type",
            "AADSTS700054: response_type 'code' is the only one enabled for this application.",
        );
    }
    if params
        .response_mode
        .as_deref()
        .is_some_and(|m| m != "query")
    {
        return redirect_error(
            &params,
            "invalid_request",
            "AADSTS900144: this simulator answers with response_mode=query only.",
        );
    }
    if !params.scope.split_whitespace().any(|s| s == "openid") {
        return redirect_error(
            &params,
            "invalid_scope",
            "AADSTS70011: The provided value for the input parameter 'scope' is not valid: openid is required for sign-in.",
        );
    }
    let challenge = match (
        params.code_challenge.as_deref(),
        params.code_challenge_method.as_deref(),
    ) {
        (Some(challenge), Some("S256")) if challenge.len() == 43 => challenge.to_owned(),
        (Some(_), Some("S256")) => {
            return redirect_error(
                &params,
                "invalid_request",
                "AADSTS501491: Invalid size of Code_Challenge parameter.",
            );
        }
        (Some(_), _) => {
            return redirect_error(
                &params,
                "invalid_request",
                "AADSTS501481: The code_challenge_method must be S256.",
            );
        }
        (None, _) => {
            return redirect_error(
                &params,
                "invalid_request",
                "AADSTS9002325: Proof Key for Code Exchange is required for this sign-in.",
            );
        }
    };
    let users = sign_in_users(&sim.fleet.partner.domain);
    let Some(hint) = params.login_hint.as_deref().filter(|h| !h.is_empty()) else {
        return account_picker(&tid, &params, &users);
    };
    let Some(user) = users
        .into_iter()
        .find(|u| u.username.eq_ignore_ascii_case(hint.trim()))
    else {
        return error_page(
            StatusCode::BAD_REQUEST,
            &format!(
                "AADSTS50034: The user account {hint} does not exist in the {} directory.",
                sim.fleet.partner.domain
            ),
        );
    };
    let code = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let stored = sim.oidc.store_code(
        code.clone(),
        PendingCode {
            client_id: params.client_id.clone(),
            redirect_uri: params.redirect_uri.clone(),
            challenge,
            nonce: params.nonce.clone(),
            user,
            issued: Instant::now(),
        },
    );
    if !stored {
        return redirect_error(
            &params,
            "temporarily_unavailable",
            "AADSTS90033: A transient error has occurred. Please try again.",
        );
    }
    let mut query = vec![("code", code)];
    if let Some(state) = &params.state {
        query.push(("state", state.clone()));
    }
    query.push(("session_state", uuid::Uuid::new_v4().to_string()));
    redirect(&params.redirect_uri, &query)
}

/// "Pick an account": one button per person of the partner tenant. Choosing one
/// signs them in (no password: consent and credentials are the sim's to imply).
fn account_picker(tid: &str, params: &AuthorizeParams, users: &[SignInUser]) -> Response {
    let mut hidden = String::new();
    let mut field = |name: &str, value: Option<&str>| {
        if let Some(value) = value {
            hidden.push_str(&format!(
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
                escape(value)
            ));
        }
    };
    field("client_id", Some(&params.client_id));
    field("response_type", Some(&params.response_type));
    field("redirect_uri", Some(&params.redirect_uri));
    field("scope", Some(&params.scope));
    field("state", params.state.as_deref());
    field("nonce", params.nonce.as_deref());
    field("code_challenge", params.code_challenge.as_deref());
    field(
        "code_challenge_method",
        params.code_challenge_method.as_deref(),
    );
    field("response_mode", params.response_mode.as_deref());
    field("prompt", params.prompt.as_deref());
    let mut buttons = String::new();
    for user in users {
        buttons.push_str(&format!(
            "<li><form method=\"post\" action=\"/{tid}/oauth2/v2.0/authorize\">{hidden}\
             <input type=\"hidden\" name=\"login_hint\" value=\"{username}\">\
             <button type=\"submit\" data-username=\"{username}\">{name}<br><small>{username}</small></button></form></li>",
            tid = escape(tid),
            username = escape(&user.username),
            name = escape(&user.name),
        ));
    }
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Sign in to your account</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:26rem;margin:3rem auto;padding:0 1rem}}\
         ul{{list-style:none;padding:0}}button{{width:100%;text-align:left;padding:.6rem;margin:.25rem 0;font-size:1rem}}</style>\
         </head><body><p>m365-sim · Microsoft Entra ID (simulated)</p><h1>Pick an account</h1><ul>{buttons}</ul></body></html>"
    );
    (
        StatusCode::OK,
        [(header::CACHE_CONTROL, "no-store")],
        Html(html),
    )
        .into_response()
}

/// Form fields of an authorization-code redemption (the rest is in `token.rs`).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct CodeForm {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    redirect_uri: Option<String>,
    #[serde(default)]
    code_verifier: Option<String>,
}

fn grant_error(code: u32, description: &str) -> Reply {
    aad_error("invalid_grant", code, description)
}

/// `grant_type=authorization_code`, after `token.rs` authenticated the client.
pub(crate) fn redeem(
    sim: &Sim,
    org: Org,
    client_id: &str,
    body: &[u8],
    headers: &HeaderMap,
) -> Reply {
    if org != Org::Partner {
        return grant_error(
            50020,
            "User account from identity provider does not exist in tenant.",
        );
    }
    let form: CodeForm = serde_urlencoded::from_bytes(body).unwrap_or_default();
    let Some(code) = form.code.as_deref().filter(|c| !c.is_empty()) else {
        return aad_error(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'code'.",
        );
    };
    let Some(pending) = sim.oidc.take_code(code) else {
        return grant_error(
            54005,
            "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.",
        );
    };
    if pending.issued.elapsed() >= CODE_LIFETIME {
        return grant_error(
            70008,
            "The provided authorization code or refresh token has expired due to inactivity.",
        );
    }
    if !pending.client_id.eq_ignore_ascii_case(client_id) {
        return grant_error(
            70002,
            "The authorization code was issued to another client.",
        );
    }
    if form.redirect_uri.as_deref() != Some(pending.redirect_uri.as_str()) {
        return grant_error(
            50148,
            "The redirect_uri does not match the one used in the authorization request.",
        );
    }
    let verifier = form.code_verifier.unwrap_or_default();
    if !(43..=128).contains(&verifier.len())
        || URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != pending.challenge
    {
        return grant_error(
            501481,
            "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
        );
    }
    let tid = sim.fleet.partner.id.clone();
    let origin = sim.origin(headers);
    let iat = now();
    let user = &pending.user;
    let mut id_claims = json!({
        "aud": client_id,
        "iss": issuer(&origin, &tid),
        "iat": iat,
        "nbf": iat,
        "exp": iat + TOKEN_LIFETIME,
        "name": user.name,
        "oid": user.object_id,
        "preferred_username": user.username,
        "sub": URL_SAFE_NO_PAD.encode(&Sha256::digest(format!("{}|{client_id}", user.object_id))[..24]),
        "tid": tid,
        "uti": URL_SAFE_NO_PAD.encode(rand::random::<[u8; 12]>()),
        "ver": "2.0",
    });
    if let Some(nonce) = &pending.nonce {
        id_claims["nonce"] = json!(nonce);
    }
    if !user.groups.is_empty() {
        id_claims["groups"] = json!(user.groups);
    }
    if !user.roles.is_empty() {
        id_claims["roles"] = json!(user.roles);
    }
    let Some(id_token) = sim.oidc.sign(&id_claims) else {
        return Reply::empty(StatusCode::SERVICE_UNAVAILABLE);
    };
    let access = Claims {
        aud: "https://graph.microsoft.com".into(),
        iss: format!("https://sts.windows.net/{tid}/"),
        iat,
        nbf: iat,
        exp: iat + TOKEN_LIFETIME,
        tid,
        appid: sim.args.client_id.clone(),
        idtyp: "user".into(),
        uti: URL_SAFE_NO_PAD.encode(rand::random::<[u8; 12]>()),
        sim_revoked: false,
    };
    Reply::ok(json!({
        "token_type": "Bearer",
        "scope": "openid profile email https://graph.microsoft.com/User.Read",
        "expires_in": TOKEN_LIFETIME,
        "ext_expires_in": TOKEN_LIFETIME,
        "access_token": sim.tokens.mint(&access),
        "id_token": id_token,
    }))
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_like_entra() {
        assert!(acceptable_redirect(
            "https://fwdwatch.example.net/console/auth/callback"
        ));
        assert!(acceptable_redirect(
            "http://127.0.0.1:8080/console/auth/callback"
        ));
        assert!(acceptable_redirect("http://localhost:1/cb"));
        assert!(
            !acceptable_redirect("http://fwdwatch.example.net/cb"),
            "http off loopback"
        );
        assert!(!acceptable_redirect("http://127.0.0.1.evil.example/cb"));
        assert!(!acceptable_redirect("http://user@127.0.0.1/cb"));
        assert!(!acceptable_redirect("https://a.example/cb#frag"));
        assert!(!acceptable_redirect("javascript:alert(1)"));
    }

    #[test]
    fn directory_has_each_kind_of_person() {
        let users = sign_in_users("partner.example");
        assert!(
            users
                .iter()
                .any(|u| u.groups.iter().any(|g| g == OPERATOR_GROUP_ID))
        );
        assert!(
            users
                .iter()
                .any(|u| u.roles.iter().any(|r| r == OPERATOR_ROLE))
        );
        assert!(
            users
                .iter()
                .any(|u| u.groups.iter().any(|g| g == SCOPED_OPERATOR_GROUP_ID))
        );
        assert!(
            users
                .iter()
                .any(|u| u.roles.is_empty() && u.groups == [STAFF_GROUP_ID])
        );
    }
}
