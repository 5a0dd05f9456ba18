//! Sign-in with Microsoft Entra ID: OpenID Connect, authorization code + PKCE, in
//! the MSP's own tenant (`console.*` settings).
//!
//! ```text
//!  browser ── GET /console/auth/start ──▶ state, nonce, PKCE verifier stored (10 min),
//!                                         state in a Lax cookie ── 303 ──▶ Entra authorize
//!  Entra ── 302 ──▶ GET /console/auth/callback?code&state
//!           state = cookie? take the stored flow (single use) ─▶ POST token endpoint
//!           (code, verifier, client secret) ─▶ ID token: RS256 by a key of the JWKS
//!           (by kid), iss = the authority, aud = client id, exp/nbf, nonce = ours,
//!           tid = the MSP tenant ─▶ operator groups / app roles ─▶ session
//! ```
//!
//! Discovery and the JWKS are fetched from the authority and cached: discovery
//! for a day, keys until a token names a `kid` the cache does not have (Entra rolls
//! keys), refetched at most once a minute so a token with a made-up `kid` cannot
//! make the actioner hammer Entra.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use fwdwatch_shared::config::Settings;

use super::session::random_token;

const DISCOVERY_TTL: Duration = Duration::from_secs(24 * 3600);
const JWKS_MIN_REFRESH: Duration = Duration::from_secs(60);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Clock skew accepted on `exp` / `nbf`.
const LEEWAY_SECS: u64 = 120;

/// Why a sign-in failed. The text is shown to the person (never a token).
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("Microsoft Entra ID could not be reached: {0}")]
    Unreachable(String),
    #[error("Microsoft Entra ID answered something unexpected: {0}")]
    Protocol(String),
    #[error("Microsoft Entra ID refused the sign-in: {0}")]
    Refused(String),
    #[error("the ID token is not valid: {0}")]
    InvalidToken(String),
}

/// What `openid-configuration` says (the parts we use).
#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

/// A sign-in in progress: what the callback needs to finish it.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct Flow {
    pub nonce: String,
    pub verifier: String,
}

