//! The OAuth2 v2 token endpoint (`POST /{tenant}/oauth2/v2.0/token`) and the bearer
//! check of the APIs.
//!
//! Access tokens are JWT-shaped and MAC-signed with a per-process key: the sim can map
//! any token back to (tenant, resource, expiry) without storing it, so issuing tokens
//! costs no memory and a token from another sim instance is refused.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::fleet::Org;
use crate::reply::Reply;
use crate::server::Sim;
use crate::stats::Injected;

/// The resources the sim serves; one per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resource {
    Graph,
    Exchange,
    /// The Office 365 Management Activity API (`https://manage.office.com`).
    Management,
}

impl Resource {
    pub(crate) fn audience(self) -> &'static str {
        match self {
            Self::Graph => "https://graph.microsoft.com",
            Self::Exchange => "https://outlook.office365.com",
            Self::Management => "https://manage.office.com",
        }
    }
}

/// What an access token says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Claims {
    pub aud: String,
    pub iss: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub tid: String,
    pub appid: String,
    pub idtyp: String,
    pub uti: String,
    /// Set on tokens the `--token-expiry-rate` fault revokes early.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sim_revoked: bool,
}

/// Why a bearer token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthError {
    Missing,
    Invalid,
    WrongAudience,
    WrongTenant,
    Expired,
    Revoked,
}

impl AuthError {
    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::Missing => "Access token is empty.",
            Self::Invalid => "Access token validation failure. Invalid token.",
            Self::WrongAudience => "Access token validation failure. Invalid audience.",
            Self::WrongTenant => {
                "Access token validation failure. The token was issued for another tenant."
            }
            Self::Expired | Self::Revoked => "Lifetime validation failed, the token is expired.",
        }
    }
}

pub(crate) const TOKEN_LIFETIME: u64 = 3599;

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Signs and checks tokens with a key drawn at start-up.
pub(crate) struct TokenKeys {
    key: [u8; 32],
}

const JWT_HEADER: &str = r#"{"typ":"JWT","alg":"HS256","kid":"m365-sim"}"#;

impl TokenKeys {
    pub(crate) fn new() -> Self {
        Self {
            key: rand::random(),
        }
    }

    pub(crate) fn mac(&self, data: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(data.as_bytes());
        URL_SAFE_NO_PAD.encode(h.finalize())
    }

    pub(crate) fn mint(&self, claims: &Claims) -> String {
        let payload = serde_json::to_vec(claims).unwrap_or_default();
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(JWT_HEADER),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let sig = self.mac(&signed);
        format!("{signed}.{sig}")
    }

    /// Claims of a token this process signed; expiry is checked by the caller.
    pub(crate) fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let (signed, sig) = token.rsplit_once('.').ok_or(AuthError::Invalid)?;
        if self.mac(signed) != sig {
            return Err(AuthError::Invalid);
        }
        let payload = signed
            .split_once('.')
            .map(|(_, p)| p)
            .ok_or(AuthError::Invalid)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| AuthError::Invalid)?;
        serde_json::from_slice(&bytes).map_err(|_| AuthError::Invalid)
    }

    pub(crate) fn mint_refresh(&self, client_id: &str) -> String {
        let nonce: u64 = rand::random();
        let data = format!(
            "rt.{}",
            URL_SAFE_NO_PAD.encode(format!("{client_id}|{nonce}"))
        );
        let sig = self.mac(&data);
        format!("{data}.{sig}")
    }

    fn verify_refresh(&self, token: &str, client_id: &str) -> bool {
        let Some((data, sig)) = token.rsplit_once('.') else {
            return false;
        };
        if self.mac(data) != sig {
            return false;
        }
        let Some(b64) = data.strip_prefix("rt.") else {
            return false;
        };
        URL_SAFE_NO_PAD
            .decode(b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .is_some_and(|s| s.split('|').next() == Some(client_id))
    }
}

/// Checks `Authorization: Bearer` for `resource`; returns the token's organisation.
pub(crate) fn authorize(
    sim: &Sim,
    headers: &HeaderMap,
    resource: Resource,
) -> Result<Org, AuthError> {
    let raw = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(AuthError::Missing)?;
    let token = match raw.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
        _ => return Err(AuthError::Invalid),
    };
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    let claims = sim.tokens.verify(token)?;
    if claims.aud != resource.audience() {
        return Err(AuthError::WrongAudience);
    }
    if claims.exp <= now() {
        return Err(AuthError::Expired);
    }
    let org = sim.fleet.resolve(&claims.tid).ok_or(AuthError::Invalid)?;
    // Consent revoked since the token was issued: the service principal is gone,
    // its tokens with it.
    if let Org::Customer(i) = org
        && sim.fleet.access(i).consent_revoked
    {
        return Err(AuthError::Revoked);
    }
    if claims.sim_revoked {
        sim.stats
            .injected(Injected::TokenRevoked, Some(sim.fleet.counters(org)));
        return Err(AuthError::Revoked);
    }
    Ok(org)
}

/// Form fields of a token request.
#[derive(Debug, Default, Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_assertion_type: Option<String>,
    client_assertion: Option<String>,
    scope: Option<String>,
    refresh_token: Option<String>,
}

/// An AADSTS error answer (m365-api.md §2).
pub(crate) fn aad_error(error: &str, code: u32, description: &str) -> Reply {
    let trace = uuid::Uuid::new_v4().to_string();
    let correlation = uuid::Uuid::new_v4().to_string();
    let ts = chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
    let mut body = json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {description}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {ts}"
        ),
        "error_codes": [code],
        "timestamp": ts,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    if code == 65001 {
        body["suberror"] = json!("consent_required");
    }
    Reply::json(StatusCode::BAD_REQUEST, body)
}

const IGNORED_SCOPES: &[&str] = &["offline_access", "openid", "profile", "email"];

/// The single resource a scope string names, or the AADSTS error to answer.
fn scope_resource(
    scope: Option<&str>,
    client_credentials: bool,
) -> Result<(Resource, String), Reply> {
    let scope = scope.unwrap_or_default();
    let mut resources: Vec<String> = Vec::new();
    let mut non_default = false;
    for s in scope.split_whitespace() {
        if IGNORED_SCOPES.iter().any(|i| i.eq_ignore_ascii_case(s)) {
            continue;
        }
        let (res, perm) = match s.find("://") {
            Some(p) => match s[p + 3..].find('/') {
                Some(q) => (&s[..p + 3 + q], &s[p + 3 + q..]),
                None => (s, ""),
            },
            None => match s.split_once('/') {
                Some((r, perm)) => (r, perm),
                // A bare permission name means Graph.
                None => ("https://graph.microsoft.com", s),
            },
        };
        non_default |=
            !perm.eq_ignore_ascii_case("/.default") && !perm.eq_ignore_ascii_case(".default");
        let res = res.trim_end_matches('/').to_lowercase();
        if !resources.contains(&res) {
            resources.push(res);
        }
    }
    match resources.len() {
        0 => {
            return Err(aad_error(
                "invalid_scope",
                70011,
                "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid.",
            ));
        }
        1 => {}
        _ => {
            return Err(aad_error(
                "invalid_scope",
                700022,
                &format!(
                    "The provided value for the input parameter scope is not valid because it contains more than one resource. Scope {scope} is not valid."
                ),
            ));
        }
    }
    let res = &resources[0];
    let resource = match res.as_str() {
        "https://graph.microsoft.com" | "00000003-0000-0000-c000-000000000000" => Resource::Graph,
        "https://outlook.office365.com"
        | "https://outlook.office.com"
        | "00000002-0000-0ff1-ce00-000000000000" => Resource::Exchange,
        "https://manage.office.com" | "c5393580-f805-4401-95e8-94b7a6ef2fc2" => {
            Resource::Management
        }
        other => {
            return Err(aad_error(
                "invalid_resource",
                500011,
                &format!("The resource principal named {other} was not found in the tenant."),
            ));
        }
    };
    if client_credentials && non_default {
        return Err(aad_error(
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        ));
    }
    Ok((resource, scope.to_string()))
}

/// Checks a certificate client assertion: a 3-part JWT whose payload names the client
/// as `iss` and `sub` and the tenant in `aud`. The signature is not verified.
fn check_assertion(
    assertion: &str,
    client_id: &str,
    tenant_key: &str,
    tenant_id: &str,
) -> Result<(), Reply> {
    let bad = || {
        aad_error(
            "invalid_client",
            50027,
            "JWT token is invalid or malformed.",
        )
    };
    let parts: Vec<&str> = assertion.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(bad());
    }
    let payload = URL_SAFE_NO_PAD
        .decode(parts[1].trim_end_matches('='))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .ok_or_else(bad)?;
    let claim = |k: &str| {
        payload
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    if !claim("iss").eq_ignore_ascii_case(client_id)
        || !claim("sub").eq_ignore_ascii_case(client_id)
    {
        return Err(aad_error(
            "invalid_client",
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter.",
        ));
    }
    let auds: Vec<String> = match payload.get("aud") {
        Some(Value::String(s)) => vec![s.to_lowercase()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_lowercase)
            .collect(),
        _ => Vec::new(),
    };
    let (key, tid) = (tenant_key.to_lowercase(), tenant_id.to_lowercase());
    if !auds.iter().any(|a| a.contains(&key) || a.contains(&tid)) {
        return Err(aad_error(
            "invalid_client",
            50013,
            "Assertion failed signature validation. [Reason - The audience of the assertion is not valid for this tenant.]",
        ));
    }
    if let Some(exp) = payload.get("exp").and_then(Value::as_u64)
        && exp <= now()
    {
        return Err(aad_error(
            "invalid_client",
            700024,
            "Client assertion is not within its valid time range.",
        ));
    }
    Ok(())
}

/// Client id and secret from HTTP Basic auth, which Entra accepts instead of the form.
fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let raw = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = raw.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(b64.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let dec = |s: &str| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("x={s}"))
            .ok()?
            .pop()
            .map(|(_, v)| v)
    };
    Some((dec(id)?, dec(secret)?))
}