/// The person Entra ID vouched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `oid`: the object id, stable across apps: the operator's id in fwdwatch.
    pub object_id: String,
    pub name: String,
    /// `preferred_username` (usually the UPN).
    pub username: String,
    pub groups: Vec<String>,
    pub roles: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct IdClaims {
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    oid: Option<String>,
    #[serde(default)]
    sub: String,
    #[serde(default)]
    tid: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    preferred_username: Option<String>,
    #[serde(default)]
    groups: Option<Vec<String>>,
    #[serde(default)]
    roles: Vec<String>,
    /// Present instead of `groups` when the person is in too many groups (overage).
    #[serde(default, rename = "_claim_names")]
    claim_names: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    id_token: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// The Entra ID side of the console's sign-in.
pub struct EntraSignIn {
    authority: String,
    tenant_id: String,
    client_id: String,
    client_secret: Option<SecretString>,
    redirect_uri: String,
    http: reqwest::Client,
    discovery: Mutex<Option<(Discovery, Instant)>>,
    jwks: Mutex<Option<(JwkSet, Instant)>>,
    /// Serialises refetches, so a burst of sign-ins fetches the keys once.
    refresh: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for EntraSignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraSignIn")
            .field("authority", &self.authority)
            .field("client_id", &self.client_id)
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

impl EntraSignIn {
    /// `None` when Entra ID sign-in is not configured (`console.client_id` empty).
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Option<Self>> {
        let Some(authority) = settings.console_authority() else {
            return Ok(None);
        };
        let tenant_id = authority
            .trim_end_matches("/v2.0")
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            // Discovery and keys are fetched from exactly where configured.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Some(Self {
            authority,
            tenant_id,
            client_id: settings.console.client_id.trim().to_owned(),
            client_secret: settings.console.client_secret.clone(),
            redirect_uri: format!("{}/console/auth/callback", settings.console_public_url()),
            http,
            discovery: Mutex::new(None),
            jwks: Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
        }))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, SignInError> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| SignInError::Unreachable(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(SignInError::Protocol(format!(
                "{url} answered {}",
                response.status()
            )));
        }
        response
            .json()
            .await
            .map_err(|e| SignInError::Protocol(format!("{url}: {}", e.without_url())))
    }

    async fn discovery(&self) -> Result<Discovery, SignInError> {
        if let Ok(cached) = self.discovery.lock()
            && let Some((discovery, at)) = cached.as_ref()
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(discovery.clone());
        }
        let url = format!("{}/.well-known/openid-configuration", self.authority);
        let discovery: Discovery = self.get_json(&url).await?;
        // The document must be the authority's own: a discovery document naming
        // another issuer would make us accept that issuer's tokens.
        if discovery.issuer.trim_end_matches('/') != self.authority.trim_end_matches('/') {
            return Err(SignInError::Protocol(format!(
                "the discovery document names issuer {:?}, not {:?}",
                discovery.issuer, self.authority
            )));
        }
        if let Ok(mut cached) = self.discovery.lock() {
            *cached = Some((discovery.clone(), Instant::now()));
        }
        Ok(discovery)
    }

    /// Starts a sign-in: the flow to keep, the `state` to bind to the browser, and
    /// where to send the browser.
    pub async fn start(&self) -> Result<(Flow, String, String), SignInError> {
        let discovery = self.discovery().await?;
        let state = random_token();
        let flow = Flow {
            nonce: random_token(),
            // 43 characters of base64url: within RFC 7636's 43..=128.
            verifier: random_token(),
        };
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(flow.verifier.as_bytes()));
        let query = serde_urlencoded::to_string([
            ("client_id", self.client_id.as_str()),
            ("response_type", "code"),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("response_mode", "query"),
            ("scope", "openid profile"),
            ("state", state.as_str()),
            ("nonce", flow.nonce.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .map_err(|e| SignInError::Protocol(e.to_string()))?;
        let separator = if discovery.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        let url = format!("{}{separator}{query}", discovery.authorization_endpoint);
        Ok((flow, state, url))
    }

    /// Redeems `code` and checks the ID token; returns who signed in.
    pub async fn finish(&self, code: &str, flow: &Flow) -> Result<Identity, SignInError> {
        let discovery = self.discovery().await?;
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("client_id", self.client_id.clone()),
            ("code", code.to_owned()),
            ("redirect_uri", self.redirect_uri.clone()),
            ("code_verifier", flow.verifier.clone()),
            ("scope", "openid profile".to_owned()),
        ];
        if let Some(secret) = &self.client_secret {
            form.push(("client_secret", secret.expose_secret().to_owned()));
        }
        let response = self
            .http
            .post(&discovery.token_endpoint)
            .form(&form)
            .send()
            .await
            .map_err(|e| SignInError::Unreachable(e.without_url().to_string()))?;
        let status = response.status();
        let answer: TokenAnswer = response.json().await.map_err(|e| {
            SignInError::Protocol(format!("token endpoint ({status}): {}", e.without_url()))
        })?;
        if let Some(error) = answer.error {
            return Err(SignInError::Refused(format!(
                "{error}: {}",
                answer
                    .error_description
                    .as_deref()
                    .and_then(|d| d.lines().next())
                    .unwrap_or("")
            )));
        }
        let id_token = answer
            .id_token
            .ok_or_else(|| SignInError::Protocol("the token answer has no id_token".into()))?;
        self.verify(&id_token, &discovery, &flow.nonce).await
    }

    async fn key(&self, kid: &str, jwks_uri: &str) -> Result<DecodingKey, SignInError> {
        let cached = |jwks: &Mutex<Option<(JwkSet, Instant)>>| -> (Option<DecodingKey>, bool) {
            let Ok(guard) = jwks.lock() else {
                return (None, true);
            };
            match guard.as_ref() {
                Some((set, at)) => (
                    set.find(kid)
                        .and_then(|jwk| DecodingKey::from_jwk(jwk).ok()),
                    at.elapsed() >= JWKS_MIN_REFRESH,
                ),
                None => (None, true),
            }
        };
        if let (Some(key), _) = cached(&self.jwks) {
            return Ok(key);
        }
        let _refreshing = self.refresh.lock().await;
        // Someone else may have refreshed while we waited.
        let (key, may_refresh) = cached(&self.jwks);
        if let Some(key) = key {
            return Ok(key);
        }
        if !may_refresh {
            return Err(SignInError::InvalidToken(format!(
                "no signing key {kid:?} (keys were refreshed less than a minute ago)"
            )));
        }
        let set: JwkSet = self.get_json(jwks_uri).await?;
        let key = set
            .find(kid)
            .and_then(|jwk| DecodingKey::from_jwk(jwk).ok());
        if let Ok(mut guard) = self.jwks.lock() {
            *guard = Some((set, Instant::now()));
        }
        key.ok_or_else(|| SignInError::InvalidToken(format!("no signing key {kid:?}")))
    }

    async fn verify(
        &self,
        id_token: &str,
        discovery: &Discovery,
        nonce: &str,
    ) -> Result<Identity, SignInError> {
        let invalid = |why: String| SignInError::InvalidToken(why);
        let header = jsonwebtoken::decode_header(id_token).map_err(|e| invalid(e.to_string()))?;
        if header.alg != Algorithm::RS256 {
            return Err(invalid(format!("signed with {:?}, not RS256", header.alg)));
        }
        let kid = header
            .kid
            .ok_or_else(|| invalid("the token names no signing key (kid)".into()))?;
        let key = self.key(&kid, &discovery.jwks_uri).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[&self.client_id]);
        validation.set_issuer(&[&discovery.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let claims = jsonwebtoken::decode::<IdClaims>(id_token, &key, &validation)
            .map_err(|e| invalid(e.to_string()))?
            .claims;
        let presented = claims.nonce.unwrap_or_default();
        if !bool::from(presented.as_bytes().ct_eq(nonce.as_bytes())) {
            return Err(invalid("the nonce is not the one this sign-in sent".into()));
        }
        if claims
            .tid
            .as_deref()
            .is_some_and(|tid| !tid.eq_ignore_ascii_case(&self.tenant_id))
        {
            return Err(invalid("the token is from another tenant".into()));
        }
        if claims.groups.is_none()
            && claims
                .claim_names
                .as_ref()
                .is_some_and(|names| names.get("groups").is_some())
        {
            return Err(SignInError::Refused(
                "the account is in too many groups for Entra ID to list them in the token; assign the fwdwatch operator group to the app (groups assigned to the application) or use an app role".into(),
            ));
        }
        let object_id = claims.oid.filter(|o| !o.is_empty()).unwrap_or(claims.sub);
        if object_id.is_empty() {
            return Err(invalid("the token names nobody (no oid, no sub)".into()));
        }
        Ok(Identity {
            name: claims
                .name
                .clone()
                .or_else(|| claims.preferred_username.clone())
                .unwrap_or_else(|| object_id.clone()),
            username: claims.preferred_username.unwrap_or_default(),
            object_id,
            groups: claims.groups.unwrap_or_default(),
            roles: claims.roles,
        })
    }
}