/// `POST /{tenant}/oauth2/v2.0/token`.
pub(crate) async fn token_http(
    State(sim): State<Arc<Sim>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let org = sim.fleet.resolve(&tenant);
    sim.stats.call("token", org.map(|o| sim.fleet.counters(o)));
    sim.faults.delay().await;
    issue(&sim, &tenant, org, &headers, &body).into_http(false)
}

fn issue(sim: &Sim, tenant_key: &str, org: Option<Org>, headers: &HeaderMap, body: &[u8]) -> Reply {
    let Ok(mut form) = serde_urlencoded::from_bytes::<TokenForm>(body) else {
        return aad_error(
            "invalid_request",
            900144,
            "The request body must be form-encoded.",
        );
    };
    let Some(org) = org else {
        return aad_error(
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant_key}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        );
    };
    let (tenant_id, tenant_name) = match org {
        Org::Partner => (
            sim.fleet.partner.id.clone(),
            sim.fleet.partner.display_name.clone(),
        ),
        Org::Customer(i) => {
            let m = sim.fleet.meta(i);
            (m.id.clone(), m.display_name.clone())
        }
    };
    if let Some((id, secret)) = basic_auth(headers) {
        form.client_id.get_or_insert(id);
        form.client_secret.get_or_insert(secret);
    }
    let grant = form.grant_type.as_deref().unwrap_or_default();
    if grant.is_empty() {
        return aad_error(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        );
    }
    if grant != "client_credentials" && grant != "refresh_token" && grant != "authorization_code" {
        return aad_error(
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{grant}'."),
        );
    }
    let Some(client_id) = form.client_id.as_deref().filter(|c| !c.is_empty()) else {
        return aad_error(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    };
    if !client_id.eq_ignore_ascii_case(&sim.args.client_id) {
        return aad_error(
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant_name}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        );
    }
    if let Org::Customer(i) = org
        && let Some(code) = sim.fleet.consent_error(i)
    {
        sim.stats
            .injected(Injected::NoConsent, Some(sim.fleet.counters(org)));
        return if code == 65001 {
            aad_error(
                "invalid_grant",
                65001,
                &format!(
                    "The user or administrator has not consented to use the application with ID '{client_id}' named 'fwdwatch'. Send an interactive authorization request for this user and resource."
                ),
            )
        } else {
            aad_error(
                "unauthorized_client",
                700016,
                &format!(
                    "Application with identifier '{client_id}' was not found in the directory '{tenant_name}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
                ),
            )
        };
    }
    // Client authentication: a secret or a certificate assertion.
    match (
        form.client_secret.as_deref(),
        form.client_assertion.as_deref(),
    ) {
        (Some(secret), _) => {
            if secret != sim.args.client_secret {
                return aad_error(
                    "invalid_client",
                    7000215,
                    &format!(
                        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
                    ),
                );
            }
        }
        (None, Some(assertion)) => {
            if form.client_assertion_type.as_deref()
                != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            {
                return aad_error(
                    "invalid_request",
                    50027,
                    "The client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer.",
                );
            }
            if let Err(r) = check_assertion(assertion, client_id, tenant_key, &tenant_id) {
                return r;
            }
        }
        (None, None) => {
            return aad_error(
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            );
        }
    }
    if grant == "authorization_code" {
        // A person signing in to the console (the MSP's own tenant): see `oidc`.
        return crate::oidc::redeem(sim, org, client_id, body, headers);
    }
    let refresh = grant == "refresh_token";
    if refresh {
        let rt = form.refresh_token.as_deref().unwrap_or_default();
        if rt.is_empty() {
            return aad_error(
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'refresh_token'.",
            );
        }
        if rt != sim.args.refresh_token && !sim.tokens.verify_refresh(rt, &sim.args.client_id) {
            return aad_error(
                "invalid_grant",
                9002313,
                "Invalid request. Request is malformed or invalid.",
            );
        }
    }
    let (resource, scope) = match scope_resource(form.scope.as_deref(), !refresh) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let iat = now();
    let claims = Claims {
        aud: resource.audience().to_string(),
        iss: format!("https://sts.windows.net/{tenant_id}/"),
        iat,
        nbf: iat,
        exp: iat + TOKEN_LIFETIME,
        tid: tenant_id,
        appid: sim.args.client_id.clone(),
        idtyp: if refresh { "user" } else { "app" }.to_string(),
        uti: URL_SAFE_NO_PAD.encode(rand::random::<[u8; 12]>()),
        sim_revoked: sim.faults.token_revoked(),
    };
    let mut body = json!({
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME,
        "ext_expires_in": TOKEN_LIFETIME,
        "access_token": sim.tokens.mint(&claims),
    });
    if refresh {
        body["scope"] = json!(scope);
        body["refresh_token"] = json!(sim.tokens.mint_refresh(&sim.args.client_id));
    }
    Reply::ok(body)
}
